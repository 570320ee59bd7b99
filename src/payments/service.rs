//! The payment service: what `POST /v1/payments`, the payment views, the webhooks and the
//! queue drainer do, over the payment tables and the bank actors.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use bankgate_actors::bank::{BankHandle, CONSENT_EXPIRED, PayAnswer, PayRequest};
use bankgate_actors::drainer::{DrainerHandle, PaymentQueue};
use bankgate_actors::metrics;
use bankgate_actors::modes::ModeBoard;
use bankgate_actors::provider::ProviderHandle;
use bankgate_actors::upstream::{PaymentOrder, RemotePayment, RemoteStatus, StoreError};
use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

use super::request::{AmountLimits, Creditor, PaymentRequest, idempotency_key, parse};
use super::store::{Change, PaymentEvent, PaymentRecord, PaymentStore, Sendable};
use super::webhook::{Delivery, PaymentEventBody, WebhookError, WebhookVerifier};
use super::{PaymentStatus, PaymentsMode};
use crate::http::{ApiError, ErrorCode};

/// What the client is told when its payment is queued.
pub const QUEUED_MESSAGE: &str = "Betaling satt i kø. Vil bli behandlet innen 2 timer.";
/// What the client is told while the outcome of sending is being settled.
pub const PROCESSING_MESSAGE: &str = "Betalingen behandles. Status oppdateres snart.";
/// The banner when a bank's payments are switched off.
pub const DISABLED_MESSAGE: &str = "Betalinger midlertidig utilgjengelig";
/// Payments looked at per kind of work in one pass for one bank.
const BATCH: usize = 50;

#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    pub limits: AmountLimits,
    pub per_user_limit: u32,
    pub per_ip_limit: u32,
    pub limit_window: Duration,
    pub idempotency_ttl: Duration,
    pub queue_max_age: Duration,
    pub in_flight_timeout: Duration,
    pub poll_after: Duration,
    /// Where users' browsers reach the client API (the SCA return address).
    pub public_url: String,
}

/// An answer to `POST /v1/payments` that created (or replays) a payment.
#[derive(Debug, Clone)]
pub struct Created {
    pub status: u16,
    pub body: serde_json::Value,
}

/// A payment as `GET /v1/payments` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentView {
    pub payment_id: Uuid,
    pub status: PaymentStatus,
    pub bank: BankId,
    pub debtor_account_id: Uuid,
    pub amount: String,
    pub currency: String,
    pub creditor: Creditor,
    pub remittance_info: Option<String>,
    pub kind: String,
    pub provider: Option<ProviderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sca_redirect: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub history: Vec<PaymentEvent>,
}

/// What a look-up at the providers proved.
enum Found {
    Payment(RemotePayment),
    /// Every provider that could hold it answered that it does not.
    Nowhere,
    Inconclusive,
}

pub struct Payments {
    store: PaymentStore,
    banks: Arc<HashMap<BankId, BankHandle>>,
    providers: Arc<HashMap<ProviderId, ProviderHandle>>,
    drainer: DrainerHandle,
    config: PaymentsConfig,
    modes: Arc<ModeBoard>,
    per_user: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    webhooks: WebhookVerifier,
}

fn unavailable(error: StoreError) -> ApiError {
    warn!(error = %error, "database error");
    ApiError::new(
        ErrorCode::Unavailable,
        "temporarily unavailable, try again shortly",
    )
    .with_retry_after(1)
}

/// A second request with a key whose first is still being handled (or died handling it, until
/// `in_flight_timeout` settles it): the client retries with the same key and gets the answer.
fn in_progress() -> ApiError {
    ApiError::new(
        ErrorCode::RequestInProgress,
        "a request with this Idempotency-Key is in progress; retry shortly",
    )
    .with_retry_after(1)
}

fn quota(limit: u32, window: Duration) -> Quota {
    let burst = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(window / burst.get())
        .expect("a non-zero window")
        .allow_burst(burst)
}

fn remote_status(status: RemoteStatus) -> PaymentStatus {
    match status {
        RemoteStatus::PendingSca => PaymentStatus::PendingSca,
        RemoteStatus::Completed => PaymentStatus::Completed,
        RemoteStatus::Rejected => PaymentStatus::Rejected,
    }
}

fn count(bank: BankId, status: PaymentStatus, by: u64) {
    ::metrics::counter!(metrics::PAYMENTS, "bank" => bank.as_str(), "status" => status.as_str())
        .increment(by);
}

/// The answer a client gets for a payment in its current state.
fn answer(payment: &PaymentRecord) -> Result<Created, ApiError> {
    let id = payment.id;
    let created = |status: u16, body: serde_json::Value| Ok(Created { status, body });
    match payment.status {
        PaymentStatus::PendingSca => created(
            201,
            json!({"payment_id": id, "status": payment.status, "sca_redirect": payment.sca_redirect}),
        ),
        PaymentStatus::Completed | PaymentStatus::Rejected => {
            created(201, json!({"payment_id": id, "status": payment.status}))
        }
        PaymentStatus::Queued => created(
            202,
            json!({"payment_id": id, "status": payment.status, "message": QUEUED_MESSAGE}),
        ),
        PaymentStatus::Received | PaymentStatus::Initiating | PaymentStatus::Unknown => created(
            202,
            json!({"payment_id": id, "status": payment.status, "message": PROCESSING_MESSAGE}),
        ),
        PaymentStatus::Failed | PaymentStatus::Expired => {
            let consent = payment
                .last_error
                .as_deref()
                .is_some_and(|e| e.starts_with("consent"));
            let error = if consent {
                ApiError::new(ErrorCode::ConsentExpired, CONSENT_EXPIRED)
            } else {
                ApiError::new(
                    ErrorCode::PaymentRejected,
                    format!(
                        "the payment was not carried out: {}",
                        payment.last_error.as_deref().unwrap_or("expired")
                    ),
                )
            };
            Err(error.with_detail("payment_id", id.to_string()))
        }
    }
}

fn error_answer(error: &ApiError) -> Created {
    Created {
        status: error.code.http_status().as_u16(),
        body: serde_json::to_value(error).expect("errors serialize"),
    }
}

impl Payments {
    pub fn new(
        store: PaymentStore,
        banks: Arc<HashMap<BankId, BankHandle>>,
        providers: Arc<HashMap<ProviderId, ProviderHandle>>,
        drainer: DrainerHandle,
        modes: Arc<ModeBoard>,
        webhooks: WebhookVerifier,
        config: PaymentsConfig,
    ) -> Payments {
        Payments {
            per_user: RateLimiter::keyed(quota(config.per_user_limit, config.limit_window)),
            per_ip: RateLimiter::keyed(quota(config.per_ip_limit, config.limit_window)),
            modes,
            store,
            banks,
            providers,
            drainer,
            config,
            webhooks,
        }
    }

    /// Whether an operator holds the bank's payments back (queue or disabled): then
    /// nothing is sent, not even from the queue.
    fn held(&self, bank: BankId) -> bool {
        matches!(
            self.modes.payments_pin(bank),
            Some(PaymentsMode::Queue | PaymentsMode::Disabled)
        )
    }

    fn bank(&self, bank: BankId) -> &BankHandle {
        self.banks.get(&bank).expect("every bank has a handle")
    }

    /// `POST /v1/payments`. `peer` is the caller's address; `psu_ip` the end user's, when
    /// the caller passes it on.
    pub async fn create(
        &self,
        user: &str,
        key: Option<&str>,
        body: &[u8],
        peer: IpAddr,
        psu_ip: Option<IpAddr>,
    ) -> Result<Created, ApiError> {
        let key = idempotency_key(key)?;
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("request body is not valid JSON: {e}"),
            )
        })?;
        let request = parse(&value, self.config.limits)?;
        let hash = request.fingerprint();
        let user_ip = psu_ip.unwrap_or(peer);

        // A second try when another request with the same key commits between our look-up
        // and our insert: the look-up then sees it.
        for _ in 0..2 {
            if let Some(known) = self.store.key(user, &key).await.map_err(unavailable)? {
                return self.replay(user, &key, known, &hash).await;
            }
            self.check_debtor(user, &request).await?;
            self.check_limits(user, user_ip)?;
            let mode = self.modes.payments_pin(request.bank);
            if mode == Some(PaymentsMode::Disabled) {
                return Err(
                    ApiError::new(ErrorCode::PaymentsUnavailable, DISABLED_MESSAGE)
                        .with_retry_after(60),
                );
            }
            let path_down = match self.bank(request.bank).status().await {
                Ok(status) => !status.available(),
                Err(_) => true,
            };
            let (status, reason) = if mode == Some(PaymentsMode::Queue) {
                (
                    PaymentStatus::Queued,
                    "payments at the bank are set to queue",
                )
            } else if path_down {
                (
                    PaymentStatus::Queued,
                    "every provider path to the bank is down",
                )
            } else {
                (PaymentStatus::Received, "accepted")
            };
            let id = Uuid::new_v4();
            let ip = user_ip.to_string();
            let inserted = self
                .store
                .insert(id, user, &key, &hash, &request, &ip, status, reason)
                .await
                .map_err(unavailable)?;
            if !inserted {
                continue;
            }
            count(request.bank, status, 1);
            let payment = if status == PaymentStatus::Received {
                self.send_new(id, request.bank).await.map_err(unavailable)?
            } else {
                self.store
                    .payment(id)
                    .await
                    .map_err(unavailable)?
                    .expect("just written")
            };
            let created = answer(&payment).unwrap_or_else(|e| error_answer(&e));
            self.store
                .save_response(user, &key, created.status, &created.body)
                .await
                .map_err(unavailable)?;
            return Ok(created);
        }
        Err(in_progress())
    }

    /// Answers a request whose key was seen before.
    async fn replay(
        &self,
        user: &str,
        key: &str,
        known: super::store::KeyRecord,
        hash: &[u8],
    ) -> Result<Created, ApiError> {
        if known.request_hash != hash {
            return Err(ApiError::new(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was used for a different payment",
            )
            .with_detail("Idempotency-Key", "reused with a different body"));
        }
        if let Some((status, body)) = known.response {
            return Ok(Created { status, body });
        }
        let abandoned = (Utc::now() - known.created_at)
            .to_std()
            .is_ok_and(|age| age > self.config.in_flight_timeout);
        match known.payment_id {
            // The first request died before answering: answer from where the payment is.
            Some(id) if abandoned => {
                let payment = self
                    .store
                    .payment(id)
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| ApiError::not_found("no such payment"))?;
                let created = answer(&payment).unwrap_or_else(|e| error_answer(&e));
                self.store
                    .save_response(user, key, created.status, &created.body)
                    .await
                    .map_err(unavailable)?;
                Ok(created)
            }
            _ => Err(in_progress()),
        }
    }

    fn check_limits(&self, user: &str, ip: IpAddr) -> Result<(), ApiError> {
        let now = DefaultClock::default().now();
        let limited = |wait: Duration, what: &str| {
            ::metrics::counter!(metrics::RATE_LIMITED, "source" => "payments", "provider" => "none")
                .increment(1);
            ApiError::new(
                ErrorCode::RateLimited,
                format!("too many payments {what}; try again later"),
            )
            .with_retry_after(wait.as_secs() + 1)
        };
        self.per_user
            .check_key(&user.to_owned())
            .map_err(|n| limited(n.wait_time_from(now), "for this user"))?;
        self.per_ip
            .check_key(&ip)
            .map_err(|n| limited(n.wait_time_from(now), "from this address"))?;
        Ok(())
    }

    async fn check_debtor(&self, user: &str, request: &PaymentRequest) -> Result<(), ApiError> {
        let bank = self
            .store
            .connection_bank(user, request.debtor_account_id)
            .await
            .map_err(unavailable)?;
        match bank {
            Some(bank) if bank == request.bank => Ok(()),
            Some(_) => Err(
                ApiError::new(ErrorCode::Unprocessable, "the payment was not accepted")
                    .with_detail(
                        "debtor_account_id",
                        format!("is not one of your accounts at {}", request.bank),
                    ),
            ),
            None => Err(
                ApiError::new(ErrorCode::Unprocessable, "the payment was not accepted")
                    .with_detail("debtor_account_id", "is not one of your connected accounts"),
            ),
        }
    }

    /// Sends a payment just written as `received`; returns it as this request left it (the
    /// drainer may take a payment queued here at once: the client is told it was queued).
    async fn send_new(&self, id: Uuid, bank: BankId) -> Result<PaymentRecord, StoreError> {
        let moved = self
            .store
            .transition(
                id,
                &[PaymentStatus::Received],
                PaymentStatus::Initiating,
                Change {
                    reason: "sending to the bank",
                    ..Change::default()
                },
            )
            .await?;
        let sent = match moved {
            Some(_) => {
                count(bank, PaymentStatus::Initiating, 1);
                self.send(id).await?
            }
            None => None,
        };
        let payment = match sent {
            Some(payment) => payment,
            None => self
                .store
                .payment(id)
                .await?
                .expect("payments are never deleted"),
        };
        if payment.status == PaymentStatus::Unknown {
            // The provider may hold it: a look-up often settles it at once. Only finding it
            // counts here; "not found" is believed only after `in_flight_timeout`.
            if let Some(found) = self.resolve(id, false).await? {
                return Ok(found);
            }
        }
        Ok(payment)
    }

    /// Sends a payment in `initiating` and records the outcome; returns the payment as
    /// recorded, or `None` when it was no longer this call's to send.
    async fn send(&self, id: Uuid) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(None);
        };
        let payment = &sendable.payment;
        let request = PayRequest {
            accounts: sendable.accounts.clone(),
            order: self.order(&sendable),
        };
        let deadline = self.config.in_flight_timeout / 2;
        let answer = self.bank(payment.bank).pay(request, deadline).await;
        let bank = payment.bank;
        let from = [PaymentStatus::Initiating];
        let (to, change) = match &answer {
            Ok(PayAnswer::Initiated(remote)) => (
                remote_status(remote.status),
                Change {
                    reason: "accepted by the provider",
                    provider: Some(remote.provider),
                    provider_payment_id: Some(&remote.payment_id),
                    sca_redirect: remote.sca_redirect.as_deref(),
                    error: None,
                },
            ),
            Ok(PayAnswer::NotSent { .. }) => (
                PaymentStatus::Queued,
                Change {
                    reason: "no provider path to the bank could take it; queued",
                    ..Change::default()
                },
            ),
            Ok(PayAnswer::Unknown { provider, error }) => (
                PaymentStatus::Unknown,
                Change {
                    reason: "the provider may have received it; to be looked up",
                    provider: Some(*provider),
                    error: Some(&error.detail),
                    ..Change::default()
                },
            ),
            Ok(PayAnswer::Refused { provider, error }) => (
                PaymentStatus::Failed,
                Change {
                    reason: "refused by the bank",
                    provider: Some(*provider),
                    error: Some(&error.detail),
                    ..Change::default()
                },
            ),
            Ok(PayAnswer::ConsentExpired { provider }) => (
                PaymentStatus::Failed,
                Change {
                    reason: "the user's consent at the bank expired",
                    provider: *provider,
                    error: Some("consent expired"),
                    ..Change::default()
                },
            ),
            Err(_) => (
                PaymentStatus::Unknown,
                Change {
                    reason: "the bank connection restarted mid-call; to be looked up",
                    ..Change::default()
                },
            ),
        };
        let moved = self.store.transition(id, &from, to, change).await?;
        if moved.is_some() {
            count(bank, to, 1);
        }
        Ok(moved)
    }

    fn order(&self, sendable: &Sendable) -> PaymentOrder {
        let payment = &sendable.payment;
        PaymentOrder {
            bank: payment.bank,
            debtor_iban: sendable.debtor_iban.clone(),
            amount: payment.amount,
            currency: payment.currency.clone(),
            creditor_name: payment.creditor.name.clone(),
            creditor_account: payment.creditor.account().to_owned(),
            remittance_info: payment.remittance_info.clone(),
            reference: payment.reference.clone(),
            redirect_url: format!(
                "{}/v1/payments/{}/callback",
                self.config.public_url.trim_end_matches('/'),
                payment.id
            ),
            psu_ip: payment.psu_ip.clone(),
        }
    }

    /// Asks the providers (the one last used first) for the payment by its reference.
    async fn look_up(&self, sendable: &Sendable, only_last: bool) -> Found {
        let order = self.order(sendable);
        let last = sendable.payment.provider;
        let mut accounts = sendable.accounts.clone();
        accounts.sort_by_key(|a| Some(a.provider) != last);
        if only_last {
            accounts.retain(|a| Some(a.provider) == last);
        }
        if accounts.is_empty() {
            return Found::Inconclusive;
        }
        let mut conclusive = true;
        for account in accounts {
            let Some(handle) = self.providers.get(&account.provider) else {
                conclusive = false;
                continue;
            };
            match handle.find_payment(account, order.clone()).await {
                Ok(Some(remote)) => return Found::Payment(remote),
                Ok(None) => {}
                Err(_) => conclusive = false,
            }
        }
        if conclusive {
            Found::Nowhere
        } else {
            Found::Inconclusive
        }
    }

    /// Settles a payment in `unknown` by looking it up. With `requeue`, a payment no
    /// provider has goes back to the queue to be sent again. Returns the payment as moved,
    /// or `None` when it stays where it was.
    async fn resolve(&self, id: Uuid, requeue: bool) -> Result<Option<PaymentRecord>, StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(None);
        };
        let bank = sendable.payment.bank;
        let found = self.look_up(&sendable, false).await;
        let (to, change) = match &found {
            Found::Payment(remote) => (
                remote_status(remote.status),
                Change {
                    reason: "found at the provider by its reference",
                    provider: Some(remote.provider),
                    provider_payment_id: Some(&remote.payment_id),
                    sca_redirect: remote.sca_redirect.as_deref(),
                    error: None,
                },
            ),
            Found::Nowhere if requeue => (
                PaymentStatus::Queued,
                Change {
                    reason: "no provider received it; queued to be sent again",
                    ..Change::default()
                },
            ),
            Found::Nowhere | Found::Inconclusive => return Ok(None),
        };
        let moved = self
            .store
            .transition(id, &[PaymentStatus::Unknown], to, change)
            .await?;
        if moved.is_some() {
            count(bank, to, 1);
        }
        Ok(moved)
    }

    /// Asks the provider where a payment waiting for SCA stands.
    async fn poll(&self, id: Uuid) -> Result<(), StoreError> {
        let Some(sendable) = self.store.sendable(id).await? else {
            return Ok(());
        };
        let Found::Payment(remote) = self.look_up(&sendable, true).await else {
            return Ok(());
        };
        let to = remote_status(remote.status);
        if to == PaymentStatus::PendingSca {
            return Ok(());
        }
        let change = Change {
            reason: "status polled at the provider",
            provider: Some(remote.provider),
            ..Change::default()
        };
        if self
            .store
            .transition(id, &[PaymentStatus::PendingSca], to, change)
            .await?
            .is_some()
        {
            count(sendable.payment.bank, to, 1);
        }
        Ok(())
    }

    /// The user's browser is back from SCA: ask the provider at once.
    pub async fn sca_returned(&self, id: Uuid) -> Result<serde_json::Value, ApiError> {
        let payment = self
            .store
            .payment(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::not_found("no such payment"))?;
        if payment.status == PaymentStatus::PendingSca {
            self.poll(id).await.map_err(unavailable)?;
        }
        let payment = self
            .store
            .payment(id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| ApiError::not_found("no such payment"))?;
        Ok(json!({"payment_id": id, "status": payment.status}))
    }

    /// One pass of upkeep for a bank's payments.
    async fn upkeep(&self, bank: BankId) -> Result<(), StoreError> {
        let config = &self.config;
        let swept = [
            (
                PaymentStatus::Received,
                PaymentStatus::Queued,
                config.in_flight_timeout,
                "the gateway stopped before sending it; queued",
            ),
            (
                PaymentStatus::Initiating,
                PaymentStatus::Unknown,
                config.in_flight_timeout,
                "the gateway stopped while sending it; to be looked up",
            ),
            (
                PaymentStatus::Queued,
                PaymentStatus::Expired,
                config.queue_max_age,
                "queued too long; never sent",
            ),
        ];
        for (from, to, older_than, reason) in swept {
            let moved = self.store.sweep(bank, from, to, older_than, reason).await?;
            if moved > 0 {
                info!(bank = %bank, from = from.as_str(), to = to.as_str(), count = moved, "payments swept");
                count(bank, to, moved);
            }
        }
        for _ in 0..BATCH {
            let Some(id) = self
                .store
                .lease(bank, PaymentStatus::Unknown, config.in_flight_timeout)
                .await?
            else {
                break;
            };
            self.resolve(id, true).await?;
        }
        for _ in 0..BATCH {
            let Some(id) = self
                .store
                .lease(bank, PaymentStatus::PendingSca, config.poll_after)
                .await?
            else {
                break;
            };
            self.poll(id).await?;
        }
        if !self.held(bank) {
            self.drain(bank).await?;
        }
        let (depth, oldest) = self.store.queue_stats(bank).await?;
        ::metrics::gauge!(metrics::PAYMENT_QUEUE_DEPTH, "bank" => bank.as_str()).set(depth as f64);
        ::metrics::gauge!(metrics::PAYMENT_QUEUE_OLDEST, "bank" => bank.as_str()).set(oldest);
        Ok(())
    }

    /// Sends queued payments oldest first while the bank has a path.
    async fn drain(&self, bank: BankId) -> Result<(), StoreError> {
        for _ in 0..BATCH {
            let available = self.bank(bank).status().await.is_ok_and(|s| s.available());
            if !available || self.held(bank) {
                return Ok(());
            }
            let Some(id) = self
                .store
                .claim_queued(bank, self.config.queue_max_age)
                .await?
            else {
                return Ok(());
            };
            count(bank, PaymentStatus::Initiating, 1);
            let sent = self.send(id).await?;
            if sent.is_some_and(|p| p.status == PaymentStatus::Queued) {
                // The path went down again: wait for the next wake.
                return Ok(());
            }
        }
        // More may be waiting: come back at once.
        self.drainer.wake(bank);
        Ok(())
    }

    /// How many payments of `bank` are queued, and the oldest one's wait in seconds.
    pub async fn queue(&self, bank: BankId) -> Result<(i64, f64), StoreError> {
        self.store.queue_stats(bank).await
    }

    /// Wakes every bank's drain now.
    pub fn drain_now(&self) {
        self.drainer.wake_all();
    }

    /// Forgets old idempotency keys and idle rate-limiter entries.
    pub async fn housekeeping(&self) {
        self.per_user.retain_recent();
        self.per_ip.retain_recent();
        if let Err(error) = self.store.purge_keys(self.config.idempotency_ttl).await {
            warn!(error = %error, "old idempotency keys not purged");
        }
    }

    /// `GET /v1/payments/{id}`: the user's own payment only.
    pub async fn view(&self, user: &str, id: Uuid) -> Result<PaymentView, ApiError> {
        let payment = self
            .store
            .payment(id)
            .await
            .map_err(unavailable)?
            .filter(|p| p.user_id == user)
            .ok_or_else(|| ApiError::not_found("no such payment"))?;
        let mut events = self.store.events(&[id]).await.map_err(unavailable)?;
        Ok(Self::render(
            payment,
            events.remove(&id).unwrap_or_default(),
        ))
    }

    /// `GET /v1/payments?status=`: the user's latest payments.
    pub async fn list(
        &self,
        user: &str,
        status: Option<PaymentStatus>,
    ) -> Result<Vec<PaymentView>, ApiError> {
        let payments = self
            .store
            .list(user, status, 100)
            .await
            .map_err(unavailable)?;
        let ids: Vec<Uuid> = payments.iter().map(|p| p.id).collect();
        let mut events = self.store.events(&ids).await.map_err(unavailable)?;
        Ok(payments
            .into_iter()
            .map(|p| {
                let history = events.remove(&p.id).unwrap_or_default();
                Self::render(p, history)
            })
            .collect())
    }

    fn render(payment: PaymentRecord, history: Vec<PaymentEvent>) -> PaymentView {
        PaymentView {
            payment_id: payment.id,
            status: payment.status,
            bank: payment.bank,
            debtor_account_id: payment.debtor_connection,
            amount: payment.amount.to_string(),
            currency: payment.currency,
            creditor: payment.creditor,
            remittance_info: payment.remittance_info,
            kind: payment.kind,
            provider: payment.provider,
            sca_redirect: payment
                .sca_redirect
                .filter(|_| payment.status == PaymentStatus::PendingSca),
            created_at: payment.created_at,
            updated_at: payment.updated_at,
            history,
        }
    }

    /// `POST /v1/webhooks/{provider}`: verifies and applies one delivery.
    pub async fn webhook(
        &self,
        provider: ProviderId,
        delivery: Delivery<'_>,
        body: &[u8],
    ) -> Result<serde_json::Value, ApiError> {
        let outcome = |outcome: &'static str| {
            ::metrics::counter!(metrics::WEBHOOKS, "provider" => provider.as_str(), "outcome" => outcome)
                .increment(1);
        };
        let event_id = self
            .webhooks
            .verify(provider, delivery, body, Utc::now())
            .map_err(|error| {
                outcome(error.outcome());
                let code = match error {
                    WebhookError::Malformed => ErrorCode::BadRequest,
                    WebhookError::Stale | WebhookError::BadSignature => ErrorCode::Unauthorized,
                };
                ApiError::new(code, error.to_string())
            })?;
        let event: PaymentEventBody = serde_json::from_slice(body).map_err(|e| {
            outcome("malformed");
            ApiError::new(ErrorCode::BadRequest, format!("unexpected event body: {e}"))
        })?;
        let to = match event.status.as_str() {
            "ACSC" | "ACCC" => PaymentStatus::Completed,
            "RJCT" | "CANC" => PaymentStatus::Rejected,
            _ => {
                outcome("ignored");
                return Ok(json!({"status": "ignored"}));
            }
        };
        let reason = match (&to, &event.reason) {
            (PaymentStatus::Rejected, Some(reason)) => format!("webhook: rejected ({reason})"),
            _ => format!("webhook: {}", to.as_str()),
        };
        let applied = self
            .store
            .apply_webhook(
                provider,
                event_id,
                event.end_to_end_id.as_deref(),
                &event.payment_id,
                to,
                &reason,
            )
            .await
            .map_err(unavailable)?;
        let status = match applied {
            None => "duplicate",
            Some(None) => "ignored",
            Some(Some((_, bank))) => {
                count(bank, to, 1);
                "applied"
            }
        };
        outcome(status);
        Ok(json!({ "status": status }))
    }
}

/// The drainer's view of the payment service.
pub struct Queue(pub Arc<Payments>);

impl PaymentQueue for Queue {
    fn work(&self, bank: BankId) -> BoxFuture<'static, ()> {
        let payments = self.0.clone();
        Box::pin(async move {
            if let Err(error) = payments.upkeep(bank).await {
                warn!(bank = %bank, error = %error, "payment upkeep failed; retried next pass");
            }
        })
    }
}
