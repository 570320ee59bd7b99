//! The randomized exactly-once test: seeded cases, each driving payments through a random
//! upstream behaviour per call (accepted, refused, 503, 500, 429, a 2xx cut off mid-body, a
//! connection reset mid-body, a lost answer, a hang, a 401, a closed listener), with the gateway
//! killed (SIGKILL) mid-payment, SCA approved or rejected at random moments (the browser then
//! mostly returns to bankgate, which completes the payment; else the poll finds it; DNB's own
//! API's status pushes arrive early, late or while the gateway is down, and are retried), and
//! forged pushes from the wrong source. After each case the faults are lifted, the payments
//! settle, and the sandbox's ledger and the database must agree:
//!
//! - no payment is in the ledger twice;
//! - every payment answered 2xx is in the ledger once and completed or rejected, or not in it
//!   and failed, expired or cancelled;
//! - none is left received, initiating, queued or authorised once the faults are gone, nor
//!   unknown, except one whose answer Neonomics lost: Neonomics has no look-up that could
//!   find it, so it is never sent again, and it must then be at Neonomics unauthorised
//!   (`RCVD`) or nowhere;
//! - every forged push is ignored.
//!
//! A share of the payments fail at both paths first and are killed mid-send on a later
//! attempt from the queue, at either provider: a look-up after that kill must not take the
//! earlier attempt's provider for the only one that may hold the payment.
//!
//! `cargo test` runs `CASES` cases from a fixed seed. `BANKGATE_EXACTLY_ONCE_CASES=n` runs n;
//! `BANKGATE_EXACTLY_ONCE_SEED=s` replays the case a failure printed.

use std::collections::HashMap;
use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use bankgate_sandbox::webhooks::sign;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::helpers::{
    DEV_TOKEN_SECRET, ServeProcess, TestSandbox, client, connection_at, free_port, fresh_database,
    serve, spawn_sandbox, wait_until_up,
};

const CASES: u64 = 8;
const FIRST_SEED: u64 = 0x6261_6e6b;
const PAYMENTS_PER_CASE: usize = 8;
const DNB_PSD2_SECRET: &str = "sandbox-dnb-psd2-webhook-secret";

/// The share of payments sent again from the queue and killed on that later attempt.
const LATER_ATTEMPT: f64 = 0.3;
const PROVIDERS: [&str; 2] = ["neonomics", "psd2"];
/// The bank's own API's answers to a first attempt that leave the payment to the queue:
/// refused (queued at once), or unknown and then found nowhere.
const FIRST_OF_LATER: [&str; 3] = ["unavailable", "error", "timeout"];
/// Answers lost on the later attempt, most with the payment carried out.
const LOST_ON_LATER: [&str; 4] = ["lost_response", "lost_response", "garbled", "timeout"];

/// A user who closes the browser after the SCA leaves the payment to the poll: soon here.
const SETTINGS: &[(&str, &str)] = &[("BANKGATE__PAYMENTS__POLL_AFTER", "1s")];

/// Where a payment's call to a provider may go wrong, as sandbox fault kinds; `None` lets it
/// through.
const BEHAVIOURS: [Option<&str>; 11] = [
    None,
    None,
    Some("unavailable"),
    Some("error"),
    Some("rate_limit"),
    Some("garbled"),
    Some("reset"),
    Some("lost_response"),
    Some("timeout"),
    Some("unauthorized"),
    Some("refuse"),
];

/// The gateway under test and what it runs against.
struct World {
    sandbox: TestSandbox,
    database: String,
    ports: (u16, u16),
    gateway: ServeProcess,
    url: String,
    token: String,
    account: String,
    db: tokio_postgres::Client,
}

impl World {
    async fn start() -> World {
        let sandbox = spawn_sandbox().await;
        let database = fresh_database().await;
        let ports = (free_port(), free_port());
        let gateway = serve(&sandbox, &database, ports.0, ports.1, SETTINGS, None);
        let url = format!("http://127.0.0.1:{}", ports.0);
        wait_until_up(&url).await;
        let defaults = bankgate::settings::Settings::load(None, &HashMap::new()).unwrap();
        sandbox
            .control
            .register_webhooks(bankgate::payments::webhook_targets(
                &defaults.webhooks,
                &url,
            ))
            .await
            .unwrap();
        let secret = secrecy::SecretString::from(DEV_TOKEN_SECRET.to_owned());
        let token =
            bankgate::token::mint(&secret, "randomized", "s-1", Duration::from_secs(3600)).unwrap();
        bankgate::browser::connect(
            &url,
            &token,
            &NationalId::synthetic("randomized"),
            BankId::Dnb,
            "https://drop.example/connected",
        )
        .await
        .expect("consent flow");
        let account = connection_at(&url, &token, BankId::Dnb).await;
        let (db, connection) = tokio_postgres::connect(&database, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        World {
            sandbox,
            database,
            ports,
            gateway,
            url,
            token,
            account,
            db,
        }
    }

    /// SIGKILLs the gateway and starts it again on the same database.
    async fn kill_and_restart(&mut self) {
        self.gateway.kill();
        self.gateway = serve(
            &self.sandbox,
            &self.database,
            self.ports.0,
            self.ports.1,
            SETTINGS,
            None,
        );
        wait_until_up(&self.url).await;
    }

    async fn clear_faults(&self) {
        self.sandbox
            .http
            .delete(self.sandbox.control("/sandbox/faults"))
            .send()
            .await
            .unwrap();
    }

    async fn view(&self, id: &str) -> Option<Value> {
        let response = client()
            .get(format!("{}/v1/payments/{id}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }
}

/// What one case did and saw.
#[derive(Default)]
struct Case {
    acknowledged: Vec<String>,
    log: Vec<String>,
}

/// Sends payment `key`, retrying with the same key while the answer is a 5xx, a 409 or
/// missing (as the app does); with `kill_after`, kills and restarts the gateway that long
/// into the first attempt. Returns the payment id once answered 2xx.
async fn pay(world: &mut World, key: &str, kill_after: Option<Duration>) -> Option<String> {
    let body = json!({
        "bank": "dnb",
        "debtor_account_id": world.account,
        "amount": "150.00",
        "currency": "NOK",
        "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
        "kind": "remittance",
    });
    let send = |url: String, token: String, body: Value, key: String| async move {
        let response = client()
            .post(format!("{url}/v1/payments"))
            .bearer_auth(&token)
            .header("idempotency-key", &key)
            .header("x-psu-ip-address", "192.0.2.44")
            .json(&body)
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.ok()?;
        Some((status, body))
    };
    let first = tokio::spawn(send(
        world.url.clone(),
        world.token.clone(),
        body.clone(),
        key.to_owned(),
    ));
    if let Some(after) = kill_after {
        tokio::time::sleep(after).await;
        world.kill_and_restart().await;
    }
    let mut answer = first.await.unwrap();
    for _ in 0..20 {
        match &answer {
            Some((status, body)) if (200..300).contains(status) => {
                return body["payment_id"].as_str().map(str::to_owned);
            }
            Some((status, _)) if *status < 500 && *status != 409 => return None,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        answer = send(
            world.url.clone(),
            world.token.clone(),
            body.clone(),
            key.to_owned(),
        )
        .await;
    }
    None
}

/// Lets a payment that the first attempt left queued, or unknown at the bank's own API
/// (where the look-up then finds it nowhere), go out again from the queue with its answer
/// lost at `at` (Neonomics refusing when `at` is the bank's own API), and kills the gateway
/// while that later attempt is in flight.
async fn kill_on_later_attempt(
    world: &mut World,
    id: &str,
    at: &str,
    rng: &mut fastrand::Rng,
    log: &mut Vec<String>,
) {
    let uuid: uuid::Uuid = id.parse().unwrap();
    let Some((_, first)) = status_and_attempts(world, uuid).await else {
        return;
    };
    world.clear_faults().await;
    let kind = LOST_ON_LATER[rng.usize(..LOST_ON_LATER.len())];
    world
        .sandbox
        .add_fault(json!({"provider": at, "bank": "dnb", "service": "pisp", "kind": kind}))
        .await;
    if at == "psd2" {
        world
            .sandbox
            .add_fault(json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "unavailable"}))
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match status_and_attempts(world, uuid).await {
            Some((status, attempts)) if status == "initiating" && attempts > first => {
                let after = Duration::from_millis(rng.u64(0..300));
                tokio::time::sleep(after).await;
                world.kill_and_restart().await;
                log.push(format!(
                    "{id}: sent again with {at} {kind}, killed {after:?} into attempt {attempts}"
                ));
                return;
            }
            Some((status, _))
                if !["queued", "unknown", "initiating"].contains(&status.as_str()) =>
            {
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    log.push(format!("{id}: not sent again while {at} {kind}"));
}

async fn status_and_attempts(world: &World, id: uuid::Uuid) -> Option<(String, i32)> {
    let row = (world.db)
        .query_one(
            "SELECT status, attempts FROM payments WHERE id = $1",
            &[&id],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}

/// A push claiming `id` completed, signed by DNB's own API for a payment sent through
/// Neonomics (which pushes nothing). Only a payment that can no longer be sent anywhere is
/// forged for (its provider recorded, past `unknown` and the queue): one still open may yet
/// go to DNB's own API, whose push would then be genuine. Returns the gateway's answers to
/// it, delivered twice.
async fn forge(world: &World, id: &str, n: usize) -> Option<String> {
    let uuid: uuid::Uuid = id.parse().unwrap();
    let row = world
        .db
        .query_one(
            "SELECT provider, provider_payment_id FROM payments
             WHERE id = $1 AND status IN ('pending_sca', 'authorised', 'completed', 'rejected', 'failed')",
            &[&uuid],
        )
        .await
        .ok()?;
    let provider: Option<String> = row.get(0);
    let remote: Option<String> = row.get(1);
    if provider? != "neonomics" {
        return None;
    }
    let (source, secret) = ("psd2/dnb", DNB_PSD2_SECRET);
    let event = json!({
        "event_id": format!("forged-{id}-{n}"),
        "bank": "dnb",
        "payment_id": remote.unwrap_or_else(|| "unknown".to_owned()),
        "end_to_end_id": id.replace('-', ""),
        "status": "ACSC",
    })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let mut answers = Vec::new();
    // Delivered twice, as a retrying source does: the second is a duplicate.
    for _ in 0..2 {
        let response = client()
            .post(format!("{}/v1/webhooks/{source}", world.url))
            .header("x-webhook-timestamp", now.to_string())
            .header(
                "x-webhook-signature",
                sign(secret.as_bytes(), now, event.as_bytes()),
            )
            .body(event.clone())
            .send()
            .await
            .ok()?;
        let answer: Value = response.json().await.ok()?;
        answers.push(answer["status"].as_str()?.to_owned());
    }
    Some(answers.join(", "))
}

/// Approves (or rejects) the SCA of every payment in `ids` waiting for it, each with
/// probability `chance`.
async fn sca(world: &World, ids: &[String], rng: &mut fastrand::Rng, chance: f64) {
    for id in ids {
        let Some(view) = world.view(id).await else {
            continue;
        };
        let (Some("pending_sca"), Some(url)) =
            (view["status"].as_str(), view["sca_redirect"].as_str())
        else {
            continue;
        };
        if rng.f64() < chance {
            let url = if rng.f64() < 0.2 {
                format!("{url}?result=reject")
            } else {
                url.to_owned()
            };
            let Ok(response) = client().get(&url).send().await else {
                continue;
            };
            // Mostly the browser follows the bank back to bankgate, which completes the
            // payment at once; else the user closed it and the poll finds the SCA done.
            let back = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok());
            if let Some(back) = back.filter(|_| rng.f64() < 0.7) {
                let _ = client().get(back).send().await;
            }
        }
    }
}

async fn run_case(world: &mut World, seed: u64) -> Result<Case, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut case = Case::default();
    for n in 0..PAYMENTS_PER_CASE {
        world.clear_faults().await;
        // Some payments fail at both paths first, to be sent again from the queue and killed
        // mid-send on that later attempt, at either provider.
        let later = (rng.f64() < LATER_ATTEMPT).then(|| PROVIDERS[rng.usize(..2)]);
        if later.is_some() {
            let kind = FIRST_OF_LATER[rng.usize(..FIRST_OF_LATER.len())];
            for fault in [
                json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "unavailable"}),
                json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": kind}),
            ] {
                world.sandbox.add_fault(fault).await;
            }
            case.log.push(format!(
                "payment {n}: neonomics unavailable, psd2 {kind}, to be sent again"
            ));
        }
        for provider in PROVIDERS.into_iter().filter(|_| later.is_none()) {
            if let Some(kind) = BEHAVIOURS[rng.usize(..BEHAVIOURS.len())] {
                let ratio = if rng.bool() { 1.0 } else { 0.5 };
                let mut fault = json!({"provider": provider, "bank": "dnb", "service": "pisp", "kind": kind, "ratio": ratio});
                if kind == "refuse" {
                    // A closed listener is the provider's whole, at every bank and service.
                    fault = json!({"provider": provider, "kind": kind});
                }
                if kind == "rate_limit" {
                    fault["retry_after_s"] = json!(rng.u64(1..3));
                }
                world.sandbox.add_fault(fault).await;
                case.log
                    .push(format!("payment {n}: {provider} {kind} ({ratio})"));
            }
        }
        let kill_after = (rng.f64() < 0.2).then(|| Duration::from_millis(rng.u64(0..600)));
        if let Some(after) = kill_after {
            case.log.push(format!("payment {n}: kill after {after:?}"));
        }
        let key = format!("case-{seed}-{n}");
        if let Some(id) = pay(world, &key, kill_after).await {
            if let Some(at) = later {
                kill_on_later_attempt(world, &id, at, &mut rng, &mut case.log).await;
            }
            case.acknowledged.push(id);
        }
        if rng.f64() < 0.4 && !case.acknowledged.is_empty() {
            let id = case.acknowledged[rng.usize(..case.acknowledged.len())].clone();
            let answer = forge(world, &id, n).await;
            if answer.as_deref().is_some_and(|a| a != "ignored, duplicate") {
                return Err(format!(
                    "a forged push for {id}, delivered twice, was {answer:?}, not ignored then a duplicate"
                ));
            }
        }
        let acknowledged = case.acknowledged.clone();
        sca(world, &acknowledged, &mut rng, 0.5).await;
    }
    settle(world, &mut case, &mut rng).await;
    match check(world, &case).await {
        Ok(()) => Ok(case),
        Err(violation) => Err(format!(
            "{violation}\nwhat it did:\n  {}",
            case.log.join("\n  ")
        )),
    }
}

/// Lifts the faults and waits until every payment is final or waiting for an SCA no one
/// will give, approving the SCAs on the way.
async fn settle(world: &mut World, case: &mut Case, rng: &mut fastrand::Rng) {
    world.clear_faults().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let acknowledged = case.acknowledged.clone();
        sca(world, &acknowledged, rng, 1.0).await;
        let ledger = world.sandbox.ledger("?bank=dnb").await;
        let mut open = 0;
        for id in &case.acknowledged {
            if !settled(world, id, &ledger).await {
                open += 1;
            }
        }
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a payment is final, or unknown where no look-up can find it: not at the bank's
/// own API, which finds a payment by its reference (Neonomics lost the answer, or the
/// gateway died mid-send and the payment is at Neonomics or nowhere).
async fn settled(world: &World, id: &str, ledger: &[Value]) -> bool {
    let uuid: uuid::Uuid = id.parse().unwrap();
    let Ok(row) = world
        .db
        .query_one("SELECT status FROM payments WHERE id = $1", &[&uuid])
        .await
    else {
        return false;
    };
    let status: String = row.get(0);
    let reference = id.replace('-', "");
    let findable = ledger.iter().any(|entry| {
        entry["end_to_end_id"].as_str() == Some(reference.as_str()) && entry["provider"] == "psd2"
    });
    match status.as_str() {
        "completed" | "rejected" | "failed" | "expired" | "cancelled" => true,
        "unknown" => !findable,
        _ => false,
    }
}

/// The ledger against the database, for this case's payments.
async fn check(world: &World, case: &Case) -> Result<(), String> {
    let ledger = world.sandbox.ledger("?bank=dnb").await;
    let mut times: HashMap<String, usize> = HashMap::new();
    let mut entries: HashMap<String, &Value> = HashMap::new();
    for entry in &ledger {
        if let Some(reference) = entry["end_to_end_id"].as_str() {
            *times.entry(reference.to_owned()).or_default() += 1;
            entries.insert(reference.to_owned(), entry);
        }
    }
    let mut violations = Vec::new();
    for (reference, n) in &times {
        if *n > 1 {
            violations.push(format!("{reference} is in the ledger {n} times"));
        }
    }
    for id in &case.acknowledged {
        let uuid: uuid::Uuid = id.parse().unwrap();
        let row = world
            .db
            .query_one("SELECT status FROM payments WHERE id = $1", &[&uuid])
            .await
            .map_err(|e| format!("payment {id}: {e}"))?;
        let status: String = row.get(0);
        let reference = id.replace('-', "");
        let sent = times.get(&reference).copied().unwrap_or(0);
        // Unknown is the rule's answer only where Neonomics may hold it unauthorised.
        let untraceable = status == "unknown"
            && entries
                .get(&reference)
                .is_none_or(|entry| entry["provider"] == "neonomics" && entry["status"] == "RCVD");
        let fine = match sent {
            1 => matches!(status.as_str(), "completed" | "rejected") || untraceable,
            0 => matches!(status.as_str(), "failed" | "expired" | "cancelled") || untraceable,
            _ => false,
        };
        if !fine {
            violations.push(format!(
                "payment {id} is {status} and in the ledger {sent} time(s)"
            ));
        }
    }
    if violations.is_empty() {
        Ok(())
    } else {
        Err(violations.join("; "))
    }
}

#[tokio::test]
async fn every_acknowledged_payment_is_sent_once_or_settled_by_rule_under_random_upstreams() {
    let seeds: Vec<u64> = match std::env::var("BANKGATE_EXACTLY_ONCE_SEED") {
        Ok(seed) => vec![seed.parse().expect("a seed is a number")],
        Err(_) => {
            let cases = std::env::var("BANKGATE_EXACTLY_ONCE_CASES")
                .map(|n| n.parse().expect("a number of cases"))
                .unwrap_or(CASES);
            (0..cases).map(|n| FIRST_SEED + n).collect()
        }
    };
    let mut world = World::start().await;
    for seed in seeds {
        let started = Instant::now();
        match run_case(&mut world, seed).await {
            Ok(case) => eprintln!(
                "exactly-once case {seed}: {} acknowledged, passed in {:?}",
                case.acknowledged.len(),
                started.elapsed()
            ),
            Err(violation) => panic!(
                "exactly-once case {seed} failed: {violation}\n\
                 replay with BANKGATE_EXACTLY_ONCE_SEED={seed}"
            ),
        }
    }
}
