//! `cargo bench --bench gateway`: the gateway measured against peers, side by side in one run.
//!
//! The cases, one file each under `cases/`, run in this order against the servers of
//! `bench.rs` (one private PostgreSQL, two sandboxes, four gateways) and HAProxy:
//!
//! 1. `cached.rs`: cached balance reads against a bare warp hello-world and `/healthz`.
//! 2. `live.rs`: the latency a live read through the gateway adds, against HAProxy's.
//! 3. `fail_fast.rs`: DNB hanging: DNB served stale at once, Nordea beside it unharmed.
//! 4. `sessions.rs`: the memory and time of 100 000 idle sessions.
//! 5. `slow.rs`: 10 000 concurrent reads while both providers answer DNB after 2 s.
//! 6. `payments.rs`: initiations per second through the durable path.
//!
//! Each runs alone when named: `cargo bench --bench gateway -- sessions` (names as the files).
//! Figures are printed as a table and a summary line per case, and written to
//! `target/bench/gateway.json`. `benches/README.md` says how to read them and what the last
//! runs measured.

#![recursion_limit = "256"]

mod bench;
mod cases;
mod haproxy;
mod load;

use std::process::Command;

use serde_json::{Map, Value};

use bench::Bench;

/// The allocator the `bankgate` binary ships with: the gateways measured here run in this
/// process, so without it they would be measured on glibc's malloc, which the binary does not use.
/// `Cap` counts the bytes it holds, for case 4's heap figure.
#[global_allocator]
pub static ALLOCATOR: cap::Cap<mimalloc::MiMalloc> = cap::Cap::new(mimalloc::MiMalloc, usize::MAX);

/// Raises this process's open-file limit to its hard limit: case 5 holds 10 000 client
/// connections in the gateway, and as many in wrk, which inherits the limit.
fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

/// Exits with a message when the machine lacks what the benchmark needs.
fn check_machine() {
    let open_files = raise_open_files();
    let needed = u64::from(cases::slow::CONNECTIONS) + 1_000;
    if open_files < needed {
        eprintln!("the benchmark needs {needed} open files per process (hard limit {open_files})");
        std::process::exit(1);
    }
    for (tool, package) in [("wrk", "wrk"), ("haproxy", "haproxy")] {
        if Command::new(tool).arg("-v").output().is_err() {
            eprintln!("the benchmark needs {tool}: apt-get install {package}");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    check_machine();
    // `cargo bench --bench gateway -- sessions slow` runs those cases alone.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |case: &str| chosen.is_empty() || chosen.iter().any(|c| c == case);
    let bench = Bench::start().await;
    let mut outcomes = Vec::new();
    if wanted("cached") {
        outcomes.push(cases::cached::run(&bench).await);
    }
    if wanted("live") {
        outcomes.push(cases::live::run(&bench).await);
    }
    if wanted("fail_fast") {
        outcomes.push(cases::fail_fast::run(&bench).await);
    }
    if wanted("sessions") {
        outcomes.push(cases::sessions::run(&bench).await);
    }
    if wanted("slow") {
        outcomes.push(cases::slow::run(&bench).await);
    }
    if wanted("payments") {
        outcomes.push(cases::payments::run(&bench).await);
    }
    bench.stop().await;

    println!();
    println!(
        "{:<40} {:>12} {:>10} {:>10} {:>8}",
        "case", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for f in outcomes.iter().flat_map(|o| &o.rows) {
        println!(
            "{:<40} {:>12.0} {:>10.3} {:>10.3} {:>8}",
            f.case, f.requests_per_s, f.p50_ms, f.p99_ms, f.errors
        );
    }
    println!();
    for outcome in &outcomes {
        println!("{}", outcome.summary);
    }
    let mut report = Map::new();
    report.insert(
        "table".to_owned(),
        serde_json::to_value(outcomes.iter().flat_map(|o| &o.rows).collect::<Vec<_>>())
            .expect("json"),
    );
    for outcome in outcomes {
        report.insert(outcome.key.to_owned(), outcome.report);
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(
        dir.join("gateway.json"),
        serde_json::to_string_pretty(&Value::Object(report)).expect("json"),
    )
    .expect("report");
    println!("written to target/bench/gateway.json");
}
