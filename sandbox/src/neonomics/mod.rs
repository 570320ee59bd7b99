//! The simulated Neonomics API: OAuth2 client-credentials tokens, sessions naming a bank,
//! consent through an SCA link, accounts, balances, payments and the bank list.
//!
//! Errors use Neonomics' error object `{id, errorCode, message, source, type, timestamp,
//! links}` with its own statuses (<https://docs.neonomics.io/docs/error-handling>): 510 for
//! client errors, 520 for Neonomics' own, 530 for the bank's, and `type` one of the page's
//! `BAD_REQUEST`, `AUTH`, `CONSENT`, `NETWORK`, `FATAL`. The codes are the error-codes page's
//! (<https://docs.neonomics.io/docs/error-codes>: 1001 a missing header, 1002 a missing
//! parameter, 1003 an invalid account or payment id, 1004 an invalid end-user IP, 1005 an
//! invalid redirect URL) and 1426 / 1428, consent and payment authorisation required; a path
//! Neonomics does not have answers 2006, "API Not found", as integrators report it. The
//! faults' statuses Neonomics does not document (401, 403, 429, 503, 504), their codes, and
//! `source` beyond the page's `C` for a client error, are this simulator's.
//!
//! Here: the errors, the routes and the preamble every `/ics/v3` call runs (`admit`; the
//! calls in a session as one filter, `in_session`); the endpoints render in `token.rs`,
//! `sessions.rs` (banks, sessions, consent), `accounts.rs` and `payments.rs`.

mod accounts;
mod payments;
mod sessions;
mod token;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bankgate_actors::{BankId, ProviderId, Service};
use chrono::{DateTime, Utc};
use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::answered::{Answered, answering};
use crate::faults::{FaultKind, Injected, Target};
use crate::rate_limit::{LimitState, Throttled, limited};
use crate::{SandboxState, header};

const BODY_LIMIT: u64 = 64 * 1024;

/// Tokens and sessions Neonomics has handed out.
#[derive(Default)]
pub struct Book {
    tokens: HashMap<String, DateTime<Utc>>,
    /// Refresh tokens issued, each with when it stops being accepted.
    refresh_tokens: HashMap<String, DateTime<Utc>>,
    sessions: HashMap<String, Session>,
}

#[derive(Debug, Clone)]
struct Session {
    bank: BankId,
    psu: Option<String>,
    consent_id: Option<String>,
}

/// Builds a Neonomics error response.
fn error(
    status: u16,
    code: &str,
    message: impl Into<String>,
    source: &str,
    kind: &str,
) -> Response {
    let body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "errorCode": code,
        "message": message.into(),
        "source": source,
        "type": kind,
    });
    let status = StatusCode::from_u16(status).expect("valid status");
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// A client error (HTTP 510).
fn client_error(code: &str, message: impl Into<String>) -> Response {
    error(510, code, message, "C", "BAD_REQUEST")
}

fn consent_required(session_id: &str) -> Response {
    let body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "errorCode": "1426",
        "message": "Consent is required to access this resource",
        "source": "C",
        "type": "CONSENT",
        "timestamp": Utc::now().timestamp_millis(),
        "links": [{"type": "GET", "rel": "consent", "href": format!("/ics/v3/consent/{session_id}")}],
    });
    warp::reply::with_status(
        warp::reply::json(&body),
        StatusCode::from_u16(510).expect("valid"),
    )
    .into_response()
}

/// Renders an injected fault as Neonomics would answer: a fault naming a bank is the bank's
/// failure (530, source BANK), one without is Neonomics' own (520, source NEONOMICS).
fn injected(failure: Injected, session_id: Option<&str>) -> Response {
    let source = if failure.bank_scoped {
        "BANK"
    } else {
        "NEONOMICS"
    };
    match failure.kind {
        FaultKind::Error if failure.bank_scoped => error(
            530,
            "5300",
            "The bank returned an unexpected error",
            "BANK",
            "FATAL",
        ),
        FaultKind::Error => error(520, "5200", "Internal error", "NEONOMICS", "FATAL"),
        FaultKind::Timeout | FaultKind::LostResponse | FaultKind::Garbled | FaultKind::Reset => {
            error(
                504,
                "5040",
                "Timed out waiting for the bank",
                source,
                "NETWORK",
            )
        }
        FaultKind::RateLimit => {
            let mut response = error(
                429,
                "1429",
                "Rate limit exceeded",
                "NEONOMICS",
                "BAD_REQUEST",
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
        FaultKind::Unauthorized if failure.bank_scoped => error(
            403,
            "1403",
            "Access to this bank is revoked for the client",
            "NEONOMICS",
            "AUTH",
        ),
        FaultKind::Unauthorized => error(
            401,
            "1401",
            "Invalid or revoked client credentials",
            "NEONOMICS",
            "AUTH",
        ),
        FaultKind::ConsentExpired => consent_required(session_id.unwrap_or_default()),
        // `decide` never fails a request with latency or refuse; render them as an outage.
        FaultKind::Unavailable | FaultKind::Latency | FaultKind::Refuse => error(
            503,
            "1503",
            "Service temporarily unavailable",
            source,
            "NETWORK",
        ),
    }
}

pub fn routes(
    state: Arc<SandboxState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let headers = warp::header::headers_cloned();
    let body = warp::body::content_length_limit(BODY_LIMIT).and(warp::body::bytes());
    let aisp = in_session(state.clone(), Service::Aisp, true);
    let pisp = in_session(state.clone(), Service::Pisp, false);

    let token = warp::path!("auth" / "realms" / String / "protocol" / "openid-connect" / "token")
        .and(warp::post())
        .and(with_state.clone())
        .and(body)
        .then(token::token);
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state.clone())
        .then(token::health);
    let banks = warp::path!("ics" / "v3" / "banks")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(sessions::banks);
    let bank = warp::path!("ics" / "v3" / "banks" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(sessions::bank);
    let session = warp::path!("ics" / "v3" / "session")
        .and(warp::post())
        .and(with_state.clone())
        .and(headers)
        .and(body)
        .then(sessions::create_session);
    let consent = warp::path!("ics" / "v3" / "consent" / String)
        .and(warp::get())
        .and(with_state)
        .and(headers)
        .and(warp::query::<HashMap<String, String>>())
        .then(sessions::consent);
    let accounts = warp::path!("ics" / "v3" / "accounts")
        .and(warp::get())
        .and(aisp.clone())
        .map(|call: SessionCall| accounts::read(&call, None, false));
    let account = warp::path!("ics" / "v3" / "accounts" / String)
        .and(warp::get())
        .and(aisp.clone())
        .map(|id: String, call: SessionCall| accounts::read(&call, Some(&id), false));
    let balances = warp::path!("ics" / "v3" / "accounts" / String / "balances")
        .and(warp::get())
        .and(aisp)
        .map(|id: String, call: SessionCall| accounts::read(&call, Some(&id), true));
    let initiate = warp::path!("ics" / "v3" / "payments" / String)
        .and(warp::post())
        .and(pisp.clone())
        .and(body)
        .then(|product, call, body| payments::initiate(call, product, body));
    let payment = warp::path!("ics" / "v3" / "payments" / String / String)
        .and(warp::get())
        .and(pisp.clone())
        .map(|product: String, id: String, call: SessionCall| {
            payments::status(&call, &product, &id)
        });
    let authorize = warp::path!("ics" / "v3" / "payments" / String / String / "authorize")
        .and(warp::get())
        .and(pisp.clone())
        .map(|product: String, id: String, call: SessionCall| {
            payments::authorize(&call, &product, &id)
        });
    let complete = warp::path!("ics" / "v3" / "payments" / String / String / "complete")
        .and(warp::post())
        .and(pisp)
        .then(|product, id, call| payments::complete(call, product, id));

    let api = token
        .or(health)
        .unify()
        .or(banks)
        .unify()
        .or(bank)
        .unify()
        .or(session)
        .unify()
        .or(consent)
        .unify()
        .or(accounts)
        .unify()
        .or(account)
        .unify()
        .or(balances)
        .unify()
        .or(initiate)
        .unify()
        .or(payment)
        .unify()
        .or(authorize)
        .unify()
        .or(complete)
        .unify();
    limited(move || state.limit(ProviderId::Neonomics).check())
        .and(answering(api))
        .map(|limit: LimitState, response: Response| limit.stamp(response))
        .recover(rejection)
        .unify()
}

async fn rejection(rejection: Rejection) -> Result<Response, Infallible> {
    Ok(
        if let Some(Throttled(limit)) = rejection.find::<Throttled>() {
            limit.stamp(error(
                429,
                "1429",
                "Rate limit exceeded",
                "NEONOMICS",
                "BAD_REQUEST",
            ))
        } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
            error(413, "1413", "Request body too large", "C", "BAD_REQUEST")
        } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
            client_error("2006", "API Not found")
        } else {
            // A path Neonomics does not have (integrators report 510 with 2006).
            client_error("2006", "API Not found")
        },
    )
}

/// The target of a request without a bank (token, bank list, health).
fn provider_target() -> Target {
    Target {
        provider: ProviderId::Neonomics,
        bank: None,
        service: None,
        uses_consent: false,
    }
}

impl Book {
    fn token_valid(&self, headers: &HeaderMap) -> bool {
        let token = header(headers, "authorization").and_then(|v| v.strip_prefix("Bearer "));
        token
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|expiry| *expiry > Utc::now())
    }
}

/// Checks the bearer token and the device id every `/ics/v3` call needs.
fn authenticate(state: &SandboxState, headers: &HeaderMap) -> Result<(), Response> {
    if !state.neonomics.lock().expect("book").token_valid(headers) {
        return Err(error(
            401,
            "1400",
            "Missing, invalid or expired access token",
            "C",
            "AUTH",
        ));
    }
    if header(headers, "x-device-id").is_none() {
        return Err(client_error("1001", "Missing required header x-device-id"));
    }
    Ok(())
}

fn session(state: &SandboxState, id: Option<&str>) -> Option<Session> {
    state
        .neonomics
        .lock()
        .expect("book")
        .sessions
        .get(id?)
        .cloned()
}

/// The preamble of every `/ics/v3` call: the faults' say over a call to `target`, then the
/// bearer token and the device id. `session_id` is what a consent fault's 1426 links to.
async fn admit(
    state: &SandboxState,
    target: Target,
    headers: &HeaderMap,
    session_id: Option<&str>,
) -> Result<(), Response> {
    if let Some(failure) = state.gate(target).await {
        return Err(injected(failure, session_id));
    }
    authenticate(state, headers)
}

/// A call in a session that passed the preamble.
struct SessionCall {
    state: Arc<SandboxState>,
    session_id: String,
    session: Session,
    headers: HeaderMap,
    /// What the faults saw the call as.
    target: Target,
}

impl SessionCall {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The preamble of the calls made in a session (accounts, payments), as one filter run once
/// the route's path and method matched: the session named by `x-session-id` decides the bank
/// the faults see, then `admit`, then the session must exist. What it answers itself goes
/// back as an `Answered` rejection (see `answered.rs`).
fn in_session(
    state: Arc<SandboxState>,
    service: Service,
    uses_consent: bool,
) -> impl Filter<Extract = (SessionCall,), Error = Rejection> + Clone {
    warp::header::headers_cloned().and_then(move |headers: HeaderMap| {
        let state = state.clone();
        async move {
            let session_id = header(&headers, "x-session-id").map(str::to_owned);
            let found = session(&state, session_id.as_deref());
            let target = Target {
                provider: ProviderId::Neonomics,
                bank: found.as_ref().map(|s| s.bank),
                service: Some(service),
                uses_consent,
            };
            admit(&state, target, &headers, session_id.as_deref())
                .await
                .map_err(Answered::reject)?;
            let (Some(session_id), Some(session)) = (session_id, found) else {
                return Err(Answered::reject(client_error(
                    "1003",
                    "Missing, unknown or expired x-session-id",
                )));
            };
            Ok(SessionCall {
                state,
                session_id,
                session,
                headers,
                target,
            })
        }
    })
}
