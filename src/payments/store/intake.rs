//! The idempotency keys and the intake's writes: a payment stored with its key and first
//! event in one transaction, the answer kept for replay, and old keys forgotten.

use bankgate_actors::BankId;
use bankgate_actors::upstream::StoreError;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::payments::PaymentStatus;
use crate::payments::request::PaymentRequest;
use crate::postgres::parse_column;

use super::{KeyRecord, PaymentStore};

impl PaymentStore {
    pub async fn key(&self, user: &str, key: &str) -> Result<Option<KeyRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT request_hash, payment_id, response_status, response_body, created_at
                 FROM idempotency_keys WHERE user_id = $1 AND key = $2",
                &[&user, &key],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(row.map(|row| KeyRecord {
            request_hash: row.get(0),
            payment_id: row.get(1),
            response: row
                .get::<_, Option<i32>>(2)
                .zip(row.get::<_, Option<serde_json::Value>>(3))
                .map(|(status, body)| (status as u16, body)),
            created_at: row.get(4),
        }))
    }

    /// Writes the payment, its idempotency key and its first event in one transaction.
    /// Returns `false` (and writes nothing) when the key exists already.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert(
        &self,
        id: Uuid,
        user: &str,
        key: &str,
        request_hash: &[u8],
        request: &PaymentRequest,
        psu_ip: &str,
        status: PaymentStatus,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::caused_by)?;
        let keyed = tx
            .execute(
                "INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&user, &key, &request_hash],
            )
            .await
            .map_err(StoreError::caused_by)?;
        if keyed == 0 {
            return Ok(false);
        }
        let creditor = serde_json::to_value(&request.creditor).map_err(StoreError::caused_by)?;
        // The reference goes out as endToEndIdentification: at most 35 characters.
        let reference = id.simple().to_string();
        // The SCA return's state: unguessable (122 random bits), sent only with the SCA link.
        let callback_state = Uuid::new_v4().simple().to_string();
        tx.execute(
            "INSERT INTO payments (id, user_id, bank, debtor_connection, amount, currency, creditor,
                 remittance_info, kind, status, request_reference, psu_ip, queued_at,
                 callback_state, redirect_url)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
                 CASE WHEN $10 = 'queued' THEN now() END, $13, $14)",
            &[
                &id,
                &user,
                &request.bank.as_str(),
                &request.debtor_account_id,
                &request.amount,
                &request.currency,
                &creditor,
                &request.remittance_info,
                &request.kind.as_str(),
                &status.as_str(),
                &reference,
                &psu_ip,
                &callback_state,
                &request.redirect_url,
            ],
        )
        .await
        .map_err(StoreError::caused_by)?;
        tx.execute(
            "INSERT INTO payment_events (payment_id, from_status, to_status, reason)
             VALUES ($1, NULL, $2, $3)",
            &[&id, &status.as_str(), &reason],
        )
        .await
        .map_err(StoreError::caused_by)?;
        tx.execute(
            "UPDATE idempotency_keys SET payment_id = $3 WHERE user_id = $1 AND key = $2",
            &[&user, &key, &id],
        )
        .await
        .map_err(StoreError::caused_by)?;
        match tx.commit().await {
            Ok(()) => Ok(true),
            // Another request with the same key committed first.
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(false),
            Err(e) => Err(StoreError::caused_by(e)),
        }
    }

    /// The bank of the user's connection `id`, if the user has it.
    pub async fn connection_bank(
        &self,
        user: &str,
        id: Uuid,
    ) -> Result<Option<BankId>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT bank FROM connections WHERE id = $1 AND user_id = $2 AND removed_at IS NULL",
                &[&id, &user],
            )
            .await
            .map_err(StoreError::caused_by)?;
        row.map(|r| parse_column(r.get::<_, &str>(0))).transpose()
    }

    /// Stores the answer given for a key, to be replayed.
    pub async fn save_response(
        &self,
        user: &str,
        key: &str,
        status: u16,
        body: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE idempotency_keys SET response_status = $3, response_body = $4, completed_at = now()
                 WHERE user_id = $1 AND key = $2",
                &[&user, &key, &i32::from(status), body],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(())
    }

    /// Forgets idempotency keys older than `ttl`, answered or not: one whose request died
    /// unanswered would otherwise stay for ever (its payment, if any, stays).
    pub async fn purge_keys(&self, ttl: std::time::Duration) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM idempotency_keys
                 WHERE created_at < now() - make_interval(secs => $1)",
                &[&ttl.as_secs_f64()],
            )
            .await
            .map_err(StoreError::caused_by)
    }
}
