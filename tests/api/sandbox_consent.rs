//! Consent and SCA through both simulated providers, as bankgate will drive them.

use std::time::Duration;

use bankgate_actors::BankId;
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{
    consent_body, eventually, sandbox_options, spawn_sandbox, spawn_sandbox_with,
};

#[tokio::test]
async fn psd2_consent_is_approved_through_the_sca_redirect() {
    let sandbox = spawn_sandbox().await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = sandbox
        .http
        .post(sandbox.psd2(BankId::Nordea, "/consents"))
        .header("x-request-id", &request_id)
        .header(
            "tpp-redirect-uri",
            "https://drop.example/consents/42/callback",
        )
        .header("psu-id", "user-7")
        .json(&consent_body(4))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(
        response.headers()["x-request-id"],
        request_id.as_str(),
        "X-Request-ID is echoed"
    );
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["consentStatus"], "received");
    let consent = created["consentId"].as_str().unwrap().to_owned();
    let sca = created["_links"]["scaRedirect"]["href"].as_str().unwrap();

    // Before the user approves, the consent cannot be used.
    let accounts = |consent: String| {
        sandbox
            .psd2_request(Method::GET, BankId::Nordea, "/accounts")
            .header("consent-id", consent)
            .header("psu-ip-address", "192.0.2.1")
            .send()
    };
    let response = accounts(consent.clone()).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "CONSENT_INVALID"
    );

    let back_to = sandbox.complete_sca(sca).await;
    assert_eq!(back_to, "https://drop.example/consents/42/callback");
    let status: Value = sandbox
        .psd2_request(
            Method::GET,
            BankId::Nordea,
            &format!("/consents/{consent}/status"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["consentStatus"], "valid");

    let list: Value = accounts(consent.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = &list["accounts"][0];
    assert!(account["iban"].as_str().unwrap().starts_with("NO"));
    let id = account["resourceId"].as_str().unwrap();
    let balances: Value = sandbox
        .psd2_request(
            Method::GET,
            BankId::Nordea,
            &format!("/accounts/{id}/balances"),
        )
        .header("consent-id", &consent)
        .header("psu-ip-address", "192.0.2.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let balance = &balances["balances"][0];
    assert_eq!(balance["balanceType"], "interimAvailable");
    assert_eq!(balance["balanceAmount"]["currency"], "NOK");
    assert!(
        balance["balanceAmount"]["amount"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );

    // A consent is bound to its bank.
    let other_bank = sandbox
        .psd2_request(Method::GET, BankId::Dnb, "/accounts")
        .header("consent-id", &consent)
        .send()
        .await
        .unwrap();
    assert_eq!(other_bank.status(), 403);
}

#[tokio::test]
async fn neonomics_asks_for_consent_with_1426_then_serves_the_same_accounts() {
    let sandbox = spawn_sandbox().await;
    let token = sandbox.neonomics_token().await;
    let response = sandbox
        .neonomics_request(Method::POST, &token, "/ics/v3/session")
        .header("x-psu-id", "user-9")
        .json(&serde_json::json!({"bankId": sandbox.neonomics_bank_id(&token, BankId::Dnb).await}))
        .send()
        .await
        .unwrap();
    let session = response.json::<Value>().await.unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let accounts = sandbox
        .neonomics_request(Method::GET, &token, "/ics/v3/accounts")
        .header("x-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(accounts.status(), 510);
    let body: Value = accounts.json().await.unwrap();
    assert_eq!(body["errorCode"], "1426");

    let session = sandbox
        .neonomics_session(&token, BankId::Dnb, "user-9")
        .await;
    let accounts: Value = sandbox
        .neonomics_request(Method::GET, &token, "/ics/v3/accounts")
        .header("x-session-id", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let account = &accounts[0];
    let id = account["id"].as_str().unwrap();
    let balances: Value = sandbox
        .neonomics_request(
            Method::GET,
            &token,
            &format!("/ics/v3/accounts/{id}/balances"),
        )
        .header("x-session-id", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let neonomics_amount = balances[0]["amount"].as_str().unwrap().to_owned();

    // The same account through DNB's own PSD2 API has the same number and balance.
    let consent = sandbox.psd2_consent(BankId::Dnb, "user-9").await;
    let list: Value = sandbox
        .psd2_request(Method::GET, BankId::Dnb, "/accounts")
        .header("consent-id", &consent)
        .header("psu-ip-address", "192.0.2.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let same = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["iban"] == account["iban"])
        .unwrap();
    let psd2_id = same["resourceId"].as_str().unwrap();
    assert_ne!(psd2_id, id, "each provider has its own account ids");
    let balances: Value = sandbox
        .psd2_request(
            Method::GET,
            BankId::Dnb,
            &format!("/accounts/{psd2_id}/balances"),
        )
        .header("consent-id", &consent)
        .header("psu-ip-address", "192.0.2.1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        balances["balances"][0]["balanceAmount"]["amount"],
        neonomics_amount.as_str()
    );
}

#[tokio::test]
async fn unattended_reads_are_capped_by_frequency_per_day() {
    let sandbox = spawn_sandbox().await;
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;
    let read = |attended: bool| {
        let mut request = sandbox
            .psd2_request(Method::GET, BankId::Dnb, "/accounts")
            .header("consent-id", &consent);
        if attended {
            request = request.header("psu-ip-address", "192.0.2.1");
        }
        request.send()
    };
    for _ in 0..4 {
        assert_eq!(read(false).await.unwrap().status(), 200);
    }
    let fifth = read(false).await.unwrap();
    assert_eq!(fifth.status(), 429);
    assert_eq!(
        fifth.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "ACCESS_EXCEEDED"
    );
    assert_eq!(
        read(true).await.unwrap().status(),
        200,
        "reads with the user present do not count"
    );
}

#[tokio::test]
async fn consents_expire_on_demand_and_after_their_lifetime() {
    let mut options = sandbox_options();
    options.consent_ttl = Duration::from_secs(1);
    let sandbox = spawn_sandbox_with(options).await;
    let consent = sandbox.psd2_consent(BankId::Sparebank1, "u1").await;
    let status = || async {
        let response = sandbox
            .psd2_request(Method::GET, BankId::Sparebank1, "/accounts")
            .header("consent-id", &consent)
            .header("psu-ip-address", "192.0.2.1")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        (
            status,
            body["tppMessages"][0]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        )
    };
    assert_eq!(status().await.0, 200);
    eventually(Duration::from_secs(3), || async {
        (status().await
            == (
                reqwest::StatusCode::UNAUTHORIZED,
                "CONSENT_EXPIRED".to_owned(),
            ))
            .then_some(())
    })
    .await;

    let sandbox = spawn_sandbox().await;
    let consent = sandbox.psd2_consent(BankId::Dnb, "u1").await;
    let response = sandbox
        .http
        .post(sandbox.control(&format!("/sandbox/consents/{consent}/expire")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = sandbox
        .psd2_request(Method::GET, BankId::Dnb, "/accounts")
        .header("consent-id", &consent)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "CONSENT_EXPIRED"
    );
}

#[tokio::test]
async fn rejected_sca_leaves_the_consent_unusable() {
    let sandbox = spawn_sandbox().await;
    let created: Value = sandbox
        .psd2_request(Method::POST, BankId::Dnb, "/consents")
        .header("tpp-redirect-uri", "https://drop.example/done")
        .json(&consent_body(4))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sca = format!(
        "{}?result=reject",
        created["_links"]["scaRedirect"]["href"].as_str().unwrap()
    );
    sandbox.complete_sca(&sca).await;
    let consent = created["consentId"].as_str().unwrap();
    let status: Value = sandbox
        .psd2_request(
            Method::GET,
            BankId::Dnb,
            &format!("/consents/{consent}/status"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["consentStatus"], "rejected");
}

#[tokio::test]
async fn bad_psd2_requests_get_the_specified_errors() {
    let sandbox = spawn_sandbox().await;
    let no_request_id = sandbox
        .http
        .get(sandbox.psd2(BankId::Dnb, "/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_request_id.status(), 400);
    assert_eq!(
        no_request_id.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "FORMAT_ERROR"
    );

    let bad_body = sandbox
        .psd2_request(Method::POST, BankId::Dnb, "/consents")
        .header("tpp-redirect-uri", "https://drop.example/done")
        .json(&serde_json::json!({"access": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_body.status(), 400);
    assert_eq!(
        bad_body.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "FORMAT_ERROR"
    );

    let no_redirect = sandbox
        .psd2_request(Method::POST, BankId::Dnb, "/consents")
        .json(&consent_body(4))
        .send()
        .await
        .unwrap();
    assert_eq!(no_redirect.status(), 400);

    let unknown_consent = sandbox
        .psd2_request(Method::GET, BankId::Dnb, "/accounts")
        .header("consent-id", "no-such-consent")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_consent.status(), 403);
    assert_eq!(
        unknown_consent.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "CONSENT_UNKNOWN"
    );

    let unknown_bank = sandbox
        .http
        .get(format!(
            "http://{}/handelsbanken/v1/accounts",
            sandbox.sandbox.psd2_addr()
        ))
        .header("x-request-id", uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_bank.status(), 404);

    let unknown_sca = sandbox
        .http
        .get(sandbox.control("/sandbox/sca/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_sca.status(), 404);
}

#[tokio::test]
async fn bad_neonomics_requests_get_neonomics_errors() {
    let sandbox = spawn_sandbox().await;
    let no_token = sandbox
        .http
        .get(sandbox.neonomics("/ics/v3/banks"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let wrong_secret = sandbox
        .http
        .post(sandbox.neonomics("/auth/realms/sandbox/protocol/openid-connect/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bankgate-sandbox"),
            ("client_secret", "guess"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), 401);
    // The token as the authentication page shows it; a realm other than the sandbox's is
    // Keycloak's 404.
    let grant = |realm: &str, form: Vec<(&'static str, String)>| {
        sandbox
            .http
            .post(sandbox.neonomics(&format!(
                "/auth/realms/{realm}/protocol/openid-connect/token"
            )))
            .form(&form)
            .send()
    };
    let credentials = || {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", "bankgate-sandbox".to_owned()),
            ("client_secret", "sandbox-client-secret".to_owned()),
        ]
    };
    assert_eq!(grant("live", credentials()).await.unwrap().status(), 404);
    let issued: Value = grant("sandbox", credentials())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(issued["token_type"], "bearer");
    assert_eq!(issued["expires_in"], 3600);
    assert_eq!(issued["refresh_expires_in"], 7200);
    assert!(issued["session_state"].is_string());
    let refresh = |token: &Value| {
        vec![
            ("grant_type", "refresh_token".to_owned()),
            (
                "refresh_token",
                token["refresh_token"].as_str().unwrap().to_owned(),
            ),
            ("client_id", "bankgate-sandbox".to_owned()),
            ("client_secret", "sandbox-client-secret".to_owned()),
        ]
    };
    let renewed = grant("sandbox", refresh(&issued)).await.unwrap();
    assert_eq!(renewed.status(), 200);
    // A refresh token is spent by its use.
    let again = grant("sandbox", refresh(&issued)).await.unwrap();
    assert_eq!(again.status(), 400);

    let token = sandbox.neonomics_token().await;
    let banks: Value = sandbox
        .neonomics_request(Method::GET, &token, "/ics/v3/banks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(banks.as_array().unwrap().len(), 3);
    assert_eq!(banks[0]["status"], "AVAILABLE");

    let unknown_bank = sandbox
        .neonomics_request(Method::POST, &token, "/ics/v3/session")
        .json(&serde_json::json!({"bankId": "NOPE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_bank.status(), 510);
    let no_device = sandbox
        .http
        .get(sandbox.neonomics("/ics/v3/banks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(no_device.status(), 510);
    assert_eq!(
        no_device.json::<Value>().await.unwrap()["errorCode"],
        "1001"
    );
    let no_session = sandbox
        .neonomics_request(Method::GET, &token, "/ics/v3/accounts")
        .send()
        .await
        .unwrap();
    assert_eq!(no_session.status(), 510);
}
