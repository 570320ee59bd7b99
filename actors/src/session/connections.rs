//! The user's connections as the user's sessions know them: loaded from PostgreSQL once for
//! all of them (a reconnect storm of many sessions makes one query per user, not one per
//! session), reloaded after the user connects or removes a bank, and kept from before the
//! change while PostgreSQL cannot give the new list. An account whose consent a provider
//! rejected is dropped from the list and recorded.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::{debug, warn};
use uuid::Uuid;

use super::registry::SessionDeps;
use super::{AccountBalance, SessionError};
use crate::bank::BalanceAnswer;
use crate::upstream::Connection;

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

/// What every session of one user shares.
pub(super) struct User {
    pub(super) id: Arc<str>,
    lists: RwLock<Lists>,
    /// Held while loading the connections.
    loading: tokio::sync::Mutex<()>,
}

impl User {
    pub(super) fn new(id: &str) -> User {
        User {
            id: Arc::from(id),
            lists: RwLock::default(),
            loading: tokio::sync::Mutex::new(()),
        }
    }

    fn lists(&self) -> RwLockReadGuard<'_, Lists> {
        self.lists
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lists_mut(&self) -> RwLockWriteGuard<'_, Lists> {
        self.lists
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `f` to the loaded list under its lock; `None` while none is loaded.
    pub(super) fn with_current<T>(&self, f: impl FnOnce(&[Arc<Connection>]) -> T) -> Option<T> {
        self.lists().current.as_deref().map(f)
    }

    /// The user's connections: the loaded list, or loaded from PostgreSQL by one of the
    /// user's sessions at a time (the others find it loaded when their turn comes). While
    /// PostgreSQL is away, the previous list answers.
    pub(super) async fn load(
        &self,
        deps: &SessionDeps,
    ) -> Result<Vec<Arc<Connection>>, SessionError> {
        if let Some(current) = self.lists().current.clone() {
            return Ok(current);
        }
        let _loading = self.loading.lock().await;
        let generation = {
            let lists = self.lists();
            if let Some(current) = &lists.current {
                return Ok(current.clone());
            }
            lists.generation
        };
        match deps.store.connections(&self.id).await {
            Ok(list) => {
                let list: Vec<_> = list.into_iter().map(Arc::new).collect();
                let mut lists = self.lists_mut();
                if lists.generation == generation {
                    lists.current = Some(list.clone());
                    lists.previous = None;
                }
                Ok(list)
            }
            Err(error) => match self.lists().previous.clone() {
                Some(previous) => {
                    debug!(error = %error, "connections not reloaded; serving the previous list");
                    Ok(previous)
                }
                None => Err(SessionError::Store(error)),
            },
        }
    }

    /// The user's connections changed (`removed`, when one was removed): the next read
    /// reloads them, keeping the old list for a database outage.
    pub(super) fn changed(&self, removed: Option<Uuid>) {
        let mut lists = self.lists_mut();
        lists.generation += 1;
        if let Some(known) = lists.current.take() {
            lists.previous = Some(known);
        }
        if let (Some(previous), Some(removed)) = (lists.previous.as_mut(), removed) {
            previous.retain(|c| c.id != removed);
        }
    }

    /// Drops provider accounts whose consent a provider rejected, and records it.
    pub(super) fn forget_expired_consents(&self, deps: &SessionDeps, balances: &[AccountBalance]) {
        let mut lists = self.lists_mut();
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
}
