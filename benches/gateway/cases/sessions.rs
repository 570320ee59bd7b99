//! Case 4, sessions: the memory and time to create 100 000 idle user sessions, each user
//! with a session of their own made by one cached balance read, 64 at a time.
//!
//! Memory is reported twice: the heap the gateway still holds once every request has been
//! answered (counted by the allocator, so exactly what the sessions keep), and the growth of
//! the process's resident set, which adds what the allocator keeps of the requests' freed
//! memory.

use std::time::Instant;

use serde_json::json;
use tokio::task::JoinSet;

use super::Outcome;
use crate::ALLOCATOR;
use crate::bench::Bench;
use crate::load::rss_bytes;

const SESSIONS: usize = 100_000;
const AT_ONCE: usize = 64;

pub async fn run(bench: &Bench) -> Outcome {
    let balances_url = format!("{}/v1/balances", bench.cached.client_url());
    let rss_before = rss_bytes();
    let heap_before = ALLOCATOR.allocated();
    let sessions_before = bench.cached.actors().sessions.active();
    let started = Instant::now();
    let mut running: JoinSet<bool> = JoinSet::new();
    let mut errors = 0;
    for n in 0..SESSIONS {
        if running.len() == AT_ONCE {
            errors += u64::from(!running.join_next().await.expect("a task").expect("session"));
        }
        let request = bench
            .http
            .get(&balances_url)
            .bearer_auth(bench.token_for(&format!("idle-{n}"), "s"))
            .header("x-psu-ip-address", "192.0.2.1");
        running.spawn(async move { request.send().await.is_ok_and(|r| r.status().is_success()) });
    }
    while let Some(ok) = running.join_next().await {
        errors += u64::from(!ok.expect("session"));
    }
    let creation = started.elapsed();
    let created = bench.cached.actors().sessions.active() - sessions_before;
    let heap = ALLOCATOR.allocated().saturating_sub(heap_before);
    let growth = rss_bytes().saturating_sub(rss_before) as usize;
    let per_session = |bytes: usize| bytes as f64 / created.max(1) as f64;
    let summary = format!(
        "4. {created} sessions in {:.1} s ({:.0}/s, {errors} errors): heap +{:.1} MiB, {:.0} bytes per session; RSS +{:.1} MiB, {:.0} bytes per session (target ≤ 2048)",
        creation.as_secs_f64(),
        created as f64 / creation.as_secs_f64(),
        heap as f64 / (1024.0 * 1024.0),
        per_session(heap),
        growth as f64 / (1024.0 * 1024.0),
        per_session(growth),
    );
    Outcome {
        rows: Vec::new(),
        summary,
        key: "sessions",
        report: json!({
            "created": created,
            "seconds": creation.as_secs_f64(),
            "errors": errors,
            "heap_growth_bytes": heap,
            "heap_bytes_per_session": per_session(heap),
            "rss_growth_bytes": growth,
            "bytes_per_session": per_session(growth),
        }),
    }
}
