//! The load generators every case shares: `wrk` (Debian's package) for throughput at a fixed
//! number of connections, and a fixed-rate sender for latency at a moderate rate.

use std::process::Command;
use std::time::{Duration, Instant};

/// Latency and throughput of one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub case: String,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Parses a wrk duration such as `812.00us`, `1.20ms`, `2.01s`.
fn wrk_ms(text: &str) -> f64 {
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

/// What `wrk` is asked to do.
pub struct Wrk {
    pub case: String,
    pub url: String,
    pub connections: u32,
    pub seconds: u32,
    pub headers: Vec<(String, String)>,
    /// A Lua script (`wrk -s`), for requests that differ one from the next.
    pub script: Option<String>,
    /// How long wrk waits for an answer before counting a timeout (wrk's default: 2 s).
    pub timeout: Duration,
}

impl Wrk {
    /// Runs wrk on a blocking thread.
    pub async fn spawn(self) -> Figures {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .expect("wrk")
    }

    /// Runs wrk (blocking) and reads its report.
    fn run(&self) -> Figures {
        let mut command = Command::new("wrk");
        command.args([
            "-t2",
            &format!("-c{}", self.connections),
            &format!("-d{}s", self.seconds),
            &format!("--timeout={}s", self.timeout.as_secs().max(1)),
            "--latency",
        ]);
        for (name, value) in &self.headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        let script = self.script.as_ref().map(|text| {
            let file = tempfile::NamedTempFile::new().expect("script file");
            std::fs::write(file.path(), text).expect("script");
            file
        });
        if let Some(file) = &script {
            command.arg("-s").arg(file.path());
        }
        let output = command
            .arg(&self.url)
            .output()
            .expect("wrk runs (apt-get install wrk)");
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text
            .lines()
            .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        {
            eprintln!("{}: {}", self.case, line.trim());
        }
        let find = |prefix: &str| -> Option<String> {
            text.lines()
                .map(str::trim)
                .find(|l| l.starts_with(prefix))
                .map(|l| l[prefix.len()..].trim().to_owned())
        };
        let errors = text
            .lines()
            .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
            .flat_map(|l| {
                l.split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
            })
            .sum();
        Figures {
            case: self.case.clone(),
            requests_per_s: find("Requests/sec:")
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN),
            p50_ms: find("50%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN),
            p99_ms: find("99%").map(|v| wrk_ms(&v)).unwrap_or(f64::NAN),
            errors,
        }
    }
}

/// Sends `rate` requests a second for `seconds` and measures each; `ok` judges an answer.
pub async fn fixed_rate(
    case: &str,
    rate: u64,
    seconds: u64,
    request: impl Fn() -> reqwest::RequestBuilder,
    ok: fn(&reqwest::Response) -> bool,
) -> Figures {
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..rate * seconds {
        ticker.tick().await;
        let pending = request().send();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let good = pending.await.is_ok_and(|r| ok(&r));
            (sent.elapsed(), good)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latency, good) = task.await.expect("request task");
        latencies.push(latency.as_secs_f64() * 1000.0);
        errors += u64::from(!good);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        case: case.to_owned(),
        requests_per_s: latencies.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        errors,
    }
}

/// A 2xx answer.
pub fn success(response: &reqwest::Response) -> bool {
    response.status().is_success()
}

/// The resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
