//! PostgreSQL behind the actors' `Store` port: the user's connections as the actors read them,
//! their last balances, and consents that expire. The consent flow's own records are the
//! consent service's (`consents/store.rs`).

use std::sync::Arc;

use bankgate_actors::ProviderId;
use bankgate_actors::upstream::{Balance, Connection, ProviderAccount, Store, StoreError};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::postgres::parse_column;

#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    pub fn new(pool: Pool) -> Arc<PgStore> {
        Arc::new(PgStore { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(StoreError::caused_by)
    }

    async fn load_connections(&self, user: String) -> Result<Vec<Connection>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.id, c.bank, c.iban, c.account_name, c.currency, con.expires_at,
                        ca.provider, ca.account_id, pc.external_id,
                        b.amount, b.currency, b.balance_type, b.provider, b.fetched_at
                 FROM connections c
                 JOIN consents con ON con.id = c.consent_id
                 LEFT JOIN connection_accounts ca ON ca.connection_id = c.id
                 LEFT JOIN provider_consents pc
                        ON pc.consent_id = c.consent_id AND pc.provider = ca.provider AND pc.status = 'active'
                 LEFT JOIN balances b ON b.connection_id = c.id
                 WHERE c.user_id = $1 AND c.removed_at IS NULL
                 ORDER BY c.created_at, c.id",
                &[&user],
            )
            .await
            .map_err(StoreError::caused_by)?;
        let mut connections: Vec<Connection> = Vec::new();
        for row in rows {
            let id: Uuid = row.get(0);
            if connections.last().is_none_or(|c| c.id != id) {
                let last_balance = match row.get::<_, Option<Decimal>>(9) {
                    Some(amount) => Some(Balance {
                        amount,
                        currency: row.get(10),
                        balance_type: row.get(11),
                        provider: parse_column(row.get::<_, &str>(12))?,
                        fetched_at: row.get(13),
                    }),
                    None => None,
                };
                connections.push(Connection {
                    id,
                    bank: parse_column(row.get::<_, &str>(1))?,
                    iban: row.get(2),
                    name: row.get(3),
                    currency: row.get(4),
                    consent_expires_at: row.get(5),
                    accounts: Vec::new(),
                    last_balance,
                });
            }
            let (Some(provider), Some(account_id), Some(consent_ref)) = (
                row.get::<_, Option<&str>>(6),
                row.get::<_, Option<String>>(7),
                row.get::<_, Option<String>>(8),
            ) else {
                continue;
            };
            let connection = connections.last_mut().expect("pushed above");
            connection.accounts.push(ProviderAccount {
                provider: parse_column(provider)?,
                account_id,
                consent_ref,
            });
        }
        Ok(connections)
    }
}

/// A batch of balances as one array per column, for one `UNNEST` insert.
#[derive(Default)]
struct BalanceColumns {
    connections: Vec<Uuid>,
    amounts: Vec<Decimal>,
    currencies: Vec<String>,
    types: Vec<String>,
    providers: Vec<&'static str>,
    fetched_at: Vec<DateTime<Utc>>,
}

impl BalanceColumns {
    fn push(&mut self, connection: Uuid, balance: Balance) {
        self.connections.push(connection);
        self.amounts.push(balance.amount);
        self.currencies.push(balance.currency);
        self.types.push(balance.balance_type);
        self.providers.push(balance.provider.as_str());
        self.fetched_at.push(balance.fetched_at);
    }
}

impl Store for PgStore {
    fn connections(&self, user: &str) -> BoxFuture<'static, Result<Vec<Connection>, StoreError>> {
        let this = self.clone();
        let user = user.to_owned();
        Box::pin(async move { this.load_connections(user).await })
    }

    fn save_balances(
        &self,
        balances: Vec<(Uuid, Balance)>,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let this = self.clone();
        Box::pin(async move {
            let mut columns = BalanceColumns::default();
            for (connection, balance) in balances {
                columns.push(connection, balance);
            }
            let client = this.client().await?;
            // The join skips connections removed meanwhile, which would fail the whole batch.
            client
                .execute(
                    "INSERT INTO balances (connection_id, amount, currency, balance_type, provider, fetched_at)
                     SELECT b.* FROM UNNEST($1::uuid[], $2::numeric[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
                         AS b (connection_id, amount, currency, balance_type, provider, fetched_at)
                     JOIN connections c ON c.id = b.connection_id
                     ON CONFLICT (connection_id) DO UPDATE SET amount = EXCLUDED.amount, currency = EXCLUDED.currency,
                        balance_type = EXCLUDED.balance_type, provider = EXCLUDED.provider, fetched_at = EXCLUDED.fetched_at
                     WHERE balances.fetched_at < EXCLUDED.fetched_at",
                    &[
                        &columns.connections,
                        &columns.amounts,
                        &columns.currencies,
                        &columns.types,
                        &columns.providers,
                        &columns.fetched_at,
                    ],
                )
                .await
                .map_err(StoreError::caused_by)?;
            Ok(())
        })
    }

    fn consent_expired(
        &self,
        connection: Uuid,
        provider: ProviderId,
    ) -> BoxFuture<'static, Result<(), StoreError>> {
        let this = self.clone();
        Box::pin(async move {
            let client = this.client().await?;
            client
                .execute(
                    "UPDATE provider_consents SET status = 'expired', updated_at = now()
                     WHERE provider = $2 AND consent_id = (SELECT consent_id FROM connections WHERE id = $1)",
                    &[&connection, &provider.as_str()],
                )
                .await
                .map_err(StoreError::caused_by)?;
            Ok(())
        })
    }
}
