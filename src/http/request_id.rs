//! `x-request-id` on every response: the caller's own id when it sent a sane one, a fresh one
//! otherwise, so a support ticket can be traced through the logs.

use warp::Filter;
use warp::http::HeaderValue;
use warp::http::header::HeaderMap;

pub const HEADER: &str = "x-request-id";

/// The request id of the request being handled.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Extracts the request id: the caller's when it is 1 to 128 visible ASCII characters.
pub fn request_id() -> impl Filter<Extract = (RequestId,), Error = std::convert::Infallible> + Clone
{
    warp::header::headers_cloned().map(|headers: HeaderMap| {
        let supplied = headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()));
        RequestId(supplied.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned))
    })
}

/// Wraps `reply` so that it carries the request id header.
pub fn tag(id: &RequestId, reply: impl warp::Reply) -> warp::reply::Response {
    let mut response = reply.into_response();
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}
