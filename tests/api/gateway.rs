//! The gateway's listeners: health, readiness, metrics, request ids and the error envelope.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{client, metrics_text, spawn_app, test_settings};

#[tokio::test]
async fn health_answers_with_a_request_id() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.client_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok());

    let response = app
        .http
        .get(app.client_url("/healthz"))
        .header("x-request-id", "drop-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["x-request-id"],
        "drop-abc-123",
        "the caller's id is echoed"
    );

    let too_long = "x".repeat(300);
    let response = app
        .http
        .get(app.client_url("/healthz"))
        .header("x-request-id", &too_long)
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], too_long.as_str());
}

#[tokio::test]
async fn unknown_paths_get_the_envelope_and_ops_paths_are_not_on_the_client_port() {
    let app = spawn_app().await;
    for path in ["/v1/nothing-here", "/metrics", "/readyz"] {
        let response = app.http.get(app.client_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
        assert!(body["message"].is_string() && body["details"].is_array());
    }
    let response = app
        .http
        .post(app.client_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"],
        "method_not_allowed"
    );
}

#[tokio::test]
async fn ops_port_reports_readiness_and_metrics() {
    let app = spawn_app().await;
    let ready = app.http.get(app.ops_url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["database"], true);
    app.http
        .get(app.client_url("/healthz"))
        .send()
        .await
        .unwrap();
    let metrics = metrics_text(&app.gateway.ops_url()).await;
    assert!(
        metrics.contains("bankgate_http_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"api="client""#));
}

#[tokio::test]
async fn readiness_fails_while_the_database_is_unreachable() {
    let settings = test_settings(&[]);
    let pool = bankgate::postgres::pool(
        "postgres://bankgate@127.0.0.1:1/none",
        bankgate::postgres::PoolOptions::new(1, Duration::from_millis(300)),
    )
    .unwrap();
    let gateway = bankgate::gateway::Gateway::start(&settings, pool)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/readyz", gateway.ops_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let live = http
        .get(format!("{}/healthz", gateway.ops_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        live.status(),
        200,
        "liveness does not depend on the database"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn slow_clients_are_disconnected_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let settings = test_settings(&[("BANKGATE__HTTP__HEADER_READ_TIMEOUT", "4s")]);
    let pool = bankgate::postgres::pool(
        "postgres://bankgate@127.0.0.1:1/none",
        bankgate::postgres::PoolOptions::new(1, Duration::from_millis(300)),
    )
    .unwrap();
    let gateway = bankgate::gateway::Gateway::start(&settings, pool)
        .await
        .unwrap();
    let addr = gateway
        .client_url()
        .trim_start_matches("http://")
        .to_owned();
    // A crowd of slow-loris clients, each holding a half-sent request open.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }
    // They do not crowd out a normal client, which is answered while they still hang on.
    let response = tokio::time::timeout(
        Duration::from_secs(3),
        client()
            .get(format!("{}/healthz", gateway.client_url()))
            .send(),
    )
    .await
    .expect("served beside the slow clients")
    .unwrap();
    assert_eq!(response.status(), 200);
    for mut stream in slow {
        let mut buffer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
        assert!(
            read.is_ok(),
            "the server closed the half-sent request instead of waiting forever"
        );
    }
    gateway.shutdown().await;
}
