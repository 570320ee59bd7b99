//! Payments: `POST /payments/{product}` (redirect SCA), `GET /payments/{product}/{id}` and
//! its `/status`, and the look-up by end-to-end reference.

use bankgate_actors::ProviderId;
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use warp::Reply;
use warp::http::StatusCode;
use warp::reply::Response;

use crate::world::{NewPayment, Payment};
use crate::{AccountRef, is_redirect_url};

use super::{Call, format_error, tpp_error};

/// The payment products the Norwegian banks offer.
const PRODUCTS: [&str; 2] = [
    "norwegian-domestic-credit-transfers",
    "norwegian-cross-border-credit-transfers",
];

#[derive(Deserialize)]
struct Amount {
    currency: String,
    amount: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentRequest {
    end_to_end_identification: Option<String>,
    debtor_account: AccountRef,
    instructed_amount: Amount,
    creditor_account: AccountRef,
    creditor_name: String,
    remittance_information_unstructured: Option<String>,
}

pub(super) fn initiate(call: &Call, product: String, body: &[u8]) -> Response {
    let state = &call.state;
    if !PRODUCTS.contains(&product.as_str()) {
        return tpp_error(
            StatusCode::NOT_FOUND,
            "PRODUCT_UNKNOWN",
            "The addressed payment product is not available.",
        );
    }
    if call.header("psu-ip-address").is_none() {
        return format_error("PSU-IP-Address is required for payment initiation");
    }
    let Some(redirect_url) = call
        .header("tpp-redirect-uri")
        .filter(|u| is_redirect_url(u))
    else {
        return format_error("TPP-Redirect-URI is required (redirect SCA approach)");
    };
    let request: PaymentRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => return format_error(format!("Invalid payment request: {e}")),
    };
    let Some(debtor) = request.debtor_account.number() else {
        return format_error("debtorAccount must hold one valid iban or bban");
    };
    let Some(creditor) = request.creditor_account.number() else {
        return format_error("creditorAccount must hold one valid iban or bban");
    };
    let amount = match request.instructed_amount.amount.parse::<Decimal>() {
        Ok(amount) if amount > Decimal::ZERO && amount.scale() <= 2 => amount,
        _ => {
            return format_error(
                "instructedAmount.amount must be a positive amount with at most 2 decimals",
            );
        }
    };
    if request.instructed_amount.currency != "NOK" {
        return format_error("instructedAmount.currency must be NOK");
    }
    if request.creditor_name.trim().is_empty() || request.creditor_name.len() > 70 {
        return format_error("creditorName must be 1 to 70 characters");
    }
    let new = NewPayment {
        provider: ProviderId::Psd2,
        bank: call.bank,
        product: product.clone(),
        request_id: Some(call.request_id.clone()),
        end_to_end_id: request.end_to_end_identification,
        amount,
        currency: request.instructed_amount.currency,
        debtor_account: debtor,
        creditor_name: request.creditor_name,
        creditor_account: creditor,
        remittance_info: request.remittance_information_unstructured,
        redirect_url: redirect_url.to_owned(),
    };
    let created = state
        .world
        .lock()
        .expect("world")
        .create_payment(new, Utc::now());
    let payment = match created {
        Ok(payment) => payment,
        Err(reason) => return format_error(reason),
    };
    let base = format!(
        "/{}/v1/payments/{product}/{}",
        call.bank, payment.payment_id
    );
    let body = json!({
        "transactionStatus": payment.status,
        "paymentId": payment.payment_id,
        "_links": {
            "scaRedirect": {"href": state.sca_url(&payment.sca_id)},
            "self": {"href": base},
            "status": {"href": format!("{base}/status")},
        },
    });
    warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ReferenceQuery {
    pub(super) end_to_end_identification: String,
}

/// Lists the payments initiated with an end-to-end reference: the simulator's way for a TPP
/// to find a payment whose initiation answer was lost.
pub(super) fn find(call: &Call, product: &str, reference: &str) -> Response {
    let state = &call.state;
    let world = state.world.lock().expect("world");
    let payments: Vec<_> = world
        .payments_by_reference(ProviderId::Psd2, call.bank, product, reference)
        .into_iter()
        .map(|payment| {
            let base = format!(
                "/{}/v1/payments/{product}/{}",
                call.bank, payment.payment_id
            );
            json!({
                "paymentId": payment.payment_id,
                "endToEndIdentification": payment.end_to_end_id,
                "transactionStatus": payment.status,
                "_links": {
                    "scaRedirect": {"href": state.sca_url(&payment.sca_id)},
                    "self": {"href": base},
                },
            })
        })
        .collect();
    warp::reply::json(&json!({ "payments": payments })).into_response()
}

pub(super) fn view(call: &Call, product: &str, id: &str, status_only: bool) -> Response {
    let world = call.state.world.lock().expect("world");
    let payment: &Payment = match world.payment(ProviderId::Psd2, call.bank, id) {
        Some(payment) if payment.product == product => payment,
        _ => {
            return tpp_error(
                StatusCode::FORBIDDEN,
                "RESOURCE_UNKNOWN",
                "The addressed payment is unknown.",
            );
        }
    };
    if status_only {
        return warp::reply::json(&json!({"transactionStatus": payment.status})).into_response();
    }
    warp::reply::json(&json!({
        "endToEndIdentification": payment.end_to_end_id,
        "debtorAccount": {"iban": payment.debtor_iban},
        "instructedAmount": {"currency": payment.currency, "amount": payment.amount},
        "creditorName": payment.creditor_name,
        "remittanceInformationUnstructured": payment.remittance_info,
        "transactionStatus": payment.status,
    }))
    .into_response()
}
