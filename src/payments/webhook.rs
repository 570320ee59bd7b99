//! The providers' payment status pushes (`POST /v1/webhooks/{provider}`): verified, then
//! applied to the payment they name.
//!
//! Verification: `x-webhook-signature: v1=<hex HMAC-SHA256>` over
//! `"{x-webhook-timestamp}.{raw body}"` with the provider's secret, and a timestamp within the
//! tolerance window so that a captured delivery cannot be replayed later. The comparison is
//! constant-time (`aws_lc_rs::hmac::verify`). A delivery seen before is
//! recognised by its event id and changes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use bankgate_actors::ProviderId;
use bankgate_actors::metrics;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::error::PaymentError;
use super::service::count;
use super::{PaymentStatus, Payments};
use bankgate_sandbox::webhooks::WebhookTarget;

use crate::settings::WebhooksSettings;

/// Why a delivery was refused.
/// Where each provider with a secret in `settings` is to push its status changes: this
/// gateway's webhook route at `client_url`, as an operator enters it in the provider's portal
/// (the demo and the soak register them at the sandbox).
pub fn webhook_targets(
    settings: &WebhooksSettings,
    client_url: &str,
) -> Vec<(ProviderId, WebhookTarget)> {
    settings
        .secrets
        .iter()
        .map(|(&provider, secret)| {
            let target = WebhookTarget {
                url: format!("{client_url}/v1/webhooks/{provider}"),
                secret: secret.expose_secret().to_owned(),
            };
            (provider, target)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing or malformed webhook headers")]
    Malformed,
    #[error("the webhook timestamp is outside the tolerance window")]
    Stale,
    #[error("the webhook signature does not match")]
    BadSignature,
}

impl WebhookError {
    /// The outcome label in `bankgate_webhooks_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            WebhookError::Malformed => "malformed",
            WebhookError::Stale => "stale",
            WebhookError::BadSignature => "bad_signature",
        }
    }
}

/// A delivery's headers.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// The event a provider pushes when a payment's status changes.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentEventBody {
    pub payment_id: String,
    #[serde(default)]
    pub end_to_end_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

pub struct WebhookVerifier {
    keys: BTreeMap<ProviderId, aws_lc_rs::hmac::Key>,
    tolerance: Duration,
}

impl WebhookVerifier {
    pub fn new(secrets: &BTreeMap<ProviderId, SecretString>, tolerance: Duration) -> Self {
        let keys = secrets
            .iter()
            .map(|(provider, secret)| {
                let key = aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    secret.expose_secret().as_bytes(),
                );
                (*provider, key)
            })
            .collect();
        WebhookVerifier { keys, tolerance }
    }

    /// How long a delivery's event id must be remembered: a delivery is accepted while its
    /// timestamp is within `tolerance` of now either way, so one first received at `t`
    /// cannot be accepted again after `t + 2 × tolerance`.
    pub fn replay_window(&self) -> Duration {
        self.tolerance * 2
    }

    /// Checks a delivery for `provider`; returns its event id.
    pub fn verify<'a>(
        &self,
        provider: ProviderId,
        delivery: Delivery<'a>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<&'a str, WebhookError> {
        let id = delivery
            .id
            .filter(|id| !id.is_empty() && id.len() <= 200)
            .ok_or(WebhookError::Malformed)?;
        let timestamp_text = delivery.timestamp.ok_or(WebhookError::Malformed)?;
        let timestamp: i64 = timestamp_text
            .parse()
            .map_err(|_| WebhookError::Malformed)?;
        let signature = delivery
            .signature
            .and_then(|s| s.strip_prefix("v1="))
            .and_then(decode_hex)
            .ok_or(WebhookError::Malformed)?;
        let key = self.keys.get(&provider).ok_or(WebhookError::BadSignature)?;
        let mut signed = Vec::with_capacity(timestamp_text.len() + 1 + body.len());
        signed.extend_from_slice(timestamp_text.as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        aws_lc_rs::hmac::verify(key, &signed, &signature)
            .map_err(|_| WebhookError::BadSignature)?;
        // Checked after the signature, so that only the provider learns about clock skew.
        let skew = (now.timestamp() - timestamp).unsigned_abs();
        if skew > self.tolerance.as_secs() {
            return Err(WebhookError::Stale);
        }
        Ok(id)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Payments {
    /// `POST /v1/webhooks/{provider}`: verifies and applies one delivery.
    pub async fn webhook(
        &self,
        provider: ProviderId,
        delivery: Delivery<'_>,
        body: &[u8],
    ) -> Result<serde_json::Value, PaymentError> {
        let outcome = |outcome: &'static str| {
            ::metrics::counter!(metrics::WEBHOOKS, "provider" => provider.as_str(), "outcome" => outcome)
                .increment(1);
        };
        let event_id = self
            .webhooks
            .verify(provider, delivery, body, Utc::now())
            .inspect_err(|error| outcome(error.outcome()))?;
        let event: PaymentEventBody = serde_json::from_slice(body).map_err(|e| {
            outcome("malformed");
            PaymentError::UnexpectedEvent(e.to_string())
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
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use bankgate_sandbox::webhooks::sign;

    fn verifier() -> WebhookVerifier {
        let secrets = BTreeMap::from([(
            ProviderId::Neonomics,
            SecretString::from("webhook-secret-of-sixteen"),
        )]);
        WebhookVerifier::new(&secrets, Duration::from_secs(300))
    }

    fn delivery<'a>(timestamp: &'a str, signature: &'a str) -> Delivery<'a> {
        Delivery {
            id: Some("evt-1"),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn a_signed_fresh_delivery_passes_and_forgeries_do_not() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"payment_id":"p1","status":"ACSC"}"#;
        let good = sign(b"webhook-secret-of-sixteen", ts, body);
        let ts_text = ts.to_string();
        let v = verifier();
        assert_eq!(
            v.verify(ProviderId::Neonomics, delivery(&ts_text, &good), body, now),
            Ok("evt-1")
        );
        // The body changed after signing.
        assert_eq!(
            v.verify(ProviderId::Neonomics, delivery(&ts_text, &good), b"{}", now),
            Err(WebhookError::BadSignature)
        );
        // Signed with another secret.
        let forged = sign(b"another-secret-entirely", ts, body);
        assert_eq!(
            v.verify(
                ProviderId::Neonomics,
                delivery(&ts_text, &forged),
                body,
                now
            ),
            Err(WebhookError::BadSignature)
        );
        // A provider without a secret.
        assert_eq!(
            v.verify(ProviderId::Psd2, delivery(&ts_text, &good), body, now),
            Err(WebhookError::BadSignature)
        );
        // Replayed ten minutes later.
        let later = now + chrono::Duration::minutes(10);
        assert_eq!(
            v.verify(
                ProviderId::Neonomics,
                delivery(&ts_text, &good),
                body,
                later
            ),
            Err(WebhookError::Stale)
        );
        assert_eq!(
            v.verify(ProviderId::Neonomics, delivery("soon", &good), body, now),
            Err(WebhookError::Malformed)
        );
        assert_eq!(
            v.verify(
                ProviderId::Neonomics,
                delivery(&ts_text, "v1=zz"),
                body,
                now
            ),
            Err(WebhookError::Malformed)
        );
    }
}
