//! Account information in a session: `GET /ics/v3/accounts`, `/accounts/{id}` and
//! `/accounts/{id}/balances`, answering 1426 (consent required) until the session's consent
//! is authorised (<https://docs.neonomics.io/docs/accounts-1>). An account carries
//! `ownerName` and `displayName` (<https://docs.neonomics.io/docs/changelog>); its
//! `accountType` and a balance's `type` are the codes of
//! <https://docs.neonomics.io/docs/iso-codes> (`CACC`, `SVGS`; `AVLB`); an account id not
//! from the list is 1003, "Invalid account id" (<https://docs.neonomics.io/docs/error-codes>).

use bankgate_actors::ProviderId;
use chrono::Utc;
use serde_json::json;
use warp::Reply;
use warp::reply::Response;

use crate::world::{Account, ConsentProblem};

use super::{SessionCall, client_error, consent_required};

/// Serves the account list (`account_id` = None), one account, or its balances.
pub(super) fn read(call: &SessionCall, account_id: Option<&str>, balances: bool) -> Response {
    let mut world = call.state.world.lock().expect("world");
    let consent = match call.session.consent_id.as_deref() {
        Some(id) => world.authorize_read(id, true, Utc::now()),
        None => Err(ConsentProblem::Unknown),
    };
    let consent = match consent {
        Ok(consent) => consent,
        Err(_) => return consent_required(&call.session_id),
    };
    let psu = consent.psu.clone().unwrap_or_default();
    let render = |a: &Account| {
        json!({
            "id": a.id_at(ProviderId::Neonomics),
            "iban": a.iban,
            "bban": a.bban,
            "accountName": a.name,
            "accountType": a.product,
            "ownerName": a.owner,
            "displayName": a.name,
            "currency": a.currency,
        })
    };
    let Some(account_id) = account_id else {
        let list: Vec<_> = world
            .accounts_of(call.session.bank, &psu)
            .iter()
            .map(render)
            .collect();
        return warp::reply::json(&list).into_response();
    };
    let Some(account) = world.consented_account(&consent.id, ProviderId::Neonomics, account_id)
    else {
        return client_error("1003", "Invalid account id");
    };
    if balances {
        warp::reply::json(&json!([{
            "type": "AVLB",
            "amount": account.balance,
            "currency": account.currency,
        }]))
        .into_response()
    } else {
        warp::reply::json(&render(&account)).into_response()
    }
}
