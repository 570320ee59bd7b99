//! The operator's switches: a bank's balances and payments modes (with an expiry), a
//! provider's breaker pinned open or closed, and draining the queue now. Each change needs a
//! reason, is stored with its audit entry and applied to every instance (`Ops::load`).

use std::time::Duration;

use bankgate_actors::modes::{BalancesMode, BreakerPin, PaymentsMode};
use bankgate_actors::{BankId, ProviderId};
use bankgate_sandbox::http::ApiError;
use chrono::{SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::Ops;
use super::store::{ModeChange, mode_text, parse_mode};

const MAX_REASON_CHARS: usize = 500;

/// `PUT /ops/banks/{bank}/mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    #[serde(default)]
    pub balances: Option<String>,
    #[serde(default)]
    pub payments: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub expires_in: Option<String>,
}

/// `PUT /ops/providers/{provider}/breaker`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerRequest {
    pub state: String,
    pub reason: String,
}

fn check_reason(reason: &str) -> Result<&str, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::invalid_field(
            "reason",
            format!("must be 1 to {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(reason)
}

/// Parses `live|cached|disabled|auto` (or the payments names) for `field`.
fn setting<T: serde::de::DeserializeOwned>(
    field: &str,
    text: &str,
    allowed: &str,
) -> Result<Option<T>, ApiError> {
    if text == "auto" {
        return Ok(None);
    }
    parse_mode::<T>(text)
        .map(Some)
        .ok_or_else(|| ApiError::invalid_field(field, format!("must be one of {allowed}")))
}

impl Ops {
    pub async fn set_bank_mode(
        &self,
        actor: &str,
        bank: BankId,
        request: ModeRequest,
    ) -> Result<Value, ApiError> {
        let reason = check_reason(&request.reason)?;
        if request.balances.is_none() && request.payments.is_none() {
            return Err(ApiError::invalid_field(
                "balances",
                "give balances, payments or both",
            ));
        }
        let balances = (request.balances.as_deref())
            .map(|text| setting::<BalancesMode>("balances", text, "live, cached, disabled, auto"))
            .transpose()?;
        let payments = (request.payments.as_deref())
            .map(|text| setting::<PaymentsMode>("payments", text, "live, queue, disabled, auto"))
            .transpose()?;
        let expires_at = match &request.expires_in {
            None => None,
            Some(text) => {
                let duration = humantime::parse_duration(text)
                    .ok()
                    .filter(|d| !d.is_zero() && *d <= Duration::from_secs(30 * 24 * 3600))
                    .ok_or_else(|| {
                        ApiError::invalid_field(
                            "expires_in",
                            "a duration such as 30m, up to 30 days",
                        )
                    })?;
                // PostgreSQL keeps microseconds: answer what is stored.
                let at = Utc::now() + chrono::Duration::from_std(duration).expect("bounded");
                Some(Some(at.trunc_subsecs(6)))
            }
        };
        let change = ModeChange {
            balances,
            payments,
            expires_at,
        };
        let pins = self
            .store
            .set_bank_mode(bank, change, actor, reason)
            .await?;
        self.load().await?;
        info!(bank = %bank, actor, reason, "bank mode set by an operator");
        Ok(json!({
            "bank": bank,
            "balances": mode_text(pins.balances),
            "payments": mode_text(pins.payments),
            "expires_at": pins.expires_at,
            "set_by": actor,
        }))
    }

    pub async fn set_breaker(
        &self,
        actor: &str,
        provider: ProviderId,
        request: BreakerRequest,
    ) -> Result<Value, ApiError> {
        let reason = check_reason(&request.reason)?;
        let pin: Option<BreakerPin> = setting("state", &request.state, "open, closed, auto")?;
        self.store.set_breaker(provider, pin, actor, reason).await?;
        self.load().await?;
        info!(provider = %provider, actor, reason, "breaker override set by an operator");
        Ok(json!({"provider": provider, "state": mode_text(pin), "set_by": actor}))
    }

    /// Wakes every bank's queue drainer now, audited like the other changes: an operator
    /// who sends queued payments out during an incident is on record for it.
    pub async fn drain(&self, actor: &str) -> Result<Value, ApiError> {
        let answer = json!({"status": "draining"});
        self.store
            .audit(
                actor,
                "queue_drain",
                "all",
                &answer,
                "drain asked for by an operator",
            )
            .await?;
        self.payments.drain_now();
        info!(actor, "queue drain asked for by an operator");
        Ok(answer)
    }
}
