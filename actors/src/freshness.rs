//! How old a cached balance may be, and what it is then.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessConfig {
    /// A cached balance younger than this is served without calling the bank.
    pub fresh_for: Duration,
    /// The same while the provider is rate limiting us.
    pub fresh_for_when_limited: Duration,
    /// The oldest balance ever shown (with `stale: true`) when the bank cannot answer.
    pub max_stale: Duration,
}

impl Default for FreshnessConfig {
    fn default() -> Self {
        FreshnessConfig {
            fresh_for: Duration::from_secs(60),
            fresh_for_when_limited: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
        }
    }
}

/// What a cached balance of some age is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it instead of calling the bank.
    Fresh,
    /// Only if the bank cannot answer, flagged as stale.
    Stale,
    /// Too old to show.
    Expired,
}

impl FreshnessConfig {
    pub fn classify(&self, age: Duration, rate_limited: bool) -> Freshness {
        let fresh_for = if rate_limited {
            self.fresh_for_when_limited
        } else {
            self.fresh_for
        };
        if age < fresh_for {
            Freshness::Fresh
        } else if age <= self.max_stale {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_classify_by_the_runbook_ttls() {
        let c = FreshnessConfig::default();
        let secs = Duration::from_secs;
        assert_eq!(c.classify(secs(59), false), Freshness::Fresh);
        assert_eq!(c.classify(secs(61), false), Freshness::Stale);
        assert_eq!(
            c.classify(secs(299), true),
            Freshness::Fresh,
            "rate limiting extends freshness"
        );
        assert_eq!(c.classify(secs(3600), false), Freshness::Stale);
        assert_eq!(c.classify(secs(3601), false), Freshness::Expired);
    }
}
