//! HTTP clients of the providers: Neonomics and the banks' NextGenPSD2 APIs. Each implements
//! the actors' `Upstream` port for balance reads and offers the consent flow the client API
//! drives. Failures are classified in the runbook's terms (`FailureClass`); no token, account
//! number or personal data ever goes into an error's text.

pub mod neonomics;
pub mod psd2;

use std::time::Duration;

use bankgate_actors::upstream::{FailureClass, PaymentOrder, RemoteStatus, UpstreamError};
use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};

/// Whether a payment stays in Norway: the creditor is a Norwegian account number or IBAN.
pub fn is_domestic(order: &PaymentOrder) -> bool {
    let account = &order.creditor_account;
    account.starts_with("NO") || account.chars().all(|c| c.is_ascii_digit())
}

/// The creditor account as both providers' bodies name it: `{"iban": …}` or `{"bban": …}`.
pub fn creditor_ref(order: &PaymentOrder) -> serde_json::Value {
    if order.creditor_account.chars().all(|c| c.is_ascii_digit()) {
        serde_json::json!({"bban": order.creditor_account})
    } else {
        serde_json::json!({"iban": order.creditor_account})
    }
}

/// The query that finds a payment by its end-to-end reference.
pub fn reference_query(order: &PaymentOrder) -> String {
    serde_urlencoded::to_string([("endToEndIdentification", &order.reference)])
        .expect("a string pair encodes")
}

/// Maps an ISO 20022 transaction status to where the payment stands.
pub fn remote_status(code: &str) -> RemoteStatus {
    match code {
        "ACSC" | "ACCC" => RemoteStatus::Completed,
        "RJCT" | "CANC" => RemoteStatus::Rejected,
        _ => RemoteStatus::PendingSca,
    }
}

/// A provider's base URL, parsed once. A call sets its path and query on a copy instead of
/// having its whole URL parsed from text again, host check included: that parse was a twentieth
/// of a live balance read's time.
#[derive(Debug, Clone)]
pub struct BaseUrl(Url);

impl BaseUrl {
    /// Parses a base URL; `Settings::load` has checked every configured one.
    pub fn parse(text: &str) -> BaseUrl {
        let url = Url::parse(text.trim_end_matches('/')).expect("settings checked the URL");
        BaseUrl(url)
    }

    /// The base with `path` appended to its path; a `?` in `path` starts the query.
    pub fn join(&self, path: &str) -> Url {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let mut url = self.0.clone();
        url.set_path(&format!("{}{path}", self.0.path().trim_end_matches('/')));
        url.set_query(query);
        url
    }
}

/// Builds the HTTP client shared by the provider clients.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        // The provider actor owns retries, inside its retry budget; reqwest's own would add
        // calls that budget cannot see, and copies every request in case it retries.
        .retry(reqwest::retry::never().max_retries_per_request(0))
        .build()
        .expect("the TLS backend initialises")
}

/// Classifies a transport error (no HTTP answer).
pub fn transport_error(error: &reqwest::Error) -> UpstreamError {
    let class = if error.is_timeout() {
        FailureClass::Timeout
    } else {
        FailureClass::Network
    };
    // reqwest's text names the URL, which holds account ids: keep only the kind.
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "connection broken"
    };
    let failure = UpstreamError::new(class, kind);
    // Only a failure to connect proves the request never left.
    if error.is_connect() {
        failure
    } else {
        failure.maybe_delivered()
    }
}

/// Reads how long the provider asked us to wait: `Retry-After`, else `X-RateLimit-Reset`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    ["retry-after", "x-ratelimit-reset"]
        .iter()
        .filter_map(|name| {
            headers
                .get(*name)?
                .to_str()
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .next()
        .map(Duration::from_secs)
}

/// Builds an error for an HTTP status, with the provider's own code when it gave one.
pub fn status_error(
    class: FailureClass,
    status: StatusCode,
    headers: &HeaderMap,
    code: Option<&str>,
) -> UpstreamError {
    let detail = match code {
        Some(code) => format!("provider answered {code}"),
        None => "provider answered with an error".to_owned(),
    };
    UpstreamError {
        class,
        status: Some(status.as_u16()),
        retry_after: retry_after(headers),
        detail,
        maybe_delivered: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_url_joins_paths_and_queries_as_a_parsed_url_would() {
        let psd2 = BaseUrl::parse("http://127.0.0.1:8092/dnb/v1/");
        let joined = psd2.join("/payments/domestic?endToEndIdentification=bg%2D1");
        assert_eq!(
            joined,
            Url::parse(
                "http://127.0.0.1:8092/dnb/v1/payments/domestic?endToEndIdentification=bg%2D1"
            )
            .unwrap()
        );
        let neonomics = BaseUrl::parse("http://127.0.0.1:8091");
        let joined = neonomics.join("/ics/v3/accounts/a b/balances");
        assert_eq!(
            joined.as_str(),
            "http://127.0.0.1:8091/ics/v3/accounts/a%20b/balances"
        );
        assert_eq!(joined.query(), None);
    }
}
