//! Plays the user's browser through a consent against the sandbox: starts the consent at the
//! client API, then follows each redirect (the sandbox's SCA pages approve at once, as BankID
//! would) until the browser is sent back to the app. At each SCA page the user logs in with
//! their national identity number, as at the bank's BankID login: a bank learns who the user
//! is there when the provider did not name them. The demo, the benchmarks and the tests use it
//! to connect users.

use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// Connects the user of `token` to `bank` through the gateway at `client_url`; returns the
/// URL the browser ends at (`redirect_url?consent_id=…&status=…`).
pub async fn connect(
    client_url: &str,
    token: &str,
    psu: &NationalId,
    bank: BankId,
    redirect_url: &str,
) -> Result<String, BrowserError> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let response = http
        .post(format!("{client_url}/v1/consents"))
        .bearer_auth(token)
        .json(&serde_json::json!({
            "bank": bank,
            "psu_id": psu.expose(),
            "redirect_url": redirect_url,
        }))
        .send()
        .await?;
    if response.status() != reqwest::StatusCode::CREATED {
        return Err(BrowserError::Unexpected(format!(
            "consent not started: {}",
            response.status()
        )));
    }
    let body: Value = response.json().await?;
    let mut next = body["sca_redirect"]
        .as_str()
        .ok_or_else(|| BrowserError::Unexpected("no sca_redirect".to_owned()))?
        .to_owned();
    for _ in 0..10 {
        if next.starts_with(redirect_url) {
            return Ok(next);
        }
        let response = http.get(logged_in(&next, psu)).send().await?;
        if !response.status().is_redirection() {
            return Err(BrowserError::Unexpected(format!(
                "{} at a consent step",
                response.status()
            )));
        }
        next = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| BrowserError::Unexpected("redirect without a location".to_owned()))?
            .to_owned();
    }
    Err(BrowserError::Unexpected(
        "the consent flow did not come back to the app".to_owned(),
    ))
}

/// `url` as the browser requests it: a sandbox SCA page with the user's BankID login.
fn logged_in(url: &str, psu: &NationalId) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.path().starts_with("/sandbox/sca/") => {
            parsed.query_pairs_mut().append_pair("psu", psu.expose());
            parsed.into()
        }
        _ => url.to_owned(),
    }
}
