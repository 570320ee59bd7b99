//! The payment service: its state and what each of its flows shares. The flows live beside
//! it, one a file:
//!
//! - `intake.rs` — `POST /v1/payments`: idempotency keys, checks and limits, the first write
//!   and the answer the client is given.
//! - `send.rs` — sending one payment through its bank actor and recording the outcome, and
//!   settling an unknown outcome or a payment waiting for SCA by asking the provider.
//! - `drain.rs` — the upkeep pass per bank the queue drainer runs: sweeps, look-ups, polls
//!   and sending the queue oldest first (the actors' `PaymentQueue` port).
//! - `views.rs` — the user's payments as `GET /v1/payments` shows them.
//! - `webhook.rs` — the providers' signed status pushes, verified and applied.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bankgate_actors::bank::BankHandle;
use bankgate_actors::drainer::DrainerHandle;
use bankgate_actors::metrics;
use bankgate_actors::modes::ModeBoard;
use bankgate_actors::provider::ProviderHandle;
use bankgate_actors::upstream::RemoteStatus;
use bankgate_actors::{BankId, ProviderId};
use governor::{DefaultKeyedRateLimiter, RateLimiter};

use super::request::AmountLimits;
use super::store::PaymentStore;
use super::webhook::WebhookVerifier;
use super::{PaymentStatus, PaymentsMode};
use crate::quota::per_window;

#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    pub limits: AmountLimits,
    pub per_user_limit: u32,
    pub per_ip_limit: u32,
    pub limit_window: Duration,
    pub idempotency_ttl: Duration,
    pub queue_max_age: Duration,
    pub in_flight_timeout: Duration,
    pub poll_after: Duration,
    /// Where users' browsers reach the client API (the SCA return address).
    pub public_url: String,
    /// Where a payment may send the user's browser back to the app (`redirect.rs`).
    pub allowed_redirects: Vec<String>,
}

pub struct Payments {
    pub(super) store: PaymentStore,
    pub(super) banks: Arc<HashMap<BankId, BankHandle>>,
    pub(super) providers: Arc<HashMap<ProviderId, ProviderHandle>>,
    pub(super) drainer: DrainerHandle,
    pub(super) config: PaymentsConfig,
    pub(super) modes: Arc<ModeBoard>,
    pub(super) per_user: DefaultKeyedRateLimiter<String>,
    pub(super) per_ip: DefaultKeyedRateLimiter<IpAddr>,
    pub(super) webhooks: WebhookVerifier,
}

pub(super) fn remote_status(status: RemoteStatus) -> PaymentStatus {
    match status {
        RemoteStatus::PendingSca => PaymentStatus::PendingSca,
        RemoteStatus::Authorised => PaymentStatus::Authorised,
        RemoteStatus::Completed => PaymentStatus::Completed,
        RemoteStatus::Rejected => PaymentStatus::Rejected,
    }
}

pub(super) fn count(bank: BankId, status: PaymentStatus, by: u64) {
    ::metrics::counter!(metrics::PAYMENTS, "bank" => bank.as_str(), "status" => status.as_str())
        .increment(by);
}

impl Payments {
    pub fn new(
        store: PaymentStore,
        banks: Arc<HashMap<BankId, BankHandle>>,
        providers: Arc<HashMap<ProviderId, ProviderHandle>>,
        drainer: DrainerHandle,
        modes: Arc<ModeBoard>,
        webhooks: WebhookVerifier,
        config: PaymentsConfig,
    ) -> Payments {
        Payments {
            per_user: RateLimiter::keyed(per_window(config.per_user_limit, config.limit_window)),
            per_ip: RateLimiter::keyed(per_window(config.per_ip_limit, config.limit_window)),
            modes,
            store,
            banks,
            providers,
            drainer,
            config,
            webhooks,
        }
    }

    /// Whether an operator holds the bank's payments back (queue or disabled): then
    /// nothing is sent, not even from the queue.
    pub(super) fn held(&self, bank: BankId) -> bool {
        matches!(
            self.modes.payments_pin(bank),
            Some(PaymentsMode::Queue | PaymentsMode::Disabled)
        )
    }

    pub(super) fn bank(&self, bank: BankId) -> &BankHandle {
        self.banks.get(&bank).expect("every bank has a handle")
    }
}
