//! The ops listener: liveness, readiness and Prometheus metrics (open, for probes and the
//! scraper), and the ops API under `/ops` (admin bearer tokens). Never reachable on the
//! client port.

use std::convert::Infallible;

use bankgate_actors::{BankId, ProviderId};
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::AppState;
use crate::ops::{BreakerRequest, ModeRequest};
use bankgate_sandbox::http::error::recover;
use bankgate_sandbox::http::request_id::{RequestId, request_id, tag};
use bankgate_sandbox::http::{ApiError, ErrorCode};

fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => warp::reply::json(&body).into_response(),
        Err(error) => error.into_response(),
    }
}

/// Extracts the admin token's name or rejects with 401.
fn admin(state: AppState) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |header: Option<String>| {
        let state = state.clone();
        async move {
            state
                .ops
                .tokens
                .check(header.as_deref())
                .map(str::to_owned)
                .ok_or_else(|| {
                    warp::reject::custom(ApiError::new(
                        ErrorCode::Unauthorized,
                        "an ops admin token is required",
                    ))
                })
        }
    })
}

fn json_body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(16 * 1024).and(warp::body::json())
}

fn bank_param(text: &str) -> Result<BankId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no bank `{text}`")))
}

fn provider_param(text: &str) -> Result<ProviderId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::not_found(format!("no provider `{text}`")))
}

pub fn routes(state: AppState) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let admin = admin(state.clone());
    let with_state = warp::any().map(move || state.clone());
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let ready = warp::path!("readyz").and(warp::get()).and(with_state.clone()).then(|state: AppState| async move {
        let database = crate::postgres::ping(&state.pool).await;
        let mut actors = true;
        for handle in state.banks.values() {
            actors &= handle.status().await.is_ok();
        }
        let ok = database && actors;
        let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let body = json!({"status": if ok { "ready" } else { "not_ready" }, "database": database, "actors": actors});
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    });
    let metrics = warp::path!("metrics").and(warp::get()).map(|| {
        let text = crate::telemetry::prometheus().render();
        warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
    });
    let status = warp::path!("ops" / "status")
        .and(warp::get())
        .and(with_state.clone())
        .and(admin.clone())
        .then(|state: AppState, _who: String| async move { respond(state.ops.status().await) });
    let diagnosis = warp::path!("ops" / "diagnosis")
        .and(warp::get())
        .and(with_state.clone())
        .and(admin.clone())
        .then(|state: AppState, _who: String| async move {
            warp::reply::json(&state.ops.diagnosis().await).into_response()
        });
    let mode = warp::path!("ops" / "banks" / String / "mode")
        .and(warp::put())
        .and(with_state.clone())
        .and(admin.clone())
        .and(json_body())
        .then(
            |bank: String, state: AppState, who: String, request: ModeRequest| async move {
                let result = match bank_param(&bank) {
                    Ok(bank) => state.ops.set_bank_mode(&who, bank, request).await,
                    Err(error) => Err(error),
                };
                respond(result)
            },
        );
    let breaker = warp::path!("ops" / "providers" / String / "breaker")
        .and(warp::put())
        .and(with_state.clone())
        .and(admin.clone())
        .and(json_body())
        .then(
            |provider: String, state: AppState, who: String, request: BreakerRequest| async move {
                let result = match provider_param(&provider) {
                    Ok(provider) => state.ops.set_breaker(&who, provider, request).await,
                    Err(error) => Err(error),
                };
                respond(result)
            },
        );
    let drain = warp::path!("ops" / "queue" / "drain")
        .and(warp::post())
        .and(with_state)
        .and(admin)
        .then(|state: AppState, who: String| async move {
            match state.ops.drain(&who).await {
                Ok(body) => {
                    warp::reply::with_status(warp::reply::json(&body), StatusCode::ACCEPTED)
                        .into_response()
                }
                Err(error) => error.into_response(),
            }
        });
    let api = health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .or(status)
        .unify()
        .or(diagnosis)
        .unify()
        .or(mode)
        .unify()
        .or(breaker)
        .unify()
        .or(drain)
        .unify()
        .recover(recover)
        .unify();
    request_id()
        .and(api)
        .map(|id: RequestId, response: Response| tag(&id, response))
        .with(crate::telemetry::http_metrics(crate::telemetry::Api::Ops))
}
