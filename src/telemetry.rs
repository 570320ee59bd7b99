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

/// The route a request is counted under: its path with the ids replaced, so labels stay
/// bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Healthz,
    Readyz,
    Metrics,
    Balances,
    AccountBalances,
    Banks,
    Consents,
    ConsentCallback,
    Connections,
    Connection,
    Payments,
    Payment,
    PaymentCallback,
    Webhook,
    OpenApi,
    Ops,
    Other,
}

impl Route {
    const COUNT: usize = Route::Other as usize + 1;

    fn of(path: &str) -> Route {
        let mut parts = path.trim_matches('/').split('/');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("healthz"), None, ..) => Route::Healthz,
            (Some("readyz"), None, ..) => Route::Readyz,
            (Some("metrics"), None, ..) => Route::Metrics,
            (Some("v1"), Some("balances"), None, ..) => Route::Balances,
            (Some("v1"), Some("accounts"), Some(_), Some("balances"), None) => {
                Route::AccountBalances
            }
            (Some("v1"), Some("banks"), None, ..) => Route::Banks,
            (Some("v1"), Some("consents"), None, ..) => Route::Consents,
            (Some("v1"), Some("consents"), Some(_), Some("callback"), None) => {
                Route::ConsentCallback
            }
            (Some("v1"), Some("connections"), None, ..) => Route::Connections,
            (Some("v1"), Some("connections"), Some(_), None, ..) => Route::Connection,
            (Some("v1"), Some("payments"), None, ..) => Route::Payments,
            (Some("v1"), Some("payments"), Some(_), None, ..) => Route::Payment,
            (Some("v1"), Some("payments"), Some(_), Some("callback"), None) => {
                Route::PaymentCallback
            }
            (Some("v1"), Some("webhooks"), Some(_), Some(_), None) => Route::Webhook,
            (Some("v1"), Some("openapi.yaml"), None, ..) => Route::OpenApi,
            (Some("ops"), ..) => Route::Ops,
            _ => Route::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Balances => "/v1/balances",
            Route::AccountBalances => "/v1/accounts/{id}/balances",
            Route::Banks => "/v1/banks",
            Route::Consents => "/v1/consents",
            Route::ConsentCallback => "/v1/consents/{id}/callback",
            Route::Connections => "/v1/connections",
            Route::Connection => "/v1/connections/{id}",
            Route::Payments => "/v1/payments",
            Route::Payment => "/v1/payments/{id}",
            Route::PaymentCallback => "/v1/payments/{id}/callback",
            Route::Webhook => "/v1/webhooks/{source}",
            Route::OpenApi => "/v1/openapi.yaml",
            Route::Ops => "/ops",
            Route::Other => "other",
        }
    }
}

/// The listener an answer came from: the `api` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Client,
    Ops,
}

impl Api {
    const COUNT: usize = 2;

    fn label(self) -> &'static str {
        match self {
            Api::Client => "client",
            Api::Ops => "ops",
        }
    }
}

/// The `status` label: the status code's class.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Counts and times one answer. Every request makes one, so each label set's handles are
/// registered at its first answer and reused, with no look-up by label.
fn record_http(api: Api, route: Route, status: u16, elapsed: Duration) {
    const SLOTS: usize = Api::COUNT * Route::COUNT;
    static COUNTERS: [OnceLock<metrics::Counter>; SLOTS * STATUS_CLASSES.len()] =
        [const { OnceLock::new() }; SLOTS * STATUS_CLASSES.len()];
    static DURATIONS: [OnceLock<metrics::Histogram>; SLOTS] = [const { OnceLock::new() }; SLOTS];
    let class = usize::from(status / 100).clamp(1, STATUS_CLASSES.len()) - 1;
    let slot = api as usize * Route::COUNT + route as usize;
    let (api, route) = (api.label(), route.label());
    COUNTERS[slot * STATUS_CLASSES.len() + class]
        .get_or_init(|| {
            metrics::counter!(HTTP_REQUESTS, "api" => api, "route" => route, "status" => STATUS_CLASSES[class])
        })
        .increment(1);
    DURATIONS[slot]
        .get_or_init(|| metrics::histogram!(HTTP_DURATION, "api" => api, "route" => route))
        .record(elapsed.as_secs_f64());
}

/// Returns a warp log hook that counts and times each answer of `api` by route.
pub fn http_metrics(api: Api) -> warp::log::Log<impl Fn(warp::log::Info<'_>) + Copy> {
    warp::log::custom(move |info| {
        record_http(
            api,
            Route::of(info.path()),
            info.status().as_u16(),
            info.elapsed(),
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_counted_under_their_routes() {
        for (path, route) in [
            ("/healthz", "/healthz"),
            ("/v1/balances", "/v1/balances"),
            (
                "/v1/accounts/7f6d97bd/balances",
                "/v1/accounts/{id}/balances",
            ),
            ("/v1/consents/abc/callback", "/v1/consents/{id}/callback"),
            ("/v1/connections/abc", "/v1/connections/{id}"),
            ("/v1/payments", "/v1/payments"),
            ("/v1/payments/abc", "/v1/payments/{id}"),
            ("/v1/payments/abc/callback", "/v1/payments/{id}/callback"),
            ("/v1/webhooks/psd2/dnb", "/v1/webhooks/{source}"),
            ("/v1/webhooks/psd2/dnb/x", "other"),
            ("/ops/banks/dnb/modes", "/ops"),
            ("/v1/accounts/7f6d97bd", "other"),
            ("/wp-admin/setup.php", "other"),
        ] {
            assert_eq!(Route::of(path).label(), route, "{path}");
        }
    }
}
