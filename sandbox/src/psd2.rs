//! The banks' own NextGenPSD2 (Berlin Group 1.3.12) APIs, one base path per bank:
//! `/{bank}/v1/consents`, `/accounts`, `/accounts/{id}/balances`, `/payments/{product}`.
//!
//! As the specification has it: `X-Request-ID` (a UUID) is required on every call and echoed
//! back; errors carry `tppMessages`; 503 and 500 have no body; a consent allows
//! `frequencyPerDay` unattended reads a day and answers `429 ACCESS_EXCEEDED` past that, while
//! reads with `PSU-IP-Address` (the user is present) do not count.

use std::convert::Infallible;
use std::sync::Arc;

use bankgate_actors::{BankId, ProviderId, Service};
use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::faults::{FaultKind, Injected, Target};
use super::rate_limit::{LimitState, Throttled, limited};
use super::world::{Account, Consent, ConsentProblem, NewConsent, NewPayment, Payment};
use super::{AccountRef, SandboxState, header, is_redirect_url};

/// The payment products the Norwegian banks offer.
const PRODUCTS: [&str; 2] = [
    "norwegian-domestic-credit-transfers",
    "norwegian-cross-border-credit-transfers",
];
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
        FaultKind::Timeout | FaultKind::LostResponse => bare(StatusCode::GATEWAY_TIMEOUT),
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

/// The part of a request every endpoint checks first.
struct Call {
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
}

/// Extracts the bank from the path and checks `X-Request-ID`.
fn call() -> impl Filter<Extract = (Result<Call, Response>,), Error = Rejection> + Clone {
    warp::path::param::<String>()
        .and(warp::path("v1"))
        .and(warp::header::headers_cloned())
        .and_then(|bank: String, headers: HeaderMap| async move {
            let Ok(bank) = bank.parse::<BankId>() else {
                return Err(warp::reject::not_found());
            };
            let request_id = header(&headers, "x-request-id").map(str::to_owned);
            Ok(match request_id {
                Some(id) if uuid::Uuid::parse_str(&id).is_ok() => Ok(Call {
                    bank,
                    request_id: id,
                    headers,
                }),
                _ => Err(format_error("X-Request-ID is missing or not a UUID")),
            })
        })
}

/// Runs `handler` for a well-formed call, after the faults had their say.
async fn handle<F>(
    state: Arc<SandboxState>,
    call: Result<Call, Response>,
    service: Service,
    uses_consent: bool,
    handler: F,
) -> Response
where
    F: FnOnce(&SandboxState, &Call) -> Response,
{
    let call = match call {
        Ok(call) => call,
        Err(response) => return response,
    };
    if let Some(failure) = state.gate(call.target(service, uses_consent)).await {
        return call.reply(injected(failure));
    }
    let response = handler(&state, &call);
    call.reply(response)
}

pub fn routes(
    state: Arc<SandboxState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let body = warp::body::content_length_limit(BODY_LIMIT).and(warp::body::bytes());

    let create_consent = call()
        .and(warp::path!("consents"))
        .and(warp::post())
        .and(with_state.clone())
        .and(body)
        .then(|call, state, body: Bytes| {
            handle(state, call, Service::Aisp, false, move |state, call| {
                create_consent(state, call, &body)
            })
        });
    let consent = call()
        .and(warp::path!("consents" / String))
        .and(warp::get())
        .and(with_state.clone())
        .then(|call, id: String, state| {
            handle(state, call, Service::Aisp, false, move |state, _| {
                consent_view(state, &id, false)
            })
        });
    let consent_status = call()
        .and(warp::path!("consents" / String / "status"))
        .and(warp::get())
        .and(with_state.clone())
        .then(|call, id: String, state| {
            handle(state, call, Service::Aisp, false, move |state, _| {
                consent_view(state, &id, true)
            })
        });
    let delete_consent = call()
        .and(warp::path!("consents" / String))
        .and(warp::delete())
        .and(with_state.clone())
        .then(|call, id: String, state| {
            handle(
                state,
                call,
                Service::Aisp,
                false,
                move |state, _| match state.world.lock().expect("world").terminate_consent(&id) {
                    Some(_) => bare(StatusCode::NO_CONTENT),
                    None => consent_problem(ConsentProblem::Unknown),
                },
            )
        });
    let accounts = call()
        .and(warp::path!("accounts"))
        .and(warp::get())
        .and(with_state.clone())
        .then(|call, state| {
            handle(state, call, Service::Aisp, true, |state, call| {
                account_read(state, call, None, false)
            })
        });
    let account = call()
        .and(warp::path!("accounts" / String))
        .and(warp::get())
        .and(with_state.clone())
        .then(|call, id: String, state| {
            handle(state, call, Service::Aisp, true, move |state, call| {
                account_read(state, call, Some(&id), false)
            })
        });
    let balances = call()
        .and(warp::path!("accounts" / String / "balances"))
        .and(warp::get())
        .and(with_state.clone())
        .then(|call, id: String, state| {
            handle(state, call, Service::Aisp, true, move |state, call| {
                account_read(state, call, Some(&id), true)
            })
        });
    let initiate = call()
        .and(warp::path!("payments" / String))
        .and(warp::post())
        .and(with_state.clone())
        .and(body)
        .then(
            |call: Result<Call, Response>,
             product: String,
             state: Arc<SandboxState>,
             body: Bytes| async move {
                let target = call.as_ref().ok().map(|c| c.target(Service::Pisp, false));
                let response = handle(
                    state.clone(),
                    call,
                    Service::Pisp,
                    false,
                    move |state, call| initiate_payment(state, call, product, &body),
                )
                .await;
                if response.status() == StatusCode::CREATED
                    && let Some(target) = target
                    && let Some(failure) = state.lose_answer(target).await
                {
                    return injected(failure);
                }
                response
            },
        );
    let find = call()
        .and(warp::path!("payments" / String))
        .and(warp::get())
        .and(warp::query::<ReferenceQuery>())
        .and(with_state.clone())
        .then(|call, product: String, query: ReferenceQuery, state| {
            handle(state, call, Service::Pisp, false, move |state, call| {
                find_payments(state, call, &product, &query.end_to_end_identification)
            })
        });
    let payment = call()
        .and(warp::path!("payments" / String / String))
        .and(warp::get())
        .and(with_state.clone())
        .then(|call, product: String, id: String, state| {
            handle(state, call, Service::Pisp, false, move |state, call| {
                payment_view(state, call, &product, &id, false)
            })
        });
    let payment_status = call()
        .and(warp::path!("payments" / String / String / "status"))
        .and(warp::get())
        .and(with_state)
        .then(|call, product: String, id: String, state| {
            handle(state, call, Service::Pisp, false, move |state, call| {
                payment_view(state, call, &product, &id, true)
            })
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
        .and(api)
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsentRequest {
    access: serde_json::Map<String, serde_json::Value>,
    recurring_indicator: bool,
    valid_until: NaiveDate,
    frequency_per_day: u32,
    combined_service_indicator: bool,
}

fn create_consent(state: &SandboxState, call: &Call, body: &[u8]) -> Response {
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
    let Some(redirect_url) =
        header(&call.headers, "tpp-redirect-uri").filter(|u| is_redirect_url(u))
    else {
        return format_error("TPP-Redirect-URI is required (redirect SCA approach)");
    };
    let new = NewConsent {
        provider: ProviderId::Psd2,
        bank: call.bank,
        psu: header(&call.headers, "psu-id").map(str::to_owned),
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

fn consent_view(state: &SandboxState, id: &str, status_only: bool) -> Response {
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

fn render_account(bank: BankId, account: &Account) -> serde_json::Value {
    let id = account.id_at(ProviderId::Psd2);
    json!({
        "resourceId": id,
        "iban": account.iban,
        "bban": account.bban,
        "currency": account.currency,
        "name": account.name,
        "cashAccountType": account.product,
        "status": "enabled",
        "_links": {"balances": {"href": format!("/{bank}/v1/accounts/{id}/balances")}},
    })
}

fn account_read(
    state: &SandboxState,
    call: &Call,
    account_id: Option<&str>,
    balances: bool,
) -> Response {
    let Some(consent_id) = header(&call.headers, "consent-id") else {
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

fn initiate_payment(state: &SandboxState, call: &Call, product: String, body: &[u8]) -> Response {
    if !PRODUCTS.contains(&product.as_str()) {
        return tpp_error(
            StatusCode::NOT_FOUND,
            "PRODUCT_UNKNOWN",
            "The addressed payment product is not available.",
        );
    }
    if header(&call.headers, "psu-ip-address").is_none() {
        return format_error("PSU-IP-Address is required for payment initiation");
    }
    let Some(redirect_url) =
        header(&call.headers, "tpp-redirect-uri").filter(|u| is_redirect_url(u))
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
struct ReferenceQuery {
    end_to_end_identification: String,
}

/// Lists the payments initiated with an end-to-end reference: the simulator's way for a TPP
/// to find a payment whose initiation answer was lost.
fn find_payments(state: &SandboxState, call: &Call, product: &str, reference: &str) -> Response {
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

fn payment_view(
    state: &SandboxState,
    call: &Call,
    product: &str,
    id: &str,
    status_only: bool,
) -> Response {
    let world = state.world.lock().expect("world");
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
