//! The provider actor: one per provider (Neonomics, the banks' PSD2 APIs).
//!
//! It owns the provider's OAuth2 client-credentials token: handed out while valid, refreshed
//! before it expires, refreshed once when the provider rejects it, and when refreshing fails
//! with a credentials error the provider is marked as having invalid credentials and no call
//! is made (no hammering) until `credentials_backoff` has passed.
//!
//! The calls themselves (balance reads, payments, probes and the consent flow's calls) do not
//! pass through the actor's mailbox: `ProviderHandle::balance` runs
//! in the caller's task and shares the provider's quota limiter, concurrency cap and retry
//! budget through `Shared`. Reads are retried with jittered exponential back-off, honouring
//! `Retry-After`, within the budget. The actor publishes the token it holds in `Shared` too,
//! so a call finds a valid one without a round trip through the mailbox; only a call that
//! finds none (or a rejected one) asks the actor.
//!
//! Here: its settings, messages and the handle; the call path (quota, cap, retries, the
//! call log) is `calls.rs`, the actor that owns the token `actor.rs`.

mod actor;
mod calls;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ractor::RpcReplyPort;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::ProviderId;
use crate::calls::CallLog;
use crate::config::ConfigError;
use crate::retry::{RetryBudget, RetryConfig};
use crate::slot::Slot;
use crate::upstream::{AccessToken, FailureClass, Upstream, UpstreamError};

pub use actor::{ProviderActor, ProviderState};

/// The `[providers.*.limits]` settings: how bankgate treats one provider.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    /// The provider's quota, requests per second.
    pub rate_limit_per_s: u32,
    /// Calls in flight at once.
    pub concurrency: usize,
    pub max_retries: u32,
    #[serde(with = "humantime_serde")]
    pub first_backoff: Duration,
    /// Retries allowed as a share of first attempts.
    pub retry_budget_ratio: f64,
    /// How long invalid credentials stop all calls before one new attempt.
    #[serde(with = "humantime_serde")]
    pub credentials_backoff: Duration,
}

impl ProviderLimits {
    /// Rejects limits under which no call could ever be made.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.rate_limit_per_s == 0 || self.concurrency == 0 {
            return Err(ConfigError::new(
                "rate_limit_per_s",
                "rate_limit_per_s and concurrency must be at least 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.retry_budget_ratio) {
            return Err(ConfigError::new(
                "retry_budget_ratio",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The provider's quota, requests per second.
    pub rate_per_s: u32,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// Per-attempt timeout.
    pub timeout: Duration,
    pub retry: RetryConfig,
    /// How long invalid credentials stop all calls before one new attempt.
    pub credentials_backoff: Duration,
    /// A token is renewed this long before it expires.
    pub token_refresh_margin: Duration,
}

impl ProviderConfig {
    /// A provider called with `limits` and a per-attempt `timeout`; the rest as by default.
    pub fn from_limits(limits: &ProviderLimits, timeout: Duration) -> ProviderConfig {
        ProviderConfig {
            rate_per_s: limits.rate_limit_per_s,
            concurrency: limits.concurrency,
            timeout,
            retry: RetryConfig {
                max_retries: limits.max_retries,
                first_backoff: limits.first_backoff,
                budget_ratio: limits.retry_budget_ratio,
                ..RetryConfig::default()
            },
            credentials_backoff: limits.credentials_backoff,
            ..ProviderConfig::default()
        }
    }
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            rate_per_s: 50,
            concurrency: 10,
            timeout: Duration::from_secs(3),
            retry: RetryConfig::default(),
            credentials_backoff: Duration::from_secs(300),
            token_refresh_margin: Duration::from_secs(30),
        }
    }
}

type TokenReply = RpcReplyPort<Result<Option<String>, UpstreamError>>;

pub enum ProviderMsg {
    /// Hands out a valid token, fetching one if needed.
    Token(TokenReply),
    /// The provider refused `token`: replace it once.
    Rejected {
        token: Option<String>,
        reply: TokenReply,
    },
    /// The outcome of an authentication started by the actor.
    Authenticated(Result<Option<AccessToken>, UpstreamError>),
    Status(RpcReplyPort<ProviderStatus>),
    /// Chaos hook for tests: panics inside the handler, to exercise supervision.
    #[cfg(any(test, feature = "test-util"))]
    Panic,
}

/// The provider's health as ops and the diagnosis see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProviderStatus {
    pub provider: ProviderId,
    pub credentials_valid: bool,
    pub last_auth_error: Option<FailureClass>,
    pub rate_limit_headroom: u32,
}

/// What the actor and every caller share.
struct Shared {
    id: ProviderId,
    upstream: Arc<dyn Upstream>,
    limiter: DefaultDirectRateLimiter,
    concurrency: Semaphore,
    budget: Mutex<RetryBudget>,
    config: ProviderConfig,
    calls: Arc<CallLog>,
    /// The token the actor holds; written by the actor alone.
    token: RwLock<Option<HeldToken>>,
}

/// A token (`None` inside when the provider needs none) and when to renew it.
struct HeldToken {
    value: Option<String>,
    renew_at: Instant,
}

impl Shared {
    /// The held token while it needs no renewal.
    fn valid_token(&self, now: Instant) -> Option<Option<String>> {
        let held = self.token.read().expect("token");
        held.as_ref()
            .filter(|t| t.renew_at > now)
            .map(|t| t.value.clone())
    }

    fn hold_token(&self, token: Option<HeldToken>) {
        *self.token.write().expect("token") = token;
    }
}

/// The handle every caller uses. Cheap to clone.
#[derive(Clone)]
pub struct ProviderHandle {
    shared: Arc<Shared>,
    actor: Slot<ProviderMsg>,
}

impl ProviderHandle {
    pub fn new(
        upstream: Arc<dyn Upstream>,
        config: ProviderConfig,
        calls: Arc<CallLog>,
    ) -> ProviderHandle {
        let rate = NonZeroU32::new(config.rate_per_s).unwrap_or(NonZeroU32::MIN);
        let shared = Shared {
            id: upstream.provider(),
            upstream,
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            concurrency: Semaphore::new(config.concurrency.max(1)),
            budget: Mutex::new(RetryBudget::new(config.retry)),
            config,
            calls,
            token: RwLock::new(None),
        };
        ProviderHandle {
            shared: Arc::new(shared),
            actor: Slot::default(),
        }
    }

    pub fn id(&self) -> ProviderId {
        self.shared.id
    }

    fn ask_timeout(&self) -> Duration {
        self.shared.config.timeout + Duration::from_secs(2)
    }

    fn unavailable() -> UpstreamError {
        UpstreamError::new(FailureClass::Server, "provider actor is restarting")
    }

    /// Returns a valid access token (`None` for providers that need none): the one the actor
    /// holds, else whatever the actor gets.
    pub async fn token(&self) -> Result<Option<String>, UpstreamError> {
        if let Some(token) = self.shared.valid_token(Instant::now()) {
            return Ok(token);
        }
        let actor = self.actor.get().ok_or_else(Self::unavailable)?;
        let answer = actor
            .call(ProviderMsg::Token, Some(self.ask_timeout()))
            .await;
        match answer {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(Self::unavailable()),
        }
    }

    async fn replace_token(&self, token: Option<String>) -> Result<Option<String>, UpstreamError> {
        let actor = self.actor.get().ok_or_else(Self::unavailable)?;
        let answer = actor
            .call(
                |reply| ProviderMsg::Rejected { token, reply },
                Some(self.ask_timeout()),
            )
            .await;
        match answer {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(Self::unavailable()),
        }
    }

    pub async fn status(&self) -> Option<ProviderStatus> {
        let actor = self.actor.get()?;
        match actor
            .call(ProviderMsg::Status, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(status)) => Some(status),
            _ => None,
        }
    }

    /// Chaos hook: makes the provider actor panic.
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_panic(&self) {
        if let Some(actor) = self.actor.get() {
            let _ = actor.send_message(ProviderMsg::Panic);
        }
    }
}
