//! Balance reads, one scenario per runbook cause: what the user sees, and what the providers
//! received (the sandbox counts every call).

use std::time::Duration;

use bankgate_actors::breaker::BreakerState;
use bankgate_actors::{BankId, ProviderId};
use serde_json::{Value, json};

use crate::helpers::{
    QUICK, TestApp, eventually, fresh_database, metrics_text, psu_of, quick_with_long_breakers,
    sandbox_options, spawn_app, spawn_app_on, spawn_app_with, spawn_app_with_sandbox,
    start_gateway,
};

/// A national identity number whose check digits hold.
const NATIONAL_ID: &str = "01010112377";

/// A user connected to DNB and Nordea, and a first live read of both.
async fn connected(app: &TestApp, user: &str) -> (String, Value) {
    let token = app.token(user);
    for bank in [BankId::Dnb, BankId::Nordea] {
        let back = app.connect(&token, bank).await;
        assert!(back.contains("status=active"), "{back}");
    }
    let response = app.balances(&token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    for account in body["accounts"].as_array().unwrap() {
        assert_eq!(account["source"], "live", "{account}");
    }
    (token, body)
}

fn accounts_of<'a>(body: &'a Value, bank: &str) -> Vec<&'a Value> {
    body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["bank"] == bank)
        .collect()
}

async fn breaker(app: &TestApp, bank: BankId, provider: &str) -> BreakerState {
    let status = app.gateway.actors().banks[&bank].status().await.unwrap();
    status
        .paths
        .iter()
        .find(|p| p.provider.as_str() == provider)
        .unwrap()
        .breaker
}

#[tokio::test]
async fn connecting_a_bank_stores_its_accounts_with_both_providers() {
    let app = spawn_app().await;
    let token = app.token("kari");
    let back = app.connect(&token, BankId::Dnb).await;
    assert!(
        back.starts_with("https://drop.example/connected?consent_id="),
        "{back}"
    );
    assert!(back.ends_with("status=active"));

    let list = app.connections(&token).await;
    let seeded = app
        .sandbox
        .seeded_accounts(BankId::Dnb, &psu_of("kari"))
        .await;
    assert_eq!(list.len(), seeded.len());
    assert_eq!(list[0]["providers"], json!(["neonomics", "psd2"]));
    assert!(list[0]["consent_expires_at"].is_string());

    // Another user sees none of them and cannot delete them.
    let other = app.token("ola");
    let id = list[0]["id"].as_str().unwrap();
    let response = app.delete_connection(&other, id).await;
    assert_eq!(response.status(), 404);
    let response = app.delete_connection(&token, id).await;
    assert_eq!(response.status(), 204);
    let response = app
        .get(&token, &format!("/v1/accounts/{id}/balances"))
        .await;
    assert_eq!(
        response.status(),
        404,
        "a removed connection has no balance"
    );
}

#[tokio::test]
async fn live_balances_match_the_bank_and_are_then_served_fresh_from_cache() {
    let app = spawn_app().await;
    let (token, body) = connected(&app, "kari").await;
    let seeded = app
        .sandbox
        .seeded_accounts(BankId::Dnb, &psu_of("kari"))
        .await;
    let dnb = accounts_of(&body, "dnb");
    // The same balances as the bank's, whatever order the accounts are listed in.
    let mut served: Vec<&Value> = dnb.iter().map(|a| &a["amount"]).collect();
    let mut at_bank: Vec<&Value> = seeded.iter().map(|a| &a["balance"]).collect();
    served.sort_by_key(|v| v.to_string());
    at_bank.sort_by_key(|v| v.to_string());
    assert_eq!(served, at_bank);
    assert_eq!(
        dnb[0]["provider"], "neonomics",
        "the primary provider serves"
    );
    assert_eq!(dnb[0]["stale"], false);
    assert!(dnb[0]["warning"].is_null());
    let sum: f64 = body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["amount"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    let total: f64 = body["total"]["amount"].as_str().unwrap().parse().unwrap();
    assert!((sum - total).abs() < 0.001);
    assert_eq!(body["total"]["complete"], true);

    let calls = app.upstream_calls("neonomics", Some("dnb")).await;
    let again: Value = app.balances(&token).await.json().await.unwrap();
    for account in again["accounts"].as_array().unwrap() {
        assert_eq!(account["source"], "cache");
        assert_eq!(account["stale"], false);
    }
    assert_eq!(
        app.upstream_calls("neonomics", Some("dnb")).await,
        calls,
        "a fresh cache makes no call"
    );
}

#[tokio::test]
async fn full_neonomics_outage_fails_over_to_the_banks_psd2_apis() {
    let app = spawn_app_with(&quick_with_long_breakers()).await;
    let (token, _) = connected(&app, "kari").await;
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "unavailable"}))
        .await;
    for _ in 0..4 {
        let body: Value = app.balances(&token).await.json().await.unwrap();
        for account in body["accounts"].as_array().unwrap() {
            assert_eq!(account["source"], "live", "{account}");
            assert_eq!(account["provider"], "psd2");
            assert_eq!(account["stale"], false);
        }
    }
    assert_eq!(
        breaker(&app, BankId::Dnb, "neonomics").await,
        BreakerState::Open
    );
    let neonomics = app.upstream_calls("neonomics", None).await;
    app.balances(&token).await;
    assert_eq!(
        app.upstream_calls("neonomics", None).await,
        neonomics,
        "an open breaker stops calls to Neonomics"
    );
}

#[tokio::test]
async fn dnb_down_everywhere_is_served_stale_while_nordea_stays_live() {
    let app = spawn_app_with(&quick_with_long_breakers()).await;
    let (token, _) = connected(&app, "kari").await;
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "kind": "unavailable"}))
        .await;
    app.sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "kind": "error"}))
        .await;

    let response = app.balances(&token).await;
    assert_eq!(
        response.status(),
        200,
        "a partial answer is still an answer"
    );
    let body: Value = response.json().await.unwrap();
    for account in accounts_of(&body, "dnb") {
        assert_eq!(account["source"], "cache");
        assert_eq!(account["stale"], true);
        assert_eq!(
            account["warning"],
            "DNB opplever tekniske problemer. Saldo kan være utdatert."
        );
        assert!(account["amount"].is_string());
    }
    for account in accounts_of(&body, "nordea") {
        assert_eq!(account["source"], "live");
        assert_eq!(account["stale"], false);
    }
    assert_eq!(body["total"]["complete"], true);
    assert_eq!(body["total"]["stale"], true);
    assert_eq!(
        body["total"]["stale_accounts"].as_array().unwrap().len(),
        accounts_of(&body, "dnb").len()
    );

    // Once both DNB breakers are open, DNB is not called at all and the banks list says so.
    for _ in 0..3 {
        app.balances(&token).await;
    }
    assert_eq!(breaker(&app, BankId::Dnb, "psd2").await, BreakerState::Open);
    let calls = app.upstream_calls("neonomics", Some("dnb")).await
        + app.upstream_calls("psd2", Some("dnb")).await;
    let body: Value = app.balances(&token).await.json().await.unwrap();
    assert_eq!(accounts_of(&body, "dnb")[0]["stale"], true);
    let after = app.upstream_calls("neonomics", Some("dnb")).await
        + app.upstream_calls("psd2", Some("dnb")).await;
    assert_eq!(after, calls, "stale is served without calling DNB");
    let banks = app.banks(&token).await;
    let dnb = banks["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bank"] == "dnb")
        .unwrap();
    assert_eq!(dnb["balances"], "degraded");
    assert!(
        dnb["banner"]
            .as_str()
            .unwrap()
            .starts_with("DNB opplever tekniske problemer")
    );
    let nordea = banks["banks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["bank"] == "nordea")
        .unwrap();
    assert_eq!(nordea["balances"], "available");
    assert!(nordea["banner"].is_null());
}

/// Live balances reach PostgreSQL in batches behind the answers, within `persist_every` and
/// not only at shutdown: a gateway started again on the same database serves them, stale with
/// the warning, while DNB is down, though it never read them itself.
#[tokio::test]
async fn a_restarted_gateway_serves_the_balances_read_before() {
    let database = fresh_database().await;
    let app = spawn_app_on(&database, QUICK).await;
    let (token, live) = connected(&app, "kari").await;
    let accounts = live["accounts"].as_array().unwrap().len();
    let (db, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    eventually(Duration::from_secs(5), || async {
        let stored: i64 = db
            .query_one("SELECT count(*) FROM balances", &[])
            .await
            .unwrap()
            .get(0);
        (stored == accounts as i64).then_some(())
    })
    .await;

    let TestApp {
        gateway,
        sandbox,
        http,
    } = app;
    gateway.shutdown().await;
    for provider in ["neonomics", "psd2"] {
        sandbox
            .add_fault(json!({"provider": provider, "bank": "dnb", "kind": "unavailable"}))
            .await;
    }
    let app = TestApp {
        gateway: start_gateway(&sandbox, &database, QUICK).await,
        sandbox,
        http,
    };
    let body: Value = app.balances(&token).await.json().await.unwrap();
    let before = accounts_of(&live, "dnb");
    let after = accounts_of(&body, "dnb");
    assert_eq!(after.len(), before.len(), "{body}");
    for (after, before) in after.iter().zip(&before) {
        assert_eq!(after["source"], "cache", "{after}");
        assert_eq!(after["stale"], true);
        assert_eq!(after["amount"], before["amount"]);
        assert!(after["warning"].as_str().unwrap().starts_with("DNB"));
    }
    app.gateway.shutdown().await;
}

#[tokio::test]
async fn without_any_cache_a_dead_bank_answers_503_in_norwegian() {
    let app = spawn_app_with(QUICK).await;
    let token = app.token("kari");
    app.connect(&token, BankId::Sparebank1).await;
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "sparebank1", "kind": "unavailable"}))
        .await;
    app.sandbox
        .add_fault(json!({"provider": "psd2", "bank": "sparebank1", "kind": "unavailable"}))
        .await;
    let response = app.balances(&token).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bank_unavailable");
    assert!(body["message"].as_str().unwrap().contains("SpareBank 1"));
}

#[tokio::test]
async fn a_429_storm_is_not_retried_and_extends_the_cache() {
    let app = spawn_app_with(&[
        ("BANKGATE__BALANCES__FRESH_FOR", "1s"),
        (
            "BANKGATE__PROVIDERS__NEONOMICS__LIMITS__FIRST_BACKOFF",
            "20ms",
        ),
        ("BANKGATE__PROVIDERS__PSD2__LIMITS__FIRST_BACKOFF", "20ms"),
    ])
    .await;
    let (token, _) = connected(&app, "kari").await;
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "rate_limit", "retry_after_s": 30}))
        .await;
    app.sandbox
        .add_fault(json!({"provider": "psd2", "kind": "rate_limit", "retry_after_s": 30}))
        .await;
    // A sleep, not a poll: only time ends the balances' freshness (1 s), and a read to see
    // whether it has would be the read measured next.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let before =
        app.upstream_calls("neonomics", None).await + app.upstream_calls("psd2", None).await;
    let body: Value = app.balances(&token).await.json().await.unwrap();
    let after =
        app.upstream_calls("neonomics", None).await + app.upstream_calls("psd2", None).await;
    let accounts = body["accounts"].as_array().unwrap().len() as u64;
    assert_eq!(
        after - before,
        2 * accounts,
        "one call per account and provider: no retries"
    );
    for account in body["accounts"].as_array().unwrap() {
        assert_eq!(account["source"], "cache");
    }
    // Retry-After opened the breakers for 30 s, and rate limiting stretches freshness to 5 min.
    for _ in 0..5 {
        let body: Value = app.balances(&token).await.json().await.unwrap();
        for account in body["accounts"].as_array().unwrap() {
            assert_eq!(account["source"], "cache");
            assert_eq!(
                account["stale"], false,
                "fresh while the provider is rate limiting: {account}"
            );
        }
    }
    let last = app.upstream_calls("neonomics", None).await + app.upstream_calls("psd2", None).await;
    assert_eq!(last, after, "Retry-After is honoured");
}

/// Requests to Neonomics' token endpoint (counted without bank or service).
async fn neonomics_token_requests(app: &TestApp) -> u64 {
    let body = app.sandbox.control_json("/sandbox/requests").await;
    body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["provider"] == "neonomics" && r["bank"].is_null() && r["service"].is_null())
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn one_token_serves_every_read_until_it_is_due_for_renewal() {
    // Tokens live 32 s and are renewed 30 s before they expire: due 2 s after each is issued.
    let mut options = sandbox_options();
    options.access_token_ttl = Duration::from_secs(32);
    let app = spawn_app_with_sandbox(options, QUICK).await;
    let (token, _) = connected(&app, "kari").await;
    let live_from_neonomics = |body: &Value| {
        for account in body["accounts"].as_array().unwrap() {
            assert_eq!(account["provider"], "neonomics", "{account}");
            assert_eq!(account["source"], "live", "{account}");
        }
    };
    let issued = neonomics_token_requests(&app).await;
    assert!(issued >= 1, "connecting needed a token");
    for _ in 0..5 {
        live_from_neonomics(&app.balances(&token).await.json().await.unwrap());
    }
    assert_eq!(
        neonomics_token_requests(&app).await,
        issued,
        "reads reuse the token held"
    );
    // A sleep, not a poll: only time makes the token due, and the first read after that is
    // the renewal counted next.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    live_from_neonomics(&app.balances(&token).await.json().await.unwrap());
    live_from_neonomics(&app.balances(&token).await.json().await.unwrap());
    assert_eq!(
        neonomics_token_requests(&app).await,
        issued + 1,
        "renewed once, before it expired"
    );
}

#[tokio::test]
async fn revoked_credentials_refresh_once_then_stop_calling() {
    let app = spawn_app_with(QUICK).await;
    let (token, _) = connected(&app, "kari").await;
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "unauthorized"}))
        .await;
    let before = app.upstream_calls("neonomics", None).await;
    let body: Value = app.balances(&token).await.json().await.unwrap();
    for account in body["accounts"].as_array().unwrap() {
        assert_eq!(account["provider"], "psd2", "the backup serves: {account}");
        assert_eq!(account["source"], "live");
    }
    let after_first = app.upstream_calls("neonomics", None).await;
    let accounts = body["accounts"].as_array().unwrap().len() as u64;
    // Each account's read was refused (401); the token was refreshed once (401 again).
    assert!(
        after_first - before <= accounts + 1,
        "{} calls for {accounts} accounts",
        after_first - before
    );
    let status = app.gateway.actors().providers[&bankgate_actors::ProviderId::Neonomics]
        .status()
        .await
        .unwrap();
    assert!(!status.credentials_valid);
    for _ in 0..3 {
        app.balances(&token).await;
    }
    assert_eq!(
        app.upstream_calls("neonomics", None).await,
        after_first,
        "no hammering with bad credentials"
    );
}

#[tokio::test]
async fn an_expired_consent_is_the_users_problem_not_the_banks() {
    let app = spawn_app_with(QUICK).await;
    let (kari, body) = connected(&app, "kari").await;
    let (ola, _) = connected(&app, "ola").await;
    app.sandbox
        .expire_consents(&psu_of("kari"), BankId::Dnb)
        .await;
    let account = accounts_of(&body, "dnb")[0]["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..4 {
        let response = app.account_balance(&kari, &account).await;
        assert_eq!(response.status(), 403);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"], "consent_expired");
        assert_eq!(
            error["message"],
            "Banktilkobling utløpt – forny tilkoblingen"
        );
    }
    assert_eq!(
        breaker(&app, BankId::Dnb, "neonomics").await,
        BreakerState::Closed
    );
    assert_eq!(
        breaker(&app, BankId::Dnb, "psd2").await,
        BreakerState::Closed
    );
    let body: Value = app.balances(&ola).await.json().await.unwrap();
    for account in accounts_of(&body, "dnb") {
        assert_eq!(
            account["source"], "live",
            "another user at DNB is unaffected"
        );
    }
    let body: Value = app.balances(&kari).await.json().await.unwrap();
    assert_eq!(accounts_of(&body, "dnb")[0]["error"], "consent_expired");
    assert_eq!(accounts_of(&body, "nordea")[0]["source"], "live");
}

#[tokio::test]
async fn refused_connections_open_the_breakers_and_stale_is_served() {
    let app = spawn_app_with(QUICK).await;
    let (token, _) = connected(&app, "kari").await;
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "refuse"}))
        .await;
    app.sandbox
        .add_fault(json!({"provider": "psd2", "kind": "refuse"}))
        .await;
    for _ in 0..3 {
        let body: Value = app.balances(&token).await.json().await.unwrap();
        for account in body["accounts"].as_array().unwrap() {
            assert_eq!(account["stale"], true, "{account}");
            assert!(
                account["warning"]
                    .as_str()
                    .unwrap()
                    .contains("opplever tekniske problemer")
            );
        }
    }
    for bank in [BankId::Dnb, BankId::Nordea] {
        assert_eq!(breaker(&app, bank, "neonomics").await, BreakerState::Open);
        assert_eq!(breaker(&app, bank, "psd2").await, BreakerState::Open);
    }
}

#[tokio::test]
async fn a_hanging_bank_times_out_opens_the_breaker_and_recovers_after_the_probe() {
    let app = spawn_app_with(QUICK).await;
    let (token, _) = connected(&app, "kari").await;
    let hang_neonomics = app
        .sandbox
        .add_fault(json!({"provider": "neonomics", "bank": "dnb", "kind": "timeout"}))
        .await;
    let hang_psd2 = app
        .sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "kind": "timeout"}))
        .await;
    for _ in 0..3 {
        let body: Value = app.balances(&token).await.json().await.unwrap();
        assert_eq!(accounts_of(&body, "dnb")[0]["stale"], true);
        assert_eq!(accounts_of(&body, "nordea")[0]["source"], "live");
    }
    assert_eq!(
        breaker(&app, BankId::Dnb, "neonomics").await,
        BreakerState::Open
    );

    app.sandbox.remove_fault(hang_neonomics).await;
    app.sandbox.remove_fault(hang_psd2).await;
    let provider = eventually(Duration::from_secs(10), || async {
        let body: Value = app.balances(&token).await.json().await.unwrap();
        let dnb = accounts_of(&body, "dnb")[0].clone();
        (dnb["source"] == "live").then(|| dnb["provider"].clone())
    })
    .await;
    assert_eq!(
        provider, "neonomics",
        "traffic returns to the primary after its probe"
    );
    assert_eq!(
        breaker(&app, BankId::Dnb, "neonomics").await,
        BreakerState::Closed
    );
}

#[tokio::test]
async fn ten_concurrent_reads_in_one_session_make_one_call_per_account() {
    let app = spawn_app_with(QUICK).await;
    let (token, body) = connected(&app, "kari").await;
    let accounts = body["accounts"].as_array().unwrap().len() as u64;
    app.sandbox
        .add_fault(json!({"provider": "neonomics", "kind": "latency", "latency_ms": 300}))
        .await;
    let before = app.upstream_calls("neonomics", None).await;
    let reads = (0..10).map(|_| app.balances(&token));
    for response in futures_util::future::join_all(reads).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        app.upstream_calls("neonomics", None).await - before,
        accounts
    );
}

#[tokio::test]
async fn a_panicking_bank_actor_is_restarted_and_serves_the_next_request() {
    let app = spawn_app().await;
    let (token, _) = connected(&app, "kari").await;
    app.gateway.actors().banks[&BankId::Dnb].inject_panic();
    // While it restarts, DNB's accounts answer as unavailable (never a hang); then it serves.
    eventually(Duration::from_secs(10), || async {
        let body: Value = app.balances(&token).await.json().await.ok()?;
        accounts_of(&body, "dnb")[0]["amount"]
            .is_string()
            .then_some(())
    })
    .await;
    let metrics = metrics_text(&app.gateway.ops_url()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bankgate_actor_restarts_total{actor=\"bank\"}")),
        "restart counted"
    );

    app.gateway.actors().providers[&bankgate_actors::ProviderId::Neonomics].inject_panic();
    let session = app.gateway.actors().sessions.get("kari", "other-session");
    assert!(
        matches!(
            session.inject_panic().await,
            Err(bankgate_actors::session::SessionError::Unavailable)
        ),
        "a read whose task panics answers unavailable"
    );
    let status = eventually(Duration::from_secs(10), || async {
        let response = app.balances(&token).await;
        (response.status() == 200).then_some(response.status())
    })
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_read_in_flight_when_its_bank_actor_panics_is_answered_at_once() {
    // Live reads, and calls that hang for the whole (default, 3 s) timeout.
    let app = spawn_app_with(&[("BANKGATE__BALANCES__FRESH_FOR", "0s")]).await;
    let (token, body) = connected(&app, "kari").await;
    let dnb = accounts_of(&body, "dnb")[0]["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    for provider in ["neonomics", "psd2"] {
        app.sandbox
            .add_fault(json!({"provider": provider, "bank": "dnb", "kind": "timeout"}))
            .await;
    }
    let before = app.upstream_calls("neonomics", Some("dnb")).await;
    let path = format!("/v1/accounts/{dnb}/balances");
    let read = app.get(&token, &path);
    let panic = async {
        // The call is under way (DNB has it, and hangs) when the actor that owns the read dies.
        eventually(Duration::from_secs(5), || async {
            (app.upstream_calls("neonomics", Some("dnb")).await > before).then_some(())
        })
        .await;
        let panicked = tokio::time::Instant::now();
        app.gateway.actors().banks[&BankId::Dnb].inject_panic();
        panicked
    };
    let (response, panicked) = tokio::join!(read, panic);
    let waited = panicked.elapsed();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "bank_unavailable", "{body}");
    assert!(
        waited < Duration::from_secs(2),
        "answered {waited:?} after the panic, not when the hanging call gave up"
    );
}

#[tokio::test]
async fn bad_tokens_get_401_in_the_envelope() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = spawn_app().await;
    let secret = secrecy::SecretString::from("another-secret-that-is-long-enough!!".to_owned());
    let wrong_secret =
        bankgate::token::mint(&secret, "kari", "s", Duration::from_secs(60)).unwrap();
    let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64.encode(format!(
        r#"{{"sub":"kari","sid":"s","exp":{}}}"#,
        chrono::Utc::now().timestamp() + 600
    ));
    let unsigned = format!("{header}.{claims}.");
    let expired = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let key = EncodingKey::from_secret(b"bankgate-development-secret-do-not-use-in-production");
        let past = chrono::Utc::now().timestamp() - 10;
        encode(
            &Header::default(),
            &json!({"sub": "kari", "sid": "s", "iat": past - 60, "exp": past}),
            &key,
        )
        .unwrap()
    };
    // Signed with the right secret, but not as bankgate mints them: another algorithm, or
    // a claim missing.
    let signed = |algorithm: jsonwebtoken::Algorithm, claims: Value| {
        use jsonwebtoken::{EncodingKey, Header, encode};
        let key = EncodingKey::from_secret(b"bankgate-development-secret-do-not-use-in-production");
        encode(&Header::new(algorithm), &claims, &key).unwrap()
    };
    let later = chrono::Utc::now().timestamp() + 600;
    let other_algorithm = signed(
        jsonwebtoken::Algorithm::HS512,
        json!({"sub": "kari", "sid": "s", "exp": later}),
    );
    let no_session = signed(
        jsonwebtoken::Algorithm::HS256,
        json!({"sub": "kari", "exp": later}),
    );
    let no_expiry = signed(
        jsonwebtoken::Algorithm::HS256,
        json!({"sub": "kari", "sid": "s"}),
    );
    let no_user = signed(
        jsonwebtoken::Algorithm::HS256,
        json!({"sid": "s", "exp": later}),
    );
    let cases = [
        None,
        Some(format!("Bearer {other_algorithm}")),
        Some(format!("Bearer {no_session}")),
        Some(format!("Bearer {no_expiry}")),
        Some(format!("Bearer {no_user}")),
        Some("Basic a2FyaTpwdw==".to_owned()),
        Some("Bearer not.a.jwt".to_owned()),
        Some(format!("Bearer {wrong_secret}")),
        Some(format!("Bearer {unsigned}")),
        Some(format!("Bearer {expired}")),
        Some(format!("Bearer {}", "x".repeat(5000))),
    ];
    for case in cases {
        let mut request = app.http.get(app.client_url("/v1/balances"));
        if let Some(value) = &case {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{case:?}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let token = app.token("kari");
    let response = app.get(&token, "/v1/accounts/not-a-uuid/balances").await;
    assert_eq!(response.status(), 404);
    let response = app
        .http
        .get(app.client_url("/v1/balances"))
        .bearer_auth(&token)
        .header("x-psu-ip-address", "not-an-ip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let envelope: Value = response.json().await.unwrap();
    assert_eq!(
        envelope["details"][0]["field"], "x-psu-ip-address",
        "{envelope}"
    );
    let response = app
        .http
        .post(app.client_url("/v1/consents"))
        .bearer_auth(&token)
        .json(&json!({"bank": "handelsbanken", "psu_id": NATIONAL_ID, "redirect_url": "https://drop.example/x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // A national identity number whose check digits fail is refused, naming the field and
    // never the value.
    for (wrong, status) in [
        ("01010112378", 422),
        ("32010112377", 422),
        ("0101011237", 400),
        ("not-a-number", 400),
    ] {
        let response = app
            .http
            .post(app.client_url("/v1/consents"))
            .bearer_auth(&token)
            .json(
                &json!({"bank": "dnb", "psu_id": wrong, "redirect_url": "https://drop.example/x"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{wrong}");
        let body = response.text().await.unwrap();
        assert!(body.contains("\"psu_id\""), "{body}");
        assert!(!body.contains(wrong), "{body}");
    }
    let response = app
        .http
        .post(app.client_url("/v1/consents"))
        .bearer_auth(&token)
        .json(&json!({"bank": "dnb", "psu_id": NATIONAL_ID, "redirect_url": "javascript:alert(1)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap()["details"][0]["field"],
        "redirect_url"
    );
    // A browser is sent back only where consents.allowed_redirect_urls says.
    for elsewhere in [
        "https://evil.example/connected",
        "https://drop.example.evil.com/",
    ] {
        let response = app
            .http
            .post(app.client_url("/v1/consents"))
            .bearer_auth(&token)
            .json(&json!({"bank": "dnb", "psu_id": NATIONAL_ID, "redirect_url": elsewhere}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{elsewhere}");
        let body = response.json::<Value>().await.unwrap();
        assert_eq!(body["details"][0]["field"], "redirect_url", "{body}");
    }
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.client_url("/v1/openapi.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document = response.text().await.unwrap();
    // The consent's redirect_url is described by this gateway's allow-list.
    assert!(
        document.contains(r#"pattern: "^(?:https://drop\\.example/)""#),
        "{document}"
    );
    // Paths sit at two spaces of indentation under `paths:`, methods at four.
    let mut documented = Vec::new();
    let mut path = None;
    for line in document
        .lines()
        .skip_while(|l| *l != "paths:")
        .skip(1)
        .take_while(|l| !l.starts_with("components:"))
    {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let Some(method) = line
            .strip_prefix("    ")
            .and_then(|l| l.strip_suffix(':'))
            .filter(|m| !m.starts_with(' '))
        {
            documented.push((method.to_uppercase(), path.clone().unwrap()));
        }
    }
    assert_eq!(documented.len(), 14, "{documented:?}");
    let token = app.token("kari");
    let id = uuid::Uuid::new_v4().to_string();
    let concrete = |path: &str| {
        app.client_url(
            &path
                .replace("{account_id}", &id)
                .replace("{consent_id}", &id)
                .replace("{connection_id}", &id)
                .replace("{payment_id}", &id)
                .replace("{bank}", "dnb"),
        )
    };
    for (method, path) in &documented {
        let url = concrete(path);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .http
            .request(method.clone(), url)
            .bearer_auth(&token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert!(
            status != 405 && !(status == 404 && body.contains("no such resource")),
            "{method} {path} is documented but not routed ({status})"
        );
    }
    // A method a path does not take is a 405 naming the ones it does (RFC 9110).
    let mut paths: Vec<&String> = documented.iter().map(|(_, p)| p).collect();
    paths.dedup();
    for path in paths {
        let response = app
            .http
            .request(reqwest::Method::PATCH, concrete(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "PATCH {path}");
        let mut allowed: Vec<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(", ")
            .map(str::to_owned)
            .collect();
        allowed.sort();
        let mut expected: Vec<String> = documented
            .iter()
            .filter(|(_, p)| p == path)
            .map(|(m, _)| m.clone())
            .collect();
        expected.sort();
        assert_eq!(allowed, expected, "Allow of {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "method_not_allowed", "{body}");
    }
}

#[tokio::test]
async fn unattended_reads_stop_at_the_daily_allowance_and_the_cache_answers() {
    let app = spawn_app_with(&[
        ("BANKGATE__BALANCES__FRESH_FOR", "0s"),
        ("BANKGATE__BALANCES__UNATTENDED_READS_PER_DAY", "2"),
    ])
    .await;
    let token = app.token("kari");
    app.connect(&token, BankId::Nordea).await;
    let unattended = || app.get(&token, "/v1/balances");
    let before = app.upstream_calls("neonomics", Some("nordea")).await;
    let mut sources = Vec::new();
    let mut accounts = 0;
    for _ in 0..4 {
        let body: Value = unattended().await.json().await.unwrap();
        accounts = body["accounts"].as_array().unwrap().len() as u64;
        sources.push(body["accounts"][0]["source"].as_str().unwrap().to_owned());
    }
    assert_eq!(sources, ["live", "live", "cache", "cache"]);
    assert_eq!(
        app.upstream_calls("neonomics", Some("nordea")).await - before,
        2 * accounts,
        "two reads per account reached the bank"
    );
    let attended: Value = app.balances(&token).await.json().await.unwrap();
    assert_eq!(
        attended["accounts"][0]["source"], "live",
        "the user being present is not limited"
    );
}

#[tokio::test]
async fn one_user_is_rate_limited_with_retry_after() {
    let app = spawn_app_with(&[
        ("BANKGATE__SESSIONS__USER_RATE_PER_S", "1"),
        ("BANKGATE__SESSIONS__USER_BURST", "2"),
    ])
    .await;
    let token = app.token("kari");
    let statuses: Vec<u16> = futures_util::future::join_all((0..4).map(|_| app.balances(&token)))
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = app.balances(&token).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        limited.json::<Value>().await.unwrap()["error"],
        "rate_limited"
    );
    let other = app.token("ola");
    assert_eq!(
        app.balances(&other).await.status(),
        200,
        "another user is not limited"
    );
}

/// A read the gateway can answer without a bank (a user with no connections, an account that
/// is not theirs) asks none.
#[tokio::test]
async fn a_read_no_bank_is_needed_for_asks_no_bank() {
    let app = spawn_app().await;
    let token = app.token("newcomer");
    let response = app.balances(&token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["accounts"], json!([]));
    let unknown = app
        .get(
            &token,
            &format!("/v1/accounts/{}/balances", uuid::Uuid::new_v4()),
        )
        .await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(app.gateway.actors().sessions.active(), 1);
    assert_eq!(app.upstream_calls("neonomics", None).await, 0);
    assert_eq!(app.upstream_calls("psd2", None).await, 0);
}

#[tokio::test]
async fn idle_sessions_are_stopped() {
    let app = spawn_app_with(&[("BANKGATE__SESSIONS__IDLE_TIMEOUT", "300ms")]).await;
    let token = app.token("kari");
    assert_eq!(app.balances(&token).await.status(), 200);
    assert_eq!(app.gateway.actors().sessions.active(), 1);
    eventually(Duration::from_secs(5), || async {
        (app.gateway.actors().sessions.active() == 0).then_some(())
    })
    .await;
    assert_eq!(
        app.balances(&token).await.status(),
        200,
        "a new session starts on demand"
    );
}

/// Starting consents is limited per user, like payments: so many per window, and so many
/// left waiting for SCA, so that one user cannot fill the providers' quotas or the consents
/// table. Another user is not held back by it.
#[tokio::test]
async fn consents_are_limited_per_user_in_rate_and_in_those_left_pending() {
    let start = |app: &TestApp, token: String| {
        let request = app
            .http
            .post(app.client_url("/v1/consents"))
            .bearer_auth(token)
            .header("x-psu-ip-address", "192.0.2.1")
            .json(&json!({"bank": "dnb", "psu_id": NATIONAL_ID, "redirect_url": "https://drop.example/connected"}));
        async move { request.send().await.unwrap() }
    };
    let app = spawn_app_with(&[
        ("BANKGATE__CONSENTS__PER_USER_LIMIT", "3"),
        ("BANKGATE__CONSENTS__LIMIT_WINDOW", "1h"),
        ("BANKGATE__CONSENTS__MAX_PENDING", "10"),
    ])
    .await;
    for n in 0..3 {
        let response = start(&app, app.token("eager")).await;
        assert_eq!(response.status(), 201, "consent {n}");
    }
    let refused = start(&app, app.token("eager")).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(start(&app, app.token("patient")).await.status(), 201);

    let app = spawn_app_with(&[("BANKGATE__CONSENTS__MAX_PENDING", "2")]).await;
    for _ in 0..2 {
        assert_eq!(start(&app, app.token("abandons")).await.status(), 201);
    }
    let refused = start(&app, app.token("abandons")).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("waiting"),
        "{body}"
    );
    let other = app.token("finishes");
    assert!(
        app.connect(&other, BankId::Nordea)
            .await
            .contains("status=active")
    );
}

/// The SCA callback needs the unguessable state the consent's start gave the provider, once,
/// and leaves a consent pending until the provider says otherwise: a browser
/// back before its SCA is done is sent back to that SCA, and a provider that cannot say
/// where the consent stands answers 503, for the browser to try again. Then the flow
/// completes as ever.
#[tokio::test]
async fn an_early_or_unconfirmed_sca_callback_leaves_the_consent_pending() {
    let app = spawn_app().await;
    let token = app.token("early-bird");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started: Value = http
        .post(app.client_url("/v1/consents"))
        .bearer_auth(&token)
        .json(&json!({"bank": "dnb", "psu_id": NATIONAL_ID, "redirect_url": "https://drop.example/connected"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = started["consent_id"].as_str().unwrap();
    let first_sca = started["sca_redirect"].as_str().unwrap().to_owned();
    // The callback address the gateway gave the bank's own API, with its state. (The bank's
    // API says a consent is still waiting for SCA; Neonomics' account listing cannot yet.)
    let consents = app.sandbox.control.consents().await.unwrap();
    let psd2 = consents
        .iter()
        .find(|c| c.provider == ProviderId::Psd2 && c.redirect_url.contains(id))
        .expect("the bank's API has the consent");
    let (callback, psd2_sca) = (
        psd2.redirect_url.clone(),
        format!("/sandbox/sca/{}", psd2.sca_id),
    );
    assert!(callback.contains("state="), "{callback}");
    let location = |response: &reqwest::Response| {
        let location = response.headers().get("location").expect("a redirect");
        location.to_str().unwrap().to_owned()
    };
    // Without the state, or with another, the callback is refused.
    let bare = app.client_url(&format!("/v1/consents/{id}/callback?provider=psd2"));
    let forged = format!("{bare}&state=00000000000000000000000000000000");
    for url in [&bare, &forged] {
        let refused = http.get(url).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{url}");
    }

    let early = http.get(&callback).send().await.unwrap();
    assert!(early.status().is_redirection(), "{}", early.status());
    assert!(
        location(&early).ends_with(&psd2_sca),
        "back to the SCA not yet done"
    );

    let down = app
        .sandbox
        .add_fault(json!({"provider": "psd2", "bank": "dnb", "kind": "unavailable"}))
        .await;
    let unconfirmed = http.get(&callback).send().await.unwrap();
    assert_eq!(unconfirmed.status(), 503);
    assert!(unconfirmed.headers().contains_key("retry-after"));
    app.sandbox.remove_fault(down).await;

    let mut next = first_sca;
    for _ in 0..10 {
        if next.starts_with("https://drop.example/connected") {
            break;
        }
        next = location(&http.get(&next).send().await.unwrap());
    }
    assert!(next.contains("status=active"), "{next}");
    // The state was used: the same callback again is refused.
    assert_eq!(http.get(&callback).send().await.unwrap().status(), 403);
}
