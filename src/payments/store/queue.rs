//! The outage queue's upkeep: claiming the oldest queued payment, sweeping those too old or
//! abandoned, leases that keep other instances off a payment, and the queue's figures.

use bankgate_actors::BankId;
use bankgate_actors::upstream::StoreError;
use uuid::Uuid;

use crate::payments::PaymentStatus;

use super::PaymentStore;

impl PaymentStore {
    /// Moves every payment of `bank` in `from` whose `column` is older than `older_than` to
    /// `to`; returns how many moved. Rows another instance holds are left for it.
    pub async fn sweep(
        &self,
        bank: BankId,
        from: PaymentStatus,
        to: PaymentStatus,
        older_than: std::time::Duration,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let column = match from {
            PaymentStatus::Queued => "queued_at",
            _ => "updated_at",
        };
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "WITH old AS (
                         SELECT id FROM payments
                         WHERE bank = $1 AND status = $2 AND {column} < now() - make_interval(secs => $3)
                         FOR UPDATE SKIP LOCKED
                     ), moved AS (
                         UPDATE payments p SET status = $4, updated_at = now(),
                             queued_at = CASE WHEN $4 = 'queued' THEN COALESCE(p.queued_at, now()) ELSE p.queued_at END
                         FROM old WHERE p.id = old.id RETURNING p.id
                     )
                     INSERT INTO payment_events (payment_id, from_status, to_status, reason)
                     SELECT id, $2, $4, $5 FROM moved RETURNING payment_id"
                ),
                &[
                    &bank.as_str(),
                    &from.as_str(),
                    &older_than.as_secs_f64(),
                    &to.as_str(),
                    &reason,
                ],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(rows.len() as u64)
    }

    /// Claims the oldest queued payment of `bank` younger than `max_age` by moving it to
    /// `initiating` (committed before anything is sent). A payment of a removed connection is
    /// never claimed: removing it cancels those queued then, and one queued after (by a sweep)
    /// waits until it expires.
    ///
    /// The claim forgets the provider of the previous attempt: a queued payment is held by no
    /// provider (every earlier attempt was refused, or looked up and found nowhere), and the
    /// attempt now starting may go to any of them. A gateway killed mid-send leaves no
    /// provider recorded, so the look-up counts each provider that cannot be asked as one
    /// that may hold it, rather than the previous attempt's provider as the only one.
    pub async fn claim_queued(
        &self,
        bank: BankId,
        max_age: std::time::Duration,
    ) -> Result<Option<Uuid>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "WITH next AS (
                     SELECT id FROM payments
                     WHERE bank = $1 AND status = 'queued' AND queued_at >= now() - make_interval(secs => $2)
                       AND EXISTS (SELECT 1 FROM connections c
                                   WHERE c.id = payments.debtor_connection AND c.removed_at IS NULL)
                     ORDER BY queued_at, id LIMIT 1
                     FOR UPDATE SKIP LOCKED
                 ), claimed AS (
                     UPDATE payments p SET status = 'initiating', attempts = p.attempts + 1, provider = NULL,
                         updated_at = now()
                     FROM next WHERE p.id = next.id RETURNING p.id
                 )
                 INSERT INTO payment_events (payment_id, from_status, to_status, reason)
                 SELECT id, 'queued', 'initiating', 'sent from the queue' FROM claimed RETURNING payment_id",
                &[&bank.as_str(), &max_age.as_secs_f64()],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Takes a lease on the payment of `bank` in `status` untouched for longest (and at least
    /// `older_than`): touching it keeps other instances off it for that long.
    pub async fn lease(
        &self,
        bank: BankId,
        status: PaymentStatus,
        older_than: std::time::Duration,
    ) -> Result<Option<Uuid>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE payments SET updated_at = now()
                 WHERE id = (
                     SELECT id FROM payments
                     WHERE bank = $1 AND status = $2 AND updated_at < now() - make_interval(secs => $3)
                     ORDER BY updated_at, id LIMIT 1
                     FOR UPDATE SKIP LOCKED
                 )
                 RETURNING id",
                &[&bank.as_str(), &status.as_str(), &older_than.as_secs_f64()],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(row.map(|r| r.get(0)))
    }

    /// How many payments of `bank` are queued and how long the oldest has waited (seconds).
    pub async fn queue_stats(&self, bank: BankId) -> Result<(i64, f64), StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(queued_at))::float8, 0)
                 FROM payments WHERE bank = $1 AND status = 'queued'",
                &[&bank.as_str()],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok((row.get(0), row.get(1)))
    }
}
