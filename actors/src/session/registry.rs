//! The sessions by user and `sid`, what every session shares (`SessionDeps`), and the sweep
//! that forgets idle ones: the `SessionSweeper`, a child of the root, so a sweep that panics
//! is restarted like any other actor.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use uuid::Uuid;

use super::connections::User;
use super::read::Reads;
use super::{SessionConfig, SessionError, SessionHandle};
use crate::BankId;
use crate::bank::{BalanceCache, BankHandle};
use crate::metrics;
use crate::modes::ModeBoard;
use crate::upstream::Store;

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
    /// Milliseconds are counted from here for a session's last request.
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
    pub(super) fn admit(&self, user: &Arc<str>) -> Result<(), SessionError> {
        self.limiter.check_key(user).map_err(|not_until| {
            ::metrics::counter!(metrics::RATE_LIMITED, "source" => "user", "provider" => "none")
                .increment(1);
            SessionError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            }
        })
    }

    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// One session: the user it belongs to, when it was last asked, its reads in flight.
pub(super) struct Session {
    sid: Arc<str>,
    pub(super) user: Arc<User>,
    /// Milliseconds since `SessionDeps::epoch` of the latest request.
    last_active: AtomicU64,
    pub(super) reads: Reads,
}

impl Session {
    pub(super) fn touch(&self, now_ms: u64) {
        self.last_active.store(now_ms, Ordering::Relaxed);
    }
}

type ByUser = HashMap<Arc<str>, Vec<Arc<Session>>>;

/// All live sessions, by user and `sid`.
pub struct Sessions {
    /// A user has few sessions at once, so each user's are a short list.
    map: RwLock<ByUser>,
    count: AtomicU64,
    deps: Arc<SessionDeps>,
}

impl Sessions {
    pub fn new(deps: Arc<SessionDeps>) -> Arc<Sessions> {
        Arc::new(Sessions {
            map: RwLock::new(HashMap::new()),
            count: AtomicU64::new(0),
            deps,
        })
    }

    pub(super) fn deps(&self) -> &SessionDeps {
        &self.deps
    }

    pub(super) fn deps_arc(&self) -> Arc<SessionDeps> {
        self.deps.clone()
    }

    fn read(&self) -> RwLockReadGuard<'_, ByUser> {
        self.map
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, ByUser> {
        self.map
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sessions known.
    pub fn active(&self) -> usize {
        self.count.load(Ordering::Relaxed) as usize
    }

    /// Returns the session for `user` and `sid`, creating it if needed.
    pub fn get(self: &Arc<Self>, user: &str, sid: &str) -> SessionHandle {
        let handle = |session: &Arc<Session>| SessionHandle {
            sessions: self.clone(),
            session: session.clone(),
        };
        if let Some(session) = self.read().get(user).and_then(|l| find(l, sid)) {
            return handle(session);
        }
        let mut map = self.write();
        if let Some(session) = map.get(user).and_then(|l| find(l, sid)) {
            return handle(session);
        }
        let user = match map.get(user).and_then(|l| l.first()) {
            Some(sibling) => sibling.user.clone(),
            None => Arc::new(User::new(user)),
        };
        let session = Arc::new(Session {
            sid: Arc::from(sid),
            user,
            last_active: AtomicU64::new(self.deps.now_ms()),
            reads: Reads::default(),
        });
        map.entry(session.user.id.clone())
            .or_default()
            .push(session.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        drop(map);
        self.export_gauges();
        handle(&session)
    }

    /// Tells the sessions of `user` that the user's connections changed (`removed`, when one
    /// was removed): they reload them on the next read, keeping the old list for a database
    /// outage.
    pub fn reload_user(&self, user: &str, removed: Option<Uuid>) {
        if let Some(session) = self.read().get(user).and_then(|l| l.first()) {
            session.user.changed(removed);
        }
    }

    /// Forgets sessions idle for `idle_timeout`; a read in flight finishes for its callers.
    fn sweep(&self) {
        let idle_ms = self.deps.config.idle_timeout.as_millis() as u64;
        let now = self.deps.now_ms();
        let mut forgotten = 0;
        self.write().retain(|_, list| {
            list.retain(|session| {
                let quiet = now.saturating_sub(session.last_active.load(Ordering::Relaxed));
                let keep = quiet < idle_ms;
                forgotten += u64::from(!keep);
                keep
            });
            !list.is_empty()
        });
        self.count.fetch_sub(forgotten, Ordering::Relaxed);
        // Forget the limiter state of users who have been quiet.
        self.deps.limiter.retain_recent();
        self.export_gauges();
    }

    fn export_gauges(&self) {
        ::metrics::gauge!(metrics::SESSIONS_ACTIVE).set(self.active() as f64);
    }
}

fn find<'a>(list: &'a [Arc<Session>], sid: &str) -> Option<&'a Arc<Session>> {
    list.iter().find(|s| &*s.sid == sid)
}

/// Sweeps the sessions now and then.
pub struct SessionSweeper;

pub struct Sweep;

impl Actor for SessionSweeper {
    type Msg = Sweep;
    type State = Arc<Sessions>;
    type Arguments = Arc<Sessions>;

    async fn pre_start(
        &self,
        myself: ActorRef<Sweep>,
        sessions: Arc<Sessions>,
    ) -> Result<Arc<Sessions>, ActorProcessingErr> {
        let every = (sessions.deps.config.idle_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        myself.send_interval(every, || Sweep);
        Ok(sessions)
    }

    async fn handle(
        &self,
        _: ActorRef<Sweep>,
        _: Sweep,
        sessions: &mut Arc<Sessions>,
    ) -> Result<(), ActorProcessingErr> {
        sessions.sweep();
        Ok(())
    }
}
