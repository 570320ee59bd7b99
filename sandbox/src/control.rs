//! The sandbox's control API (faults, ledger, consents, webhooks) and the SCA pages a user's
//! browser is sent to. Errors use bankgate's envelope `{error, message, details}`.

use std::convert::Infallible;
use std::sync::Arc;

use bankgate_actors::{BankId, ProviderId, Service, WebhookSource};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::SandboxState;
use super::faults::FaultSpec;
use super::webhooks::WebhookTarget;
use super::world::TransactionStatus;
use crate::http::error::recover;
use crate::http::{ApiError, ErrorCode};

const BODY_LIMIT: u64 = 16 * 1024;

pub fn routes(
    state: Arc<SandboxState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with_state = warp::any().map(move || state.clone());

    let health = warp::path!("sandbox" / "health")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());
    let add_fault = warp::path!("sandbox" / "faults")
        .and(warp::post())
        .and(with_state.clone())
        .and(json_body())
        .map(
            |state: Arc<SandboxState>, spec: FaultSpec| match state.faults.add(spec) {
                Ok(fault) => {
                    warp::reply::with_status(warp::reply::json(&fault), StatusCode::CREATED)
                        .into_response()
                }
                Err(error) => error.into_response(),
            },
        );
    let list_faults = warp::path!("sandbox" / "faults")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<SandboxState>| {
            warp::reply::json(&json!({"faults": state.faults.list()})).into_response()
        });
    let clear_faults = warp::path!("sandbox" / "faults")
        .and(warp::delete())
        .and(with_state.clone())
        .map(|state: Arc<SandboxState>| {
            state.faults.clear();
            no_content()
        });
    let remove_fault = warp::path!("sandbox" / "faults" / u64)
        .and(warp::delete())
        .and(with_state.clone())
        .map(|id: u64, state: Arc<SandboxState>| {
            if state.faults.remove(id) {
                no_content()
            } else {
                ApiError::not_found(format!("no fault {id}")).into_response()
            }
        });
    let ledger = warp::path!("sandbox" / "ledger")
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::query::<LedgerFilter>())
        .map(ledger);
    let requests = warp::path!("sandbox" / "requests")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<SandboxState>| {
            let counts = state.requests.lock().expect("requests");
            let list: Vec<_> = counts
                .iter()
                .map(|(key, &count)| RequestCount {
                    provider: key.provider,
                    bank: key.bank,
                    service: key.service,
                    count,
                })
                .collect();
            warp::reply::json(&json!({"requests": list})).into_response()
        });
    let accounts = warp::path!("sandbox" / "accounts")
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::query::<AccountsQuery>())
        .map(|state: Arc<SandboxState>, query: AccountsQuery| {
            let psu = query
                .psu
                .unwrap_or_else(|| super::world::DEFAULT_PSU.to_owned());
            let accounts = state
                .world
                .lock()
                .expect("world")
                .accounts_of(query.bank, &psu);
            warp::reply::json(&json!({"accounts": accounts})).into_response()
        });
    let sca = warp::path!("sandbox" / "sca" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::query::<ScaQuery>())
        .map(sca);
    let consents = warp::path!("sandbox" / "consents")
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<SandboxState>| {
            let world = state.world.lock().expect("world");
            warp::reply::json(&json!({"consents": world.consents()})).into_response()
        });
    let expire_consent = warp::path!("sandbox" / "consents" / String / "expire")
        .and(warp::post())
        .and(with_state.clone())
        .map(|id: String, state: Arc<SandboxState>| {
            match state.world.lock().expect("world").expire_consent(&id) {
                Some(consent) => warp::reply::json(&consent).into_response(),
                None => ApiError::not_found(format!("no consent {id}")).into_response(),
            }
        });
    let register_webhook = webhook_source()
        .and(warp::put())
        .and(with_state.clone())
        .and(json_body())
        .map(
            |source: WebhookSource, state: Arc<SandboxState>, target: WebhookTarget| {
                if !super::is_redirect_url(&target.url) {
                    return ApiError::invalid_field("url", "must be an absolute http(s) URL")
                        .into_response();
                }
                if target.secret.len() < 16 {
                    return ApiError::invalid_field("secret", "must be at least 16 characters")
                        .into_response();
                }
                state.webhooks.register(source, target);
                no_content()
            },
        );
    let unregister_webhook = webhook_source().and(warp::delete()).and(with_state).map(
        |source: WebhookSource, state: Arc<SandboxState>| {
            if state.webhooks.unregister(source) {
                no_content()
            } else {
                ApiError::not_found(format!("no webhook for {source}")).into_response()
            }
        },
    );

    health
        .or(add_fault)
        .unify()
        .or(list_faults)
        .unify()
        .or(clear_faults)
        .unify()
        .or(remove_fault)
        .unify()
        .or(ledger)
        .unify()
        .or(requests)
        .unify()
        .or(accounts)
        .unify()
        .or(sca)
        .unify()
        .or(consents)
        .unify()
        .or(expire_consent)
        .unify()
        .or(register_webhook)
        .unify()
        .or(unregister_webhook)
        .unify()
        .recover(recover)
        .unify()
}

fn json_body<T: serde::de::DeserializeOwned + Send>()
-> impl Filter<Extract = (T,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(BODY_LIMIT).and(warp::body::json())
}

fn no_content() -> Response {
    warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response()
}

/// The ledger's filters (`GET /sandbox/ledger?provider=&bank=&request_id=&end_to_end_id=`);
/// the default lists every payment.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank: Option<BankId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_to_end_id: Option<String>,
}

/// How many calls one provider received for one bank and service (`GET /sandbox/requests`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct RequestCount {
    pub provider: ProviderId,
    pub bank: Option<BankId>,
    pub service: Option<Service>,
    pub count: u64,
}

fn ledger(state: Arc<SandboxState>, query: LedgerFilter) -> Response {
    let world = state.world.lock().expect("world");
    let entries: Vec<_> = world
        .ledger()
        .iter()
        .filter(|p| query.provider.is_none_or(|v| v == p.provider))
        .filter(|p| query.bank.is_none_or(|v| v == p.bank))
        .filter(|p| {
            query
                .request_id
                .as_ref()
                .is_none_or(|v| Some(v) == p.request_id.as_ref())
        })
        .filter(|p| {
            query
                .end_to_end_id
                .as_ref()
                .is_none_or(|v| Some(v) == p.end_to_end_id.as_ref())
        })
        .collect();
    warp::reply::json(&json!({"entries": entries})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsQuery {
    bank: BankId,
    psu: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ScaResult {
    #[default]
    Approve,
    Reject,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaQuery {
    #[serde(default)]
    result: ScaResult,
    psu: Option<String>,
}

/// The user's SCA: approves (or rejects) the consent or payment and sends the browser back.
fn sca(id: String, state: Arc<SandboxState>, query: ScaQuery) -> Response {
    let approve = matches!(query.result, ScaResult::Approve);
    let outcome =
        state
            .world
            .lock()
            .expect("world")
            .complete_sca(&id, approve, query.psu, Utc::now());
    let Some(outcome) = outcome else {
        return ApiError::not_found("unknown or expired SCA link").into_response();
    };
    if let Some(payment) = &outcome.payment {
        state.webhooks.payment_changed(&state.http, payment);
    }
    let redirect_url = match &outcome.payment {
        // Neonomics returns the browser with the payment's id and the SCA's result
        // (<https://docs.neonomics.io/reference/initiatedomesticpayment>, `x-redirect-url`).
        Some(payment) if payment.provider == ProviderId::Neonomics => {
            let result = if payment.status == TransactionStatus::Rejected {
                "FAILED"
            } else {
                "OK"
            };
            with_query(
                &outcome.redirect_url,
                &[("resource_id", &payment.payment_id), ("result", result)],
            )
        }
        _ => outcome.redirect_url.clone(),
    };
    match redirect_url.parse::<warp::http::Uri>() {
        Ok(uri) => warp::redirect::found(uri).into_response(),
        Err(_) => ApiError::new(
            ErrorCode::Unprocessable,
            "the caller's redirect URL cannot be followed",
        )
        .into_response(),
    }
}

/// The webhook source a `/sandbox/webhooks/{source}` path names: `neonomics`, `psd2/dnb`.
fn webhook_source() -> impl Filter<Extract = (WebhookSource,), Error = Rejection> + Clone {
    warp::path!("sandbox" / "webhooks" / ..)
        .and(warp::path::tail())
        .and_then(|tail: warp::path::Tail| async move {
            tail.as_str()
                .parse::<WebhookSource>()
                .map_err(|_| warp::reject::not_found())
        })
}

/// `url` with `pairs` added to its query.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.into()
        }
        Err(_) => url.to_owned(),
    }
}
