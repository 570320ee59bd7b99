//! `POST /v1/payments`, `GET /v1/payments[/{id}]`, the browser's return from SCA and the
//! providers' webhooks. The work is the payment service's (`crate::payments`); this file
//! only maps HTTP to it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use bankgate_actors::WebhookSource;
use serde::Deserialize;
use uuid::Uuid;
use warp::Reply;
use warp::http::{HeaderMap, StatusCode};
use warp::hyper::body::Bytes;
use warp::reply::Response;

use super::AppState;
use crate::payments::{Delivery, PaymentStatus, ScaResult};
use crate::token::Claims;
use bankgate_sandbox::http::{ApiError, ErrorCode};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub status: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub async fn create(
    state: AppState,
    claims: Arc<Claims>,
    headers: HeaderMap,
    peer: IpAddr,
    psu_ip: Option<IpAddr>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or("\u{7f}"));
    let created = state
        .payments
        .create(&claims.sub, key, &body, peer, psu_ip)
        .await?;
    let status = StatusCode::from_u16(created.status).unwrap_or(StatusCode::OK);
    Ok(warp::reply::with_status(warp::reply::json(&created.body), status).into_response())
}

pub async fn one(state: AppState, claims: Arc<Claims>, id: Uuid) -> Result<Response, ApiError> {
    let view = state.payments.view(&claims.sub, id).await?;
    Ok(warp::reply::json(&view).into_response())
}

pub async fn list(
    state: AppState,
    claims: Arc<Claims>,
    query: ListQuery,
) -> Result<Response, ApiError> {
    let status = query
        .status
        .map(|s| s.parse::<PaymentStatus>())
        .transpose()
        .map_err(|issue| ApiError::invalid_field("status", issue))?;
    let payments = state.payments.list(&claims.sub, status).await?;
    Ok(warp::reply::json(&serde_json::json!({ "payments": payments })).into_response())
}

pub async fn sca_returned(
    state: AppState,
    id: Uuid,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let result = match query.get("result").map(String::as_str) {
        Some("OK") => ScaResult::Approved,
        Some("FAILED") => ScaResult::Failed,
        _ => ScaResult::NotSaid,
    };
    let state_given = query.get("state").map(String::as_str);
    let back = state.payments.sca_returned(id, state_given, result).await?;
    let Some(app) = back.redirect_url else {
        let body = serde_json::json!({"payment_id": back.payment_id, "status": back.status});
        return Ok(warp::reply::json(&body).into_response());
    };
    // The browser goes back to the app, with the payment's id and status.
    let to = crate::redirect::with_outcome(
        &app,
        &[
            ("payment_id", &back.payment_id.to_string()),
            ("status", back.status.as_str()),
        ],
    );
    Ok(warp::redirect::see_other(crate::redirect::location(&to)?).into_response())
}

pub async fn webhook(
    state: AppState,
    source: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let source: WebhookSource = source.parse().map_err(|_| {
        ::metrics::counter!(bankgate_actors::metrics::WEBHOOKS, "provider" => "unknown", "outcome" => "unknown_provider")
            .increment(1);
        ApiError::new(ErrorCode::NotFound, "no such webhook source")
    })?;
    let delivery = Delivery {
        timestamp: header(&headers, "x-webhook-timestamp"),
        signature: header(&headers, "x-webhook-signature"),
    };
    let answer = state.payments.webhook(source, delivery, &body).await?;
    Ok(warp::reply::json(&answer).into_response())
}
