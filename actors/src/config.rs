//! The settings sections this crate owns (`[banks]`, `[balances]`, `[sessions]`; `[breaker]`
//! is `BreakerConfig` beside the breaker), and what a section says when it cannot work. Each
//! section the gateway's settings embed denies unknown keys, validates itself and names the
//! key within its own section; the settings loader adds the section's name. `TreeConfig`
//! is built from them (`TreeConfig::from_sections`).

use std::time::Duration;

use crate::ProviderId;
use crate::freshness::FreshnessConfig;

/// A value that parses but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{key}`: {reason}")]
pub struct ConfigError {
    /// The key within the section, e.g. `open_for`.
    pub key: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            key,
            reason: reason.into(),
        }
    }
}

/// The `[banks]` settings: how each bank actor reaches its providers.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanksSection {
    /// Providers in order of preference.
    pub provider_order: Vec<ProviderId>,
    /// Upstream calls in flight per bank at most (its bulkhead).
    pub max_in_flight: usize,
    /// How often every provider path is probed; zero turns the probe off.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
}

impl BanksSection {
    /// Rejects an order without a provider or with one twice, and a bulkhead of nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let order = &self.provider_order;
        if order.is_empty() || (1..order.len()).any(|i| order[..i].contains(&order[i])) {
            return Err(ConfigError::new(
                "provider_order",
                "must name each provider at most once, and at least one",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        Ok(())
    }
}

/// The `[balances]` settings: freshness, the cache and the reads' deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancesSection {
    /// A cached balance younger than this is served without calling the bank.
    #[serde(with = "humantime_serde")]
    pub fresh_for: Duration,
    /// The same while the provider is rate limiting us.
    #[serde(with = "humantime_serde")]
    pub fresh_for_when_rate_limited: Duration,
    /// The oldest balance ever shown (flagged stale) when the bank cannot answer.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// Reads without the user present allowed per account and day (PSD2).
    pub unattended_reads_per_day: u32,
    /// Balances cached in memory at most.
    pub cache_capacity: u64,
    /// The longest a balance read may take end to end (retries included).
    #[serde(with = "humantime_serde")]
    pub read_deadline: Duration,
    /// How long a live balance may wait to be written to the store with others.
    #[serde(with = "humantime_serde")]
    pub persist_every: Duration,
}

impl BalancesSection {
    /// Rejects a stale limit shorter than freshness, and a read that may take no time.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.fresh_for > self.max_stale || self.fresh_for_when_rate_limited > self.max_stale {
            return Err(ConfigError::new(
                "max_stale",
                "must be at least as long as the freshness periods",
            ));
        }
        if self.read_deadline.is_zero() {
            return Err(ConfigError::new(
                "read_deadline",
                "must be greater than zero",
            ));
        }
        Ok(())
    }

    /// When a cached balance is served as it is, and when no longer at all.
    pub fn freshness(&self) -> FreshnessConfig {
        FreshnessConfig {
            fresh_for: self.fresh_for,
            fresh_for_when_limited: self.fresh_for_when_rate_limited,
            max_stale: self.max_stale,
        }
    }
}

/// The `[sessions]` settings: idle sessions and each user's request rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsSection {
    /// A session with no request for this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Balance requests per second per user, and the burst above it.
    pub user_rate_per_s: u32,
    pub user_burst: u32,
}

impl SessionsSection {
    /// Rejects sessions forgotten at once and users allowed nothing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_timeout.is_zero() {
            return Err(ConfigError::new(
                "idle_timeout",
                "must be greater than zero",
            ));
        }
        if self.user_rate_per_s == 0 {
            return Err(ConfigError::new(
                "user_rate_per_s",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}
