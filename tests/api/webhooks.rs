//! Webhooks settle only what their source may hold: a payment sent through that bank's own
//! API, at that bank, once per signed event, and still when a look-up had queued it again.
//! Neonomics pushes nothing: it documents no webhook for its payment API
//! (<https://docs.neonomics.io/docs/webhook-payment-status-updates> is its checkout's).

use bankgate_sandbox::webhooks::sign;
use serde_json::{Value, json};

use crate::helpers::{TestApp, fresh_database, set_mode, spawn_app_on};
use crate::payments::{
    dnb_user, pay, pay_settings, payment, payment_view, reference, times_initiated, wait_for_status,
};

const DNB_PSD2_SECRET: &str = "sandbox-dnb-psd2-webhook-secret";
const NORDEA_PSD2_SECRET: &str = "sandbox-nordea-psd2-webhook-secret";

/// Signs `event` now with `secret` and posts it to `/v1/webhooks/{source}`.
async fn post(app: &TestApp, source: &str, secret: &str, event: &Value) -> reqwest::Response {
    let body = event.to_string();
    let now = chrono::Utc::now().timestamp();
    app.http
        .post(app.client_url(&format!("/v1/webhooks/{source}")))
        .header("x-webhook-timestamp", now.to_string())
        .header(
            "x-webhook-signature",
            sign(secret.as_bytes(), now, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Delivers `event` as `post` does; returns the outcome the gateway reports.
async fn deliver(app: &TestApp, source: &str, secret: &str, event: &Value) -> String {
    let response = post(app, source, secret, event).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["status"].as_str().unwrap().to_owned()
}

/// Sends DNB's payments through DNB's own API: Neonomics' payment service is down.
async fn through_dnbs_own_api(app: &TestApp) {
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "unavailable"}))
        .await;
}

/// The provider's payment id for a payment of ours, from the sandbox's ledger.
async fn provider_payment_id(app: &TestApp, id: &str) -> String {
    let ledger = app
        .sandbox
        .ledger(&format!("?end_to_end_id={}", reference(id)))
        .await;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["provider"], "psd2");
    ledger[0]["payment_id"].as_str().unwrap().to_owned()
}

fn completed(event_id: &str, bank: &str, payment_id: &str, id: &str) -> Value {
    json!({
        "event_id": event_id,
        "bank": bank,
        "payment_id": payment_id,
        "end_to_end_id": reference(id),
        "status": "ACSC",
    })
}

#[tokio::test]
async fn a_webhook_settles_only_a_payment_its_source_holds_once_per_signed_event() {
    let database = fresh_database().await;
    let app = spawn_app_on(&database, &pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "hooked").await;
    through_dnbs_own_api(&app).await;
    let (status, body) = pay(&app, &token, "w-1", &payment(&account, "120")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending_sca");
    let id = body["payment_id"].as_str().unwrap().to_owned();
    let remote = provider_payment_id(&app, &id).await;

    // Nordea's own API did not get it: its push, signed with Nordea's secret, settles
    // nothing; nor does DNB's about Nordea. Neonomics has no webhook route at all.
    let by_nordea = completed("evt-nordea", "nordea", &remote, &id);
    assert_eq!(
        deliver(&app, "psd2/nordea", NORDEA_PSD2_SECRET, &by_nordea).await,
        "ignored"
    );
    let about_nordea = completed("evt-about-nordea", "nordea", &remote, &id);
    let response = post(&app, "psd2/dnb", DNB_PSD2_SECRET, &about_nordea).await;
    assert_eq!(response.status(), 400);
    let by_neonomics = completed("evt-neonomics", "dnb", &remote, &id);
    let response = post(&app, "neonomics", DNB_PSD2_SECRET, &by_neonomics).await;
    assert_eq!(response.status(), 404);
    assert_eq!(
        payment_view(&app, &token, &id).await["status"],
        "pending_sca"
    );

    // DNB's own push settles it; the same signed event delivered again, even signed
    // afresh, is recognised by its id.
    let genuine = completed("evt-dnb", "dnb", &remote, &id);
    assert_eq!(
        deliver(&app, "psd2/dnb", DNB_PSD2_SECRET, &genuine).await,
        "applied"
    );
    assert_eq!(
        deliver(&app, "psd2/dnb", DNB_PSD2_SECRET, &genuine).await,
        "duplicate"
    );
    assert_eq!(payment_view(&app, &token, &id).await["status"], "completed");
}

/// A look-up that found a payment nowhere queues it to be sent again; if the provider that
/// had it after all then says it is done, that is applied and the payment is not sent twice.
#[tokio::test]
async fn a_webhook_for_a_payment_queued_again_is_applied_and_it_is_not_resent() {
    let database = fresh_database().await;
    let app = spawn_app_on(&database, &pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "requeued").await;
    through_dnbs_own_api(&app).await;
    let (status, body) = pay(&app, &token, "w-2", &payment(&account, "180")).await;
    assert_eq!(status, 201, "{body}");
    let id = body["payment_id"].as_str().unwrap().to_owned();
    let remote = provider_payment_id(&app, &id).await;

    // Hold DNB's queue, and leave the payment as a look-up that found it nowhere does:
    // queued, still naming the provider it was last sent to.
    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "queue", "reason": "test"}),
    )
    .await;
    let (db, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let uuid: uuid::Uuid = id.parse().unwrap();
    let moved = db
        .execute(
            "UPDATE payments SET status = 'queued', provider_payment_id = NULL,
                 queued_at = now() WHERE id = $1 AND provider = 'psd2'",
            &[&uuid],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1);

    let late = completed("evt-late", "dnb", &remote, &id);
    assert_eq!(
        deliver(&app, "psd2/dnb", DNB_PSD2_SECRET, &late).await,
        "applied"
    );
    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "auto", "reason": "test"}),
    )
    .await;
    // A few drain passes (one each 200 ms) in which it must not be sent again.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let view = wait_for_status(&app, &token, &id, "completed").await;
    assert_eq!(view["provider"], "psd2");
    assert_eq!(times_initiated(&app, &id).await, 1);
}

/// Found by the randomized exactly-once test: a push naming our reference settled a payment
/// that was queued and never sent, so it would have been marked completed without a krone
/// moving. A push settles only what was recorded as sent through its source.
#[tokio::test]
async fn a_push_for_a_payment_never_sent_through_its_source_is_ignored() {
    let database = fresh_database().await;
    let app = spawn_app_on(&database, &pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "unsent").await;
    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "queue", "reason": "test"}),
    )
    .await;
    let (status, body) = pay(&app, &token, "w-3", &payment(&account, "140")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["payment_id"].as_str().unwrap().to_owned();
    let claim = completed("evt-dnb", "dnb", "made-up", &id);
    assert_eq!(
        deliver(&app, "psd2/dnb", DNB_PSD2_SECRET, &claim).await,
        "ignored"
    );
    assert_eq!(payment_view(&app, &token, &id).await["status"], "queued");
    assert_eq!(times_initiated(&app, &id).await, 0);
}
