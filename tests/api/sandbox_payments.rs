//! Payment initiation, SCA, the ledger and signed webhooks in the sandbox.

use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_sandbox::webhooks::sign;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warp::Filter;

use crate::helpers::{TestSandbox, spawn_sandbox};

const PRODUCT: &str = "norwegian-domestic-credit-transfers";

/// Returns the first account the default sandbox user holds at `bank`.
async fn debtor(sandbox: &TestSandbox, bank: BankId, psu: &str) -> Value {
    sandbox.seeded_accounts(bank, psu).await.swap_remove(0)
}

fn payment_body(debtor_iban: &str, amount: &str, reference: &str) -> Value {
    json!({
        "endToEndIdentification": reference,
        "debtorAccount": {"iban": debtor_iban},
        "instructedAmount": {"currency": "NOK", "amount": amount},
        "creditorAccount": {"bban": "86011117947"},
        "creditorName": "Kari Nordmann",
        "remittanceInformationUnstructured": "Middag",
    })
}

async fn initiate(sandbox: &TestSandbox, request_id: &str, body: &Value) -> reqwest::Response {
    sandbox
        .http
        .post(sandbox.psd2(BankId::Dnb, &format!("/payments/{PRODUCT}")))
        .header("x-request-id", request_id)
        .header("psu-ip-address", "192.0.2.1")
        .header("tpp-redirect-uri", "https://drop.example/payments/done")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A webhook receiver on port 0 that forwards what it gets.
async fn webhook_receiver() -> (
    String,
    mpsc::UnboundedReceiver<(warp::http::HeaderMap, warp::hyper::body::Bytes)>,
) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let route = warp::post()
        .and(warp::header::headers_cloned())
        .and(warp::body::bytes())
        .map(move |headers, body| {
            sender.send((headers, body)).unwrap();
            warp::reply()
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/psd2", listener.local_addr().unwrap());
    let options = bankgate_sandbox::http::ServeOptions::new(Duration::from_secs(5), Duration::ZERO);
    let route = route.recover(bankgate_sandbox::http::error::recover);
    tokio::spawn(bankgate_sandbox::http::serve(
        listener,
        route,
        options,
        std::future::pending(),
    ));
    (url, receiver)
}

#[tokio::test]
async fn payment_is_recorded_once_settles_after_sca_and_is_pushed_signed() {
    let sandbox = spawn_sandbox().await;
    let (hook_url, mut hooks) = webhook_receiver().await;
    let secret = "webhook-secret-for-tests";
    let response = sandbox
        .http
        .put(sandbox.control("/sandbox/webhooks/psd2/dnb"))
        .json(&json!({"url": hook_url, "secret": secret}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    let account = debtor(&sandbox, BankId::Dnb, "payer").await;
    let iban = account["iban"].as_str().unwrap();
    let before: f64 = account["balance"].as_str().unwrap().parse().unwrap();
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = initiate(
        &sandbox,
        &request_id,
        &payment_body(iban, "250.50", "bg-ref-1"),
    )
    .await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["transactionStatus"], "RCVD");
    let payment_id = created["paymentId"].as_str().unwrap();

    let ledger = sandbox.ledger("?end_to_end_id=bg-ref-1").await;
    assert_eq!(ledger.len(), 1, "initiated exactly once");
    assert_eq!(ledger[0]["request_id"], request_id.as_str());
    assert_eq!(ledger[0]["amount"], "250.50");
    assert_eq!(ledger[0]["status"], "RCVD");

    let back = sandbox
        .complete_sca(created["_links"]["scaRedirect"]["href"].as_str().unwrap())
        .await;
    assert_eq!(back, "https://drop.example/payments/done");
    let status: Value = sandbox
        .psd2_request(
            Method::GET,
            BankId::Dnb,
            &format!("/payments/{PRODUCT}/{payment_id}/status"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["transactionStatus"], "ACSC");
    assert_eq!(
        sandbox.ledger("?end_to_end_id=bg-ref-1").await[0]["status"],
        "ACSC"
    );
    let after: f64 = debtor(&sandbox, BankId::Dnb, "payer").await["balance"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before - after - 250.50).abs() < 0.001,
        "debited once: {before} → {after}"
    );

    let (headers, body) = tokio::time::timeout(Duration::from_secs(5), hooks.recv())
        .await
        .unwrap()
        .unwrap();
    let timestamp: i64 = headers["x-webhook-timestamp"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
    assert_eq!(
        headers["x-webhook-signature"].to_str().unwrap(),
        sign(secret.as_bytes(), timestamp, &body)
    );
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["payment_id"], payment_id);
    assert_eq!(event["status"], "ACSC");
    assert_eq!(event["end_to_end_id"], "bg-ref-1");
    assert_eq!(event["bank"], "dnb");
    assert!(event["event_id"].as_str().is_some_and(|id| !id.is_empty()));
}

#[tokio::test]
async fn rejected_sca_and_missing_funds_reject_the_payment() {
    let sandbox = spawn_sandbox().await;
    let account = debtor(&sandbox, BankId::Dnb, "payer").await;
    let iban = account["iban"].as_str().unwrap();
    let created: Value = initiate(
        &sandbox,
        &uuid::Uuid::new_v4().to_string(),
        &payment_body(iban, "10.00", "r1"),
    )
    .await
    .json()
    .await
    .unwrap();
    let sca = format!(
        "{}?result=reject",
        created["_links"]["scaRedirect"]["href"].as_str().unwrap()
    );
    sandbox.complete_sca(&sca).await;
    assert_eq!(
        sandbox.ledger("?end_to_end_id=r1").await[0]["status"],
        "RJCT"
    );

    let created: Value = initiate(
        &sandbox,
        &uuid::Uuid::new_v4().to_string(),
        &payment_body(iban, "99999999.00", "r2"),
    )
    .await
    .json()
    .await
    .unwrap();
    sandbox
        .complete_sca(created["_links"]["scaRedirect"]["href"].as_str().unwrap())
        .await;
    let entry = &sandbox.ledger("?end_to_end_id=r2").await[0];
    assert_eq!(entry["status"], "RJCT");
    assert_eq!(entry["reject_reason"], "insufficient funds");
}

#[tokio::test]
async fn invalid_payments_are_refused_before_the_ledger() {
    let sandbox = spawn_sandbox().await;
    let account = debtor(&sandbox, BankId::Dnb, "payer").await;
    let iban = account["iban"].as_str().unwrap();
    let mut bad_iban = payment_body(iban, "10.00", "x");
    bad_iban["creditorAccount"] = json!({"iban": "NO9386011117948"});
    let cases = [
        bad_iban,
        payment_body(iban, "10.001", "x"),
        payment_body(iban, "-5", "x"),
        payment_body("NO9386011117947", "10.00", "x"),
        json!({"debtorAccount": {"iban": iban}}),
    ];
    for body in cases {
        let response = initiate(&sandbox, &uuid::Uuid::new_v4().to_string(), &body).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
            "FORMAT_ERROR"
        );
    }
    let unknown_product = sandbox
        .psd2_request(
            Method::POST,
            BankId::Dnb,
            "/payments/instant-moon-transfers",
        )
        .header("psu-ip-address", "192.0.2.1")
        .header("tpp-redirect-uri", "https://drop.example/done")
        .json(&payment_body(iban, "10.00", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_product.status(), 404);
    assert_eq!(
        unknown_product.json::<Value>().await.unwrap()["tppMessages"][0]["code"],
        "PRODUCT_UNKNOWN"
    );
    assert!(
        sandbox.ledger("").await.is_empty(),
        "nothing invalid reached the ledger"
    );
}
