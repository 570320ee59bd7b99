//! Logs (tracing) and metrics (the process-wide Prometheus recorder).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, TelemetrySettings};

/// Every metric bankgate exports, declared once. Names follow `bankgate_<subsystem>_<what>`.
pub mod names {
    /// Requests answered per API (`client`, `ops`) and status class (`2xx` … `5xx`).
    pub const HTTP_REQUESTS: &str = "bankgate_http_requests_total";
    /// Time to answer, per API.
    pub const HTTP_DURATION: &str = "bankgate_http_request_duration_seconds";
}

/// Installs the log subscriber; later calls (tests) keep the first one.
pub fn init_logging(settings: &TelemetrySettings) {
    let filter =
        EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match settings.log_format {
        LogFormat::Pretty => builder.compact().try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Returns the Prometheus handle, installing the recorder on first use. The recorder is
/// process-wide, so every gateway in a process (tests run several) shares it.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .expect("static bucket list is valid")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(
        names::HTTP_REQUESTS,
        "HTTP requests answered, by API and status class"
    );
    metrics::describe_histogram!(
        names::HTTP_DURATION,
        metrics::Unit::Seconds,
        "time to answer an HTTP request, by API"
    );
}

/// Runs the recorder's upkeep (histogram maintenance) until the task is dropped.
pub async fn upkeep() {
    let handle = prometheus();
    let mut interval = tokio::time::interval(Duration::from_secs(5));
    loop {
        interval.tick().await;
        handle.run_upkeep();
    }
}

/// Returns a warp log hook that counts and times each answer of `api`.
pub fn http_metrics(api: &'static str) -> warp::log::Log<impl Fn(warp::log::Info<'_>) + Copy> {
    warp::log::custom(move |info| {
        let class = match info.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!(names::HTTP_REQUESTS, "api" => api, "status" => class).increment(1);
        metrics::histogram!(names::HTTP_DURATION, "api" => api)
            .record(info.elapsed().as_secs_f64());
    })
}
