//! `cargo bench --bench gateway`: the gateway measured against peers, side by side in one run.
//!
//! 1. Cached balance reads through the full path (token, session, fresh cache) against a bare
//!    warp hello-world and the gateway's own `/healthz` (its middleware alone): requests/s,
//!    p50 and p99 at 64 connections, driven by `wrk` (Debian's `wrk`); each is warmed up,
//!    then the three take turns for five rounds. Each reports its median round; the cached
//!    read's share is the median of the rounds' shares, each against its round's hello-world.
//! 2. A live balance read through the gateway, straight to the sandbox's PSD2 API, and through
//!    HAProxy (Debian's `haproxy`, with health checks and retries) in front of the sandbox,
//!    at a fixed moderate rate: the latency each adds. The three take turns for five rounds;
//!    each path's added p50 and p99 are the medians of the rounds' differences from the
//!    direct call of the same round.
//! 3. Fail-fast: DNB hanging (sandbox `timeout` fault). DNB's p99 once its breaker is open
//!    (served stale) and Nordea's p99 beside it, against the same reads at a gateway whose
//!    banks are healthy (the hanging DNB is at a sandbox of its own). The two take turns for
//!    five rounds; each reports its median round by p99, and Nordea's change is the median of
//!    the rounds' changes.
//! 4. Sessions: the memory and time to create 100 000 idle user sessions.
//! 5. Slow upstream: 10 000 concurrent balance reads while both providers answer DNB after
//!    2 s: errors, how the reads were served, upstream calls, RSS at its peak (`slow.rs`).
//! 6. Payments: initiations per second through the durable path (PostgreSQL, upstream,
//!    events) at 16 connections, p50 and p99.
//!
//! It starts its own PostgreSQL, sandbox, gateways and HAProxy on loopback and stops them at
//! the end. Figures are printed as a table and written to `target/bench/gateway.json`.
//!
//! Each server runs on a runtime of its own, built as the `bankgate` binary builds its one:
//! like separate processes (and like HAProxy, which is one), the gateways, the sandbox, the
//! hello-world and the load generator never share worker threads.

#![recursion_limit = "256"]

mod haproxy;
mod load;
mod slow;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bankgate::gateway::Gateway;
use bankgate::postgres::PrivateCluster;
use bankgate::settings::Settings;
use bankgate_actors::{BankId, ProviderId};
use bankgate_sandbox::faults::{FaultKind, FaultSpec};
use bankgate_sandbox::{Sandbox, SandboxClient, SandboxOptions};
use serde_json::{Value, json};
use tokio::runtime::{Handle, Runtime};
use warp::Filter;

use haproxy::Haproxy;
use load::{Figures, Wrk, fixed_rate, rss_bytes, success};

/// The allocator the `bankgate` binary ships with: the gateways measured here run in this
/// process, so without it they would be measured on glibc's malloc, which the binary does not use.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNECTIONS: u32 = 64;
/// How long wrk drives the payments case.
const WRK_SECONDS: u32 = 10;
/// Cases 1, 2 and 3 run each server or path this many times, in turn, and report each one's
/// median round: a slow moment of the machine then cannot land on one alone, and with five
/// rounds not even two of them can (three rounds let the stalls of a noisy host decide the
/// live p99 more than once).
const ROUNDS: usize = 5;
const ROUND_SECONDS: u32 = 5;
const WARM_UP_SECONDS: u32 = 2;
const LIVE_RATE_PER_S: u64 = 100;
const LIVE_SECONDS: u64 = 10;
const SESSIONS: usize = 100_000;
const PAYMENT_CONNECTIONS: u32 = 16;

/// Request headers wrk sends.
type Headers = &'static [(&'static str, &'static str)];

fn settings(overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = [
        ("BANKGATE__HTTP__CLIENT_ADDR", "127.0.0.1:0"),
        ("BANKGATE__HTTP__OPS_ADDR", "127.0.0.1:0"),
        ("BANKGATE__SANDBOX__PORT", "0"),
        ("BANKGATE__SANDBOX__RATE_LIMIT_PER_S", "100000"),
        ("BANKGATE__SESSIONS__USER_RATE_PER_S", "1000000"),
        ("BANKGATE__SESSIONS__USER_BURST", "1000000"),
        ("BANKGATE__PAYMENTS__PER_USER_LIMIT", "100000000"),
        ("BANKGATE__PAYMENTS__PER_IP_LIMIT", "100000000"),
        (
            "BANKGATE__PROVIDERS__NEONOMICS__LIMITS__RATE_LIMIT_PER_S",
            "100000",
        ),
        (
            "BANKGATE__PROVIDERS__PSD2__LIMITS__RATE_LIMIT_PER_S",
            "100000",
        ),
        ("BANKGATE__TELEMETRY__LOG_FILTER", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::load(None, &env).expect("bench settings are valid")
}

/// A gateway's settings pointed at the sandbox.
fn against(settings: &Settings, sandbox: &Sandbox) -> Settings {
    let mut settings = settings.clone();
    settings.providers.neonomics.base_url = sandbox.neonomics_url();
    for bank in BankId::ALL {
        settings
            .providers
            .psd2
            .bank_urls
            .insert(bank, sandbox.psd2_url(bank));
    }
    settings
}

/// The runtimes the servers run on, one each; shut down at the end.
#[derive(Default)]
struct Runtimes(Vec<Runtime>);

impl Runtimes {
    /// Starts a server on a runtime of its own; the handle runs its shutdown there later.
    async fn start<T: Send + 'static>(
        &mut self,
        start: impl Future<Output = T> + Send + 'static,
    ) -> (Handle, T) {
        let runtime = Runtime::new().expect("runtime");
        let handle = runtime.handle().clone();
        let server = handle.spawn(start).await.expect("server starts");
        self.0.push(runtime);
        (handle, server)
    }

    async fn start_sandbox(&mut self, settings: &Settings) -> (Handle, Sandbox) {
        let options = SandboxOptions::from_settings(&settings.sandbox);
        self.start(async move { Sandbox::start(options).await.expect("sandbox") })
            .await
    }

    async fn start_gateway(
        &mut self,
        settings: &Settings,
        sandbox: &Sandbox,
        database: &str,
    ) -> (Handle, Gateway) {
        let settings = against(settings, sandbox);
        let database = database.to_owned();
        self.start(async move {
            let pool =
                bankgate::postgres::pool(&database, 16, Duration::from_secs(5)).expect("pool");
            bankgate::postgres::migrate(&pool)
                .await
                .expect("migrations");
            Gateway::start(&settings, pool).await.expect("gateway")
        })
        .await
    }

    fn stop(self) {
        for runtime in self.0 {
            runtime.shutdown_background();
        }
    }
}

/// Injects a fault at the sandbox and returns its id.
async fn add_fault(sandbox: &Sandbox, fault: FaultSpec) -> u64 {
    let control = SandboxClient::new(sandbox.control_url());
    control.add_fault(&fault).await.expect("fault").id
}

/// The median of an odd number of figures.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The round whose `key` is the median of the rounds'.
fn median_round(mut runs: Vec<Figures>, key: fn(&Figures) -> f64) -> Figures {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Runs wrk on a blocking thread.
async fn wrk(run: Wrk<'static>) -> Figures {
    tokio::task::spawn_blocking(move || run.run())
        .await
        .expect("wrk")
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// The ids of the bench user's connections at a gateway, by bank.
async fn connection_ids(
    http: &reqwest::Client,
    gateway: &Gateway,
    token: &str,
) -> HashMap<String, String> {
    let body: Value = http
        .get(format!("{}/v1/connections", gateway.client_url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("connections")
        .json()
        .await
        .expect("connections body");
    body["connections"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            (
                c["bank"].as_str().expect("bank").to_owned(),
                c["id"].as_str().expect("id").to_owned(),
            )
        })
        .collect()
}

/// Raises this process's open-file limit to its hard limit: case 5 holds 10 000 client
/// connections in the gateway, and as many in wrk, which inherits the limit.
fn raise_open_files() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    hard
}

#[tokio::main]
async fn main() {
    let open_files = raise_open_files();
    let needed = u64::from(slow::CONNECTIONS) + 1_000;
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
    // Case 1 reads balances fresh in the cache for its whole run.
    let cached_settings = settings(&[("BANKGATE__BALANCES__FRESH_FOR", "1h")]);
    // The live gateways read every balance upstream through the banks' PSD2 APIs, and give
    // up on a hanging bank after a second (the fail-fast case).
    let live = [
        ("BANKGATE__BALANCES__FRESH_FOR", "0s"),
        ("BANKGATE__BANKS__PROVIDER_ORDER", "[\"psd2\"]"),
        ("BANKGATE__PROVIDERS__PSD2__TIMEOUT", "1s"),
        ("BANKGATE__PROVIDERS__PSD2__LIMITS__FIRST_BACKOFF", "50ms"),
    ];
    let live_settings = settings(&live);
    // The fail-fast case measures DNB with its breaker open: it stays open for the whole case
    // instead of letting a probe through after a minute.
    let hanging_settings =
        settings(&[live.as_slice(), &[("BANKGATE__BREAKER__OPEN_FOR", "10m")]].concat());
    let cluster = PrivateCluster::start_temporary()
        .await
        .expect("PostgreSQL starts");
    let cached_db = cluster
        .ensure_database("bench_cached")
        .await
        .expect("database");
    let live_db = cluster
        .ensure_database("bench_live")
        .await
        .expect("database");
    let hanging_db = cluster
        .ensure_database("bench_hanging")
        .await
        .expect("database");
    let slow_db = cluster
        .ensure_database("bench_slow")
        .await
        .expect("database");
    let mut runtimes = Runtimes::default();
    let (sandbox_runtime, sandbox) = runtimes.start_sandbox(&cached_settings).await;
    let (cached_runtime, cached) = runtimes
        .start_gateway(&cached_settings, &sandbox, &cached_db)
        .await;
    let (live_runtime, live) = runtimes
        .start_gateway(&live_settings, &sandbox, &live_db)
        .await;
    // The fail-fast case's DNB hangs at a sandbox of its own, so that its rounds can take turns
    // with the healthy ones.
    let (hanging_sandbox_runtime, hanging_sandbox) = runtimes.start_sandbox(&cached_settings).await;
    let (hanging_runtime, hanging) = runtimes
        .start_gateway(&hanging_settings, &hanging_sandbox, &hanging_db)
        .await;
    // Balances fresh for a second only, so that every read of case 5 asks the slow bank.
    let slow_settings = settings(&[
        ("BANKGATE__BALANCES__FRESH_FOR", "1s"),
        ("BANKGATE__BALANCES__FRESH_FOR_WHEN_RATE_LIMITED", "1s"),
    ]);
    let (slow_runtime, slow_gateway) = runtimes
        .start_gateway(&slow_settings, &sandbox, &slow_db)
        .await;

    let secret = cached_settings.auth.token_secret.clone();
    let token = bankgate::token::mint(
        &secret,
        "bench-user",
        "bench-session",
        Duration::from_secs(3600),
    )
    .expect("token");
    for gateway in [&cached, &live, &hanging] {
        for bank in [BankId::Dnb, BankId::Nordea] {
            bankgate::browser::connect(
                &gateway.client_url(),
                &token,
                bank,
                "https://drop.example/done",
            )
            .await
            .expect("connect");
        }
    }
    let http = reqwest::Client::new();
    let bearer = leak(format!("Bearer {token}"));
    let mut all: Vec<Figures> = Vec::new();

    // 1. Cached reads against a bare warp hello-world, served the same way as bankgate's
    //    listeners.
    let (_, hello_url) = runtimes
        .start(async {
            let hello = warp::path!("hello")
                .map(|| "hello")
                .recover(|_| async { Ok::<_, Infallible>("") });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = leak(format!(
                "http://{}/hello",
                listener.local_addr().expect("addr")
            ));
            let options = bankgate_sandbox::http::ServeOptions {
                header_read_timeout: Duration::from_secs(10),
                drain: Duration::ZERO,
            };
            tokio::spawn(bankgate_sandbox::http::serve(
                listener,
                hello,
                options,
                std::future::pending(),
            ));
            url
        })
        .await;
    let balances_url = leak(format!("{}/v1/balances", cached.client_url()));
    let warm = http
        .get(balances_url)
        .bearer_auth(&token)
        .header("x-psu-ip-address", "192.0.2.1")
        .send()
        .await
        .expect("warm");
    assert!(
        warm.status().is_success(),
        "the cached case starts from a served balance"
    );
    let health_url = leak(format!("{}/healthz", cached.client_url()));
    let cached_headers: Headers = Box::leak(Box::new([
        ("authorization", bearer),
        ("x-psu-ip-address", "192.0.2.1"),
    ]));
    let servers: [(&str, &str, Headers); 3] = [
        ("bare warp hello-world", hello_url, &[]),
        ("gateway /healthz (middleware only)", health_url, &[]),
        ("cached balances (full path)", balances_url, cached_headers),
    ];
    let load = |case, url, headers, seconds| {
        wrk(Wrk {
            case,
            url,
            connections: CONNECTIONS,
            seconds,
            headers,
            script: None,
            timeout: Duration::from_secs(2),
        })
    };
    // A first, unmeasured run of each server: the first load of a fresh server (its
    // connections, the allocator's pages, the caches) is not what the rounds compare.
    for (case, url, headers) in servers {
        load(case, url, headers, WARM_UP_SECONDS).await;
    }
    let mut rounds: [Vec<Figures>; 3] = Default::default();
    for round in 1..=ROUNDS {
        for ((case, url, headers), runs) in servers.iter().zip(&mut rounds) {
            let figures = load(case, url, headers, ROUND_SECONDS).await;
            eprintln!("round {round}: {case}: {:.0} req/s", figures.requests_per_s);
            runs.push(figures);
        }
    }
    let round_ratios: Vec<f64> = rounds[2]
        .iter()
        .zip(&rounds[0])
        .map(|(cached, hello)| cached.requests_per_s / hello.requests_per_s)
        .collect();
    let rounds_rps: Vec<Vec<f64>> = rounds
        .iter()
        .map(|runs| runs.iter().map(|f| f.requests_per_s).collect())
        .collect();
    all.extend(rounds.map(|runs| median_round(runs, |f| f.requests_per_s)));

    // 2. One DNB account read over the banks' PSD2 API: straight, through HAProxy, through the
    //    gateway.
    let (db_client, connection) = tokio_postgres::connect(&live_db, tokio_postgres::NoTls)
        .await
        .expect("db");
    tokio::spawn(connection);
    let row = db_client
        .query_one(
            "SELECT ca.account_id, pc.external_id FROM connections c
             JOIN connection_accounts ca ON ca.connection_id = c.id AND ca.provider = 'psd2'
             JOIN provider_consents pc ON pc.consent_id = c.consent_id AND pc.provider = 'psd2'
             WHERE c.bank = 'dnb' LIMIT 1",
            &[],
        )
        .await
        .expect("a DNB connection");
    let (account_id, consent_id): (String, String) = (row.get(0), row.get(1));
    let live_at = (
        live.client_url(),
        connection_ids(&http, &live, &token).await,
    );
    let direct_url = format!(
        "{}/accounts/{account_id}/balances",
        sandbox.psd2_url(BankId::Dnb)
    );
    let proxy = Haproxy::start(sandbox.psd2_addr()).await;
    let proxied_url = direct_url.replace(&sandbox.psd2_addr().to_string(), &proxy.addr.to_string());
    let psd2_read = |url: &str| {
        http.get(url)
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
            .header("consent-id", &consent_id)
            .header("psu-ip-address", "192.0.2.1")
    };
    // A read of the bench user's account at `bank` through a gateway, given as its client URL
    // and the user's connection ids there, in the session of `token`.
    let read_in = |token: &str, (url, ids): &(String, HashMap<String, String>), bank: &str| {
        http.get(format!("{url}/v1/accounts/{}/balances", ids[bank]))
            .bearer_auth(token)
            .header("x-psu-ip-address", "192.0.2.1")
    };
    let account_read =
        |at: &(String, HashMap<String, String>), bank: &str| read_in(&token, at, bank);
    // Warm every path's connections first.
    for _ in 0..20 {
        let _ = psd2_read(&direct_url).send().await;
        let _ = psd2_read(&proxied_url).send().await;
        let _ = account_read(&live_at, "dnb").send().await;
    }
    // The three take turns, like case 1, so that a noisy moment of the machine cannot land on
    // one of them alone; each reports its median round by p99.
    let live_paths: [(&str, &dyn Fn() -> reqwest::RequestBuilder); 3] = [
        ("live read, direct to the sandbox", &|| {
            psd2_read(&direct_url)
        }),
        ("live read, through HAProxy", &|| psd2_read(&proxied_url)),
        ("live read, through the gateway", &|| {
            account_read(&live_at, "dnb")
        }),
    ];
    let mut live_rounds: [Vec<Figures>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for ((case, request), runs) in live_paths.iter().zip(&mut live_rounds) {
            runs.push(fixed_rate(case, LIVE_RATE_PER_S, LIVE_SECONDS, request, success).await);
        }
    }
    // Each path is compared with the direct call of its own round, and the comparisons'
    // median reported: a stall of the machine in one round then moves one comparison, not a
    // path's median against another path's.
    let added_in_round = |n: usize, key: fn(&Figures) -> f64| {
        let direct = key(&live_rounds[0][n]);
        (
            key(&live_rounds[2][n]) - direct,
            key(&live_rounds[1][n]) - direct,
        )
    };
    let added_by_round: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|n| added_in_round(n, |f| f.p99_ms))
        .collect();
    let added_p50_by_round: Vec<(f64, f64)> = (0..ROUNDS)
        .map(|n| added_in_round(n, |f| f.p50_ms))
        .collect();
    let gateway_p50 = median(added_p50_by_round.iter().map(|a| a.0).collect());
    let proxy_p50 = median(added_p50_by_round.iter().map(|a| a.1).collect());
    let gateway_p99 = median(added_by_round.iter().map(|a| a.0).collect());
    let proxy_p99 = median(added_by_round.iter().map(|a| a.1).collect());
    all.extend(live_rounds.map(|runs| median_round(runs, |f| f.p99_ms)));

    // 3. Fail-fast: DNB and Nordea read side by side at the live gateway, whose banks are
    //    healthy, and at the hanging gateway, whose sandbox holds every DNB read. The two take
    //    turns for five rounds, like cases 1 and 2; Nordea's change is the median of the
    //    rounds' changes, each against the healthy run of its round.
    let hanging_at = (
        hanging.client_url(),
        connection_ids(&http, &hanging, &token).await,
    );
    // DNB's last-known balance, to be served stale once the bank hangs (and Nordea's
    // connection warmed).
    for bank in ["dnb", "nordea"] {
        let read = account_read(&hanging_at, bank).send().await.expect("read");
        assert!(read.status().is_success(), "{bank} reads live at first");
    }
    add_fault(
        &hanging_sandbox,
        FaultSpec::new(ProviderId::Psd2, FaultKind::Timeout).with_bank(BankId::Dnb),
    )
    .await;
    // Three failed reads open DNB's breaker; from then on DNB is served stale at once. They
    // come from three sessions, since one session's concurrent reads are coalesced into one.
    let trips: Vec<_> = (0..3)
        .map(|n| {
            let token = bankgate::token::mint(
                &secret,
                "bench-user",
                &format!("trip-{n}"),
                Duration::from_secs(600),
            )
            .expect("token");
            read_in(&token, &hanging_at, "dnb").send()
        })
        .collect();
    futures_util::future::join_all(trips).await;
    let half = LIVE_RATE_PER_S / 2;
    let side_by_side = |at, dnb_case, nordea_case| async move {
        tokio::join!(
            fixed_rate(
                dnb_case,
                half,
                LIVE_SECONDS,
                || account_read(at, "dnb"),
                success
            ),
            fixed_rate(
                nordea_case,
                half,
                LIVE_SECONDS,
                || account_read(at, "nordea"),
                success
            ),
        )
    };
    // DNB healthy, Nordea beside it; DNB hanging, Nordea beside it.
    let mut fail_fast: [Vec<Figures>; 4] = Default::default();
    for _ in 0..ROUNDS {
        let (dnb, nordea) =
            side_by_side(&live_at, "DNB read, healthy", "Nordea read, DNB healthy").await;
        let (dnb_down, nordea_beside) = side_by_side(
            &hanging_at,
            "DNB read, DNB hanging (breaker open)",
            "Nordea read, DNB hanging",
        )
        .await;
        for (runs, figures) in fail_fast
            .iter_mut()
            .zip([dnb, nordea, dnb_down, nordea_beside])
        {
            runs.push(figures);
        }
    }
    let stale: Value = account_read(&hanging_at, "dnb")
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("body");
    assert_eq!(stale["stale"], true, "DNB is served stale: {stale}");
    let nordea_changes: Vec<f64> = fail_fast[3]
        .iter()
        .zip(&fail_fast[1])
        .map(|(beside, healthy)| beside.p99_ms / healthy.p99_ms - 1.0)
        .collect();
    let fail_fast_p99s = fail_fast
        .each_ref()
        .map(|runs| runs.iter().map(|f| f.p99_ms).collect::<Vec<f64>>());
    let [dnb_before, nordea_before, dnb_down, nordea_beside] =
        fail_fast.map(|runs| median_round(runs, |f| f.p99_ms));
    all.extend([
        dnb_before,
        nordea_before.clone(),
        dnb_down.clone(),
        nordea_beside.clone(),
    ]);

    // 4. Sessions: 100 000 users, each with a session of their own, then idle.
    let rss_before = rss_bytes();
    let sessions_before = cached.actors().sessions.active();
    let started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS as usize));
    let mut tasks = Vec::with_capacity(SESSIONS);
    for n in 0..SESSIONS {
        let token = bankgate::token::mint(
            &secret,
            &format!("idle-{n}"),
            "s",
            Duration::from_secs(3600),
        )
        .expect("token");
        let request = http
            .get(balances_url)
            .bearer_auth(token)
            .header("x-psu-ip-address", "192.0.2.1");
        let permit = gate.clone().acquire_owned().await.expect("semaphore");
        tasks.push(tokio::spawn(async move {
            let ok = request.send().await.is_ok_and(|r| r.status().is_success());
            drop(permit);
            ok
        }));
    }
    let mut session_errors = 0;
    for task in tasks {
        session_errors += u64::from(!task.await.expect("session task"));
    }
    let creation = started.elapsed();
    let created = cached.actors().sessions.active() - sessions_before;
    let growth = rss_bytes().saturating_sub(rss_before);
    let per_session = growth as f64 / created.max(1) as f64;

    // 5. Slow upstream.
    let slow = slow::run(&slow_gateway, &sandbox, &secret).await;
    all.push(slow.figures.clone());

    // 6. Payments through the durable path, each with its own idempotency key.
    let cached_ids = connection_ids(&http, &cached, &token).await;
    let body = json!({
        "bank": "dnb",
        "debtor_account_id": cached_ids["dnb"],
        "amount": "150.00",
        "currency": "NOK",
        "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
        "kind": "remittance",
    })
    .to_string();
    let script = leak(format!(
        r#"local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local counter = 0
request = function()
  counter = counter + 1
  local headers = {{}}
  headers["Authorization"] = "{bearer}"
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = "bench-" .. id .. "-" .. counter
  headers["x-psu-ip-address"] = "192.0.2.1"
  return wrk.format("POST", "/v1/payments", headers, {body:?})
end
"#
    ));
    let payments_url = leak(format!("{}/v1/payments", cached.client_url()));
    let payments = wrk(Wrk {
        case: "payment initiations (durable path)",
        url: payments_url,
        connections: PAYMENT_CONNECTIONS,
        seconds: WRK_SECONDS,
        headers: &[],
        script: Some(script),
        timeout: Duration::from_secs(2),
    })
    .await;
    all.push(payments.clone());

    println!();
    println!(
        "{:<40} {:>12} {:>10} {:>10} {:>8}",
        "case", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for f in &all {
        println!(
            "{:<40} {:>12.0} {:>10.3} {:>10.3} {:>8}",
            f.case, f.requests_per_s, f.p50_ms, f.p99_ms, f.errors
        );
    }
    let ratio = median(round_ratios.clone());
    let nordea_change = median(nordea_changes.clone());
    println!();
    let percents: Vec<String> = round_ratios
        .iter()
        .map(|r| format!("{:.0} %", r * 100.0))
        .collect();
    println!(
        "1. cached reads at {:.0} % of the hello-world's throughput, median of {ROUNDS} rounds of {ROUND_SECONDS} s, each against the hello-world of its round (target ≥ 60 %); round by round {}",
        ratio * 100.0,
        percents.join(", ")
    );
    let added_rounds: Vec<String> = added_by_round
        .iter()
        .map(|(gateway, proxy)| format!("{gateway:+.3} / {proxy:+.3} ms"))
        .collect();
    println!(
        "2. added latency at {LIVE_RATE_PER_S} req/s, medians of {ROUNDS} rounds of {LIVE_SECONDS} s, each against the direct call of its round: gateway p50 {gateway_p50:+.3} ms, p99 {gateway_p99:+.3} ms (target p99 ≤ 1 ms and below HAProxy's); HAProxy p50 {proxy_p50:+.3} ms, p99 {proxy_p99:+.3} ms; added p99 round by round (gateway / HAProxy) {}",
        added_rounds.join(", ")
    );
    let by_round = |p99s: &[f64]| -> String {
        let texts: Vec<String> = p99s.iter().map(|p| format!("{p:.3}")).collect();
        texts.join(", ")
    };
    println!(
        "3. DNB hanging, medians of {ROUNDS} rounds of {LIVE_SECONDS} s by p99, taking turns with healthy ones: DNB p99 {:.3} ms served stale (target ≤ 5 ms); Nordea p99 {:.3} ms vs {:.3} ms healthy, median change {:+.1} % against the healthy run of each round (target within 10 %; round by round {}); p99 round by round (ms): DNB healthy {}; Nordea healthy {}; DNB hanging {}; Nordea beside it {}",
        dnb_down.p99_ms,
        nordea_beside.p99_ms,
        nordea_before.p99_ms,
        nordea_change * 100.0,
        nordea_changes
            .iter()
            .map(|c| format!("{:+.1} %", c * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        by_round(&fail_fast_p99s[0]),
        by_round(&fail_fast_p99s[1]),
        by_round(&fail_fast_p99s[2]),
        by_round(&fail_fast_p99s[3]),
    );
    println!(
        "4. {created} sessions in {:.1} s ({:.0}/s, {session_errors} errors;): RSS +{:.1} MiB, {:.0} bytes per session (target ≤ 2048)",
        creation.as_secs_f64(),
        created as f64 / creation.as_secs_f64(),
        growth as f64 / (1024.0 * 1024.0),
        per_session
    );
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    println!(
        "5. slow upstream: {} connections, {:.0} answers/s, p50 {:.0} ms, p99 {:.0} ms, {} errors; DNB reads {} live, {} stale from cache, {} fresh, {} unavailable; {:.1} upstream calls/s; RSS {:.0} MiB before, peak {:.0} MiB (+{:.0} MiB)",
        slow::CONNECTIONS,
        slow.figures.requests_per_s,
        slow.figures.p50_ms,
        slow.figures.p99_ms,
        slow.figures.errors,
        slow.live,
        slow.cache_stale,
        slow.cache_fresh,
        slow.unavailable,
        slow.upstream_calls_per_s,
        mib(slow.rss_before_bytes),
        mib(slow.rss_peak_bytes),
        mib(slow.rss_peak_bytes.saturating_sub(slow.rss_before_bytes)),
    );
    println!(
        "6. payments: {:.0} initiations/s, p50 {:.3} ms, p99 {:.3} ms at {PAYMENT_CONNECTIONS} connections ({} errors)",
        payments.requests_per_s, payments.p50_ms, payments.p99_ms, payments.errors
    );

    let report = json!({
        "connections": CONNECTIONS,
        "wrk_seconds": WRK_SECONDS,
        "live_rate_per_s": LIVE_RATE_PER_S,
        "cases": all,
        "cached_to_hello_ratio": ratio,
        "cached_to_hello_ratio_by_round": round_ratios,
        "case_1_requests_per_s_by_round": {
            "hello": rounds_rps[0],
            "healthz": rounds_rps[1],
            "cached": rounds_rps[2],
        },
        "rounds": ROUNDS,
        "round_seconds": ROUND_SECONDS,
        "live_added_p50_ms": gateway_p50,
        "live_added_p99_ms": gateway_p99,
        "haproxy_added_p50_ms": proxy_p50,
        "haproxy_added_p99_ms": proxy_p99,
        "live_added_p99_ms_by_round": added_by_round
            .iter()
            .map(|(gateway, proxy)| json!({"gateway": gateway, "haproxy": proxy}))
            .collect::<Vec<_>>(),
        "fail_fast_dnb_p99_ms": dnb_down.p99_ms,
        "fail_fast_nordea_p99_change": nordea_change,
        "fail_fast_nordea_p99_change_by_round": nordea_changes,
        "fail_fast_p99_ms_by_round": {
            "dnb_healthy": fail_fast_p99s[0],
            "nordea_healthy": fail_fast_p99s[1],
            "dnb_hanging": fail_fast_p99s[2],
            "nordea_beside_hanging": fail_fast_p99s[3],
        },
        "sessions": {
            "created": created,
            "seconds": creation.as_secs_f64(),
            "errors": session_errors,
            "rss_growth_bytes": growth,
            "bytes_per_session": per_session,
        },
        "slow_upstream": slow,
        "payments_per_s": payments.requests_per_s,
        "payments_p99_ms": payments.p99_ms,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("target/bench");
    std::fs::write(
        dir.join("gateway.json"),
        serde_json::to_string_pretty(&report).expect("json"),
    )
    .expect("report");
    println!("written to target/bench/gateway.json");

    drop(proxy);
    for (runtime, gateway) in [
        (cached_runtime, cached),
        (live_runtime, live),
        (hanging_runtime, hanging),
        (slow_runtime, slow_gateway),
    ] {
        let _ = runtime.spawn(gateway.shutdown()).await;
    }
    for (runtime, sandbox) in [
        (sandbox_runtime, sandbox),
        (hanging_sandbox_runtime, hanging_sandbox),
    ] {
        let _ = runtime.spawn(sandbox.shutdown()).await;
    }
    runtimes.stop();
    cluster.stop().await;
}
