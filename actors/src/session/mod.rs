//! Sessions: one record per user session (`sid`), holding what the session knows, with no
//! actor of its own.
//!
//! A session knows the user's connections (loaded from PostgreSQL once for all the user's
//! sessions), limits how fast the user may ask (governor, keyed by user), and coalesces
//! concurrent identical reads: ten balance requests at once from one session cause one read
//! per account. A consent problem reported for an account is remembered, so that account
//! answers `consent_expired` at once from then on without bothering the bank.
//!
//! # One concurrency model
//!
//! A session is a plain record (`registry::Session`) that the request's own task reads and
//! updates under short locks; a read that needs a bank runs in a task of its own, shared by
//! every caller that asks the same while it runs (`read::Reads`), and a sweep (the
//! `SessionSweeper` actor, a child of the root) forgets sessions idle for `idle_timeout`.
//! There is no actor per session, because a session owns nothing an actor would protect:
//! its connections are a cache of PostgreSQL's rows and its balances live in the bank
//! actors' cache, so a restart would recover nothing a reload does not, and a mailbox would
//! put one more task hop (and, on two cores, a thread wake-up) on every live read. Failure
//! stays contained where it is owned: a read's task that panics answers its callers
//! `Unavailable` and is forgotten, and the bank and provider actors, which hold breakers,
//! tokens and quotas, are supervised by the root.
//!
//! - `registry.rs` — the sessions by user and `sid`, what they share, the sweep.
//! - `connections.rs` — the user's connection list: loading, reloading, expired consents.
//! - `read.rs` — a balance read: the local answer, the coalescer, the reads from the banks.

mod connections;
mod read;
mod registry;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::bank::BalanceAnswer;
use crate::upstream::{Connection, StoreError};

pub use registry::{SessionDeps, SessionSweeper, Sessions};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// A session with no request for this long is forgotten.
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
    #[error("the read did not finish")]
    Unavailable,
}

/// The handle a request uses to talk to its session.
#[derive(Clone)]
pub struct SessionHandle {
    sessions: Arc<Sessions>,
    session: Arc<registry::Session>,
}

impl SessionHandle {
    /// Reads balances. When every requested account has a fresh cached balance (or the user
    /// has none to read), the answer comes from the session's record in the caller's task;
    /// any other read joins the session's read of the same accounts, or starts it.
    pub async fn balances(
        &self,
        account: Option<Uuid>,
        psu_ip: Option<IpAddr>,
        request_id: &str,
    ) -> Result<Vec<AccountBalance>, SessionError> {
        let deps = self.sessions.deps();
        deps.admit(&self.session.user.id)?;
        self.session.touch(deps.now_ms());
        let local = match self
            .session
            .user
            .with_current(|c| read::answer_locally(deps, c, account))
        {
            Some(local) => local,
            // Not loaded yet: load here, once for all the user's sessions.
            None => read::answer_locally(deps, &self.session.user.load(deps).await?, account),
        };
        if let Some(answer) = local {
            return answer;
        }
        let deps = self.sessions.deps_arc();
        let user = self.session.user.clone();
        let request_id = request_id.to_owned();
        let read = self.session.reads.join_or_start(account, move || {
            read::from_banks(deps, user, account, psu_ip, request_id)
        });
        let deadline = self.sessions.deps().config.read_deadline + Duration::from_secs(1);
        tokio::time::timeout(deadline, read)
            .await
            .unwrap_or(Err(SessionError::Unavailable))
    }

    /// Chaos hook: runs a read of all accounts whose task panics; whoever joins it meanwhile
    /// is answered `Unavailable`, like its starter.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn inject_panic(&self) -> Result<Vec<AccountBalance>, SessionError> {
        self.session
            .reads
            .join_or_start(None, || async {
                panic!("chaos: a session read asked to panic")
            })
            .await
    }
}
