//! No secrets or personal data in the logs: a `bankgate serve` process logging at debug (its
//! own crates) in the production JSON format goes through a full scenario (consents, balances
//! live, stale and unavailable, expired consents, revoked credentials, payments with SCA and
//! webhooks, forged webhooks, bad input, ops changes), and its output may contain no token,
//! secret, account number, IBAN or national identity number.

use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use bankgate_sandbox::webhooks::sign;
use serde_json::{Value, json};

use crate::helpers::{
    DEV_TOKEN_SECRET, OPS_TOKEN, client, connections, eventually, free_port, fresh_database, serve,
    spawn_sandbox, wait_until_up,
};

/// A Norwegian national identity number (fødselsnummer, check digits valid) used as the
/// user's id and given in the consent request, for the banks' PSU-ID.
const NATIONAL_ID: &str = "15059012387";
const CLIENT_SECRET: &str = "sandbox-client-secret";
const WEBHOOK_SECRET: &str = "sandbox-dnb-psd2-webhook-secret";
/// Creditors: a Norwegian account number (MOD11), an IBAN, and one that fails MOD11.
const CREDITOR_ACCOUNT: &str = "86011117947";
const CREDITOR_IBAN: &str = "NO9386011117947";
const BAD_ACCOUNT: &str = "86011117948";

#[tokio::test]
async fn a_full_scenario_logs_no_token_secret_account_number_or_national_id() {
    let sandbox = spawn_sandbox().await;
    let database = fresh_database().await;
    let (client_port, ops_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client_port}");
    let ops = format!("http://127.0.0.1:{ops_port}");
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("bankgate.log");
    let mut gateway = serve(
        &sandbox,
        &database,
        client_port,
        ops_port,
        &[
            ("BANKGATE__BALANCES__FRESH_FOR", "0s"),
            (
                "BANKGATE__PROVIDERS__NEONOMICS__LIMITS__FIRST_BACKOFF",
                "20ms",
            ),
            ("BANKGATE__PROVIDERS__PSD2__LIMITS__FIRST_BACKOFF", "20ms"),
            ("BANKGATE__TELEMETRY__LOG_FORMAT", "json"),
            (
                "BANKGATE__TELEMETRY__LOG_FILTER",
                "info,bankgate=debug,bankgate_actors=debug",
            ),
        ],
        Some(&log_path),
    );
    wait_until_up(&url).await;
    let http = client();
    let secret = secrecy::SecretString::from(DEV_TOKEN_SECRET.to_owned());
    let token =
        bankgate::token::mint(&secret, NATIONAL_ID, "s-1", Duration::from_secs(600)).unwrap();

    // Consents and connections at two banks.
    for bank in [BankId::Dnb, BankId::Nordea] {
        let psu = NationalId::parse(NATIONAL_ID).unwrap();
        bankgate::browser::connect(&url, &token, &psu, bank, "https://drop.example/connected")
            .await
            .expect("consent flow");
    }
    let ids: Vec<(String, String)> = connections(&url, &token)
        .await
        .iter()
        .map(|c| {
            (
                c["bank"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let dnb_account = ids
        .iter()
        .find(|(bank, _)| bank == "dnb")
        .unwrap()
        .1
        .clone();
    let read_all = || async {
        for (_, id) in &ids {
            http.get(format!("{url}/v1/accounts/{id}/balances"))
                .bearer_auth(&token)
                .header("x-psu-ip-address", "192.0.2.44")
                .send()
                .await
                .unwrap();
        }
        http.get(format!("{url}/v1/balances"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(read_all().await, 200);

    // DNB down at both providers (stale, then breakers), expired consents at Nordea, revoked
    // Neonomics credentials: every failure path logs.
    let mut faults = Vec::new();
    for fault in [
        json!({"provider": "neonomics", "bank": "dnb", "kind": "unavailable"}),
        json!({"provider": "psd2", "bank": "dnb", "kind": "timeout"}),
        json!({"provider": "neonomics", "bank": "nordea", "kind": "consent_expired"}),
        json!({"provider": "psd2", "bank": "nordea", "kind": "consent_expired"}),
    ] {
        faults.push(sandbox.add_fault(fault).await);
    }
    for _ in 0..4 {
        read_all().await;
    }
    for fault in faults.drain(..) {
        sandbox.remove_fault(fault).await;
    }
    let revoked = sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "unauthorized"}))
        .await;
    read_all().await;
    sandbox.remove_fault(revoked).await;

    // DNB is back once a half-open probe succeeds.
    eventually(Duration::from_secs(20), || async {
        let view: Value = http
            .get(format!("{url}/v1/accounts/{dnb_account}/balances"))
            .bearer_auth(&token)
            .header("x-psu-ip-address", "192.0.2.44")
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (view["source"] == "live").then_some(())
    })
    .await;

    // Payments: one completed after its SCA to an account number, one to an IBAN, one
    // refused by validation, and forged webhooks.
    let pay = |key: &'static str, creditor: Value| {
        let body = json!({
            "bank": "dnb",
            "debtor_account_id": dnb_account,
            "amount": "150.50",
            "currency": "NOK",
            "creditor": creditor,
            "remittance_info": "Husleie",
            "kind": "remittance",
        });
        let request = http
            .post(format!("{url}/v1/payments"))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .header("x-psu-ip-address", "192.0.2.44")
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let (status, paid) = pay(
        "log-1",
        json!({"name": "Kari Nordmann", "account_number": CREDITOR_ACCOUNT, "country": "NO"}),
    )
    .await;
    assert_eq!(status, 201, "{paid}");
    let sca = paid["sca_redirect"].as_str().unwrap();
    let back = sandbox.complete_sca(sca).await;
    http.get(&back).send().await.unwrap();
    let id = paid["payment_id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(20), || async {
        let view: Value = http
            .get(format!("{url}/v1/payments/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (view["status"] == "completed").then_some(())
    })
    .await;
    let (status, _) = pay(
        "log-2",
        json!({"name": "Ola Nordmann", "iban": CREDITOR_IBAN, "country": "NO"}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, refused) = pay(
        "log-3",
        json!({"name": "Ola Nordmann", "account_number": BAD_ACCOUNT, "country": "NO"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    let body = json!({"event_id": "forged-1", "bank": "dnb", "payment_id": id, "status": "ACSC"})
        .to_string();
    let now = chrono::Utc::now().timestamp();
    let timestamp = now.to_string();
    for (timestamp, signature) in [
        (
            timestamp.clone(),
            sign(b"not-the-secret", now, body.as_bytes()),
        ),
        (
            (now - 3600).to_string(),
            sign(WEBHOOK_SECRET.as_bytes(), now - 3600, body.as_bytes()),
        ),
    ] {
        let response = http
            .post(format!("{url}/v1/webhooks/psd2/dnb"))
            .header("x-webhook-timestamp", &timestamp)
            .header("x-webhook-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }

    // Bad tokens and an operator's change.
    let forged = format!("{}x", token);
    let response = http
        .get(format!("{url}/v1/balances"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = http
        .put(format!("{ops}/ops/banks/dnb/mode"))
        .bearer_auth(OPS_TOKEN)
        .json(&json!({"balances": "cached", "reason": "INC-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    read_all().await;
    gateway.kill();

    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.lines().count() > 20,
        "the scenario was logged: {} lines",
        logs.lines().count()
    );
    let mut secrets: Vec<(String, &str)> = vec![
        (token.clone(), "the user's token"),
        (
            token.rsplit('.').next().unwrap().to_owned(),
            "a token signature",
        ),
        (OPS_TOKEN.to_owned(), "the admin token"),
        (DEV_TOKEN_SECRET.to_owned(), "the token secret"),
        (CLIENT_SECRET.to_owned(), "the Neonomics client secret"),
        (WEBHOOK_SECRET.to_owned(), "the webhook secret"),
        (NATIONAL_ID.to_owned(), "the national identity number"),
        (CREDITOR_ACCOUNT.to_owned(), "a creditor account number"),
        (CREDITOR_IBAN.to_owned(), "a creditor IBAN"),
        (BAD_ACCOUNT.to_owned(), "a mistyped account number"),
    ];
    for bank in [BankId::Dnb, BankId::Nordea] {
        for account in sandbox.seeded_accounts(bank, NATIONAL_ID).await {
            for field in ["iban", "bban"] {
                if let Some(number) = account[field].as_str() {
                    secrets.push((number.to_owned(), "the user's account number"));
                }
            }
        }
    }
    assert!(secrets.len() > 12, "the user's accounts are known");
    for (secret, what) in &secrets {
        if let Some(line) = logs.lines().find(|l| l.contains(secret.as_str())) {
            panic!("{what} appears in the logs: {line}");
        }
    }
    for line in logs.lines() {
        let lower = line.to_ascii_lowercase();
        assert!(
            !lower.contains("bearer ") && !lower.contains("access_token"),
            "a credential appears in the logs: {line}"
        );
        // No IBAN of any kind: a country code and at least 13 digits.
        let bytes = line.as_bytes();
        let iban = bytes.windows(15).any(|w| {
            w[0].is_ascii_uppercase()
                && w[1].is_ascii_uppercase()
                && w[2..].iter().all(u8::is_ascii_digit)
        });
        assert!(!iban, "an IBAN appears in the logs: {line}");
    }
}
