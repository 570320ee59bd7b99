//! The consent and connection routes: `POST /v1/consents`, the SCA callback, and
//! `GET`/`DELETE /v1/connections`. They parse the request and shape the answer; the flow is
//! the consent service's (`crate::consents`).

use std::net::IpAddr;
use std::sync::Arc;

use bankgate_actors::national_id::{InvalidNationalId, NationalId};
use bankgate_actors::{BankId, ProviderId};
use serde::Deserialize;
use uuid::Uuid;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use super::AppState;
use crate::token::Claims;
use bankgate_sandbox::http::{ApiError, ErrorCode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    pub bank: BankId,
    /// The user's national identity number: banks name the PSU by it. Drop has it from the
    /// user's BankID login.
    pub psu_id: String,
    pub redirect_url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackQuery {
    pub provider: ProviderId,
    /// The state the consent's start gave this provider's callback.
    #[serde(default)]
    pub state: Option<String>,
}

pub async fn create(
    state: AppState,
    claims: Arc<Claims>,
    body: NewConsent,
) -> Result<Response, ApiError> {
    // The error names the field and the rule, never the value. The document's pattern
    // states the form; a date or check digits that fail it are 422, as a payment's are.
    let psu = NationalId::parse(&body.psu_id).map_err(|e| match e {
        InvalidNationalId::Format => ApiError::invalid_field("psu_id", e.to_string()),
        InvalidNationalId::Date | InvalidNationalId::Checksum => {
            ApiError::new(ErrorCode::Unprocessable, format!("invalid `psu_id`: {e}"))
                .with_detail("psu_id", e.to_string())
        }
    })?;
    let started = (state.consents)
        .start(&claims.sub, body.bank, psu, body.redirect_url)
        .await?;
    let body = serde_json::json!({
        "consent_id": started.id,
        "status": "pending",
        "sca_redirect": started.sca_redirect,
    });
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response())
}

/// Where the user's browser lands after each provider's SCA: sent on to the next provider's
/// SCA, or back to the app.
pub async fn callback(
    state: AppState,
    id: Uuid,
    query: CallbackQuery,
    peer: Option<IpAddr>,
) -> Result<Response, ApiError> {
    let psu_ip = peer.map_or_else(|| "127.0.0.1".to_owned(), |ip| ip.to_string());
    let to = (state.consents)
        .callback(id, query.provider, query.state.as_deref(), psu_ip)
        .await?;
    Ok(warp::redirect::found(crate::redirect::location(&to)?).into_response())
}

pub async fn list(state: AppState, claims: Arc<Claims>) -> Result<Response, ApiError> {
    let connections = state.consents.connections(&claims.sub).await?;
    Ok(warp::reply::json(&serde_json::json!({ "connections": connections })).into_response())
}

pub async fn delete(state: AppState, claims: Arc<Claims>, id: Uuid) -> Result<Response, ApiError> {
    state.consents.remove_connection(&claims.sub, id).await?;
    Ok(warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response())
}
