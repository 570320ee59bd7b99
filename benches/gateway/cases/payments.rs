//! Case 6, payments: initiations per second through the durable path (PostgreSQL, upstream,
//! events) at 16 connections for 10 s, each with its own idempotency key, p50 and p99.

use std::time::Duration;

use serde_json::json;

use super::Outcome;
use crate::bench::Bench;
use crate::load::Wrk;

const CONNECTIONS: u32 = 16;
const SECONDS: u32 = 10;

pub async fn run(bench: &Bench) -> Outcome {
    let ids = bench.connected_at(&bench.cached).await.ids;
    let body = json!({
        "bank": "dnb",
        "debtor_account_id": ids["dnb"],
        "amount": "150.00",
        "currency": "NOK",
        "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
        "kind": "remittance",
    })
    .to_string();
    let script = format!(
        r#"local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local counter = 0
request = function()
  counter = counter + 1
  local headers = {{}}
  headers["Authorization"] = "Bearer {token}"
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = "bench-" .. id .. "-" .. counter
  headers["x-psu-ip-address"] = "192.0.2.1"
  return wrk.format("POST", "/v1/payments", headers, {body:?})
end
"#,
        token = bench.token,
    );
    let payments = Wrk {
        case: "payment initiations (durable path)".to_owned(),
        url: format!("{}/v1/payments", bench.cached.client_url()),
        connections: CONNECTIONS,
        seconds: SECONDS,
        headers: Vec::new(),
        script: Some(script),
        timeout: Duration::from_secs(2),
    }
    .spawn()
    .await;
    let summary = format!(
        "6. payments: {:.0} initiations/s, p50 {:.3} ms, p99 {:.3} ms at {CONNECTIONS} connections ({} errors)",
        payments.requests_per_s, payments.p50_ms, payments.p99_ms, payments.errors
    );
    Outcome {
        summary,
        key: "payments",
        report: json!({
            "connections": CONNECTIONS,
            "seconds": SECONDS,
            "per_s": payments.requests_per_s,
            "p99_ms": payments.p99_ms,
        }),
        rows: vec![payments],
    }
}
