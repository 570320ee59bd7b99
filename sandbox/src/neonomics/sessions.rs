//! The calls before a session has a consent: the bank list and one bank (what a health probe
//! reads), `POST /ics/v3/session` naming a bank by Neonomics' own id for it, and
//! `GET /ics/v3/consent/{sessionId}` with the SCA link.

use std::collections::HashMap;
use std::sync::Arc;

use bankgate_actors::{BankId, ProviderId, Service};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use warp::Reply;
use warp::http::HeaderMap;
use warp::hyper::body::Bytes;
use warp::reply::Response;

use crate::faults::{Fault, FaultKind, Target};
use crate::world::NewConsent;
use crate::{SandboxState, header, is_redirect_url};

use super::{Session, admit, client_error, provider_target, session};

pub(super) async fn banks(state: Arc<SandboxState>, headers: HeaderMap) -> Response {
    if let Err(response) = admit(&state, provider_target(), &headers, None).await {
        return response;
    }
    let faults = state.faults.list();
    let list: Vec<_> = BankId::ALL
        .into_iter()
        .map(|bank| bank_view(&faults, bank))
        .collect();
    warp::reply::json(&list).into_response()
}

/// Neonomics' id for a bank: its own, opaque, not the BIC (the session's `bankId` "comes from
/// the 'id' parameter in the response body from a call to the '/banks' API",
/// <https://docs.neonomics.io/reference/createsession>). The documentation gives no format;
/// this simulator's is a stable hash.
pub(super) fn neonomics_bank_id(bank: BankId) -> String {
    crate::accounts::stable_id(&["neonomics-bank", bank.bic()])
}

fn bank_of(id: &str) -> Option<BankId> {
    BankId::ALL
        .into_iter()
        .find(|bank| neonomics_bank_id(*bank) == id)
}

/// One bank by its id: what a health probe of the path to the bank reads. Faults for the bank
/// apply to it as to any call that reaches the bank.
pub(super) async fn bank(id: String, state: Arc<SandboxState>, headers: HeaderMap) -> Response {
    let Some(bank) = bank_of(&id) else {
        return client_error("1002", "Invalid bank id");
    };
    let target = Target {
        bank: Some(bank),
        ..provider_target()
    };
    if let Err(response) = admit(&state, target, &headers, None).await {
        return response;
    }
    warp::reply::json(&bank_view(&state.faults.list(), bank)).into_response()
}

/// A bank as Neonomics lists it, `UNAVAILABLE` while a fault takes it down.
fn bank_view(faults: &[Fault], bank: BankId) -> serde_json::Value {
    let down = faults.iter().any(|f| {
        f.provider == ProviderId::Neonomics
            && f.bank.is_none_or(|b| b == bank)
            && !matches!(f.kind, FaultKind::Latency | FaultKind::ConsentExpired)
    });
    json!({
        "id": neonomics_bank_id(bank),
        "bic": bank.bic(),
        "bankDisplayName": bank.display_name(),
        "bankOfficialName": bank.display_name(),
        "bankingGroupName": bank.display_name(),
        "countryCode": "NO",
        "personalIdentificationRequired": false,
        "status": if down { "UNAVAILABLE" } else { "AVAILABLE" },
        "supportedServices": ["AIS", "PIS"],
        "lastChecked": Utc::now(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSession {
    bank_id: Option<String>,
}

pub(super) async fn create_session(
    state: Arc<SandboxState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bank = serde_json::from_slice::<NewSession>(&body)
        .ok()
        .and_then(|s| s.bank_id)
        .and_then(|id| bank_of(&id));
    let target = Target {
        bank,
        ..provider_target()
    };
    if let Err(response) = admit(&state, target, &headers, None).await {
        return response;
    }
    let Some(bank) = bank else {
        // "1002 … Create Session: Include … bankId" (https://docs.neonomics.io/docs/error-codes).
        return client_error("1002", "Missing required parameter: bankId from /banks");
    };
    let session_id = uuid::Uuid::new_v4().to_string();
    let psu = header(&headers, "x-psu-id").map(str::to_owned);
    state.neonomics.lock().expect("book").sessions.insert(
        session_id.clone(),
        Session {
            bank,
            psu,
            consent_id: None,
        },
    );
    warp::reply::json(&json!({"sessionId": session_id})).into_response()
}

/// `GET /ics/v3/consent/{sessionId}?scope=…`, called as a 1426 error instructs: `scope` is
/// required, one of `accounts`, `payments`, `business-accounts`
/// (<https://docs.neonomics.io/reference/initiateconsent-1>); the browser comes back to
/// `x-redirect-url`.
pub(super) async fn consent(
    session_id: String,
    state: Arc<SandboxState>,
    headers: HeaderMap,
    query: HashMap<String, String>,
) -> Response {
    let found = session(&state, Some(&session_id));
    let target = Target {
        provider: ProviderId::Neonomics,
        bank: found.as_ref().map(|s| s.bank),
        service: Some(Service::Aisp),
        uses_consent: false,
    };
    if let Err(response) = admit(&state, target, &headers, Some(&session_id)).await {
        return response;
    }
    let Some(found) = found else {
        return client_error("1003", "Unknown or expired session");
    };
    let scopes = ["accounts", "payments", "business-accounts"];
    if !query
        .get("scope")
        .is_some_and(|s| scopes.contains(&s.as_str()))
    {
        return client_error("1002", "Missing required parameter: scope");
    }
    let Some(redirect_url) = header(&headers, "x-redirect-url").filter(|u| is_redirect_url(u))
    else {
        return client_error("1005", "Missing or invalid header x-redirect-url");
    };
    let new = NewConsent {
        provider: ProviderId::Neonomics,
        bank: found.bank,
        psu: found.psu.clone(),
        requested_until: None,
        // Neonomics reads on the user's behalf; the per-day limit is the banks' PSD2 rule.
        frequency_per_day: u32::MAX,
        redirect_url: redirect_url.to_owned(),
    };
    let consent = state
        .world
        .lock()
        .expect("world")
        .create_consent(new, Utc::now());
    if let Some(session) = state
        .neonomics
        .lock()
        .expect("book")
        .sessions
        .get_mut(&session_id)
    {
        session.consent_id = Some(consent.id.clone());
    }
    warp::reply::json(&json!({
        "links": [{
            "type": "GET",
            "rel": "consent",
            "href": state.sca_url(&consent.sca_id),
            "meta": {"id": consent.id, "validUntil": consent.valid_until},
        }]
    }))
    .into_response()
}
