//! The simulated Neonomics API: OAuth2 client-credentials tokens, sessions naming a bank,
//! consent through an SCA link, accounts, balances, payments and the bank list.
//!
//! Errors use Neonomics' shape `{id, errorCode, message, source, type}` with its statuses:
//! 510 for client errors, 520 for Neonomics' own, 530 for the bank's. Error codes 1426
//! (consent required) and 1428 (payment needs SCA) are Neonomics' published ones; the other
//! codes follow the same scheme and are this simulator's.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bankgate_actors::{BankId, ProviderId, Service};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::hyper::body::Bytes;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::faults::{Fault, FaultKind, Injected, Target};
use super::rate_limit::{LimitState, Throttled, limited};
use super::world::{ConsentProblem, NewConsent, NewPayment, Payment};
use super::{AccountRef, SandboxState, header, is_redirect_url};

/// The payment products this simulated Neonomics offers.
const PRODUCTS: [&str; 2] = ["domestic-transfer", "cross-border-transfer"];
const BODY_LIMIT: u64 = 64 * 1024;

/// Tokens and sessions Neonomics has handed out.
#[derive(Default)]
pub struct Book {
    tokens: HashMap<String, DateTime<Utc>>,
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
    error(510, code, message, "CLIENT", "BAD_REQUEST")
}

fn consent_required(session_id: &str) -> Response {
    let body = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "errorCode": "1426",
        "message": "Consent is required to access this resource",
        "source": "BANK",
        "type": "CONSENT_REQUIRED",
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
            "BANK_ERROR",
        ),
        FaultKind::Error => error(520, "5200", "Internal error", "NEONOMICS", "INTERNAL_ERROR"),
        FaultKind::Timeout | FaultKind::LostResponse => error(
            504,
            "5040",
            "Timed out waiting for the bank",
            source,
            "TIMEOUT",
        ),
        FaultKind::RateLimit => {
            let mut response = error(
                429,
                "1429",
                "Rate limit exceeded",
                "NEONOMICS",
                "RATE_LIMIT_EXCEEDED",
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
            "FORBIDDEN",
        ),
        FaultKind::Unauthorized => error(
            401,
            "1401",
            "Invalid or revoked client credentials",
            "NEONOMICS",
            "UNAUTHORIZED",
        ),
        FaultKind::ConsentExpired => consent_required(session_id.unwrap_or_default()),
        // `decide` never fails a request with latency or refuse; render them as an outage.
        FaultKind::Unavailable | FaultKind::Latency | FaultKind::Refuse => error(
            503,
            "1503",
            "Service temporarily unavailable",
            source,
            "SERVICE_UNAVAILABLE",
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

    let token =
        warp::path!("auth" / "realms" / "sandbox" / "protocol" / "openid-connect" / "token")
            .and(warp::post())
            .and(with_state.clone())
            .and(body)
            .then(token);
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_state.clone())
        .then(health);
    let banks = warp::path!("ics" / "v3" / "banks")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(banks);
    let bank = warp::path!("ics" / "v3" / "banks" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(bank);
    let session = warp::path!("ics" / "v3" / "session")
        .and(warp::post())
        .and(with_state.clone())
        .and(headers)
        .and(body)
        .then(create_session);
    let consent = warp::path!("ics" / "v3" / "consent" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(consent);
    let accounts = warp::path!("ics" / "v3" / "accounts")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(|state, headers| account_read(state, headers, None, false));
    let account = warp::path!("ics" / "v3" / "accounts" / String)
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(|id, state, headers| account_read(state, headers, Some(id), false));
    let balances = warp::path!("ics" / "v3" / "accounts" / String / "balances")
        .and(warp::get())
        .and(with_state.clone())
        .and(headers)
        .then(|id, state, headers| account_read(state, headers, Some(id), true));
    let initiate = warp::path!("ics" / "v3" / "payments" / String)
        .and(warp::post())
        .and(with_state.clone())
        .and(headers)
        .and(body)
        .then(initiate_payment);
    let find = warp::path!("ics" / "v3" / "payments" / String)
        .and(warp::get())
        .and(warp::query::<ReferenceQuery>())
        .and(with_state.clone())
        .and(headers)
        .then(find_payments);
    let payment = warp::path!("ics" / "v3" / "payments" / String / String)
        .and(warp::get())
        .and(with_state)
        .and(headers)
        .then(payment_status);

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
        .or(find)
        .unify()
        .or(payment)
        .unify();
    limited(move || state.limit(ProviderId::Neonomics).check())
        .and(api)
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
                "RATE_LIMIT_EXCEEDED",
            ))
        } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
            error(
                413,
                "1413",
                "Request body too large",
                "CLIENT",
                "BAD_REQUEST",
            )
        } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
            error(405, "1405", "Method not allowed", "CLIENT", "BAD_REQUEST")
        } else {
            error(404, "1404", "Resource not found", "CLIENT", "NOT_FOUND")
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
            "CLIENT",
            "UNAUTHORIZED",
        ));
    }
    if header(headers, "x-device-id").is_none() {
        return Err(client_error("1001", "Missing required header x-device-id"));
    }
    Ok(())
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

async fn token(state: Arc<SandboxState>, body: Bytes) -> Response {
    let keycloak_error = |status: StatusCode, error: &str, description: &str| {
        let body = json!({"error": error, "error_description": description});
        warp::reply::with_status(warp::reply::json(&body), status).into_response()
    };
    if let Some(failure) = state.gate(provider_target()).await {
        return match failure.kind {
            FaultKind::Unauthorized => keycloak_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                "Invalid client or Invalid client credentials",
            ),
            _ => injected(failure, None),
        };
    }
    let Ok(form) = serde_urlencoded::from_bytes::<TokenForm>(&body) else {
        return keycloak_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Malformed form body",
        );
    };
    if form.grant_type.as_deref() != Some("client_credentials") {
        return keycloak_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant_type",
        );
    }
    let options = &state.options;
    if form.client_id.as_deref() != Some(options.neonomics_client_id.as_str())
        || form.client_secret.as_deref() != Some(options.neonomics_client_secret.as_str())
    {
        return keycloak_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        );
    }
    let access_token = format!("sbx-{}", uuid::Uuid::new_v4().simple());
    let ttl =
        chrono::Duration::from_std(options.access_token_ttl).unwrap_or(chrono::Duration::hours(1));
    {
        let mut book = state.neonomics.lock().expect("book");
        let now = Utc::now();
        book.tokens.retain(|_, expiry| *expiry > now);
        book.tokens.insert(access_token.clone(), now + ttl);
    }
    warp::reply::json(&json!({
        "access_token": access_token,
        "expires_in": ttl.num_seconds(),
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "scope": "ics",
    }))
    .into_response()
}

async fn health(state: Arc<SandboxState>) -> Response {
    match state.gate(provider_target()).await {
        Some(failure) => injected(failure, None),
        None => warp::reply::json(&json!({"status": "UP"})).into_response(),
    }
}

async fn banks(state: Arc<SandboxState>, headers: HeaderMap) -> Response {
    if let Some(failure) = state.gate(provider_target()).await {
        return injected(failure, None);
    }
    if let Err(response) = authenticate(&state, &headers) {
        return response;
    }
    let faults = state.faults.list();
    let list: Vec<_> = BankId::ALL
        .into_iter()
        .map(|bank| bank_view(&faults, bank))
        .collect();
    warp::reply::json(&list).into_response()
}

/// One bank by its id (the BIC): what a health probe of the path to the bank reads. Faults
/// for the bank apply to it as to any call that reaches the bank.
async fn bank(id: String, state: Arc<SandboxState>, headers: HeaderMap) -> Response {
    let Some(bank) = BankId::ALL.into_iter().find(|b| b.bic() == id) else {
        return error(404, "1404", "Unknown bank", "CLIENT", "NOT_FOUND");
    };
    let target = Target {
        bank: Some(bank),
        ..provider_target()
    };
    if let Some(failure) = state.gate(target).await {
        return injected(failure, None);
    }
    if let Err(response) = authenticate(&state, &headers) {
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
        "id": bank.bic(),
        "bic": bank.bic(),
        "bankDisplayName": bank.display_name(),
        "bankingGroupName": bank.display_name(),
        "countryCode": "NO",
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

async fn create_session(state: Arc<SandboxState>, headers: HeaderMap, body: Bytes) -> Response {
    let bank = serde_json::from_slice::<NewSession>(&body)
        .ok()
        .and_then(|s| s.bank_id)
        .and_then(|id| BankId::ALL.into_iter().find(|b| b.bic() == id));
    let target = Target {
        bank,
        ..provider_target()
    };
    if let Some(failure) = state.gate(target).await {
        return injected(failure, None);
    }
    if let Err(response) = authenticate(&state, &headers) {
        return response;
    }
    let Some(bank) = bank else {
        return client_error("1004", "Body must name a known bankId");
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

fn session(state: &SandboxState, id: Option<&str>) -> Option<Session> {
    state
        .neonomics
        .lock()
        .expect("book")
        .sessions
        .get(id?)
        .cloned()
}

async fn consent(session_id: String, state: Arc<SandboxState>, headers: HeaderMap) -> Response {
    let found = session(&state, Some(&session_id));
    let target = Target {
        provider: ProviderId::Neonomics,
        bank: found.as_ref().map(|s| s.bank),
        service: Some(Service::Aisp),
        uses_consent: false,
    };
    if let Some(failure) = state.gate(target).await {
        return injected(failure, Some(&session_id));
    }
    if let Err(response) = authenticate(&state, &headers) {
        return response;
    }
    let Some(found) = found else {
        return client_error("1003", "Unknown or expired session");
    };
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

/// Serves the account list (`account_id` = None), one account, or its balances.
async fn account_read(
    state: Arc<SandboxState>,
    headers: HeaderMap,
    account_id: Option<String>,
    balances: bool,
) -> Response {
    let session_id = header(&headers, "x-session-id").map(str::to_owned);
    let found = session(&state, session_id.as_deref());
    let target = Target {
        provider: ProviderId::Neonomics,
        bank: found.as_ref().map(|s| s.bank),
        service: Some(Service::Aisp),
        uses_consent: true,
    };
    if let Some(failure) = state.gate(target).await {
        return injected(failure, session_id.as_deref());
    }
    if let Err(response) = authenticate(&state, &headers) {
        return response;
    }
    let (Some(session_id), Some(found)) = (session_id, found) else {
        return client_error("1003", "Missing, unknown or expired x-session-id");
    };
    let mut world = state.world.lock().expect("world");
    let consent = match found.consent_id.as_deref() {
        Some(id) => world.authorize_read(id, true, Utc::now()),
        None => Err(ConsentProblem::Unknown),
    };
    let consent = match consent {
        Ok(consent) => consent,
        Err(_) => return consent_required(&session_id),
    };
    let psu = consent.psu.clone().unwrap_or_default();
    let render = |a: &super::world::Account| {
        json!({
            "id": a.id_at(ProviderId::Neonomics),
            "iban": a.iban,
            "bban": a.bban,
            "accountName": a.name,
            "accountType": a.product,
            "currency": a.currency,
        })
    };
    let Some(account_id) = account_id else {
        let list: Vec<_> = world
            .accounts_of(found.bank, &psu)
            .iter()
            .map(render)
            .collect();
        return warp::reply::json(&list).into_response();
    };
    let Some(account) = world.consented_account(&consent.id, ProviderId::Neonomics, &account_id)
    else {
        return client_error("1310", "Account not found");
    };
    if balances {
        warp::reply::json(&json!([{
            "type": "ITAV",
            "amount": account.balance,
            "currency": account.currency,
            "date": Utc::now(),
        }]))
        .into_response()
    } else {
        warp::reply::json(&render(&account)).into_response()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PaymentBody {
    debtor_account: AccountRef,
    creditor_account: AccountRef,
    creditor_name: String,
    instructed_amount: String,
    currency: String,
    end_to_end_identification: Option<String>,
    remittance_information_unstructured: Option<String>,
}

async fn initiate_payment(
    product: String,
    state: Arc<SandboxState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let session_id = header(&headers, "x-session-id").map(str::to_owned);
    let found = session(&state, session_id.as_deref());
    let target = Target {
        provider: ProviderId::Neonomics,
        bank: found.as_ref().map(|s| s.bank),
        service: Some(Service::Pisp),
        uses_consent: false,
    };
    if let Some(failure) = state.gate(target).await {
        return injected(failure, session_id.as_deref());
    }
    if let Err(response) = authenticate(&state, &headers) {
        return response;
    }
    let Some(found) = found else {
        return client_error("1003", "Missing, unknown or expired x-session-id");
    };
    if !PRODUCTS.contains(&product.as_str()) {
        return client_error("1320", format!("Unsupported payment product {product}"));
    }
    if header(&headers, "x-psu-ip-address").is_none() {
        return client_error("1002", "Missing required header x-psu-ip-address");
    }
    let Some(redirect_url) = header(&headers, "x-redirect-url").filter(|u| is_redirect_url(u))
    else {
        return client_error("1005", "Missing or invalid header x-redirect-url");
    };
    let body: PaymentBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return client_error("1006", format!("Invalid payment request: {e}")),
    };
    let invalid = |what: &str| client_error("1006", format!("Invalid payment request: {what}"));
    let Some(debtor) = body.debtor_account.number() else {
        return invalid("debtorAccount");
    };
    let Some(creditor) = body.creditor_account.number() else {
        return invalid("creditorAccount");
    };
    let amount = match body.instructed_amount.parse::<Decimal>() {
        Ok(amount) if amount > Decimal::ZERO && amount.scale() <= 2 => amount,
        _ => return invalid("instructedAmount"),
    };
    if body.currency != "NOK" {
        return invalid("currency (only NOK accounts are held here)");
    }
    if body.creditor_name.trim().is_empty() || body.creditor_name.len() > 70 {
        return invalid("creditorName");
    }
    let new = NewPayment {
        provider: ProviderId::Neonomics,
        bank: found.bank,
        product,
        request_id: header(&headers, "x-request-id").map(str::to_owned),
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
    if let Some(failure) = state.lose_answer(target).await {
        return injected(failure, session_id.as_deref());
    }
    warp::reply::with_status(
        warp::reply::json(&json!({
            "paymentId": payment.payment_id,
            "status": payment.status,
            "links": [{"type": "GET", "rel": "sca", "href": state.sca_url(&payment.sca_id)}],
        })),
        StatusCode::CREATED,
    )
    .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReferenceQuery {
    end_to_end_identification: String,
}

/// Lists the session's payments with an end-to-end reference: the simulator's way for a TPP
/// to find a payment whose initiation answer was lost.
async fn find_payments(
    product: String,
    query: ReferenceQuery,
    state: Arc<SandboxState>,
    headers: HeaderMap,
) -> Response {
    let session_id = header(&headers, "x-session-id").map(str::to_owned);
    let found = session(&state, session_id.as_deref());
    let target = Target {
        provider: ProviderId::Neonomics,
        bank: found.as_ref().map(|s| s.bank),
        service: Some(Service::Pisp),
        uses_consent: false,
    };
    if let Some(failure) = state.gate(target).await {
        return injected(failure, session_id.as_deref());
    }
    if let Err(response) = authenticate(&state, &headers) {
        return response;
    }
    let Some(found) = found else {
        return client_error("1003", "Missing, unknown or expired x-session-id");
    };
    let world = state.world.lock().expect("world");
    let payments: Vec<_> = world
        .payments_by_reference(
            ProviderId::Neonomics,
            found.bank,
            &product,
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
        "instructedAmount": payment.amount,
        "currency": payment.currency,
        "creditorName": payment.creditor_name,
        "endToEndIdentification": payment.end_to_end_id,
        "updatedAt": payment.updated_at,
    })
}

async fn payment_status(
    product: String,
    payment_id: String,
    state: Arc<SandboxState>,
    headers: HeaderMap,
) -> Response {
    let session_id = header(&headers, "x-session-id").map(str::to_owned);
    let found = session(&state, session_id.as_deref());
    let target = Target {
        provider: ProviderId::Neonomics,
        bank: found.as_ref().map(|s| s.bank),
        service: Some(Service::Pisp),
        uses_consent: false,
    };
    if let Some(failure) = state.gate(target).await {
        return injected(failure, session_id.as_deref());
    }
    if let Err(response) = authenticate(&state, &headers) {
        return response;
    }
    let Some(found) = found else {
        return client_error("1003", "Missing, unknown or expired x-session-id");
    };
    let world = state.world.lock().expect("world");
    match world.payment(ProviderId::Neonomics, found.bank, &payment_id) {
        Some(payment) if payment.product == product => {
            warp::reply::json(&render_payment(payment)).into_response()
        }
        _ => client_error("1330", "Payment not found"),
    }
}
