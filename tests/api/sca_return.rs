//! The payment's return from SCA: only the bank's redirect carries the payment's single-use
//! state, so a stranger who knows a payment's id can neither move it nor learn its status
//! there, and the user's browser goes back to the app's `redirect_url` with the outcome.

use serde_json::json;

use crate::helpers::{client, spawn_app_with};
use crate::payments::{dnb_user, pay, pay_settings, payment, payment_view};

#[tokio::test]
async fn the_sca_return_takes_the_payments_state_once_and_sends_the_browser_to_the_app() {
    let app = spawn_app_with(&pay_settings(&[])).await;
    let (token, account) = dnb_user(&app, "payer-back").await;
    let mut body = payment(&account, "150");
    body["redirect_url"] = json!("https://drop.example/paid");
    let (status, created) = pay(&app, &token, "order-back", &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["payment_id"].as_str().unwrap().to_owned();
    let callback = app.client_url(&format!("/v1/payments/{id}/callback"));

    // A stranger with the payment's id: no state, a made-up one, or one of another payment.
    let (_, other) = pay(&app, &token, "order-other", &payment(&account, "200")).await;
    let other = other["payment_id"].as_str().unwrap();
    for url in [
        format!("{callback}?result=OK"),
        format!("{callback}?result=OK&state={}", "0".repeat(32)),
        app.client_url(&format!("/v1/payments/{other}/callback?result=OK&state=")),
    ] {
        let response = client().get(&url).send().await.unwrap();
        assert_eq!(response.status(), 403, "{url}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("pending_sca") && !text.contains(&id),
            "{text}"
        );
    }
    assert_eq!(
        payment_view(&app, &token, &id).await["status"],
        "pending_sca"
    );

    // The user approves; the bank sends the browser back with the state, and bankgate on to
    // the app with the payment's outcome.
    let sca = created["sca_redirect"].as_str().unwrap();
    let back = app.sandbox.complete_sca(sca).await;
    assert!(back.starts_with(&format!("{callback}?state=")), "{back}");
    let response = client().get(&back).send().await.unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("https://drop.example/paid?payment_id={id}&status=completed")
    );
    assert_eq!(payment_view(&app, &token, &id).await["status"], "completed");

    // Used: the same return again, a replay of the bank's redirect, is refused.
    let again = client().get(&back).send().await.unwrap();
    assert_eq!(again.status(), 403);

    // The app's address must be one of its own.
    let mut elsewhere = payment(&account, "150");
    elsewhere["redirect_url"] = json!("https://drop.example.evil.com/paid");
    let (status, refused) = pay(&app, &token, "order-elsewhere", &elsewhere).await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["details"][0]["field"], "redirect_url", "{refused}");
}
