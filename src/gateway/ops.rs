//! The ops listener: liveness, readiness and Prometheus metrics. Never reachable on the
//! client port.

use std::convert::Infallible;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::AppState;
use crate::http::error::recover;
use crate::http::request_id::{RequestId, request_id, tag};

pub fn routes(state: AppState) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with_state = warp::any().map(move || state.clone());
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let ready = warp::path!("readyz").and(warp::get()).and(with_state).then(|state: AppState| async move {
        let database = crate::postgres::ping(&state.pool).await;
        let status = if database { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
        let body = json!({"status": if database { "ready" } else { "not_ready" }, "database": database});
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    });
    let metrics = warp::path!("metrics").and(warp::get()).map(|| {
        let text = crate::telemetry::prometheus().render();
        warp::reply::with_header(text, "content-type", "text/plain; version=0.0.4").into_response()
    });
    let api = health
        .or(ready)
        .unify()
        .or(metrics)
        .unify()
        .recover(recover)
        .unify();
    request_id()
        .and(api)
        .map(|id: RequestId, response: Response| tag(&id, response))
        .with(crate::telemetry::http_metrics("ops"))
}
