//! The circuit breaker of one (bank, provider) path.
//!
//! Closed: calls flow; `failure_threshold` failures within `window` trip it. Open: calls are
//! refused at once (the caller serves stale data or fails over) until the open period ends;
//! each consecutive trip doubles the period up to `max_open`. Half-open: one probe call is let
//! through; its success closes the breaker, its failure opens it again for longer. A 429 with
//! `Retry-After` opens it for exactly that long, whatever the count.
//!
//! Plain data driven by explicit instants, so it is tested with paused time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::ConfigError;

/// The `[breaker]` settings: the same for every path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failures within `window` that trip the breaker.
    pub failure_threshold: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The first open period; each consecutive trip doubles it.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// The longest open period, and the longest a provider's `Retry-After` is believed.
    #[serde(with = "humantime_serde")]
    pub max_open: Duration,
}

impl BreakerConfig {
    /// Rejects a breaker that could never trip, or never let a call through again.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::new("failure_threshold", "must be at least 1"));
        }
        if self.open_for.is_zero() || self.max_open < self.open_for {
            return Err(ConfigError::new(
                "open_for",
                "needs 0 < open_for ≤ max_open",
            ));
        }
        Ok(())
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(60),
            max_open: Duration::from_secs(15 * 60),
        }
    }
}

/// The breaker's state as metrics and ops see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    /// The gauge value exported as `bankgate_breaker_state` (0 closed, 1 half-open, 2 open).
    pub fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    /// Closed: go ahead.
    Call,
    /// Half-open: this call is the probe; report its outcome.
    Probe,
    /// Open (or a probe is already out): do not call.
    Refused,
}

#[derive(Debug, Clone)]
enum Inner {
    Closed { failures: VecDeque<Instant> },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Inner,
    /// Consecutive trips without a successful probe; doubles the open period.
    trips: u32,
    since: Instant,
}

impl Breaker {
    pub fn new(config: BreakerConfig, now: Instant) -> Breaker {
        Breaker {
            config,
            inner: Inner::Closed {
                failures: VecDeque::new(),
            },
            trips: 0,
            since: now,
        }
    }

    /// Returns the state, moving from open to half-open once the open period is over.
    pub fn state(&mut self, now: Instant) -> BreakerState {
        if let Inner::Open { until } = self.inner
            && now >= until
        {
            self.inner = Inner::HalfOpen { probing: false };
            self.since = now;
        }
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// When the current state began.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Asks to make a call now.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state(now) {
            BreakerState::Closed => Permit::Call,
            BreakerState::Open => Permit::Refused,
            BreakerState::HalfOpen => match &mut self.inner {
                Inner::HalfOpen { probing } if !*probing => {
                    *probing = true;
                    Permit::Probe
                }
                _ => Permit::Refused,
            },
        }
    }

    /// Records a successful call: a probe's success closes the breaker.
    pub fn on_success(&mut self, now: Instant) {
        match &mut self.inner {
            Inner::Closed { failures } => failures.clear(),
            Inner::HalfOpen { .. } | Inner::Open { .. } => {
                self.inner = Inner::Closed {
                    failures: VecDeque::new(),
                };
                self.trips = 0;
                self.since = now;
            }
        }
    }

    /// Records a failed call; returns whether the breaker opened because of it.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        let config = self.config;
        match &mut self.inner {
            Inner::Closed { failures } => {
                failures.push_back(now);
                while failures
                    .front()
                    .is_some_and(|&t| now.duration_since(t) > config.window)
                {
                    failures.pop_front();
                }
                if failures.len() as u32 >= config.failure_threshold {
                    self.trip(now);
                    return true;
                }
                false
            }
            Inner::HalfOpen { .. } => {
                self.trip(now);
                true
            }
            Inner::Open { .. } => false,
        }
    }

    /// Opens the breaker for exactly `duration` (the provider said when to come back), but
    /// never longer than `max_open`: whatever a provider says, a probe comes by then.
    pub fn open_for(&mut self, now: Instant, duration: Duration) {
        self.inner = Inner::Open {
            until: now + duration.min(self.config.max_open),
        };
        self.since = now;
    }

    /// Opens the breaker until an operator or a successful probe closes it.
    pub fn force_open(&mut self, now: Instant) {
        self.open_for(now, self.config.max_open);
    }

    /// Returns how long the breaker stays open from `now`, if it is open.
    pub fn open_remaining(&mut self, now: Instant) -> Option<Duration> {
        match (self.state(now), &self.inner) {
            (BreakerState::Open, Inner::Open { until }) => Some(until.duration_since(now)),
            _ => None,
        }
    }

    fn trip(&mut self, now: Instant) {
        let factor = 2u32.saturating_pow(self.trips);
        let period = self
            .config
            .open_for
            .saturating_mul(factor)
            .min(self.config.max_open);
        self.trips = self.trips.saturating_add(1);
        self.open_for(now, period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::default(), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn three_failures_within_the_window_open_it() {
        let mut b = breaker();
        let now = Instant::now();
        assert!(!b.on_failure(now));
        assert!(!b.on_failure(now + Duration::from_secs(10)));
        assert!(b.on_failure(now + Duration::from_secs(20)));
        assert_eq!(b.permit(now + Duration::from_secs(21)), Permit::Refused);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_outside_the_window_do_not_count() {
        let mut b = breaker();
        let now = Instant::now();
        b.on_failure(now);
        b.on_failure(now + Duration::from_secs(30));
        assert!(
            !b.on_failure(now + Duration::from_secs(70)),
            "the first failure has aged out"
        );
        assert_eq!(b.permit(now + Duration::from_secs(71)), Permit::Call);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_one_probe_through_and_success_closes() {
        let mut b = breaker();
        let now = Instant::now();
        for _ in 0..3 {
            b.on_failure(now);
        }
        let later = now + Duration::from_secs(60);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert_eq!(b.permit(later), Permit::Probe);
        assert_eq!(b.permit(later), Permit::Refused, "only one probe at a time");
        b.on_success(later);
        assert_eq!(b.state(later), BreakerState::Closed);
        assert_eq!(b.permit(later), Permit::Call);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_trips_double_the_open_period_up_to_the_cap() {
        let mut b = breaker();
        let mut now = Instant::now();
        for _ in 0..3 {
            b.on_failure(now);
        }
        let mut expected = Duration::from_secs(60);
        for _ in 0..6 {
            assert_eq!(b.open_remaining(now), Some(expected));
            now += expected;
            assert_eq!(b.permit(now), Permit::Probe);
            assert!(b.on_failure(now), "a failed probe re-opens");
            expected = (expected * 2).min(Duration::from_secs(15 * 60));
        }
        assert_eq!(b.open_remaining(now), Some(Duration::from_secs(15 * 60)));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_opens_for_exactly_that_long() {
        let mut b = breaker();
        let now = Instant::now();
        b.open_for(now, Duration::from_secs(7));
        assert_eq!(b.permit(now + Duration::from_secs(6)), Permit::Refused);
        assert_eq!(b.permit(now + Duration::from_secs(7)), Permit::Probe);
    }
}
