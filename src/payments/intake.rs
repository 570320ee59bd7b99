//! `POST /v1/payments`: a payment's way in. The body is checked, the key looked up (a known
//! key replays its stored answer), the debtor account and the per-user and per-IP limits
//! checked, and the payment written with its key and first event in one transaction before
//! anything is sent; a payment the bank cannot take now is written `queued`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use bankgate_actors::metrics;
use chrono::Utc;
use governor::Quota;
use governor::clock::{Clock, DefaultClock};
use serde_json::json;
use tracing::warn;
use uuid::Uuid;

use super::request::{PaymentRequest, idempotency_key, parse};
use super::service::count;
use super::store::PaymentRecord;
use super::{PaymentStatus, Payments, PaymentsMode};
use crate::copy::{CONSENT_EXPIRED, PAYMENT_PROCESSING, PAYMENT_QUEUED, PAYMENTS_DISABLED};
use bankgate_sandbox::http::{ApiError, ErrorCode};

/// An answer to `POST /v1/payments` that created (or replays) a payment.
#[derive(Debug, Clone)]
pub struct Created {
    pub status: u16,
    pub body: serde_json::Value,
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

pub(super) fn quota(limit: u32, window: Duration) -> Quota {
    let burst = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(window / burst.get())
        .expect("a non-zero window")
        .allow_burst(burst)
}

/// The answer a client gets for a payment in its current state.
pub(super) fn answer(payment: &PaymentRecord) -> Result<Created, ApiError> {
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
            json!({"payment_id": id, "status": payment.status, "message": PAYMENT_QUEUED}),
        ),
        PaymentStatus::Received | PaymentStatus::Initiating | PaymentStatus::Unknown => created(
            202,
            json!({"payment_id": id, "status": payment.status, "message": PAYMENT_PROCESSING}),
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

pub(super) fn error_answer(error: &ApiError) -> Created {
    Created {
        status: error.code.http_status().as_u16(),
        body: serde_json::to_value(error).expect("errors serialize"),
    }
}

impl Payments {
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
            if let Some(known) = self.store.key(user, &key).await? {
                return self.replay(user, &key, known, &hash).await;
            }
            self.check_debtor(user, &request).await?;
            self.check_limits(user, user_ip)?;
            let mode = self.modes.payments_pin(request.bank);
            if mode == Some(PaymentsMode::Disabled) {
                return Err(
                    ApiError::new(ErrorCode::PaymentsUnavailable, PAYMENTS_DISABLED)
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
                .await?;
            if !inserted {
                continue;
            }
            count(request.bank, status, 1);
            let payment = if status == PaymentStatus::Received {
                self.send_new(id, request.bank).await?
            } else {
                self.store.payment(id).await?.expect("just written")
            };
            let created = answer(&payment).unwrap_or_else(|e| error_answer(&e));
            self.store
                .save_response(user, &key, created.status, &created.body)
                .await?;
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
                    .await?
                    .ok_or_else(|| ApiError::not_found("no such payment"))?;
                let created = answer(&payment).unwrap_or_else(|e| error_answer(&e));
                self.store
                    .save_response(user, key, created.status, &created.body)
                    .await?;
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
            .await?;
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

    /// Forgets old idempotency keys and idle rate-limiter entries.
    pub async fn housekeeping(&self) {
        self.per_user.retain_recent();
        self.per_ip.retain_recent();
        if let Err(error) = self.store.purge_keys(self.config.idempotency_ttl).await {
            warn!(error = %error, "old idempotency keys not purged");
        }
    }
}
