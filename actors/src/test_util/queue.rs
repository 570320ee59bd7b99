//! `RecordingQueue`: the drainer's `PaymentQueue` port, remembering which banks it was asked
//! to work and doing nothing else.

use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;

use crate::BankId;
use crate::drainer::PaymentQueue;

/// Cheap to clone; clones share the record.
#[derive(Clone, Default)]
pub struct RecordingQueue {
    worked: Arc<Mutex<Vec<BankId>>>,
}

impl RecordingQueue {
    /// The banks of every upkeep pass so far, in order.
    pub fn worked(&self) -> Vec<BankId> {
        self.record().clone()
    }

    /// Returns the passes so far and forgets them.
    pub fn take(&self) -> Vec<BankId> {
        std::mem::take(&mut *self.record())
    }

    fn record(&self) -> MutexGuard<'_, Vec<BankId>> {
        self.worked
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl PaymentQueue for RecordingQueue {
    fn work(&self, bank: BankId) -> BoxFuture<'static, ()> {
        self.record().push(bank);
        Box::pin(async {})
    }
}
