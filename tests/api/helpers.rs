//! The test harness: a throwaway PostgreSQL per test binary (or the server named by
//! `BANKGATE_TEST_DATABASE_URL`) with a fresh database per test, the sandbox on port 0, and
//! the gateway wired to both.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bankgate::gateway::Gateway;
use bankgate::postgres::PrivateCluster;
use bankgate::settings::Settings;
use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use bankgate_sandbox::faults::FaultSpec;
use bankgate_sandbox::{LedgerFilter, Sandbox, SandboxClient, SandboxOptions};
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;

/// The cluster shared by every test in this binary. It is never dropped: when the test
/// process exits, the cluster's watchdog sees its stdin close and stops PostgreSQL.
static CLUSTER: OnceCell<PrivateCluster> = OnceCell::const_new();

/// Returns the URL of a new, empty database.
pub async fn fresh_database() -> String {
    let name = format!("bankgate_test_{}", uuid::Uuid::new_v4().simple());
    if let Ok(server) = std::env::var("BANKGATE_TEST_DATABASE_URL") {
        let (client, connection) = tokio_postgres::connect(&server, NoTls)
            .await
            .expect("test server");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        let mut config: tokio_postgres::Config = server.parse().expect("valid URL");
        config.dbname(&name);
        return database_url(&config);
    }
    let cluster = CLUSTER
        .get_or_init(|| async {
            PrivateCluster::start_temporary()
                .await
                .expect("start PostgreSQL")
        })
        .await;
    cluster
        .ensure_database(&name)
        .await
        .expect("create database")
}

/// Rebuilds a URL from a parsed config (tokio-postgres cannot print one).
fn database_url(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}{password}@{host}:{port}/{db}")
}

/// Settings as the gateway gets them in tests: defaults with every listener on port 0.
pub fn test_settings(overrides: &[(&str, &str)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::from([
        ("BANKGATE__HTTP__CLIENT_ADDR".into(), "127.0.0.1:0".into()),
        ("BANKGATE__HTTP__OPS_ADDR".into(), "127.0.0.1:0".into()),
        ("BANKGATE__SANDBOX__PORT".into(), "0".into()),
        ("BANKGATE__HTTP__SHUTDOWN_GRACE".into(), "1s".into()),
    ]);
    for (key, value) in overrides {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    Settings::load(None, &env).expect("test settings are valid")
}

/// Sandbox options for tests: ephemeral ports and a rate limit tests never reach.
pub fn sandbox_options() -> SandboxOptions {
    let mut options = SandboxOptions::from_settings(&test_settings(&[]).sandbox);
    options.rate_limit_per_s = 10_000;
    options.max_hang = Duration::from_secs(30);
    options
}

/// A running sandbox and a client for it.
pub struct TestSandbox {
    pub sandbox: Sandbox,
    pub http: reqwest::Client,
    /// The sandbox's control API.
    pub control: SandboxClient,
}

pub async fn spawn_sandbox() -> TestSandbox {
    spawn_sandbox_with(sandbox_options()).await
}

pub async fn spawn_sandbox_with(options: SandboxOptions) -> TestSandbox {
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let http = client();
    TestSandbox {
        control: SandboxClient::with_http(sandbox.control_url(), http.clone()),
        sandbox,
        http,
    }
}

/// A client that does not follow redirects (SCA redirects are asserted, not followed).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

impl TestSandbox {
    /// GETs a control API path and returns its JSON.
    pub async fn control_json(&self, path: &str) -> Value {
        self.http
            .get(self.control(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The accounts `psu` holds at `bank`, with their balances as the bank has them.
    pub async fn seeded_accounts(&self, bank: BankId, psu: &str) -> Vec<Value> {
        let accounts = self.control.accounts(bank, psu).await.unwrap();
        accounts
            .iter()
            .map(|a| serde_json::to_value(a).unwrap())
            .collect()
    }

    /// The count of calls received for `provider` (and `bank`, when given).
    pub async fn upstream_calls(&self, provider: &str, bank: Option<&str>) -> u64 {
        let requests = self.control.requests().await.unwrap();
        requests
            .iter()
            .filter(|r| r.provider.as_str() == provider)
            .filter(|r| bank.is_none_or(|b| r.bank.is_some_and(|rb| rb.as_str() == b)))
            .map(|r| r.count)
            .sum()
    }

    /// Expires every consent `psu` gave at `bank`, with each provider.
    pub async fn expire_consents(&self, psu: &str, bank: BankId) {
        for consent in self.control.consents().await.unwrap() {
            if consent.psu.as_deref() == Some(psu) && consent.bank == bank {
                self.control.expire_consent(&consent.id).await.unwrap();
            }
        }
    }

    pub fn control(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.control_url())
    }

    pub fn neonomics(&self, path: &str) -> String {
        format!("{}{path}", self.sandbox.neonomics_url())
    }

    pub fn psd2(&self, bank: BankId, path: &str) -> String {
        format!("{}{path}", self.sandbox.psd2_url(bank))
    }

    /// Adds a fault and returns its id.
    pub async fn add_fault(&self, fault: Value) -> u64 {
        let spec: FaultSpec = serde_json::from_value(fault.clone()).expect("a fault spec");
        let added = self.control.add_fault(&spec).await;
        added
            .unwrap_or_else(|e| panic!("fault {fault} accepted: {e}"))
            .id
    }

    pub async fn remove_fault(&self, id: u64) {
        self.control.remove_fault(id).await.unwrap();
    }

    /// The ledger entries matching `query` (`""` or `"?bank=dnb&…"`, the control API's filters).
    pub async fn ledger(&self, query: &str) -> Vec<Value> {
        let filter: LedgerFilter =
            serde_urlencoded::from_str(query.trim_start_matches('?')).expect("ledger filters");
        let entries = self.control.ledger(&filter).await.unwrap();
        entries
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect()
    }

    /// Follows an SCA link as the user's browser would, returning where it is sent next.
    pub async fn complete_sca(&self, sca_url: &str) -> String {
        let response = self.http.get(sca_url).send().await.unwrap();
        assert_eq!(response.status(), 302, "SCA redirects back");
        response.headers()["location"].to_str().unwrap().to_owned()
    }

    /// A PSD2 request with a fresh X-Request-ID.
    pub fn psd2_request(
        &self,
        method: reqwest::Method,
        bank: BankId,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.psd2(bank, path))
            .header("x-request-id", uuid::Uuid::new_v4().to_string())
    }

    /// Creates and approves a PSD2 consent for `psu` at `bank`; returns the consent id.
    pub async fn psd2_consent(&self, bank: BankId, psu: &str) -> String {
        let response = self
            .psd2_request(reqwest::Method::POST, bank, "/consents")
            .header("tpp-redirect-uri", "https://drop.example/consent-done")
            .header("psu-id", psu)
            .json(&consent_body(4))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        self.complete_sca(body["_links"]["scaRedirect"]["href"].as_str().unwrap())
            .await;
        body["consentId"].as_str().unwrap().to_owned()
    }

    /// Gets a Neonomics access token.
    pub async fn neonomics_token(&self) -> String {
        let response = self
            .http
            .post(self.neonomics("/auth/realms/sandbox/protocol/openid-connect/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "bankgate-sandbox"),
                ("client_secret", "sandbox-client-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// A Neonomics API request with the token and device headers.
    pub fn neonomics_request(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.neonomics(path))
            .bearer_auth(token)
            .header("x-device-id", "test-device")
    }

    /// Neonomics' id for `bank`, from its bank list.
    pub async fn neonomics_bank_id(&self, token: &str, bank: BankId) -> String {
        let list: Vec<Value> = self
            .neonomics_request(reqwest::Method::GET, token, "/ics/v3/banks")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entry = list.iter().find(|b| b["bic"] == bank.bic()).unwrap();
        entry["id"].as_str().unwrap().to_owned()
    }

    /// Opens a Neonomics session at `bank` for `psu` and approves its consent.
    pub async fn neonomics_session(&self, token: &str, bank: BankId, psu: &str) -> String {
        let response = self
            .neonomics_request(reqwest::Method::POST, token, "/ics/v3/session")
            .header("x-psu-id", psu)
            .json(&serde_json::json!({"bankId": self.neonomics_bank_id(token, bank).await}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let session: Value = response.json().await.unwrap();
        let session_id = session["sessionId"].as_str().unwrap().to_owned();
        // The documented way: try the accounts, and follow the 1426 to the consent.
        let refused: Value = self
            .neonomics_request(reqwest::Method::GET, token, "/ics/v3/accounts")
            .header("x-session-id", &session_id)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(refused["errorCode"], "1426", "{refused}");
        let link = refused["links"][0]["href"].as_str().unwrap();
        let response = self
            .neonomics_request(
                reqwest::Method::GET,
                token,
                &format!("{link}?scope=accounts"),
            )
            .header("x-redirect-url", "https://drop.example/consent-done")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let consent: Value = response.json().await.unwrap();
        self.complete_sca(consent["links"][0]["href"].as_str().unwrap())
            .await;
        session_id
    }
}

/// A NextGenPSD2 consent body for all accounts with `frequency` unattended reads a day.
pub fn consent_body(frequency: u32) -> Value {
    let valid_until = (chrono::Utc::now() + chrono::Duration::days(30)).date_naive();
    serde_json::json!({
        "access": {"allPsd2": "allAccounts"},
        "recurringIndicator": true,
        "validUntil": valid_until,
        "frequencyPerDay": frequency,
        "combinedServiceIndicator": false,
    })
}

/// A running gateway on a fresh database, with the sandbox it talks to.
pub struct TestApp {
    pub gateway: Gateway,
    pub sandbox: TestSandbox,
    pub http: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Settings that make resilience scenarios quick: every read goes upstream (no fresh cache),
/// breakers re-probe after a second, retries back off for milliseconds, calls time out fast.
pub const QUICK: &[(&str, &str)] = &[
    ("BANKGATE__BALANCES__FRESH_FOR", "0s"),
    ("BANKGATE__BREAKER__OPEN_FOR", "1s"),
    ("BANKGATE__BREAKER__MAX_OPEN", "2s"),
    ("BANKGATE__PROVIDERS__NEONOMICS__TIMEOUT", "500ms"),
    ("BANKGATE__PROVIDERS__PSD2__TIMEOUT", "500ms"),
    (
        "BANKGATE__PROVIDERS__NEONOMICS__LIMITS__FIRST_BACKOFF",
        "20ms",
    ),
    ("BANKGATE__PROVIDERS__PSD2__LIMITS__FIRST_BACKOFF", "20ms"),
];

/// `QUICK` with breakers that stay open for the whole test, for tests that count the calls
/// an open breaker must prevent (a half-open probe in the middle would be counted).
pub fn quick_with_long_breakers() -> Vec<(&'static str, &'static str)> {
    let mut settings = QUICK.to_vec();
    settings.retain(|(key, _)| !key.starts_with("BANKGATE__BREAKER__"));
    settings.extend([
        ("BANKGATE__BREAKER__OPEN_FOR", "60s"),
        ("BANKGATE__BREAKER__MAX_OPEN", "120s"),
    ]);
    settings
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_on(&fresh_database().await, overrides).await
}

/// `spawn_app_with` on the database at `database_url`, for tests that start another gateway
/// on it.
pub async fn spawn_app_on(database_url: &str, overrides: &[(&str, &str)]) -> TestApp {
    app_beside(spawn_sandbox().await, database_url, overrides).await
}

/// `spawn_app_with` beside a sandbox started with `options`.
pub async fn spawn_app_with_sandbox(
    options: SandboxOptions,
    overrides: &[(&str, &str)],
) -> TestApp {
    let sandbox = spawn_sandbox_with(options).await;
    app_beside(sandbox, &fresh_database().await, overrides).await
}

async fn app_beside(
    sandbox: TestSandbox,
    database_url: &str,
    overrides: &[(&str, &str)],
) -> TestApp {
    let gateway = start_gateway(&sandbox, database_url, overrides).await;
    TestApp {
        gateway,
        sandbox,
        http: client(),
    }
}

/// Starts a gateway against `sandbox` on the (migrated on the way) database at `database_url`.
pub async fn start_gateway(
    sandbox: &TestSandbox,
    database_url: &str,
    overrides: &[(&str, &str)],
) -> Gateway {
    let mut settings = test_settings(overrides);
    settings.providers.neonomics.base_url = sandbox.sandbox.neonomics_url();
    for bank in BankId::ALL {
        settings
            .providers
            .psd2
            .bank_urls
            .insert(bank, sandbox.sandbox.psd2_url(bank));
    }
    let db = &settings.database;
    let pool = bankgate::postgres::pool(
        database_url,
        bankgate::postgres::PoolOptions {
            size: 4,
            ..db.pool_options()
        },
    )
    .expect("pool");
    bankgate::postgres::migrate(&pool)
        .await
        .expect("migrations apply");
    Gateway::start(&settings, pool)
        .await
        .expect("gateway starts")
}

impl TestApp {
    pub fn client_url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.client_url())
    }

    /// Mints a token for `user` in a fresh session.
    pub fn token(&self, user: &str) -> String {
        let secret = secrecy::SecretString::from(DEV_TOKEN_SECRET.to_owned());
        bankgate::token::mint(
            &secret,
            user,
            &uuid::Uuid::new_v4().to_string(),
            Duration::from_secs(600),
        )
        .unwrap()
    }

    /// Connects the token's user to `bank` the way the app and the user's browser would.
    pub async fn connect(&self, token: &str, bank: BankId) -> String {
        let url = self.gateway.client_url();
        let psu = national_id(token);
        bankgate::browser::connect(&url, token, &psu, bank, "https://drop.example/connected")
            .await
            .expect("consent flow")
    }

    /// A request to the client API at `path` with the user's token.
    fn user_request(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.client_url(path))
            .bearer_auth(token)
    }

    /// `GET path` with the user's token alone: for a balance read, without the user present.
    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.user_request(reqwest::Method::GET, token, path)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/balances` as the app does with the user present.
    pub async fn balances(&self, token: &str) -> reqwest::Response {
        self.user_request(reqwest::Method::GET, token, "/v1/balances")
            .header("x-psu-ip-address", PSU_IP)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/accounts/{account}/balances` as the app does with the user present.
    pub async fn account_balance(&self, token: &str, account: &str) -> reqwest::Response {
        let path = format!("/v1/accounts/{account}/balances");
        self.user_request(reqwest::Method::GET, token, &path)
            .header("x-psu-ip-address", PSU_IP)
            .send()
            .await
            .unwrap()
    }

    /// The banks and their states as `GET /v1/banks` lists them.
    pub async fn banks(&self, token: &str) -> Value {
        self.get(token, "/v1/banks").await.json().await.unwrap()
    }

    /// The user's connections as `GET /v1/connections` lists them.
    pub async fn connections(&self, token: &str) -> Vec<Value> {
        connections(&self.gateway.client_url(), token).await
    }

    /// The id of the user's first connection at `bank`.
    pub async fn connection_at(&self, token: &str, bank: BankId) -> String {
        connection_at(&self.gateway.client_url(), token, bank).await
    }

    /// `DELETE /v1/connections/{id}`: the user removes a connection.
    pub async fn delete_connection(&self, token: &str, id: &str) -> reqwest::Response {
        let path = format!("/v1/connections/{id}");
        self.user_request(reqwest::Method::DELETE, token, &path)
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/payments` of `body` under the idempotency key `key`, with the user present.
    pub async fn pay(&self, token: &str, key: &str, body: &Value) -> reqwest::Response {
        self.user_request(reqwest::Method::POST, token, "/v1/payments")
            .header("idempotency-key", key)
            .header("x-psu-ip-address", PSU_IP)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/payments/{id}`: one payment as the user sees it.
    pub async fn payment(&self, token: &str, id: &str) -> reqwest::Response {
        self.get(token, &format!("/v1/payments/{id}")).await
    }

    /// The sandbox's count of calls received for `provider` (and `bank`, when given).
    pub async fn upstream_calls(&self, provider: &str, bank: Option<&str>) -> u64 {
        self.sandbox.upstream_calls(provider, bank).await
    }

    pub fn ops_url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.ops_url())
    }
}

/// The user's IP address, as the app forwards it when the user is present.
const PSU_IP: &str = "192.0.2.44";

/// The national identity number of the token's user: a synthetic one, from the user's id.
pub fn national_id(token: &str) -> NationalId {
    let secret = secrecy::SecretString::from(DEV_TOKEN_SECRET.to_owned());
    let claims = bankgate::token::verify(&secret, token).expect("a token of ours");
    NationalId::synthetic(&claims.sub)
}

/// The PSU the providers know the gateway's `user` by: the user's synthetic national
/// identity number.
pub fn psu_of(user: &str) -> String {
    NationalId::synthetic(user).expose().to_owned()
}

/// The development token secret from `config/default.toml`.
pub const DEV_TOKEN_SECRET: &str = "bankgate-development-secret-do-not-use-in-production";

/// A `bankgate serve` process, killed (SIGKILL) by `kill` or when dropped, so that a failing
/// test leaves nothing running.
pub struct ServeProcess(Child);

impl ServeProcess {
    pub fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reaped");
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bankgate serve` as its own process (its own metrics, killable with SIGKILL)
/// against the sandbox and database, with quick breakers and timeouts and `extra` settings.
/// Its output goes to `logs` when given.
pub fn serve(
    sandbox: &TestSandbox,
    database: &str,
    client_port: u16,
    ops_port: u16,
    extra: &[(&str, &str)],
    logs: Option<&std::path::Path>,
) -> ServeProcess {
    let mut command = serve_command(sandbox, database, client_port, ops_port, extra, logs);
    ServeProcess(command.spawn().expect("bankgate serve starts"))
}

/// Runs `bankgate serve` as `serve` does, with at most `files` open file descriptors.
pub fn serve_with_fd_limit(
    sandbox: &TestSandbox,
    database: &str,
    ports: (u16, u16),
    extra: &[(&str, &str)],
    files: u32,
) -> ServeProcess {
    let inner = serve_command(sandbox, database, ports.0, ports.1, extra, None);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {files} && exec \"$0\" serve"))
        .arg(env!("CARGO_BIN_EXE_bankgate"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, value) in inner.get_envs() {
        if let Some(value) = value {
            command.env(key, value);
        }
    }
    ServeProcess(command.spawn().expect("bankgate serve starts"))
}

/// The command `serve` runs.
fn serve_command(
    sandbox: &TestSandbox,
    database: &str,
    client_port: u16,
    ops_port: u16,
    extra: &[(&str, &str)],
    logs: Option<&std::path::Path>,
) -> Command {
    let output = || match logs {
        Some(path) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file"),
        ),
        None => Stdio::null(),
    };
    let mut command = Command::new(env!("CARGO_BIN_EXE_bankgate"));
    command
        .arg("serve")
        .env("BANKGATE__DATABASE__URL", database)
        .env(
            "BANKGATE__HTTP__CLIENT_ADDR",
            format!("127.0.0.1:{client_port}"),
        )
        .env("BANKGATE__HTTP__OPS_ADDR", format!("127.0.0.1:{ops_port}"))
        .env(
            "BANKGATE__PROVIDERS__NEONOMICS__BASE_URL",
            sandbox.sandbox.neonomics_url(),
        )
        .env("BANKGATE__PROVIDERS__NEONOMICS__TIMEOUT", "500ms")
        .env("BANKGATE__PROVIDERS__PSD2__TIMEOUT", "500ms")
        .env("BANKGATE__BREAKER__OPEN_FOR", "1s")
        .env("BANKGATE__BREAKER__MAX_OPEN", "2s")
        .env("BANKGATE__PAYMENTS__DRAIN_INTERVAL", "200ms")
        .env("BANKGATE__PAYMENTS__IN_FLIGHT_TIMEOUT", "2s")
        .env("BANKGATE__PAYMENTS__PER_USER_LIMIT", "1000")
        .env("BANKGATE__PAYMENTS__PER_IP_LIMIT", "1000")
        .env("BANKGATE__TELEMETRY__LOG_FILTER", "warn")
        .envs(extra.iter().copied())
        .stdout(output())
        .stderr(output());
    for bank in BankId::ALL {
        command.env(
            format!(
                "BANKGATE__PROVIDERS__PSD2__BANK_URLS__{}",
                bank.as_str().to_uppercase()
            ),
            sandbox.sandbox.psd2_url(bank),
        );
    }
    command
}

/// Waits for a gateway's `/healthz` at `url`.
pub async fn wait_until_up(url: &str) {
    eventually(Duration::from_secs(30), || async {
        let response = client().get(format!("{url}/healthz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
}

/// The development admin token from `config/default.toml`.
pub const OPS_TOKEN: &str = "bankgate-development-ops-token";

/// Calls a gateway's ops API with the development admin token.
pub async fn ops_call(
    gateway: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client()
        .request(method, format!("{}{path}", gateway.ops_url()))
        .bearer_auth(OPS_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Sets a bank's modes through the ops API, as an operator would.
pub async fn set_mode(gateway: &Gateway, bank: &str, body: Value) {
    let path = format!("/ops/banks/{bank}/mode");
    let (status, answer) = ops_call(gateway, reqwest::Method::PUT, &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// The user's connections as `GET /v1/connections` lists them, at the gateway at `base`.
pub async fn connections(base: &str, token: &str) -> Vec<Value> {
    let body: Value = client()
        .get(format!("{base}/v1/connections"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["connections"].as_array().unwrap().clone()
}

/// The id of the user's first connection at `bank`.
pub async fn connection_at(base: &str, token: &str, bank: BankId) -> String {
    connections(base, token)
        .await
        .iter()
        .find(|c| c["bank"] == bank.as_str())
        .unwrap_or_else(|| panic!("a connection at {bank}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What the ops listener at `ops_base` exports to Prometheus.
pub async fn metrics_text(ops_base: &str) -> String {
    client()
        .get(format!("{ops_base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A loopback port free at the time of asking, for servers started as separate processes.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
