//! Client authentication: `Authorization: Bearer <token>` verified as an HS256 JWT.

use std::sync::Arc;

use warp::http::HeaderValue;
use warp::{Filter, Rejection};

use crate::token::{Claims, TokenVerifier};
use bankgate_sandbox::http::{ApiError, ErrorCode, optional_header};

/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 4096;

/// Extracts the verified claims or rejects with 401 in the envelope.
pub fn authenticated(
    tokens: Arc<TokenVerifier>,
) -> impl Filter<Extract = (Arc<Claims>,), Error = Rejection> + Clone {
    optional_header("authorization").and_then(move |header: Option<HeaderValue>| {
        let tokens = tokens.clone();
        async move {
            let unauthorized = |message: &str| {
                warp::reject::custom(ApiError::new(ErrorCode::Unauthorized, message))
            };
            let header = header.ok_or_else(|| unauthorized("missing bearer token"))?;
            let token = header
                .to_str()
                .ok()
                .and_then(|header| {
                    header
                        .strip_prefix("Bearer ")
                        .or_else(|| header.strip_prefix("bearer "))
                })
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| unauthorized("expected `Authorization: Bearer <token>`"))?;
            if token.len() > MAX_TOKEN_BYTES {
                return Err(unauthorized("token too large"));
            }
            tokens
                .verify(token)
                .map_err(|_| unauthorized("invalid or expired token"))
        }
    })
}
