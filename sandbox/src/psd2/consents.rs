//! Consents: `POST /consents` (redirect SCA), `GET /consents/{id}` and its `/status`,
//! `DELETE /consents/{id}`, as NextGenPSD2 1.3.12 specifies them.

use bankgate_actors::ProviderId;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::is_redirect_url;
use crate::world::{Consent, ConsentProblem, NewConsent};

use super::{Call, bare, consent_problem, format_error, tpp_error};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsentRequest {
    access: serde_json::Map<String, serde_json::Value>,
    recurring_indicator: bool,
    valid_until: NaiveDate,
    frequency_per_day: u32,
    combined_service_indicator: bool,
}

pub(super) fn create(call: &Call, body: &[u8]) -> Response {
    let state = &call.state;
    let request: ConsentRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return format_error(format!("Invalid consent request: {e}")),
    };
    if request.access.is_empty() {
        return format_error("access must name what the consent covers");
    }
    if request.frequency_per_day == 0
        || (!request.recurring_indicator && request.frequency_per_day != 1)
    {
        return format_error("frequencyPerDay must be at least 1, and 1 for a one-off consent");
    }
    if request.combined_service_indicator {
        return tpp_error(
            StatusCode::BAD_REQUEST,
            "SESSIONS_NOT_SUPPORTED",
            "Combined sessions are not supported.",
        );
    }
    let today = Utc::now().date_naive();
    if request.valid_until < today {
        return format_error("validUntil lies in the past");
    }
    let Some(redirect_url) = call
        .header("tpp-redirect-uri")
        .filter(|u| is_redirect_url(u))
    else {
        return format_error("TPP-Redirect-URI is required (redirect SCA approach)");
    };
    let new = NewConsent {
        provider: ProviderId::Psd2,
        bank: call.bank,
        psu: call.header("psu-id").map(str::to_owned),
        requested_until: Some(request.valid_until),
        frequency_per_day: request.frequency_per_day,
        redirect_url: redirect_url.to_owned(),
    };
    let consent = state
        .world
        .lock()
        .expect("world")
        .create_consent(new, Utc::now());
    let base = format!("/{}/v1/consents/{}", call.bank, consent.id);
    let body = json!({
        "consentStatus": consent.status,
        "consentId": consent.id,
        "_links": {
            "scaRedirect": {"href": state.sca_url(&consent.sca_id)},
            "self": {"href": base},
            "status": {"href": format!("{base}/status")},
        },
    });
    warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response()
}

pub(super) fn view(call: &Call, id: &str, status_only: bool) -> Response {
    let state = &call.state;
    let mut world = state.world.lock().expect("world");
    let Some(status) = world.consent_status(id, Utc::now()) else {
        return consent_problem(ConsentProblem::Unknown);
    };
    if status_only {
        return warp::reply::json(&json!({"consentStatus": status})).into_response();
    }
    let consent: &Consent = world.consent(id).expect("status was found");
    warp::reply::json(&json!({
        "access": {"allPsd2": "allAccounts"},
        "recurringIndicator": consent.frequency_per_day > 1,
        "validUntil": consent.valid_until.date_naive(),
        "frequencyPerDay": consent.frequency_per_day,
        "lastActionDate": Utc::now().date_naive(),
        "consentStatus": status,
    }))
    .into_response()
}

pub(super) fn delete(call: &Call, id: &str) -> Response {
    match call
        .state
        .world
        .lock()
        .expect("world")
        .terminate_consent(id)
    {
        Some(_) => bare(StatusCode::NO_CONTENT),
        None => consent_problem(ConsentProblem::Unknown),
    }
}
