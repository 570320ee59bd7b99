//! `x-request-id` on every response: the caller's own id when it sent a sane one, a fresh one
//! otherwise, so a support ticket can be traced through the logs. The connection loop assigns
//! it before routing (`assign`); filters read it (`request_id`) and responses carry it (`tag`).

use warp::Filter;
use warp::http::HeaderValue;
use warp::http::header::{HeaderMap, HeaderName};

const NAME: &str = "x-request-id";
/// Parsed once: it is looked up and set on every request.
pub(super) const HEADER: HeaderName = HeaderName::from_static(NAME);

/// The request id of the request being handled, as the header value it travels in.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

fn acceptable(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
}

/// Keeps the caller's id when it is 1 to 128 visible ASCII characters, else sets a fresh one.
pub fn assign(headers: &mut HeaderMap) {
    if headers.get(&HEADER).is_some_and(acceptable) {
        return;
    }
    let fresh = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
    let mut text = uuid::Uuid::encode_buffer();
    let text = fresh.hyphenated().encode_lower(&mut text);
    headers.insert(
        HEADER,
        HeaderValue::from_str(text).expect("a UUID is a valid header"),
    );
}

/// Extracts the request id assigned at the edge.
pub fn request_id() -> impl Filter<Extract = (RequestId,), Error = std::convert::Infallible> + Clone
{
    super::optional_header(NAME).map(|value: Option<HeaderValue>| {
        RequestId(value.unwrap_or_else(|| HeaderValue::from_static("")))
    })
}

/// Wraps `reply` so that it carries the request id header.
pub fn tag(id: &RequestId, reply: impl warp::Reply) -> warp::reply::Response {
    let mut response = reply.into_response();
    response.headers_mut().insert(HEADER, id.0.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_the_rest() {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_static("drop-123"));
        assign(&mut headers);
        assert_eq!(headers[&HEADER], "drop-123");

        headers.insert(HEADER, HeaderValue::from_str(&"x".repeat(200)).unwrap());
        assign(&mut headers);
        assert!(uuid::Uuid::parse_str(headers[&HEADER].to_str().unwrap()).is_ok());

        let mut empty = HeaderMap::new();
        assign(&mut empty);
        assert!(uuid::Uuid::parse_str(empty[&HEADER].to_str().unwrap()).is_ok());
    }
}
