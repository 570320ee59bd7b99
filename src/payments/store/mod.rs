//! The payments' tables: payments, their events, idempotency keys and webhook deliveries.
//!
//! Every status change goes through `transition` (one payment) or `sweep` (many): a single
//! statement that locks the rows still in the expected status, moves them and appends the
//! events. Work that several gateway instances share is claimed with `FOR UPDATE SKIP LOCKED`.
//!
//! Here: the records, reading payments and their history, what sending one needs, and
//! webhook deliveries; the intake's writes and idempotency keys are `intake.rs`, the queue's
//! upkeep `queue.rs`.

mod intake;
mod queue;

use std::collections::HashMap;

use bankgate_actors::upstream::{ProviderAccount, StoreError};
use bankgate_actors::{BankId, ProviderId, WebhookSource};
use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use rust_decimal::Decimal;
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::postgres::parse_column;

use super::request::Creditor;
use super::webhook::PaymentEventBody;
use super::{FailureReason, PaymentStatus};

/// A payment row.
#[derive(Debug, Clone)]
pub struct PaymentRecord {
    pub id: Uuid,
    pub user_id: String,
    pub bank: BankId,
    pub debtor_connection: Uuid,
    pub amount: Decimal,
    pub currency: String,
    pub creditor: Creditor,
    pub remittance_info: Option<String>,
    pub kind: String,
    pub status: PaymentStatus,
    pub reference: String,
    pub provider: Option<ProviderId>,
    pub provider_payment_id: Option<String>,
    pub sca_redirect: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    /// Why a `failed` payment failed.
    pub failure: Option<FailureReason>,
    pub psu_ip: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub queued_at: Option<DateTime<Utc>>,
    /// The SCA return's single-use state; `None` once used.
    pub callback_state: Option<String>,
    /// Where the user's browser goes back to the app after SCA, if the app said.
    pub redirect_url: Option<String>,
}

const PAYMENT_COLUMNS: &str = "id, user_id, bank, debtor_connection, amount, currency, creditor,
    remittance_info, kind, status, request_reference, provider, provider_payment_id, sca_redirect,
    attempts, last_error, psu_ip, created_at, updated_at, queued_at, failure, callback_state,
    redirect_url";

impl PaymentRecord {
    fn from_row(row: &Row) -> Result<PaymentRecord, StoreError> {
        let creditor: serde_json::Value = row.get(6);
        Ok(PaymentRecord {
            id: row.get(0),
            user_id: row.get(1),
            bank: parse_column(row.get::<_, &str>(2))?,
            debtor_connection: row.get(3),
            amount: row.get(4),
            currency: row.get(5),
            creditor: serde_json::from_value(creditor).map_err(StoreError::caused_by)?,
            remittance_info: row.get(7),
            kind: row.get(8),
            status: parse_column(row.get::<_, &str>(9))?,
            reference: row.get(10),
            provider: row
                .get::<_, Option<&str>>(11)
                .map(parse_column)
                .transpose()?,
            provider_payment_id: row.get(12),
            sca_redirect: row.get(13),
            attempts: row.get(14),
            last_error: row.get(15),
            psu_ip: row.get(16),
            created_at: row.get(17),
            updated_at: row.get(18),
            queued_at: row.get(19),
            failure: row
                .get::<_, Option<&str>>(20)
                .map(parse_column)
                .transpose()?,
            callback_state: row.get(21),
            redirect_url: row.get(22),
        })
    }
}

/// One entry of a payment's status history.
#[derive(Debug, Clone, Serialize)]
pub struct PaymentEvent {
    pub from: Option<String>,
    pub to: String,
    pub reason: String,
    pub provider: Option<String>,
    pub at: DateTime<Utc>,
}

/// What a stored idempotency key says.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub request_hash: Vec<u8>,
    pub payment_id: Option<Uuid>,
    /// The answer given, once the first request finished.
    pub response: Option<(u16, serde_json::Value)>,
    pub created_at: DateTime<Utc>,
}

/// What changes with a transition besides the status.
#[derive(Debug, Clone, Default)]
pub struct Change<'a> {
    pub reason: &'a str,
    pub provider: Option<ProviderId>,
    pub provider_payment_id: Option<&'a str>,
    pub sca_redirect: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Set with a move to `failed`.
    pub failure: Option<FailureReason>,
}

/// A payment ready to send: the row, the debtor's IBAN and its accounts at the providers.
#[derive(Debug, Clone)]
pub struct Sendable {
    pub payment: PaymentRecord,
    pub debtor_iban: String,
    /// The account holder's name, as a provider listed it.
    pub debtor_name: Option<String>,
    /// The accounts to send it from: those with an active consent.
    pub accounts: Vec<ProviderAccount>,
    /// The accounts to look it up at: every provider's, whatever its consent's state.
    pub known: Vec<ProviderAccount>,
}

#[derive(Clone)]
pub struct PaymentStore {
    pool: Pool,
}

impl PaymentStore {
    pub fn new(pool: Pool) -> PaymentStore {
        PaymentStore { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(StoreError::caused_by)
    }

    /// Moves one payment from one of `from` to `to`; returns it as moved, or `None` when it
    /// was not in `from`.
    pub async fn transition(
        &self,
        id: Uuid,
        from: &[PaymentStatus],
        to: PaymentStatus,
        change: Change<'_>,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let client = self.client().await?;
        transition(&client, id, from, to, change).await
    }

    /// Records the link the user follows to approve a payment waiting for SCA (it comes in
    /// a call after the initiation, at Neonomics); returns the payment, or `None` when it
    /// is no longer waiting.
    pub async fn set_sca_redirect(
        &self,
        id: Uuid,
        sca_redirect: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE payments SET sca_redirect = $2, updated_at = now()
                     WHERE id = $1 AND status = 'pending_sca' RETURNING {PAYMENT_COLUMNS}"
                ),
                &[&id, &sca_redirect],
            )
            .await
            .map_err(StoreError::caused_by)?;
        row.as_ref().map(PaymentRecord::from_row).transpose()
    }

    /// Uses up the SCA return's state of payment `id`, if `state` is it: returns whether it
    /// was (each state answers one return, whichever comes first).
    pub async fn use_callback_state(&self, id: Uuid, state: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let used = client
            .execute(
                "UPDATE payments SET callback_state = NULL WHERE id = $1 AND callback_state = $2",
                &[&id, &state],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(used == 1)
    }

    pub async fn payment(&self, id: Uuid) -> Result<Option<PaymentRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(StoreError::caused_by)?;
        row.as_ref().map(PaymentRecord::from_row).transpose()
    }

    /// The user's payments, newest first, optionally in one status.
    pub async fn list(
        &self,
        user: &str,
        status: Option<PaymentStatus>,
        limit: i64,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments
                     WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
                     ORDER BY created_at DESC, id LIMIT $3"
                ),
                &[&user, &status.map(PaymentStatus::as_str), &limit],
            )
            .await
            .map_err(StoreError::caused_by)?;
        rows.iter().map(PaymentRecord::from_row).collect()
    }

    /// The status history of each payment, oldest first.
    pub async fn events(
        &self,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, Vec<PaymentEvent>>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT payment_id, from_status, to_status, reason, provider, at
                 FROM payment_events WHERE payment_id = ANY($1) ORDER BY id",
                &[&ids],
            )
            .await
            .map_err(StoreError::caused_by)?;
        let mut events: HashMap<Uuid, Vec<PaymentEvent>> = HashMap::new();
        for row in rows {
            events.entry(row.get(0)).or_default().push(PaymentEvent {
                from: row.get(1),
                to: row.get(2),
                reason: row.get(3),
                provider: row.get(4),
                at: row.get(5),
            });
        }
        Ok(events)
    }

    /// The payment with what sending it needs: the debtor account's IBAN and its accounts at
    /// each provider with an active consent; and, for looking it up, its accounts at every
    /// provider with a consent in any state (one that expired since the payment was sent to
    /// it still names where to ask).
    pub async fn sendable(&self, id: Uuid) -> Result<Option<Sendable>, StoreError> {
        let Some(payment) = self.payment(id).await? else {
            return Ok(None);
        };
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.iban, ca.provider, ca.account_id, pc.external_id, pc.status = 'active',
                        c.owner_name
                 FROM connections c
                 LEFT JOIN connection_accounts ca ON ca.connection_id = c.id
                 LEFT JOIN provider_consents pc
                        ON pc.consent_id = c.consent_id AND pc.provider = ca.provider
                 WHERE c.id = $1",
                &[&payment.debtor_connection],
            )
            .await
            .map_err(StoreError::caused_by)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let debtor_iban: String = first.get(0);
        let debtor_name: Option<String> = first.get(5);
        let (mut accounts, mut known) = (Vec::new(), Vec::new());
        for row in &rows {
            if let (Some(provider), Some(account_id), Some(consent_ref)) = (
                row.get::<_, Option<&str>>(1),
                row.get::<_, Option<String>>(2),
                row.get::<_, Option<String>>(3),
            ) {
                let account = ProviderAccount {
                    provider: parse_column(provider)?,
                    account_id,
                    consent_ref,
                };
                if row.get::<_, Option<bool>>(4) == Some(true) {
                    accounts.push(account.clone());
                }
                known.push(account);
            }
        }
        Ok(Some(Sendable {
            payment,
            debtor_iban,
            debtor_name,
            accounts,
            known,
        }))
    }

    /// Forgets the event ids of webhook deliveries received more than `window` ago: a
    /// replay of one would be refused by its timestamp by now.
    pub async fn purge_webhook_events(
        &self,
        window: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM webhook_events WHERE received_at < now() - make_interval(secs => $1)",
                &[&window.as_secs_f64()],
            )
            .await
            .map_err(StoreError::caused_by)
    }

    /// Records a webhook delivery from `source` and applies its status to the payment it
    /// names, in one transaction. Returns `None` for a delivery seen before, else the
    /// payment moved (if the event named one the source may hold, in a status it could
    /// leave): at the event's bank, recorded as sent through the source's provider, by that
    /// provider's payment id or by bankgate's reference. A payment not recorded as sent
    /// there (queued unsent, or its first send's answer not in yet) is not the source's to
    /// settle: a look-up at every provider settles it.
    pub async fn apply_webhook(
        &self,
        source: WebhookSource,
        event: &PaymentEventBody,
        to: PaymentStatus,
        reason: &str,
    ) -> Result<Option<Option<(Uuid, BankId)>>, StoreError> {
        let provider = source.provider;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::caused_by)?;
        let fresh = tx
            .execute(
                "INSERT INTO webhook_events (source, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&source.to_string(), &event.event_id],
            )
            .await
            .map_err(StoreError::caused_by)?;
        if fresh == 0 {
            return Ok(None);
        }
        let row = tx
            .query_opt(
                "SELECT id FROM payments
                 WHERE bank = $1 AND provider = $2
                     AND (provider_payment_id = $3 OR request_reference = $4)
                 LIMIT 1",
                &[
                    &event.bank.as_str(),
                    &provider.as_str(),
                    &event.payment_id,
                    &event.end_to_end_id,
                ],
            )
            .await
            .map_err(StoreError::caused_by)?;
        let mut moved = None;
        if let Some(row) = row {
            let id: Uuid = row.get(0);
            let change = Change {
                reason,
                provider: Some(provider),
                provider_payment_id: Some(&event.payment_id),
                ..Change::default()
            };
            // `queued`: a look-up found it nowhere and queued it again, and the provider
            // that had it after all tells now; applied, it is not sent a second time.
            let from = [
                PaymentStatus::Initiating,
                PaymentStatus::Unknown,
                PaymentStatus::PendingSca,
                PaymentStatus::Queued,
            ];
            if transition(&tx, id, &from, to, change).await?.is_some() {
                moved = Some((id, event.bank));
            }
        }
        tx.commit().await.map_err(StoreError::caused_by)?;
        Ok(Some(moved))
    }
}

/// Moves one payment and records the move in its history, in one statement; returns the
/// payment as this move left it (another process may move it on at once: answers built from
/// the returned record say what this move did).
async fn transition(
    client: &impl GenericClient,
    id: Uuid,
    from: &[PaymentStatus],
    to: PaymentStatus,
    change: Change<'_>,
) -> Result<Option<PaymentRecord>, StoreError> {
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let provider = change.provider.map(ProviderId::as_str);
    let moved = client
        .query_opt(
            &format!(
                "WITH old AS (
                     SELECT id AS old_id, status AS old_status FROM payments
                     WHERE id = $1 AND status = ANY($2) FOR UPDATE
                 ), moved AS (
                     UPDATE payments p SET status = $3, updated_at = now(),
                         provider = COALESCE($5, p.provider),
                         provider_payment_id = COALESCE($6, p.provider_payment_id),
                         sca_redirect = COALESCE($7, p.sca_redirect),
                         last_error = COALESCE($8, p.last_error),
                         failure = COALESCE($9, p.failure),
                         attempts = p.attempts + CASE WHEN $3 = 'initiating' THEN 1 ELSE 0 END,
                         queued_at = CASE WHEN $3 = 'queued' THEN COALESCE(p.queued_at, now()) ELSE p.queued_at END
                     FROM old WHERE p.id = old.old_id RETURNING {PAYMENT_COLUMNS}
                 ), logged AS (
                     INSERT INTO payment_events (payment_id, from_status, to_status, reason, provider)
                     SELECT old_id, old_status, $3, $4, $5 FROM old JOIN moved ON moved.id = old.old_id
                 )
                 SELECT {PAYMENT_COLUMNS} FROM moved"
            ),
            &[
                &id,
                &from,
                &to.as_str(),
                &change.reason,
                &provider,
                &change.provider_payment_id,
                &change.sca_redirect,
                &change.error,
                &change.failure.map(FailureReason::as_str),
            ],
        )
        .await
        .map_err(StoreError::caused_by)?;
    moved.as_ref().map(PaymentRecord::from_row).transpose()
}
