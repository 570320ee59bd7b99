//! Payments in a session: `POST /ics/v3/payments/{product}` (SCA through a link),
//! `GET /ics/v3/payments/{product}/{id}`, and the look-up by end-to-end reference.
//!
//! From Neonomics' pages: the amount is `instrumentedAmount`, a decimal string, beside
//! `currency`, `debtorAccount`, `creditorAccount`, `creditorName`, `endToEndIdentification`
//! and `remittanceInformationUnstructured` (the body of the payments guide's example, as
//! integrators' copies of <https://docs.neonomics.io/docs/payments-1> show it; the reference
//! pages hide the field names). Refusals carry the error codes of
//! <https://docs.neonomics.io/docs/error-codes>: 1002 a missing required parameter, 1003 an
//! invalid account or payment id, 1004 a missing or invalid `x-psu-ip-address`, 1005 an
//! invalid redirect URL, all as 510 client errors.

use bankgate_actors::ProviderId;
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;
use warp::hyper::body::Bytes;
use warp::reply::Response;

use crate::faults::FaultKind;
use crate::spoiled::spoil;
use crate::world::{NewPayment, Payment};
use crate::{AccountRef, is_redirect_url};

use super::{SessionCall, client_error, injected};

/// The payment products this simulated Neonomics offers.
const PRODUCTS: [&str; 2] = ["domestic-transfer", "cross-border-transfer"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    debtor_account: AccountRef,
    creditor_account: AccountRef,
    creditor_name: String,
    instrumented_amount: String,
    currency: String,
    end_to_end_identification: Option<String>,
    remittance_information_unstructured: Option<String>,
}

pub(super) async fn initiate(call: SessionCall, product: String, body: Bytes) -> Response {
    let state = &call.state;
    if !PRODUCTS.contains(&product.as_str()) {
        return client_error("1320", format!("Unsupported payment product {product}"));
    }
    if call.header("x-psu-ip-address").is_none() {
        return client_error("1004", "Invalid x-psu-ip-address");
    }
    let Some(redirect_url) = call.header("x-redirect-url").filter(|u| is_redirect_url(u)) else {
        return client_error("1005", "Missing or invalid header x-redirect-url");
    };
    let body: PaymentBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return client_error("1002", format!("Missing required parameter: {e}")),
    };
    let invalid = |what: &str| client_error("1002", format!("Missing required parameter: {what}"));
    let Some(debtor) = body.debtor_account.number() else {
        return client_error("1003", "Invalid account id: debtorAccount");
    };
    let Some(creditor) = body.creditor_account.number() else {
        return client_error("1003", "Invalid account id: creditorAccount");
    };
    let amount = match body.instrumented_amount.parse::<Decimal>() {
        Ok(amount) if amount > Decimal::ZERO && amount.scale() <= 2 => amount,
        _ => return invalid("instrumentedAmount"),
    };
    if body.currency != "NOK" {
        return invalid("currency (only NOK accounts are held here)");
    }
    if body.creditor_name.trim().is_empty() || body.creditor_name.len() > 70 {
        return invalid("creditorName");
    }
    let new = NewPayment {
        provider: ProviderId::Neonomics,
        bank: call.session.bank,
        product,
        request_id: call.header("x-request-id").map(str::to_owned),
        end_to_end_id: body.end_to_end_identification,
        amount,
        currency: body.currency,
        debtor_account: debtor,
        creditor_name: body.creditor_name,
        creditor_account: creditor,
        remittance_info: body.remittance_information_unstructured,
        redirect_url: redirect_url.to_owned(),
    };
    let created = state
        .world
        .lock()
        .expect("world")
        .create_payment(new, Utc::now());
    let payment = match created {
        Ok(payment) => payment,
        Err(reason) => return invalid(reason),
    };
    let answer = warp::reply::with_status(
        warp::reply::json(&json!({
            "paymentId": payment.payment_id,
            "status": payment.status,
            "links": [{"type": "GET", "rel": "sca", "href": state.sca_url(&payment.sca_id)}],
        })),
        StatusCode::CREATED,
    )
    .into_response();
    match state.after_payment(call.target).await {
        Some(failure) if failure.kind == FaultKind::LostResponse => {
            injected(failure, Some(&call.session_id))
        }
        Some(failure) => spoil(answer, failure.kind).await,
        None => answer,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReferenceQuery {
    end_to_end_identification: String,
}

/// Lists the session's payments with an end-to-end reference: the simulator's way for a TPP
/// to find a payment whose initiation answer was lost.
pub(super) fn find(call: &SessionCall, product: &str, query: &ReferenceQuery) -> Response {
    let state = &call.state;
    let world = state.world.lock().expect("world");
    let payments: Vec<_> = world
        .payments_by_reference(
            ProviderId::Neonomics,
            call.session.bank,
            product,
            &query.end_to_end_identification,
        )
        .into_iter()
        .map(|payment| {
            let mut rendered = render_payment(payment);
            rendered["links"] =
                json!([{"type": "GET", "rel": "sca", "href": state.sca_url(&payment.sca_id)}]);
            rendered
        })
        .collect();
    warp::reply::json(&payments).into_response()
}

fn render_payment(payment: &Payment) -> serde_json::Value {
    json!({
        "paymentId": payment.payment_id,
        "status": payment.status,
        "instrumentedAmount": payment.amount,
        "currency": payment.currency,
        "creditorName": payment.creditor_name,
        "endToEndIdentification": payment.end_to_end_id,
        "updatedAt": payment.updated_at,
    })
}

pub(super) fn status(call: &SessionCall, product: &str, payment_id: &str) -> Response {
    let world = call.state.world.lock().expect("world");
    match world.payment(ProviderId::Neonomics, call.session.bank, payment_id) {
        Some(payment) if payment.product == product => {
            warp::reply::json(&render_payment(payment)).into_response()
        }
        _ => client_error("1003", "Invalid payment id"),
    }
}
