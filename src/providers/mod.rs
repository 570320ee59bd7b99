//! HTTP clients of the providers: Neonomics and the banks' NextGenPSD2 APIs. Each implements
//! the actors' `Upstream` port for balance reads and offers the consent flow the client API
//! drives. Failures are classified in the runbook's terms (`FailureClass`); no token, account
//! number or personal data ever goes into an error's text.

pub mod neonomics;
pub mod psd2;

use std::time::{Duration, SystemTime};

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

/// Reads a success answer's body in full. A body that cannot be read or parsed (cut off,
/// broken off mid-way, timed out while streaming, a proxy's HTML page) says nothing about
/// what the provider did: the request reached it, so a payment's outcome is then unknown.
pub async fn read_success<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, UpstreamError> {
    let status = response.status().as_u16();
    let unreadable = |detail: &str| UpstreamError {
        status: Some(status),
        ..UpstreamError::new(FailureClass::Server, detail).maybe_delivered()
    };
    let body = read_body(response, SUCCESS_BODY_LIMIT)
        .await
        .ok_or_else(|| unreadable("answer broken off or too large"))?;
    serde_json::from_slice(&body).map_err(|_| unreadable("unexpected answer shape"))
}

/// The most of a success answer that is read: far above any documented answer (a bank
/// list, a page of accounts), far below what would strain the gateway's memory.
const SUCCESS_BODY_LIMIT: usize = 4 << 20;

/// The most of an error answer that is read: a provider's error object is a few hundred
/// bytes; a bigger one is a proxy's page or worse, and is not the provider's refusal.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// Reads a body to its end if it is at most `limit` bytes; `None` when it broke off or
/// runs past the limit, where reading stops: whoever answers in the provider's place cannot
/// make the gateway hold or wait for an unbounded body.
async fn read_body(mut response: reqwest::Response, limit: usize) -> Option<Vec<u8>> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// Reads how long the provider asked us to wait: `Retry-After` (delta-seconds or an HTTP
/// date, RFC 9110 §10.2.3), else `X-RateLimit-Reset` (seconds to wait, or the Unix time of
/// the reset, as some gateways send it). A date in the past is no wait; any size of number is
/// read without overflow, and the breaker bounds what it is told (`breaker.max_open`).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    let now = SystemTime::now();
    let until = |at: SystemTime| at.duration_since(now).unwrap_or(Duration::ZERO);
    let from_retry_after = header("retry-after").and_then(|value| match value.parse::<u64>() {
        Ok(seconds) => Some(Duration::from_secs(seconds)),
        Err(_) => httpdate::parse_http_date(value).ok().map(until),
    });
    from_retry_after.or_else(|| {
        let value = header("x-ratelimit-reset")?.parse::<u64>().ok()?;
        Some(if value >= EPOCH_RESET_FROM {
            let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(value));
            at.map_or(Duration::MAX, until)
        } else {
            Duration::from_secs(value)
        })
    })
}

/// An `X-RateLimit-Reset` from here up is a Unix time (2001-09-09 onwards), not a wait: no
/// provider asks for a wait of 31 years.
const EPOCH_RESET_FROM: u64 = 1_000_000_000;

/// A provider's answer with an error status, its body read as far as it would go.
pub struct Refusal<T> {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body, when it was read in full and had the provider's error shape.
    pub body: Option<T>,
    /// Whether the body was read to its end, within `ERROR_BODY_LIMIT`: a refusal broken
    /// off mid-way or past the limit may not be the provider's (a proxy's, say), so it
    /// proves nothing about a payment.
    pub complete: bool,
}

impl<T: serde::de::DeserializeOwned> Refusal<T> {
    pub async fn read(response: reqwest::Response) -> Refusal<T> {
        let status = response.status();
        let headers = response.headers().clone();
        let body = read_body(response, ERROR_BODY_LIMIT).await;
        Refusal {
            status,
            headers,
            complete: body.is_some(),
            body: body.and_then(|b| serde_json::from_slice(&b).ok()),
        }
    }
}

impl<T> Refusal<T> {
    /// The error for this refusal, of `class`, with the provider's own code when it gave one.
    pub fn error(&self, class: FailureClass, code: Option<&str>) -> UpstreamError {
        let detail = match code {
            Some(code) => format!("provider answered {code}"),
            None => "provider answered with an error".to_owned(),
        };
        UpstreamError {
            class,
            status: Some(self.status.as_u16()),
            retry_after: retry_after(&self.headers),
            detail,
            maybe_delivered: !self.complete,
        }
    }
}

/// A one-request HTTP server for the adapters' tests, on a free loopback port: it takes one
/// request and hands the socket to `answer`, which writes what the test needs (an answer no
/// well-behaved provider gives). Returns its address.
#[cfg(test)]
pub(crate) async fn answering_once<F, Fut>(answer: F) -> std::net::SocketAddr
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0; 4096];
        let _ = socket.read(&mut request).await.unwrap();
        answer(socket).await;
    });
    address
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error answer that never ends (a 500 streaming without an end, as from a broken
    /// proxy) is read up to its limit, then given up as incomplete: it neither holds the
    /// caller until a timeout nor fills the gateway's memory.
    #[tokio::test]
    async fn an_endless_error_body_is_read_to_its_limit_and_proves_nothing() {
        use tokio::io::AsyncWriteExt as _;
        let address = answering_once(|mut socket| async move {
            let head = "HTTP/1.1 500 Internal Server Error\r\ntransfer-encoding: chunked\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
            while socket.write_all(chunk.as_bytes()).await.is_ok() {}
        })
        .await;
        let response = reqwest::get(format!("http://{address}/")).await.unwrap();
        let refusal = tokio::time::timeout(
            Duration::from_secs(10),
            Refusal::<serde_json::Value>::read(response),
        )
        .await
        .expect("read no further than the limit");
        assert_eq!(refusal.status, 500);
        assert!(!refusal.complete);
        assert!(refusal.error(FailureClass::Server, None).maybe_delivered);
    }

    fn wait_for(pairs: &[(&'static str, String)]) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        retry_after(&headers)
    }

    #[test]
    fn retry_after_reads_seconds_http_dates_and_epoch_resets_without_overflow() {
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(wait_for(&[("retry-after", "7".into())]), secs(7));
        assert_eq!(
            wait_for(&[("retry-after", u64::MAX.to_string())]),
            secs(u64::MAX)
        );
        let in_two_minutes = SystemTime::now() + Duration::from_secs(120);
        let dated = wait_for(&[("retry-after", httpdate::fmt_http_date(in_two_minutes))]);
        assert!(
            dated.is_some_and(|d| (115..=120).contains(&d.as_secs())),
            "{dated:?}"
        );
        let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(60));
        assert_eq!(wait_for(&[("retry-after", past)]), Some(Duration::ZERO));
        assert_eq!(wait_for(&[("retry-after", "soon".into())]), None);

        assert_eq!(wait_for(&[("x-ratelimit-reset", "30".into())]), secs(30));
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let reset = wait_for(&[("x-ratelimit-reset", (epoch + 45).to_string())]);
        assert!(
            reset.is_some_and(|d| (40..=45).contains(&d.as_secs())),
            "{reset:?}"
        );
        assert_eq!(
            wait_for(&[("x-ratelimit-reset", u64::MAX.to_string())]),
            Some(Duration::MAX)
        );
        // Retry-After wins over X-RateLimit-Reset.
        assert_eq!(
            wait_for(&[
                ("retry-after", "3".into()),
                ("x-ratelimit-reset", "30".into())
            ]),
            secs(3)
        );
    }

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
