//! `GET /ops/status` as a type: the server serializes it and `bankgate ops status` reads it
//! back, so a field renamed on one side is a compile error on the other, not a silent "-".

use bankgate_actors::breaker::BreakerState;
use bankgate_actors::modes::{BalancesMode, BreakerPin, PaymentsMode, SetBy};
use bankgate_actors::upstream::FailureClass;
use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The whole gateway as an operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpsStatus {
    /// One line: "all banks live", or each bank that is not, and why.
    pub summary: String,
    pub banks: Vec<BankReport>,
    pub providers: Vec<ProviderReport>,
    /// The latest audited changes, newest first.
    pub recent_changes: Vec<AuditEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BankReport {
    pub bank: BankId,
    /// Whether any provider path can be tried now.
    pub available: bool,
    pub balances: BalancesMode,
    pub balances_set_by: SetBy,
    pub payments: PaymentsMode,
    pub payments_set_by: SetBy,
    /// Automatically degraded: every provider path is open.
    pub degraded: bool,
    /// The operator's pin on the bank's modes, if any.
    pub operator: Option<OperatorPin>,
    pub queue: QueueReport,
    pub providers: Vec<PathReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorPin {
    /// The admin token's name that set it.
    pub set_by: String,
    pub reason: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueReport {
    pub depth: i64,
    /// How long the oldest queued payment has waited, in whole seconds.
    pub oldest_s: f64,
}

/// One provider path to a bank: its breaker and its calls over the last five minutes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathReport {
    pub provider: ProviderId,
    pub breaker: BreakerState,
    pub breaker_since_s: u64,
    /// An operator's override of the provider's breakers.
    pub breaker_pinned: Option<BreakerPin>,
    pub calls_5m: u64,
    /// Share of the calls that failed, to three decimals.
    pub failure_rate_5m: f64,
    pub p95_ms: Option<u64>,
    pub last_error: Option<FailureClass>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderReport {
    pub provider: ProviderId,
    /// `None` while the provider's actor is restarting.
    pub credentials_valid: Option<bool>,
    pub rate_limit_headroom: Option<u32>,
    pub last_auth_error: Option<FailureClass>,
    pub breaker_pinned: Option<BreakerPin>,
}

/// One audited change of a mode or breaker override.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// The admin token's name, or `auto`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub reason: String,
}
