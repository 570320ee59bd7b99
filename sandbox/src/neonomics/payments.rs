//! Payments in a session, as Neonomics' payments guide walks them
//! (<https://docs.neonomics.io/docs/payments-1>): initiate → 510 with errorCode 1428 and the
//! authorize link → authorize (the bank's SCA link) → the PSU's SCA, after which the browser
//! returns to `x-redirect-url` with `resource_id` (the payment id) and `result` (`OK` or
//! `FAILED`) → complete → status by id.
//!
//! From Neonomics' pages:
//! - the products are `domestic-transfer`, `domestic-scheduled-transfer`, `sepa-credit` and
//!   `sepa-scheduled-credit` (<https://docs.neonomics.io/reference/completepayment>; the fifth,
//!   `batch-transfer`, is not simulated and answers as an unknown path does);
//! - the body: `debtorAccount`, `debtorName`, `creditorAccount`, `creditorName`, `currency`
//!   are required, the amount is `instrumentedAmount`, a decimal string, and either
//!   `remittanceInformationUnstructured` or `remittanceInformationStructured` must be given
//!   (<https://docs.neonomics.io/reference/domesticscheduledpayment>, the payments guide's
//!   example body); the scheduled products need `requestedExecutionDate`; SEPA is always EUR
//!   to an IBAN (<https://docs.neonomics.io/reference/sepascheduledpayment>); the instant
//!   domestic transfer takes no structured remittance
//!   (<https://docs.neonomics.io/reference/initiatedomesticpayment>);
//! - 1428's error object carries the authorize link, `{type: GET, rel: payment, href,
//!   meta: {id}}` (<https://docs.neonomics.io/docs/error-handling>);
//! - authorize answers the SCA link, with the payment's id in `meta.paymentIds`
//!   (<https://docs.neonomics.io/reference/continueauth>);
//! - complete settles a payment whose SCA was carried out, and must always be called
//!   (<https://docs.neonomics.io/reference/completepayment>);
//! - `GET /ics/v3/payments/{product}/{paymentId}` gives the status; the session and the payment
//!   must belong to the same bank (<https://docs.neonomics.io/reference/getpaymentbyid>);
//! - refusals carry the codes of <https://docs.neonomics.io/docs/error-codes>: 1002 a missing
//!   required parameter, 1003 an invalid account or payment id, 1004 a missing or invalid
//!   `x-psu-ip-address`, 1005 an invalid redirect URL, all 510.
//!
//! Where the pages are silent, this simulator chose: initiation always needs SCA (no
//! exemption), `endToEndIdentification` is required, complete is a `POST` answering 200 with
//! `{paymentId, status, creationDateTime}` (as integrators' clients call it), a repeated
//! complete answers the payment as it stands without settling it again, complete before the
//! SCA answers 1428 again, and the SCA link's `rel` is `sca`. There is no look-up of a payment
//! by its end-to-end reference: Neonomics documents none.

use bankgate_actors::ProviderId;
use chrono::{NaiveDate, Utc};
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

/// The single-payment products of <https://docs.neonomics.io/reference/completepayment>.
const PRODUCTS: [&str; 4] = [
    "domestic-transfer",
    "domestic-scheduled-transfer",
    "sepa-credit",
    "sepa-scheduled-credit",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    debtor_account: AccountRef,
    debtor_name: String,
    creditor_account: AccountRef,
    creditor_name: String,
    instrumented_amount: String,
    currency: String,
    end_to_end_identification: String,
    remittance_information_unstructured: Option<String>,
    remittance_information_structured: Option<serde_json::Value>,
    requested_execution_date: Option<NaiveDate>,
}

pub(super) async fn initiate(call: SessionCall, product: String, body: Bytes) -> Response {
    let state = &call.state;
    if !PRODUCTS.contains(&product.as_str()) {
        return client_error("2006", "API Not found");
    }
    if call.header("x-psu-ip-address").is_none() {
        return client_error("1004", "Invalid x-psu-ip-address");
    }
    let Some(redirect_url) = call.header("x-redirect-url").filter(|u| is_redirect_url(u)) else {
        return client_error("1005", "Invalid redirect URL");
    };
    let body: PaymentBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return client_error("1002", format!("Missing required parameter: {e}")),
    };
    let missing = |what: &str| client_error("1002", format!("Missing required parameter: {what}"));
    let Some(debtor) = body.debtor_account.number() else {
        return client_error("1003", "Invalid account id: debtorAccount");
    };
    let Some(creditor) = body.creditor_account.number() else {
        return client_error("1003", "Invalid account id: creditorAccount");
    };
    let amount = match body.instrumented_amount.parse::<Decimal>() {
        Ok(amount) if amount > Decimal::ZERO && amount.scale() <= 2 => amount,
        _ => return missing("instrumentedAmount"),
    };
    let sepa = product.starts_with("sepa-");
    let currency_ok = if sepa {
        body.currency == "EUR" && !creditor.chars().all(|c| c.is_ascii_digit())
    } else {
        body.currency == "NOK"
    };
    if !currency_ok {
        return missing("currency (SEPA is EUR to an IBAN; a domestic transfer here is NOK)");
    }
    for (name, value) in [
        ("debtorName", &body.debtor_name),
        ("creditorName", &body.creditor_name),
        ("endToEndIdentification", &body.end_to_end_identification),
    ] {
        if value.trim().is_empty() || value.len() > 70 {
            return missing(name);
        }
    }
    let structured = body.remittance_information_structured.is_some();
    match (&body.remittance_information_unstructured, structured) {
        (None, false) => return missing("remittanceInformationUnstructured or Structured"),
        (Some(text), _) if text.chars().count() > 140 => {
            return missing("remittanceInformationUnstructured (at most 140 characters)");
        }
        (_, true) if product == "domestic-transfer" => {
            return missing("remittanceInformationUnstructured (no structured remittance)");
        }
        _ => {}
    }
    if product.contains("scheduled") {
        match body.requested_execution_date {
            Some(date) if date >= Utc::now().date_naive() => {}
            _ => return missing("requestedExecutionDate"),
        }
    }
    let new = NewPayment {
        provider: ProviderId::Neonomics,
        bank: call.session.bank,
        product: product.clone(),
        request_id: call.header("x-request-id").map(str::to_owned),
        end_to_end_id: Some(body.end_to_end_identification),
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
        Err(reason) => return client_error("1003", format!("Invalid account id: {reason}")),
    };
    let answer = authorization_required(&call, &product, &payment.payment_id);
    match state.after_payment(call.target).await {
        Some(failure) if failure.kind == FaultKind::LostResponse => {
            injected(failure, Some(&call.session_id))
        }
        Some(failure) => spoil(answer, failure.kind).await,
        None => answer,
    }
}

/// 510 with errorCode 1428: the payment needs the PSU's SCA, through the authorize link
/// (the error object of <https://docs.neonomics.io/docs/error-handling>).
fn authorization_required(call: &SessionCall, product: &str, payment_id: &str) -> Response {
    let host = call.header("host").unwrap_or("localhost");
    let body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "errorCode": "1428",
        "message": "Payment authorization required",
        "source": "C",
        "type": "CONSENT",
        "timestamp": Utc::now().timestamp_millis(),
        "links": [{
            "type": "GET",
            "rel": "payment",
            "href": format!("http://{host}/ics/v3/payments/{product}/{payment_id}/authorize"),
            "meta": {"id": payment_id},
        }],
    });
    let status = StatusCode::from_u16(510).expect("valid status");
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// The session's payment `payment_id` of `product`, or the documented refusal.
fn find<'w>(
    world: &'w crate::world::World,
    call: &SessionCall,
    product: &str,
    payment_id: &str,
) -> Result<&'w Payment, Response> {
    world
        .payment(ProviderId::Neonomics, call.session.bank, payment_id)
        .filter(|p| p.product == product)
        .ok_or_else(|| client_error("1003", "Invalid payment id"))
}

/// `GET …/{paymentId}/authorize`: the SCA link the PSU follows.
pub(super) fn authorize(call: &SessionCall, product: &str, payment_id: &str) -> Response {
    let world = call.state.world.lock().expect("world");
    let payment = match find(&world, call, product, payment_id) {
        Ok(payment) => payment,
        Err(refusal) => return refusal,
    };
    warp::reply::json(&json!({
        "paymentId": payment.payment_id,
        "message": "Redirect the end-user to the bank to authorize the payment",
        "links": [{
            "type": "GET",
            "rel": "sca",
            "href": call.state.sca_url(&payment.sca_id),
            "meta": {"paymentIds": [payment.payment_id]},
        }],
    }))
    .into_response()
}

/// `POST …/{paymentId}/complete`: settles a payment the PSU authorised.
pub(super) async fn complete(call: SessionCall, product: String, payment_id: String) -> Response {
    let completed = {
        let mut world = call.state.world.lock().expect("world");
        if let Err(refusal) = find(&world, &call, &product, &payment_id) {
            return refusal;
        }
        world
            .complete_payment(
                ProviderId::Neonomics,
                call.session.bank,
                &payment_id,
                Utc::now(),
            )
            .expect("found above")
    };
    let payment = match completed {
        Ok(payment) => payment,
        Err(_) => return authorization_required(&call, &product, &payment_id),
    };
    let answer = warp::reply::json(&json!({
        "paymentId": payment.payment_id,
        "status": payment.status,
        "creationDateTime": payment.initiated_at,
    }))
    .into_response();
    match call.state.after_payment(call.target).await {
        Some(failure) if failure.kind == FaultKind::LostResponse => {
            injected(failure, Some(&call.session_id))
        }
        Some(failure) => spoil(answer, failure.kind).await,
        None => answer,
    }
}

/// `GET …/{paymentId}`: the payment and its status.
pub(super) fn status(call: &SessionCall, product: &str, payment_id: &str) -> Response {
    let world = call.state.world.lock().expect("world");
    match find(&world, call, product, payment_id) {
        Ok(payment) => warp::reply::json(&render(payment)).into_response(),
        Err(refusal) => refusal,
    }
}

fn render(payment: &Payment) -> serde_json::Value {
    let account = |number: &str| {
        if number.chars().all(|c| c.is_ascii_digit()) {
            json!({"bban": number})
        } else {
            json!({"iban": number})
        }
    };
    json!({
        "paymentId": payment.payment_id,
        "status": payment.status,
        "type": payment.product,
        "creationDateTime": payment.initiated_at,
        "instrumentedAmount": payment.amount.to_string(),
        "currency": payment.currency,
        "debtorAccount": account(&payment.debtor_iban),
        "creditorAccount": account(&payment.creditor_account),
        "creditorName": payment.creditor_name,
        "endToEndIdentification": payment.end_to_end_id,
        "remittanceInformationUnstructured": payment.remittance_info,
    })
}
