//! Case 1: cached balance reads through the full path (token, session, fresh cache) against
//! a bare warp hello-world and the gateway's own `/healthz` (its middleware alone):
//! requests/s, p50 and p99 at 64 connections, driven by `wrk`. Each server is warmed up,
//! then the three take turns for five rounds of 5 s. Each reports its median round; the
//! cached read's share is the median of the rounds' shares, each against its round's
//! hello-world.

use std::time::Duration;

use serde_json::json;

use super::{Outcome, ROUNDS, median, median_round};
use crate::bench::Bench;
use crate::load::{Figures, Wrk};

pub const CONNECTIONS: u32 = 64;
const ROUND_SECONDS: u32 = 5;
const WARM_UP_SECONDS: u32 = 2;

pub async fn run(bench: &Bench) -> Outcome {
    let hello_url = bench.hello_url.clone();
    let balances_url = format!("{}/v1/balances", bench.cached.client_url());
    let warm = bench
        .http
        .get(&balances_url)
        .bearer_auth(&bench.token)
        .header("x-psu-ip-address", "192.0.2.1")
        .send()
        .await
        .expect("warm");
    assert!(
        warm.status().is_success(),
        "the cached case starts from a served balance"
    );
    let health_url = format!("{}/healthz", bench.cached.client_url());
    let cached_headers = vec![
        (
            "authorization".to_owned(),
            format!("Bearer {}", bench.token),
        ),
        ("x-psu-ip-address".to_owned(), "192.0.2.1".to_owned()),
    ];
    let servers = [
        ("bare warp hello-world", hello_url, vec![]),
        ("gateway /healthz (middleware only)", health_url, vec![]),
        ("cached balances (full path)", balances_url, cached_headers),
    ];
    let load = |(case, url, headers): &(&str, String, Vec<(String, String)>), seconds| {
        Wrk {
            case: (*case).to_owned(),
            url: url.clone(),
            connections: CONNECTIONS,
            seconds,
            headers: headers.clone(),
            script: None,
            timeout: Duration::from_secs(2),
        }
        .spawn()
    };
    // A first, unmeasured run of each server: the first load of a fresh server (its
    // connections, the allocator's pages, the caches) is not what the rounds compare.
    for server in &servers {
        load(server, WARM_UP_SECONDS).await;
    }
    let mut rounds: [Vec<Figures>; 3] = Default::default();
    for round in 1..=ROUNDS {
        for (server, runs) in servers.iter().zip(&mut rounds) {
            let figures = load(server, ROUND_SECONDS).await;
            eprintln!(
                "round {round}: {}: {:.0} req/s",
                server.0, figures.requests_per_s
            );
            runs.push(figures);
        }
    }
    let round_ratios: Vec<f64> = rounds[2]
        .iter()
        .zip(&rounds[0])
        .map(|(cached, hello)| cached.requests_per_s / hello.requests_per_s)
        .collect();
    let rps = |runs: &Vec<Figures>| runs.iter().map(|f| f.requests_per_s).collect::<Vec<_>>();
    let report = json!({
        "connections": CONNECTIONS,
        "rounds": ROUNDS,
        "round_seconds": ROUND_SECONDS,
        "cached_to_hello_ratio": median(round_ratios.clone()),
        "cached_to_hello_ratio_by_round": round_ratios,
        "requests_per_s_by_round": {
            "hello": rps(&rounds[0]),
            "healthz": rps(&rounds[1]),
            "cached": rps(&rounds[2]),
        },
    });
    let percents: Vec<String> = round_ratios
        .iter()
        .map(|r| format!("{:.0} %", r * 100.0))
        .collect();
    let summary = format!(
        "1. cached reads at {:.0} % of the hello-world's throughput, median of {ROUNDS} rounds of {ROUND_SECONDS} s, each against the hello-world of its round (target ≥ 60 %); round by round {}",
        median(round_ratios.clone()) * 100.0,
        percents.join(", ")
    );
    Outcome {
        rows: rounds
            .map(|runs| median_round(runs, |f| f.requests_per_s))
            .into(),
        summary,
        key: "cached",
        report,
    }
}
