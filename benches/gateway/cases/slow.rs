//! Case 5: 10 000 concurrent balance reads while the provider answers after 2 s.
//!
//! Users connected to DNB read their balances from 10 000 connections at once (each request
//! from one of 10 000 sessions) while the sandbox delays every DNB answer at both providers by
//! 2 s. Their balances were read once before, so the gateway has them cached but no longer
//! fresh: each read asks the bank, and what the providers' limiters and the bank's bulkhead
//! cannot take at once is answered from the cache, flagged stale. Measured: the answers (none
//! may be an error), how they were served, the calls the providers received, and the
//! process's RSS at its peak.

use std::time::{Duration, Instant};

use bankgate::gateway::Gateway;
use bankgate_actors::national_id::NationalId;
use bankgate_actors::{BankId, ProviderId, Service};
use bankgate_sandbox::SandboxClient;
use bankgate_sandbox::faults::{FaultKind, FaultSpec};
use serde_json::json;

use super::Outcome;
use crate::bench::{Bench, add_fault};
use crate::load::{Figures, Wrk, rss_bytes};

pub const CONNECTIONS: u32 = 10_000;
const USERS: usize = 200;
const SECONDS: u32 = 20;
const PROVIDER_LATENCY_MS: u64 = 2_000;

/// DNB's balance reads by how they were served: the sources of
/// `bankgate_balance_reads_total`.
const SOURCES: [&str; 4] = ["live", "cache_stale", "cache_fresh", "unavailable"];

/// DNB's balance reads by source, from the gateway's metrics.
async fn reads_by_source(http: &reqwest::Client, gateway: &Gateway) -> [u64; 4] {
    let text = http
        .get(format!("{}/metrics", gateway.ops_url()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let mut counts = [0; 4];
    for line in text
        .lines()
        .filter(|l| l.starts_with("bankgate_balance_reads_total{") && l.contains("bank=\"dnb\""))
    {
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        let index = SOURCES
            .iter()
            .position(|s| line.contains(&format!("source=\"{s}\"")));
        if let Some(index) = index {
            counts[index] += value;
        }
    }
    counts
}

/// Calls the sandbox received for DNB's account information, at both providers.
async fn dnb_reads_upstream(control: &SandboxClient) -> u64 {
    let requests = control.requests().await.expect("requests");
    requests
        .iter()
        .filter(|r| r.bank == Some(BankId::Dnb) && r.service == Some(Service::Aisp))
        .map(|r| r.count)
        .sum()
}

pub async fn run(bench: &Bench) -> Outcome {
    let (gateway, http) = (&bench.slow, &bench.http);
    let balances_url = format!("{}/v1/balances", gateway.client_url());
    // Each user connects DNB, and reads once so that the gateway has the balance.
    for user in 0..USERS {
        let token = bench.token_for(&format!("slow-{user}"), "setup");
        bankgate::browser::connect(
            &gateway.client_url(),
            &token,
            &NationalId::synthetic(&format!("slow-{user}")),
            BankId::Dnb,
            "https://drop.example/done",
        )
        .await
        .expect("connect");
        let read = http
            .get(&balances_url)
            .bearer_auth(&token)
            .header("x-psu-ip-address", "192.0.2.1")
            .send()
            .await
            .expect("first read");
        assert!(read.status().is_success(), "first read: {}", read.status());
    }
    let sessions_per_user = CONNECTIONS as usize / USERS;
    let tokens: Vec<String> = (0..CONNECTIONS as usize)
        .map(|n| {
            bench.token_for(
                &format!("slow-{}", n % USERS),
                &format!("slow-session-{}", n / USERS % sessions_per_user),
            )
        })
        .collect();
    let table: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
    // Each wrk thread walks the tokens from its own offset, so concurrent requests come from
    // different sessions.
    let script = format!(
        r#"local tokens = {{ {} }}
local offset = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * {half})
  threads = threads + 1
end
local n = 0
request = function()
  n = n + 1
  local headers = {{}}
  headers["Authorization"] = "Bearer " .. tokens[((offset + n) % #tokens) + 1]
  headers["x-psu-ip-address"] = "192.0.2.1"
  return wrk.format("GET", nil, headers)
end
"#,
        table.join(", "),
        half = CONNECTIONS / 2,
    );

    let control = SandboxClient::new(bench.sandbox.control_url());
    let mut faults = Vec::new();
    for provider in ProviderId::ALL {
        let fault = FaultSpec::new(provider, FaultKind::Latency)
            .with_bank(BankId::Dnb)
            .with_latency_ms(PROVIDER_LATENCY_MS);
        faults.push(add_fault(&bench.sandbox, fault).await);
    }
    // Let every cached balance age past its freshness.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let reads_before = reads_by_source(http, gateway).await;
    let upstream_before = dnb_reads_upstream(&control).await;
    let rss_before = rss_bytes();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut peak = rss_bytes();
        loop {
            tokio::select! {
                _ = stopped.changed() => return peak,
                _ = tokio::time::sleep(Duration::from_millis(100)) => peak = peak.max(rss_bytes()),
            }
        }
    });
    let started = Instant::now();
    let figures: Figures = Wrk {
        case: "slow upstream (2 s), 10 000 connections".to_owned(),
        url: balances_url,
        connections: CONNECTIONS,
        seconds: SECONDS,
        headers: Vec::new(),
        script: Some(script),
        timeout: Duration::from_secs(40),
    }
    .spawn()
    .await;
    let elapsed = started.elapsed();
    let _ = stop.send(true);
    let rss_peak = sampler.await.expect("sampler");
    let upstream = dnb_reads_upstream(&control).await - upstream_before;
    let reads_after = reads_by_source(http, gateway).await;
    let served: Vec<u64> = (0..SOURCES.len())
        .map(|i| reads_after[i] - reads_before[i])
        .collect();
    for id in faults {
        let _ = control.remove_fault(id).await;
    }
    let upstream_calls_per_s = upstream as f64 / elapsed.as_secs_f64();
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    let summary = format!(
        "5. slow upstream: {CONNECTIONS} connections, {:.0} answers/s, p50 {:.0} ms, p99 {:.0} ms, {} errors; DNB reads {} live, {} stale from cache, {} fresh, {} unavailable; {upstream_calls_per_s:.1} upstream calls/s; RSS {:.0} MiB before, peak {:.0} MiB (+{:.0} MiB)",
        figures.requests_per_s,
        figures.p50_ms,
        figures.p99_ms,
        figures.errors,
        served[0],
        served[1],
        served[2],
        served[3],
        mib(rss_before),
        mib(rss_peak),
        mib(rss_peak.saturating_sub(rss_before)),
    );
    let report = json!({
        "connections": CONNECTIONS,
        "reads_by_source": SOURCES.iter().zip(&served).map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "upstream_calls_per_s": upstream_calls_per_s,
        "rss_before_bytes": rss_before,
        "rss_peak_bytes": rss_peak,
    });
    Outcome {
        rows: vec![figures],
        summary,
        key: "slow_upstream",
        report,
    }
}
