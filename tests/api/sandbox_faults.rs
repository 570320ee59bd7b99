//! Every fault kind, over real HTTP, the way each provider would fail.

use std::time::{Duration, Instant};

use bankgate_actors::BankId;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestSandbox, eventually, sandbox_options, spawn_sandbox, spawn_sandbox_with};

/// A PSD2 balance read for a fresh, approved consent: the request a fault should break.
async fn psd2_balance(sandbox: &TestSandbox, bank: BankId, consent: &str) -> reqwest::Response {
    let accounts: Value = sandbox
        .psd2_request(Method::GET, bank, "/accounts")
        .header("consent-id", consent)
        .header("psu-ip-address", "192.0.2.10")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = accounts["accounts"][0]["resourceId"]
        .as_str()
        .unwrap()
        .to_owned();
    psd2_balance_of(sandbox, bank, consent, &account).await
}

async fn psd2_balance_of(
    sandbox: &TestSandbox,
    bank: BankId,
    consent: &str,
    account: &str,
) -> reqwest::Response {
    sandbox
        .psd2_request(Method::GET, bank, &format!("/accounts/{account}/balances"))
        .header("consent-id", consent)
        .header("psu-ip-address", "192.0.2.10")
        .send()
        .await
        .unwrap()
}

async fn neonomics_accounts(
    sandbox: &TestSandbox,
    token: &str,
    session: &str,
) -> reqwest::Response {
    sandbox
        .neonomics_request(Method::GET, token, "/ics/v3/accounts")
        .header("x-session-id", session)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn unavailable_answers_503_in_each_providers_shape() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let session = sandbox.neonomics_session(&token, BankId::Dnb, "u1").await;
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;

    sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "kind": "unavailable"}))
        .await;
    let response = neonomics_accounts(&sandbox, &token, &session).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], "1503");
    assert_eq!(body["source"], "BANK");
    for field in ["id", "errorCode", "message", "source", "type"] {
        assert!(body.get(field).is_some(), "Neonomics error has {field}");
    }
    // The same bank through its own PSD2 API is unaffected.
    assert_eq!(
        psd2_balance(&sandbox, BankId::Dnb, &consent).await.status(),
        200
    );

    sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "kind": "unavailable"}))
        .await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = sandbox
        .http
        .get(sandbox.psd2(BankId::Dnb, "/accounts"))
        .header("x-request-id", &request_id)
        .header("consent-id", &consent)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());
    assert!(
        response.bytes().await.unwrap().is_empty(),
        "NextGenPSD2 503 has no body"
    );
}

#[tokio::test]
async fn one_bank_down_leaves_the_others_working() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let dnb = sandbox.neonomics_session(&token, BankId::Dnb, "u1").await;
    let nordea = sandbox
        .neonomics_session(&token, BankId::Nordea, "u1")
        .await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "kind": "error"}))
        .await;

    let response = neonomics_accounts(&sandbox, &token, &dnb).await;
    assert_eq!(response.status(), 530, "a bank's error comes back as 530");
    assert_eq!(response.json::<Value>().await.unwrap()["type"], "FATAL");
    assert_eq!(
        neonomics_accounts(&sandbox, &token, &nordea).await.status(),
        200
    );
}

#[tokio::test]
async fn provider_wide_error_is_520_at_neonomics_and_500_at_a_bank() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let session = sandbox
        .neonomics_session(&token, BankId::Sparebank1, "u1")
        .await;
    let consent = sandbox.psd2_consent(BankId::Nordea, "u1").await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "error"}))
        .await;
    sandbox
        .add_fault(json!({"provider": "psd2", "kind": "error"}))
        .await;

    let banks = sandbox
        .neonomics_request(Method::GET, &token, "/ics/v3/banks")
        .send()
        .await
        .unwrap();
    assert_eq!(banks.status(), 520);
    assert_eq!(banks.json::<Value>().await.unwrap()["source"], "NEONOMICS");
    let response = neonomics_accounts(&sandbox, &token, &session).await;
    assert_eq!(
        response.status(),
        520,
        "Neonomics' own failure, whichever bank is asked"
    );
    let response = psd2_balance_of(&sandbox, BankId::Nordea, &consent, "any").await;
    assert_eq!(response.status(), 500);
}

#[tokio::test]
async fn timeout_hangs_until_the_fault_is_removed() {
    let sandbox = spawn_sandbox().await;
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;
    let fault = sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "kind": "timeout"}))
        .await;

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let error = impatient
        .get(sandbox.psd2(BankId::Dnb, "/accounts"))
        .header("x-request-id", uuid::Uuid::new_v4().to_string())
        .header("consent-id", &consent)
        .send()
        .await
        .unwrap_err();
    assert!(
        error.is_timeout(),
        "the request hangs past the client's timeout: {error}"
    );

    // A patient client is released with 504 as soon as the fault goes away.
    let before = sandbox.upstream_calls("psd2", Some("dnb")).await;
    let url = sandbox.psd2(BankId::Dnb, "/accounts");
    let waiting = tokio::spawn({
        let http = sandbox.http.clone();
        let consent = consent.clone();
        async move {
            let started = Instant::now();
            let response = http
                .get(url)
                .header("x-request-id", uuid::Uuid::new_v4().to_string())
                .header("consent-id", consent)
                .send()
                .await
                .unwrap();
            (response.status(), started.elapsed())
        }
    });
    eventually(Duration::from_secs(5), || async {
        (sandbox.upstream_calls("psd2", Some("dnb")).await > before).then_some(())
    })
    .await;
    // The request has arrived; it must still be hanging 300 ms later, which only time shows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sandbox.remove_fault(fault).await;
    let (status, waited) = waiting.await.unwrap();
    assert_eq!(status, 504);
    assert!(
        waited >= Duration::from_millis(250),
        "it hung until the fault was removed"
    );
    assert_eq!(
        psd2_balance(&sandbox, BankId::Dnb, &consent).await.status(),
        200
    );
}

#[tokio::test]
async fn latency_slows_every_matching_request() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "latency", "latency_ms": 400}))
        .await;
    let started = Instant::now();
    let response = sandbox
        .neonomics_request(Method::GET, &token, "/ics/v3/banks")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "latency delays but does not fail");
    assert!(started.elapsed() >= Duration::from_millis(400));

    let started = Instant::now();
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;
    psd2_balance(&sandbox, BankId::Dnb, &consent).await;
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the other provider is not slowed"
    );
}

#[tokio::test]
async fn rate_limit_fault_answers_429_with_retry_after() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let session = sandbox.neonomics_session(&token, BankId::Dnb, "u1").await;
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "rate_limit", "retry_after_s": 7}))
        .await;
    sandbox
        .add_fault(
            json!({"provider": "psd2", "bank": "dnb", "kind": "rate_limit", "retry_after_s": 3}),
        )
        .await;

    let response = neonomics_accounts(&sandbox, &token, &session).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
    assert!(response.headers().contains_key("x-ratelimit-limit"));
    assert_eq!(response.json::<Value>().await.unwrap()["errorCode"], "1429");

    let response = psd2_balance_of(&sandbox, BankId::Dnb, &consent, "any").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tppMessages"][0]["code"], "ACCESS_EXCEEDED");
}

#[tokio::test]
async fn each_provider_enforces_its_own_rate_limit() {
    let mut options = sandbox_options();
    options.rate_limit_per_s = 5;
    let sandbox = spawn_sandbox_with(options).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let response = sandbox
            .http
            .get(sandbox.neonomics("/health"))
            .send()
            .await
            .unwrap();
        let remaining = response.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .to_owned();
        statuses.push((response.status().as_u16(), remaining));
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_eq!(response.headers()["x-ratelimit-limit"], "5");
        }
    }
    assert_eq!(statuses[0], (200, "4".to_owned()));
    assert_eq!(statuses[4], (200, "0".to_owned()));
    assert_eq!(statuses[5].0, 429);
    // The PSD2 listener has its own budget.
    let response = sandbox
        .psd2_request(Method::GET, BankId::Dnb, "/accounts")
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), 429);
}

#[tokio::test]
async fn unauthorized_looks_like_revoked_credentials() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let session = sandbox
        .neonomics_session(&token, BankId::Nordea, "u1")
        .await;
    let consent = sandbox.psd2_consent(BankId::Nordea, "u1").await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "unauthorized"}))
        .await;
    sandbox
        .add_fault(json!({"provider": "psd2", "kind": "unauthorized"}))
        .await;

    let response = sandbox
        .http
        .post(sandbox.neonomics("/auth/realms/sandbox/protocol/openid-connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bankgate-sandbox"),
            ("client_secret", "sandbox-client-secret"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "the token endpoint refuses the client"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    let response = neonomics_accounts(&sandbox, &token, &session).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["type"], "AUTH");

    let response = psd2_balance_of(&sandbox, BankId::Nordea, &consent, "any").await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["tppMessages"][0]["code"], "CERTIFICATE_REVOKED");
}

#[tokio::test]
async fn bank_scoped_unauthorized_is_403_at_neonomics() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let session = sandbox.neonomics_session(&token, BankId::Dnb, "u1").await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "kind": "unauthorized"}))
        .await;
    assert_eq!(
        neonomics_accounts(&sandbox, &token, &session)
            .await
            .status(),
        403
    );
}

#[tokio::test]
async fn consent_expired_breaks_account_reads_only() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let session = sandbox.neonomics_session(&token, BankId::Dnb, "u1").await;
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "kind": "consent_expired"}))
        .await;
    sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "kind": "consent_expired"}))
        .await;

    let response = neonomics_accounts(&sandbox, &token, &session).await;
    assert_eq!(response.status(), 510);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], "1426");
    assert_eq!(
        body["links"][0]["href"],
        format!("/ics/v3/consent/{session}")
    );

    let response = psd2_balance_of(&sandbox, BankId::Dnb, &consent, "any").await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "CONSENT_EXPIRED"
    );

    // Payments need no account consent and go through.
    let response = sandbox
        .psd2_request(
            Method::GET,
            BankId::Dnb,
            "/payments/norwegian-domestic-credit-transfers/unknown",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        403,
        "an unknown payment, not a consent error"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "RESOURCE_UNKNOWN"
    );
}

#[tokio::test]
async fn refuse_closes_the_listener_and_reopens_it_on_the_same_port() {
    let sandbox = spawn_sandbox().await;
    let addr = sandbox.sandbox.neonomics_addr();
    // A keep-alive connection opened before the fault.
    let keep_alive = reqwest::Client::new();
    assert_eq!(
        keep_alive
            .get(sandbox.neonomics("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let fault = sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "refuse"}))
        .await;
    eventually(Duration::from_secs(5), || async {
        match tokio::net::TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
    let error = keep_alive
        .get(sandbox.neonomics("/health"))
        .send()
        .await
        .unwrap_err();
    assert!(
        error.is_connect() || error.is_request(),
        "pooled connection is gone too: {error}"
    );
    // The other provider still listens.
    let psd2 = sandbox
        .psd2_request(Method::GET, BankId::Dnb, "/accounts")
        .send()
        .await
        .unwrap();
    assert_eq!(psd2.status(), 400, "PSD2 answers (no Consent-ID given)");

    sandbox.remove_fault(fault).await;
    let status = eventually(Duration::from_secs(5), || async {
        reqwest::get(sandbox.neonomics("/health"))
            .await
            .ok()
            .map(|r| r.status())
    })
    .await;
    assert_eq!(status, 200);
    assert_eq!(sandbox.sandbox.neonomics_addr(), addr);
}

#[tokio::test]
async fn faults_can_be_limited_to_a_service() {
    let sandbox = spawn_sandbox().await;
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;
    sandbox
        .add_fault(
            json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": "unavailable"}),
        )
        .await;
    assert_eq!(
        psd2_balance(&sandbox, BankId::Dnb, &consent).await.status(),
        200
    );
    let response = sandbox
        .psd2_request(
            Method::GET,
            BankId::Dnb,
            "/payments/norwegian-domestic-credit-transfers/x/status",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}

#[tokio::test]
async fn ratio_fails_a_share_of_requests() {
    let sandbox = spawn_sandbox().await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "unavailable", "ratio": 0.5}))
        .await;
    let mut failed = 0;
    for _ in 0..200 {
        if sandbox
            .http
            .get(sandbox.neonomics("/health"))
            .send()
            .await
            .unwrap()
            .status()
            == 503
        {
            failed += 1;
        }
    }
    assert!(
        (50..=150).contains(&failed),
        "about half failed: {failed} of 200"
    );
}

#[tokio::test]
async fn faults_expire_after_their_duration_and_can_be_listed_and_cleared() {
    let sandbox = spawn_sandbox().await;
    sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "unavailable", "duration_s": 1}))
        .await;
    sandbox
        .add_fault(json!({"provider": "psd2", "kind": "error"}))
        .await;
    let list: Value = sandbox
        .http
        .get(sandbox.control("/sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["faults"].as_array().unwrap().len(), 2);
    assert!(list["faults"][0]["expires_at"].is_string());
    assert_eq!(
        sandbox
            .http
            .get(sandbox.neonomics("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    eventually(Duration::from_secs(3), || async {
        let status = sandbox
            .http
            .get(sandbox.neonomics("/health"))
            .send()
            .await
            .unwrap()
            .status();
        (status == 200).then_some(())
    })
    .await;
    let response = sandbox
        .http
        .delete(sandbox.control("/sandbox/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let list: Value = sandbox
        .http
        .get(sandbox.control("/sandbox/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["faults"].as_array().unwrap().is_empty());
    let missing = sandbox
        .http
        .delete(sandbox.control("/sandbox/faults/999"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn invalid_faults_get_a_400_envelope() {
    let sandbox = spawn_sandbox().await;
    let cases = [
        (
            json!({"provider": "neonomics", "kind": "unavailable", "ratio": 2}),
            Some("ratio"),
        ),
        (
            json!({"provider": "neonomics", "kind": "latency"}),
            Some("latency_ms"),
        ),
        (
            json!({"provider": "neonomics", "bank": "dnb", "kind": "refuse"}),
            Some("kind"),
        ),
        (
            json!({"provider": "psd2", "kind": "consent_expired", "service": "pisp"}),
            Some("service"),
        ),
        (json!({"provider": "neonomics", "kind": "meltdown"}), None),
        (json!({"provider": "handelsbanken", "kind": "error"}), None),
        (
            json!({"provider": "psd2", "kind": "error", "colour": "red"}),
            None,
        ),
    ];
    for (body, field) in cases {
        let response = sandbox
            .http
            .post(sandbox.control("/sandbox/faults"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let envelope: Value = response.json().await.unwrap();
        assert!(
            envelope["error"].is_string() && envelope["message"].is_string(),
            "{envelope}"
        );
        if let Some(field) = field {
            assert_eq!(envelope["details"][0]["field"], field, "{body}");
        }
    }
    let response = sandbox
        .http
        .post(sandbox.control("/sandbox/faults"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "invalid_json"
    );
}
