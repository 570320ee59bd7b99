//! Fault injection: the failures of the outage runbook, switched on per provider, bank and
//! service through `/sandbox/faults`.
//!
//! A request asks `decide` what to do to it; the answer is a delay and, maybe, a failure that
//! the provider's API renders the way the real provider would. The `refuse` kind is different:
//! it closes the provider's listener (see `listener.rs`), which watches this store.
//!
//! Here: the store and `decide`; a fault's vocabulary and its validation are `spec.rs`.

mod spec;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bankgate_actors::{BankId, ProviderId, Service};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::http::ApiError;

pub use spec::{Fault, FaultKind, FaultSpec};

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
                && fault.kind != FaultKind::Refuse
                && !fault.kind.is_after_payment();
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
    /// out, is lost, cut off or broken off (the first such fault its ratio lets fire).
    pub fn decide_after_payment(&self, target: Target) -> Option<Injected> {
        self.prune();
        let faults = self.faults.lock().expect("faults");
        faults
            .values()
            .filter(|f| f.kind.is_after_payment() && f.matches(target))
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
mod tests;
