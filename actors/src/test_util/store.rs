//! `MemoryStore`: the `Store` port in memory, answering as the PostgreSQL store does (a
//! connection lists only the provider accounts whose consent is still active, with its last
//! persisted balance; an older balance never replaces a newer one).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::upstream::{Balance, Connection, ProviderAccount, Store, StoreError};
use crate::{BankId, ProviderId};

/// The fake database. Cheap to clone; clones share their data.
#[derive(Clone, Default)]
pub struct MemoryStore {
    data: Arc<Mutex<Data>>,
}

#[derive(Default)]
struct Data {
    /// Each connection with its user, in the order they were made.
    connections: Vec<(String, Connection)>,
    balances: HashMap<Uuid, Balance>,
    expired: HashSet<(Uuid, ProviderId)>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Connects one of `user`'s accounts at `bank`, consented at each of `providers`, and
    /// returns the connection as the store will list it.
    pub fn connect(&self, user: &str, bank: BankId, providers: &[ProviderId]) -> Connection {
        let id = Uuid::new_v4();
        let connection = Connection {
            id,
            bank,
            iban: format!("NO{}", id.as_u128() % 10u128.pow(13)),
            name: Some(format!("{} account", bank.display_name())),
            currency: "NOK".to_owned(),
            consent_expires_at: None,
            accounts: providers
                .iter()
                .map(|&provider| ProviderAccount {
                    provider,
                    account_id: format!("{}-account-{id}", provider.as_str()),
                    consent_ref: format!("{}-consent-{id}", provider.as_str()),
                })
                .collect(),
            last_balance: None,
        };
        self.data()
            .connections
            .push((user.to_owned(), connection.clone()));
        connection
    }

    /// The balance persisted for `connection`, if any.
    pub fn saved_balance(&self, connection: Uuid) -> Option<Balance> {
        self.data().balances.get(&connection).cloned()
    }

    /// The (connection, provider) consents marked expired.
    pub fn expired_consents(&self) -> Vec<(Uuid, ProviderId)> {
        self.data().expired.iter().copied().collect()
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Store for MemoryStore {
    fn connections(&self, user: &str) -> BoxFuture<'static, Result<Vec<Connection>, StoreError>> {
        let data = self.data();
        let list = data
            .connections
            .iter()
            .filter(|(owner, _)| owner == user)
            .map(|(_, connection)| {
                let mut connection = connection.clone();
                connection
                    .accounts
                    .retain(|a| !data.expired.contains(&(connection.id, a.provider)));
                connection.last_balance = data.balances.get(&connection.id).cloned();
                connection
            })
            .collect();
        Box::pin(async move { Ok(list) })
    }

    fn save_balances(
        &self,
        balances: Vec<(Uuid, Balance)>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let mut data = self.data();
        for (connection, balance) in balances {
            if !data.connections.iter().any(|(_, c)| c.id == connection) {
                continue;
            }
            let newer = data
                .balances
                .get(&connection)
                .is_none_or(|stored| stored.fetched_at < balance.fetched_at);
            if newer {
                data.balances.insert(connection, balance);
            }
        }
        Box::pin(async { Ok(()) })
    }

    fn consent_expired(
        &self,
        connection: Uuid,
        provider: ProviderId,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        self.data().expired.insert((connection, provider));
        Box::pin(async { Ok(()) })
    }
}
