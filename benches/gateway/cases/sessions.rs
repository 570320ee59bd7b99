//! Case 4, sessions: the memory and time to create 100 000 idle user sessions, each user
//! with a session of their own made by one cached balance read, 64 at a time.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::Outcome;
use crate::bench::Bench;
use crate::load::rss_bytes;

const SESSIONS: usize = 100_000;
const AT_ONCE: usize = 64;

pub async fn run(bench: &Bench) -> Outcome {
    let balances_url = format!("{}/v1/balances", bench.cached.client_url());
    let rss_before = rss_bytes();
    let sessions_before = bench.cached.actors().sessions.active();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
    let mut tasks = Vec::with_capacity(SESSIONS);
    for n in 0..SESSIONS {
        let request = bench
            .http
            .get(&balances_url)
            .bearer_auth(bench.token_for(&format!("idle-{n}"), "s"))
            .header("x-psu-ip-address", "192.0.2.1");
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            drop(permit);
            ok
        }));
    }
    let mut errors = 0;
    for task in tasks {
        errors += u64::from(!task.await.expect("session task"));
    }
    let creation = started.elapsed();
    let created = bench.cached.actors().sessions.active() - sessions_before;
    let growth = rss_bytes().saturating_sub(rss_before);
    let per_session = growth as f64 / created.max(1) as f64;
    let summary = format!(
        "4. {created} sessions in {:.1} s ({:.0}/s, {errors} errors): RSS +{:.1} MiB, {:.0} bytes per session (target ≤ 2048)",
        creation.as_secs_f64(),
        created as f64 / creation.as_secs_f64(),
        growth as f64 / (1024.0 * 1024.0),
        per_session
    );
    Outcome {
        rows: Vec::new(),
        summary,
        key: "sessions",
        report: json!({
            "created": created,
            "seconds": creation.as_secs_f64(),
            "errors": errors,
            "rss_growth_bytes": growth,
            "bytes_per_session": per_session,
        }),
    }
}
