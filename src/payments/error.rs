//! Why the payment service said no, as a type. Each variant names its cause; the one
//! `From<PaymentError> for ApiError` below is the only place that knows which code, status,
//! text and `Retry-After` a client gets for it.

use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_actors::upstream::StoreError;
use uuid::Uuid;

use super::webhook::WebhookError;
use crate::copy::{CONSENT_EXPIRED, PAYMENTS_DISABLED};
use bankgate_sandbox::http::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The request's shape or values are wrong, each problem named (from `request.rs`).
    #[error("{}", .0.message)]
    Invalid(ApiError),
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("no such payment")]
    NotFound,
    /// An SCA return without the payment's state, with another, or with one used already.
    #[error("this is not the payment's SCA return, or it was used already")]
    BadState,
    /// The debtor account is not the user's, or not at the payment's bank (`Some`).
    #[error("the debtor account is not the user's")]
    NotYourAccount { at_bank: Option<BankId> },
    #[error("this Idempotency-Key was used for a different payment")]
    KeyReused,
    /// The first request with the key has not finished (or died, until `in_flight_timeout`
    /// settles it): the client retries with the same key and gets the answer.
    #[error("a request with this Idempotency-Key is in progress")]
    InProgress,
    #[error("too many payments {what}")]
    RateLimited {
        what: &'static str,
        retry_after: Duration,
    },
    /// An operator switched the bank's payments off.
    #[error("payments at the bank are switched off")]
    Disabled,
    /// The payment failed for want of a valid consent at the bank.
    #[error("the user's consent at the bank expired")]
    ConsentExpired { payment_id: Uuid },
    /// The bank refused the payment, or it expired unsent.
    #[error("the payment was not carried out: {reason}")]
    NotCarriedOut { payment_id: Uuid, reason: String },
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<PaymentError> for ApiError {
    fn from(error: PaymentError) -> ApiError {
        let message = error.to_string();
        match error {
            PaymentError::Invalid(error) => error,
            PaymentError::InvalidJson(_) => ApiError::new(ErrorCode::InvalidJson, message),
            PaymentError::NotFound => ApiError::not_found(message),
            PaymentError::BadState => ApiError::new(ErrorCode::Forbidden, message),
            PaymentError::NotYourAccount { at_bank } => {
                let issue = match at_bank {
                    Some(bank) => format!("is not one of your accounts at {bank}"),
                    None => "is not one of your connected accounts".to_owned(),
                };
                ApiError::new(ErrorCode::Unprocessable, "the payment was not accepted")
                    .with_detail("debtor_account_id", issue)
            }
            PaymentError::KeyReused => ApiError::new(ErrorCode::IdempotencyKeyReused, message)
                .with_detail("Idempotency-Key", "reused with a different body"),
            PaymentError::InProgress => ApiError::new(
                ErrorCode::RequestInProgress,
                format!("{message}; retry shortly"),
            )
            .with_retry_after(1),
            PaymentError::RateLimited { retry_after, .. } => ApiError::new(
                ErrorCode::RateLimited,
                format!("{message}; try again later"),
            )
            .with_retry_after(retry_after.as_secs() + 1),
            PaymentError::Disabled => {
                ApiError::new(ErrorCode::PaymentsUnavailable, PAYMENTS_DISABLED)
                    .with_retry_after(60)
            }
            PaymentError::ConsentExpired { payment_id } => {
                ApiError::new(ErrorCode::ConsentExpired, CONSENT_EXPIRED)
                    .with_detail("payment_id", payment_id.to_string())
            }
            PaymentError::NotCarriedOut { payment_id, .. } => {
                ApiError::new(ErrorCode::PaymentRejected, message)
                    .with_detail("payment_id", payment_id.to_string())
            }
            PaymentError::Webhook(error) => {
                let code = match error {
                    WebhookError::Malformed | WebhookError::BadEvent => ErrorCode::BadRequest,
                    WebhookError::Stale | WebhookError::BadSignature => ErrorCode::Unauthorized,
                };
                ApiError::new(code, message)
            }
            PaymentError::Store(error) => error.into(),
        }
    }
}
