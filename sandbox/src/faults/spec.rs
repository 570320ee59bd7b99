//! A fault as the control API takes it (`FaultSpec`, with the builders tests and benches
//! use) and as the store holds it once validated (`Fault`): which provider, bank and service,
//! what kind, how often, for how long.

use std::time::Duration;

use bankgate_actors::{BankId, ProviderId, Service};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::http::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// 503, as when the provider or the bank is down.
    Unavailable,
    /// The provider's own server error: 520/530 at Neonomics, 500 at a bank.
    Error,
    /// The request hangs past any client timeout.
    Timeout,
    /// Every request is slowed by `latency_ms`.
    Latency,
    /// 429 with Retry-After, as when the provider throttles us.
    RateLimit,
    /// 401/403, as with a revoked API key or certificate.
    Unauthorized,
    /// Account reads fail as with an expired PSD2 consent.
    ConsentExpired,
    /// The provider's listener closes: connections are refused.
    Refuse,
    /// A payment initiation is carried out, then its answer never comes (held like
    /// `timeout`): the caller cannot tell whether the payment was received.
    LostResponse,
    /// A payment initiation is carried out, then answered with its success status and a
    /// body cut off halfway, as from a proxy that gave up.
    Garbled,
    /// A payment initiation is carried out, then the connection is reset halfway through
    /// the answer's body.
    Reset,
}

impl FaultKind {
    /// Returns the kind as the control API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Unavailable => "unavailable",
            FaultKind::Error => "error",
            FaultKind::Timeout => "timeout",
            FaultKind::Latency => "latency",
            FaultKind::RateLimit => "rate_limit",
            FaultKind::Unauthorized => "unauthorized",
            FaultKind::ConsentExpired => "consent_expired",
            FaultKind::Refuse => "refuse",
            FaultKind::LostResponse => "lost_response",
            FaultKind::Garbled => "garbled",
            FaultKind::Reset => "reset",
        }
    }

    /// Whether the fault spoils the answer to a payment initiation already carried out,
    /// rather than failing the request before the provider acts on it.
    pub fn is_after_payment(self) -> bool {
        matches!(
            self,
            FaultKind::LostResponse | FaultKind::Garbled | FaultKind::Reset
        )
    }
}

/// A fault as the control API receives it (and `SandboxClient::add_fault` sends it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    pub provider: ProviderId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank: Option<BankId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Service>,
    pub kind: FaultKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
}

impl FaultSpec {
    /// A fault of `kind` at every bank and service of `provider`, on every request, until
    /// removed; the `with_…` methods narrow it.
    pub fn new(provider: ProviderId, kind: FaultKind) -> FaultSpec {
        FaultSpec {
            provider,
            bank: None,
            service: None,
            kind,
            ratio: None,
            duration_s: None,
            latency_ms: None,
            retry_after_s: None,
        }
    }

    pub fn with_bank(mut self, bank: BankId) -> FaultSpec {
        self.bank = Some(bank);
        self
    }

    pub fn with_latency_ms(mut self, latency_ms: u64) -> FaultSpec {
        self.latency_ms = Some(latency_ms);
        self
    }

    pub fn with_retry_after_s(mut self, retry_after_s: u64) -> FaultSpec {
        self.retry_after_s = Some(retry_after_s);
        self
    }
}

/// An active fault.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fault {
    pub id: u64,
    pub provider: ProviderId,
    pub bank: Option<BankId>,
    pub service: Option<Service>,
    pub kind: FaultKind,
    pub ratio: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub(super) deadline: Option<Instant>,
}

impl FaultSpec {
    /// Checks the combination of fields and returns the fault it describes.
    pub fn validate(self, id: u64) -> Result<Fault, ApiError> {
        let ratio = self.ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) || ratio.is_nan() {
            return Err(ApiError::invalid_field("ratio", "must be between 0 and 1"));
        }
        if self.duration_s == Some(0) {
            return Err(ApiError::invalid_field("duration_s", "must be at least 1"));
        }
        match self.kind {
            FaultKind::Latency => match self.latency_ms {
                Some(1..=600_000) => {}
                _ => {
                    return Err(ApiError::invalid_field(
                        "latency_ms",
                        "required for latency, 1 to 600000",
                    ));
                }
            },
            _ if self.latency_ms.is_some() => {
                return Err(ApiError::invalid_field(
                    "latency_ms",
                    "only applies to kind latency",
                ));
            }
            _ => {}
        }
        match (self.kind, self.retry_after_s) {
            (FaultKind::RateLimit, Some(0)) => {
                return Err(ApiError::invalid_field(
                    "retry_after_s",
                    "must be at least 1",
                ));
            }
            (FaultKind::RateLimit, _) | (_, None) => {}
            (_, Some(_)) => {
                return Err(ApiError::invalid_field(
                    "retry_after_s",
                    "only applies to kind rate_limit",
                ));
            }
        }
        if self.kind == FaultKind::Refuse {
            if self.bank.is_some() || self.service.is_some() {
                return Err(ApiError::invalid_field(
                    "kind",
                    "refuse closes the provider's whole listener; omit bank and service",
                ));
            }
            if ratio < 1.0 {
                return Err(ApiError::invalid_field(
                    "ratio",
                    "refuse closes the listener; ratio must be 1",
                ));
            }
        }
        if self.kind.is_after_payment() && self.service == Some(Service::Aisp) {
            return Err(ApiError::invalid_field(
                "service",
                format!(
                    "{} applies to payment initiation (pisp) only",
                    self.kind.as_str()
                ),
            ));
        }
        if self.kind == FaultKind::ConsentExpired && self.service == Some(Service::Pisp) {
            return Err(ApiError::invalid_field(
                "service",
                "consent_expired applies to aisp only",
            ));
        }
        let duration = self.duration_s.map(Duration::from_secs);
        Ok(Fault {
            id,
            provider: self.provider,
            bank: self.bank,
            service: self.service,
            kind: self.kind,
            ratio,
            latency_ms: self.latency_ms,
            retry_after_s: match self.kind {
                FaultKind::RateLimit => Some(self.retry_after_s.unwrap_or(1)),
                _ => None,
            },
            created_at: Utc::now(),
            expires_at: duration
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| Utc::now() + d),
            deadline: duration.map(|d| Instant::now() + d),
        })
    }
}
