//! The sections of the settings this crate owns, each with the checks of its own values
//! (`validate`, naming the full key). The sections the actors crate owns (`[banks]`,
//! `[balances]`, `[sessions]`, `[breaker]`) and the sandbox's `[sandbox]` validate
//! themselves there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bankgate_actors::provider::ProviderLimits;
use bankgate_actors::{BankId, WebhookSource};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::SettingsError;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub client_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub body_limit_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_alive_interval: Duration,
    /// Connections each listener holds at once.
    pub max_connections: usize,
    /// Connections each listener holds at once from one peer address: behind a load
    /// balancer, every connection comes from the balancer, so this must cover its pool.
    pub max_connections_per_peer: usize,
    /// A response the client does not read for this long (its writes stalled) closes the
    /// connection.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Where browsers reach the client API; `None` means the bound client address.
    #[serde(default)]
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// The server to use; `None` lets `demo` start a private cluster.
    pub url: Option<SecretString>,
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// PostgreSQL cancels a statement that runs longer.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    pub data_dir: PathBuf,
    /// Lets a gateway reachable from beyond this machine connect to a database beyond it
    /// with an `sslmode` below `verify-full` (`serve` refuses that otherwise): the operator's
    /// explicit choice, as where the network to the database is protected in another way.
    pub allow_unverified_tls: bool,
}

impl DatabaseSettings {
    pub fn pool_options(&self) -> crate::postgres::PoolOptions {
        crate::postgres::PoolOptions {
            size: self.pool_size,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub token_secret: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersSettings {
    pub neonomics: NeonomicsSettings,
    pub psd2: Psd2Settings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeonomicsSettings {
    pub base_url: String,
    /// The token server's realm: the environment's (`sandbox`, `live`).
    pub realm: String,
    pub client_id: String,
    pub client_secret: SecretString,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub limits: ProviderLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Psd2Settings {
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub bank_urls: BTreeMap<BankId, String>,
    pub limits: ProviderLimits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSettings {
    pub min_amount: Decimal,
    pub max_amount: Decimal,
    pub per_user_limit: u32,
    pub per_ip_limit: u32,
    #[serde(with = "humantime_serde")]
    pub limit_window: Duration,
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub queue_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub in_flight_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub poll_after: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentsSettings {
    /// Where a user's browser may be sent back to once a consent is done: a consent's
    /// `redirect_url` must start with one of these (and continue with `/`, `?` or `#`, or
    /// end), so that the gateway never forwards a browser to an address Drop did not name.
    pub allowed_redirect_urls: Vec<String>,
    /// Consents a user may start per `limit_window` (429 with Retry-After beyond).
    pub per_user_limit: u32,
    #[serde(with = "humantime_serde")]
    pub limit_window: Duration,
    /// Consents a user may have pending (started within the last hour, SCA not finished)
    /// at once; a new one beyond is refused with 429.
    pub max_pending: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    #[serde(with = "humantime_serde")]
    pub tolerance: Duration,
    pub secrets: WebhookSecrets,
}

/// The HMAC-SHA256 secret of each webhook source: one per bank for the banks' own PSD2
/// pushes (each bank's is agreed with that bank). Neonomics pushes nothing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSecrets {
    pub psd2: BTreeMap<BankId, SecretString>,
}

impl WebhookSecrets {
    pub fn get(&self, source: WebhookSource) -> Option<&SecretString> {
        self.psd2.get(&source.bank?)
    }

    /// Each source that has a secret, with it.
    pub fn iter(&self) -> impl Iterator<Item = (WebhookSource, &SecretString)> {
        WebhookSource::all()
            .into_iter()
            .filter_map(|source| Some((source, self.get(source)?)))
    }
}

/// A source's settings key: `webhooks.secrets.psd2.dnb`.
pub fn webhook_secret_key(source: WebhookSource) -> String {
    format!("webhooks.secrets.{}", source.to_string().replace('/', "."))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsSettings {
    pub admin_tokens: Vec<AdminToken>,
}

/// An operator's (or a tool's) bearer token for the ops API, named for the audit trail.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub name: String,
    pub token: SecretString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    pub log_filter: String,
}

/// A value of a section that parses but cannot work, named by its full key.
fn invalid(key: &str, reason: impl Into<String>) -> Result<(), SettingsError> {
    Err(SettingsError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

fn check_url(key: &str, url: &str) -> Result<(), SettingsError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => invalid(key, format!("`{url}` is not an http(s) URL")),
    }
}

impl HttpSettings {
    /// How each listener treats its connections.
    pub fn serve_options(&self) -> bankgate_sandbox::http::ServeOptions {
        bankgate_sandbox::http::ServeOptions {
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
            body_read_timeout: self.body_read_timeout,
            keep_alive_interval: self.keep_alive_interval,
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            write_timeout: self.write_timeout,
            drain: self.shutdown_grace,
        }
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.client_addr == self.ops_addr && self.client_addr.port() != 0 {
            return invalid("http.ops_addr", "must differ from http.client_addr");
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.body_limit_bytes) {
            return invalid("http.body_limit_bytes", "must be between 1024 and 16777216");
        }
        for (key, value) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.idle_timeout", self.idle_timeout),
            ("http.body_read_timeout", self.body_read_timeout),
            ("http.keep_alive_interval", self.keep_alive_interval),
            ("http.write_timeout", self.write_timeout),
        ] {
            if value.is_zero() {
                return invalid(key, "must be greater than zero");
            }
        }
        if self.max_connections == 0 {
            return invalid("http.max_connections", "must be at least 1");
        }
        if self.max_connections_per_peer == 0 {
            return invalid("http.max_connections_per_peer", "must be at least 1");
        }
        match &self.public_url {
            Some(url) => check_url("http.public_url", url),
            None => Ok(()),
        }
    }
}

impl DatabaseSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if let Some(url) = &self.url
            && let Err(error) = crate::postgres::connection(url.expose_secret())
        {
            // The URL may hold a password: say what is wrong, never the URL.
            let reason = match error {
                crate::postgres::TlsError::Url(_) => {
                    "is not a PostgreSQL connection string".to_owned()
                }
                other => other.to_string(),
            };
            return invalid("database.url", reason);
        }
        if self.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.statement_timeout < Duration::from_millis(100) {
            return invalid("database.statement_timeout", "must be at least 100ms");
        }
        Ok(())
    }
}

impl AuthSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.token_secret.expose_secret().len() < 32 {
            return invalid("auth.token_secret", "must be at least 32 bytes");
        }
        Ok(())
    }
}

impl ProvidersSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        check_url("providers.neonomics.base_url", &self.neonomics.base_url)?;
        let realm = &self.neonomics.realm;
        let fits = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if realm.is_empty() || !realm.chars().all(fits) {
            return invalid(
                "providers.neonomics.realm",
                "must be a realm name such as `sandbox` or `live`",
            );
        }
        for bank in BankId::ALL {
            match self.psd2.bank_urls.get(&bank) {
                Some(url) => check_url("providers.psd2.bank_urls", url)?,
                None => {
                    return invalid("providers.psd2.bank_urls", format!("has no URL for {bank}"));
                }
            }
        }
        if self.neonomics.timeout.is_zero() || self.psd2.timeout.is_zero() {
            return invalid("providers.*.timeout", "must be greater than zero");
        }
        for (section, limits) in [
            ("providers.neonomics.limits", &self.neonomics.limits),
            ("providers.psd2.limits", &self.psd2.limits),
        ] {
            limits
                .validate()
                .map_err(|e| SettingsError::within(section, e))?;
        }
        Ok(())
    }

    /// The longest a provider call may take.
    pub fn longest_timeout(&self) -> Duration {
        self.neonomics.timeout.max(self.psd2.timeout)
    }
}

impl PaymentsSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.min_amount <= Decimal::ZERO || self.max_amount < self.min_amount {
            return invalid("payments.max_amount", "needs 0 < min_amount ≤ max_amount");
        }
        if self.per_user_limit == 0 || self.per_ip_limit == 0 || self.limit_window.is_zero() {
            return invalid(
                "payments",
                "per_user_limit, per_ip_limit and limit_window must be greater than zero",
            );
        }
        if self.idempotency_ttl < Duration::from_secs(24 * 3600) {
            return invalid("payments.idempotency_ttl", "must be at least 24h");
        }
        if self.drain_interval.is_zero() || self.queue_max_age.is_zero() {
            return invalid(
                "payments",
                "drain_interval and queue_max_age must be greater than zero",
            );
        }
        Ok(())
    }
}

impl ConsentsSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.per_user_limit == 0 || self.max_pending == 0 {
            return invalid(
                "consents.per_user_limit",
                "per_user_limit and max_pending must be at least 1",
            );
        }
        if self.limit_window.is_zero() {
            return invalid("consents.limit_window", "must be longer than zero");
        }
        if self.allowed_redirect_urls.is_empty() {
            return invalid(
                "consents.allowed_redirect_urls",
                "needs at least one URL users' browsers may return to",
            );
        }
        for url in &self.allowed_redirect_urls {
            let parsed = reqwest::Url::parse(url);
            if !parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
                return invalid(
                    "consents.allowed_redirect_urls",
                    format!("{url:?} is not an absolute http(s) URL"),
                );
            }
        }
        Ok(())
    }
}

impl WebhooksSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for source in WebhookSource::all() {
            match self.secrets.get(source) {
                Some(secret) if secret.expose_secret().len() >= 16 => {}
                _ => {
                    return invalid(
                        "webhooks.secrets",
                        format!("needs a secret of at least 16 bytes for {source}"),
                    );
                }
            }
        }
        let mut secrets: Vec<&str> = self
            .secrets
            .iter()
            .map(|(_, s)| s.expose_secret())
            .collect();
        secrets.sort_unstable();
        if secrets.windows(2).any(|pair| pair[0] == pair[1]) {
            return invalid(
                "webhooks.secrets",
                "each source needs its own secret: a shared one lets one bank's pushes pass as another's",
            );
        }
        Ok(())
    }
}

impl OpsSettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.admin_tokens.is_empty() {
            return invalid("ops.admin_tokens", "needs at least one token");
        }
        for (i, admin) in self.admin_tokens.iter().enumerate() {
            if admin.name.trim().is_empty() || admin.token.expose_secret().len() < 24 {
                return invalid(
                    "ops.admin_tokens",
                    "each needs a name and a token of at least 24 bytes",
                );
            }
            if self.admin_tokens[..i].iter().any(|a| a.name == admin.name) {
                return invalid("ops.admin_tokens", "names must be unique");
            }
        }
        Ok(())
    }
}

impl TelemetrySettings {
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if tracing_subscriber::EnvFilter::try_new(&self.log_filter).is_err() {
            return invalid("telemetry.log_filter", "is not a valid tracing filter");
        }
        Ok(())
    }
}
