//! `GET /v1/balances` and `GET /v1/accounts/{id}/balances`: what the user sees.
//!
//! A balance read is attended when the caller forwards the user's IP in `x-psu-ip-address`
//! (the user has the app open); without it the read is a background refresh and counts
//! against PSD2's daily allowance of unattended reads.

use std::net::IpAddr;
use std::sync::Arc;

use bankgate_actors::bank::{BalanceAnswer, Source};
use bankgate_actors::session::{AccountBalance, SessionError};
use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use super::{AppState, text};
use crate::copy::{CONSENT_EXPIRED, balance_warning};
use crate::token::Claims;
use bankgate_sandbox::http::request_id::RequestId;
use bankgate_sandbox::http::{ApiError, ErrorCode};

/// One account's balance as the client API renders it, borrowed from the session's answer.
#[derive(Debug, Serialize)]
pub struct AccountView<'a> {
    pub account_id: Uuid,
    pub bank: BankId,
    pub name: Option<&'a str>,
    pub iban: &'a str,
    /// Decimal string; null when no balance can be shown.
    #[serde(serialize_with = "text::optional_decimal")]
    pub amount: Option<Decimal>,
    pub currency: &'a str,
    pub provider: Option<ProviderId>,
    /// `live` or `cache`; null when no balance can be shown.
    pub source: Option<&'static str>,
    #[serde(serialize_with = "text::optional_rfc3339")]
    pub as_of: Option<DateTime<Utc>>,
    pub stale: bool,
    pub warning: Option<&'a str>,
    /// `consent_expired` or `bank_unavailable` when no balance can be shown.
    pub error: Option<ErrorCode>,
}

#[derive(Debug, Serialize)]
pub struct Total {
    #[serde(serialize_with = "text::decimal")]
    pub amount: Decimal,
    pub currency: &'static str,
    /// Whether every account contributed a balance.
    pub complete: bool,
    /// Whether any contributing balance is stale.
    pub stale: bool,
    pub stale_accounts: Vec<Uuid>,
    pub missing_accounts: Vec<Uuid>,
}

#[derive(Debug, Serialize)]
pub struct BalancesView<'a> {
    pub accounts: Vec<AccountView<'a>>,
    pub total: Total,
}

fn view(account: &AccountBalance) -> AccountView<'_> {
    let c = &account.connection;
    let mut view = AccountView {
        account_id: c.id,
        bank: c.bank,
        name: c.name.as_deref(),
        iban: &c.iban,
        amount: None,
        currency: &c.currency,
        provider: None,
        source: None,
        as_of: None,
        stale: false,
        warning: None,
        error: None,
    };
    match &account.answer {
        BalanceAnswer::Served {
            balance,
            source,
            warning,
        } => {
            view.amount = Some(balance.amount);
            view.currency = &balance.currency;
            view.provider = Some(balance.provider);
            view.source = Some(if *source == Source::Live {
                "live"
            } else {
                "cache"
            });
            view.as_of = Some(balance.fetched_at);
            view.stale = *source == Source::CacheStale;
            view.warning = warning.map(|w| balance_warning(c.bank, w));
        }
        BalanceAnswer::ConsentExpired { .. } => {
            view.error = Some(ErrorCode::ConsentExpired);
            view.warning = Some(CONSENT_EXPIRED);
        }
        BalanceAnswer::Unavailable { warning } => {
            view.error = Some(ErrorCode::BankUnavailable);
            view.warning = Some(balance_warning(c.bank, *warning));
        }
    }
    view
}

fn session_error(error: SessionError) -> ApiError {
    match error {
        SessionError::RateLimited { retry_after } => {
            ApiError::new(ErrorCode::RateLimited, "too many balance requests")
                .with_retry_after(retry_after.as_secs().max(1))
        }
        SessionError::UnknownAccount => ApiError::not_found("no such account"),
        SessionError::Store(_) | SessionError::Unavailable => ApiError::new(
            ErrorCode::Unavailable,
            "temporarily unavailable, try again shortly",
        )
        .with_retry_after(1),
    }
}

/// An account renders to about 400 bytes of JSON.
const BYTES_PER_ACCOUNT: usize = 400;

/// Renders a balance answer as JSON into a buffer sized for it up front: growing one from
/// empty reallocated it several times per read.
fn render(body: &impl Serialize, accounts: usize) -> Result<Response, ApiError> {
    let mut buffer = Vec::with_capacity(256 + accounts * BYTES_PER_ACCOUNT);
    serde_json::to_writer(&mut buffer, body)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "could not render the balances"))?;
    let mut response = Response::new(buffer.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

async fn read(
    state: &AppState,
    claims: &Claims,
    account: Option<Uuid>,
    ip: Option<IpAddr>,
    request_id: &RequestId,
) -> Result<Vec<AccountBalance>, ApiError> {
    state
        .sessions
        .get(&claims.sub, &claims.sid)
        .balances(account, ip, request_id.as_str())
        .await
        .map_err(session_error)
}

pub async fn all(
    state: AppState,
    claims: Arc<Claims>,
    ip: Option<IpAddr>,
    request_id: RequestId,
) -> Result<Response, ApiError> {
    let accounts = read(&state, &claims, None, ip, &request_id).await?;
    let views: Vec<AccountView> = accounts.iter().map(view).collect();
    if !views.is_empty()
        && views
            .iter()
            .all(|v| v.error == Some(ErrorCode::ConsentExpired))
    {
        return Err(ApiError::new(ErrorCode::ConsentExpired, CONSENT_EXPIRED));
    }
    if !views.is_empty() && views.iter().all(|v| v.error.is_some()) {
        let message = views.iter().find_map(|v| v.warning).unwrap_or_default();
        return Err(ApiError::new(ErrorCode::BankUnavailable, message).with_retry_after(30));
    }
    let counted = |v: &&AccountView| v.amount.is_some() && v.currency == "NOK";
    let total = Total {
        amount: views.iter().filter(counted).filter_map(|v| v.amount).sum(),
        currency: "NOK",
        complete: views.iter().all(|v| v.amount.is_some()),
        stale: views.iter().any(|v| v.stale),
        stale_accounts: views
            .iter()
            .filter(|v| v.stale)
            .map(|v| v.account_id)
            .collect(),
        missing_accounts: views
            .iter()
            .filter(|v| v.amount.is_none())
            .map(|v| v.account_id)
            .collect(),
    };
    render(
        &BalancesView {
            accounts: views,
            total,
        },
        accounts.len(),
    )
}

pub async fn one(
    state: AppState,
    claims: Arc<Claims>,
    account: Uuid,
    ip: Option<IpAddr>,
    request_id: RequestId,
) -> Result<Response, ApiError> {
    let accounts = read(&state, &claims, Some(account), ip, &request_id).await?;
    let view = accounts
        .first()
        .map(view)
        .ok_or_else(|| ApiError::not_found("no such account"))?;
    match view.error {
        Some(ErrorCode::ConsentExpired) => {
            Err(ApiError::new(ErrorCode::ConsentExpired, CONSENT_EXPIRED))
        }
        Some(code) => {
            Err(ApiError::new(code, view.warning.unwrap_or_default()).with_retry_after(30))
        }
        None => render(&view, 1),
    }
}
