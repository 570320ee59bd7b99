//! The operators' settings in PostgreSQL: bank modes and provider breaker overrides, each
//! change written with its audit entry and announced on the `bankgate_ops` channel in one
//! transaction, so every gateway instance sharing the database applies it (LISTEN/NOTIFY).

use bankgate_actors::modes::{BalancesMode, BreakerPin, PaymentsMode};
use bankgate_actors::upstream::StoreError;
use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::status::AuditEntry;
use crate::postgres::parse_column;

/// The channel every change is announced on.
pub const CHANNEL: &str = "bankgate_ops";

/// `auto` for no pin, else the mode's name.
pub fn mode_text<T: Serialize>(mode: Option<T>) -> String {
    mode.and_then(|m| serde_json::to_value(m).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "auto".to_owned())
}

/// The pin a mode's name stands for; `auto` (or anything unknown) is none.
pub fn parse_mode<T: DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::from_value(Value::String(text.to_owned())).ok()
}

/// A bank's row: the operator's pins.
#[derive(Debug, Clone, Serialize)]
pub struct BankPins {
    pub bank: BankId,
    pub balances: Option<BalancesMode>,
    pub payments: Option<PaymentsMode>,
    pub set_by: String,
    pub reason: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// A bank's modes and their expiry, as pinned.
#[derive(Debug, Clone, Copy, Default)]
pub struct ModePins {
    pub balances: Option<BalancesMode>,
    pub payments: Option<PaymentsMode>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// An operator's change to a bank's pins: `None` keeps the stored value, `Some(None)` is
/// `auto` (or no expiry).
#[derive(Debug, Clone, Copy, Default)]
pub struct ModeChange {
    pub balances: Option<Option<BalancesMode>>,
    pub payments: Option<Option<PaymentsMode>>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreakerOverride {
    pub provider: ProviderId,
    pub pin: Option<BreakerPin>,
    pub set_by: String,
    pub reason: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct OpsStore {
    pool: Pool,
}

impl OpsStore {
    pub fn new(pool: Pool) -> OpsStore {
        OpsStore { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(StoreError::caused_by)
    }

    /// Applies `change` to the bank's stored pins and returns them as they now stand. What
    /// the change leaves out keeps its stored value, read under `FOR UPDATE` in the same
    /// transaction, so that a timed pin never loses its expiry and two instances cannot
    /// overwrite each other's newer change. A row past its expiry counts as no pins.
    pub async fn set_bank_mode(
        &self,
        bank: BankId,
        change: ModeChange,
        actor: &str,
        reason: &str,
    ) -> Result<ModePins, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::caused_by)?;
        let stored = tx
            .query_opt(
                "SELECT balances_mode, payments_mode, expires_at FROM bank_modes
                 WHERE bank = $1 FOR UPDATE",
                &[&bank.as_str()],
            )
            .await
            .map_err(StoreError::caused_by)?;
        let before = stored
            .as_ref()
            .map(|r| json!({"balances": r.get::<_, String>(0), "payments": r.get::<_, String>(1)}))
            .unwrap_or_else(|| json!({"balances": "auto", "payments": "auto"}));
        let current = stored
            .filter(|r| {
                r.get::<_, Option<DateTime<Utc>>>(2)
                    .is_none_or(|at| at > Utc::now())
            })
            .map(|r| ModePins {
                balances: parse_mode(r.get::<_, &str>(0)),
                payments: parse_mode(r.get::<_, &str>(1)),
                expires_at: r.get(2),
            })
            .unwrap_or_default();
        let pins = ModePins {
            balances: change.balances.unwrap_or(current.balances),
            payments: change.payments.unwrap_or(current.payments),
            expires_at: change.expires_at.unwrap_or(current.expires_at),
        };
        let ModePins {
            balances,
            payments,
            expires_at,
        } = pins;
        let (balances, payments) = (mode_text(balances), mode_text(payments));
        tx.execute(
            "INSERT INTO bank_modes (bank, balances_mode, payments_mode, set_by, reason, expires_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, now())
             ON CONFLICT (bank) DO UPDATE SET balances_mode = EXCLUDED.balances_mode,
                 payments_mode = EXCLUDED.payments_mode, set_by = EXCLUDED.set_by,
                 reason = EXCLUDED.reason, expires_at = EXCLUDED.expires_at, updated_at = now()",
            &[&bank.as_str(), &balances, &payments, &actor, &reason, &expires_at],
        )
        .await
        .map_err(StoreError::caused_by)?;
        let after = json!({"balances": balances, "payments": payments, "expires_at": expires_at});
        audit(
            &tx,
            actor,
            "bank_mode",
            bank.as_str(),
            Some(&before),
            &after,
            reason,
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &"bank_mode"])
            .await
            .map_err(StoreError::caused_by)?;
        tx.commit().await.map_err(StoreError::caused_by)?;
        Ok(pins)
    }

    pub async fn set_breaker(
        &self,
        provider: ProviderId,
        pin: Option<BreakerPin>,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(StoreError::caused_by)?;
        let before = tx
            .query_opt(
                "SELECT state FROM provider_breakers WHERE provider = $1 FOR UPDATE",
                &[&provider.as_str()],
            )
            .await
            .map_err(StoreError::caused_by)?
            .map(|r| json!({"state": r.get::<_, String>(0)}))
            .unwrap_or_else(|| json!({"state": "auto"}));
        let state = mode_text(pin);
        tx.execute(
            "INSERT INTO provider_breakers (provider, state, set_by, reason, updated_at)
             VALUES ($1, $2, $3, $4, now())
             ON CONFLICT (provider) DO UPDATE SET state = EXCLUDED.state, set_by = EXCLUDED.set_by,
                 reason = EXCLUDED.reason, updated_at = now()",
            &[&provider.as_str(), &state, &actor, &reason],
        )
        .await
        .map_err(StoreError::caused_by)?;
        let after = json!({ "state": state });
        audit(
            &tx,
            actor,
            "breaker",
            provider.as_str(),
            Some(&before),
            &after,
            reason,
        )
        .await?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &"breaker"])
            .await
            .map_err(StoreError::caused_by)?;
        tx.commit().await.map_err(StoreError::caused_by)
    }

    pub async fn bank_pins(&self) -> Result<Vec<BankPins>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT bank, balances_mode, payments_mode, set_by, reason, expires_at, updated_at FROM bank_modes",
                &[],
            )
            .await
            .map_err(StoreError::caused_by)?;
        rows.iter()
            .map(|r| {
                Ok(BankPins {
                    bank: parse_column(r.get::<_, &str>(0))?,
                    balances: parse_mode(r.get(1)),
                    payments: parse_mode(r.get(2)),
                    set_by: r.get(3),
                    reason: r.get(4),
                    expires_at: r.get(5),
                    updated_at: r.get(6),
                })
            })
            .collect()
    }

    pub async fn breaker_overrides(&self) -> Result<Vec<BreakerOverride>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT provider, state, set_by, reason, updated_at FROM provider_breakers",
                &[],
            )
            .await
            .map_err(StoreError::caused_by)?;
        rows.iter()
            .map(|r| {
                Ok(BreakerOverride {
                    provider: parse_column(r.get::<_, &str>(0))?,
                    pin: parse_mode(r.get(1)),
                    set_by: r.get(2),
                    reason: r.get(3),
                    updated_at: r.get(4),
                })
            })
            .collect()
    }

    /// Records a change nobody typed: automatic degradation and recovery.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        after: &Value,
        reason: &str,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        audit(&client, actor, action, target, None, after, reason).await
    }

    /// The newest audit entries, newest first.
    pub async fn recent_audit(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT at, actor, action, target, before, after, reason FROM ops_audit ORDER BY id DESC LIMIT $1",
                &[&limit],
            )
            .await
            .map_err(StoreError::caused_by)?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                at: r.get(0),
                actor: r.get(1),
                action: r.get(2),
                target: r.get(3),
                before: r.get(4),
                after: r.get(5),
                reason: r.get(6),
            })
            .collect())
    }
}

async fn audit(
    client: &impl deadpool_postgres::GenericClient,
    actor: &str,
    action: &str,
    target: &str,
    before: Option<&Value>,
    after: &Value,
    reason: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO ops_audit (actor, action, target, before, after, reason) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&actor, &action, &target, &before, &after, &reason],
        )
        .await
        .map_err(StoreError::caused_by)?;
    Ok(())
}
