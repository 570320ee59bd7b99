//! The bank connection actor: one per bank. It decides how each balance read is served and
//! through which provider each payment is initiated.
//!
//! Fresh cache first; otherwise the first provider in the bank's order whose breaker lets the
//! call through and where the user has a consented account. The call runs as a task and its
//! outcome comes back as a message, so a hanging bank never blocks this mailbox; a live
//! balance is cached and answered by the call's task itself, one hop sooner. A failure
//! feeds that path's breaker (a consent problem does not: it is the user's) and the read fails
//! over to the next provider; when none is left it is served stale from the cache, with the
//! bank's Norwegian warning, or answered as unavailable. A cap on calls in flight per bank
//! (the bulkhead) keeps one bank from taking every connection.
//!
//! A payment goes to the first provider whose breaker lets it through. It fails over to the
//! next only when the failure proves the provider did not carry it out (refused connection,
//! 503, 429, credentials); a timeout or a broken answer leaves the outcome unknown, and it is
//! never sent again before it has been looked up. When no path is left the answer is
//! `NotSent`, and the caller queues the payment. A breaker closing wakes the queue drainer.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::time::Instant;
use tracing::{debug, info};
use uuid::Uuid;

use crate::balance_writer::BalanceWriter;
use crate::breaker::{Breaker, BreakerConfig, BreakerState, Permit};
use crate::drainer::DrainerHandle;
use crate::freshness::{Freshness, FreshnessConfig};
use crate::metrics::{self, ReadSource};
use crate::modes::{BalancesMode, BreakerPin, ModeBoard};
use crate::provider::ProviderHandle;
use crate::slot::Slot;
use crate::upstream::{
    Balance, BalanceCall, Connection, FailureClass, PaymentOrder, ProviderAccount, RemotePayment,
    UpstreamError,
};
use crate::{BankId, ProviderId};

/// Last balances by connection, shared by all bank actors and kept across their restarts.
pub type BalanceCache = moka::sync::Cache<Uuid, Arc<Balance>>;

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

/// Where a served balance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Live,
    CacheFresh,
    CacheStale,
}

impl Source {
    fn metric(self) -> ReadSource {
        match self {
            Source::Live => ReadSource::Live,
            Source::CacheFresh => ReadSource::CacheFresh,
            Source::CacheStale => ReadSource::CacheStale,
        }
    }
}

/// The answer to one balance read.
#[derive(Debug, Clone)]
pub enum BalanceAnswer {
    Served {
        balance: Arc<Balance>,
        source: Source,
        warning: Option<String>,
    },
    /// Every provider that could answer said the user's consent is no longer valid.
    ConsentExpired { providers: Vec<ProviderId> },
    /// Nothing live and nothing recent enough cached.
    Unavailable { warning: String },
}

/// One read to serve.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub connection: Arc<Connection>,
    /// The user's IP when the user is present; `None` for background (unattended) reads.
    pub psu_ip: Option<IpAddr>,
    pub request_id: String,
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
        request: PayRequest,
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
    /// Chaos hook: panics inside the handler, to exercise supervision.
    Panic,
}

/// One payment to initiate: the debtor's accounts at the providers and the order.
#[derive(Debug, Clone)]
pub struct PayRequest {
    pub accounts: Vec<ProviderAccount>,
    pub order: PaymentOrder,
}

/// How a payment initiation ended.
#[derive(Debug, Clone)]
pub enum PayAnswer {
    /// A provider accepted the payment; it waits for the user's SCA.
    Initiated(RemotePayment),
    /// No provider carried it out: every path is down, or each refused it before accepting
    /// it. Safe to queue and send later.
    NotSent { last_error: Option<FailureClass> },
    /// The provider may have received it (timeout, connection broken after sending): it must
    /// be looked up by reference before anything else is done with it.
    Unknown {
        provider: ProviderId,
        error: UpstreamError,
    },
    /// The provider refused the payment itself; sending it again would fail the same way.
    Refused {
        provider: ProviderId,
        error: UpstreamError,
    },
    /// The user's consent at the bank is no longer valid: `provider` said so, or (`None`) no
    /// provider holds a valid consent for the account any more, so no path can ever take it
    /// until the user renews the connection.
    ConsentExpired { provider: Option<ProviderId> },
}

/// A bank's health as `/v1/banks` and ops see it.
#[derive(Debug, Clone, Serialize)]
pub struct BankStatus {
    pub bank: BankId,
    pub paths: Vec<PathStatus>,
    pub rate_limited: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathStatus {
    pub provider: ProviderId,
    pub breaker: BreakerState,
    /// An operator's override of the provider's breakers.
    pub pinned: Option<BreakerPin>,
    /// How long the breaker has been in its state.
    pub since_s: u64,
    pub last_error: Option<FailureClass>,
}

impl BankStatus {
    /// Whether any provider path can be tried (a breaker not open, or pinned closed).
    pub fn available(&self) -> bool {
        self.paths.iter().any(|p| match p.pinned {
            Some(BreakerPin::Closed) => true,
            Some(BreakerPin::Open) => false,
            None => p.breaker != BreakerState::Open,
        })
    }
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

struct PendingPay {
    request: PayRequest,
    reply: RpcReplyPort<PayAnswer>,
    tried: Vec<ProviderId>,
    last_error: Option<FailureClass>,
}

/// Where a read's answer goes. The actor holds it; the task calling a provider holds it
/// weakly, so that it answers a live balance itself, without a trip back through the mailbox,
/// while an actor that dies drops it at once: its caller gets a 503 then, not a wait.
type ReplySlot = Arc<ReplyCell>;
type ReplyCell = Mutex<Option<RpcReplyPort<BalanceAnswer>>>;

struct Pending {
    request: FetchRequest,
    reply: ReplySlot,
    tried: Vec<ProviderId>,
    consent_failed: Vec<ProviderId>,
}

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
        let actor = self.slot.get().ok_or(ActorUnavailable)?;
        match actor
            .call(|reply| BankMsg::Fetch { request, reply }, Some(deadline))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => Ok(answer),
            _ => Err(ActorUnavailable),
        }
    }

    /// Initiates a payment through the first provider that can take it. `deadline` bounds
    /// the wait; past it the outcome is unknown, never "not sent".
    pub async fn pay(
        &self,
        request: PayRequest,
        deadline: Duration,
    ) -> Result<PayAnswer, ActorUnavailable> {
        let actor = self.slot.get().ok_or(ActorUnavailable)?;
        match actor
            .call(|reply| BankMsg::Pay { request, reply }, Some(deadline))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(answer)) => Ok(answer),
            _ => Err(ActorUnavailable),
        }
    }

    pub async fn status(&self) -> Result<BankStatus, ActorUnavailable> {
        let actor = self.slot.get().ok_or(ActorUnavailable)?;
        match actor
            .call(BankMsg::Status, Some(Duration::from_secs(2)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(status)) => Ok(status),
            _ => Err(ActorUnavailable),
        }
    }

    /// Chaos hook: makes the bank actor panic.
    pub fn inject_panic(&self) {
        if let Some(actor) = self.slot.get() {
            let _ = actor.send_message(BankMsg::Panic);
        }
    }
}

/// The Norwegian message when the user's consent at the bank no longer holds.
pub const CONSENT_EXPIRED: &str = "Banktilkobling utløpt – forny tilkoblingen";

/// The Norwegian warning shown with a stale balance.
pub fn stale_warning(bank: BankId) -> String {
    format!(
        "{} opplever tekniske problemer. Saldo kan være utdatert.",
        bank.display_name()
    )
}

/// The Norwegian message while an operator has switched a bank's balances off.
pub fn disabled_warning(bank: BankId) -> String {
    format!(
        "Saldo fra {} er midlertidig utilgjengelig.",
        bank.display_name()
    )
}

/// The Norwegian message when no balance can be shown.
pub fn unavailable_warning(bank: BankId) -> String {
    format!(
        "{} er utilgjengelig akkurat nå. Saldo kan ikke vises.",
        bank.display_name()
    )
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
            BankMsg::Pay { request, reply } => {
                let ticket = state.next_ticket;
                state.next_ticket += 1;
                state.pending_pays.insert(
                    ticket,
                    PendingPay {
                        request,
                        reply,
                        tried: Vec::new(),
                        last_error: None,
                    },
                );
                state.dispatch_pay(&myself, ticket);
            }
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
            BankMsg::Panic => panic!("chaos: bank actor asked to panic"),
        }
        Ok(())
    }
}

/// The reply port in a read's slot, unless the read has been answered already.
fn take(slot: &ReplySlot) -> Option<RpcReplyPort<BalanceAnswer>> {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}

/// Counts a served read by how it was served and answers it.
fn send_answer(bank: BankId, reply: RpcReplyPort<BalanceAnswer>, answer: BalanceAnswer) {
    let source = match &answer {
        BalanceAnswer::Served { source, .. } => source.metric(),
        BalanceAnswer::ConsentExpired { .. } => ReadSource::ConsentExpired,
        BalanceAnswer::Unavailable { .. } => ReadSource::Unavailable,
    };
    metrics::count_balance_read(bank, source);
    let _ = reply.send(answer);
}

/// What a read's call task needs to serve a live balance itself.
struct Served {
    bank: BankId,
    connection: Uuid,
    failed_over: bool,
    reply: Weak<ReplyCell>,
    cache: BalanceCache,
    balances: Arc<BalanceWriter>,
}

impl Served {
    /// Caches and persists the balance and holds on to the read's reply, before the actor
    /// hears of the outcome and forgets the read; returns the answer to send, unless the
    /// actor has died meanwhile.
    fn ready(self, balance: Balance) -> Option<impl FnOnce()> {
        self.balances.save(self.connection, balance.clone());
        let balance = Arc::new(balance);
        self.cache.insert(self.connection, balance.clone());
        let slot = self.reply.upgrade()?;
        Some(move || {
            let Some(reply) = take(&slot) else {
                return;
            };
            if self.failed_over {
                ::metrics::counter!(metrics::FAILOVERS, "bank" => self.bank.as_str()).increment(1);
            }
            let answer = BalanceAnswer::Served {
                balance,
                source: Source::Live,
                warning: None,
            };
            send_answer(self.bank, reply, answer);
        })
    }
}

impl BankState {
    fn bank(&self) -> BankId {
        self.args.bank
    }

    fn rate_limited(&self, now: Instant) -> bool {
        self.rate_limited_until.is_some_and(|until| until > now)
    }

    /// The newest balance known for the connection: this process's cache or the database's.
    fn cached(&self, connection: &Connection) -> Option<Arc<Balance>> {
        let cached = self.args.cache.get(&connection.id);
        match (cached, &connection.last_balance) {
            (Some(a), Some(b)) => Some(if a.fetched_at >= b.fetched_at {
                a
            } else {
                Arc::new(b.clone())
            }),
            (a, b) => a.or_else(|| b.clone().map(Arc::new)),
        }
    }

    fn freshness(&self, balance: &Balance, now: Instant) -> Freshness {
        let age = (Utc::now() - balance.fetched_at)
            .to_std()
            .unwrap_or_default();
        self.args
            .config
            .freshness
            .classify(age, self.rate_limited(now))
    }

    fn fetch(
        &mut self,
        myself: &ActorRef<BankMsg>,
        request: FetchRequest,
        reply: RpcReplyPort<BalanceAnswer>,
    ) {
        let now = Instant::now();
        let cached = self.cached(&request.connection);
        match self.args.modes.balances_pin(self.bank()) {
            Some(BalancesMode::Disabled) => {
                let warning = disabled_warning(self.bank());
                return send_answer(self.bank(), reply, BalanceAnswer::Unavailable { warning });
            }
            Some(BalancesMode::Cached) => {
                let answer = self.cache_answer(cached, now);
                return send_answer(self.bank(), reply, answer);
            }
            Some(BalancesMode::Live) | None => {}
        }
        if let Some(balance) = &cached
            && self.freshness(balance, now) == Freshness::Fresh
        {
            send_answer(
                self.bank(),
                reply,
                BalanceAnswer::Served {
                    balance: balance.clone(),
                    source: Source::CacheFresh,
                    warning: None,
                },
            );
            return;
        }
        if request.psu_ip.is_none() && !self.count_unattended(request.connection.id) {
            // PSD2 allows few reads without the user; beyond them the cache has to do.
            let answer = match cached {
                Some(balance) if self.freshness(&balance, now) != Freshness::Expired => {
                    BalanceAnswer::Served {
                        balance,
                        source: Source::CacheStale,
                        warning: None,
                    }
                }
                _ => BalanceAnswer::Unavailable {
                    warning: unavailable_warning(self.bank()),
                },
            };
            send_answer(self.bank(), reply, answer);
            return;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.insert(
            ticket,
            Pending {
                request,
                reply: Arc::new(Mutex::new(Some(reply))),
                tried: Vec::new(),
                consent_failed: Vec::new(),
            },
        );
        self.dispatch(myself, ticket);
    }

    /// Counts an unattended read; returns whether it is still within today's allowance.
    fn count_unattended(&mut self, connection: Uuid) -> bool {
        let today = Utc::now().date_naive();
        if self
            .unattended
            .values()
            .next()
            .is_some_and(|(day, _)| *day != today)
        {
            // A new day: yesterday's counts are gone (and the map does not grow forever).
            self.unattended.retain(|_, (day, _)| *day == today);
        }
        let entry = self.unattended.entry(connection).or_insert((today, 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        if entry.1 >= self.args.config.unattended_per_day {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Starts the read at the next usable provider, or degrades when none is left.
    fn dispatch(&mut self, myself: &ActorRef<BankMsg>, ticket: u64) {
        let now = Instant::now();
        let Some(pending) = self.pending.get(&ticket) else {
            return;
        };
        let connection = pending.request.connection.clone();
        let candidates: Vec<ProviderId> = self
            .args
            .config
            .providers
            .iter()
            .copied()
            .filter(|p| !pending.tried.contains(p) && connection.account_at(*p).is_some())
            .collect();
        if self.in_flight >= self.args.config.max_in_flight {
            debug!(bank = %self.bank(), "bulkhead full; not calling upstream");
            return self.finish_without_live(ticket);
        }
        for (index, &provider) in candidates.iter().enumerate() {
            let permit = self.permit(provider, now);
            if permit == Permit::Refused {
                continue;
            }
            let later_paths = candidates[index + 1..].iter().any(|p| {
                self.breakers
                    .get_mut(p)
                    .is_some_and(|b| b.state(now) != BreakerState::Open)
            });
            let Some(handle) = self.provider(provider) else {
                continue;
            };
            let bank = self.bank();
            let pending = self.pending.get_mut(&ticket).expect("pending read");
            pending.tried.push(provider);
            let call = BalanceCall {
                bank,
                account: connection
                    .account_at(provider)
                    .expect("candidate has an account")
                    .clone(),
                psu_ip: pending.request.psu_ip,
                request_id: pending.request.request_id.clone(),
            };
            let served = Served {
                bank,
                connection: connection.id,
                failed_over: pending.tried.len() > 1,
                reply: Arc::downgrade(&pending.reply),
                cache: self.args.cache.clone(),
                balances: self.args.balances.clone(),
            };
            self.in_flight += 1;
            let myself = myself.clone();
            let probe = permit == Permit::Probe;
            tokio::spawn(async move {
                // Failover is the better retry: retry in place only on the last path.
                let (result, answer) = match handle.balance(call, !later_paths).await {
                    Ok(balance) => (Ok(()), served.ready(balance)),
                    Err(error) => (Err(error), None),
                };
                // The outcome goes first: the actor then waits behind the caller, whom the
                // answer wakes next on this thread.
                let _ = myself.send_message(BankMsg::Outcome {
                    ticket,
                    provider,
                    probe,
                    result,
                });
                if let Some(answer) = answer {
                    answer();
                }
            });
            return;
        }
        self.finish_without_live(ticket);
    }

    fn outcome(
        &mut self,
        myself: &ActorRef<BankMsg>,
        ticket: u64,
        provider: ProviderId,
        probe: bool,
        result: Result<(), UpstreamError>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let bank = self.bank();
        self.record(provider, probe, result.as_ref().err());
        if !self.pending.contains_key(&ticket) {
            return;
        }
        match result {
            Ok(()) => {
                self.pending.remove(&ticket);
            }
            Err(error) => {
                debug!(bank = %bank, provider = %provider, error = %error, "balance read failed");
                if error.class == FailureClass::Consent
                    && let Some(pending) = self.pending.get_mut(&ticket)
                {
                    pending.consent_failed.push(provider);
                }
                self.dispatch(myself, ticket);
            }
        }
    }

    /// Whether a call through `provider` may go ahead: an operator's pin, else the breaker.
    fn permit(&mut self, provider: ProviderId, now: Instant) -> Permit {
        match self.args.modes.breaker_pin(provider) {
            Some(BreakerPin::Open) => Permit::Refused,
            Some(BreakerPin::Closed) => Permit::Call,
            None => {
                let breaker = self
                    .breakers
                    .get_mut(&provider)
                    .expect("a breaker per configured provider");
                let before = breaker.state(now);
                let permit = breaker.permit(now);
                let after = breaker.state(now);
                if before != after {
                    self.export_breaker(provider, after);
                }
                permit
            }
        }
    }

    /// The synthetic health probe: one call per provider path whose breaker lets a call
    /// through (an open breaker waits for its time; a half-open one takes the probe as its
    /// trial). It feeds the breakers like any call, so a bank nobody uses is still watched,
    /// and a path that recovers closes its breaker and drains its queue without user traffic.
    fn probe(&mut self, myself: &ActorRef<BankMsg>) {
        let now = Instant::now();
        let bank = self.bank();
        let providers = self.args.config.providers.clone();
        for provider in providers {
            if self.in_flight >= self.args.config.max_in_flight {
                return;
            }
            let permit = self.permit(provider, now);
            if permit == Permit::Refused {
                continue;
            }
            let Some(handle) = self.provider(provider) else {
                continue;
            };
            self.in_flight += 1;
            let myself = myself.clone();
            let probe = permit == Permit::Probe;
            tokio::spawn(async move {
                let result = handle.probe(bank).await;
                let _ = myself.send_message(BankMsg::ProbeOutcome {
                    provider,
                    probe,
                    result,
                });
            });
        }
    }

    fn probe_outcome(&mut self, provider: ProviderId, probe: bool, error: Option<&UpstreamError>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let outcome = error.map_or("success", |e| e.class.as_str());
        ::metrics::counter!(metrics::PROBES, "bank" => self.bank().as_str(), "provider" => provider.as_str(), "outcome" => outcome)
            .increment(1);
        self.record(provider, probe, error);
    }

    /// Feeds one call's outcome to the path's breaker.
    fn record(&mut self, provider: ProviderId, probe: bool, error: Option<&UpstreamError>) {
        let now = Instant::now();
        let bank = self.bank();
        let breaker = self
            .breakers
            .get_mut(&provider)
            .expect("a breaker per configured provider");
        let before = breaker.state(now);
        match error {
            None => breaker.on_success(now),
            Some(error) => {
                self.last_error.insert(provider, error.class);
                match error.class {
                    // The provider and bank answered: the path is healthy.
                    FailureClass::Consent | FailureClass::Client => {
                        if probe {
                            breaker.on_success(now);
                        }
                    }
                    FailureClass::RateLimited => {
                        let wait = error
                            .retry_after
                            .unwrap_or(self.args.config.breaker.open_for);
                        breaker.open_for(now, wait);
                        self.rate_limited_until = Some(now + wait);
                    }
                    FailureClass::Credentials => breaker.force_open(now),
                    _ => {
                        breaker.on_failure(now);
                    }
                }
            }
        }
        let after = breaker.state(now);
        if before != after {
            info!(bank = %bank, provider = %provider, from = before.as_str(), to = after.as_str(), "breaker changed");
            self.export_breaker(provider, after);
            ::metrics::counter!(metrics::BREAKER_TRANSITIONS, "bank" => bank.as_str(), "provider" => provider.as_str(), "to" => after.as_str())
                .increment(1);
            if after == BreakerState::Closed {
                self.args.modes.set_degraded(bank, false);
                self.args.drainer.wake(bank);
            } else if after == BreakerState::Open
                && self
                    .breakers
                    .values_mut()
                    .all(|b| b.state(now) == BreakerState::Open)
            {
                self.args.modes.set_degraded(bank, true);
            }
        }
    }

    /// Sends a payment to the next provider whose breaker lets it through, or answers
    /// `NotSent` when none is left.
    fn dispatch_pay(&mut self, myself: &ActorRef<BankMsg>, ticket: u64) {
        let now = Instant::now();
        let Some(pending) = self.pending_pays.get(&ticket) else {
            return;
        };
        let candidates: Vec<(ProviderId, ProviderAccount)> = self
            .args
            .config
            .providers
            .iter()
            .filter(|p| !pending.tried.contains(p))
            .filter_map(|&p| {
                let account = pending.request.accounts.iter().find(|a| a.provider == p)?;
                Some((p, account.clone()))
            })
            .collect();
        for (provider, account) in candidates {
            let permit = self.permit(provider, now);
            if permit == Permit::Refused {
                continue;
            }
            let Some(handle) = self.provider(provider) else {
                continue;
            };
            let pending = self.pending_pays.get_mut(&ticket).expect("pending payment");
            pending.tried.push(provider);
            let order = pending.request.order.clone();
            let myself = myself.clone();
            let probe = permit == Permit::Probe;
            tokio::spawn(async move {
                let result = handle.initiate_payment(account, order).await;
                let _ = myself.send_message(BankMsg::PayOutcome {
                    ticket,
                    provider,
                    probe,
                    result,
                });
            });
            return;
        }
        if let Some(pending) = self.pending_pays.remove(&ticket) {
            // Without a valid consent at any provider, no path will ever take it.
            let answer = if pending.request.accounts.is_empty() {
                PayAnswer::ConsentExpired { provider: None }
            } else {
                PayAnswer::NotSent {
                    last_error: pending.last_error,
                }
            };
            let _ = pending.reply.send(answer);
        }
    }

    fn pay_outcome(
        &mut self,
        myself: &ActorRef<BankMsg>,
        ticket: u64,
        provider: ProviderId,
        probe: bool,
        result: Result<RemotePayment, UpstreamError>,
    ) {
        self.record(provider, probe, result.as_ref().err());
        let error = match result {
            Ok(payment) => {
                if let Some(pending) = self.pending_pays.remove(&ticket) {
                    let _ = pending.reply.send(PayAnswer::Initiated(payment));
                }
                return;
            }
            Err(error) => error,
        };
        let answer = match error.class {
            FailureClass::Consent => PayAnswer::ConsentExpired {
                provider: Some(provider),
            },
            FailureClass::Client => PayAnswer::Refused { provider, error },
            _ if error.proves_not_carried_out() => {
                // Failed before the provider accepted it: the next provider may take it.
                debug!(bank = %self.bank(), provider = %provider, error = %error, "payment not accepted; failing over");
                if let Some(pending) = self.pending_pays.get_mut(&ticket) {
                    pending.last_error = Some(error.class);
                }
                return self.dispatch_pay(myself, ticket);
            }
            _ => PayAnswer::Unknown { provider, error },
        };
        if let Some(pending) = self.pending_pays.remove(&ticket) {
            let _ = pending.reply.send(answer);
        }
    }

    fn provider(&self, id: ProviderId) -> Option<ProviderHandle> {
        self.args.providers.iter().find(|h| h.id() == id).cloned()
    }

    /// Answers a read no provider served: consent problem, stale cache, or unavailable.
    fn finish_without_live(&mut self, ticket: u64) {
        let Some(pending) = self.pending.remove(&ticket) else {
            return;
        };
        let Some(reply) = take(&pending.reply) else {
            return;
        };
        let now = Instant::now();
        if !pending.consent_failed.is_empty() {
            let providers = pending.consent_failed;
            send_answer(
                self.bank(),
                reply,
                BalanceAnswer::ConsentExpired { providers },
            );
            return;
        }
        let answer = self.cache_answer(self.cached(&pending.request.connection), now);
        send_answer(self.bank(), reply, answer);
    }

    /// Answers from the cache alone: fresh, stale with the bank's warning, or unavailable.
    fn cache_answer(&self, cached: Option<Arc<Balance>>, now: Instant) -> BalanceAnswer {
        match cached {
            Some(balance) => match self.freshness(&balance, now) {
                Freshness::Fresh => BalanceAnswer::Served {
                    balance,
                    source: Source::CacheFresh,
                    warning: None,
                },
                Freshness::Stale => BalanceAnswer::Served {
                    balance,
                    source: Source::CacheStale,
                    warning: Some(stale_warning(self.bank())),
                },
                Freshness::Expired => BalanceAnswer::Unavailable {
                    warning: unavailable_warning(self.bank()),
                },
            },
            None => BalanceAnswer::Unavailable {
                warning: unavailable_warning(self.bank()),
            },
        }
    }

    fn export_breaker(&self, provider: ProviderId, state: BreakerState) {
        ::metrics::gauge!(metrics::BREAKER_STATE, "bank" => self.bank().as_str(), "provider" => provider.as_str())
            .set(state.gauge());
    }

    fn status(&mut self) -> BankStatus {
        let now = Instant::now();
        let paths = self
            .breakers
            .iter_mut()
            .map(|(&provider, breaker)| PathStatus {
                provider,
                breaker: breaker.state(now),
                pinned: self.args.modes.breaker_pin(provider),
                since_s: now.duration_since(breaker.since()).as_secs(),
                last_error: self.last_error.get(&provider).copied(),
            })
            .collect();
        BankStatus {
            bank: self.args.bank,
            paths,
            rate_limited: self.rate_limited(now),
        }
    }
}
