//! Operations: the switches an operator flips instead of the manual runbook, what they see
//! (`/ops/status`), and the runbook's diagnosis done by the gateway (`/ops/diagnosis`).
//!
//! A change goes to PostgreSQL with its audit entry and a NOTIFY in one transaction; every
//! instance LISTENs and applies the stored pins to its `ModeBoard` (and reloads every few
//! seconds anyway, which also ends pins whose `expires_in` ran out). Automatic degradation
//! (every breaker of a bank open) is announced by the board and logged, audited and counted
//! here.

mod auth;
mod controls;
pub mod diagnosis;
pub mod status;
mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bankgate_actors::bank::BankHandle;
use bankgate_actors::calls::CallLog;
use bankgate_actors::drainer::DrainerHandle;
use bankgate_actors::metrics;
use bankgate_actors::modes::{BalancesMode, BreakerPin, ModeBoard, PaymentsMode};
use bankgate_actors::provider::ProviderHandle;
use bankgate_actors::upstream::StoreError;
use bankgate_actors::{BankId, ProviderId};
use bankgate_sandbox::http::ApiError;
use chrono::Utc;
use serde_json::json;
use tracing::{info, warn};

use crate::payments::Payments;
use crate::postgres::Database;

use status::{BankReport, OperatorPin, PathReport, ProviderReport, QueueReport};
use store::mode_text;

pub use auth::AdminTokens;
pub use controls::{BreakerRequest, ModeRequest};
pub use diagnosis::{Diagnosis, Incident};
pub use status::OpsStatus;
pub use store::OpsStore;

/// How often every instance reloads the stored pins even without a notification.
const RELOAD_EVERY: Duration = Duration::from_secs(5);

pub struct Ops {
    store: OpsStore,
    modes: Arc<ModeBoard>,
    banks: Arc<HashMap<BankId, BankHandle>>,
    providers: Arc<HashMap<ProviderId, ProviderHandle>>,
    payments: Arc<Payments>,
    calls: Arc<CallLog>,
    drainer: DrainerHandle,
    pub tokens: AdminTokens,
}

impl Ops {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: OpsStore,
        modes: Arc<ModeBoard>,
        banks: Arc<HashMap<BankId, BankHandle>>,
        providers: Arc<HashMap<ProviderId, ProviderHandle>>,
        payments: Arc<Payments>,
        calls: Arc<CallLog>,
        drainer: DrainerHandle,
        tokens: AdminTokens,
    ) -> Ops {
        Ops {
            store,
            modes,
            banks,
            providers,
            payments,
            calls,
            drainer,
            tokens,
        }
    }

    /// Applies the stored pins to this instance's board.
    pub async fn load(&self) -> Result<(), StoreError> {
        let now = Utc::now();
        let mut pinned = HashMap::new();
        for row in self.store.bank_pins().await? {
            if row.expires_at.is_none_or(|at| at > now) {
                pinned.insert(row.bank, (row.balances, row.payments));
            }
        }
        for bank in BankId::ALL {
            let (balances, payments) = pinned.get(&bank).copied().unwrap_or((None, None));
            let before = (self.modes.balances_pin(bank), self.modes.payments_pin(bank));
            self.modes.pin_bank(bank, balances, payments);
            if before != (balances, payments) {
                info!(bank = %bank, balances = %mode_text(balances), payments = %mode_text(payments), "bank mode applied");
                ::metrics::counter!(metrics::MODE_CHANGES, "bank" => bank.as_str(), "set_by" => "operator")
                    .increment(1);
                if !matches!(payments, Some(PaymentsMode::Queue | PaymentsMode::Disabled)) {
                    self.drainer.wake(bank);
                }
            }
        }
        let mut breakers = HashMap::new();
        for row in self.store.breaker_overrides().await? {
            breakers.insert(row.provider, row.pin);
        }
        for provider in ProviderId::ALL {
            let pin = breakers.get(&provider).copied().flatten();
            if self.modes.breaker_pin(provider) != pin {
                info!(provider = %provider, state = %mode_text(pin), "breaker override applied");
                self.modes.pin_breaker(provider, pin);
                if pin != Some(BreakerPin::Open) {
                    self.drainer.wake_all();
                }
            }
        }
        Ok(())
    }

    /// Keeps this instance in step with the database (LISTEN/NOTIFY, plus a reload every few
    /// seconds) and records automatic mode changes. Runs until dropped.
    pub async fn run(self: Arc<Self>, database: Database) {
        let auto = {
            let this = self.clone();
            async move { this.record_auto_changes().await }
        };
        let listen = async move {
            loop {
                match database.dedicated().await {
                    Ok((client, mut messages)) => {
                        if let Err(error) = client.batch_execute("LISTEN bankgate_ops").await {
                            warn!(error = %error, "cannot LISTEN for ops changes");
                        } else {
                            let mut every = tokio::time::interval(RELOAD_EVERY);
                            loop {
                                tokio::select! {
                                    message = messages.recv() => {
                                        if message.is_none() {
                                            break;
                                        }
                                    }
                                    _ = every.tick() => {}
                                }
                                if let Err(error) = self.load().await {
                                    warn!(error = %error, "ops settings not reloaded");
                                }
                            }
                        }
                    }
                    Err(error) => warn!(error = %error, "ops listener cannot connect"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::join!(auto, listen);
    }

    async fn record_auto_changes(&self) {
        let mut changes = self.modes.subscribe();
        loop {
            let change = match changes.recv().await {
                Ok(change) => change,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let bank = change.bank;
            let (reason, after) = if change.degraded {
                warn!(bank = %bank, "every provider path is down: balances from cache, payments queued");
                (
                    "every provider's breaker for the bank is open",
                    json!({"balances": "cached", "payments": "queue"}),
                )
            } else {
                info!(bank = %bank, "a probe succeeded: balances and payments live again");
                (
                    "a probe succeeded; the bank answers again",
                    json!({"balances": "live", "payments": "live"}),
                )
            };
            ::metrics::counter!(metrics::MODE_CHANGES, "bank" => bank.as_str(), "set_by" => "auto")
                .increment(1);
            ::metrics::gauge!(metrics::BANK_DEGRADED, "bank" => bank.as_str())
                .set(if change.degraded { 1.0 } else { 0.0 });
            if let Err(error) = self
                .store
                .audit("auto", "auto_degradation", bank.as_str(), &after, reason)
                .await
            {
                warn!(error = %error, "automatic change not audited");
            }
        }
    }

    pub async fn diagnosis(&self) -> Diagnosis {
        let paths = self.calls.summary();
        let mut credentials_invalid = Vec::new();
        for (id, handle) in self.providers.iter() {
            if handle.status().await.is_some_and(|s| !s.credentials_valid) {
                credentials_invalid.push(*id);
            }
        }
        credentials_invalid.sort();
        diagnosis::diagnose(&diagnosis::Observed {
            paths: &paths,
            credentials_invalid,
        })
    }

    pub async fn status(&self) -> Result<OpsStatus, ApiError> {
        let paths = self.calls.summary();
        let pins: HashMap<BankId, store::BankPins> = self
            .store
            .bank_pins()
            .await?
            .into_iter()
            .map(|p| (p.bank, p))
            .collect();
        let mut banks = Vec::new();
        let mut troubled = Vec::new();
        for bank in BankId::ALL {
            let modes = self.modes.bank(bank);
            let status = match self.banks.get(&bank) {
                Some(handle) => handle.status().await.ok(),
                None => None,
            };
            let (depth, oldest) = self.payments.queue(bank).await?;
            let providers = status
                .as_ref()
                .map(|s| s.paths.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|path| {
                    let stats = paths
                        .get(&(bank, path.provider))
                        .cloned()
                        .unwrap_or_default();
                    PathReport {
                        provider: path.provider,
                        breaker: path.breaker,
                        breaker_since_s: path.since_s,
                        breaker_pinned: path.pinned,
                        calls_5m: stats.calls,
                        failure_rate_5m: (stats.failure_rate() * 1000.0).round() / 1000.0,
                        p95_ms: stats.p95_ms,
                        last_error: path.last_error.or(stats.last_error),
                    }
                })
                .collect();
            if modes.degraded
                || modes.balances != BalancesMode::Live
                || modes.payments != PaymentsMode::Live
            {
                troubled.push(format!(
                    "{bank}: balances {}, payments {} ({})",
                    mode_text(Some(modes.balances)),
                    mode_text(Some(modes.payments)),
                    if modes.degraded {
                        "auto: every provider down"
                    } else {
                        "set by an operator"
                    }
                ));
            }
            banks.push(BankReport {
                bank,
                available: status.as_ref().is_some_and(|s| s.available()),
                balances: modes.balances,
                balances_set_by: modes.balances_set_by,
                payments: modes.payments,
                payments_set_by: modes.payments_set_by,
                degraded: modes.degraded,
                operator: pins.get(&bank).map(|p| OperatorPin {
                    set_by: p.set_by.clone(),
                    reason: p.reason.clone(),
                    expires_at: p.expires_at,
                    updated_at: p.updated_at,
                }),
                queue: QueueReport {
                    depth,
                    oldest_s: oldest.round(),
                },
                providers,
            });
        }
        let mut providers = Vec::new();
        for provider in ProviderId::ALL {
            let status = match self.providers.get(&provider) {
                Some(handle) => handle.status().await,
                None => None,
            };
            providers.push(ProviderReport {
                provider,
                credentials_valid: status.as_ref().map(|s| s.credentials_valid),
                rate_limit_headroom: status.as_ref().map(|s| s.rate_limit_headroom),
                last_auth_error: status.as_ref().and_then(|s| s.last_auth_error),
                breaker_pinned: self.modes.breaker_pin(provider),
            });
        }
        let summary = if troubled.is_empty() {
            "all banks live".to_owned()
        } else {
            troubled.join("; ")
        };
        Ok(OpsStatus {
            summary,
            banks,
            providers,
            recent_changes: self.store.recent_audit(10).await?,
        })
    }
}
