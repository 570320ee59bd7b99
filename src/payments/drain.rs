//! The queue's upkeep: one pass per bank, run by the actors' queue drainer (`Queue`, the
//! `PaymentQueue` port) when the bank's breaker closes, on its interval and when ops asks.
//!
//! A pass sweeps what a stopped gateway left behind (`received` back to the queue,
//! `initiating` to `unknown`) and expires payments queued too long, settles `unknown`
//! outcomes, polls payments waiting for SCA and completes those the user authorised, then sends queued payments oldest first while
//! the bank has a path, claiming each with `FOR UPDATE SKIP LOCKED` so that instances sharing
//! the database never take the same one. It ends by exporting the queue's depth and age.

use std::sync::Arc;
use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_actors::drainer::PaymentQueue;
use bankgate_actors::metrics;
use bankgate_actors::upstream::StoreError;
use futures_util::future::BoxFuture;
use tracing::{info, warn};
use uuid::Uuid;

use super::service::count;
use super::{PaymentStatus, Payments};

/// Payments looked at per kind of work in one pass for one bank.
const BATCH: usize = 50;

/// How soon a payment the user authorised is completed again when its complete went
/// unanswered: "without delay since payment tokens issued by banks are only valid for a
/// limited time period" (<https://docs.neonomics.io/reference/completepayment>). Sooner
/// still when payments are polled more often than that.
fn complete_again_after(poll_after: Duration) -> Duration {
    poll_after.min(Duration::from_secs(5))
}

impl Payments {
    /// One pass of upkeep for a bank's payments.
    async fn upkeep(&self, bank: BankId) -> Result<(), StoreError> {
        let config = &self.config;
        let swept = [
            (
                PaymentStatus::Received,
                PaymentStatus::Queued,
                config.in_flight_timeout,
                "the gateway stopped before sending it; queued",
            ),
            (
                PaymentStatus::Initiating,
                PaymentStatus::Unknown,
                config.in_flight_timeout,
                "the gateway stopped while sending it; to be looked up",
            ),
            (
                PaymentStatus::Queued,
                PaymentStatus::Expired,
                config.queue_max_age,
                "queued too long; never sent",
            ),
        ];
        for (from, to, older_than, reason) in swept {
            let moved = self.store.sweep(bank, from, to, older_than, reason).await?;
            if moved > 0 {
                info!(bank = %bank, from = from.as_str(), to = to.as_str(), count = moved, "payments swept");
                count(bank, to, moved);
            }
        }
        for _ in 0..BATCH {
            let Some(id) = self
                .store
                .lease(bank, PaymentStatus::Unknown, config.in_flight_timeout)
                .await?
            else {
                break;
            };
            let resolved = self.resolve(id, true).await.map(drop);
            carry_on(bank, "resolve", id, resolved);
        }
        for _ in 0..BATCH {
            let Some(id) = self
                .store
                .lease(bank, PaymentStatus::PendingSca, config.poll_after)
                .await?
            else {
                break;
            };
            let polled = self.poll(id).await.map(drop);
            carry_on(bank, "poll", id, polled);
        }
        for _ in 0..BATCH {
            let Some(id) = self
                .store
                .lease(
                    bank,
                    PaymentStatus::Authorised,
                    complete_again_after(config.poll_after),
                )
                .await?
            else {
                break;
            };
            let completed = self.complete(id).await.map(drop);
            carry_on(bank, "complete", id, completed);
        }
        if !self.held(bank) {
            self.drain(bank).await?;
        }
        let (depth, oldest) = self.store.queue_stats(bank).await?;
        ::metrics::gauge!(metrics::PAYMENT_QUEUE_DEPTH, "bank" => bank.as_str()).set(depth as f64);
        ::metrics::gauge!(metrics::PAYMENT_QUEUE_OLDEST, "bank" => bank.as_str()).set(oldest);
        Ok(())
    }

    /// Sends queued payments oldest first while the bank has a path.
    async fn drain(&self, bank: BankId) -> Result<(), StoreError> {
        for _ in 0..BATCH {
            let available = self.bank(bank).status().await.is_ok_and(|s| s.available());
            if !available || self.held(bank) {
                return Ok(());
            }
            let Some(id) = self
                .store
                .claim_queued(bank, self.config.queue_max_age)
                .await?
            else {
                return Ok(());
            };
            count(bank, PaymentStatus::Initiating, 1);
            match self.send(id).await {
                // The path went down again: wait for the next wake.
                Ok(Some(payment)) if payment.status == PaymentStatus::Queued => return Ok(()),
                Ok(_) => {}
                Err(error) => carry_on(bank, "send", id, Err(error)),
            }
        }
        // More may be waiting: come back at once.
        self.drainer.wake(bank);
        Ok(())
    }

    /// How many payments of `bank` are queued, and the oldest one's wait in seconds.
    pub async fn queue(&self, bank: BankId) -> Result<(i64, f64), StoreError> {
        self.store.queue_stats(bank).await
    }

    /// Wakes every bank's drain now.
    pub fn drain_now(&self) {
        self.drainer.wake_all();
    }
}

/// Logs and counts a payment the pass could not move on, so that one bad payment does not stop
/// its bank's queue: the pass goes on with the next. (A failure to find the next payment at
/// all, PostgreSQL gone, still ends the pass.)
fn carry_on(bank: BankId, work: &'static str, id: Uuid, outcome: Result<(), StoreError>) {
    if let Err(error) = outcome {
        warn!(bank = %bank, payment = %id, work, error = %error, "a payment could not be moved on; the pass goes on");
        ::metrics::counter!(metrics::PAYMENT_UPKEEP_ERRORS, "bank" => bank.as_str(), "work" => work)
            .increment(1);
    }
}

/// The drainer's view of the payment service.
pub struct Queue(pub Arc<Payments>);

impl PaymentQueue for Queue {
    fn work(&self, bank: BankId) -> BoxFuture<'static, ()> {
        let payments = self.0.clone();
        Box::pin(async move {
            if let Err(error) = payments.upkeep(bank).await {
                warn!(bank = %bank, error = %error, "payment upkeep failed; retried next pass");
            }
        })
    }
}
