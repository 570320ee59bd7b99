//! The client REST API (Drop's backend calls it). Every answer carries `x-request-id`; every
//! error is in the `{error, message, details}` envelope; every `/v1` route but the OpenAPI
//! document, the browser's returns from consent and payment SCA, and the providers' signed
//! webhooks needs a bearer token.

use std::convert::Infallible;
use std::net::IpAddr;

use uuid::Uuid;
use warp::http::StatusCode;
use warp::http::header::{self, HeaderValue};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::auth::authenticated;
use super::{AppState, balances, banks, consents, payments};
use bankgate_sandbox::http::error::recover;
use bankgate_sandbox::http::request_id::{RequestId, request_id, tag};
use bankgate_sandbox::http::{ApiError, ClientAddr, optional_header};

/// The OpenAPI document of this API, served at `/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("openapi.yaml");

/// Every route and its methods, as the OpenAPI document lists them (a test holds the two
/// together): the `Allow` header a 405 must carry (RFC 9110 §15.5.6). `{…}` is one segment.
pub const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/v1/openapi.yaml", "GET"),
    ("/v1/balances", "GET"),
    ("/v1/accounts/{account_id}/balances", "GET"),
    ("/v1/banks", "GET"),
    ("/v1/consents", "POST"),
    ("/v1/consents/{consent_id}/callback", "GET"),
    ("/v1/connections", "GET"),
    ("/v1/connections/{connection_id}", "DELETE"),
    ("/v1/payments", "GET, POST"),
    ("/v1/payments/{payment_id}", "GET"),
    ("/v1/payments/{payment_id}/callback", "GET"),
    ("/v1/webhooks/psd2/{bank}", "POST"),
];

/// The methods `path` answers to, if it is a route.
fn allowed_methods(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES.iter().find_map(|(route, methods)| {
        let pattern: Vec<&str> = route.split('/').collect();
        let matches = pattern.len() == segments.len()
            && pattern
                .iter()
                .zip(&segments)
                .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()));
        matches.then_some(*methods)
    })
}

/// Adds `Allow` to a 405.
fn allow(path: FullPath, mut response: Response) -> Response {
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = allowed_methods(path.as_str())
    {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(methods));
    }
    response
}

/// `x-psu-ip-address`: the user's IP, sent when the user is present (PSD2 calls such reads
/// and payments attended). A value that is no IP address is refused with 400 in the envelope.
fn psu_ip() -> impl Filter<Extract = (Option<IpAddr>,), Error = Rejection> + Clone {
    optional_header("x-psu-ip-address").and_then(|header: Option<HeaderValue>| {
        let parsed = match header {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| {
                    warp::reject::custom(ApiError::invalid_field(
                        "x-psu-ip-address",
                        "must be an IP address",
                    ))
                }),
        };
        std::future::ready(parsed)
    })
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(Reply::into_response)
}

pub fn routes(state: AppState) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let auth = authenticated(state.tokens.clone());
    let psu_ip = psu_ip();
    let json_body = warp::body::content_length_limit(state.body_limit).and(warp::body::json());

    let health = warp::path!("healthz").and(warp::get()).map(|| {
        warp::reply::with_header(r#"{"status":"ok"}"#, "content-type", "application/json")
            .into_response()
    });
    let document = state.consents.openapi(OPENAPI);
    let openapi = warp::path!("v1" / "openapi.yaml")
        .and(warp::get())
        .map(move || {
            let document = document.clone();
            warp::reply::with_header(document, "content-type", "application/yaml").into_response()
        });
    let balances_all = warp::path!("v1" / "balances")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .and(psu_ip.clone())
        .and(request_id())
        .then(|state, claims, ip, rid| async move {
            respond(balances::all(state, claims, ip, rid).await)
        });
    let balance_one = warp::path!("v1" / "accounts" / Uuid / "balances")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .and(psu_ip.clone())
        .and(request_id())
        .then(|id, state, claims, ip, rid| async move {
            respond(balances::one(state, claims, id, ip, rid).await)
        });
    let banks = warp::path!("v1" / "banks")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .then(|state, _claims| banks::list(state));
    let create_consent =
        warp::path!("v1" / "consents")
            .and(warp::post())
            .and(with_state.clone())
            .and(auth.clone())
            .and(json_body)
            .then(|state, claims, body| async move {
                respond(consents::create(state, claims, body).await)
            });
    let callback = warp::path!("v1" / "consents" / Uuid / "callback")
        .and(warp::get())
        .and(with_state.clone())
        .and(warp::query::<consents::CallbackQuery>())
        .and(warp::ext::optional::<ClientAddr>())
        .then(|id, state, query, peer: Option<ClientAddr>| async move {
            let ip: Option<IpAddr> = peer.map(|p| p.0.ip());
            respond(consents::callback(state, id, query, ip).await)
        });
    let connections = warp::path!("v1" / "connections")
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .then(|state, claims| async move { respond(consents::list(state, claims).await) });
    let raw_body = warp::body::content_length_limit(state.body_limit).and(warp::body::bytes());
    let peer_ip = warp::ext::optional::<ClientAddr>()
        .map(|peer: Option<ClientAddr>| peer.map_or(IpAddr::from([127, 0, 0, 1]), |p| p.0.ip()));
    let create_payment = warp::path!("v1" / "payments")
        .and(warp::post())
        .and(with_state.clone())
        .and(auth.clone())
        .and(warp::header::headers_cloned())
        .and(peer_ip)
        .and(psu_ip.clone())
        .and(raw_body)
        .then(|state, claims, headers, peer, ip, body| async move {
            respond(payments::create(state, claims, headers, peer, ip, body).await)
        });
    let list_payments =
        warp::path!("v1" / "payments")
            .and(warp::get())
            .and(with_state.clone())
            .and(auth.clone())
            .and(warp::query::<payments::ListQuery>())
            .then(|state, claims, query| async move {
                respond(payments::list(state, claims, query).await)
            });
    let payment = warp::path!("v1" / "payments" / Uuid)
        .and(warp::get())
        .and(with_state.clone())
        .and(auth.clone())
        .then(|id, state, claims| async move { respond(payments::one(state, claims, id).await) });
    let sca_returned =
        warp::path!("v1" / "payments" / Uuid / "callback")
            .and(warp::get())
            .and(with_state.clone())
            .and(warp::query::<std::collections::HashMap<String, String>>())
            .then(|id, state, query| async move {
                respond(payments::sca_returned(state, id, query).await)
            });
    let webhook = warp::path!("v1" / "webhooks" / ..)
        .and(warp::path::tail())
        .map(|tail: warp::path::Tail| tail.as_str().to_owned())
        .and(warp::post())
        .and(with_state.clone())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(state.body_limit).and(warp::body::bytes()))
        .then(|source, state, headers, body| async move {
            respond(payments::webhook(state, source, headers, body).await)
        });
    let delete_connection = warp::path!("v1" / "connections" / Uuid)
        .and(warp::delete())
        .and(with_state)
        .and(auth)
        .then(
            |id, state, claims| async move { respond(consents::delete(state, claims, id).await) },
        );

    // Each route is boxed: `or` clones its second filter into every request's future, so an
    // unboxed chain copied every route (and the state each holds) on every request. A request
    // pays for each route tried before its own, so the health probe (stateless, so cheap to
    // skip) comes first and then the most frequent.
    let api = health
        .or(balances_all.boxed())
        .unify()
        .or(balance_one.boxed())
        .unify()
        .or(banks.boxed())
        .unify()
        .or(list_payments.boxed())
        .unify()
        .or(create_payment.boxed())
        .unify()
        .or(payment.boxed())
        .unify()
        .or(sca_returned.boxed())
        .unify()
        .or(webhook.boxed())
        .unify()
        .or(connections.boxed())
        .unify()
        .or(create_consent.boxed())
        .unify()
        .or(callback.boxed())
        .unify()
        .or(delete_connection.boxed())
        .unify()
        .or(openapi.boxed())
        .unify()
        .recover(recover)
        .unify();
    request_id()
        .and(warp::path::full())
        .and(api)
        .map(|id: RequestId, path: FullPath, response: Response| tag(&id, allow(path, response)))
        .with(crate::telemetry::http_metrics(
            crate::telemetry::Api::Client,
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_matched_to_its_route_segment_by_segment() {
        assert_eq!(allowed_methods("/v1/payments"), Some("GET, POST"));
        assert_eq!(allowed_methods("/v1/payments/abc"), Some("GET"));
        assert_eq!(allowed_methods("/v1/payments/abc/callback"), Some("GET"));
        assert_eq!(allowed_methods("/v1/accounts/x/balances"), Some("GET"));
        assert_eq!(allowed_methods("/v1/accounts//balances"), None);
        assert_eq!(allowed_methods("/v1/nothing"), None);
    }

    /// The route table and the served document list the same routes and methods: a route in
    /// the table that the document lacks is answered 405 where it should be 404.
    #[test]
    fn the_route_table_is_the_documents() {
        let mut documented = Vec::new();
        let mut path = "";
        let paths = OPENAPI.lines().skip_while(|l| *l != "paths:").skip(1);
        for line in paths.take_while(|l| !l.starts_with("components:")) {
            if let Some(p) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
                && p.starts_with('/')
            {
                path = p;
            } else if let Some(method) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
                && !method.starts_with(' ')
            {
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        let mut listed: Vec<String> = ROUTES
            .iter()
            .flat_map(|(path, methods)| methods.split(", ").map(move |m| format!("{m} {path}")))
            .collect();
        documented.sort();
        listed.sort();
        assert_eq!(listed, documented);
    }
}
