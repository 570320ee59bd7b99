//! What every case runs against: one private PostgreSQL, two sandboxes, four gateways and a
//! bare warp hello-world on loopback, and the bench user connected to DNB and Nordea at the
//! cached, live and hanging gateways.
//!
//! Each server runs on a runtime of its own, built as the `bankgate` binary builds its one:
//! like separate processes (and like HAProxy, which is one), the gateways, the sandbox, the
//! hello-world and the load generator never share worker threads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bankgate::gateway::Gateway;
use bankgate::postgres::PrivateCluster;
use bankgate::settings::Settings;
use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use bankgate_sandbox::faults::FaultSpec;
use bankgate_sandbox::{Sandbox, SandboxClient, SandboxOptions};
use secrecy::SecretString;
use serde_json::Value;
use tokio::runtime::{Handle, Runtime};
use warp::Filter;

/// Where the bench user's connections are at one gateway: its client URL and the
/// connection ids by bank.
pub struct ConnectedAt {
    pub url: String,
    pub ids: HashMap<String, String>,
}

/// The servers the cases measure, and the bench user's credentials.
pub struct Bench {
    pub http: reqwest::Client,
    pub secret: SecretString,
    /// The bench user's token, in the session `bench-session`.
    pub token: String,
    pub sandbox: Sandbox,
    /// Balances fresh for an hour: every read answers from the cache (cases 1, 4 and 6).
    pub cached: Gateway,
    /// Every balance read upstream over the banks' PSD2 APIs, giving up after a second
    /// (cases 2 and 3).
    pub live: Gateway,
    pub live_database: String,
    /// Like `live`, against a sandbox of its own whose DNB the fail-fast case makes hang,
    /// with a breaker that stays open for the whole case.
    pub hanging: Gateway,
    pub hanging_sandbox: Sandbox,
    /// Balances fresh for a second only, so that every read of case 5 asks the slow bank.
    pub slow: Gateway,
    /// A bare warp hello-world's URL (case 1's reference).
    pub hello_url: String,
    runtimes: Vec<Runtime>,
    /// The runtime each gateway and sandbox runs on, where its shutdown runs.
    on: RuntimeOf,
    cluster: PrivateCluster,
}

struct RuntimeOf {
    sandbox: Handle,
    hanging_sandbox: Handle,
    cached: Handle,
    live: Handle,
    hanging: Handle,
    slow: Handle,
}

/// The settings every gateway and sandbox of the bench starts from: loopback, ephemeral
/// ports, limits out of the way of the load, quiet logs.
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

/// A bare warp hello-world, served by the same connection loop as bankgate's listeners;
/// answers its URL.
async fn hello_world() -> String {
    let hello = warp::path!("hello")
        .map(|| "hello")
        .recover(|_| async { Ok::<_, Infallible>("") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hello", listener.local_addr().expect("addr"));
    let options =
        bankgate_sandbox::http::ServeOptions::new(Duration::from_secs(10), Duration::ZERO);
    tokio::spawn(bankgate_sandbox::http::serve(
        listener,
        hello,
        options,
        std::future::pending(),
    ));
    url
}

/// Starts a server on a runtime of its own, kept in `runtimes`.
async fn on_own_runtime<T: Send + 'static>(
    runtimes: &mut Vec<Runtime>,
    start: impl Future<Output = T> + Send + 'static,
) -> (Handle, T) {
    let runtime = Runtime::new().expect("runtime");
    let handle = runtime.handle().clone();
    let server = handle.spawn(start).await.expect("server starts");
    runtimes.push(runtime);
    (handle, server)
}

async fn start_sandbox(runtimes: &mut Vec<Runtime>, settings: &Settings) -> (Handle, Sandbox) {
    let options = SandboxOptions::from_settings(&settings.sandbox);
    on_own_runtime(runtimes, async move {
        Sandbox::start(options).await.expect("sandbox")
    })
    .await
}

async fn start_gateway(
    runtimes: &mut Vec<Runtime>,
    settings: &Settings,
    sandbox: &Sandbox,
    database: &str,
) -> (Handle, Gateway) {
    let settings = against(settings, sandbox);
    let database = database.to_owned();
    on_own_runtime(runtimes, async move {
        let pool = bankgate::postgres::pool(
            &database,
            bankgate::postgres::PoolOptions::new(16, Duration::from_secs(5)),
        )
        .expect("pool");
        bankgate::postgres::migrate(&pool)
            .await
            .expect("migrations");
        Gateway::start(&settings, pool).await.expect("gateway")
    })
    .await
}

impl Bench {
    pub async fn start() -> Bench {
        let cached_settings = settings(&[("BANKGATE__BALANCES__FRESH_FOR", "1h")]);
        let live = [
            ("BANKGATE__BALANCES__FRESH_FOR", "0s"),
            ("BANKGATE__BANKS__PROVIDER_ORDER", "[\"psd2\"]"),
            ("BANKGATE__PROVIDERS__PSD2__TIMEOUT", "1s"),
            ("BANKGATE__PROVIDERS__PSD2__LIMITS__FIRST_BACKOFF", "50ms"),
        ];
        let live_settings = settings(&live);
        let hanging_settings =
            settings(&[live.as_slice(), &[("BANKGATE__BREAKER__OPEN_FOR", "10m")]].concat());
        let slow_settings = settings(&[
            ("BANKGATE__BALANCES__FRESH_FOR", "1s"),
            ("BANKGATE__BALANCES__FRESH_FOR_WHEN_RATE_LIMITED", "1s"),
        ]);
        let cluster = PrivateCluster::start_temporary()
            .await
            .expect("PostgreSQL starts");
        let mut databases = Vec::new();
        for name in ["bench_cached", "bench_live", "bench_hanging", "bench_slow"] {
            databases.push(cluster.ensure_database(name).await.expect("database"));
        }
        let [cached_db, live_db, hanging_db, slow_db] =
            <[String; 4]>::try_from(databases).expect("four databases");

        let mut runtimes = Vec::new();
        let (sandbox_runtime, sandbox) = start_sandbox(&mut runtimes, &cached_settings).await;
        let (hanging_sandbox_runtime, hanging_sandbox) =
            start_sandbox(&mut runtimes, &cached_settings).await;
        let (cached_runtime, cached) =
            start_gateway(&mut runtimes, &cached_settings, &sandbox, &cached_db).await;
        let (live_runtime, live) =
            start_gateway(&mut runtimes, &live_settings, &sandbox, &live_db).await;
        let (hanging_runtime, hanging) = start_gateway(
            &mut runtimes,
            &hanging_settings,
            &hanging_sandbox,
            &hanging_db,
        )
        .await;
        let (slow_runtime, slow) =
            start_gateway(&mut runtimes, &slow_settings, &sandbox, &slow_db).await;
        let (_, hello_url) = on_own_runtime(&mut runtimes, hello_world()).await;

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
                    &NationalId::synthetic("bench-user"),
                    bank,
                    "https://drop.example/done",
                )
                .await
                .expect("connect");
            }
        }
        Bench {
            http: reqwest::Client::new(),
            secret,
            token,
            sandbox,
            cached,
            live,
            live_database: live_db,
            hanging,
            hanging_sandbox,
            slow,
            hello_url,
            runtimes,
            on: RuntimeOf {
                sandbox: sandbox_runtime,
                hanging_sandbox: hanging_sandbox_runtime,
                cached: cached_runtime,
                live: live_runtime,
                hanging: hanging_runtime,
                slow: slow_runtime,
            },
            cluster,
        }
    }

    /// A token of `user` in `session`, valid for an hour.
    pub fn token_for(&self, user: &str, session: &str) -> String {
        bankgate::token::mint(&self.secret, user, session, Duration::from_secs(3600))
            .expect("token")
    }

    /// The bench user's connections at `gateway`.
    pub async fn connected_at(&self, gateway: &Gateway) -> ConnectedAt {
        let url = gateway.client_url();
        let body: Value = self
            .http
            .get(format!("{url}/v1/connections"))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("connections")
            .json()
            .await
            .expect("connections body");
        let ids = body["connections"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|c| {
                (
                    c["bank"].as_str().expect("bank").to_owned(),
                    c["id"].as_str().expect("id").to_owned(),
                )
            })
            .collect();
        ConnectedAt { url, ids }
    }

    /// A read of the account the bench user has at `bank`, through a gateway, in the
    /// session of `token`.
    pub fn account_read(
        &self,
        token: &str,
        at: &ConnectedAt,
        bank: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/v1/accounts/{}/balances", at.url, at.ids[bank]))
            .bearer_auth(token)
            .header("x-psu-ip-address", "192.0.2.1")
    }

    /// Stops every gateway, then the sandboxes, the runtimes and PostgreSQL.
    pub async fn stop(self) {
        let Bench {
            sandbox,
            cached,
            live,
            hanging,
            hanging_sandbox,
            slow,
            runtimes,
            on,
            cluster,
            ..
        } = self;
        for (runtime, gateway) in [
            (on.cached, cached),
            (on.live, live),
            (on.hanging, hanging),
            (on.slow, slow),
        ] {
            let _ = runtime.spawn(gateway.shutdown()).await;
        }
        for (runtime, sandbox) in [(on.sandbox, sandbox), (on.hanging_sandbox, hanging_sandbox)] {
            let _ = runtime.spawn(sandbox.shutdown()).await;
        }
        for runtime in runtimes {
            runtime.shutdown_background();
        }
        cluster.stop().await;
    }
}

/// Injects a fault at the sandbox and returns its id.
pub async fn add_fault(sandbox: &Sandbox, fault: FaultSpec) -> u64 {
    let control = SandboxClient::new(sandbox.control_url());
    control.add_fault(&fault).await.expect("fault").id
}
