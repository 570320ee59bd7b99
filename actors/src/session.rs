//! Session actors: one per user session (`sid`), woken on demand, hibernating when quiet and
//! forgotten when idle.
//!
//! A session knows the user's connections (loaded from PostgreSQL once), limits how fast the
//! user may ask (governor, keyed by user), and coalesces concurrent identical reads: ten
//! balance requests at once from one session cause one read per account. A consent problem
//! reported for an account is remembered, so that account answers `consent_expired` at once
//! from then on without bothering the bank.
//!
//! What a session knows lives in a small shared record (`SessionShared`, with the user's
//! connections in a `UserShared` all the user's sessions hold); its actor exists
//! only while the session reads from banks. Reads the cache can answer are served from the
//! record without the actor (loading the user's connections first if need be); a read that
//! needs the bank wakes the actor (the session supervisor spawns it), which coalesces and
//! fetches. After `hibernate_after` without a request
//! the supervisor stops the actor and keeps the record, so an idle session costs a few hundred
//! bytes instead of an actor's task and mailboxes; after `idle_timeout` the record goes too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::bank::{BalanceAnswer, BalanceCache, BankHandle, FetchRequest, Source, Warning};
use crate::metrics::{self, ReadSource};
use crate::modes::{BalancesMode, ModeBoard};
use crate::slot::Slot;
use crate::upstream::{Connection, Store, StoreError};
use crate::{BankId, ProviderId};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session with no request for this long is forgotten.
    pub idle_timeout: Duration,
    /// A session's actor with no request for this long is stopped; the session stays.
    pub hibernate_after: Duration,
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
            hibernate_after: Duration::from_secs(10),
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

/// The user's connections as the user's sessions know them.
#[derive(Default)]
struct Lists {
    /// As last loaded; `None` until loaded, and again after the user's connections changed.
    current: Option<Vec<Arc<Connection>>>,
    /// The list from before the last change (less any connection removed since), served while
    /// PostgreSQL cannot give the new one: a database outage must not hide cached balances.
    previous: Option<Vec<Arc<Connection>>>,
    /// Counts changes, so that a load that began before one does not install the old list.
    generation: u64,
}

/// What every session of one user shares: the user's connections, loaded once for all of them
/// (a reconnect storm of many sessions makes one query per user, not one per session).
pub struct UserShared {
    id: Arc<str>,
    lists: RwLock<Lists>,
    /// Held while loading the connections.
    loading: tokio::sync::Mutex<()>,
}

/// Everything a session remembers, awake or hibernating. Handles read it to serve fresh cached
/// balances without the actor; the actor writes what it learns.
pub struct SessionShared {
    user: Arc<UserShared>,
    /// Milliseconds since `SessionDeps::epoch` of the latest request.
    last_active: AtomicU64,
}

impl SessionShared {
    fn lists(&self) -> std::sync::RwLockReadGuard<'_, Lists> {
        self.user.lists()
    }

    fn lists_mut(&self) -> std::sync::RwLockWriteGuard<'_, Lists> {
        self.user.lists_mut()
    }
}

impl UserShared {
    fn lists(&self) -> std::sync::RwLockReadGuard<'_, Lists> {
        self.lists
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lists_mut(&self) -> std::sync::RwLockWriteGuard<'_, Lists> {
        self.lists
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub enum SessionMsg {
    /// Reads the balance of one account (`Some`) or of all the user's accounts (`None`).
    Balances {
        account: Option<Uuid>,
        psu_ip: Option<IpAddr>,
        request_id: String,
        reply: BalancesReply,
    },
    #[cfg(any(test, feature = "test-util"))]
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
    pub limiter: DefaultKeyedRateLimiter<Arc<str>>,
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
    fn admit(&self, user: &Arc<str>) -> Result<(), SessionError> {
        self.limiter.check_key(user).map_err(|not_until| {
            ::metrics::counter!(metrics::RATE_LIMITED, "source" => "user", "provider" => "none")
                .increment(1);
            SessionError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

pub struct SessionActor;

pub struct SessionArgs {
    shared: Arc<SessionShared>,
    deps: Arc<SessionDeps>,
}

/// The callers waiting for each read in flight, by account (`None`: all accounts). The actor
/// adds them; the read's task answers them itself when it ends, without a trip back through
/// the actor's mailbox.
type Waiting = Arc<Mutex<HashMap<Option<Uuid>, Vec<BalancesReply>>>>;

pub struct SessionState {
    shared: Arc<SessionShared>,
    deps: Arc<SessionDeps>,
    waiting: Waiting,
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
            shared: args.shared,
            deps: args.deps,
            waiting: Waiting::default(),
        })
    }

    async fn handle(
        &self,
        _: ActorRef<SessionMsg>,
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
                let local = {
                    let lists = state.shared.lists();
                    lists
                        .current
                        .as_deref()
                        .and_then(|c| answer_locally(&state.deps, c, account))
                };
                if let Some(answer) = local {
                    let _ = reply.send(answer);
                    return Ok(());
                }
                {
                    let mut waiting = lock(&state.waiting);
                    if let Some(waiters) = waiting.get_mut(&account) {
                        waiters.push(reply);
                        return Ok(());
                    }
                    waiting.insert(account, vec![reply]);
                }
                state.start_fetch(account, psu_ip, request_id);
            }
            #[cfg(any(test, feature = "test-util"))]
            SessionMsg::Panic => panic!("chaos: session actor asked to panic"),
        }
        Ok(())
    }
}

impl SessionState {
    /// Reads in a task of its own, which answers everyone waiting for the read when it ends.
    fn start_fetch(&self, key: Option<Uuid>, psu_ip: Option<IpAddr>, request_id: String) {
        let known = self.shared.lists().current.clone();
        let deps = self.deps.clone();
        let shared = self.shared.clone();
        let waiting = self.waiting.clone();
        tokio::spawn(async move {
            let connections = match known {
                Some(connections) => Ok(connections),
                None => load_connections(&deps, &shared.user).await,
            };
            let result = match connections {
                Ok(connections) => read_balances(&deps, connections, key, psu_ip, request_id).await,
                Err(error) => Err(error),
            };
            if let Ok(balances) = &result {
                forget_expired_consents(&shared, &deps, balances);
            }
            let waiters = lock(&waiting).remove(&key).unwrap_or_default();
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        });
    }
}

fn lock(waiting: &Waiting) -> std::sync::MutexGuard<'_, HashMap<Option<Uuid>, Vec<BalancesReply>>> {
    waiting
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Drops provider accounts whose consent a provider rejected, and records it.
fn forget_expired_consents(
    shared: &SessionShared,
    deps: &SessionDeps,
    balances: &[AccountBalance],
) {
    let mut lists = shared.lists_mut();
    let Some(connections) = lists.current.as_mut() else {
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
            let store = deps.store.clone();
            let id = balance.connection.id;
            tokio::spawn(async move {
                if let Err(error) = store.consent_expired(id, provider).await {
                    warn!(error = %error, "consent expiry not recorded");
                }
            });
        }
    }
}

/// The user's connections, loaded from PostgreSQL by one of the user's sessions at a time; the
/// others find the list loaded when their turn comes. While PostgreSQL is away, the previous
/// list answers.
async fn load_connections(
    deps: &SessionDeps,
    user: &UserShared,
) -> Result<Vec<Arc<Connection>>, SessionError> {
    let _loading = user.loading.lock().await;
    let generation = {
        let lists = user.lists();
        if let Some(current) = &lists.current {
            return Ok(current.clone());
        }
        lists.generation
    };
    match deps.store.connections(&user.id).await {
        Ok(list) => {
            let list: Vec<_> = list.into_iter().map(Arc::new).collect();
            let mut lists = user.lists_mut();
            if lists.generation == generation {
                lists.current = Some(list.clone());
                lists.previous = None;
            }
            Ok(list)
        }
        Err(error) => match user.lists().previous.clone() {
            Some(previous) => {
                debug!(error = %error, "connections not reloaded; serving the previous list");
                Ok(previous)
            }
            None => Err(SessionError::Store(error)),
        },
    }
}

/// The answer to a read that needs no bank: fresh cached balances, no balances for a user
/// without connections, or an unknown account. `None` when the bank must be asked.
fn answer_locally(
    deps: &SessionDeps,
    connections: &[Arc<Connection>],
    key: Option<Uuid>,
) -> Option<Result<Vec<AccountBalance>, SessionError>> {
    match key {
        Some(id) if !connections.iter().any(|c| c.id == id) => {
            Some(Err(SessionError::UnknownAccount))
        }
        None if connections.is_empty() => Some(Ok(Vec::new())),
        _ => fresh_answers(deps, connections, key).map(Ok),
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
        metrics::count_balance_read(answer.connection.bank, ReadSource::CacheFresh);
    }
    Some(answers)
}

async fn read_balances(
    deps: &SessionDeps,
    connections: Vec<Arc<Connection>>,
    key: Option<Uuid>,
    psu_ip: Option<IpAddr>,
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
            psu_ip,
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
                        .unwrap_or(BalanceAnswer::Unavailable {
                            warning: Warning::Unavailable,
                        }),
                    None => BalanceAnswer::Unavailable {
                        warning: Warning::Unavailable,
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
    sessions: Arc<Sessions>,
    sid: Arc<str>,
    shared: Arc<SessionShared>,
}

impl SessionHandle {
    /// Reads balances. When every requested account has a fresh cached balance (or the user
    /// has none to read), the answer comes from the session's record without its actor; any
    /// other read goes to the actor (woken if it hibernates), which coalesces and fetches.
    pub async fn balances(
        &self,
        account: Option<Uuid>,
        psu_ip: Option<IpAddr>,
        request_id: &str,
    ) -> Result<Vec<AccountBalance>, SessionError> {
        let deps = &self.sessions.deps;
        deps.admit(&self.shared.user.id)?;
        self.shared
            .last_active
            .store(deps.now_ms(), Ordering::Relaxed);
        let local = {
            let lists = self.shared.lists();
            lists
                .current
                .as_deref()
                .map(|c| answer_locally(deps, c, account))
        };
        let local = match local {
            Some(local) => local,
            // Not loaded yet: load here (once for all the user's sessions), not in an actor.
            None => answer_locally(
                deps,
                &load_connections(deps, &self.shared.user).await?,
                account,
            ),
        };
        if let Some(answer) = local {
            return answer;
        }
        let deadline = deps.config.read_deadline + Duration::from_secs(1);
        // An actor may hibernate between being found and being asked; then wake it once more.
        for _ in 0..2 {
            let actor = self.sessions.wake(&self.sid, &self.shared).await?;
            let message = |reply| SessionMsg::Balances {
                account,
                psu_ip,
                request_id: request_id.to_owned(),
                reply,
            };
            match actor.call(message, Some(deadline)).await {
                Ok(ractor::rpc::CallResult::Success(result)) => return result,
                Ok(ractor::rpc::CallResult::Timeout) => return Err(SessionError::Unavailable),
                Ok(ractor::rpc::CallResult::SenderError) | Err(_) => continue,
            }
        }
        Err(SessionError::Unavailable)
    }

    /// Chaos hook: makes the session actor panic (waking it first).
    #[cfg(any(test, feature = "test-util"))]
    pub async fn inject_panic(&self) {
        if let Ok(actor) = self.sessions.wake(&self.sid, &self.shared).await {
            let _ = actor.send_message(SessionMsg::Panic);
        }
    }
}

/// One session of a user, by its `sid`.
struct SessionEntry {
    sid: Arc<str>,
    shared: Arc<SessionShared>,
    /// `None` while the session hibernates.
    actor: Option<ActorRef<SessionMsg>>,
}

/// All live sessions, by user and `sid`, and how to find, start or wake one.
pub struct Sessions {
    /// A user has few sessions at once, so each user's are a short list.
    map: RwLock<HashMap<Arc<str>, Vec<SessionEntry>>>,
    count: AtomicU64,
    deps: Arc<SessionDeps>,
    supervisor: Slot<SupervisorMsg>,
}

impl Sessions {
    pub fn new(deps: Arc<SessionDeps>) -> Arc<Sessions> {
        Arc::new(Sessions {
            map: RwLock::new(HashMap::new()),
            count: AtomicU64::new(0),
            deps,
            supervisor: Slot::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, Vec<SessionEntry>>> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Arc<str>, Vec<SessionEntry>>> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sessions known, awake or hibernating.
    pub fn active(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }

    /// Session actors running now.
    pub fn awake(&self) -> usize {
        self.read()
            .values()
            .flatten()
            .filter(|e| e.actor.is_some())
            .count()
    }

    /// Returns the session for `user` and `sid`, creating its record if needed (its actor
    /// starts when a read needs it).
    pub fn get(self: &Arc<Self>, user: &str, sid: &str) -> SessionHandle {
        let handle = |entry: &SessionEntry| SessionHandle {
            sessions: self.clone(),
            sid: entry.sid.clone(),
            shared: entry.shared.clone(),
        };
        if let Some(entry) = self.read().get(user).and_then(|l| find(l, sid)) {
            return handle(entry);
        }
        let mut map = self.write();
        if let Some(entry) = map.get(user).and_then(|l| find(l, sid)) {
            return handle(entry);
        }
        let user_shared = match map.get(user).and_then(|l| l.first()) {
            Some(sibling) => sibling.shared.user.clone(),
            None => Arc::new(UserShared {
                id: Arc::from(user),
                lists: RwLock::default(),
                loading: tokio::sync::Mutex::new(()),
            }),
        };
        let shared = Arc::new(SessionShared {
            user: user_shared,
            last_active: AtomicU64::new(self.deps.now_ms()),
        });
        let entry = SessionEntry {
            sid: Arc::from(sid),
            shared: shared.clone(),
            actor: None,
        };
        let made = handle(&entry);
        map.entry(shared.user.id.clone()).or_default().push(entry);
        self.count.fetch_add(1, Ordering::Relaxed);
        drop(map);
        self.export_gauges();
        made
    }

    /// The session's actor, asking the supervisor to start it when it hibernates.
    async fn wake(
        &self,
        sid: &Arc<str>,
        shared: &Arc<SessionShared>,
    ) -> Result<ActorRef<SessionMsg>, SessionError> {
        let awake = self
            .read()
            .get(&*shared.user.id)
            .and_then(|l| find(l, sid))
            .and_then(|e| e.actor.clone());
        if let Some(actor) = awake {
            return Ok(actor);
        }
        let supervisor = self.supervisor.get().ok_or(SessionError::Unavailable)?;
        let wake = |reply| SupervisorMsg::Wake {
            sid: sid.clone(),
            shared: shared.clone(),
            reply,
        };
        match supervisor.call(wake, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(Some(actor))) => Ok(actor),
            _ => Err(SessionError::Unavailable),
        }
    }

    /// Tells every session of `user` that the user's connections changed (`removed`, when one
    /// was removed): each reloads them on its next read, keeping the old list for a database
    /// outage.
    pub fn reload_user(&self, user: &str, removed: Option<Uuid>) {
        let map = self.read();
        for entry in map.get(user).into_iter().flatten() {
            let mut lists = entry.shared.lists_mut();
            lists.generation += 1;
            if let Some(known) = lists.current.take() {
                lists.previous = Some(known);
            }
            if let (Some(previous), Some(removed)) = (lists.previous.as_mut(), removed) {
                previous.retain(|c| c.id != removed);
            }
        }
    }

    fn export_gauges(&self) {
        ::metrics::gauge!(metrics::SESSIONS_ACTIVE).set(self.active() as f64);
    }
}

fn find<'a>(list: &'a [SessionEntry], sid: &str) -> Option<&'a SessionEntry> {
    list.iter().find(|e| &*e.sid == sid)
}

/// Wakes sessions, restarts their actors when they panic, lets quiet ones hibernate and
/// forgets idle ones.
pub struct SessionSupervisor;

pub enum SupervisorMsg {
    Wake {
        sid: Arc<str>,
        shared: Arc<SessionShared>,
        reply: RpcReplyPort<Option<ActorRef<SessionMsg>>>,
    },
    Sweep,
}

/// The supervisor's state: the sessions, and which session each running actor serves.
pub struct SupervisorState {
    sessions: Arc<Sessions>,
    actors: HashMap<ractor::ActorId, (Arc<str>, Arc<str>)>,
}

impl SessionSupervisor {
    /// Starts the actor of the session `sid` of `shared.user`, recreating the session's record
    /// if it was forgotten meanwhile; returns the running actor if there is one already.
    fn wake(
        myself: &ActorRef<SupervisorMsg>,
        state: &mut SupervisorState,
        sid: Arc<str>,
        shared: Arc<SessionShared>,
    ) -> Option<ActorRef<SessionMsg>> {
        let sessions = state.sessions.clone();
        let (shared, running) = {
            let map = sessions.read();
            match map.get(&*shared.user.id).and_then(|l| find(l, &sid)) {
                Some(entry) => (entry.shared.clone(), entry.actor.clone()),
                None => (shared, None),
            }
        };
        if running.is_some() {
            return running;
        }
        let args = SessionArgs {
            shared: shared.clone(),
            deps: sessions.deps.clone(),
        };
        // Not waiting for the actor to start keeps a wave of new sessions (a reconnect storm)
        // from queueing behind one another here; messages wait in its mailbox meanwhile.
        let spawned =
            ractor::ActorRuntime::spawn_linked_instant(None, SessionActor, args, myself.get_cell());
        let actor = match spawned {
            Ok((actor, _)) => actor,
            Err(error) => {
                warn!(error = %error, "session actor could not start");
                return None;
            }
        };
        state
            .actors
            .insert(actor.get_id(), (shared.user.id.clone(), sid.clone()));
        let mut map = sessions.write();
        let list = map.entry(shared.user.id.clone()).or_default();
        match list.iter_mut().find(|e| e.sid == sid) {
            Some(entry) => entry.actor = Some(actor.clone()),
            None => {
                list.push(SessionEntry {
                    sid,
                    shared,
                    actor: Some(actor.clone()),
                });
                sessions.count.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(actor)
    }

    /// Stops the actors of sessions quiet for `hibernate_after` and forgets sessions idle for
    /// `idle_timeout`.
    fn sweep(sessions: &Sessions) {
        let config = &sessions.deps.config;
        let hibernate_ms = config.hibernate_after.as_millis() as u64;
        let idle_ms = config.idle_timeout.as_millis() as u64;
        let now = sessions.deps.now_ms();
        let mut forgotten = 0;
        let mut map = sessions.write();
        map.retain(|_, list| {
            list.retain_mut(|entry| {
                let quiet = now.saturating_sub(entry.shared.last_active.load(Ordering::Relaxed));
                if quiet >= hibernate_ms.min(idle_ms)
                    && let Some(actor) = entry.actor.take()
                {
                    actor.stop(Some("hibernating".to_owned()));
                }
                let keep = quiet < idle_ms;
                forgotten += u64::from(!keep);
                keep
            });
            !list.is_empty()
        });
        drop(map);
        sessions.count.fetch_sub(forgotten, Ordering::Relaxed);
        // Forget the limiter state of users who have been quiet.
        sessions.deps.limiter.retain_recent();
        sessions.export_gauges();
    }
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = Arc<Sessions>;

    async fn pre_start(
        &self,
        myself: ActorRef<SupervisorMsg>,
        sessions: Arc<Sessions>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        sessions.supervisor.set(myself.clone());
        // A restarted supervisor starts with no actors: every session hibernates until asked.
        for entry in sessions.write().values_mut().flatten() {
            entry.actor = None;
        }
        let config = &sessions.deps.config;
        let sweep_every = (config.hibernate_after.min(config.idle_timeout) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        myself.send_interval(sweep_every, || SupervisorMsg::Sweep);
        Ok(SupervisorState {
            sessions,
            actors: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Wake { sid, shared, reply } => {
                let actor = Self::wake(&myself, state, sid, shared);
                let _ = reply.send(actor);
            }
            SupervisorMsg::Sweep => Self::sweep(&state.sessions),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        // The default would stop this supervisor (and every session) when one session fails.
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some((user, sid)) = state.actors.remove(&cell.get_id()) else {
                    return Ok(());
                };
                ::metrics::counter!(metrics::ACTOR_RESTARTS, "actor" => "session").increment(1);
                debug!(error = %error, "session actor failed; restarting it");
                let shared = {
                    let mut map = state.sessions.write();
                    let entry = map
                        .get_mut(&*user)
                        .and_then(|l| l.iter_mut().find(|e| e.sid == sid));
                    entry.map(|entry| {
                        entry.actor = None;
                        entry.shared.clone()
                    })
                };
                if let Some(shared) = shared {
                    Self::wake(&myself, state, sid, shared);
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.actors.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
