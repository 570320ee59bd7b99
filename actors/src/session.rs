//! Session actors: one per user session (`sid`), created on demand and stopped when idle.
//!
//! A session knows the user's connections (loaded from PostgreSQL once), limits how fast the
//! user may ask (governor, keyed by user), and coalesces concurrent identical reads: ten
//! balance requests at once from one session cause one read per account. A consent problem
//! reported for an account is remembered, so that account answers `consent_expired` at once
//! from then on without bothering the bank.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::bank::{
    BalanceAnswer, BalanceCache, BankHandle, FetchRequest, Source, unavailable_warning,
};
use crate::metrics;
use crate::modes::{BalancesMode, ModeBoard};
use crate::slot::Slot;
use crate::upstream::{Connection, Store, StoreError};
use crate::{BankId, ProviderId};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub idle_timeout: Duration,
    /// Balance requests per second per user, and the burst above it.
    pub user_rate_per_s: u32,
    pub user_burst: u32,
    /// The longest a balance read may take end to end (retries included).
    pub read_deadline: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(15 * 60),
            user_rate_per_s: 10,
            user_burst: 20,
            read_deadline: Duration::from_secs(30),
        }
    }
}

/// One account's answer.
#[derive(Debug, Clone)]
pub struct AccountBalance {
    pub connection: Arc<Connection>,
    pub answer: BalanceAnswer,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error("no such account")]
    UnknownAccount,
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the session is restarting")]
    Unavailable,
}

type BalancesReply = RpcReplyPort<Result<Vec<AccountBalance>, SessionError>>;

/// The session's connections as last loaded; `None` until loaded. The actor writes it, and
/// handles read it to serve fresh cached balances without a trip through the mailbox.
type Snapshot = Arc<RwLock<Option<Vec<Arc<Connection>>>>>;

pub enum SessionMsg {
    /// Reads the balance of one account (`Some`) or of all the user's accounts (`None`).
    Balances {
        account: Option<Uuid>,
        psu_ip: Option<String>,
        request_id: String,
        reply: BalancesReply,
    },
    Fetched {
        key: Option<Uuid>,
        loaded: Option<Vec<Arc<Connection>>>,
        result: Result<Vec<AccountBalance>, SessionError>,
    },
    /// The user's connections changed (consent completed, connection removed): reload.
    Reload {
        removed: Option<Uuid>,
    },
    Panic,
}

/// What every session shares.
pub struct SessionDeps {
    pub store: Arc<dyn Store>,
    pub banks: HashMap<BankId, BankHandle>,
    /// The bank actors' cache: a balance younger than `fresh_for` is served without them.
    pub cache: BalanceCache,
    /// An operator may switch a bank's balances off: then no cached answer either.
    pub modes: Arc<ModeBoard>,
    pub fresh_for: Duration,
    pub limiter: DefaultKeyedRateLimiter<String>,
    pub config: SessionConfig,
    /// Milliseconds are counted from here for `last_active`.
    pub epoch: Instant,
}

impl SessionDeps {
    pub fn new(
        store: Arc<dyn Store>,
        banks: HashMap<BankId, BankHandle>,
        cache: BalanceCache,
        modes: Arc<ModeBoard>,
        fresh_for: Duration,
        config: SessionConfig,
    ) -> SessionDeps {
        let rate = NonZeroU32::new(config.user_rate_per_s).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.user_burst).unwrap_or(rate);
        SessionDeps {
            store,
            banks,
            cache,
            modes,
            fresh_for,
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            config,
            epoch: Instant::now(),
        }
    }

    /// Counts one request against the user's rate limit.
    fn admit(&self, user: &str) -> Result<(), SessionError> {
        self.limiter.check_key(&user.to_owned()).map_err(|not_until| {
            ::metrics::counter!(metrics::RATE_LIMITED, "source" => "user", "provider" => "none").increment(1);
            SessionError::RateLimited { retry_after: not_until.wait_time_from(DefaultClock::default().now()) }
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

pub struct SessionActor;

pub struct SessionArgs {
    pub user: String,
    pub deps: Arc<SessionDeps>,
    snapshot: Snapshot,
}

pub struct SessionState {
    user: String,
    deps: Arc<SessionDeps>,
    connections: Snapshot,
    /// The list from before the last reload (less any connection removed since), served while
    /// PostgreSQL cannot give the new one: a database outage must not hide cached balances.
    previous: Option<Vec<Arc<Connection>>>,
    waiting: HashMap<Option<Uuid>, Vec<BalancesReply>>,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        _: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        Ok(SessionState {
            user: args.user,
            deps: args.deps,
            connections: args.snapshot,
            previous: None,
            waiting: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::Balances {
                account,
                psu_ip,
                request_id,
                reply,
            } => {
                // The handle has admitted the request under the user's rate limit already.
                let known = state.connections.read().expect("snapshot").clone();
                if let Some(fresh) = known.and_then(|c| fresh_answers(&state.deps, &c, account)) {
                    let _ = reply.send(Ok(fresh));
                    return Ok(());
                }
                if let Some(waiters) = state.waiting.get_mut(&account) {
                    waiters.push(reply);
                    return Ok(());
                }
                state.waiting.insert(account, vec![reply]);
                state.start_fetch(myself, account, psu_ip, request_id);
            }
            SessionMsg::Fetched {
                key,
                loaded,
                result,
            } => {
                if let Some(loaded) = loaded {
                    let mut snapshot = state.connections.write().expect("snapshot");
                    if snapshot.is_none() {
                        *snapshot = Some(loaded);
                        state.previous = None;
                    }
                }
                if let Ok(balances) = &result {
                    state.forget_expired_consents(balances);
                }
                for waiter in state.waiting.remove(&key).unwrap_or_default() {
                    let _ = waiter.send(result.clone());
                }
            }
            SessionMsg::Reload { removed } => {
                if let Some(known) = state.connections.write().expect("snapshot").take() {
                    state.previous = Some(known);
                }
                if let (Some(previous), Some(removed)) = (state.previous.as_mut(), removed) {
                    previous.retain(|c| c.id != removed);
                }
            }
            SessionMsg::Panic => panic!("chaos: session actor asked to panic"),
        }
        Ok(())
    }
}

impl SessionState {
    fn start_fetch(
        &self,
        myself: ActorRef<SessionMsg>,
        key: Option<Uuid>,
        psu_ip: Option<String>,
        request_id: String,
    ) {
        let known = self.connections.read().expect("snapshot").clone();
        let previous = self.previous.clone();
        let deps = self.deps.clone();
        let user = self.user.clone();
        tokio::spawn(async move {
            let (loaded, connections) = match known {
                Some(connections) => (None, Ok(connections)),
                None => match deps.store.connections(&user).await {
                    Ok(list) => {
                        let list: Vec<_> = list.into_iter().map(Arc::new).collect();
                        (Some(list.clone()), Ok(list))
                    }
                    Err(error) => match previous {
                        Some(previous) => {
                            debug!(error = %error, "connections not reloaded; serving the previous list");
                            (None, Ok(previous))
                        }
                        None => (None, Err(SessionError::Store(error))),
                    },
                },
            };
            let result = match connections {
                Ok(connections) => read_balances(&deps, connections, key, psu_ip, request_id).await,
                Err(error) => Err(error),
            };
            let _ = myself.send_message(SessionMsg::Fetched {
                key,
                loaded,
                result,
            });
        });
    }

    /// Drops provider accounts whose consent a provider rejected, and records it.
    fn forget_expired_consents(&mut self, balances: &[AccountBalance]) {
        let mut snapshot = self.connections.write().expect("snapshot");
        let Some(connections) = snapshot.as_mut() else {
            return;
        };
        for balance in balances {
            let BalanceAnswer::ConsentExpired { providers } = &balance.answer else {
                continue;
            };
            let Some(slot) = connections
                .iter_mut()
                .find(|c| c.id == balance.connection.id)
            else {
                continue;
            };
            let mut updated = (**slot).clone();
            updated
                .accounts
                .retain(|a| !providers.contains(&a.provider));
            *slot = Arc::new(updated);
            for &provider in providers {
                let store = self.deps.store.clone();
                let id = balance.connection.id;
                tokio::spawn(async move {
                    if let Err(error) = store.consent_expired(id, provider).await {
                        warn!(error = %error, "consent expiry not recorded");
                    }
                });
            }
        }
    }
}

/// Answers from the cache alone when every requested account has a fresh balance there: the
/// common case, served without a bank actor, a task or (from a handle) the session's mailbox.
fn fresh_answers(
    deps: &SessionDeps,
    connections: &[Arc<Connection>],
    key: Option<Uuid>,
) -> Option<Vec<AccountBalance>> {
    let now = chrono::Utc::now();
    let mut answers = Vec::with_capacity(connections.len());
    for connection in connections
        .iter()
        .filter(|c| key.is_none_or(|id| c.id == id))
    {
        if connection.accounts.is_empty()
            || deps.modes.balances_pin(connection.bank) == Some(BalancesMode::Disabled)
        {
            return None;
        }
        let balance = deps.cache.get(&connection.id)?;
        let age = (now - balance.fetched_at).to_std().unwrap_or_default();
        if age >= deps.fresh_for {
            return None;
        }
        answers.push(AccountBalance {
            connection: connection.clone(),
            answer: BalanceAnswer::Served {
                balance,
                source: Source::CacheFresh,
                warning: None,
            },
        });
    }
    if answers.is_empty() {
        return None;
    }
    for answer in &answers {
        let bank = answer.connection.bank.as_str();
        ::metrics::counter!(metrics::BALANCE_READS, "bank" => bank, "source" => "cache_fresh")
            .increment(1);
    }
    Some(answers)
}

async fn read_balances(
    deps: &SessionDeps,
    connections: Vec<Arc<Connection>>,
    key: Option<Uuid>,
    psu_ip: Option<String>,
    request_id: String,
) -> Result<Vec<AccountBalance>, SessionError> {
    let selected: Vec<Arc<Connection>> = match key {
        Some(id) => {
            let found = connections
                .into_iter()
                .find(|c| c.id == id)
                .ok_or(SessionError::UnknownAccount)?;
            vec![found]
        }
        None => connections,
    };
    let reads = selected.into_iter().map(|connection| {
        let request = FetchRequest {
            connection: connection.clone(),
            psu_ip: psu_ip.clone(),
            request_id: request_id.clone(),
        };
        async move {
            let bank = connection.bank;
            let answer = if connection.accounts.is_empty() {
                BalanceAnswer::ConsentExpired {
                    providers: Vec::<ProviderId>::new(),
                }
            } else {
                match deps.banks.get(&bank) {
                    Some(handle) => handle
                        .fetch(request, deps.config.read_deadline)
                        .await
                        .unwrap_or_else(|_| BalanceAnswer::Unavailable {
                            warning: unavailable_warning(bank),
                        }),
                    None => BalanceAnswer::Unavailable {
                        warning: unavailable_warning(bank),
                    },
                }
            };
            AccountBalance { connection, answer }
        }
    });
    Ok(join_all(reads).await)
}

/// The handle a request uses to talk to its session.
#[derive(Clone)]
pub struct SessionHandle {
    actor: ActorRef<SessionMsg>,
    user: String,
    snapshot: Snapshot,
    last_active: Arc<AtomicU64>,
    deps: Arc<SessionDeps>,
}

impl SessionHandle {
    /// Reads balances. When every requested account has a fresh cached balance, the answer
    /// comes from the session's published snapshot without a trip through its mailbox; any
    /// other read goes to the actor, which coalesces, loads and fetches.
    pub async fn balances(
        &self,
        account: Option<Uuid>,
        psu_ip: Option<String>,
        request_id: String,
    ) -> Result<Vec<AccountBalance>, SessionError> {
        self.deps.admit(&self.user)?;
        self.last_active
            .store(self.deps.now_ms(), Ordering::Relaxed);
        let known = self.snapshot.read().expect("snapshot").clone();
        if let Some(fresh) = known.and_then(|c| fresh_answers(&self.deps, &c, account)) {
            return Ok(fresh);
        }
        let message = |reply| SessionMsg::Balances {
            account,
            psu_ip,
            request_id,
            reply,
        };
        let deadline = self.deps.config.read_deadline + Duration::from_secs(1);
        match self.actor.call(message, Some(deadline)).await {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(SessionError::Unavailable),
        }
    }

    /// Chaos hook: makes the session actor panic.
    pub fn inject_panic(&self) {
        let _ = self.actor.send_message(SessionMsg::Panic);
    }
}

/// A session is identified by the user and the token's `sid`.
type SessionKey = (String, String);

struct SessionEntry {
    actor: ActorRef<SessionMsg>,
    last_active: Arc<AtomicU64>,
    snapshot: Snapshot,
}

/// All live sessions, and how to find or start one.
pub struct Sessions {
    map: RwLock<HashMap<SessionKey, SessionEntry>>,
    deps: Arc<SessionDeps>,
    supervisor: Slot<SupervisorMsg>,
}

impl Sessions {
    pub fn new(deps: Arc<SessionDeps>) -> Arc<Sessions> {
        Arc::new(Sessions {
            map: RwLock::new(HashMap::new()),
            deps,
            supervisor: Slot::default(),
        })
    }

    pub fn active(&self) -> usize {
        self.map.read().expect("sessions").len()
    }

    fn lookup(&self, key: &SessionKey) -> Option<SessionHandle> {
        let map = self.map.read().expect("sessions");
        map.get(key).map(|entry| SessionHandle {
            actor: entry.actor.clone(),
            user: key.0.clone(),
            snapshot: entry.snapshot.clone(),
            last_active: entry.last_active.clone(),
            deps: self.deps.clone(),
        })
    }

    /// Returns the session for `user` and `sid`, starting it if needed.
    pub async fn get(&self, user: &str, sid: &str) -> Result<SessionHandle, SessionError> {
        let key = (user.to_owned(), sid.to_owned());
        if let Some(handle) = self.lookup(&key) {
            return Ok(handle);
        }
        let supervisor = self.supervisor.get().ok_or(SessionError::Unavailable)?;
        match supervisor
            .call(
                |reply| SupervisorMsg::Start { key, reply },
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(Some(handle))) => Ok(handle),
            _ => Err(SessionError::Unavailable),
        }
    }

    /// Tells every session of `user` that the user's connections changed (`removed`, when one
    /// was removed).
    pub fn reload_user(&self, user: &str, removed: Option<Uuid>) {
        let map = self.map.read().expect("sessions");
        for ((owner, _), entry) in map.iter() {
            if owner == user {
                let _ = entry.actor.send_message(SessionMsg::Reload { removed });
            }
        }
    }

    fn export_gauge(&self) {
        ::metrics::gauge!(metrics::SESSIONS_ACTIVE).set(self.active() as f64);
    }
}

/// Starts sessions, restarts them when they panic, and stops idle ones.
pub struct SessionSupervisor;

pub enum SupervisorMsg {
    Start {
        key: SessionKey,
        reply: RpcReplyPort<Option<SessionHandle>>,
    },
    Sweep,
}

impl SessionSupervisor {
    async fn spawn(
        myself: &ActorRef<SupervisorMsg>,
        sessions: &Arc<Sessions>,
        key: SessionKey,
    ) -> Option<SessionHandle> {
        let last_active = Arc::new(AtomicU64::new(sessions.deps.now_ms()));
        let snapshot = Snapshot::default();
        let args = SessionArgs {
            user: key.0.clone(),
            deps: sessions.deps.clone(),
            snapshot: snapshot.clone(),
        };
        match Actor::spawn_linked(None, SessionActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                sessions.map.write().expect("sessions").insert(
                    key.clone(),
                    SessionEntry {
                        actor,
                        last_active,
                        snapshot,
                    },
                );
                sessions.export_gauge();
                sessions.lookup(&key)
            }
            Err(error) => {
                warn!(error = %error, "session could not start");
                None
            }
        }
    }

    fn key_of(sessions: &Sessions, cell: &ractor::ActorCell) -> Option<SessionKey> {
        let map = sessions.map.read().expect("sessions");
        map.iter()
            .find(|(_, e)| e.actor.get_id() == cell.get_id())
            .map(|(k, _)| k.clone())
    }
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = Arc<Sessions>;
    type Arguments = Arc<Sessions>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        sessions: Arc<Sessions>,
    ) -> Result<Arc<Sessions>, ActorProcessingErr> {
        sessions.supervisor.set(myself.clone());
        let sweep_every = (sessions.deps.config.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        myself.send_interval(sweep_every, || SupervisorMsg::Sweep);
        Ok(sessions)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        sessions: &mut Arc<Sessions>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Start { key, reply } => {
                let handle = match sessions.lookup(&key) {
                    Some(handle) => Some(handle),
                    None => Self::spawn(&myself, sessions, key).await,
                };
                let _ = reply.send(handle);
            }
            SupervisorMsg::Sweep => {
                let idle_ms = sessions.deps.config.idle_timeout.as_millis() as u64;
                let now = sessions.deps.now_ms();
                let mut map = sessions.map.write().expect("sessions");
                map.retain(|_, entry| {
                    let idle =
                        now.saturating_sub(entry.last_active.load(Ordering::Relaxed)) >= idle_ms;
                    if idle {
                        entry.actor.stop(Some("idle".to_owned()));
                    }
                    !idle
                });
                drop(map);
                // Forget the limiter state of users who have been quiet.
                sessions.deps.limiter.retain_recent();
                sessions.export_gauge();
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        sessions: &mut Arc<Sessions>,
    ) -> Result<(), ActorProcessingErr> {
        // The default would stop this supervisor (and every session) when one session fails.
        if let SupervisionEvent::ActorFailed(cell, error) = event
            && let Some(key) = Self::key_of(sessions, &cell)
        {
            ::metrics::counter!(metrics::ACTOR_RESTARTS, "actor" => "session").increment(1);
            debug!(error = %error, "session actor failed; restarting it");
            sessions.map.write().expect("sessions").remove(&key);
            Self::spawn(&myself, sessions, key).await;
        }
        Ok(())
    }
}
