//! Last-known balances, written to the store behind the answers, in batches.
//!
//! A live balance goes into the in-memory cache at once; the store, which lets a restarted
//! gateway still serve it, gets it a moment later: the first balance after a quiet spell is
//! written `every` later together with all that came meanwhile, the newest per connection.
//! Steady live reads then cost the database one statement per `every` instead of one per
//! read, each of which would compete with the answers for the same CPUs. A batch the store
//! refuses (the database is away) is kept and tried again; a crash loses at most the last
//! `every` of updates, and the stored balance stays a true, older one.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::debug;
use uuid::Uuid;

use crate::upstream::{Balance, Store};

/// Balances waiting to be written, the newest per connection.
pub struct BalanceWriter {
    due: Mutex<HashMap<Uuid, Balance>>,
    /// Told when the first balance of a batch arrives.
    arrived: Notify,
}

impl BalanceWriter {
    /// Starts writing to `store`; the task writes what is due one last time and ends once
    /// `stop` turns true.
    pub fn start(
        store: Arc<dyn Store>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> (Arc<BalanceWriter>, JoinHandle<()>) {
        let writer = Arc::new(BalanceWriter {
            due: Mutex::default(),
            arrived: Notify::new(),
        });
        let this = writer.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = this.arrived.notified() => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stop.wait_for(|stop| *stop) => break,
                }
                this.write_due(&*store).await;
            }
            this.write_due(&*store).await;
        });
        (writer, task)
    }

    /// Queues `balance` as `connection`'s last known one; a newer one queued already wins.
    pub fn save(&self, connection: Uuid, balance: Balance) {
        let mut due = self.due.lock().expect("due balances");
        let first = due.is_empty();
        match due.entry(connection) {
            Entry::Occupied(mut queued) => {
                if queued.get().fetched_at < balance.fetched_at {
                    queued.insert(balance);
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(balance);
            }
        }
        drop(due);
        if first {
            self.arrived.notify_one();
        }
    }

    async fn write_due(&self, store: &dyn Store) {
        let batch: Vec<(Uuid, Balance)> = std::mem::take(&mut *self.due.lock().expect("due"))
            .into_iter()
            .collect();
        if batch.is_empty() {
            return;
        }
        if let Err(error) = store.save_balances(batch.clone()).await {
            debug!(error = %error, balances = batch.len(), "last balances not persisted; kept for the next batch");
            for (connection, balance) in batch {
                self.save(connection, balance);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use chrono::{DateTime, Utc};
    use futures_util::future::BoxFuture;
    use rust_decimal::Decimal;

    use super::*;
    use crate::ProviderId;
    use crate::upstream::{Connection, StoreError};

    /// A store that records each batch, and refuses them while `down`.
    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<(Uuid, Balance)>>>,
        down: AtomicBool,
    }

    impl Store for Recorder {
        fn connections(&self, _: &str) -> BoxFuture<'static, Result<Vec<Connection>, StoreError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn save_balances(
            &self,
            balances: Vec<(Uuid, Balance)>,
        ) -> BoxFuture<'static, Result<(), StoreError>> {
            let result = if self.down.load(Ordering::SeqCst) {
                Err(StoreError::new("the database is away"))
            } else {
                self.batches.lock().unwrap().push(balances);
                Ok(())
            };
            Box::pin(async move { result })
        }

        fn consent_expired(
            &self,
            _: Uuid,
            _: ProviderId,
        ) -> BoxFuture<'static, Result<(), StoreError>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn balance(amount: i64, at_s: i64) -> Balance {
        Balance {
            amount: Decimal::new(amount, 2),
            currency: "NOK".to_owned(),
            balance_type: "interimAvailable".to_owned(),
            provider: ProviderId::Psd2,
            fetched_at: DateTime::<Utc>::from_timestamp(at_s, 0).unwrap(),
        }
    }

    fn pending(writer: &BalanceWriter) -> usize {
        writer.due.lock().unwrap().len()
    }

    fn amounts(batch: &[(Uuid, Balance)]) -> Vec<(Uuid, Decimal)> {
        let mut amounts: Vec<_> = batch.iter().map(|(c, b)| (*c, b.amount)).collect();
        amounts.sort();
        amounts
    }

    const EVERY: Duration = Duration::from_millis(500);

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_batch_with_the_newest_balance_per_connection() {
        let store = Arc::new(Recorder::default());
        let (_stop, stopped) = watch::channel(false);
        let (writer, _task) = BalanceWriter::start(store.clone(), EVERY, stopped);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        writer.save(a, balance(100, 10));
        writer.save(b, balance(200, 10));
        writer.save(a, balance(300, 12));
        // An older balance arriving late does not replace a newer one.
        writer.save(a, balance(999, 11));
        tokio::time::sleep(EVERY / 2).await;
        assert!(
            store.batches.lock().unwrap().is_empty(),
            "written after `every`"
        );
        tokio::time::sleep(EVERY).await;
        let batches = store.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 1);
        assert_eq!(
            amounts(&batches[0]),
            [(a, Decimal::new(300, 2)), (b, Decimal::new(200, 2))]
        );
        assert_eq!(pending(&writer), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_written_once_the_store_is_back() {
        let store = Arc::new(Recorder::default());
        store.down.store(true, Ordering::SeqCst);
        let (_stop, stopped) = watch::channel(false);
        let (writer, _task) = BalanceWriter::start(store.clone(), EVERY, stopped);
        let a = Uuid::from_u128(1);
        writer.save(a, balance(100, 10));
        tokio::time::sleep(EVERY * 3).await;
        assert_eq!(pending(&writer), 1, "kept while the store refuses");
        store.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(EVERY * 2).await;
        assert_eq!(pending(&writer), 0);
        let batches = store.batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 1);
        assert_eq!(amounts(&batches[0]), [(a, Decimal::new(100, 2))]);
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_writes_what_is_due_at_once() {
        let store = Arc::new(Recorder::default());
        let (stop, stopped) = watch::channel(false);
        let (writer, task) =
            BalanceWriter::start(store.clone(), Duration::from_secs(3600), stopped);
        writer.save(Uuid::from_u128(1), balance(100, 10));
        tokio::task::yield_now().await;
        stop.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(store.batches.lock().unwrap().len(), 1);
    }
}
