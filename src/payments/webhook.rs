//! The banks' status pushes (`POST /v1/webhooks/psd2/{bank}`): verified, then applied to the
//! payment they name. Neonomics pushes nothing (it documents no webhook for its payment API);
//! a payment sent through it is polled and completed (`send.rs`).
//!
//! Each bank's push is signed with a secret of its own. Verification: `x-webhook-signature:
//! v1=<hex HMAC-SHA256>` over `"{x-webhook-timestamp}.{raw body}"` with the source's secret,
//! and a timestamp within the tolerance window so that a captured delivery cannot be replayed
//! later. The comparison is constant-time (`aws_lc_rs::hmac::verify`). The event id is the
//! body's, so the signature covers it: a delivery seen before is recognised by it and changes
//! nothing, and a replay cannot pass as new under another id.
//!
//! A push settles only a payment recorded as sent through the bank's own API, at the path's
//! bank, named by that API's payment id or by bankgate's reference. It is applied in any
//! state a push can still move: unknown, waiting for SCA, and queued again after a look-up
//! found it nowhere. A payment never recorded as sent there (queued unsent, or its first send
//! still in flight) is not the source's to settle, whatever the push claims: the look-up at
//! every provider settles it.

use std::collections::BTreeMap;
use std::time::Duration;

use bankgate_actors::metrics;
use bankgate_actors::{BankId, WebhookSource};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;

use super::error::PaymentError;
use super::service::count;
use super::{PaymentStatus, Payments};
use bankgate_sandbox::webhooks::WebhookTarget;

use crate::settings::{WebhookSecrets, WebhooksSettings};

/// Where each webhook source is to push its status changes: this gateway's webhook route at
/// `client_url`, as an operator enters it in the provider's portal or agrees it with the bank
/// (the demo and the soak register them at the sandbox).
pub fn webhook_targets(
    settings: &WebhooksSettings,
    client_url: &str,
) -> Vec<(WebhookSource, WebhookTarget)> {
    settings
        .secrets
        .iter()
        .map(|(source, secret)| {
            let target = WebhookTarget {
                url: format!("{client_url}/v1/webhooks/{source}"),
                secret: secret.expose_secret().to_owned(),
            };
            (source, target)
        })
        .collect()
}

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("missing or malformed webhook headers")]
    Malformed,
    #[error("the webhook timestamp is outside the tolerance window")]
    Stale,
    #[error("the webhook signature does not match")]
    BadSignature,
    #[error(
        "the signed body is not a payment event of this source (event_id, bank, payment_id, status)"
    )]
    BadEvent,
}

impl WebhookError {
    /// The outcome label in `bankgate_webhooks_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            WebhookError::Malformed => "malformed",
            WebhookError::Stale => "stale",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::BadEvent => "malformed",
        }
    }
}

/// A delivery's headers.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// The event a source pushes when a payment's status changes.
#[derive(Debug, Clone, Deserialize)]
pub struct PaymentEventBody {
    /// The event's id, the same on every retry of its delivery.
    pub event_id: String,
    /// The bank the payment is at.
    pub bank: BankId,
    pub payment_id: String,
    #[serde(default)]
    pub end_to_end_id: Option<String>,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
}

pub struct WebhookVerifier {
    keys: BTreeMap<WebhookSource, aws_lc_rs::hmac::Key>,
    tolerance: Duration,
}

impl WebhookVerifier {
    pub fn new(secrets: &WebhookSecrets, tolerance: Duration) -> Self {
        let keys = secrets
            .iter()
            .map(|(source, secret): (WebhookSource, &SecretString)| {
                let key = aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA256,
                    secret.expose_secret().as_bytes(),
                );
                (source, key)
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

    /// Checks a delivery from `source`; returns its event, whose bank must be the source's.
    pub fn verify(
        &self,
        source: WebhookSource,
        delivery: Delivery<'_>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<PaymentEventBody, WebhookError> {
        let timestamp_text = delivery.timestamp.ok_or(WebhookError::Malformed)?;
        let timestamp: i64 = timestamp_text
            .parse()
            .map_err(|_| WebhookError::Malformed)?;
        let signature = delivery
            .signature
            .and_then(|s| s.strip_prefix("v1="))
            .and_then(decode_hex)
            .ok_or(WebhookError::Malformed)?;
        let key = self.keys.get(&source).ok_or(WebhookError::BadSignature)?;
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
        let event: PaymentEventBody =
            serde_json::from_slice(body).map_err(|_| WebhookError::BadEvent)?;
        let id_fits = !event.event_id.is_empty() && event.event_id.len() <= 200;
        if !id_fits || source.bank.is_some_and(|bank| bank != event.bank) {
            return Err(WebhookError::BadEvent);
        }
        Ok(event)
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
    /// `POST /v1/webhooks/{source}`: verifies and applies one delivery.
    pub async fn webhook(
        &self,
        source: WebhookSource,
        delivery: Delivery<'_>,
        body: &[u8],
    ) -> Result<serde_json::Value, PaymentError> {
        let provider = source.provider;
        let outcome = |outcome: &'static str| {
            ::metrics::counter!(metrics::WEBHOOKS, "provider" => provider.as_str(), "outcome" => outcome)
                .increment(1);
        };
        let event = self
            .webhooks
            .verify(source, delivery, body, Utc::now())
            .inspect_err(|error| outcome(error.outcome()))?;
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
            .apply_webhook(source, &event, to, &reason)
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

    const DNB: &str = "dnb-psd2-secret-of-sixteen";
    const NORDEA: &str = "nordea-psd2-secret-of-sixteen";

    fn verifier() -> WebhookVerifier {
        let secrets = WebhookSecrets {
            psd2: BTreeMap::from([
                (BankId::Dnb, SecretString::from(DNB)),
                (BankId::Nordea, SecretString::from(NORDEA)),
            ]),
        };
        WebhookVerifier::new(&secrets, Duration::from_secs(300))
    }

    fn delivery<'a>(timestamp: &'a str, signature: &'a str) -> Delivery<'a> {
        Delivery {
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    fn source(text: &str) -> WebhookSource {
        text.parse().unwrap()
    }

    #[test]
    fn a_signed_fresh_delivery_passes_and_forgeries_do_not() {
        let now = Utc::now();
        let ts = now.timestamp();
        let body = br#"{"event_id":"evt-1","bank":"dnb","payment_id":"p1","status":"ACSC"}"#;
        let good = sign(DNB.as_bytes(), ts, body);
        let ts_text = ts.to_string();
        let v = verifier();
        let dnb = source("psd2/dnb");
        let event = v.verify(dnb, delivery(&ts_text, &good), body, now);
        assert_eq!(event.map(|e| e.event_id).as_deref(), Ok("evt-1"));
        // The body changed after signing.
        let other = br#"{"event_id":"evt-2","bank":"dnb","payment_id":"p1","status":"ACSC"}"#;
        let check = |source, signature: &str, body: &[u8], at| {
            v.verify(source, delivery(&ts_text, signature), body, at)
                .map(|e| e.event_id)
        };
        assert_eq!(
            check(dnb, &good, other, now),
            Err(WebhookError::BadSignature)
        );
        // Signed with another source's secret: Nordea's push cannot pass as DNB's, nor DNB's
        // as Nordea's, nor as SpareBank 1's (which has no secret here).
        let by_nordea = sign(NORDEA.as_bytes(), ts, body);
        assert_eq!(
            check(dnb, &by_nordea, body, now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            check(source("psd2/nordea"), &good, body, now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            check(source("psd2/sparebank1"), &good, body, now),
            Err(WebhookError::BadSignature)
        );
        // DNB's secret, signing an event about another bank.
        let nordea_body =
            br#"{"event_id":"evt-3","bank":"nordea","payment_id":"p1","status":"ACSC"}"#;
        let dnb_about_nordea = sign(DNB.as_bytes(), ts, nordea_body);
        assert_eq!(
            check(dnb, &dnb_about_nordea, nordea_body, now),
            Err(WebhookError::BadEvent)
        );
        // Replayed ten minutes later.
        let later = now + chrono::Duration::minutes(10);
        assert_eq!(check(dnb, &good, body, later), Err(WebhookError::Stale));
        assert_eq!(
            v.verify(dnb, delivery("soon", &good), body, now)
                .map(|e| e.event_id),
            Err(WebhookError::Malformed)
        );
        assert_eq!(check(dnb, "v1=zz", body, now), Err(WebhookError::Malformed));
        // Signed, but without an event id.
        let anonymous = br#"{"bank":"dnb","payment_id":"p1","status":"ACSC"}"#;
        let signed = sign(DNB.as_bytes(), ts, anonymous);
        assert_eq!(
            check(dnb, &signed, anonymous, now),
            Err(WebhookError::BadEvent)
        );
    }
}
