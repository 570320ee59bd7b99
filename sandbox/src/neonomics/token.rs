//! The OAuth2 client-credentials token (Keycloak's endpoint and errors) and the health check:
//! the calls made without a token.

use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;

use crate::SandboxState;
use crate::faults::FaultKind;

use super::{injected, provider_target};

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

pub(super) async fn token(state: Arc<SandboxState>, body: Bytes) -> Response {
    let keycloak_error = |status: StatusCode, error: &str, description: &str| {
        let body = json!({"error": error, "error_description": description});
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    };
    if let Some(failure) = state.gate(provider_target()).await {
        return match failure.kind {
            FaultKind::Unauthorized => keycloak_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                "Invalid client or Invalid client credentials",
            ),
            _ => injected(failure, None),
        };
    }
    let Ok(form) = serde_urlencoded::from_bytes::<TokenForm>(&body) else {
        return keycloak_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Malformed form body",
        );
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return keycloak_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    let options = &state.options;
    if form.client_id.as_deref() != Some(options.neonomics_client_id.as_str())
        || form.client_secret.as_deref() != Some(options.neonomics_client_secret.as_str())
    {
        return keycloak_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let access_token = format!("sbx-{}", uuid::Uuid::new_v4().simple());
    let ttl =
        chrono::Duration::from_std(options.access_token_ttl).unwrap_or(chrono::Duration::hours(1));
    {
        let mut book = state.neonomics.lock().expect("book");
        let now = Utc::now();
        book.tokens.retain(|_, expiry| *expiry > now);
        book.tokens.insert(access_token.clone(), now + ttl);
    }
    warp::reply::json(&json!({
        "access_token": access_token,
        "expires_in": ttl.num_seconds(),
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "scope": "ics",
    }))
    .into_response()
}

pub(super) async fn health(state: Arc<SandboxState>) -> Response {
    match state.gate(provider_target()).await {
        Some(failure) => injected(failure, None),
        None => warp::reply::json(&json!({"status": "UP"})).into_response(),
    }
}
