//! The bank connection actor: one per bank. It decides how each balance read is served and
//! through which provider each payment is initiated.
//!
//! This file holds the actor itself: its messages, arguments and state, the handle the rest
//! of the gateway calls, and the one `handle` that routes each message to its flow:
//!
//! - `read.rs` — balance reads: fresh cache first, the PSD2 allowance for unattended reads,
//!   the call to the first usable provider, failover, and the stale or unavailable answer.
//! - `pay.rs` — payment initiation: which provider gets a payment and what its outcome means
//!   (failover only when the provider provably did not take it).
//! - `paths.rs` — the per-provider paths: the permit each call asks of an operator's pin or
//!   the breaker, the trip policy that feeds the breaker from each outcome, the synthetic
//!   health probe, automatic degradation and waking the queue drainer.
//!
//! Every upstream call runs as a task and its outcome comes back as a message, so a hanging
//! bank never blocks this mailbox. A cap on calls in flight per bank (the bulkhead) keeps one
//! bank from taking every connection.

mod paths;
mod pay;
mod read;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use uuid::Uuid;

use crate::balance_writer::BalanceWriter;
use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::drainer::DrainerHandle;
use crate::freshness::FreshnessConfig;
use crate::modes::ModeBoard;
use crate::provider::ProviderHandle;
use crate::slot::Slot;
use crate::upstream::{FailureClass, RemotePayment, UpstreamError};
use crate::{BankId, ProviderId};

pub use paths::{BankStatus, PathStatus};
use pay::PendingPay;
pub use pay::{PayAnswer, PayRequest};
use read::Pending;
pub use read::{BalanceAnswer, BalanceCache, FetchRequest, Source, Warning};

#[derive(Debug, Clone)]
pub struct BankConfig {
    /// Providers in order of preference.
    pub providers: Vec<ProviderId>,
    pub breaker: BreakerConfig,
    pub freshness: FreshnessConfig,
    /// Upstream calls in flight for this bank at most.
    pub max_in_flight: usize,
    /// Reads without the user present allowed per account and day (PSD2).
    pub unattended_per_day: u32,
    /// How often every provider path is probed; zero turns the probe off.
    pub probe_interval: Duration,
}

impl Default for BankConfig {
    fn default() -> Self {
        BankConfig {
            providers: vec![ProviderId::Neonomics, ProviderId::Psd2],
            breaker: BreakerConfig::default(),
            freshness: FreshnessConfig::default(),
            max_in_flight: 64,
            unattended_per_day: 4,
            probe_interval: Duration::from_secs(300),
        }
    }
}

pub enum BankMsg {
    Fetch {
        request: FetchRequest,
        reply: RpcReplyPort<BalanceAnswer>,
    },
    /// A read's call ended; a success has been cached and answered by the call's task.
    Outcome {
        ticket: u64,
        provider: ProviderId,
        probe: bool,
        result: Result<(), UpstreamError>,
    },
    Pay {
        request: Box<PayRequest>,
        reply: RpcReplyPort<PayAnswer>,
    },
    PayOutcome {
        ticket: u64,
        provider: ProviderId,
        probe: bool,
        result: Result<RemotePayment, UpstreamError>,
    },
    Status(RpcReplyPort<BankStatus>),
    /// Time for the synthetic health probe of every provider path.
    Probe,
    ProbeOutcome {
        provider: ProviderId,
        probe: bool,
        result: Result<(), UpstreamError>,
    },
    /// Chaos hook for tests: panics inside the handler, to exercise supervision.
    #[cfg(any(test, feature = "test-util"))]
    Panic,
}

/// Everything a bank actor is started with; kept by the supervisor for restarts.
#[derive(Clone)]
pub struct BankArgs {
    pub bank: BankId,
    pub config: BankConfig,
    pub providers: Vec<ProviderHandle>,
    pub cache: BalanceCache,
    /// Persists live balances, so a restarted gateway still has them.
    pub balances: Arc<BalanceWriter>,
    pub slot: Slot<BankMsg>,
    /// Told when a breaker closes, so payments queued for the bank are sent.
    pub drainer: DrainerHandle,
    /// Operators' pins and the automatic degradation flags.
    pub modes: Arc<ModeBoard>,
}

pub struct BankActor;

pub struct BankState {
    args: BankArgs,
    breakers: BTreeMap<ProviderId, Breaker>,
    last_error: HashMap<ProviderId, FailureClass>,
    pending: HashMap<u64, Pending>,
    pending_pays: HashMap<u64, PendingPay>,
    next_ticket: u64,
    in_flight: usize,
    rate_limited_until: Option<Instant>,
    unattended: HashMap<Uuid, (NaiveDate, u32)>,
    /// The timer that sends `Probe`; stopped with the actor.
    probe_timer: Option<tokio::task::JoinHandle<()>>,
}

/// The handle warp handlers and sessions use.
#[derive(Clone)]
pub struct BankHandle {
    pub bank: BankId,
    slot: Slot<BankMsg>,
}

/// The actor is not running (it is being restarted): answer 503, never hang.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the bank connection is restarting")]
pub struct ActorUnavailable;

impl BankHandle {
    pub fn new(bank: BankId, slot: Slot<BankMsg>) -> BankHandle {
        BankHandle { bank, slot }
    }

    /// Serves one balance read. `deadline` bounds the wait for the actor's answer.
    pub async fn fetch(
        &self,
        request: FetchRequest,
        deadline: Duration,
    ) -> Result<BalanceAnswer, ActorUnavailable> {
        self.call(|reply| BankMsg::Fetch { request, reply }, deadline)
            .await
    }

    /// Initiates a payment through the first provider that can take it. `deadline` bounds
    /// the wait; past it the outcome is unknown, never "not sent".
    pub async fn pay(
        &self,
        request: PayRequest,
        deadline: Duration,
    ) -> Result<PayAnswer, ActorUnavailable> {
        let request = Box::new(request);
        self.call(|reply| BankMsg::Pay { request, reply }, deadline)
            .await
    }

    pub async fn status(&self) -> Result<BankStatus, ActorUnavailable> {
        self.call(BankMsg::Status, Duration::from_secs(2)).await
    }

    /// Asks the actor and waits up to `deadline`; a restarting or dead actor, or no answer
    /// in time, is `ActorUnavailable`.
    async fn call<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<T>) -> BankMsg,
        deadline: Duration,
    ) -> Result<T, ActorUnavailable> {
        let actor = self.slot.get().ok_or(ActorUnavailable)?;
        match actor.call(message, Some(deadline)).await {
            Ok(ractor::rpc::CallResult::Success(answer)) => Ok(answer),
            _ => Err(ActorUnavailable),
        }
    }

    /// Chaos hook: makes the bank actor panic.
    #[cfg(any(test, feature = "test-util"))]
    pub fn inject_panic(&self) {
        if let Some(actor) = self.slot.get() {
            let _ = actor.send_message(BankMsg::Panic);
        }
    }
}

impl Actor for BankActor {
    type Msg = BankMsg;
    type State = BankState;
    type Arguments = BankArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<BankMsg>,
        args: BankArgs,
    ) -> Result<BankState, ActorProcessingErr> {
        args.slot.set(myself);
        let now = Instant::now();
        let breakers = args
            .config
            .providers
            .iter()
            .map(|&p| (p, Breaker::new(args.config.breaker, now)))
            .collect();
        let state = BankState {
            args,
            breakers,
            last_error: HashMap::new(),
            pending: HashMap::new(),
            pending_pays: HashMap::new(),
            next_ticket: 0,
            in_flight: 0,
            rate_limited_until: None,
            unattended: HashMap::new(),
            probe_timer: None,
        };
        for &provider in state.breakers.keys() {
            state.export_breaker(provider, BreakerState::Closed);
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<BankMsg>,
        state: &mut BankState,
    ) -> Result<(), ActorProcessingErr> {
        let every = state.args.config.probe_interval;
        if !every.is_zero() {
            state.probe_timer = Some(myself.send_interval(every, || BankMsg::Probe));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<BankMsg>,
        state: &mut BankState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.probe_timer.take() {
            timer.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<BankMsg>,
        message: BankMsg,
        state: &mut BankState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BankMsg::Fetch { request, reply } => state.fetch(&myself, request, reply),
            BankMsg::Outcome {
                ticket,
                provider,
                probe,
                result,
            } => {
                state.outcome(&myself, ticket, provider, probe, result);
            }
            BankMsg::Pay { request, reply } => state.pay(&myself, *request, reply),
            BankMsg::PayOutcome {
                ticket,
                provider,
                probe,
                result,
            } => state.pay_outcome(&myself, ticket, provider, probe, result),
            BankMsg::Status(reply) => {
                let _ = reply.send(state.status());
            }
            BankMsg::Probe => state.probe(&myself),
            BankMsg::ProbeOutcome {
                provider,
                probe,
                result,
            } => state.probe_outcome(provider, probe, result.as_ref().err()),
            #[cfg(any(test, feature = "test-util"))]
            BankMsg::Panic => panic!("chaos: bank actor asked to panic"),
        }
        Ok(())
    }
}

impl BankState {
    fn bank(&self) -> BankId {
        self.args.bank
    }

    fn provider(&self, id: ProviderId) -> Option<ProviderHandle> {
        self.args.providers.iter().find(|h| h.id() == id).cloned()
    }
}
