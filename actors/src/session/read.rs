//! A session's balance read: the answer that needs no bank (fresh cached balances, a user
//! without connections, an account that is not the user's), the coalescer that lets every
//! caller asking the same share one read while it runs, and the read itself, which asks each
//! account's bank actor.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use futures_util::future::{BoxFuture, FutureExt, Shared, join_all};
use uuid::Uuid;

use super::connections::User;
use super::registry::SessionDeps;
use super::{AccountBalance, SessionError};
use crate::ProviderId;
use crate::bank::{BalanceAnswer, FetchRequest, Source, Warning};
use crate::metrics::{self, ReadSource};
use crate::modes::BalancesMode;
use crate::upstream::Connection;

type Answer = Result<Vec<AccountBalance>, SessionError>;

/// A read under way, as every caller waiting for it holds it.
type SharedRead = Shared<BoxFuture<'static, Answer>>;

type InFlight = HashMap<Option<Uuid>, SharedRead>;

/// The reads in flight for one session, by account (`None`: all accounts). The table is
/// made by the session's first read that needs a bank: most sessions never make one, and an
/// idle session then holds no table.
#[derive(Default)]
pub(super) struct Reads(OnceLock<Arc<Mutex<InFlight>>>);

impl Reads {
    /// Joins the read of `key` under way, or starts `read` in a task of its own: the task
    /// outlives any one caller giving up, and it leaves the table when it ends, a panic
    /// included, so the next caller starts afresh.
    pub(super) fn join_or_start<F>(&self, key: Option<Uuid>, read: impl FnOnce() -> F) -> SharedRead
    where
        F: Future<Output = Answer> + Send + 'static,
    {
        let table = self.0.get_or_init(Arc::default);
        let mut reads = lock(table);
        if let Some(running) = reads.get(&key) {
            return running.clone();
        }
        let done = Done {
            reads: table.clone(),
            key,
        };
        let read = read();
        let task = tokio::spawn(async move {
            let _done = done;
            read.await
        });
        let shared = async move { task.await.unwrap_or(Err(SessionError::Unavailable)) }
            .boxed()
            .shared();
        reads.insert(key, shared.clone());
        shared
    }
}

/// Takes a finished read out of the table (the task cannot run before the table holds it:
/// it is spawned under the lock it takes here).
struct Done {
    reads: Arc<Mutex<InFlight>>,
    key: Option<Uuid>,
}

impl Drop for Done {
    fn drop(&mut self) {
        lock(&self.reads).remove(&self.key);
    }
}

fn lock(reads: &Mutex<InFlight>) -> MutexGuard<'_, InFlight> {
    reads
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The answer to a read that needs no bank: fresh cached balances, no balances for a user
/// without connections, or an unknown account. `None` when the bank must be asked.
pub(super) fn answer_locally(
    deps: &SessionDeps,
    connections: &[Arc<Connection>],
    key: Option<Uuid>,
) -> Option<Answer> {
    match key {
        Some(id) if !connections.iter().any(|c| c.id == id) => {
            Some(Err(SessionError::UnknownAccount))
        }
        None if connections.is_empty() => Some(Ok(Vec::new())),
        _ => fresh_answers(deps, connections, key).map(Ok),
    }
}

/// Answers from the cache alone when every requested account has a fresh balance there: the
/// common case, served without a bank actor or a task.
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

/// Reads the requested accounts from their banks, and forgets the consents they report
/// expired. A fresh cache may have answered meanwhile; the bank actor serves it then.
pub(super) async fn from_banks(
    deps: Arc<SessionDeps>,
    user: Arc<User>,
    key: Option<Uuid>,
    psu_ip: Option<IpAddr>,
    request_id: String,
) -> Answer {
    let connections = user.load(&deps).await?;
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
        let deps = &deps;
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
    let balances = join_all(reads).await;
    user.forget_expired_consents(&deps, &balances);
    Ok(balances)
}
