//! The banks' own NextGenPSD2 (Berlin Group 1.3.12) APIs, one base path per bank:
//! `/{bank}/v1/consents`, `/accounts`, `/accounts/{id}/balances`, `/payments/{product}`.
//!
//! As the specification has it: `X-Request-ID` (a UUID) is required on every call and echoed
//! back; errors carry `tppMessages`; 503 and 500 have no body; a consent allows
//! `frequencyPerDay` unattended reads a day and answers `429 ACCESS_EXCEEDED` past that, while
//! reads with `PSU-IP-Address` (the user is present) do not count.
//!
//! Here: the errors, the routes and the preamble every endpoint runs as one filter
//! (`admitted`); the endpoints render in `consents.rs`, `accounts.rs` and `payments.rs`.

use std::convert::Infallible;
use std::sync::Arc;

use bankgate_actors::{BankId, ProviderId, Service};
use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::hyper::body::Bytes;
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

mod accounts;
mod consents;
mod payments;

use crate::answered::{Answered, answering};
use crate::faults::{FaultKind, Injected, Target};
use crate::rate_limit::{LimitState, Throttled, limited};
use crate::spoiled::spoil;
use crate::world::ConsentProblem;
use crate::{SandboxState, header};

const BODY_LIMIT: u64 = 64 * 1024;

/// Builds a `tppMessages` error.
fn tpp_error(status: StatusCode, code: &str, text: impl Into<String>) -> Response {
    let body = json!({"tppMessages": [{"category": "ERROR", "code": code, "text": text.into()}]});
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

fn format_error(text: impl Into<String>) -> Response {
    tpp_error(StatusCode::BAD_REQUEST, "FORMAT_ERROR", text)
}

/// A status with no body, as the specification defines 500 and 503.
fn bare(status: StatusCode) -> Response {
    warp::reply::with_status(warp::reply(), status).into_response()
}

fn injected(failure: Injected) -> Response {
    match failure.kind {
        FaultKind::Error => bare(StatusCode::INTERNAL_SERVER_ERROR),
        FaultKind::Timeout | FaultKind::LostResponse | FaultKind::Garbled | FaultKind::Reset => {
            bare(StatusCode::GATEWAY_TIMEOUT)
        }
        FaultKind::RateLimit => {
            let mut response = tpp_error(
                StatusCode::TOO_MANY_REQUESTS,
                "ACCESS_EXCEEDED",
                "The access on the account has been exceeding the consented multiplicity per day.",
            );
            let headers = response.headers_mut();
            headers.insert(
                warp::http::header::RETRY_AFTER,
                HeaderValue::from(failure.retry_after_s),
            );
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
            headers.insert(
                "x-ratelimit-reset",
                HeaderValue::from(failure.retry_after_s),
            );
            response
        }
        FaultKind::Unauthorized => tpp_error(
            StatusCode::UNAUTHORIZED,
            "CERTIFICATE_REVOKED",
            "Certificate is revoked by QTSP.",
        ),
        FaultKind::ConsentExpired => consent_problem(ConsentProblem::Expired),
        // `decide` never fails a request with latency or refuse; render them as an outage.
        FaultKind::Unavailable | FaultKind::Latency | FaultKind::Refuse => {
            bare(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

fn consent_problem(problem: ConsentProblem) -> Response {
    match problem {
        ConsentProblem::Unknown => tpp_error(
            StatusCode::FORBIDDEN,
            "CONSENT_UNKNOWN",
            "The Consent-ID cannot be matched by the ASPSP relative to the TPP.",
        ),
        ConsentProblem::NotValid => tpp_error(
            StatusCode::UNAUTHORIZED,
            "CONSENT_INVALID",
            "The consent was created by this TPP but is not valid for the addressed service/resource.",
        ),
        ConsentProblem::Expired => tpp_error(
            StatusCode::UNAUTHORIZED,
            "CONSENT_EXPIRED",
            "The consent was created by this TPP but has expired and needs to be renewed.",
        ),
        ConsentProblem::AccessExceeded => tpp_error(
            StatusCode::TOO_MANY_REQUESTS,
            "ACCESS_EXCEEDED",
            "The access on the account has been exceeding the consented multiplicity per day.",
        ),
    }
}

/// A call that passed the preamble.
struct Call {
    state: Arc<SandboxState>,
    bank: BankId,
    request_id: String,
    headers: HeaderMap,
}

impl Call {
    /// Echoes `X-Request-ID`, as every NextGenPSD2 response must.
    fn reply(&self, response: Response) -> Response {
        let mut response = response;
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert("x-request-id", value);
        }
        response
    }

    fn target(&self, service: Service, uses_consent: bool) -> Target {
        Target {
            provider: ProviderId::Psd2,
            bank: Some(self.bank),
            service: Some(service),
            uses_consent,
        }
    }

    fn attended(&self) -> bool {
        header(&self.headers, "psu-ip-address").is_some()
    }

    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The `/{bank}/v1` every path starts with, for a bank the sandbox holds.
fn at_bank() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::path::param::<BankId>()
        .map(|_| ())
        .untuple_one()
        .and(warp::path("v1"))
}

/// The preamble every endpoint runs once its path and method matched: a well-formed
/// `X-Request-ID`, then the faults' say over a call to `service` at the bank in the path.
/// What it answers itself goes back as an `Answered` rejection (see `answered.rs`).
fn admitted(
    state: Arc<SandboxState>,
    service: Service,
    uses_consent: bool,
) -> impl Filter<Extract = (Call,), Error = Rejection> + Clone {
    warp::path::full()
        .and(warp::header::headers_cloned())
        .and_then(move |path: FullPath, headers: HeaderMap| {
            let state = state.clone();
            async move {
                let bank = path
                    .as_str()
                    .split('/')
                    .nth(1)
                    .and_then(|b| b.parse::<BankId>().ok())
                    .ok_or_else(warp::reject::not_found)?;
                let request_id = match header(&headers, "x-request-id") {
                    Some(id) if uuid::Uuid::parse_str(id).is_ok() => id.to_owned(),
                    _ => {
                        return Err(Answered::reject(format_error(
                            "X-Request-ID is missing or not a UUID",
                        )));
                    }
                };
                let call = Call {
                    state,
                    bank,
                    request_id,
                    headers,
                };
                if let Some(failure) = call.state.gate(call.target(service, uses_consent)).await {
                    return Err(Answered::reject(call.reply(injected(failure))));
                }
                Ok(call)
            }
        })
}

pub fn routes(
    state: Arc<SandboxState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let body = warp::body::content_length_limit(BODY_LIMIT).and(warp::body::bytes());
    let aisp = |uses_consent| admitted(state.clone(), Service::Aisp, uses_consent);
    let pisp = admitted(state.clone(), Service::Pisp, false);

    let create_consent = at_bank()
        .and(warp::path!("consents"))
        .and(warp::post())
        .and(aisp(false))
        .and(body)
        .map(|call: Call, body: Bytes| call.reply(consents::create(&call, &body)));
    let consent = at_bank()
        .and(warp::path!("consents" / String))
        .and(warp::get())
        .and(aisp(false))
        .map(|id: String, call: Call| call.reply(consents::view(&call, &id, false)));
    let consent_status = at_bank()
        .and(warp::path!("consents" / String / "status"))
        .and(warp::get())
        .and(aisp(false))
        .map(|id: String, call: Call| call.reply(consents::view(&call, &id, true)));
    let delete_consent = at_bank()
        .and(warp::path!("consents" / String))
        .and(warp::delete())
        .and(aisp(false))
        .map(|id: String, call: Call| call.reply(consents::delete(&call, &id)));
    let accounts = at_bank()
        .and(warp::path!("accounts"))
        .and(warp::get())
        .and(aisp(true))
        .map(|call: Call| call.reply(accounts::read(&call, None, false)));
    let account = at_bank()
        .and(warp::path!("accounts" / String))
        .and(warp::get())
        .and(aisp(true))
        .map(|id: String, call: Call| call.reply(accounts::read(&call, Some(&id), false)));
    let balances = at_bank()
        .and(warp::path!("accounts" / String / "balances"))
        .and(warp::get())
        .and(aisp(true))
        .map(|id: String, call: Call| call.reply(accounts::read(&call, Some(&id), true)));
    let initiate = at_bank()
        .and(warp::path!("payments" / String))
        .and(warp::post())
        .and(pisp.clone())
        .and(body)
        .then(|product: String, call: Call, body: Bytes| async move {
            let response = call.reply(payments::initiate(&call, product, &body));
            if response.status() != StatusCode::CREATED {
                return response;
            }
            match call
                .state
                .after_payment(call.target(Service::Pisp, false))
                .await
            {
                Some(failure) if failure.kind == FaultKind::LostResponse => injected(failure),
                Some(failure) => spoil(response, failure.kind).await,
                None => response,
            }
        });
    let find = at_bank()
        .and(warp::path!("payments" / String))
        .and(warp::get())
        .and(warp::query::<payments::ReferenceQuery>())
        .and(pisp.clone())
        .map(
            |product: String, query: payments::ReferenceQuery, call: Call| {
                call.reply(payments::find(
                    &call,
                    &product,
                    &query.end_to_end_identification,
                ))
            },
        );
    let payment = at_bank()
        .and(warp::path!("payments" / String / String))
        .and(warp::get())
        .and(pisp.clone())
        .map(|product: String, id: String, call: Call| {
            call.reply(payments::view(&call, &product, &id, false))
        });
    let payment_status = at_bank()
        .and(warp::path!("payments" / String / String / "status"))
        .and(warp::get())
        .and(pisp)
        .map(|product: String, id: String, call: Call| {
            call.reply(payments::view(&call, &product, &id, true))
        });

    let api = create_consent
        .or(consent)
        .unify()
        .or(consent_status)
        .unify()
        .or(delete_consent)
        .unify()
        .or(accounts)
        .unify()
        .or(account)
        .unify()
        .or(balances)
        .unify()
        .or(initiate)
        .unify()
        .or(find)
        .unify()
        .or(payment)
        .unify()
        .or(payment_status)
        .unify();
    limited(move || state.limit(ProviderId::Psd2).check())
        .and(answering(api))
        .map(|limit: LimitState, response: Response| limit.stamp(response))
        .recover(rejection)
        .unify()
}

async fn rejection(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(
        if let Some(Throttled(limit)) = rejection.find::<Throttled>() {
            limit.stamp(tpp_error(
                StatusCode::TOO_MANY_REQUESTS,
                "ACCESS_EXCEEDED",
                "Too many requests.",
            ))
        } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
            format_error("Request body too large")
        } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
            tpp_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "SERVICE_INVALID",
                "The addressed service is not valid.",
            )
        } else {
            tpp_error(
                StatusCode::NOT_FOUND,
                "RESOURCE_UNKNOWN",
                "The addressed resource is unknown.",
            )
        },
    )
}
