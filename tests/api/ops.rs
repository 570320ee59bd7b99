//! The ops API and CLI: admin tokens, bank modes that take effect at once, persist and reach
//! every instance, breaker overrides, automatic degradation and recovery, and the diagnosis
//! naming each runbook cause from the sandbox's faults.

use std::process::Command;
use std::time::Duration;

use bankgate_actors::BankId;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    OPS_TOKEN, QUICK, TestApp, client, eventually, fresh_database, metrics_text, ops_call,
    sandbox_options, set_mode, spawn_app_on, spawn_app_with, spawn_sandbox_with, start_gateway,
};

/// The user's read of their first account at `bank`, with the user present.
async fn balance_at(app: &TestApp, token: &str, bank: BankId) -> reqwest::Response {
    let id = app.connection_at(token, bank).await;
    app.account_balance(token, &id).await
}

#[tokio::test]
async fn the_ops_api_needs_an_admin_token_and_stays_off_the_client_port() {
    let app = spawn_app_with(QUICK).await;
    for authorization in [
        None,
        Some("Bearer wrong-token-but-long-enough"),
        Some(OPS_TOKEN),
    ] {
        let mut request = app.http.get(app.ops_url("/ops/status"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{authorization:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let response = app
        .http
        .get(app.client_url("/ops/status"))
        .bearer_auth(OPS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let (status, body) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["summary"], "all banks live");

    for (path, body, expected, field) in [
        (
            "/ops/banks/dnb/mode",
            json!({"balances": "sometimes", "reason": "x"}),
            400,
            Some("balances"),
        ),
        (
            "/ops/banks/dnb/mode",
            json!({"payments": "queue", "reason": " "}),
            400,
            Some("reason"),
        ),
        (
            "/ops/banks/dnb/mode",
            json!({"reason": "x"}),
            400,
            Some("balances"),
        ),
        (
            "/ops/banks/dnb/mode",
            json!({"payments": "queue", "reason": "x", "expires_in": "soon"}),
            400,
            Some("expires_in"),
        ),
        (
            "/ops/banks/handelsbanken/mode",
            json!({"payments": "queue", "reason": "x"}),
            404,
            None,
        ),
        (
            "/ops/providers/psd2/breaker",
            json!({"state": "ajar", "reason": "x"}),
            400,
            Some("state"),
        ),
    ] {
        let (status, answer) = ops_call(&app.gateway, Method::PUT, path, Some(body)).await;
        assert_eq!(status, expected, "{path}: {answer}");
        if let Some(field) = field {
            assert_eq!(answer["details"][0]["field"], field, "{answer}");
        }
    }
}

#[tokio::test]
async fn bank_modes_apply_at_once_persist_and_reach_every_instance() {
    let database = fresh_database().await;
    let app = spawn_app_on(&database, QUICK).await;
    let other = start_gateway(&app.sandbox, &database, QUICK).await;
    let token = app.token("ops-user");
    app.connect(&token, BankId::Dnb).await;
    assert_eq!(balance_at(&app, &token, BankId::Dnb).await.status(), 200);

    // Cached: served from the cache, the bank is not called.
    set_mode(
        &app.gateway,
        "dnb",
        json!({"balances": "cached", "reason": "INC-7 DNB slow"}),
    )
    .await;
    let before = app.upstream_calls("neonomics", Some("dnb")).await;
    let response = balance_at(&app, &token, BankId::Dnb).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["source"], "cache");
    assert_eq!(app.upstream_calls("neonomics", Some("dnb")).await, before);

    // Disabled: 503 with the Norwegian banner.
    set_mode(
        &app.gateway,
        "dnb",
        json!({"balances": "disabled", "reason": "INC-7"}),
    )
    .await;
    let response = balance_at(&app, &token, BankId::Dnb).await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "Saldo fra DNB er midlertidig utilgjengelig."
    );

    // The other instance applied it within a second, and the audit names who and why.
    eventually(Duration::from_secs(1), || async {
        let (_, status) = ops_call(&other, Method::GET, "/ops/status", None).await;
        (status["banks"][0]["balances"] == "disabled").then_some(())
    })
    .await;
    let (_, status) = ops_call(&other, Method::GET, "/ops/status", None).await;
    let change = &status["recent_changes"][0];
    assert_eq!(
        (
            &change["actor"],
            &change["action"],
            &change["target"],
            &change["reason"]
        ),
        (
            &json!("dev"),
            &json!("bank_mode"),
            &json!("dnb"),
            &json!("INC-7")
        )
    );
    assert_eq!(change["before"]["balances"], "cached");
    assert_eq!(change["after"]["balances"], "disabled");
    assert!(
        status["summary"]
            .as_str()
            .unwrap()
            .contains("dnb: balances disabled")
    );
    other.shutdown().await;

    // A restarted gateway starts with it.
    let restarted = start_gateway(&app.sandbox, &database, QUICK).await;
    let (_, status) = ops_call(&restarted, Method::GET, "/ops/status", None).await;
    assert_eq!(status["banks"][0]["balances"], "disabled");
    assert_eq!(status["banks"][0]["balances_set_by"], "operator");
    restarted.shutdown().await;

    // A pin with an expiry returns to auto by itself.
    set_mode(
        &app.gateway,
        "dnb",
        json!({"balances": "disabled", "reason": "short", "expires_in": "1s"}),
    )
    .await;
    eventually(Duration::from_secs(10), || async {
        let (_, status) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
        (status["banks"][0]["balances"] == "live").then_some(())
    })
    .await;
    assert_eq!(balance_at(&app, &token, BankId::Dnb).await.status(), 200);
}

/// A change that names one mode keeps the other and the expiry as stored, even when it
/// comes through another instance at once: a timed pin never becomes permanent.
/// Draining the queue now sends queued payments out during an incident: the audit names
/// the operator who asked, as it does for every other change.
#[tokio::test]
async fn a_queue_drain_is_audited_with_who_asked() {
    let app = spawn_app_with(QUICK).await;
    let (status, body) = ops_call(&app.gateway, Method::POST, "/ops/queue/drain", None).await;
    assert_eq!((status, &body["status"]), (202, &json!("draining")));
    let (_, status) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
    let change = &status["recent_changes"][0];
    assert_eq!(
        (&change["actor"], &change["action"]),
        (&json!("dev"), &json!("queue_drain")),
        "{status}"
    );
}

#[tokio::test]
async fn a_mode_change_keeps_what_it_leaves_out_as_stored() {
    let database = fresh_database().await;
    let app = spawn_app_on(&database, QUICK).await;
    let other = start_gateway(&app.sandbox, &database, QUICK).await;
    let path = "/ops/banks/dnb/mode";
    let timed = json!({"payments": "queue", "reason": "INC-9", "expires_in": "1h"});
    let (status, first) = ops_call(&app.gateway, Method::PUT, path, Some(timed)).await;
    assert_eq!(status, 200, "{first}");
    assert!(first["expires_at"].is_string(), "{first}");

    let balances = json!({"balances": "cached", "reason": "INC-9 too"});
    let (status, second) = ops_call(&other, Method::PUT, path, Some(balances)).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["payments"], "queue", "{second}");
    assert_eq!(second["balances"], "cached", "{second}");
    assert_eq!(second["expires_at"], first["expires_at"], "{second}");

    // Setting the expiry alone is refused no more than before: a mode is still needed.
    let (status, _) = ops_call(
        &app.gateway,
        Method::PUT,
        path,
        Some(json!({"reason": "x", "expires_in": "5m"})),
    )
    .await;
    assert_eq!(status, 400);
    other.shutdown().await;
}

#[tokio::test]
async fn a_breaker_forced_open_sends_traffic_to_the_backup_provider() {
    let app = spawn_app_with(QUICK).await;
    let token = app.token("breaker-user");
    app.connect(&token, BankId::Nordea).await;
    let (status, body) = ops_call(
        &app.gateway,
        Method::PUT,
        "/ops/providers/neonomics/breaker",
        Some(json!({"state": "open", "reason": "Neonomics maintenance"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let before = app.upstream_calls("neonomics", Some("nordea")).await;
    let response = balance_at(&app, &token, BankId::Nordea).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["provider"], "psd2", "{body}");
    assert_eq!(
        app.upstream_calls("neonomics", Some("nordea")).await,
        before
    );
}

/// A consent goes through the provider actors and their breakers like a read: with
/// Neonomics pinned open, connecting Nordea starts a consent at the bank's own API only.
#[tokio::test]
async fn a_breaker_forced_open_keeps_new_consents_away_from_that_provider() {
    let app = spawn_app_with(QUICK).await;
    let (status, body) = ops_call(
        &app.gateway,
        Method::PUT,
        "/ops/providers/neonomics/breaker",
        Some(json!({"state": "open", "reason": "Neonomics maintenance"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let token = app.token("consent-breaker-user");
    app.connect(&token, BankId::Nordea).await;
    let consents = app.sandbox.control.consents().await.unwrap();
    let providers: Vec<_> = (consents.iter())
        .filter(|c| c.bank == BankId::Nordea)
        .map(|c| c.provider.as_str())
        .collect();
    assert_eq!(providers, ["psd2"]);
    let connections = app.connections(&token).await;
    assert_eq!(connections[0]["providers"], json!(["psd2"]));
}

#[tokio::test]
async fn a_bank_down_everywhere_degrades_automatically_and_recovers_after_a_probe() {
    let app = spawn_app_with(QUICK).await;
    let token = app.token("auto-user");
    app.connect(&token, BankId::Dnb).await;
    assert_eq!(balance_at(&app, &token, BankId::Dnb).await.status(), 200);
    let mut faults = Vec::new();
    for provider in ["neonomics", "psd2"] {
        faults.push(
            app.sandbox
                .add_fault(json!({"provider": provider, "bank": "dnb", "kind": "unavailable"}))
                .await,
        );
    }
    let status = eventually(Duration::from_secs(20), || async {
        let _ = balance_at(&app, &token, BankId::Dnb).await;
        let (_, status) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
        (status["banks"][0]["degraded"] == true).then_some(status)
    })
    .await;
    let dnb = &status["banks"][0];
    assert_eq!(
        (&dnb["balances"], &dnb["balances_set_by"], &dnb["payments"]),
        (&json!("cached"), &json!("auto"), &json!("queue"))
    );
    let banks = app.banks(&token).await;
    assert!(
        banks["banks"][0]["banner"]
            .as_str()
            .unwrap()
            .contains("DNB opplever tekniske problemer")
    );
    let audited = eventually(Duration::from_secs(5), || async {
        let (_, status) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
        let changes = status["recent_changes"].as_array().unwrap().clone();
        changes.into_iter().find(|c| c["actor"] == "auto")
    })
    .await;
    assert_eq!(audited["after"]["payments"], "queue");

    for fault in faults {
        app.sandbox.remove_fault(fault).await;
    }
    eventually(Duration::from_secs(20), || async {
        let _ = balance_at(&app, &token, BankId::Dnb).await;
        let (_, status) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
        (status["banks"][0]["degraded"] == false && status["banks"][0]["balances"] == "live")
            .then_some(())
    })
    .await;
}

/// Connects two users to DNB and Nordea, applies `faults`, reads balances at a trickle and
/// waits for `/ops/diagnosis` to name `incident` (within 30 s).
async fn diagnosed(settings: &[(&str, &str)], faults: &[Value], incident: &str) -> Value {
    diagnosed_in(&spawn_app_with(settings).await, faults, incident).await
}

async fn diagnosed_in(app: &TestApp, faults: &[Value], incident: &str) -> Value {
    let tokens = [app.token("diag-a"), app.token("diag-b")];
    for token in &tokens {
        app.connect(token, BankId::Dnb).await;
        app.connect(token, BankId::Nordea).await;
    }
    let (_, healthy) = ops_call(&app.gateway, Method::GET, "/ops/diagnosis", None).await;
    assert_eq!(healthy["incident"], "healthy", "{healthy}");
    for fault in faults {
        app.sandbox.add_fault(fault.clone()).await;
    }
    let started = tokio::time::Instant::now();
    let found = eventually(Duration::from_secs(30), || async {
        for token in &tokens {
            let _ = app.balances(token).await;
        }
        let (_, diagnosis) = ops_call(&app.gateway, Method::GET, "/ops/diagnosis", None).await;
        (diagnosis["incident"] == incident).then_some(diagnosis)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!found["action"].as_str().unwrap().is_empty());
    found
}

#[tokio::test]
async fn diagnosis_names_a_full_provider_outage() {
    let found = diagnosed(
        QUICK,
        &[json!({"provider": "neonomics", "kind": "unavailable"})],
        "provider_outage",
    )
    .await;
    assert_eq!(found["provider"], "neonomics");
}

#[tokio::test]
async fn diagnosis_names_one_bank_down() {
    let faults = [
        json!({"provider": "neonomics", "bank": "dnb", "kind": "error"}),
        json!({"provider": "psd2", "bank": "dnb", "kind": "error"}),
    ];
    let found = diagnosed(QUICK, &faults, "bank_down").await;
    assert_eq!(found["banks"], json!(["dnb"]));
}

#[tokio::test]
async fn diagnosis_names_an_outage_that_leaves_bankgate_without_a_token() {
    // Neonomics tokens last a second here: during the outage bankgate holds none, and its
    // calls fail at the token endpoint before they are made. They count all the same.
    let mut options = sandbox_options();
    options.access_token_ttl = Duration::from_secs(1);
    let sandbox = spawn_sandbox_with(options).await;
    let gateway = start_gateway(&sandbox, &fresh_database().await, QUICK).await;
    let app = TestApp {
        gateway,
        sandbox,
        http: client(),
    };
    let faults = [json!({"provider": "neonomics", "kind": "unavailable"})];
    diagnosed_in(&app, &faults, "provider_outage").await;
}

#[tokio::test]
async fn diagnosis_names_timeouts_at_a_provider_as_an_outage() {
    let faults = [json!({"provider": "neonomics", "kind": "timeout"})];
    diagnosed(QUICK, &faults, "provider_outage").await;
}

#[tokio::test]
async fn diagnosis_names_rate_limiting() {
    let faults = [json!({"provider": "neonomics", "kind": "rate_limit", "retry_after_s": 1})];
    diagnosed(QUICK, &faults, "provider_rate_limiting").await;
}

#[tokio::test]
async fn diagnosis_names_invalid_credentials() {
    let faults = [json!({"provider": "neonomics", "kind": "unauthorized"})];
    diagnosed(QUICK, &faults, "provider_credentials").await;
}

#[tokio::test]
async fn diagnosis_names_a_network_failure() {
    let faults = [json!({"provider": "neonomics", "kind": "refuse"})];
    diagnosed(QUICK, &faults, "network_failure").await;
}

#[tokio::test]
async fn diagnosis_names_a_wave_of_expired_consents_as_a_user_matter() {
    let faults = [
        json!({"provider": "neonomics", "kind": "consent_expired"}),
        json!({"provider": "psd2", "kind": "consent_expired"}),
    ];
    diagnosed(QUICK, &faults, "expired_consents").await;
}

#[tokio::test]
async fn diagnosis_names_slow_responses() {
    let settings = [("BANKGATE__BALANCES__FRESH_FOR", "0s")];
    let faults = [json!({"provider": "neonomics", "kind": "latency", "latency_ms": 2200})];
    diagnosed(&settings, &faults, "slow_responses").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ops_cli_prints_status_and_sets_modes() {
    let app = spawn_app_with(QUICK).await;
    let bin = env!("CARGO_BIN_EXE_bankgate");
    let ops = |args: &[&str]| {
        Command::new(bin)
            .arg("ops")
            .args(args)
            .args(["--url", &app.gateway.ops_url()])
            .env("BANKGATE_OPS_TOKEN", OPS_TOKEN)
            .output()
            .unwrap()
    };
    let set = tokio::task::block_in_place(|| {
        ops(&[
            "mode",
            "sparebank1",
            "--payments",
            "queue",
            "--reason",
            "INC-9",
        ])
    });
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let status = tokio::task::block_in_place(|| ops(&["status"]));
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(
        table.contains("BANK") && table.contains("sparebank1"),
        "{table}"
    );
    assert!(table.contains("queue (operator)"), "{table}");
    // Every column is read from the typed status: a healthy provider's row shows its
    // credentials as valid, not "-".
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("neonomics") && l.contains("true")),
        "{table}"
    );
    let json = tokio::task::block_in_place(|| ops(&["diagnosis", "--json"]));
    let diagnosis: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(diagnosis["incident"], "healthy");
    let refused = tokio::task::block_in_place(|| {
        Command::new(bin)
            .args([
                "ops",
                "status",
                "--url",
                &app.gateway.ops_url(),
                "--token",
                "not-a-valid-admin-token",
            ])
            .output()
            .unwrap()
    });
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("admin token"));
}

#[tokio::test]
async fn the_health_probe_watches_every_path_without_user_traffic() {
    let mut settings = QUICK.to_vec();
    settings.push(("BANKGATE__BANKS__PROBE_INTERVAL", "300ms"));
    let app = spawn_app_with(&settings).await;
    let faults = [
        app.sandbox
            .add_fault(json!({"provider": "neonomics", "bank": "dnb", "kind": "unavailable"}))
            .await,
        app.sandbox
            .add_fault(json!({"provider": "psd2", "bank": "dnb", "kind": "timeout"}))
            .await,
    ];
    // Nobody reads a balance: the probes alone open DNB's breakers and degrade the bank.
    let status = eventually(Duration::from_secs(20), || async {
        let (_, status) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
        (status["banks"][0]["degraded"] == true).then_some(status)
    })
    .await;
    let errors: Vec<_> = status["banks"][0]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["breaker"].clone(), p["last_error"].clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (json!("open"), json!("server")),
            (json!("open"), json!("timeout"))
        ],
        "{status}"
    );
    for bank in &status["banks"].as_array().unwrap()[1..] {
        assert_eq!(bank["degraded"], false, "{bank}");
        for path in bank["providers"].as_array().unwrap() {
            assert_eq!(path["breaker"], "closed", "{bank}");
        }
    }
    for bank in ["nordea", "sparebank1"] {
        for provider in ["neonomics", "psd2"] {
            assert!(
                app.upstream_calls(provider, Some(bank)).await > 0,
                "{provider} probed for {bank}"
            );
        }
    }

    // The probe is also the half-open trial: the bank recovers without any user traffic.
    for fault in faults {
        app.sandbox.remove_fault(fault).await;
    }
    eventually(Duration::from_secs(20), || async {
        let (_, status) = ops_call(&app.gateway, Method::GET, "/ops/status", None).await;
        let dnb = &status["banks"][0];
        let closed = dnb["providers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["breaker"] == "closed");
        (dnb["degraded"] == false && dnb["balances"] == "live" && closed).then_some(())
    })
    .await;
    let metrics = metrics_text(&app.gateway.ops_url()).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bankgate_health_probes_total")
                && l.contains("bank=\"dnb\"")
                && l.contains("provider=\"psd2\"")
                && l.contains("outcome=\"timeout\"")),
        "probe outcomes are counted"
    );
}
