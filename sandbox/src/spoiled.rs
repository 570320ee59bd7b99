//! A payment initiation's answer spoiled after the payment was carried out, as the faults
//! `garbled` and `reset` ask: the caller learns nothing it can trust about the outcome.
//!
//! - `garbled`: the success status and headers, then only the first half of the body, as a
//!   proxy or load balancer that gave up halfway would pass on.
//! - `reset`: the success status and headers and the first half of the body, then the
//!   connection is broken off (the body stream fails, so the server aborts the connection
//!   instead of finishing the chunked body).

use std::io;

use futures_util::stream;
use http_body_util::BodyExt;
use warp::Reply;
use warp::http::header::CONTENT_LENGTH;
use warp::hyper::body::Bytes;
use warp::reply::Response;

use crate::faults::FaultKind;

/// Spoils `answer` as `kind` says; any other kind leaves it as it is.
pub async fn spoil(answer: Response, kind: FaultKind) -> Response {
    if !matches!(kind, FaultKind::Garbled | FaultKind::Reset) {
        return answer;
    }
    let (mut parts, body) = answer.into_parts();
    let whole = body
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    let half = whole.slice(..whole.len() / 2);
    parts.headers.remove(CONTENT_LENGTH);
    let mut spoiled = if kind == FaultKind::Garbled {
        Response::new(half.into())
    } else {
        let broken = io::Error::new(io::ErrorKind::ConnectionReset, "reset by fault");
        let chunks = stream::iter([Ok::<Bytes, io::Error>(half), Err(broken)]);
        warp::reply::stream(chunks).into_response()
    };
    *spoiled.status_mut() = parts.status;
    *spoiled.headers_mut() = parts.headers;
    spoiled
}
