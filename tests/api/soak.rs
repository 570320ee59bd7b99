//! The chaos soak's short version: `bankgate soak` for 60 s with five SIGKILLs, a PostgreSQL
//! restart and a fault for six of the seven runbook causes, then its checks (no 5xx where a
//! cached balance existed, every acknowledged payment in the ledger exactly once or queued
//! by rule, bounded memory, every cause named by the diagnosis).
//!
//! The seed is fixed so that CI replays one schedule of faults and kills; the traffic is
//! random on every run. Longer runs: `bankgate soak --duration 10m` (README).

use std::process::Command;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_faults_kills_and_a_database_restart_breaks_no_promise() {
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = tokio::task::spawn_blocking({
        let path = report.path().to_owned();
        move || {
            Command::new(env!("CARGO_BIN_EXE_bankgate"))
                .args([
                    "soak",
                    "--duration",
                    "60s",
                    "--fault-every",
                    "10s",
                    "--kills",
                    "5",
                ])
                .args(["--users", "16", "--seed", "20261121", "--report"])
                .arg(path)
                .env_remove("BANKGATE__DATABASE__URL")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");

    let report: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    for check in report["checks"].as_array().unwrap() {
        assert_eq!(check["passed"], true, "{check}\n{stdout}");
    }
    assert_eq!(report["kills"], 5, "{stdout}");
    assert_eq!(report["database_restarts"], 1, "{stdout}");
    let injected = report["causes_injected"].as_array().unwrap();
    assert_eq!(injected.len(), 6, "{stdout}");
    assert!(
        report["reads"]["total"].as_u64().unwrap() > 1000,
        "{stdout}"
    );
    assert!(report["reads"]["during_database_outage"].as_u64().unwrap() > 0);
    assert!(
        report["payments"]["acknowledged"].as_u64().unwrap() > 50,
        "{stdout}"
    );
    // While PostgreSQL was away, payments were answered 503 `unavailable` (retried later).
    let during = &report["payments"]["answers_during_database_outage"];
    assert!(
        during["503 unavailable"].as_u64().unwrap_or(0) > 0,
        "{stdout}"
    );
    assert!(
        during
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.starts_with('2')),
        "nothing accepted while the database was away: {during}"
    );
}
