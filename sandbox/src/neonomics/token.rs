//! The OAuth2 token (Keycloak's endpoint and errors) and the health check: the calls made
//! without a token.
//!
//! <https://docs.neonomics.io/docs/authentication>: `POST /auth/realms/sandbox/protocol/
//! openid-connect/token`, a form with `grant_type=client_credentials`, `client_id` and
//! `client_secret`, answered `{access_token, expires_in, refresh_expires_in, refresh_token,
//! token_type: "bearer", session_state}`; the realm is the environment's, and this sandbox is
//! Neonomics' sandbox (another realm is Keycloak's 404 `Realm does not exist`). The refresh
//! token obtains a new access token "using the same authorization grant": Keycloak's
//! `grant_type=refresh_token` with the client's credentials, each refresh token used once.

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

/// The sandbox's realm, as in Neonomics' sandbox environment.
const REALM: &str = "sandbox";
/// How long a refresh token is accepted (the documentation's example: twice the access
/// token's hour).
const REFRESH_TTL: chrono::Duration = chrono::Duration::hours(2);

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

pub(super) async fn token(realm: String, state: Arc<SandboxState>, body: Bytes) -> Response {
    let keycloak_error = |status: StatusCode, error: &str, description: &str| {
        let body = json!({"error": error, "error_description": description});
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    };
    if realm != REALM {
        let body = json!({"error": "Realm does not exist"});
        return warp::reply::with_status(warp::reply::json(&body), StatusCode::NOT_FOUND)
            .into_response();
    }
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
    let refreshing = match form.grant_type.as_deref() {
        Some("client_credentials") => false,
        Some("refresh_token") => true,
        _ => {
            return keycloak_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant_type",
            );
        }
    };
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
    let refresh_token = format!("sbx-refresh-{}", uuid::Uuid::new_v4().simple());
    let ttl =
        chrono::Duration::from_std(options.access_token_ttl).unwrap_or(chrono::Duration::hours(1));
    {
        let mut book = state.neonomics.lock().expect("book");
        let now = Utc::now();
        book.tokens.retain(|_, expiry| *expiry > now);
        book.refresh_tokens.retain(|_, expiry| *expiry > now);
        if refreshing {
            let presented = form.refresh_token.unwrap_or_default();
            if book.refresh_tokens.remove(&presented).is_none() {
                return keycloak_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "Invalid refresh token",
                );
            }
        }
        book.tokens.insert(access_token.clone(), now + ttl);
        book.refresh_tokens
            .insert(refresh_token.clone(), now + REFRESH_TTL);
    }
    warp::reply::json(&json!({
        "access_token": access_token,
        "expires_in": ttl.num_seconds(),
        "refresh_expires_in": REFRESH_TTL.num_seconds(),
        "refresh_token": refresh_token,
        "token_type": "bearer",
        "session_state": uuid::Uuid::new_v4(),
    }))
    .into_response()
}

pub(super) async fn health(state: Arc<SandboxState>) -> Response {
    match state.gate(provider_target()).await {
        Some(failure) => injected(failure, None),
        None => warp::reply::json(&json!({"status": "UP"})).into_response(),
    }
}
