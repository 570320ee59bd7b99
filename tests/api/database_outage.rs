//! PostgreSQL going away under a running gateway and coming back: balance reads go on,
//! payments answer 503 with a clear error (nothing is accepted that cannot be stored), and
//! everything heals without restarting the gateway.

use std::time::Duration;

use bankgate::postgres::PrivateCluster;
use bankgate_actors::BankId;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{QUICK, TestApp, eventually, spawn_app_on};

async fn pay(app: &TestApp, token: &str, key: &str, account: &str) -> (StatusCode, Value) {
    let body = json!({
        "bank": "dnb",
        "debtor_account_id": account,
        "amount": "120",
        "currency": "NOK",
        "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
        "kind": "remittance",
    });
    let response = app.pay(token, key, &body).await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn ready(app: &TestApp) -> StatusCode {
    app.http
        .get(app.ops_url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_database_restart_keeps_balances_up_pauses_payments_and_heals_by_itself() {
    let mut cluster = PrivateCluster::start_temporary().await.unwrap();
    let database = cluster.ensure_database("outage").await.unwrap();
    let app = spawn_app_on(&database, QUICK).await;
    let token = app.token("outage-user");
    app.connect(&token, BankId::Dnb).await;
    let account = app.connection_at(&token, BankId::Dnb).await;
    assert_eq!(app.balances(&token).await.status(), 200);
    let (status, body) = pay(&app, &token, "before", &account).await;
    assert_eq!(status, 201, "{body}");
    // A connection completed just before the outage: the session's list is to be reloaded
    // and cannot be.
    app.connect(&token, BankId::Nordea).await;

    cluster.pause().await;
    assert_eq!(ready(&app).await, 503, "readiness reports the database");
    // Balances go on: from the connections the session knew, and the banks answer.
    for _ in 0..3 {
        let response = app.balances(&token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body["accounts"][0]["amount"].is_string(), "{body}");
    }
    // A payment that cannot be recorded is not accepted.
    let (status, body) = pay(&app, &token, "during", &account).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable", "{body}");
    assert!(body["message"].as_str().unwrap().contains("try again"));

    cluster.resume().await.unwrap();
    eventually(Duration::from_secs(20), || async {
        (ready(&app).await == 200).then_some(())
    })
    .await;
    // The same request, retried as the client was told to, now goes through: once.
    let (status, body) = eventually(Duration::from_secs(20), || async {
        let (status, body) = pay(&app, &token, "during", &account).await;
        (status != 503).then_some((status, body))
    })
    .await;
    assert_eq!(status, 201, "{body}");
    let reference = body["payment_id"].as_str().unwrap().replace('-', "");
    assert_eq!(
        app.sandbox
            .ledger(&format!("?end_to_end_id={reference}"))
            .await
            .len(),
        1
    );
    let (status, _) = pay(&app, &token, "during", &account).await;
    assert_eq!(status, 201, "a replay answers from the stored payment");
    app.gateway.shutdown().await;
    cluster.stop().await;
}

/// A payment stored before PostgreSQL went away is answered 202 with its id, never 503: a 5xx
/// would invite the client to pay again under a new key. The drainer settles it once
/// PostgreSQL is back, and the bank has it once.
#[tokio::test]
async fn a_payment_stored_before_the_database_went_away_is_answered_202_and_settled_later() {
    let mut cluster = PrivateCluster::start_temporary().await.unwrap();
    let database = cluster.ensure_database("stored").await.unwrap();
    let mut settings = QUICK.to_vec();
    settings.extend([
        ("BANKGATE__PROVIDERS__PSD2__TIMEOUT", "3s"),
        ("BANKGATE__PAYMENTS__DRAIN_INTERVAL", "200ms"),
        ("BANKGATE__PAYMENTS__IN_FLIGHT_TIMEOUT", "12s"),
    ]);
    let app = spawn_app_on(&database, &settings).await;
    let token = app.token("stored-user");
    app.connect(&token, BankId::Dnb).await;
    let account = app.connection_at(&token, BankId::Dnb).await;
    // DNB's own API holds the initiation long enough for PostgreSQL to go away meanwhile
    // (through Neonomics, whose answer is then lost to bankgate, it could never be found:
    // Neonomics has no look-up but by the payment's id).
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "unavailable"}))
        .await;
    let slow = app
        .sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": "latency", "latency_ms": 2000}))
        .await;
    let calls_before = app.upstream_calls("psd2", Some("dnb")).await;
    // A call to the bank comes after the payment was written: PostgreSQL goes away then.
    let database_away = async {
        eventually(Duration::from_secs(10), || async {
            (app.upstream_calls("psd2", Some("dnb")).await > calls_before).then_some(())
        })
        .await;
        cluster.pause().await;
    };
    let ((status, body), ()) = tokio::join!(pay(&app, &token, "stored", &account), database_away);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "unknown", "{body}");
    let id = body["payment_id"]
        .as_str()
        .expect("the payment's id")
        .to_owned();
    app.sandbox.remove_fault(slow).await;

    cluster.resume().await.unwrap();
    // It was left `initiating`: after `in_flight_timeout` it is looked up and found.
    let view = eventually(Duration::from_secs(40), || async {
        let response = app.payment(&token, &id).await;
        let view: Value = response.json().await.ok()?;
        (view["status"] == "pending_sca").then_some(view)
    })
    .await;
    let reference = id.replace('-', "");
    assert_eq!(
        app.sandbox
            .ledger(&format!("?end_to_end_id={reference}"))
            .await
            .len(),
        1,
        "{view}"
    );
    app.gateway.shutdown().await;
    cluster.stop().await;
}
