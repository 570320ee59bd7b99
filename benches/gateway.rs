//! `cargo bench --bench gateway`: the gateway's cost, measured side by side in one run.
//!
//! 1. Cached balance reads through the full path (token check, session, fresh cache) against
//!    a bare warp hello-world and the gateway's own `/healthz` (its middleware alone):
//!    requests/s, p50 and p99 at 64 connections, all driven by `wrk` (Debian package `wrk`).
//! 2. A live balance read through the gateway against the same read sent straight to the
//!    sandbox's PSD2 API, at a fixed moderate rate: the latency the gateway adds.
//!
//! It starts its own PostgreSQL, sandbox and gateways on loopback and stops them at the end.
//! Figures are printed as a table and written to `target/bench/gateway.json`.

#![recursion_limit = "256"]

use std::collections::HashMap;
use std::convert::Infallible;
use std::process::Command;
use std::time::{Duration, Instant};

use bankgate::gateway::Gateway;
use bankgate::postgres::PrivateCluster;
use bankgate::sandbox::{Sandbox, SandboxOptions};
use bankgate::settings::Settings;
use bankgate_actors::BankId;
use serde_json::json;
use warp::Filter;

const CONNECTIONS: u32 = 64;
const WRK_SECONDS: u32 = 10;
const LIVE_RATE_PER_S: u64 = 100;
const LIVE_SECONDS: u64 = 10;

fn settings(overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("BANKGATE__HTTP__CLIENT_ADDR", "127.0.0.1:0"),
        ("BANKGATE__HTTP__OPS_ADDR", "127.0.0.1:0"),
        ("BANKGATE__SANDBOX__PORT", "0"),
        ("BANKGATE__SANDBOX__RATE_LIMIT_PER_S", "100000"),
        ("BANKGATE__SESSIONS__USER_RATE_PER_S", "1000000"),
        ("BANKGATE__SESSIONS__USER_BURST", "1000000"),
        (
            "BANKGATE__PROVIDERS__NEONOMICS__LIMITS__RATE_LIMIT_PER_S",
            "100000",
        ),
        (
            "BANKGATE__PROVIDERS__PSD2__LIMITS__RATE_LIMIT_PER_S",
            "100000",
        ),
        ("BANKGATE__TELEMETRY__LOG_FILTER", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::load(None, &env).expect("bench settings are valid")
}

/// Latency and throughput of one case.
#[derive(Debug, Clone, serde::Serialize)]
struct Figures {
    case: String,
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

/// Parses a wrk duration such as `812.00us`, `1.20ms`, `2.01s`.
fn wrk_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn wrk(case: &str, url: &str, headers: &[(&str, &str)]) -> Figures {
    let mut command = Command::new("wrk");
    command.args([
        "-t2",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{WRK_SECONDS}s"),
        "--latency",
    ]);
    for (name, value) in headers {
        command.args(["-H", &format!("{name}: {value}")]);
    }
    let output = command
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let find = |prefix: &str| -> Option<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l[prefix.len()..].trim().to_owned())
    };
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .flat_map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    Figures {
        case: case.to_owned(),
        requests_per_s: find("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
        p50_ms: find("50%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN),
        p99_ms: find("99%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN),
        errors,
    }
}

/// Sends `LIVE_RATE_PER_S` requests a second for `LIVE_SECONDS` and measures each.
async fn fixed_rate(case: &str, request: impl Fn() -> reqwest::RequestBuilder) -> Figures {
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / LIVE_RATE_PER_S));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..LIVE_RATE_PER_S * LIVE_SECONDS {
        ticker.tick().await;
        let pending = request().send();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = pending.await.is_ok_and(|r| r.status().is_success());
            (sent.elapsed(), ok)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latency, ok) = task.await.expect("request task");
        latencies.push(latency.as_secs_f64() * 1000.0);
        errors += u64::from(!ok);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        case: case.to_owned(),
        requests_per_s: latencies.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        errors,
    }
}

async fn start_gateway(settings: &Settings, sandbox: &Sandbox, database: &str) -> Gateway {
    let mut settings = settings.clone();
    settings.providers.neonomics.base_url = sandbox.neonomics_url();
    for bank in BankId::ALL {
        settings
            .providers
            .psd2
            .bank_urls
            .insert(bank, sandbox.psd2_url(bank));
    }
    let pool = bankgate::postgres::pool(database, 16, Duration::from_secs(5)).expect("pool");
    bankgate::postgres::migrate(&pool)
        .await
        .expect("migrations");
    Gateway::start(&settings, pool).await.expect("gateway")
}

#[tokio::main]
async fn main() {
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("the benchmark drives load with wrk: apt-get install wrk");
        std::process::exit(1);
    }
    let cached_settings = settings(&[]);
    let live_settings = settings(&[
        ("BANKGATE__BALANCES__FRESH_FOR", "0s"),
        ("BANKGATE__BANKS__PROVIDER_ORDER", "[\"psd2\"]"),
    ]);
    let cluster = PrivateCluster::start_temporary()
        .await
        .expect("PostgreSQL starts");
    let cached_db = cluster
        .ensure_database("bench_cached")
        .await
        .expect("database");
    let live_db = cluster
        .ensure_database("bench_live")
        .await
        .expect("database");
    let sandbox = Sandbox::start(SandboxOptions::from_settings(&cached_settings.sandbox))
        .await
        .expect("sandbox");
    let cached = start_gateway(&cached_settings, &sandbox, &cached_db).await;
    let live = start_gateway(&live_settings, &sandbox, &live_db).await;

    let secret = cached_settings.auth.token_secret.clone();
    let token = bankgate::token::mint(
        &secret,
        "bench-user",
        "bench-session",
        Duration::from_secs(3600),
    )
    .expect("token");
    for gateway in [&cached, &live] {
        for bank in [BankId::Dnb, BankId::Nordea] {
            bankgate::browser::connect(
                &gateway.client_url(),
                &token,
                bank,
                "https://drop.example/done",
            )
            .await
            .expect("connect");
        }
    }

    // Bare warp hello-world, served the same way as bankgate's listeners.
    let hello = warp::path!("hello")
        .map(|| "hello")
        .recover(|_| async { Ok::<_, Infallible>("") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hello_url = format!("http://{}/hello", listener.local_addr().expect("addr"));
    let options = bankgate::http::ServeOptions {
        header_read_timeout: Duration::from_secs(10),
        drain: Duration::ZERO,
    };
    tokio::spawn(bankgate::http::serve(
        listener,
        hello,
        options,
        std::future::pending(),
    ));

    let http = reqwest::Client::new();
    let balances_url = format!("{}/v1/balances", cached.client_url());
    let warm = http
        .get(&balances_url)
        .bearer_auth(&token)
        .header("x-psu-ip-address", "192.0.2.1")
        .send()
        .await
        .expect("warm");
    assert!(
        warm.status().is_success(),
        "the cached case starts from a served balance"
    );

    let bearer = format!("Bearer {token}");
    let hello_figures =
        tokio::task::spawn_blocking(move || wrk("bare warp hello-world", &hello_url, &[]))
            .await
            .expect("wrk");
    let health_url = format!("{}/healthz", cached.client_url());
    let health_figures = tokio::task::spawn_blocking(move || {
        wrk("gateway /healthz (middleware only)", &health_url, &[])
    })
    .await
    .expect("wrk");
    let cached_figures = {
        let bearer = bearer.clone();
        tokio::task::spawn_blocking(move || {
            wrk(
                "cached balances (full path)",
                &balances_url,
                &[
                    ("authorization", &bearer),
                    ("x-psu-ip-address", "192.0.2.1"),
                ],
            )
        })
        .await
        .expect("wrk")
    };

    // The live case reads one DNB account over the banks' PSD2 API, through the gateway and directly.
    let (db_client, connection) = tokio_postgres::connect(&live_db, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(connection);
    let row = db_client
        .query_one(
            "SELECT c.id, ca.account_id, pc.external_id FROM connections c
             JOIN connection_accounts ca ON ca.connection_id = c.id AND ca.provider = 'psd2'
             JOIN provider_consents pc ON pc.consent_id = c.consent_id AND pc.provider = 'psd2'
             WHERE c.bank = 'dnb' LIMIT 1",
            &[],
        )
        .await
        .expect("a DNB connection");
    let (connection_id, account_id, consent_id): (uuid::Uuid, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let direct_url = format!(
        "{}/accounts/{account_id}/balances",
        sandbox.psd2_url(BankId::Dnb)
    );
    let gateway_url = format!("{}/v1/accounts/{connection_id}/balances", live.client_url());
    let direct = fixed_rate("live read, direct to the sandbox", || {
        http.get(&direct_url)
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
            .header("consent-id", &consent_id)
            .header("psu-ip-address", "192.0.2.1")
    })
    .await;
    let through = fixed_rate("live read, through the gateway", || {
        http.get(&gateway_url)
            .bearer_auth(&token)
            .header("x-psu-ip-address", "192.0.2.1")
    })
    .await;

    let all = [
        hello_figures.clone(),
        health_figures,
        cached_figures.clone(),
        direct.clone(),
        through.clone(),
    ];
    println!();
    println!(
        "{:<36} {:>12} {:>10} {:>10} {:>8}",
        "case", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for f in &all {
        println!(
            "{:<36} {:>12.0} {:>10.3} {:>10.3} {:>8}",
            f.case, f.requests_per_s, f.p50_ms, f.p99_ms, f.errors
        );
    }
    let ratio = cached_figures.requests_per_s / hello_figures.requests_per_s;
    let added_p50 = through.p50_ms - direct.p50_ms;
    let added_p99 = through.p99_ms - direct.p99_ms;
    println!();
    println!(
        "cached reads at {:.0} % of the hello-world's throughput (target ≥ 60 %)",
        ratio * 100.0
    );
    println!(
        "live read overhead: p50 +{added_p50:.3} ms, p99 +{added_p99:.3} ms (target p99 ≤ 1 ms) at {LIVE_RATE_PER_S} req/s"
    );

    let report = json!({
        "connections": CONNECTIONS,
        "wrk_seconds": WRK_SECONDS,
        "live_rate_per_s": LIVE_RATE_PER_S,
        "cases": all,
        "cached_to_hello_ratio": ratio,
        "live_added_p50_ms": added_p50,
        "live_added_p99_ms": added_p99,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(
        dir.join("gateway.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("report");
    println!("written to target/bench/gateway.json");

    cached.shutdown().await;
    live.shutdown().await;
    sandbox.shutdown().await;
    cluster.stop().await;
}
