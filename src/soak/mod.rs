//! `bankgate soak`: the chaos soak. Under steady mixed traffic it flips sandbox faults for
//! every runbook cause across banks and providers, kills the gateway with SIGKILL at random
//! moments and restarts it, and stops PostgreSQL for a few seconds mid-run; then it settles
//! and checks the promises:
//!
//! - no 5xx for a balance read where a cached balance existed;
//! - every payment acknowledged with a 2xx is in the sandbox ledger exactly once, or still
//!   queued, or expired or failed by rule (and then not in the ledger at all);
//! - no gateway process grew in memory beyond a bound after warming up;
//! - the diagnosis named every injected cause at least once.
//!
//! The gateway runs as a separate `bankgate serve` process so that it can be killed; the
//! sandbox and the traffic run in this one, against it over real HTTP.

mod chaos;
mod gateway;
mod report;
mod traffic;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bankgate_actors::BankId;
use secrecy::ExposeSecret as _;
use tokio::time::Instant;

use crate::ops::diagnosis::Incident;
use crate::payments::webhook_targets;
use crate::postgres::PrivateCluster;
use crate::settings::Settings;
use bankgate_sandbox::faults::FaultSpec;
use bankgate_sandbox::{LedgerFilter, Sandbox, SandboxClient, SandboxOptions};
use chaos::Injection;
use gateway::{GatewayProcess, Launch};
pub use report::Report;
use traffic::Traffic;

/// How a soak is run.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    /// How long traffic and faults run.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long each injected fault lasts before the next one.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    pub fault_every: Duration,
    /// How many times the gateway is killed with SIGKILL and restarted.
    #[arg(long, default_value_t = 5)]
    pub kills: u32,
    /// Users reading balances, each connected to every bank.
    #[arg(long, default_value_t = 24)]
    pub users: u32,
    /// Concurrent payers (each initiates one payment at a time, retrying until answered).
    #[arg(long, default_value_t = 2)]
    pub payers: u32,
    /// Allowed growth of a gateway process's resident memory after warm-up, in MiB.
    #[arg(long, default_value_t = 64)]
    pub rss_growth_limit_mib: u64,
    /// How long payments may take to settle once the faults are cleared.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Seed of the fault and kill schedule (random when omitted; printed either way).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Writes the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

/// The diagnosis is polled this often.
const DIAGNOSIS_EVERY: Duration = Duration::from_millis(500);
/// A cause named this soon after its faults were lifted still counts for it.
const NAMING_GRACE: Duration = Duration::from_secs(3);

/// Runs the soak and returns its report; the caller decides what a failed check means.
pub async fn run(
    settings: Settings,
    config: Option<PathBuf>,
    args: SoakArgs,
) -> anyhow::Result<Report> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    println!("soak: {:?} with seed {seed}", args.duration);

    let (database_url, mut cluster) = match &settings.database.url {
        Some(url) => (url.expose_secret().to_owned(), None),
        None => {
            let cluster = PrivateCluster::start_temporary()
                .await
                .context("failed to start PostgreSQL")?;
            let url = cluster.ensure_database("bankgate").await?;
            (url, Some(cluster))
        }
    };

    let mut options = SandboxOptions::from_settings(&settings.sandbox);
    options.port = 0;
    // Throttling is a fault the soak injects, not the sandbox's everyday limit.
    options.rate_limit_per_s = 100_000;
    let sandbox = Sandbox::start(options).await?;
    let psd2_urls: Vec<(BankId, String)> = BankId::ALL
        .iter()
        .map(|&bank| (bank, sandbox.psd2_url(bank)))
        .collect();
    let (client_port, ops_port) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client_port}");
    let ops_url = format!("http://127.0.0.1:{ops_port}");
    // Kept after the run: it is where a broken promise is explained.
    let log = std::env::temp_dir().join(format!("bankgate-soak-{seed}.log"));
    let gateway = Arc::new(GatewayProcess::new(Launch {
        exe: std::env::current_exe()?,
        config,
        env: gateway::soak_env(
            &database_url,
            client_port,
            ops_port,
            &sandbox.neonomics_url(),
            &psd2_urls,
        ),
        client_url: client_url.clone(),
        log: log.clone(),
    }));
    gateway.start().await?;
    fault_control(sandbox.control_url())
        .register_webhooks(webhook_targets(&settings.webhooks, &client_url))
        .await
        .context("failed to register the webhooks")?;

    let ttl = args.duration + args.settle + Duration::from_secs(3600);
    let traffic = Arc::new(
        Traffic::connect(
            client_url.clone(),
            &settings.auth.token_secret,
            args.users,
            ttl,
        )
        .await
        .context("failed to connect the soak's users")?,
    );
    println!(
        "soak: {} users connected to {} banks; gateway log at {}",
        args.users,
        BankId::ALL.len(),
        log.display()
    );

    let periods = args
        .duration
        .as_secs_f64()
        .div_euclid(args.fault_every.as_secs_f64().max(1.0))
        .max(1.0) as usize;
    let mut injections = chaos::schedule(&mut rng, periods);
    let plan = chaos::disruptions(&mut rng, args.duration, args.kills, cluster.is_some());

    let started = Instant::now();
    let stop = started + args.duration;
    let give_up = stop + args.settle;
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..traffic.users.len() {
        let traffic = traffic.clone();
        tasks.spawn(async move { traffic.read_balances(user, stop).await });
    }
    for _ in 0..args.payers {
        let traffic = traffic.clone();
        tasks.spawn(async move { traffic.pay(stop, give_up).await });
    }
    {
        let traffic = traffic.clone();
        tasks.spawn(async move {
            while Instant::now() < stop {
                traffic.follow_payments().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    {
        let gateway = gateway.clone();
        tasks.spawn(async move {
            while Instant::now() < stop {
                gateway.sample().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let killer = {
        let gateway = gateway.clone();
        let kills = plan.kills.clone();
        tokio::spawn(async move {
            let mut done = 0u32;
            for at in kills {
                tokio::time::sleep_until(started + at).await;
                gateway
                    .crash_and_restart()
                    .await
                    .context("failed to restart the gateway after a kill")?;
                done += 1;
                println!(
                    "soak: {:>5.1} s  gateway killed (SIGKILL) and restarted",
                    at.as_secs_f64()
                );
            }
            anyhow::Ok(done)
        })
    };
    let database = {
        let traffic = traffic.clone();
        let outage = plan.database_outage;
        let mut cluster = cluster.take();
        tokio::spawn(async move {
            let mut restarts = 0u32;
            if let (Some((at, away)), Some(cluster)) = (outage, cluster.as_mut()) {
                tokio::time::sleep_until(started + at).await;
                cluster.pause().await;
                traffic.database_stopped();
                println!("soak: {:>5.1} s  PostgreSQL stopped", at.as_secs_f64());
                tokio::time::sleep(away).await;
                // The outage as the report counts it ends when the restart begins.
                traffic.database_started();
                cluster
                    .resume()
                    .await
                    .context("PostgreSQL did not come back")?;
                restarts += 1;
                println!(
                    "soak: {:>5.1} s  PostgreSQL started again",
                    (at + away).as_secs_f64()
                );
            }
            anyhow::Ok((restarts, cluster))
        })
    };

    let faults = fault_control(sandbox.control_url());
    let mut named = BTreeSet::new();
    for (index, injection) in injections.iter_mut().enumerate() {
        let begins = started + args.fault_every * index as u32;
        tokio::time::sleep_until(begins).await;
        replace_faults(&faults, &injection.faults).await?;
        injection.at_s = begins.duration_since(started).as_secs_f64();
        println!(
            "soak: {:>5.1} s  fault: {}",
            injection.at_s,
            describe(injection)
        );
        let ends = (begins + args.fault_every).min(stop);
        watch_diagnosis(
            &ops_url,
            &settings,
            ends,
            NAMING_GRACE,
            injection,
            &mut named,
        )
        .await;
    }
    replace_faults(&faults, &[]).await?;

    let kills = killer.await??;
    let (database_restarts, cluster) = database.await??;
    while tasks.join_next().await.is_some() {}
    println!("soak: traffic stopped; faults cleared; settling payments");
    let settled_by = Instant::now() + args.settle;
    loop {
        let open = traffic.follow_payments().await;
        if open == 0 || Instant::now() > settled_by {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let ledger = faults.ledger(&LedgerFilter::default()).await?;
    let lives = gateway.finish().await;
    sandbox.shutdown().await;
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }

    let report = report::Report::build(report::Inputs {
        seed,
        duration: args.duration,
        users: args.users,
        reads: traffic.reads(),
        payments: traffic.payments(),
        answers: traffic.answers(),
        ledger,
        injections,
        named,
        kills_planned: args.kills,
        kills,
        database_restarts,
        lives,
        rss_growth_limit_kib: args.rss_growth_limit_mib * 1024,
    });
    report.print();
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("failed to write {}", path.display()))?;
    }
    Ok(report)
}

/// Polls `/ops/diagnosis` until `ends` (plus `grace` if the cause was not named yet), marking
/// the injection named when the diagnosis says its cause.
async fn watch_diagnosis(
    ops_url: &str,
    settings: &Settings,
    ends: Instant,
    grace: Duration,
    injection: &mut Injection,
    named: &mut BTreeSet<Incident>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("a plain HTTP client");
    let admin = settings
        .ops
        .admin_tokens
        .first()
        .map(|t| t.token.expose_secret().to_owned())
        .unwrap_or_default();
    loop {
        let now = Instant::now();
        if now >= ends + grace || (now >= ends && injection.named) {
            return;
        }
        let answer = http
            .get(format!("{ops_url}/ops/diagnosis"))
            .bearer_auth(&admin)
            .send()
            .await;
        if let Ok(response) = answer
            && let Ok(body) = response.json::<serde_json::Value>().await
            && let Ok(incident) = serde_json::from_value::<Incident>(body["incident"].clone())
        {
            named.insert(incident);
            if injection.said.last() != Some(&incident) {
                injection.said.push(incident);
            }
            if incident == injection.cause {
                injection.named = true;
            }
        }
        tokio::time::sleep(DIAGNOSIS_EVERY).await;
    }
}

fn describe(injection: &Injection) -> String {
    let mut place = Vec::new();
    if let Some(bank) = injection.bank {
        place.push(bank.as_str());
    }
    if let Some(provider) = injection.provider {
        place.push(provider.as_str());
    }
    let kinds: Vec<&str> = injection.faults.iter().map(|f| f.kind.as_str()).collect();
    format!(
        "{:?} at {} ({})",
        injection.cause,
        if place.is_empty() {
            "all".to_owned()
        } else {
            place.join("/")
        },
        kinds.join(", ")
    )
}

/// The sandbox's control client, as the soak uses it.
fn fault_control(url: String) -> SandboxClient {
    // A fault every 10 s would reuse a connection just as the sandbox closes it for idling
    // 10 s (its header-read timeout), and be reset: keep idle connections shorter.
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    SandboxClient::with_http(url, http)
}

/// Lifts every fault and injects `faults`.
async fn replace_faults(control: &SandboxClient, faults: &[FaultSpec]) -> anyhow::Result<()> {
    control.clear_faults().await?;
    for fault in faults {
        control
            .add_fault(fault)
            .await
            .with_context(|| format!("the sandbox refused the fault {fault:?}"))?;
    }
    Ok(())
}

/// A loopback port free at the time of asking; the gateway binds it at every start.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
