//! End to end with a real Prometheus (Debian's `prometheus` package): it scrapes a running
//! `bankgate serve` (its own process, so its metrics are its own) with the shipped alert rules
//! loaded while the sandbox takes DNB down, and DNB's failure-rate alert reaches firing while
//! Nordea's does not.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use serde_json::{Value, json};

use crate::helpers::{
    DEV_TOKEN_SECRET, client, connections, eventually, free_port, fresh_database, metrics_text,
    serve, spawn_sandbox, wait_until_up,
};

/// A Prometheus server in a temporary directory, stopped when dropped.
struct Prometheus {
    process: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

impl Prometheus {
    /// Scrapes `target` (host:port of the ops listener) every second and evaluates the
    /// shipped rules every second.
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/alerts.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: bankgate\n    static_configs:\n      - targets: ['{target}']\n"
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let process = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus is needed (apt-get install prometheus): {e}"));
        Prometheus {
            process,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The `BankFailureRateHigh` alerts by bank, with their state (pending or firing).
    async fn failure_rate_alerts(&self) -> Option<Vec<(String, String)>> {
        let body: Value = reqwest::get(format!("{}/api/v1/alerts", self.url))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let alerts = body["data"]["alerts"].as_array()?;
        Some(
            alerts
                .iter()
                .filter(|a| a["labels"]["alertname"] == "BankFailureRateHigh")
                .map(|a| {
                    (
                        a["labels"]["bank"].as_str().unwrap_or_default().to_owned(),
                        a["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect(),
        )
    }
}

#[tokio::test]
async fn prometheus_fires_the_failure_rate_alert_for_the_bank_that_is_down_only() {
    let sandbox = spawn_sandbox().await;
    let database = fresh_database().await;
    let (client_port, ops_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client_port}");
    // Every read goes upstream, as in a busy hour where cached balances are never fresh.
    let _gateway = serve(
        &sandbox,
        &database,
        client_port,
        ops_port,
        &[("BANKGATE__BALANCES__FRESH_FOR", "0s")],
        None,
    );
    wait_until_up(&url).await;
    let secret = secrecy::SecretString::from(DEV_TOKEN_SECRET.to_owned());
    let token =
        bankgate::token::mint(&secret, "prometheus-user", "s-1", Duration::from_secs(600)).unwrap();
    for bank in [BankId::Dnb, BankId::Nordea] {
        bankgate::browser::connect(
            &url,
            &token,
            &NationalId::synthetic("prometheus-user"),
            bank,
            "https://drop.example/connected",
        )
        .await
        .expect("consent flow");
    }
    let accounts: Vec<String> = connections(&url, &token)
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let target = format!("127.0.0.1:{ops_port}");
    let prometheus = Prometheus::start(&target);
    eventually(Duration::from_secs(30), || async {
        prometheus.failure_rate_alerts().await.map(|_| ())
    })
    .await;

    for provider in ["neonomics", "psd2"] {
        sandbox
            .add_fault(json!({"provider": provider, "bank": "dnb", "kind": "unavailable"}))
            .await;
    }
    // A steady trickle of reads, as the app makes them, until the alert fires (its `for` is
    // one minute, and Prometheus needs a few scrapes to see the first failures).
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "DNB's alert did not fire within 3 minutes; seen: {seen:?}"
        );
        for account in &accounts {
            let _ = client()
                .get(format!("{url}/v1/accounts/{account}/balances"))
                .bearer_auth(&token)
                .header("x-psu-ip-address", "192.0.2.44")
                .send()
                .await;
        }
        // The trickle's pace, not a wait: the alert is on a rate, and this loop polls it.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(alerts) = prometheus.failure_rate_alerts().await else {
            continue;
        };
        let fired = alerts
            .iter()
            .any(|(bank, state)| bank == "dnb" && state == "firing");
        seen.extend(alerts);
        if fired {
            break;
        }
    }
    assert!(
        seen.iter().all(|(bank, _)| bank == "dnb"),
        "only DNB's alert was ever pending or firing: {seen:?}"
    );
    let metrics = metrics_text(&format!("http://{target}")).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("bankgate_upstream_requests_total")
                && l.contains("bank=\"nordea\"")
                && l.contains("outcome=\"success\"")),
        "Nordea was read all along"
    );
}
