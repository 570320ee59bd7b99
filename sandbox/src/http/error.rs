//! The error envelope every bankgate API answers with: `{error, message, details}`.
//!
//! Handlers reject with an `ApiError`; one `recover` function turns it, and every rejection
//! warp itself produces (unknown path, wrong method, bad JSON, body too large, missing header),
//! into the envelope. Anything unrecognised is logged and becomes a bare 500 so that no
//! internal detail reaches a client.

use std::convert::Infallible;

use bankgate_actors::upstream::StoreError;
use serde::Serialize;
use tracing::{error, warn};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Rejection, Reply};

/// The closed set of error codes a client can receive. Each has exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    InvalidJson,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    UnsupportedMediaType,
    Unprocessable,
    RateLimited,
    /// The user's consent at the bank expired or was revoked: the user must renew it.
    ConsentExpired,
    /// The bank cannot be reached and nothing recent enough is cached.
    BankUnavailable,
    /// The Idempotency-Key was used before with a different request.
    IdempotencyKeyReused,
    /// The first request with this Idempotency-Key has not finished.
    RequestInProgress,
    /// The bank's payments are switched off.
    PaymentsUnavailable,
    /// The bank refused the payment, or it could not be carried out.
    PaymentRejected,
    Internal,
    Unavailable,
}

impl ErrorCode {
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidJson => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::ConsentExpired => StatusCode::FORBIDDEN,
            ErrorCode::BankUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::RequestInProgress => StatusCode::CONFLICT,
            ErrorCode::PaymentsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::PaymentRejected => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The database failed: the client may try again shortly. The cause is logged, never sent.
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        warn!(error = %error, cause = ?std::error::Error::source(&error), "database error");
        ApiError::new(
            ErrorCode::Unavailable,
            "temporarily unavailable, try again shortly",
        )
        .with_retry_after(1)
    }
}

/// One field-level problem, e.g. `{"field": "ratio", "issue": "must be between 0 and 1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorDetail {
    pub field: String,
    pub issue: String,
}

/// An error as the client sees it.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(rename = "error")]
    pub code: ErrorCode,
    pub message: String,
    pub details: Vec<ErrorDetail>,
    /// Sent as `Retry-After` (seconds) with 429 and 503 answers.
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_s: None,
        }
    }

    /// Returns a 400 naming the offending field.
    pub fn invalid_field(field: impl Into<String>, issue: impl Into<String>) -> Self {
        let (field, issue) = (field.into(), issue.into());
        ApiError::new(ErrorCode::BadRequest, format!("invalid `{field}`: {issue}"))
            .with_detail(field, issue)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, what)
    }

    pub fn with_detail(mut self, field: impl Into<String>, issue: impl Into<String>) -> Self {
        self.details.push(ErrorDetail {
            field: field.into(),
            issue: issue.into(),
        });
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }
}

impl warp::reject::Reject for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        let retry_after = self.retry_after_s;
        let mut response =
            warp::reply::with_status(warp::reply::json(&self), status).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Renders any rejection in the envelope. Use as the last `.recover` of every API.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(classify(&rejection).into_response())
}

fn classify(rejection: &Rejection) -> ApiError {
    use warp::reject::{
        InvalidHeader, InvalidQuery, LengthRequired, MethodNotAllowed, MissingHeader,
        PayloadTooLarge, UnsupportedMediaType,
    };
    if let Some(error) = rejection.find::<ApiError>() {
        return error.clone();
    }
    if rejection.is_not_found() {
        return ApiError::not_found("no such resource");
    }
    if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        return ApiError::new(
            ErrorCode::InvalidJson,
            format!("request body is not valid: {e}"),
        );
    }
    if rejection.find::<PayloadTooLarge>().is_some() {
        return ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large");
    }
    if rejection.find::<LengthRequired>().is_some() {
        return ApiError::new(ErrorCode::BadRequest, "a Content-Length header is required");
    }
    if rejection.find::<UnsupportedMediaType>().is_some() {
        return ApiError::new(ErrorCode::UnsupportedMediaType, "expected application/json");
    }
    if let Some(e) = rejection.find::<MissingHeader>() {
        return ApiError::new(
            ErrorCode::BadRequest,
            format!("missing header `{}`", e.name()),
        )
        .with_detail(e.name(), "required");
    }
    if let Some(e) = rejection.find::<InvalidHeader>() {
        return ApiError::new(
            ErrorCode::BadRequest,
            format!("invalid header `{}`", e.name()),
        )
        .with_detail(e.name(), "invalid");
    }
    if let Some(e) = rejection.find::<InvalidQuery>() {
        return ApiError::new(ErrorCode::BadRequest, format!("invalid query string: {e}"));
    }
    if rejection.find::<MethodNotAllowed>().is_some() {
        return ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this resource",
        );
    }
    error!(rejection = ?rejection, "unhandled rejection");
    ApiError::new(ErrorCode::Internal, "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_error_message_and_details() {
        let body =
            serde_json::to_value(ApiError::invalid_field("ratio", "must be between 0 and 1"))
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "error": "bad_request",
                "message": "invalid `ratio`: must be between 0 and 1",
                "details": [{"field": "ratio", "issue": "must be between 0 and 1"}],
            })
        );
    }

    #[test]
    fn rate_limited_answers_carry_retry_after() {
        let response = ApiError::new(ErrorCode::RateLimited, "slow down")
            .with_retry_after(7)
            .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }
}
