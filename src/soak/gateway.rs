//! The gateway under soak: a `bankgate serve` child process on fixed loopback ports, killed
//! with SIGKILL and started again on the same ports, with its resident memory sampled over
//! each life.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use bankgate_actors::BankId;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How long a new gateway may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// A life's memory is measured from this long after it answered, once it has warmed up.
pub const WARM_UP: Duration = Duration::from_secs(5);

/// Where the gateway's dependencies are and how it is tuned for the soak.
pub struct Launch {
    pub exe: PathBuf,
    pub config: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub client_url: String,
    /// The gateway's stderr, appended over every life (the soak's own log stays readable).
    pub log: PathBuf,
}

/// One run of the gateway process, from start to kill (or the end of the soak).
#[derive(Debug, Clone, Serialize)]
pub struct Life {
    pub pid: u32,
    /// Seconds it took to answer `/healthz`.
    pub start_s: f64,
    /// Resident memory once warmed up (`WARM_UP` after it answered), if it lived that long.
    pub warm_rss_kib: Option<u64>,
    pub peak_rss_kib: u64,
    /// How long it lived after answering, in seconds.
    pub lived_s: f64,
}

impl Life {
    /// Growth of resident memory after warm-up.
    pub fn growth_kib(&self) -> Option<u64> {
        self.warm_rss_kib
            .map(|warm| self.peak_rss_kib.saturating_sub(warm))
    }
}

struct Running {
    child: Child,
    up_at: Instant,
    life: Life,
}

/// The gateway process, restarted on the same ports after each kill.
pub struct GatewayProcess {
    launch: Launch,
    http: reqwest::Client,
    running: tokio::sync::Mutex<Option<Running>>,
    ended: Mutex<Vec<Life>>,
}

impl GatewayProcess {
    pub fn new(launch: Launch) -> GatewayProcess {
        GatewayProcess {
            launch,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("a plain HTTP client"),
            running: tokio::sync::Mutex::new(None),
            ended: Mutex::new(Vec::new()),
        }
    }

    /// Starts the gateway and waits until it answers `/healthz`.
    pub async fn start(&self) -> anyhow::Result<()> {
        let mut running = self.running.lock().await;
        anyhow::ensure!(running.is_none(), "the gateway is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.launch.log)?;
        let mut command = Command::new(&self.launch.exe);
        if let Some(config) = &self.launch.config {
            command.arg("--config").arg(config);
        }
        command
            .arg("serve")
            .envs(self.launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        loop {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "the gateway exited at start ({status}); see {}",
                    self.launch.log.display()
                );
            }
            let url = format!("{}/healthz", self.launch.client_url);
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                anyhow::bail!("the gateway did not answer within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *running = Some(Running {
            child,
            up_at: Instant::now(),
            life: Life {
                pid,
                start_s: started.elapsed().as_secs_f64(),
                warm_rss_kib: None,
                peak_rss_kib: rss_kib(pid).unwrap_or_default(),
                lived_s: 0.0,
            },
        });
        Ok(())
    }

    /// Kills the gateway with SIGKILL: no shutdown, no flush, as a crash or an OOM kill.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let Some(mut running) = self.running.lock().await.take() else {
            anyhow::bail!("the gateway is not running");
        };
        // `Child::kill` sends SIGKILL.
        running.child.kill().await?;
        self.end(running);
        Ok(())
    }

    /// Kills the gateway and starts it again on the same ports.
    pub async fn crash_and_restart(&self) -> anyhow::Result<()> {
        self.kill().await?;
        self.start().await
    }

    /// Reads the running gateway's resident memory into its life's figures.
    pub async fn sample(&self) {
        let mut running = self.running.lock().await;
        let Some(running) = running.as_mut() else {
            return;
        };
        let Some(rss) = rss_kib(running.life.pid) else {
            return;
        };
        let life = &mut running.life;
        if life.warm_rss_kib.is_none() && running.up_at.elapsed() >= WARM_UP {
            life.warm_rss_kib = Some(rss);
            life.peak_rss_kib = rss;
        }
        life.peak_rss_kib = life.peak_rss_kib.max(rss);
    }

    /// Stops the gateway for good and returns every life it had.
    pub async fn finish(&self) -> Vec<Life> {
        if let Some(mut running) = self.running.lock().await.take() {
            let _ = running.child.kill().await;
            self.end(running);
        }
        self.ended.lock().expect("lives").clone()
    }

    fn end(&self, running: Running) {
        let mut life = running.life;
        life.lived_s = running.up_at.elapsed().as_secs_f64();
        self.ended.lock().expect("lives").push(life);
    }
}

/// The launch environment every life gets: the soak's ports, the sandbox, and settings that
/// make faults show within seconds (short timeouts, breakers and probes).
pub fn soak_env(
    database_url: &str,
    client_port: u16,
    ops_port: u16,
    neonomics_url: &str,
    psd2_urls: &[(BankId, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("BANKGATE__DATABASE__URL", database_url.to_owned()),
        (
            "BANKGATE__HTTP__CLIENT_ADDR",
            format!("127.0.0.1:{client_port}"),
        ),
        ("BANKGATE__HTTP__OPS_ADDR", format!("127.0.0.1:{ops_port}")),
        ("BANKGATE__HTTP__SHUTDOWN_GRACE", "1s".to_owned()),
        (
            "BANKGATE__PROVIDERS__NEONOMICS__BASE_URL",
            neonomics_url.to_owned(),
        ),
        ("BANKGATE__BANKS__PROBE_INTERVAL", "1s".to_owned()),
        ("BANKGATE__BREAKER__OPEN_FOR", "1s".to_owned()),
        ("BANKGATE__BREAKER__MAX_OPEN", "4s".to_owned()),
        ("BANKGATE__BALANCES__FRESH_FOR", "1s".to_owned()),
        (
            "BANKGATE__BALANCES__FRESH_FOR_WHEN_RATE_LIMITED",
            "5s".to_owned(),
        ),
        ("BANKGATE__BALANCES__READ_DEADLINE", "10s".to_owned()),
        ("BANKGATE__PAYMENTS__PER_USER_LIMIT", "10000".to_owned()),
        ("BANKGATE__PAYMENTS__PER_IP_LIMIT", "10000".to_owned()),
        ("BANKGATE__PAYMENTS__DRAIN_INTERVAL", "500ms".to_owned()),
        ("BANKGATE__PAYMENTS__IN_FLIGHT_TIMEOUT", "12s".to_owned()),
        ("BANKGATE__PAYMENTS__POLL_AFTER", "1s".to_owned()),
        ("BANKGATE__TELEMETRY__LOG_FORMAT", "json".to_owned()),
        ("BANKGATE__TELEMETRY__LOG_FILTER", "warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for provider in ["NEONOMICS", "PSD2"] {
        for (key, value) in [
            ("TIMEOUT", "3s"),
            ("LIMITS__FIRST_BACKOFF", "100ms"),
            ("LIMITS__CREDENTIALS_BACKOFF", "3s"),
            ("LIMITS__RATE_LIMIT_PER_S", "200"),
            ("LIMITS__CONCURRENCY", "32"),
        ] {
            env.push((
                format!("BANKGATE__PROVIDERS__{provider}__{key}"),
                value.to_owned(),
            ));
        }
    }
    for (bank, url) in psd2_urls {
        env.push((
            format!(
                "BANKGATE__PROVIDERS__PSD2__BANK_URLS__{}",
                bank.as_str().to_uppercase()
            ),
            url.clone(),
        ));
    }
    env
}

/// A process's resident set size from `/proc/<pid>/status`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
