//! `bankgate ops …`: the ops API from a terminal, as the operator's playbook uses it. Prints
//! readable tables, or the API's JSON with `--json`.

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::ops::OpsStatus;

#[derive(Debug, Args)]
pub struct OpsArgs {
    /// The ops API; defaults to the configured `http.ops_addr`.
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// An admin token (`ops.admin_tokens`).
    #[arg(
        long,
        global = true,
        env = "BANKGATE_OPS_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: OpsCommand,
}

#[derive(Debug, Subcommand)]
pub enum OpsCommand {
    /// Per bank and provider: breakers, modes, failure rates, latency, queue.
    Status,
    /// The current incident in the runbook's terms, with evidence and the action to take.
    Diagnosis,
    /// Sets a bank's balances and/or payments mode (live|cached|disabled|auto, live|queue|disabled|auto).
    Mode {
        bank: String,
        #[arg(long)]
        balances: Option<String>,
        #[arg(long)]
        payments: Option<String>,
        #[arg(long)]
        reason: String,
        /// Return to auto after this long, e.g. 30m.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Forces a provider's breakers open or closed, or back to auto.
    Breaker {
        provider: String,
        #[arg(long)]
        state: String,
        #[arg(long)]
        reason: String,
    },
    /// Sends queued payments now (where the bank is reachable).
    Drain,
}

pub async fn run(args: OpsArgs, default_url: String) -> anyhow::Result<()> {
    let base = args.url.unwrap_or(default_url);
    let base = base.trim_end_matches('/');
    let token = args
        .token
        .context("an admin token is needed: --token or BANKGATE_OPS_TOKEN")?;
    let http = reqwest::Client::new();
    let (method, path, body) = match &args.command {
        OpsCommand::Status => (reqwest::Method::GET, "/ops/status".to_owned(), None),
        OpsCommand::Diagnosis => (reqwest::Method::GET, "/ops/diagnosis".to_owned(), None),
        OpsCommand::Mode {
            bank,
            balances,
            payments,
            reason,
            expires_in,
        } => (
            reqwest::Method::PUT,
            format!("/ops/banks/{bank}/mode"),
            Some(json!({
                "balances": balances,
                "payments": payments,
                "reason": reason,
                "expires_in": expires_in,
            })),
        ),
        OpsCommand::Breaker {
            provider,
            state,
            reason,
        } => (
            reqwest::Method::PUT,
            format!("/ops/providers/{provider}/breaker"),
            Some(json!({"state": state, "reason": reason})),
        ),
        OpsCommand::Drain => (reqwest::Method::POST, "/ops/queue/drain".to_owned(), None),
    };
    let mut request = http
        .request(method, format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach the ops API at {base}"))?;
    let status = response.status();
    let body: Value = response.json().await.context("unexpected answer")?;
    if !status.is_success() {
        let details: Vec<String> = body["details"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| format!("{}: {}", text(&d["field"]), text(&d["issue"])))
            .collect();
        bail!(
            "{} ({}){}",
            text(&body["message"]),
            status,
            if details.is_empty() {
                String::new()
            } else {
                format!(": {}", details.join("; "))
            }
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    match args.command {
        OpsCommand::Status => {
            print_status(&serde_json::from_value(body).context("unexpected status answer")?)
        }
        OpsCommand::Diagnosis => print_diagnosis(&body),
        _ => println!("{}", render_object(&body)),
    }
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// A mode's, state's or pin's name as the ops API writes it.
fn name(value: impl serde::Serialize) -> String {
    text(&serde_json::to_value(value).unwrap_or_default())
}

fn render_object(value: &Value) -> String {
    value
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k}: {}", text(v)))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_else(|| text(value))
}

/// Prints rows as columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.iter().map(|h| (*h).to_owned()).collect()));
    for row in rows {
        println!("{}", line(row.clone()));
    }
}

fn print_status(status: &OpsStatus) {
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_owned());
    println!("{}\n", status.summary);
    let mut rows = Vec::new();
    for bank in &status.banks {
        for path in &bank.providers {
            rows.push(vec![
                bank.bank.to_string(),
                format!("{} ({})", name(bank.balances), name(bank.balances_set_by)),
                format!("{} ({})", name(bank.payments), name(bank.payments_set_by)),
                path.provider.to_string(),
                format!("{} {}s", path.breaker.as_str(), path.breaker_since_s),
                format!("{:.0}%", path.failure_rate_5m * 100.0),
                or_dash(path.p95_ms.map(|ms| ms.to_string())),
                or_dash(path.last_error.map(|e| e.as_str().to_owned())),
                format!("{} / {}s", bank.queue.depth, bank.queue.oldest_s),
            ]);
        }
    }
    table(
        &[
            "BANK",
            "BALANCES",
            "PAYMENTS",
            "PROVIDER",
            "BREAKER",
            "FAIL 5m",
            "P95 ms",
            "LAST ERROR",
            "QUEUE",
        ],
        &rows,
    );
    println!();
    let providers: Vec<Vec<String>> = status
        .providers
        .iter()
        .map(|p| {
            vec![
                p.provider.to_string(),
                or_dash(p.credentials_valid.map(|v| v.to_string())),
                or_dash(p.rate_limit_headroom.map(|h| h.to_string())),
                or_dash(p.breaker_pinned.map(name)),
            ]
        })
        .collect();
    table(
        &[
            "PROVIDER",
            "CREDENTIALS OK",
            "QUOTA HEADROOM",
            "BREAKER PIN",
        ],
        &providers,
    );
}

fn print_diagnosis(body: &Value) {
    println!("incident: {}", text(&body["incident"]));
    println!("summary:  {}", text(&body["summary"]));
    println!("action:   {}\n", text(&body["action"]));
    let rows: Vec<Vec<String>> = body["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                text(&e["bank"]),
                text(&e["provider"]),
                text(&e["calls"]),
                render_object(&e["failures"]).replace('\n', ", "),
                text(&e["failing_for_s"]),
                text(&e["p95_ms"]),
            ]
        })
        .collect();
    table(
        &[
            "BANK",
            "PROVIDER",
            "CALLS 5m",
            "FAILURES",
            "FAILING FOR s",
            "P95 ms",
        ],
        &rows,
    );
}
