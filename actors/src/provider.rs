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

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::calls::CallLog;
use crate::config::ConfigError;
use crate::metrics;
use crate::retry::{RetryBudget, RetryConfig};
use crate::slot::Slot;
use crate::upstream::{
    AccessToken, Balance, BalanceCall, ConsentCall, ConsentStart, ConsentStatus, FailureClass,
    PaymentOrder, ProviderAccount, RemoteAccount, RemotePayment, StartedConsent, Upstream,
    UpstreamError,
};
use crate::{BankId, ProviderId, Service};
use futures_util::future::BoxFuture;

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

pub struct ProviderActor;

pub struct ProviderState {
    shared: Arc<Shared>,
    authenticating: bool,
    waiters: Vec<TokenReply>,
    credentials_invalid_until: Option<Instant>,
    last_auth_error: Option<FailureClass>,
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

    /// Reads a balance, retrying retryable failures when `retries` allows (the caller turns
    /// retries off when a failover path exists: another provider is the better retry).
    pub async fn balance(
        &self,
        call: BalanceCall,
        retries: bool,
    ) -> Result<Balance, UpstreamError> {
        let config = &self.shared.config;
        self.shared
            .budget
            .lock()
            .expect("budget")
            .record_call(Instant::now());
        let mut retry = 0;
        loop {
            let upstream = self.shared.upstream.clone();
            let attempt = self
                .attempt(call.bank, Service::Aisp, |token| {
                    upstream.balance(token, call.clone())
                })
                .await;
            let error = match attempt {
                Ok(balance) => return Ok(balance),
                Err(error) => error,
            };
            let may_retry = retries
                && error.class.is_retryable()
                && retry < config.retry.max_retries
                && error
                    .retry_after
                    .is_none_or(|wait| wait <= config.retry.first_backoff * 4)
                && self
                    .shared
                    .budget
                    .lock()
                    .expect("budget")
                    .try_retry(Instant::now());
            if !may_retry {
                return Err(error);
            }
            retry += 1;
            ::metrics::counter!(metrics::RETRIES, "provider" => self.id().as_str(), "bank" => call.bank.as_str())
                .increment(1);
            tokio::time::sleep(config.retry.wait_before(retry, error.retry_after)).await;
        }
    }

    /// Initiates a payment: one attempt, never retried (a second send could pay twice).
    pub async fn initiate_payment(
        &self,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> Result<RemotePayment, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(order.bank, Service::Pisp, |token| {
            upstream.initiate_payment(token, account.clone(), order.clone())
        })
        .await
    }

    /// Looks a payment up by bankgate's reference; `None` proves the provider never got it.
    pub async fn find_payment(
        &self,
        account: ProviderAccount,
        order: PaymentOrder,
    ) -> Result<Option<RemotePayment>, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(order.bank, Service::Pisp, |token| {
            upstream.find_payment(token, account.clone(), order.clone())
        })
        .await
    }

    /// Starts a consent for the user: one attempt, never retried (each start opens a new
    /// consent at the provider).
    pub async fn start_consent(
        &self,
        start: ConsentStart,
    ) -> Result<StartedConsent, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(start.bank, Service::Aisp, |token| {
            upstream.start_consent(token, start.clone())
        })
        .await
    }

    /// Asks where the user's SCA left a consent: one attempt, the user is waiting.
    pub async fn consent_state(
        &self,
        consent: ConsentCall,
    ) -> Result<ConsentStatus, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(consent.bank, Service::Aisp, |token| {
            upstream.consent_state(token, consent.clone())
        })
        .await
    }

    /// Lists the accounts a consent opens: one attempt, the user is waiting.
    pub async fn accounts(
        &self,
        consent: ConsentCall,
    ) -> Result<Vec<RemoteAccount>, UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(consent.bank, Service::Aisp, |token| {
            upstream.accounts(token, consent.clone())
        })
        .await
    }

    /// The synthetic health probe of the path to `bank`: one attempt, never retried.
    pub async fn probe(&self, bank: BankId) -> Result<(), UpstreamError> {
        let upstream = self.shared.upstream.clone();
        self.attempt(bank, Service::Aisp, |token| upstream.probe(token, bank))
            .await
    }

    /// One attempt: quota, concurrency, token, the call, and one token refresh when the
    /// provider rejects the token (a rejected call was not carried out, so sending it again
    /// is safe even for a payment).
    async fn attempt<T, F>(
        &self,
        bank: BankId,
        service: Service,
        call: F,
    ) -> Result<T, UpstreamError>
    where
        F: Fn(Option<String>) -> BoxFuture<'static, Result<T, UpstreamError>>,
    {
        let config = &self.shared.config;
        let deadline = Instant::now() + config.timeout;
        self.wait_for_quota(deadline).await?;
        let _permit = tokio::time::timeout_at(deadline, self.shared.concurrency.acquire())
            .await
            .map_err(|_| {
                UpstreamError::new(FailureClass::Timeout, "provider concurrency cap reached")
            })?
            .expect("semaphore is never closed");
        let token = match self.token().await {
            Ok(token) => token,
            Err(error) => {
                // No token, no call: the path is down as surely as if the call had failed, and
                // the failure rate, the alerts and the diagnosis must see it.
                self.record(bank, service, Some(error.class), Duration::ZERO);
                return Err(error);
            }
        };
        let result = self
            .call_once(bank, service, deadline, call(token.clone()))
            .await;
        match result {
            Err(error) if error.class == FailureClass::Credentials && token.is_some() => {
                let fresh = self.replace_token(token).await?;
                self.call_once(bank, service, Instant::now() + config.timeout, call(fresh))
                    .await
            }
            other => other,
        }
    }

    async fn call_once<T>(
        &self,
        bank: BankId,
        service: Service,
        deadline: Instant,
        future: BoxFuture<'static, Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let started = Instant::now();
        let result = match tokio::time::timeout_at(deadline, future).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::new(
                FailureClass::Timeout,
                "no answer within the timeout",
            )
            .maybe_delivered()),
        };
        self.record(
            bank,
            service,
            result.as_ref().err().map(|e| e.class),
            started.elapsed(),
        );
        result
    }

    /// Counts one call's outcome in the call log and the metrics.
    fn record(
        &self,
        bank: BankId,
        service: Service,
        failure: Option<FailureClass>,
        elapsed: Duration,
    ) {
        self.shared
            .calls
            .record(bank, self.id(), service, failure, elapsed);
        metrics::record_upstream_call(self.id(), bank, service, failure, elapsed);
        if failure == Some(FailureClass::RateLimited) {
            ::metrics::counter!(metrics::RATE_LIMITED, "source" => "upstream", "provider" => self.id().as_str()).increment(1);
        }
    }

    /// Waits for the provider's quota, failing as rate limited if that takes past `deadline`.
    async fn wait_for_quota(&self, deadline: Instant) -> Result<(), UpstreamError> {
        loop {
            match self.shared.limiter.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    if Instant::now() + wait > deadline {
                        ::metrics::counter!(metrics::RATE_LIMITED, "source" => "local", "provider" => self.id().as_str())
                            .increment(1);
                        let mut error = UpstreamError::new(
                            FailureClass::RateLimited,
                            "provider quota exhausted",
                        );
                        error.retry_after = Some(wait);
                        return Err(error);
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderHandle;

    async fn pre_start(
        &self,
        myself: ActorRef<ProviderMsg>,
        handle: ProviderHandle,
    ) -> Result<ProviderState, ActorProcessingErr> {
        handle.actor.set(myself);
        // A restarted actor starts afresh, token included.
        handle.shared.hold_token(None);
        export_credentials(handle.shared.id, true);
        Ok(ProviderState {
            shared: handle.shared,
            authenticating: false,
            waiters: Vec::new(),
            credentials_invalid_until: None,
            last_auth_error: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ProviderMsg>,
        message: ProviderMsg,
        state: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProviderMsg::Token(reply) => state.hand_out(myself, reply),
            ProviderMsg::Rejected { token, reply } => {
                // Only the first caller holding the rejected token forces a refresh.
                let rejected = (state.shared.token.read().expect("token").as_ref())
                    .is_some_and(|held| held.value == token);
                if rejected {
                    state.shared.hold_token(None);
                }
                state.hand_out(myself, reply);
            }
            ProviderMsg::Authenticated(result) => state.authenticated(result),
            ProviderMsg::Status(reply) => {
                let now = Instant::now();
                let _ = reply.send(ProviderStatus {
                    provider: state.shared.id,
                    credentials_valid: state
                        .credentials_invalid_until
                        .is_none_or(|until| until <= now),
                    last_auth_error: state.last_auth_error,
                    rate_limit_headroom: state.headroom(),
                });
            }
            #[cfg(any(test, feature = "test-util"))]
            ProviderMsg::Panic => panic!("chaos: provider actor asked to panic"),
        }
        Ok(())
    }
}

fn export_credentials(provider: ProviderId, valid: bool) {
    ::metrics::gauge!(metrics::PROVIDER_CREDENTIALS_VALID, "provider" => provider.as_str())
        .set(if valid { 1.0 } else { 0.0 });
}

impl ProviderState {
    fn headroom(&self) -> u32 {
        // A check consumes a cell; report the quota when it is not exhausted.
        match self.shared.limiter.check() {
            Ok(()) => self.shared.config.rate_per_s,
            Err(_) => 0,
        }
    }

    fn hand_out(&mut self, myself: ActorRef<ProviderMsg>, reply: TokenReply) {
        let now = Instant::now();
        if let Some(token) = self.shared.valid_token(now) {
            let _ = reply.send(Ok(token));
            return;
        }
        if let Some(until) = self.credentials_invalid_until {
            if until > now {
                let mut error = UpstreamError::new(
                    FailureClass::Credentials,
                    "provider credentials are invalid",
                );
                error.retry_after = Some(until - now);
                let _ = reply.send(Err(error));
                return;
            }
            self.credentials_invalid_until = None;
        }
        self.waiters.push(reply);
        if !self.authenticating {
            self.authenticating = true;
            let upstream = self.shared.upstream.clone();
            let timeout = self.shared.config.timeout;
            tokio::spawn(async move {
                let result = match tokio::time::timeout(timeout, upstream.authenticate()).await {
                    Ok(result) => result,
                    Err(_) => Err(UpstreamError::new(
                        FailureClass::Timeout,
                        "token request timed out",
                    )),
                };
                let _ = myself.send_message(ProviderMsg::Authenticated(result));
            });
        }
    }

    fn authenticated(&mut self, result: Result<Option<AccessToken>, UpstreamError>) {
        self.authenticating = false;
        let now = Instant::now();
        let answer = match result {
            Ok(token) => {
                let renew_at = match &token {
                    Some(t) => {
                        now + t
                            .expires_in
                            .saturating_sub(self.shared.config.token_refresh_margin)
                    }
                    None => now + Duration::from_secs(365 * 24 * 3600),
                };
                let value = token.map(|t| t.value);
                self.shared.hold_token(Some(HeldToken {
                    value: value.clone(),
                    renew_at,
                }));
                self.last_auth_error = None;
                export_credentials(self.shared.id, true);
                Ok(value)
            }
            Err(error) => {
                self.last_auth_error = Some(error.class);
                if error.class == FailureClass::Credentials {
                    warn!(provider = %self.shared.id, "provider rejected our credentials; calls stop");
                    self.credentials_invalid_until =
                        Some(now + self.shared.config.credentials_backoff);
                    export_credentials(self.shared.id, false);
                } else {
                    info!(provider = %self.shared.id, error = %error, "token request failed");
                }
                Err(error)
            }
        };
        for waiter in self.waiters.drain(..) {
            let _ = waiter.send(answer.clone());
        }
    }
}
