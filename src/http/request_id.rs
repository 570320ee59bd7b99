//! `x-request-id` on every response: the caller's own id when it sent a sane one, a fresh one
//! otherwise, so a support ticket can be traced through the logs.

use warp::Filter;
use warp::http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// The request id of the request being handled.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Extracts the request id: the caller's when it is 1 to 128 visible ASCII characters.
pub fn request_id() -> impl Filter<Extract = (RequestId,), Error = std::convert::Infallible> + Clone
{
    warp::header::value(HEADER)
        .map(Some)
        .or(warp::any().map(|| None))
        .unify()
        .map(|supplied: Option<HeaderValue>| {
            let supplied = supplied.as_ref().and_then(|v| v.to_str().ok()).filter(|v| {
                !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
            });
            RequestId(supplied.map_or_else(fresh_id, str::to_owned))
        })
}

/// A random UUID from a fast non-cryptographic generator: ids must be unique, not secret.
fn fresh_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

/// Wraps `reply` so that it carries the request id header.
pub fn tag(id: &RequestId, reply: impl warp::Reply) -> warp::reply::Response {
    let mut response = reply.into_response();
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
