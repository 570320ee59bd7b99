//! Retries of reads: exponential back-off with jitter, and a budget that caps retries at a
//! share of recent calls so that a failing provider is never hammered by retry storms.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first back-off; each next one doubles.
    pub first_backoff: Duration,
    /// Up to this share of each back-off is added or removed at random (0 = none).
    pub jitter: f64,
    /// Retries may add at most this share of extra calls (0.2 = 20 %).
    pub budget_ratio: f64,
    /// Retries always allowed per budget window, so a quiet provider can still retry.
    pub budget_floor: u32,
    /// The window over which calls and retries are counted.
    pub budget_window: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 3,
            first_backoff: Duration::from_secs(1),
            jitter: 0.2,
            budget_ratio: 0.2,
            budget_floor: 3,
            budget_window: Duration::from_secs(10),
        }
    }
}

impl RetryConfig {
    /// Returns the wait before retry number `retry` (1-based), jittered.
    pub fn backoff(&self, retry: u32) -> Duration {
        let base = self
            .first_backoff
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
        if self.jitter <= 0.0 {
            return base;
        }
        let spread = (fastrand::f64() * 2.0 - 1.0) * self.jitter;
        base.mul_f64((1.0 + spread).max(0.0))
    }

    /// Returns the wait before retry `retry`, or the provider's own when it said
    /// (`Retry-After`, `X-RateLimit-Reset`) and that is longer.
    pub fn wait_before(&self, retry: u32, provider_says: Option<Duration>) -> Duration {
        let backoff = self.backoff(retry);
        provider_says.map_or(backoff, |said| said.max(backoff))
    }
}

/// Counts calls and retries over a sliding window.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryConfig,
    calls: VecDeque<Instant>,
    retries: VecDeque<Instant>,
}

impl RetryBudget {
    pub fn new(config: RetryConfig) -> RetryBudget {
        RetryBudget {
            config,
            calls: VecDeque::new(),
            retries: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Instant) {
        let window = self.config.budget_window;
        for queue in [&mut self.calls, &mut self.retries] {
            while queue
                .front()
                .is_some_and(|&t| now.duration_since(t) > window)
            {
                queue.pop_front();
            }
        }
    }

    /// Records a first attempt.
    pub fn record_call(&mut self, now: Instant) {
        self.prune(now);
        self.calls.push_back(now);
    }

    /// Takes a retry from the budget if one is left.
    pub fn try_retry(&mut self, now: Instant) -> bool {
        self.prune(now);
        let allowed = (self.calls.len() as f64 * self.config.budget_ratio).floor() as usize
            + self.config.budget_floor as usize;
        if self.retries.len() < allowed {
            self.retries.push_back(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetryConfig {
        RetryConfig {
            jitter: 0.0,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_from_one_second() {
        let c = config();
        let waits: Vec<_> = (1..=3).map(|r| c.backoff(r).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4]);
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let c = RetryConfig {
            jitter: 0.2,
            ..config()
        };
        for _ in 0..100 {
            let wait = c.backoff(2).as_secs_f64();
            assert!((1.6..=2.4).contains(&wait), "{wait}");
        }
    }

    #[test]
    fn provider_retry_after_wins_when_longer() {
        let c = config();
        assert_eq!(
            c.wait_before(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            c.wait_before(1, Some(Duration::from_millis(10))),
            Duration::from_secs(1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn budget_allows_a_floor_plus_a_fifth_of_calls() {
        let mut budget = RetryBudget::new(config());
        let now = Instant::now();
        for _ in 0..50 {
            budget.record_call(now);
        }
        let granted = (0..100).filter(|_| budget.try_retry(now)).count();
        assert_eq!(granted, 3 + 10, "floor of 3 plus 20 % of 50 calls");
        let later = now + Duration::from_secs(11);
        assert!(budget.try_retry(later), "the window moved on");
    }
}
