//! Account information: `GET /accounts`, `/accounts/{id}` and `/accounts/{id}/balances`
//! under a consent, counting unattended reads against its `frequencyPerDay`.

use bankgate_actors::{BankId, ProviderId};
use chrono::Utc;
use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::world::{Account, ConsentProblem};

use super::{Call, consent_problem, format_error, tpp_error};

fn render_account(bank: BankId, account: &Account) -> serde_json::Value {
    let id = account.id_at(ProviderId::Psd2);
    json!({
        "resourceId": id,
        "iban": account.iban,
        "bban": account.bban,
        "currency": account.currency,
        "name": account.name,
        "ownerName": account.owner,
        "cashAccountType": account.product,
        "status": "enabled",
        "_links": {"balances": {"href": format!("/{bank}/v1/accounts/{id}/balances")}},
    })
}

pub(super) fn read(call: &Call, account_id: Option<&str>, balances: bool) -> Response {
    let state = &call.state;
    let Some(consent_id) = call.header("consent-id") else {
        return format_error("Consent-ID is required");
    };
    let mut world = state.world.lock().expect("world");
    let consent = match world.authorize_read(consent_id, call.attended(), Utc::now()) {
        Ok(consent) if consent.bank == call.bank && consent.provider == ProviderId::Psd2 => consent,
        Ok(_) => return consent_problem(ConsentProblem::Unknown),
        Err(problem) => return consent_problem(problem),
    };
    let Some(account_id) = account_id else {
        let psu = consent.psu.clone().unwrap_or_default();
        let list: Vec<_> = world
            .accounts_of(call.bank, &psu)
            .iter()
            .map(|a| render_account(call.bank, a))
            .collect();
        return warp::reply::json(&json!({"accounts": list})).into_response();
    };
    let Some(account) = world.consented_account(&consent.id, ProviderId::Psd2, account_id) else {
        return tpp_error(
            StatusCode::NOT_FOUND,
            "RESOURCE_UNKNOWN",
            "The addressed account is unknown.",
        );
    };
    if !balances {
        return warp::reply::json(&json!({"account": render_account(call.bank, &account)}))
            .into_response();
    }
    warp::reply::json(&json!({
        "account": {"iban": account.iban},
        "balances": [{
            "balanceAmount": {"currency": account.currency, "amount": account.balance},
            "balanceType": "interimAvailable",
            "lastChangeDateTime": Utc::now(),
            "referenceDate": Utc::now().date_naive(),
        }],
    }))
    .into_response()
}
