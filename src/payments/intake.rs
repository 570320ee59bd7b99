//! `POST /v1/payments`: a payment's way in. The body is checked, the key looked up (a known
//! key replays its stored answer), the debtor account and the per-user and per-IP limits
//! checked, and the payment written with its key and first event in one transaction before
//! anything is sent; a payment the bank cannot take now is written `queued`.

use std::net::IpAddr;
use std::time::Duration;

use bankgate_actors::metrics;
use chrono::Utc;
use governor::clock::{Clock, DefaultClock};
use serde_json::json;
use tracing::warn;
use uuid::Uuid;

use super::error::PaymentError;
use super::request::{PaymentRequest, idempotency_key, parse};
use super::service::count;
use super::store::PaymentRecord;
use super::{FailureReason, PaymentStatus, Payments, PaymentsMode};
use crate::copy::{PAYMENT_PROCESSING, PAYMENT_QUEUED};
use bankgate_sandbox::http::ApiError;

/// An answer to `POST /v1/payments` that created (or replays) a payment.
#[derive(Debug, Clone)]
pub struct Created {
    pub status: u16,
    pub body: serde_json::Value,
}

/// The answer a client gets for a payment in its current state.
pub(super) fn answer(payment: &PaymentRecord) -> Result<Created, PaymentError> {
    let id = payment.id;
    let created = |status: u16, body: serde_json::Value| Ok(Created { status, body });
    match payment.status {
        PaymentStatus::PendingSca => created(
            201,
            json!({"payment_id": id, "status": payment.status, "sca_redirect": payment.sca_redirect}),
        ),
        PaymentStatus::Authorised | PaymentStatus::Completed | PaymentStatus::Rejected => {
            created(201, json!({"payment_id": id, "status": payment.status}))
        }
        PaymentStatus::Queued
        | PaymentStatus::Received
        | PaymentStatus::Initiating
        | PaymentStatus::Unknown => Ok(accepted(id, payment.status)),
        PaymentStatus::Failed | PaymentStatus::Expired | PaymentStatus::Cancelled => {
            Err(if payment.failure == Some(FailureReason::ConsentExpired) {
                PaymentError::ConsentExpired { payment_id: id }
            } else {
                PaymentError::NotCarriedOut {
                    payment_id: id,
                    reason: payment
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "expired".to_owned()),
                }
            })
        }
    }
}

/// 202 for a payment stored and not yet settled, in `status`.
fn accepted(id: Uuid, status: PaymentStatus) -> Created {
    let message = if status == PaymentStatus::Queued {
        PAYMENT_QUEUED
    } else {
        PAYMENT_PROCESSING
    };
    Created {
        status: 202,
        body: json!({"payment_id": id, "status": status, "message": message}),
    }
}

/// The answer for a payment written `written` whose state since cannot be read: queued if it
/// was written queued, else `unknown`, since it may have been sent.
fn stored(id: Uuid, written: PaymentStatus) -> Created {
    match written {
        PaymentStatus::Queued => accepted(id, PaymentStatus::Queued),
        _ => accepted(id, PaymentStatus::Unknown),
    }
}

pub(super) fn error_answer(error: PaymentError) -> Created {
    let error = ApiError::from(error);
    Created {
        status: error.code.http_status().as_u16(),
        body: serde_json::to_value(&error).expect("errors serialize"),
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
    ) -> Result<Created, PaymentError> {
        let key = idempotency_key(key).map_err(PaymentError::Invalid)?;
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| PaymentError::InvalidJson(e.to_string()))?;
        let request = parse(&value, self.config.limits).map_err(PaymentError::Invalid)?;
        if let Some(url) = &request.redirect_url
            && !crate::redirect::is_allowed(url, &self.config.allowed_redirects)
        {
            return Err(PaymentError::Invalid(ApiError::invalid_field(
                "redirect_url",
                "must be an absolute http(s) URL of at most 2048 characters within consents.allowed_redirect_urls",
            )));
        }
        let hash = request.fingerprint();
        let user_ip = psu_ip.unwrap_or(peer);

        // A second try when another request with the same key commits between our look-up
        // and our insert: the look-up then sees it.
        for _ in 0..2 {
            if let Some(known) = self.store.key(user, &key).await? {
                return self.replay(user, &key, known, &hash).await;
            }
            self.check_debtor(user, &request).await?;
            self.check_limits(user, psu_ip)?;
            let mode = self.modes.payments_pin(request.bank);
            if mode == Some(PaymentsMode::Disabled) {
                return Err(PaymentError::Disabled);
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
            // The payment is stored: from here on no failure may answer a 5xx, which would
            // invite the client to try again with a new key. What cannot be learnt now is
            // the drainer's to settle.
            let sent = if status == PaymentStatus::Received {
                self.send_new(id, request.bank).await
            } else {
                self.store
                    .payment(id)
                    .await
                    .map(|p| p.expect("just written"))
            };
            let created = match sent {
                Ok(payment) => answer(&payment).unwrap_or_else(error_answer),
                Err(error) => {
                    warn!(payment = %id, error = %error, "a stored payment's state could not be read back; answered as written");
                    stored(id, status)
                }
            };
            if let Err(error) = self
                .store
                .save_response(user, &key, created.status, &created.body)
                .await
            {
                warn!(payment = %id, error = %error, "the answer to a stored payment was not saved with its key");
            }
            return Ok(created);
        }
        Err(PaymentError::InProgress)
    }

    /// Answers a request whose key was seen before.
    async fn replay(
        &self,
        user: &str,
        key: &str,
        known: super::store::KeyRecord,
        hash: &[u8],
    ) -> Result<Created, PaymentError> {
        if known.request_hash != hash {
            return Err(PaymentError::KeyReused);
        }
        if let Some((status, body)) = known.response {
            return Ok(Created { status, body });
        }
        let abandoned = (Utc::now() - known.created_at)
            .to_std()
            .is_ok_and(|age| age > self.config.in_flight_timeout);
        match known.payment_id {
            // The first request died before answering: answer from where the payment is (a
            // stored payment is never answered 5xx, even when its state cannot be read).
            Some(id) if abandoned => {
                let created = match self.store.payment(id).await {
                    Ok(Some(payment)) => answer(&payment).unwrap_or_else(error_answer),
                    Ok(None) => return Err(PaymentError::NotFound),
                    Err(error) => {
                        warn!(payment = %id, error = %error, "a stored payment's state could not be read");
                        stored(id, PaymentStatus::Unknown)
                    }
                };
                if let Err(error) = self
                    .store
                    .save_response(user, key, created.status, &created.body)
                    .await
                {
                    warn!(payment = %id, error = %error, "the answer to a stored payment was not saved with its key");
                }
                Ok(created)
            }
            _ => Err(PaymentError::InProgress),
        }
    }

    /// The per-user limit, and the per-IP one when the caller passed the user's address on:
    /// without it the only address known is the caller's, which every user behind it shares,
    /// so one bucket for it would let a few users' payments refuse everyone else's.
    fn check_limits(&self, user: &str, psu_ip: Option<IpAddr>) -> Result<(), PaymentError> {
        let now = DefaultClock::default().now();
        let limited = |retry_after: Duration, what: &'static str| {
            ::metrics::counter!(metrics::RATE_LIMITED, "source" => "payments", "provider" => "none")
                .increment(1);
            PaymentError::RateLimited { what, retry_after }
        };
        self.per_user
            .check_key(&user.to_owned())
            .map_err(|n| limited(n.wait_time_from(now), "for this user"))?;
        if let Some(ip) = psu_ip {
            self.per_ip
                .check_key(&ip)
                .map_err(|n| limited(n.wait_time_from(now), "from this address"))?;
        }
        Ok(())
    }

    async fn check_debtor(&self, user: &str, request: &PaymentRequest) -> Result<(), PaymentError> {
        let bank = self
            .store
            .connection_bank(user, request.debtor_account_id)
            .await?;
        match bank {
            Some(bank) if bank == request.bank => Ok(()),
            Some(_) => Err(PaymentError::NotYourAccount {
                at_bank: Some(request.bank),
            }),
            None => Err(PaymentError::NotYourAccount { at_bank: None }),
        }
    }

    /// Forgets old idempotency keys, webhook event ids past their replay window and idle
    /// rate-limiter entries.
    pub async fn housekeeping(&self) {
        self.per_user.retain_recent();
        self.per_ip.retain_recent();
        if let Err(error) = self.store.purge_keys(self.config.idempotency_ttl).await {
            warn!(error = %error, "old idempotency keys not purged");
        }
        let window = self.webhooks.replay_window();
        if let Err(error) = self.store.purge_webhook_events(window).await {
            warn!(error = %error, "old webhook event ids not purged");
        }
    }
}

#[cfg(test)]
mod tests {
    use bankgate_actors::{BankId, ProviderId};
    use chrono::Utc;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    use super::answer;
    use crate::payments::request::Creditor;
    use crate::payments::store::PaymentRecord;
    use crate::payments::{FailureReason, PaymentStatus};
    use bankgate_sandbox::http::{ApiError, ErrorCode};

    fn failed(failure: FailureReason, last_error: &str) -> PaymentRecord {
        PaymentRecord {
            id: Uuid::new_v4(),
            user_id: "u-1".to_owned(),
            bank: BankId::Dnb,
            debtor_connection: Uuid::new_v4(),
            amount: Decimal::from(250),
            currency: "NOK".to_owned(),
            creditor: Creditor {
                name: "Kari Nordmann".to_owned(),
                iban: None,
                account_number: Some("12345678903".to_owned()),
                country: "NO".to_owned(),
            },
            remittance_info: None,
            kind: "domestic".to_owned(),
            status: PaymentStatus::Failed,
            reference: "ref-1".to_owned(),
            provider: Some(ProviderId::Neonomics),
            provider_payment_id: None,
            sca_redirect: None,
            attempts: 1,
            last_error: Some(last_error.to_owned()),
            failure: Some(failure),
            psu_ip: "192.0.2.1".to_owned(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            queued_at: None,
            callback_state: None,
            redirect_url: None,
        }
    }

    #[test]
    fn a_failed_payment_is_answered_by_its_reason_not_by_the_banks_words() {
        // The bank's own words may well begin with "consent"; only the recorded reason says
        // whether the user must renew the connection.
        let refused = failed(
            FailureReason::Refused,
            "consent of the creditor bank missing",
        );
        let error = ApiError::from(answer(&refused).unwrap_err());
        assert_eq!(error.code, ErrorCode::PaymentRejected);
        assert!(
            error
                .message
                .contains("consent of the creditor bank missing")
        );

        let expired = failed(FailureReason::ConsentExpired, "consent expired");
        assert_eq!(
            ApiError::from(answer(&expired).unwrap_err()).code,
            ErrorCode::ConsentExpired
        );
    }
}
