//! The consent flow's records in PostgreSQL: a consent and the provider consents started for
//! it, the connections it leaves behind when it completes, and the user's list of them.

use std::collections::HashMap;

use bankgate_actors::upstream::{RemoteAccount, StoreError};
use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

use crate::postgres::parse_column;

/// A consent as the client API tracks it.
#[derive(Debug, Clone)]
pub struct ConsentRecord {
    pub id: Uuid,
    pub user_id: String,
    pub bank: BankId,
    pub status: String,
    pub redirect_url: String,
    pub providers: Vec<ProviderConsent>,
}

#[derive(Debug, Clone)]
pub struct ProviderConsent {
    pub provider: ProviderId,
    pub external_id: String,
    pub sca_redirect: Option<String>,
    pub status: String,
    /// The state its SCA callback must carry; `None` once the step has concluded.
    pub callback_state: Option<String>,
}

/// A connection as `GET /v1/connections` lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionView {
    pub id: Uuid,
    pub bank: BankId,
    pub iban: String,
    pub name: Option<String>,
    pub currency: String,
    /// The providers holding a valid consent for the account.
    pub providers: Vec<ProviderId>,
    pub consent_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One account as the providers listed it: its details and its id at each provider.
type AccountAcrossProviders<'a> = (&'a RemoteAccount, Vec<(ProviderId, &'a str)>);

pub struct ConsentStore {
    pool: Pool,
}

impl ConsentStore {
    pub fn new(pool: Pool) -> ConsentStore {
        ConsentStore { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(StoreError::caused_by)
    }

    /// How many consents `user` started within the last hour that still wait for SCA.
    pub async fn pending_consents(&self, user: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM consents
                 WHERE user_id = $1 AND status = 'pending' AND created_at > now() - interval '1 hour'",
                &[&user],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// Records a new consent and the provider consents started for it.
    pub async fn create_consent(&self, consent: &ConsentRecord) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::caused_by)?;
        tx.execute(
            "INSERT INTO consents (id, user_id, bank, status, redirect_url) VALUES ($1, $2, $3, 'pending', $4)",
            &[&consent.id, &consent.user_id, &consent.bank.as_str(), &consent.redirect_url],
        )
        .await
        .map_err(StoreError::caused_by)?;
        for pc in &consent.providers {
            tx.execute(
                "INSERT INTO provider_consents (consent_id, provider, external_id, session_id, sca_redirect, status, callback_state)
                 VALUES ($1, $2, $3, $4, $5, 'pending', $6)",
                &[
                    &consent.id,
                    &pc.provider.as_str(),
                    &pc.external_id,
                    &(pc.provider == ProviderId::Neonomics).then_some(&pc.external_id),
                    &pc.sca_redirect,
                    &pc.callback_state,
                ],
            )
            .await
            .map_err(StoreError::caused_by)?;
        }
        tx.commit().await.map_err(StoreError::caused_by)
    }

    pub async fn consent(&self, id: Uuid) -> Result<Option<ConsentRecord>, StoreError> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                "SELECT user_id, bank, status, redirect_url FROM consents WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(StoreError::caused_by)?
        else {
            return Ok(None);
        };
        let rows = client
            .query(
                "SELECT provider, external_id, sca_redirect, status, callback_state
                 FROM provider_consents WHERE consent_id = $1",
                &[&id],
            )
            .await
            .map_err(StoreError::caused_by)?;
        let mut providers = Vec::new();
        for r in rows {
            providers.push(ProviderConsent {
                provider: parse_column(r.get::<_, &str>(0))?,
                external_id: r.get(1),
                sca_redirect: r.get(2),
                status: r.get(3),
                callback_state: r.get(4),
            });
        }
        Ok(Some(ConsentRecord {
            id,
            user_id: row.get(0),
            bank: parse_column(row.get::<_, &str>(1))?,
            status: row.get(2),
            redirect_url: row.get(3),
            providers,
        }))
    }

    pub async fn set_provider_consent(
        &self,
        consent: Uuid,
        provider: ProviderId,
        status: &str,
        valid_until: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE provider_consents SET status = $3, valid_until = $4, updated_at = now(),
                     callback_state = CASE WHEN $3 = 'pending' THEN callback_state END
                 WHERE consent_id = $1 AND provider = $2",
                &[&consent, &provider.as_str(), &status, &valid_until],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(())
    }

    /// Completes a consent: stores the accounts each provider listed as the user's
    /// connections (matched across providers by IBAN) and marks the consent active, or
    /// rejected when no provider listed any.
    pub async fn complete_consent(
        &self,
        consent: &ConsentRecord,
        accounts: &[(ProviderId, Vec<RemoteAccount>)],
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<String, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::caused_by)?;
        let mut by_iban: HashMap<&str, AccountAcrossProviders> = HashMap::new();
        for (provider, list) in accounts {
            for account in list {
                let entry = by_iban
                    .entry(account.iban.as_str())
                    .or_insert((account, Vec::new()));
                entry.1.push((*provider, account.id.as_str()));
            }
        }
        for (iban, (account, ids)) in &by_iban {
            // Whichever provider names the holder.
            let owner = accounts
                .iter()
                .flat_map(|(_, list)| list)
                .filter(|a| a.iban == *iban)
                .find_map(|a| a.owner_name.as_ref());
            let row = tx
                .query_one(
                    "INSERT INTO connections (id, user_id, bank, consent_id, iban, bban, account_name, currency, owner_name)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (user_id, bank, iban)
                     DO UPDATE SET consent_id = EXCLUDED.consent_id, account_name = EXCLUDED.account_name,
                         owner_name = COALESCE(EXCLUDED.owner_name, connections.owner_name),
                         removed_at = NULL
                     RETURNING id",
                    &[
                        &Uuid::new_v4(),
                        &consent.user_id,
                        &consent.bank.as_str(),
                        &consent.id,
                        iban,
                        &account.bban,
                        &account.name,
                        &account.currency,
                        &owner,
                    ],
                )
                .await
                .map_err(StoreError::caused_by)?;
            let connection: Uuid = row.get(0);
            tx.execute(
                "DELETE FROM connection_accounts WHERE connection_id = $1",
                &[&connection],
            )
            .await
            .map_err(StoreError::caused_by)?;
            for (provider, id) in ids {
                tx.execute(
                    "INSERT INTO connection_accounts (connection_id, provider, account_id) VALUES ($1, $2, $3)",
                    &[&connection, &provider.as_str(), id],
                )
                .await
                .map_err(StoreError::caused_by)?;
            }
        }
        let status = if by_iban.is_empty() {
            "rejected"
        } else {
            "active"
        };
        tx.execute(
            "UPDATE consents SET status = $2, completed_at = now(), expires_at = $3 WHERE id = $1",
            &[&consent.id, &status, &expires_at],
        )
        .await
        .map_err(StoreError::caused_by)?;
        tx.commit().await.map_err(StoreError::caused_by)?;
        Ok(status.to_owned())
    }

    pub async fn list_connections(&self, user: &str) -> Result<Vec<ConnectionView>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.id, c.bank, c.iban, c.account_name, c.currency, con.expires_at, c.created_at,
                        COALESCE(array_agg(ca.provider ORDER BY ca.provider) FILTER (WHERE ca.provider IS NOT NULL), '{}')
                 FROM connections c
                 JOIN consents con ON con.id = c.consent_id
                 LEFT JOIN connection_accounts ca ON ca.connection_id = c.id
                        AND EXISTS (SELECT 1 FROM provider_consents pc
                                    WHERE pc.consent_id = c.consent_id AND pc.provider = ca.provider
                                      AND pc.status = 'active')
                 WHERE c.user_id = $1 AND c.removed_at IS NULL
                 GROUP BY c.id, con.expires_at
                 ORDER BY c.created_at, c.id",
                &[&user],
            )
            .await
            .map_err(StoreError::caused_by)?;
        rows.iter()
            .map(|r| {
                let providers: Vec<String> = r.get(7);
                Ok(ConnectionView {
                    id: r.get(0),
                    bank: parse_column(r.get::<_, &str>(1))?,
                    iban: r.get(2),
                    name: r.get(3),
                    currency: r.get(4),
                    consent_expires_at: r.get(5),
                    created_at: r.get(6),
                    providers: providers
                        .iter()
                        .map(|p| parse_column(p))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }

    /// Removes one of the user's connections; returns whether it existed. The row stays,
    /// marked removed, because payments refer to it. Its payments still waiting in the queue
    /// are cancelled in the same transaction, each with an event in its history: a queued
    /// payment is sent by the drainer long after the user asked, and from a removed
    /// connection the user no longer expects it. (A payment the drainer has already claimed
    /// is on its way and is left to finish.)
    pub async fn delete_connection(&self, user: &str, id: Uuid) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::caused_by)?;
        let deleted = tx
            .execute(
                "UPDATE connections SET removed_at = now()
                 WHERE id = $1 AND user_id = $2 AND removed_at IS NULL",
                &[&id, &user],
            )
            .await
            .map_err(StoreError::caused_by)?;
        if deleted == 1 {
            tx.execute(
                "WITH cancelled AS (
                     UPDATE payments SET status = 'cancelled', updated_at = now(),
                         last_error = 'the connection was removed before it was sent'
                     WHERE debtor_connection = $1 AND status = 'queued'
                     RETURNING id
                 )
                 INSERT INTO payment_events (payment_id, from_status, to_status, reason)
                 SELECT id, 'queued', 'cancelled', 'the connection was removed' FROM cancelled",
                &[&id],
            )
            .await
            .map_err(StoreError::caused_by)?;
        }
        tx.commit().await.map_err(StoreError::caused_by)?;
        Ok(deleted == 1)
    }
}
