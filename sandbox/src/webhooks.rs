//! Signed webhook pushes of payment status changes, as each bank's own PSD2 API sends them.
//!
//! The receiver registers a URL and a secret per source (`PUT /sandbox/webhooks/psd2/<bank>`).
//! Each event is POSTed as JSON, its `event_id` in the signed body, with
//! `x-webhook-timestamp` (Unix seconds) and
//! `x-webhook-signature: v1=<hex HMAC-SHA256 of "{timestamp}.{body}">`, and retried with
//! back-off until the receiver answers 2xx.
//!
//! The simulated Neonomics pushes nothing: its only documented webhook is its merchant
//! checkout's (<https://docs.neonomics.io/docs/webhook-payment-status-updates>), none for ICS
//! payments, whose status is read by `GET /ics/v3/payments/{product}/{id}`. NextGenPSD2
//! documents no such push either (its `TPP-Notification-URI` has another shape): this one
//! stands in for the banks' status changes until their adapters follow their documentation
//! (issue 28).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bankgate_actors::{ProviderId, WebhookSource};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use super::world::Payment;

const ATTEMPTS: u32 = 6;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Where a source pushes its status changes, as `PUT /sandbox/webhooks/{source}` takes
/// it. The control API never answers with one, so the secret is only ever serialized by
/// `SandboxClient::register_webhook` on its way in.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

/// The event body a provider pushes when a payment's status changes.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentEvent {
    pub event_id: String,
    pub event_type: &'static str,
    pub provider: ProviderId,
    pub bank: bankgate_actors::BankId,
    pub payment_id: String,
    pub end_to_end_id: Option<String>,
    pub status: super::world::TransactionStatus,
    pub reason: Option<String>,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
pub struct Webhooks {
    targets: Mutex<HashMap<WebhookSource, WebhookTarget>>,
}

/// Returns the signature header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
    let mut context = aws_lc_rs::hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v1={hex}")
}

impl Webhooks {
    pub fn register(&self, source: WebhookSource, target: WebhookTarget) {
        self.targets
            .lock()
            .expect("webhooks")
            .insert(source, target);
    }

    pub fn unregister(&self, source: WebhookSource) -> bool {
        self.targets
            .lock()
            .expect("webhooks")
            .remove(&source)
            .is_some()
    }

    /// Pushes the payment's new status to its source's registered receiver, if any, in the
    /// background.
    pub fn payment_changed(&self, http: &reqwest::Client, payment: &Payment) {
        let Some(source) = WebhookSource::of(payment.provider, payment.bank) else {
            return;
        };
        let Some(target) = self.targets.lock().expect("webhooks").get(&source).cloned() else {
            return;
        };
        let event = PaymentEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            event_type: "payment.status_changed",
            provider: payment.provider,
            bank: payment.bank,
            payment_id: payment.payment_id.clone(),
            end_to_end_id: payment.end_to_end_id.clone(),
            status: payment.status,
            reason: payment.reject_reason.clone(),
            occurred_at: payment.updated_at,
        };
        let http = http.clone();
        tokio::spawn(deliver(http, target, event));
    }
}

async fn deliver(http: reqwest::Client, target: WebhookTarget, event: PaymentEvent) {
    let body = serde_json::to_vec(&event).expect("event serializes");
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=ATTEMPTS {
        let timestamp = chrono::Utc::now().timestamp();
        let result = http
            .post(&target.url)
            .header("content-type", "application/json")
            .header("x-webhook-timestamp", timestamp.to_string())
            .header(
                "x-webhook-signature",
                sign(target.secret.as_bytes(), timestamp, &body),
            )
            .body(body.clone())
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {
                debug!(event_id = %event.event_id, attempt, "webhook delivered");
                return;
            }
            Ok(response) => debug!(status = %response.status(), attempt, "webhook refused"),
            Err(error) => debug!(error = %error, attempt, "webhook delivery failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff *= 2;
    }
    warn!(event_id = %event.event_id, "webhook given up after {ATTEMPTS} attempts");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", 1_700_000_000, b"{}"),
            "v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }
}
