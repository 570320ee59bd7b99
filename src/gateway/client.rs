//! The client REST API (Drop's backend calls it): every answer carries `x-request-id`, every
//! error is in the `{error, message, details}` envelope.

use std::convert::Infallible;

use serde_json::json;
use warp::reply::Response;
use warp::{Filter, Reply};

use super::AppState;
use crate::http::error::recover;
use crate::http::request_id::{RequestId, request_id, tag};

pub fn routes(
    _state: AppState,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let health = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let api = health.recover(recover).unify();
    request_id()
        .and(api)
        .map(|id: RequestId, response: Response| tag(&id, response))
        .with(crate::telemetry::http_metrics("client"))
}
