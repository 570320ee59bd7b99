//! Fault injection: the failures of the outage runbook, switched on per provider, bank and
//! service through `/sandbox/faults`.
//!
//! A request asks `decide` what to do to it; the answer is a delay and, maybe, a failure that
//! the provider's API renders the way the real provider would. The `refuse` kind is different:
//! it closes the provider's listener (see `listener.rs`), which watches this store.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bankgate_actors::{BankId, ProviderId, Service};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
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
        }
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
    deadline: Option<Instant>,
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
        if self.kind == FaultKind::LostResponse && self.service == Some(Service::Aisp) {
            return Err(ApiError::invalid_field(
                "service",
                "lost_response applies to payment initiation (pisp) only",
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

/// What a request is, for matching faults.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub provider: ProviderId,
    pub bank: Option<BankId>,
    pub service: Option<Service>,
    /// Whether the endpoint reads accounts under a consent (where consent faults apply).
    pub uses_consent: bool,
}

/// The failure injected into one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    pub fault_id: u64,
    pub kind: FaultKind,
    pub retry_after_s: u64,
    /// Whether the fault names a bank (the bank fails) or not (the provider itself fails).
    pub bank_scoped: bool,
}

/// What to do to one request.
#[derive(Debug, Default)]
pub struct Decision {
    pub delay: Duration,
    pub failure: Option<Injected>,
}

/// The active faults. Cheap to query on every request.
pub struct FaultStore {
    faults: Mutex<BTreeMap<u64, Fault>>,
    next_id: Mutex<u64>,
    /// Bumped on every change so listeners and hanging requests notice.
    version: watch::Sender<u64>,
}

impl Default for FaultStore {
    fn default() -> Self {
        FaultStore {
            faults: Mutex::default(),
            next_id: Mutex::new(1),
            version: watch::channel(0).0,
        }
    }
}

impl FaultStore {
    pub fn add(&self, spec: FaultSpec) -> Result<Fault, ApiError> {
        let id = {
            let mut next = self.next_id.lock().expect("fault ids");
            *next += 1;
            *next - 1
        };
        let fault = spec.validate(id)?;
        self.faults
            .lock()
            .expect("faults")
            .insert(id, fault.clone());
        self.version.send_modify(|v| *v += 1);
        Ok(fault)
    }

    pub fn list(&self) -> Vec<Fault> {
        self.prune();
        self.faults
            .lock()
            .expect("faults")
            .values()
            .cloned()
            .collect()
    }

    pub fn remove(&self, id: u64) -> bool {
        let removed = self.faults.lock().expect("faults").remove(&id).is_some();
        if removed {
            self.version.send_modify(|v| *v += 1);
        }
        removed
    }

    pub fn clear(&self) {
        self.faults.lock().expect("faults").clear();
        self.version.send_modify(|v| *v += 1);
    }

    /// Drops expired faults, announcing the change when there was one.
    fn prune(&self) {
        let now = Instant::now();
        let mut faults = self.faults.lock().expect("faults");
        let before = faults.len();
        faults.retain(|_, f| f.deadline.is_none_or(|d| d > now));
        if faults.len() != before {
            drop(faults);
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// Returns whether fault `id` is still active.
    pub fn is_active(&self, id: u64) -> bool {
        self.prune();
        self.faults.lock().expect("faults").contains_key(&id)
    }

    /// Returns whether `provider`'s listener must be closed now.
    pub fn refuses(&self, provider: ProviderId) -> bool {
        self.prune();
        self.faults
            .lock()
            .expect("faults")
            .values()
            .any(|f| f.kind == FaultKind::Refuse && f.provider == provider)
    }

    /// Returns the earliest moment a fault expires, so watchers can wake for it.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.faults
            .lock()
            .expect("faults")
            .values()
            .filter_map(|f| f.deadline)
            .min()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Waits until the faults change or one of them expires.
    pub async fn changed(&self, receiver: &mut watch::Receiver<u64>) {
        let expiry = self.next_expiry();
        tokio::select! {
            _ = receiver.changed() => {}
            () = async {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => { self.prune(); }
        }
    }

    /// Decides what happens to a request for `target`: latency faults add up, and the first
    /// failing fault (in order of creation) that its ratio lets fire wins.
    pub fn decide(&self, target: Target) -> Decision {
        self.prune();
        let faults = self.faults.lock().expect("faults");
        let mut decision = Decision::default();
        for fault in faults.values() {
            let applies = fault.matches(target)
                && (fault.kind != FaultKind::ConsentExpired || target.uses_consent)
                && !matches!(fault.kind, FaultKind::Refuse | FaultKind::LostResponse);
            if !applies || fastrand::f64() >= fault.ratio {
                continue;
            }
            if fault.kind == FaultKind::Latency {
                decision.delay += Duration::from_millis(fault.latency_ms.unwrap_or(0));
            } else if decision.failure.is_none() {
                decision.failure = Some(Injected {
                    fault_id: fault.id,
                    kind: fault.kind,
                    retry_after_s: fault.retry_after_s.unwrap_or(1),
                    bank_scoped: fault.bank.is_some(),
                });
            }
        }
        decision
    }

    /// Decides whether the answer to a payment initiation for `target`, already carried
    /// out, is lost.
    pub fn decide_lost(&self, target: Target) -> Option<Injected> {
        self.prune();
        let faults = self.faults.lock().expect("faults");
        faults
            .values()
            .filter(|f| f.kind == FaultKind::LostResponse && f.matches(target))
            .find(|f| fastrand::f64() < f.ratio)
            .map(|f| Injected {
                fault_id: f.id,
                kind: f.kind,
                retry_after_s: 1,
                bank_scoped: f.bank.is_some(),
            })
    }
}

impl Fault {
    fn matches(&self, target: Target) -> bool {
        self.provider == target.provider
            && self.bank.is_none_or(|b| Some(b) == target.bank)
            && self.service.is_none_or(|s| Some(s) == target.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: FaultKind) -> FaultSpec {
        FaultSpec {
            provider: ProviderId::Neonomics,
            bank: Some(BankId::Dnb),
            service: None,
            kind,
            ratio: None,
            duration_s: None,
            latency_ms: None,
            retry_after_s: None,
        }
    }

    fn target(bank: BankId, service: Service) -> Target {
        Target {
            provider: ProviderId::Neonomics,
            bank: Some(bank),
            service: Some(service),
            uses_consent: true,
        }
    }

    #[test]
    fn faults_match_provider_bank_and_service() {
        let store = FaultStore::default();
        store
            .add(FaultSpec {
                service: Some(Service::Pisp),
                ..spec(FaultKind::Unavailable)
            })
            .unwrap();
        assert!(
            store
                .decide(target(BankId::Dnb, Service::Pisp))
                .failure
                .is_some()
        );
        assert!(
            store
                .decide(target(BankId::Dnb, Service::Aisp))
                .failure
                .is_none()
        );
        assert!(
            store
                .decide(target(BankId::Nordea, Service::Pisp))
                .failure
                .is_none()
        );
        let psd2 = Target {
            provider: ProviderId::Psd2,
            ..target(BankId::Dnb, Service::Pisp)
        };
        assert!(store.decide(psd2).failure.is_none());
    }

    #[test]
    fn ratio_zero_never_fires_and_latency_adds_up() {
        let store = FaultStore::default();
        store
            .add(FaultSpec {
                ratio: Some(0.0),
                ..spec(FaultKind::Error)
            })
            .unwrap();
        store
            .add(FaultSpec {
                latency_ms: Some(30),
                ..spec(FaultKind::Latency)
            })
            .unwrap();
        store
            .add(FaultSpec {
                latency_ms: Some(20),
                ..spec(FaultKind::Latency)
            })
            .unwrap();
        let decision = store.decide(target(BankId::Dnb, Service::Aisp));
        assert!(decision.failure.is_none());
        assert_eq!(decision.delay, Duration::from_millis(50));
    }

    #[test]
    fn consent_faults_only_hit_consent_reads() {
        let store = FaultStore::default();
        store.add(spec(FaultKind::ConsentExpired)).unwrap();
        let payment = Target {
            uses_consent: false,
            ..target(BankId::Dnb, Service::Pisp)
        };
        assert!(store.decide(payment).failure.is_none());
        assert!(
            store
                .decide(target(BankId::Dnb, Service::Aisp))
                .failure
                .is_some()
        );
    }

    #[test]
    fn invalid_combinations_are_rejected() {
        let store = FaultStore::default();
        assert!(
            store
                .add(FaultSpec {
                    ratio: Some(1.5),
                    ..spec(FaultKind::Error)
                })
                .is_err()
        );
        assert!(store.add(spec(FaultKind::Latency)).is_err());
        assert!(store.add(spec(FaultKind::Refuse)).is_err());
        assert!(
            store
                .add(FaultSpec {
                    latency_ms: Some(5),
                    ..spec(FaultKind::Error)
                })
                .is_err()
        );
        assert!(
            store
                .add(FaultSpec {
                    duration_s: Some(0),
                    ..spec(FaultKind::Error)
                })
                .is_err()
        );
        assert!(store.list().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn faults_expire_after_their_duration() {
        let store = FaultStore::default();
        let fault = store
            .add(FaultSpec {
                duration_s: Some(5),
                ..spec(FaultKind::Unavailable)
            })
            .unwrap();
        assert!(store.is_active(fault.id));
        let mut receiver = store.subscribe();
        receiver.mark_unchanged();
        store.changed(&mut receiver).await;
        assert!(!store.is_active(fault.id));
        assert!(
            store
                .decide(target(BankId::Dnb, Service::Aisp))
                .failure
                .is_none()
        );
    }
}
