//! The queue drainer: one actor that keeps each bank's payment queue moving.
//!
//! It wakes when a bank's breaker closes (the bank actor tells it), on every tick of its
//! interval, and when ops asks. Each wake runs one pass of the payment service's upkeep for
//! that bank (`PaymentQueue::work`: expire old queued payments, resolve unknown outcomes,
//! poll payments waiting for SCA, send queued payments oldest first) as a task, never inside
//! the handler. At most one pass per bank runs at a time in this process; a wake during a
//! pass runs one more pass after it. Several gateway instances may drain one database: the
//! payment service claims each payment with `FOR UPDATE SKIP LOCKED`, so they never collide.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::debug;

use crate::BankId;
use crate::slot::Slot;

/// What the drainer asks of the payment service.
pub trait PaymentQueue: Send + Sync + 'static {
    /// One pass of upkeep for `bank`'s payments.
    fn work(&self, bank: BankId) -> BoxFuture<'static, ()>;
}

pub enum DrainerMsg {
    Wake(BankId),
    Tick,
    Done(BankId),
    /// Chaos hook for tests: panics inside the handler, to exercise supervision.
    #[cfg(any(test, feature = "test-util"))]
    Panic,
}

/// Everything the drainer is started with; kept by the supervisor for restarts.
#[derive(Clone)]
pub struct DrainerArgs {
    pub queue: Arc<dyn PaymentQueue>,
    pub interval: Duration,
    pub slot: Slot<DrainerMsg>,
}

/// How other actors and ops wake the drainer. Waking before the drainer runs does nothing:
/// its first tick covers every bank.
#[derive(Clone, Default)]
pub struct DrainerHandle {
    slot: Slot<DrainerMsg>,
}

impl DrainerHandle {
    pub fn new(slot: Slot<DrainerMsg>) -> DrainerHandle {
        DrainerHandle { slot }
    }

    pub fn wake(&self, bank: BankId) {
        if let Some(actor) = self.slot.get() {
            let _ = actor.send_message(DrainerMsg::Wake(bank));
        }
    }

    pub fn wake_all(&self) {
        for bank in BankId::ALL {
            self.wake(bank);
        }
    }

    /// Chaos hook: makes the drainer panic.
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_panic(&self) {
        if let Some(actor) = self.slot.get() {
            let _ = actor.send_message(DrainerMsg::Panic);
        }
    }
}

pub struct Drainer;

pub struct DrainerState {
    queue: Arc<dyn PaymentQueue>,
    running: HashSet<BankId>,
    again: HashSet<BankId>,
}

impl DrainerState {
    fn start(&mut self, myself: &ActorRef<DrainerMsg>, bank: BankId) {
        if self.running.contains(&bank) {
            self.again.insert(bank);
            return;
        }
        self.running.insert(bank);
        let work = self.queue.work(bank);
        let myself = myself.clone();
        tokio::spawn(async move {
            work.await;
            let _ = myself.send_message(DrainerMsg::Done(bank));
        });
    }
}

impl Actor for Drainer {
    type Msg = DrainerMsg;
    type State = DrainerState;
    type Arguments = DrainerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DrainerMsg>,
        args: DrainerArgs,
    ) -> Result<DrainerState, ActorProcessingErr> {
        args.slot.set(myself.clone());
        myself.send_interval(args.interval, || DrainerMsg::Tick);
        let _ = myself.send_message(DrainerMsg::Tick);
        Ok(DrainerState {
            queue: args.queue,
            running: HashSet::new(),
            again: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<DrainerMsg>,
        message: DrainerMsg,
        state: &mut DrainerState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DrainerMsg::Wake(bank) => state.start(&myself, bank),
            DrainerMsg::Tick => {
                for bank in BankId::ALL {
                    state.start(&myself, bank);
                }
            }
            DrainerMsg::Done(bank) => {
                state.running.remove(&bank);
                if state.again.remove(&bank) {
                    debug!(bank = %bank, "woken during a pass; running another");
                    state.start(&myself, bank);
                }
            }
            #[cfg(any(test, feature = "test-util"))]
            DrainerMsg::Panic => panic!("chaos: drainer asked to panic"),
        }
        Ok(())
    }
}
