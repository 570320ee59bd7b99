//! Logs (tracing) and metrics (the process-wide Prometheus recorder). Metric names are
//! declared once, in `bankgate_actors::metrics`.

use std::sync::OnceLock;
use std::time::Duration;

use bankgate_actors::metrics::{HTTP_DURATION, HTTP_REQUESTS};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, TelemetrySettings};

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
                Matcher::Suffix("_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            .expect("static bucket list is valid")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        bankgate_actors::metrics::describe();
        handle
    })
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

/// Names the route of a request path with its ids replaced, so labels stay bounded.
pub fn route_label(path: &str) -> &'static str {
    let mut parts = path.trim_matches('/').split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("healthz"), None, ..) => "/healthz",
        (Some("readyz"), None, ..) => "/readyz",
        (Some("metrics"), None, ..) => "/metrics",
        (Some("v1"), Some("balances"), None, ..) => "/v1/balances",
        (Some("v1"), Some("accounts"), Some(_), Some("balances"), None) => {
            "/v1/accounts/{id}/balances"
        }
        (Some("v1"), Some("banks"), None, ..) => "/v1/banks",
        (Some("v1"), Some("consents"), None, ..) => "/v1/consents",
        (Some("v1"), Some("consents"), Some(_), Some("callback"), None) => {
            "/v1/consents/{id}/callback"
        }
        (Some("v1"), Some("connections"), None, ..) => "/v1/connections",
        (Some("v1"), Some("connections"), Some(_), None, ..) => "/v1/connections/{id}",
        (Some("v1"), Some("openapi.yaml"), None, ..) => "/v1/openapi.yaml",
        (Some("ops"), ..) => "/ops",
        _ => "other",
    }
}

/// The handles of one (api, route, status class), registered once and reused per request.
struct HttpHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

type HandleKey = (&'static str, &'static str, &'static str);

static HTTP_HANDLES: std::sync::LazyLock<
    std::sync::RwLock<std::collections::HashMap<HandleKey, HttpHandles>>,
> = std::sync::LazyLock::new(Default::default);

/// Counts and times one answer.
fn record_http(key: HandleKey, elapsed: Duration) {
    let record = |handles: &HttpHandles| {
        handles.requests.increment(1);
        handles.duration.record(elapsed.as_secs_f64());
    };
    if let Some(handles) = HTTP_HANDLES.read().expect("metric handles").get(&key) {
        return record(handles);
    }
    let (api, route, class) = key;
    let handles = HttpHandles {
        requests: metrics::counter!(HTTP_REQUESTS, "api" => api, "route" => route, "status" => class),
        duration: metrics::histogram!(HTTP_DURATION, "api" => api, "route" => route),
    };
    record(&handles);
    HTTP_HANDLES
        .write()
        .expect("metric handles")
        .insert(key, handles);
}

/// Returns a warp log hook that counts and times each answer of `api` by route.
pub fn http_metrics(api: &'static str) -> warp::log::Log<impl Fn(warp::log::Info<'_>) + Copy> {
    warp::log::custom(move |info| {
        let class = match info.status().as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        record_http((api, route_label(info.path()), class), info.elapsed());
    })
}
