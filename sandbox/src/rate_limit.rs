//! Each simulated provider's own rate limit, reported as real APIs do: `X-RateLimit-Limit`,
//! `X-RateLimit-Remaining` and `X-RateLimit-Reset` on every answer, `Retry-After` on a 429.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use warp::http::HeaderValue;
use warp::reply::Response;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

pub struct ProviderLimit {
    limiter: Limiter,
    per_second: u32,
}

/// The limiter's view after one request: let through, or refused for `retry_after_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    pub limit: u32,
    pub remaining: u32,
    pub reset_s: u64,
    pub refused: bool,
}

impl ProviderLimit {
    pub fn per_second(per_second: u32) -> ProviderLimit {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        ProviderLimit {
            limiter: RateLimiter::direct(Quota::per_second(rate))
                .with_middleware::<StateInformationMiddleware>(),
            per_second: rate.get(),
        }
    }

    /// Counts one request against the limit.
    pub fn check(&self) -> LimitState {
        match self.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                LimitState {
                    limit: self.per_second,
                    remaining,
                    reset_s: u64::from(remaining < self.per_second),
                    refused: false,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                LimitState {
                    limit: self.per_second,
                    remaining: 0,
                    reset_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                    refused: true,
                }
            }
        }
    }
}

impl LimitState {
    /// Adds the rate-limit headers to `response` (and `Retry-After` when refused) where the
    /// response does not carry them yet.
    pub fn stamp(self, mut response: Response) -> Response {
        // An injected 429 has set its own figures already; they win.
        let headers = response.headers_mut();
        headers
            .entry("x-ratelimit-limit")
            .or_insert(HeaderValue::from(self.limit));
        headers
            .entry("x-ratelimit-remaining")
            .or_insert(HeaderValue::from(self.remaining));
        headers
            .entry("x-ratelimit-reset")
            .or_insert(HeaderValue::from(self.reset_s));
        if self.refused {
            headers
                .entry(warp::http::header::RETRY_AFTER)
                .or_insert(HeaderValue::from(self.reset_s));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_burst_and_counts_down() {
        let limit = ProviderLimit::per_second(3);
        let states: Vec<LimitState> = (0..4).map(|_| limit.check()).collect();
        assert_eq!(
            states.iter().map(|s| s.remaining).collect::<Vec<_>>(),
            [2, 1, 0, 0]
        );
        assert!(!states[2].refused);
        assert!(states[3].refused);
        assert!(states[3].reset_s >= 1);
    }
}

/// The rejection of a request over the provider's limit; each provider renders it its way.
#[derive(Debug)]
pub struct Throttled(pub LimitState);

impl warp::reject::Reject for Throttled {}

/// Counts the request against `limit`, rejecting it with `Throttled` when over.
pub fn limited<F>(
    limit: F,
) -> impl warp::Filter<Extract = (LimitState,), Error = warp::Rejection> + Clone
where
    F: Fn() -> LimitState + Clone + Send + Sync + 'static,
{
    use warp::Filter as _;
    warp::any().and_then(move || {
        let state = limit();
        async move {
            if state.refused {
                Err(warp::reject::custom(Throttled(state)))
            } else {
                Ok(state)
            }
        }
    })
}
