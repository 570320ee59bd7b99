//! Payments end to end: the gateway over real PostgreSQL and the sandbox over HTTP, with the
//! sandbox's ledger as the judge of what was initiated and how often.

use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_sandbox::webhooks::sign;
use serde_json::{Value, json};

use crate::helpers::{
    QUICK, TestApp, client, eventually, fresh_database, ops_call, psu_of, set_mode, spawn_app_on,
    spawn_app_with, start_gateway,
};

const WEBHOOK_SECRET: &str = "sandbox-dnb-psd2-webhook-secret";

/// QUICK, plus a drainer that looks every 200 ms and limits tests do not hit by accident.
pub(crate) fn pay_settings(
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    let mut settings = QUICK.to_vec();
    settings.extend([
        ("BANKGATE__PAYMENTS__DRAIN_INTERVAL", "200ms"),
        ("BANKGATE__PAYMENTS__PER_USER_LIMIT", "100"),
        ("BANKGATE__PAYMENTS__PER_IP_LIMIT", "100"),
        ("BANKGATE__PAYMENTS__IN_FLIGHT_TIMEOUT", "2s"),
        ("BANKGATE__PAYMENTS__POLL_AFTER", "500ms"),
    ]);
    settings.extend_from_slice(extra);
    settings
}

/// A user connected to DNB, and the id of their first DNB account.
pub(crate) async fn dnb_user(app: &TestApp, user: &str) -> (String, String) {
    let token = app.token(user);
    app.connect(&token, BankId::Dnb).await;
    let account = app.connection_at(&token, BankId::Dnb).await;
    (token, account)
}

pub(crate) fn payment(account: &str, amount: &str) -> Value {
    json!({
        "bank": "dnb",
        "debtor_account_id": account,
        "amount": amount,
        "currency": "NOK",
        "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
        "remittance_info": "Husleie",
        "kind": "remittance",
    })
}

/// Pays with the user present; returns the answer's status and body.
pub(crate) async fn pay(app: &TestApp, token: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = app.pay(token, key, body).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Takes DNB's payment service down at both providers; returns the faults to lift.
async fn dnb_payments_down(app: &TestApp) -> Vec<u64> {
    let mut faults = Vec::new();
    for provider in ["neonomics", "psd2"] {
        faults.push(
            app.sandbox
                .add_fault(json!({"provider": provider, "bank": "dnb", "service": "pisp", "kind": "unavailable"}))
                .await,
        );
    }
    faults
}

pub(crate) async fn payment_view(app: &TestApp, token: &str, id: &str) -> Value {
    app.payment(token, id).await.json().await.unwrap()
}

pub(crate) async fn wait_for_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    eventually(Duration::from_secs(20), || async {
        let view = payment_view(app, token, id).await;
        (view["status"] == status).then_some(view)
    })
    .await
}

/// Follows the bank's redirect back to bankgate, as the user's browser does; returns what
/// bankgate answers.
pub(crate) async fn follow(back: &str) -> Value {
    client()
        .get(back)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The gateway's reference for a payment, as sent in endToEndIdentification.
pub(crate) fn reference(payment_id: &str) -> String {
    payment_id.replace('-', "")
}

/// How many times the sandbox's banks recorded the payment.
pub(crate) async fn times_initiated(app: &TestApp, payment_id: &str) -> usize {
    app.sandbox
        .ledger(&format!("?end_to_end_id={}", reference(payment_id)))
        .await
        .len()
}

#[tokio::test]
/// Neonomics' documented flow (https://docs.neonomics.io/docs/payments-1): the initiation
/// answers 1428 with the authorize link, authorize gives the bank's SCA link, the user's
/// browser comes back with `result=OK`, and complete, always called, settles the payment.
async fn a_live_payment_waits_for_sca_then_completes_when_the_browser_returns() {
    let app = spawn_app_with(&pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "payer-1").await;

    let (status, body) = pay(&app, &token, "order-1", &payment(&account, "150.50")).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "pending_sca");
    let id = body["payment_id"].as_str().unwrap().to_owned();
    let sca = body["sca_redirect"].as_str().unwrap();

    // The user approves with BankID; the bank sends the browser back to bankgate.
    let back = app.sandbox.complete_sca(sca).await;
    assert!(back.starts_with(&app.client_url(&format!("/v1/payments/{id}/callback"))));
    assert!(back.contains("result=OK"), "{back}");
    // Authorised at the bank, and not paid until bankgate completes it.
    let ledger = app.sandbox.ledger("?bank=dnb").await;
    assert_eq!(ledger[0]["status"], "ACTC");
    let returned = follow(&back).await;
    assert_eq!(returned["status"], "completed");
    let ledger = app.sandbox.ledger("?bank=dnb").await;
    assert_eq!(ledger[0]["status"], "ACSC");
    let view = wait_for_status(&app, &token, &id, "completed").await;
    let history: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [
            "received",
            "initiating",
            "pending_sca",
            "authorised",
            "completed"
        ]
    );
    assert_eq!(view["provider"], "neonomics");
    assert_eq!(view["amount"], "150.50");
    assert_eq!(times_initiated(&app, &id).await, 1);

    // A rejected one: the browser's return makes bankgate poll the provider at once.
    let (status, body) = pay(&app, &token, "order-2", &payment(&account, "200")).await;
    assert_eq!(status, 201);
    let id = body["payment_id"].as_str().unwrap().to_owned();
    let sca = format!("{}?result=reject", body["sca_redirect"].as_str().unwrap());
    let back = app.sandbox.complete_sca(&sca).await;
    let returned = follow(&back).await;
    assert_eq!(returned["status"], "rejected");

    // The user's lists, filtered by status; another user sees none of it.
    let list: Value = app
        .get(&token, "/v1/payments?status=completed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["payments"].as_array().unwrap().len(), 1);
    let stranger = app.token("someone-else");
    let response = app.payment(&stranger, &id).await;
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn the_same_key_replays_conflicts_or_waits() {
    let app = spawn_app_with(&pay_settings(&[
        ("BANKGATE__PROVIDERS__NEONOMICS__TIMEOUT", "3s"),
        ("BANKGATE__PROVIDERS__PSD2__TIMEOUT", "3s"),
        ("BANKGATE__PAYMENTS__IN_FLIGHT_TIMEOUT", "12s"),
    ]))
    .await;
    let (token, account) = dnb_user(&app, "payer-2").await;
    let body = payment(&account, "300");

    let fault = app
        .sandbox
        .add_fault(json!({"provider": "neonomics", "service": "pisp", "kind": "latency", "latency_ms": 1500}))
        .await;
    let before = app.upstream_calls("neonomics", Some("dnb")).await;
    let first = pay(&app, &token, "k-1", &body);
    let second = async {
        // The first holds the key while DNB, which has its payment, takes 1.5 s to answer.
        eventually(Duration::from_secs(5), || async {
            (app.upstream_calls("neonomics", Some("dnb")).await > before).then_some(())
        })
        .await;
        pay(&app, &token, "k-1", &body).await
    };
    let ((status, original), (busy_status, busy)) = tokio::join!(first, second);
    assert_eq!(busy_status, 409, "{busy}");
    assert_eq!(busy["error"], "request_in_progress");
    assert_eq!(status, 201, "{original}");
    app.sandbox.remove_fault(fault).await;

    let (status, replay) = pay(&app, &token, "k-1", &body).await;
    assert_eq!((status, &replay), (201, &original));
    // Key order and spacing do not make another request.
    let reordered: Value = serde_json::from_str(&serde_json::to_string(&body).unwrap()).unwrap();
    assert_eq!(pay(&app, &token, "k-1", &reordered).await.1, original);

    let (status, reused) = pay(&app, &token, "k-1", &payment(&account, "301")).await;
    assert_eq!(status, 422);
    assert_eq!(reused["error"], "idempotency_key_reused");
    let id = original["payment_id"].as_str().unwrap();
    assert_eq!(times_initiated(&app, id).await, 1);

    // Keys are per user: another user's "k-1" is another payment.
    let (other, other_account) = dnb_user(&app, "payer-2b").await;
    let (status, body) = pay(&app, &other, "k-1", &payment(&other_account, "300")).await;
    assert_eq!(status, 201);
    assert_ne!(body["payment_id"], original["payment_id"]);
}

/// Sends DNB's payments through DNB's own API from now on: Neonomics' payment service is
/// down. Returns the fault to lift.
async fn through_dnbs_own_api(app: &TestApp) -> u64 {
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "unavailable"}))
        .await
}

#[tokio::test]
async fn client_retries_under_lost_answers_and_timeouts_initiate_each_payment_once() {
    // Breakers stay closed here: this test is about outcomes, not failover.
    let app = spawn_app_with(&pay_settings(&[(
        "BANKGATE__BREAKER__FAILURE_THRESHOLD",
        "50",
    )]))
    .await;
    let (token, account) = dnb_user(&app, "payer-3").await;

    // Neonomics takes the payment but the answer is lost. Neonomics documents no look-up but
    // by the payment's id, which was in the lost answer: bankgate can never learn what became
    // of it, so it never sends it again, at Neonomics or at the bank's own API.
    let lost = app
        .sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "lost_response"}))
        .await;
    let mut ids = Vec::new();
    for n in 0..2 {
        let key = format!("lost-{n}");
        let body = payment(&account, &format!("{}", 110 + n));
        let (status, first) = pay(&app, &token, &key, &body).await;
        assert_eq!(status, 202, "{first}");
        assert_eq!(first["status"], "unknown");
        // The client did not hear back in time and retries.
        assert_eq!(pay(&app, &token, &key, &body).await, (202, first.clone()));
        ids.push(first["payment_id"].as_str().unwrap().to_owned());
    }
    app.sandbox.remove_fault(lost).await;
    // Past the in-flight window (2 s), through several upkeep passes: still unknown, and
    // still at the bank only as the initiation nobody could authorise.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in &ids {
        assert_eq!(payment_view(&app, &token, id).await["status"], "unknown");
        let ledger = app
            .sandbox
            .ledger(&format!("?end_to_end_id={}", reference(id)))
            .await;
        assert_eq!(ledger.len(), 1, "payment {id}");
        assert_eq!(ledger[0]["status"], "RCVD", "payment {id}");
    }

    // Through DNB's own API, requests now hang before the bank sees them: the outcome is
    // unknown, the look-up by reference finds nothing, and only after the in-flight window
    // is the payment sent again.
    through_dnbs_own_api(&app).await;
    let hang = app
        .sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": "timeout", "duration_s": 2}))
        .await;
    let body = payment(&account, "120");
    let (status, first) = pay(&app, &token, "hang-1", &body).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "unknown");
    assert_eq!(
        pay(&app, &token, "hang-1", &body).await,
        (202, first.clone())
    );
    let id = first["payment_id"].as_str().unwrap().to_owned();
    let _ = hang;
    let view = wait_for_status(&app, &token, &id, "pending_sca").await;
    let history: Vec<&str> = view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        history,
        [
            "received",
            "initiating",
            "unknown",
            "queued",
            "initiating",
            "pending_sca"
        ]
    );
    assert_eq!(view["provider"], "psd2");
    ids.push(id);

    for id in &ids {
        assert_eq!(times_initiated(&app, id).await, 1, "payment {id}");
    }
}

/// A payment whose outcome is unknown is looked up at the provider it was sent to, even after
/// the gateway learnt that provider's consent expired: asking only the providers with an
/// active consent would hear "not found" from one that never had it, and send it again.
#[tokio::test]
async fn an_unknown_payment_is_looked_up_where_it_was_sent_whatever_that_consents_state() {
    let database = fresh_database().await;
    let app = spawn_app_on(
        &database,
        &pay_settings(&[
            ("BANKGATE__BREAKER__FAILURE_THRESHOLD", "50"),
            ("BANKGATE__PROVIDERS__PSD2__TIMEOUT", "2s"),
            ("BANKGATE__PAYMENTS__IN_FLIGHT_TIMEOUT", "8s"),
        ]),
    )
    .await;
    let (token, account) = dnb_user(&app, "payer-lookup").await;
    through_dnbs_own_api(&app).await;
    let lost = app
        .sandbox
        .add_fault(
            json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": "lost_response"}),
        )
        .await;
    // Once the bank has the payment, its look-ups fail too, so the first one settles nothing.
    let look_ups_fail = async {
        eventually(Duration::from_secs(10), || async {
            (!app.sandbox.ledger("?bank=dnb").await.is_empty()).then_some(())
        })
        .await;
        app.sandbox
            .add_fault(json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": "unavailable"}))
            .await
    };
    let order = payment(&account, "140");
    let ((status, body), unavailable) =
        tokio::join!(pay(&app, &token, "lookup-1", &order), look_ups_fail);
    assert_eq!(
        (status, &body["status"]),
        (202, &json!("unknown")),
        "{body}"
    );
    let id = body["payment_id"].as_str().unwrap().to_owned();

    // The gateway has meanwhile learnt that the bank's own consent expired.
    let (db, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    db.execute(
        "UPDATE provider_consents SET status = 'expired' WHERE provider = 'psd2'",
        &[],
    )
    .await
    .unwrap();
    app.sandbox.remove_fault(unavailable).await;
    app.sandbox.remove_fault(lost).await;

    let view = wait_for_status(&app, &token, &id, "pending_sca").await;
    assert_eq!(view["provider"], "psd2", "{view}");
    assert_eq!(times_initiated(&app, &id).await, 1, "{view}");
}

/// A success status whose body is cut off or broken off proves nothing: the provider may
/// have the payment, so it must not go to the other as well. At DNB's own API the look-up by
/// reference finds it; at Neonomics, which has no such look-up, it stays unknown.
#[tokio::test]
async fn a_payment_whose_answer_is_cut_off_or_broken_off_is_looked_up_not_sent_again() {
    let app = spawn_app_with(&pay_settings(&[(
        "BANKGATE__BREAKER__FAILURE_THRESHOLD",
        "50",
    )]))
    .await;
    let (token, account) = dnb_user(&app, "payer-spoiled").await;
    let mut at_neonomics = Vec::new();
    for (n, kind) in ["garbled", "reset"].into_iter().enumerate() {
        let fault = app
            .sandbox
            .add_fault(
                json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": kind}),
            )
            .await;
        let body = payment(&account, &format!("{}", 130 + n));
        let (status, first) = pay(&app, &token, kind, &body).await;
        app.sandbox.remove_fault(fault).await;
        assert_eq!(status, 202, "{kind}: {first}");
        at_neonomics.push(first["payment_id"].as_str().unwrap().to_owned());
    }
    through_dnbs_own_api(&app).await;
    for (n, kind) in ["garbled", "reset"].into_iter().enumerate() {
        let fault = app
            .sandbox
            .add_fault(json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": kind}))
            .await;
        let body = payment(&account, &format!("{}", 140 + n));
        let (status, first) = pay(&app, &token, &format!("psd2-{kind}"), &body).await;
        app.sandbox.remove_fault(fault).await;
        assert!(matches!(status, 201 | 202), "{kind}: {status} {first}");
        let id = first["payment_id"].as_str().unwrap().to_owned();
        let view = wait_for_status(&app, &token, &id, "pending_sca").await;
        assert_eq!(times_initiated(&app, &id).await, 1, "{kind}: {view}");
        assert_eq!(view["provider"], "psd2", "{kind}: {view}");
    }
    for id in &at_neonomics {
        let view = payment_view(&app, &token, id).await;
        assert_eq!(view["status"], "unknown", "{view}");
        assert_eq!(times_initiated(&app, id).await, 1, "{view}");
    }
}

/// Neonomics requires the complete call after the SCA
/// (https://docs.neonomics.io/reference/completepayment). A payment the user authorised whose
/// complete failed (Neonomics down) or whose answer was lost (Neonomics completed it and the
/// answer never came) stays `authorised`, and is completed later, settled once.
#[tokio::test]
async fn a_payment_whose_complete_fails_is_completed_later_and_settled_once() {
    let app = spawn_app_with(&pay_settings(&[(
        "BANKGATE__BREAKER__FAILURE_THRESHOLD",
        "50",
    )]))
    .await;
    let (token, account) = dnb_user(&app, "payer-complete").await;
    for (n, kind) in ["unavailable", "lost_response"].into_iter().enumerate() {
        let (status, body) = pay(
            &app,
            &token,
            kind,
            &payment(&account, &format!("{}", 160 + n)),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["payment_id"].as_str().unwrap().to_owned();
        let back = app
            .sandbox
            .complete_sca(body["sca_redirect"].as_str().unwrap())
            .await;
        let fault = app
            .sandbox
            .add_fault(
                json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": kind}),
            )
            .await;
        let returned = follow(&back).await;
        assert_eq!(returned["status"], "authorised", "{kind}");
        app.sandbox.remove_fault(fault).await;
        let view = wait_for_status(&app, &token, &id, "completed").await;
        let ledger = app
            .sandbox
            .ledger(&format!("?end_to_end_id={}", reference(&id)))
            .await;
        assert_eq!(ledger.len(), 1, "{kind}: {view}");
        assert_eq!(ledger[0]["status"], "ACSC", "{kind}");
        assert_eq!(view["provider"], "neonomics", "{kind}");
    }
}

/// Neonomics has no product for a payment abroad in kroner
/// (https://docs.neonomics.io/reference/completepayment lists domestic and SEPA ones): it is
/// never sent there, and the bank's own API takes it.
#[tokio::test]
async fn a_payment_abroad_in_kroner_goes_to_the_banks_own_api() {
    let app = spawn_app_with(&pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "payer-abroad").await;
    let mut order = payment(&account, "250");
    order["creditor"] =
        json!({"name": "Sven Svensson", "iban": "SE4550000000058398257466", "country": "SE"});
    let (status, body) = pay(&app, &token, "abroad-1", &order).await;
    assert_eq!(status, 201, "{body}");
    let id = body["payment_id"].as_str().unwrap().to_owned();
    let view = payment_view(&app, &token, &id).await;
    assert_eq!(view["provider"], "psd2", "{view}");
    assert!(app.sandbox.ledger("?provider=neonomics").await.is_empty());
    assert_eq!(times_initiated(&app, &id).await, 1);
}

#[tokio::test]
async fn payments_queue_while_dnb_is_down_and_drain_oldest_first_once_it_recovers() {
    let app = spawn_app_with(&pay_settings(&[(
        "BANKGATE__PAYMENTS__QUEUE_MAX_AGE",
        "3s",
    )]))
    .await;
    let (token, account) = dnb_user(&app, "payer-4").await;
    let faults = dnb_payments_down(&app).await;

    let (status, stale) = pay(&app, &token, "q-0", &payment(&account, "100")).await;
    assert_eq!(status, 202, "{stale}");
    assert_eq!(stale["status"], "queued");
    assert_eq!(
        stale["message"],
        "Betaling satt i kø. Vil bli behandlet innen 2 timer."
    );
    // The first one waits past the queue's maximum age: it must expire, never be sent.
    let stale_id = stale["payment_id"].as_str().unwrap();
    wait_for_status(&app, &token, stale_id, "expired").await;
    let mut queued = Vec::new();
    for n in 1..=4 {
        let (status, body) = pay(&app, &token, &format!("q-{n}"), &payment(&account, "100")).await;
        assert_eq!(status, 202, "{body}");
        queued.push(body["payment_id"].as_str().unwrap().to_owned());
    }

    for fault in faults {
        app.sandbox.remove_fault(fault).await;
    }
    for id in &queued {
        wait_for_status(&app, &token, id, "pending_sca").await;
    }
    let ledger = app.sandbox.ledger("?bank=dnb").await;
    let sent: Vec<String> = ledger
        .iter()
        .map(|e| e["end_to_end_id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = queued.iter().map(|id| reference(id)).collect();
    assert_eq!(sent, expected, "each queued payment once, oldest first");
    assert_eq!(times_initiated(&app, stale_id).await, 0);
    assert_eq!(
        payment_view(&app, &token, stale_id).await["status"],
        "expired"
    );
}

/// A payment's answer says what its own attempt did. Here the drainer looks for queued
/// payments every millisecond (breakers that never open keep the bank "available" to it), so
/// it often takes a payment the instant its request queued it; the client must still hear
/// `queued`, not the drainer's `initiating` (a CI run once answered that).
#[tokio::test]
async fn a_payment_queued_by_its_request_is_answered_queued_while_the_drainer_retries_it() {
    let app = spawn_app_with(&pay_settings(&[
        ("BANKGATE__PAYMENTS__DRAIN_INTERVAL", "1ms"),
        ("BANKGATE__BREAKER__FAILURE_THRESHOLD", "100000"),
    ]))
    .await;
    let (token, account) = dnb_user(&app, "payer-9").await;
    for n in 0..20 {
        let faults = dnb_payments_down(&app).await;
        let (status, body) = pay(&app, &token, &format!("r-{n}"), &payment(&account, "100")).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["status"], "queued", "payment {n}: {body}");
        // Each payment is alone in the queue: the drainer's next pass is for it.
        for fault in faults {
            app.sandbox.remove_fault(fault).await;
        }
        let id = body["payment_id"].as_str().unwrap();
        wait_for_status(&app, &token, id, "pending_sca").await;
    }
}

/// A queued payment of a connection the user removes is cancelled, with an event in its
/// history, and never sent once the bank takes payments again.
#[tokio::test]
async fn removing_a_connection_cancels_its_queued_payments() {
    let app = spawn_app_with(&pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "payer-removes").await;
    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "queue", "reason": "test"}),
    )
    .await;
    let (status, body) = pay(&app, &token, "c-1", &payment(&account, "100")).await;
    assert_eq!(status, 202, "{body}");
    let id = body["payment_id"].as_str().unwrap().to_owned();
    assert_eq!(app.delete_connection(&token, &account).await.status(), 204);
    let view = payment_view(&app, &token, &id).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    let last = view["history"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(
        (&last["from"], &last["to"]),
        (&json!("queued"), &json!("cancelled"))
    );

    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "auto", "reason": "test"}),
    )
    .await;
    // Three drain passes (one each 200 ms) in which it must not be sent: an absence takes a
    // window to show.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(payment_view(&app, &token, &id).await["status"], "cancelled");
    assert_eq!(times_initiated(&app, &id).await, 0);
}

/// The per-IP limit counts the end user's address (`x-psu-ip-address`). A caller that passes
/// none is Drop's server, shared by every user: its address is no one's, and only the
/// per-user limit applies.
#[tokio::test]
async fn without_the_users_address_the_per_ip_limit_does_not_pool_every_user() {
    let app = spawn_app_with(&pay_settings(&[("BANKGATE__PAYMENTS__PER_IP_LIMIT", "2")])).await;
    for n in 0..3 {
        let (token, account) = dnb_user(&app, &format!("no-ip-{n}")).await;
        let response = app
            .http
            .post(app.client_url("/v1/payments"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("no-ip-{n}"))
            .json(&payment(&account, "100"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        assert!(matches!(status, 201 | 202), "user {n}: {status}");
    }
    // With the user's address, the limit holds: a third payment from it is refused.
    let (token, account) = dnb_user(&app, "one-ip").await;
    for n in 0..2 {
        let (status, body) = pay(&app, &token, &format!("ip-{n}"), &payment(&account, "100")).await;
        assert!(matches!(status, 201 | 202), "{body}");
    }
    let (status, body) = pay(&app, &token, "ip-2", &payment(&account, "100")).await;
    assert_eq!(status, 429, "{body}");
}

/// A queued payment that cannot be moved on (here its stored creditor no longer reads)
/// must not hold up the payments queued behind it: the drain pass logs it and goes on. The
/// drainer's own interval is an hour, so the one pass that the queue mode's release asks for
/// has to send them all.
#[tokio::test]
async fn one_payment_that_cannot_be_sent_does_not_stop_its_banks_queue() {
    let database = fresh_database().await;
    let app = spawn_app_on(
        &database,
        &pay_settings(&[("BANKGATE__PAYMENTS__DRAIN_INTERVAL", "1h")]),
    )
    .await;
    let (token, account) = dnb_user(&app, "payer-stuck").await;
    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "queue", "reason": "test"}),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = pay(&app, &token, &format!("q-{n}"), &payment(&account, "100")).await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["payment_id"].as_str().unwrap().to_owned());
    }
    let (db, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let oldest: uuid::Uuid = ids[0].parse().unwrap();
    db.execute(
        "UPDATE payments SET creditor = '{}'::jsonb WHERE id = $1",
        &[&oldest],
    )
    .await
    .unwrap();

    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "auto", "reason": "test"}),
    )
    .await;
    for id in &ids[1..] {
        wait_for_status(&app, &token, id, "pending_sca").await;
        assert_eq!(times_initiated(&app, id).await, 1, "payment {id}");
    }
    assert_eq!(times_initiated(&app, &ids[0]).await, 0);
}

#[tokio::test]
async fn payments_modes_disable_queue_and_release() {
    let app = spawn_app_with(&pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "payer-5").await;
    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "disabled", "reason": "test"}),
    )
    .await;
    let (status, body) = pay(&app, &token, "m-1", &payment(&account, "100")).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "payments_unavailable");
    assert_eq!(body["message"], "Betalinger midlertidig utilgjengelig");

    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "queue", "reason": "test"}),
    )
    .await;
    let banks = app.banks(&token).await;
    assert_eq!(banks["banks"][0]["bank"], "dnb");
    assert_eq!(banks["banks"][0]["payments"], "queued");
    assert!(banks["banks"][0]["banner"].as_str().unwrap().contains("kø"));
    let (status, body) = pay(&app, &token, "m-1", &payment(&account, "100")).await;
    assert_eq!(
        status, 202,
        "a refused request left no trace of its key: {body}"
    );
    let id = body["payment_id"].as_str().unwrap().to_owned();
    // Three drain passes (one each 200 ms) in which it must not be sent: an absence takes a
    // window to show.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(payment_view(&app, &token, &id).await["status"], "queued");
    assert_eq!(times_initiated(&app, &id).await, 0);

    set_mode(
        &app.gateway,
        "dnb",
        json!({"payments": "auto", "reason": "test"}),
    )
    .await;
    wait_for_status(&app, &token, &id, "pending_sca").await;
    assert_eq!(times_initiated(&app, &id).await, 1);
}

#[tokio::test]
async fn two_gateways_on_one_database_drain_one_queue_without_doubles() {
    let database = fresh_database().await;
    let settings = pay_settings(&[]);
    let first = spawn_app_on(&database, &settings).await;
    let second = start_gateway(&first.sandbox, &database, &settings).await;
    let (token, account) = dnb_user(&first, "payer-6").await;
    // Set on one instance, applied by the other within a second (LISTEN/NOTIFY).
    set_mode(
        &first.gateway,
        "dnb",
        json!({"payments": "queue", "reason": "test"}),
    )
    .await;
    eventually(Duration::from_secs(1), || async {
        let (_, status) = ops_call(&second, reqwest::Method::GET, "/ops/status", None).await;
        (status["banks"][0]["payments"] == "queue").then_some(())
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let (status, body) = pay(
            &first,
            &token,
            &format!("two-{n}"),
            &payment(&account, "100"),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["payment_id"].as_str().unwrap().to_owned());
    }
    set_mode(
        &second,
        "dnb",
        json!({"payments": "auto", "reason": "test"}),
    )
    .await;
    for id in &ids {
        wait_for_status(&first, &token, id, "pending_sca").await;
    }
    let ledger = first.sandbox.ledger("?bank=dnb").await;
    assert_eq!(ledger.len(), ids.len(), "no payment initiated twice");
    for id in &ids {
        assert_eq!(times_initiated(&first, id).await, 1);
    }
    second.shutdown().await;
}

/// A request with a bad part: key, body, and the status, error and field it must draw.
type Case<'a> = (Option<&'a str>, String, u16, &'a str, Option<&'a str>);

#[tokio::test]
async fn bad_payments_keys_and_forged_webhooks_get_their_4xx() {
    let app = spawn_app_with(QUICK).await;
    let (token, account) = dnb_user(&app, "payer-7").await;
    let send = |key: Option<&str>, body: String| {
        let mut request = app
            .http
            .post(app.client_url("/v1/payments"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send()
    };
    let good = payment(&account, "150");
    let long_key = "k".repeat(256);
    let changed = |edit: &dyn Fn(&mut Value)| {
        let mut body = good.clone();
        edit(&mut body);
        body.to_string()
    };
    let cases: Vec<Case> = vec![
        (
            None,
            good.to_string(),
            400,
            "bad_request",
            Some("Idempotency-Key"),
        ),
        (
            Some(&long_key),
            good.to_string(),
            400,
            "bad_request",
            Some("Idempotency-Key"),
        ),
        (
            Some("v-1"),
            "{not json".to_owned(),
            400,
            "invalid_json",
            None,
        ),
        (
            Some("v-1"),
            json!({"bank": "dnb"}).to_string(),
            400,
            "bad_request",
            Some("body"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["amount"] = json!("99.99")),
            422,
            "unprocessable",
            Some("amount"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["amount"] = json!("150.123")),
            422,
            "unprocessable",
            Some("amount"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["currency"] = json!("EUR")),
            422,
            "unprocessable",
            Some("currency"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["creditor"]["account_number"] = json!("86011117948")),
            422,
            "unprocessable",
            Some("creditor.account_number"),
        ),
        (
            Some("v-1"),
            changed(&|b| {
                b["creditor"] =
                    json!({"name": "X", "iban": "GB82WEST12345698765433", "country": "GB"})
            }),
            422,
            "unprocessable",
            Some("creditor.iban"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["creditor"]["name"] = json!("N".repeat(71))),
            422,
            "unprocessable",
            Some("creditor.name"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["bank"] = json!("handelsbanken")),
            422,
            "unprocessable",
            Some("bank"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["debtor_account_id"] = json!(uuid::Uuid::new_v4())),
            422,
            "unprocessable",
            Some("debtor_account_id"),
        ),
        (
            Some("v-1"),
            changed(&|b| b["bank"] = json!("nordea")),
            422,
            "unprocessable",
            Some("debtor_account_id"),
        ),
        (
            Some("v-1"),
            format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024)),
            413,
            "payload_too_large",
            None,
        ),
    ];
    for (key, body, status, error, field) in cases {
        let response = send(key, body.clone()).await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            status,
            "{}",
            &body[..body.len().min(200)]
        );
        let envelope: Value = response.json().await.unwrap();
        assert_eq!(envelope["error"], error, "{envelope}");
        if let Some(field) = field {
            assert!(
                envelope["details"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["field"] == field),
                "{envelope} names {field}"
            );
        }
    }
    // The user's IP is checked at the route, before the body is read.
    let response = app
        .http
        .post(app.client_url("/v1/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", "v-ip")
        .header("x-psu-ip-address", "192.0.2")
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(envelope["error"], "bad_request", "{envelope}");
    assert_eq!(
        envelope["details"][0]["field"], "x-psu-ip-address",
        "{envelope}"
    );
    assert!(
        app.sandbox.ledger("").await.is_empty(),
        "nothing invalid was sent"
    );

    // Three payments a minute per user; the fourth waits.
    for n in 0..3 {
        assert_eq!(pay(&app, &token, &format!("r-{n}"), &good).await.0, 201);
    }
    let response = send(Some("r-3"), good.to_string()).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));

    // Webhooks: signature, freshness, provider.
    let url = app.client_url("/v1/webhooks/psd2/dnb");
    let event = json!({"event_id": "e-1", "bank": "dnb", "payment_id": "p-1", "status": "ACSC"})
        .to_string();
    let now = chrono::Utc::now().timestamp();
    let deliver = |url: String, ts: i64, signature: String, body: String| {
        app.http
            .post(url)
            .header("x-webhook-timestamp", ts.to_string())
            .header("x-webhook-signature", signature)
            .body(body)
            .send()
    };
    let signed = sign(WEBHOOK_SECRET.as_bytes(), now, event.as_bytes());
    let forged = sign(b"not-the-provider-secret", now, event.as_bytes());
    let old = now - 3600;
    let replayed = sign(WEBHOOK_SECRET.as_bytes(), old, event.as_bytes());
    for (target, ts, signature, status) in [
        (url.clone(), now, forged, 401),
        (url.clone(), old, replayed, 401),
        (
            app.client_url("/v1/webhooks/acme"),
            now,
            signed.clone(),
            404,
        ),
        // Neonomics documents no push for its payment API: there is no route for one.
        (
            app.client_url("/v1/webhooks/neonomics"),
            now,
            signed.clone(),
            404,
        ),
        (
            app.client_url("/v1/webhooks/psd2/handelsbanken"),
            now,
            signed.clone(),
            404,
        ),
        (url.clone(), now, "v1=nothex".to_owned(), 400),
        (url.clone(), now, signed.clone(), 200),
    ] {
        let response = deliver(target, ts, signature, event.clone()).await.unwrap();
        assert_eq!(response.status().as_u16(), status);
    }
    let again: Value = deliver(url, now, signed, event)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["status"], "duplicate");
}

#[tokio::test]
async fn a_payment_from_an_account_no_provider_holds_a_consent_for_is_refused_not_queued() {
    let app = spawn_app_with(&pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "kari").await;
    app.sandbox
        .expire_consents(&psu_of("kari"), BankId::Dnb)
        .await;
    // A balance read finds the consents expired at both providers; the gateway records it.
    let read = app.account_balance(&token, &account).await;
    assert_eq!(read.status(), 403);
    eventually(Duration::from_secs(10), || async {
        let listed = app.connections(&token).await;
        listed[0]["providers"].as_array()?.is_empty().then_some(())
    })
    .await;

    // No path can ever send it until Kari renews: she is told so at once, and nothing waits
    // in the queue.
    let (status, body) = pay(&app, &token, "no-consent", &payment(&account, "150.00")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "consent_expired");
    let id = body["details"][0]["issue"].as_str().unwrap().to_owned();
    assert_eq!(payment_view(&app, &token, &id).await["status"], "failed");
    assert_eq!(times_initiated(&app, &id).await, 0);
}
