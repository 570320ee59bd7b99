//! Case 2: one live DNB balance read over the banks' PSD2 API, straight to the sandbox,
//! through HAProxy (health checks and retries) in front of the sandbox, and through the
//! gateway, at a fixed moderate rate: the latency each adds. The three take turns for five
//! rounds; each path's added p50 and p99 are the medians of the rounds' differences from
//! the direct call of the same round.

use bankgate_actors::BankId;
use serde_json::json;

use super::{LIVE_RATE_PER_S, LIVE_SECONDS, Outcome, ROUNDS, median, median_round};
use crate::bench::Bench;
use crate::haproxy::Haproxy;
use crate::load::{Figures, fixed_rate, success};

/// The PSD2 account id and consent id of the bench user's DNB connection at the live
/// gateway, for reading it without the gateway.
async fn dnb_account(bench: &Bench) -> (String, String) {
    let (db, connection) = tokio_postgres::connect(&bench.live_database, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(connection);
    let row = db
        .query_one(
            "SELECT ca.account_id, pc.external_id FROM connections c
             JOIN connection_accounts ca ON ca.connection_id = c.id AND ca.provider = 'psd2'
             JOIN provider_consents pc ON pc.consent_id = c.consent_id AND pc.provider = 'psd2'
             WHERE c.bank = 'dnb' LIMIT 1",
            &[],
        )
        .await
        .expect("a DNB connection");
    (row.get(0), row.get(1))
}

pub async fn run(bench: &Bench) -> Outcome {
    let (account_id, consent_id) = dnb_account(bench).await;
    let live_at = bench.connected_at(&bench.live).await;
    let sandbox = &bench.sandbox;
    let direct_url = format!(
        "{}/accounts/{account_id}/balances",
        sandbox.psd2_url(BankId::Dnb)
    );
    let proxy = Haproxy::start(sandbox.psd2_addr()).await;
    let proxied_url = direct_url.replace(&sandbox.psd2_addr().to_string(), &proxy.addr.to_string());
    let psd2_read = |url: &str| {
        bench
            .http
            .get(url)
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
            .header("consent-id", &consent_id)
            .header("psu-ip-address", "192.0.2.1")
    };
    let gateway_read = || bench.account_read(&bench.token, &live_at, "dnb");
    // Warm every path's connections first.
    for _ in 0..20 {
        let _ = psd2_read(&direct_url).send().await;
        let _ = psd2_read(&proxied_url).send().await;
        let _ = gateway_read().send().await;
    }
    // The three take turns, like case 1, so that a noisy moment of the machine cannot land on
    // one of them alone; each reports its median round by p99.
    let paths: [(&str, &dyn Fn() -> reqwest::RequestBuilder); 3] = [
        ("live read, direct to the sandbox", &|| {
            psd2_read(&direct_url)
        }),
        ("live read, through HAProxy", &|| psd2_read(&proxied_url)),
        ("live read, through the gateway", &gateway_read),
    ];
    let mut rounds: [Vec<Figures>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for ((case, request), runs) in paths.iter().zip(&mut rounds) {
            runs.push(fixed_rate(case, LIVE_RATE_PER_S, LIVE_SECONDS, request, success).await);
        }
    }
    drop(proxy);
    // Each path is compared with the direct call of its own round, and the comparisons'
    // median reported: a stall of the machine in one round then moves one comparison, not a
    // path's median against another path's. (gateway, HAProxy) by round.
    let added = |key: fn(&Figures) -> f64| -> Vec<(f64, f64)> {
        (0..ROUNDS)
            .map(|n| {
                let direct = key(&rounds[0][n]);
                (key(&rounds[2][n]) - direct, key(&rounds[1][n]) - direct)
            })
            .collect()
    };
    let added_p99 = added(|f| f.p99_ms);
    let added_p50 = added(|f| f.p50_ms);
    let gateway_p50 = median(added_p50.iter().map(|a| a.0).collect());
    let proxy_p50 = median(added_p50.iter().map(|a| a.1).collect());
    let gateway_p99 = median(added_p99.iter().map(|a| a.0).collect());
    let proxy_p99 = median(added_p99.iter().map(|a| a.1).collect());
    let by_round: Vec<String> = added_p99
        .iter()
        .map(|(gateway, proxy)| format!("{gateway:+.3} / {proxy:+.3} ms"))
        .collect();
    let summary = format!(
        "2. added latency at {LIVE_RATE_PER_S} req/s, medians of {ROUNDS} rounds of {LIVE_SECONDS} s, each against the direct call of its round: gateway p50 {gateway_p50:+.3} ms, p99 {gateway_p99:+.3} ms (target p99 ≤ 1 ms and below HAProxy's); HAProxy p50 {proxy_p50:+.3} ms, p99 {proxy_p99:+.3} ms; added p99 round by round (gateway / HAProxy) {}",
        by_round.join(", ")
    );
    let report = json!({
        "rate_per_s": LIVE_RATE_PER_S,
        "gateway_added_p50_ms": gateway_p50,
        "gateway_added_p99_ms": gateway_p99,
        "haproxy_added_p50_ms": proxy_p50,
        "haproxy_added_p99_ms": proxy_p99,
        "added_p99_ms_by_round": added_p99
            .iter()
            .map(|(gateway, proxy)| json!({"gateway": gateway, "haproxy": proxy}))
            .collect::<Vec<_>>(),
    });
    Outcome {
        rows: rounds.map(|runs| median_round(runs, |f| f.p99_ms)).into(),
        summary,
        key: "live",
        report,
    }
}
