//! Payments: initiation with idempotency keys, a durable state machine in PostgreSQL, a queue
//! for outages drained exactly once, and the providers' signed webhooks.
//!
//! ```text
//!   received ──► initiating ──► pending_sca ──► authorised ──► (completed at the provider)
//!      │             │  │ │          └──► rejected                   completed | rejected
//!      │             │  │ └──► failed (refused by the bank, consent expired)
//!      │             │  └───► unknown ──► (looked up) pending_sca | completed | rejected | queued
//!      └──► queued ◄─┘ (no path)   ──► expired (queued too long, never sent)
//! ```
//!
//! Every transition is one SQL statement that checks the current status, updates the row and
//! appends the event, so two gateway instances can never both move one payment. A payment is
//! sent only from `initiating`, which is committed before the call; a payment whose call may
//! have reached the provider is `unknown` until a look-up settles it, where one can.

mod drain;
mod error;
mod intake;
mod request;
mod send;
mod service;
mod store;
mod views;
mod webhook;

pub use drain::Queue;
pub use error::PaymentError;
pub use intake::Created;
pub use request::{AmountLimits, Creditor, PaymentKind, PaymentRequest, idempotency_key, parse};
pub use send::{ScaResult, ScaReturn};
pub use service::{Payments, PaymentsConfig};
pub use store::PaymentStore;
pub use views::PaymentView;
pub use webhook::{Delivery, WebhookError, WebhookVerifier, webhook_targets};

pub use bankgate_actors::modes::PaymentsMode;
use serde::{Deserialize, Serialize};

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Received,
    Queued,
    Initiating,
    Unknown,
    PendingSca,
    /// The user approved it: the provider waits for bankgate's complete call.
    Authorised,
    Completed,
    Rejected,
    Expired,
    Failed,
    /// Never sent: its connection was removed while it waited in the queue.
    Cancelled,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 11] = [
        PaymentStatus::Received,
        PaymentStatus::Queued,
        PaymentStatus::Initiating,
        PaymentStatus::Unknown,
        PaymentStatus::PendingSca,
        PaymentStatus::Authorised,
        PaymentStatus::Completed,
        PaymentStatus::Rejected,
        PaymentStatus::Expired,
        PaymentStatus::Failed,
        PaymentStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Received => "received",
            PaymentStatus::Queued => "queued",
            PaymentStatus::Initiating => "initiating",
            PaymentStatus::Unknown => "unknown",
            PaymentStatus::PendingSca => "pending_sca",
            PaymentStatus::Authorised => "authorised",
            PaymentStatus::Completed => "completed",
            PaymentStatus::Rejected => "rejected",
            PaymentStatus::Expired => "expired",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for PaymentStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<PaymentStatus, String> {
        PaymentStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| format!("unknown payment status `{text}`"))
    }
}

/// Why a payment ended `failed`: the client's answer depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// The bank refused the payment itself; sending it again would fail the same way.
    Refused,
    /// The user's consent at the bank is no longer valid: the user must renew the connection.
    ConsentExpired,
}

impl FailureReason {
    pub const ALL: [FailureReason; 2] = [FailureReason::Refused, FailureReason::ConsentExpired];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Refused => "refused",
            FailureReason::ConsentExpired => "consent_expired",
        }
    }
}

impl std::str::FromStr for FailureReason {
    type Err = String;

    fn from_str(text: &str) -> Result<FailureReason, String> {
        FailureReason::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| format!("unknown failure reason `{text}`"))
    }
}
