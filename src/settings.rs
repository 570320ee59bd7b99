//! Layered settings: `config/default.toml` (built into the binary), then the file given with
//! `--config`, then `BANKGATE__SECTION__KEY` environment variables.
//!
//! Every struct denies unknown fields so that a typo fails at start instead of being ignored,
//! and `validate` rejects values that parse but cannot work. The loader takes the environment
//! as a map so tests never touch the process environment.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bankgate_actors::breaker::BreakerConfig;
use bankgate_actors::config::ConfigError;
use bankgate_actors::provider::ProviderLimits;
use bankgate_actors::{BankId, ProviderId};
pub use bankgate_sandbox::settings::SandboxSettings;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The built-in defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Prefix of environment variables that override settings; `__` separates the levels.
pub const ENV_PREFIX: &str = "BANKGATE__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub providers: ProvidersSettings,
    pub banks: BanksSettings,
    pub breaker: BreakerConfig,
    pub balances: BalancesSettings,
    pub sessions: SessionsSettings,
    pub payments: PaymentsSettings,
    pub webhooks: WebhooksSettings,
    pub ops: OpsSettings,
    pub sandbox: SandboxSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub client_addr: SocketAddr,
    pub ops_addr: SocketAddr,
    pub body_limit_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
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
    pub data_dir: PathBuf,
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
pub struct BanksSettings {
    pub provider_order: Vec<ProviderId>,
    pub max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancesSettings {
    #[serde(with = "humantime_serde")]
    pub fresh_for: Duration,
    #[serde(with = "humantime_serde")]
    pub fresh_for_when_rate_limited: Duration,
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    pub unattended_reads_per_day: u32,
    pub cache_capacity: u64,
    #[serde(with = "humantime_serde")]
    pub read_deadline: Duration,
    #[serde(with = "humantime_serde")]
    pub persist_every: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsSettings {
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub user_rate_per_s: u32,
    pub user_burst: u32,
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
pub struct WebhooksSettings {
    #[serde(with = "humantime_serde")]
    pub tolerance: Duration,
    pub secrets: BTreeMap<ProviderId, SecretString>,
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

/// Why settings could not be loaded; `main` prints it on one line and exits with 64.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("invalid `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl SettingsError {
    /// A section's own complaint, named by its full key.
    fn within(section: &str, error: ConfigError) -> SettingsError {
        SettingsError::Invalid {
            key: format!("{section}.{}", error.key),
            reason: error.reason,
        }
    }
}

impl Settings {
    /// Loads the layers in order and validates the result.
    pub fn load(
        file: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SettingsError::MissingFile(path.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let settings: Settings = figment
            .merge(EnvMap::new(env))
            .extract()
            .map_err(|e| SettingsError::Parse(one_line(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// Rejects settings that parse but cannot work.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, reason: &str| {
            Err(SettingsError::Invalid {
                key: key.to_owned(),
                reason: reason.to_owned(),
            })
        };
        if self.http.client_addr == self.http.ops_addr && self.http.client_addr.port() != 0 {
            return invalid("http.ops_addr", "must differ from http.client_addr");
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.http.body_limit_bytes) {
            return invalid("http.body_limit_bytes", "must be between 1024 and 16777216");
        }
        if self.http.header_read_timeout.is_zero() {
            return invalid("http.header_read_timeout", "must be greater than zero");
        }
        if let Some(url) = &self.database.url {
            let url = url.expose_secret();
            if url.parse::<tokio_postgres::Config>().is_err() {
                return invalid("database.url", "is not a PostgreSQL connection string");
            }
        }
        if self.database.pool_size == 0 {
            return invalid("database.pool_size", "must be at least 1");
        }
        if self.auth.token_secret.expose_secret().len() < 32 {
            return invalid("auth.token_secret", "must be at least 32 bytes");
        }
        check_url(
            "providers.neonomics.base_url",
            &self.providers.neonomics.base_url,
        )?;
        for bank in BankId::ALL {
            match self.providers.psd2.bank_urls.get(&bank) {
                Some(url) => check_url("providers.psd2.bank_urls", url)?,
                None => {
                    return invalid(
                        "providers.psd2.bank_urls",
                        &format!("has no URL for {bank}"),
                    );
                }
            }
        }
        if self.providers.neonomics.timeout.is_zero() || self.providers.psd2.timeout.is_zero() {
            return invalid("providers.*.timeout", "must be greater than zero");
        }
        for (section, limits) in [
            (
                "providers.neonomics.limits",
                &self.providers.neonomics.limits,
            ),
            ("providers.psd2.limits", &self.providers.psd2.limits),
        ] {
            limits
                .validate()
                .map_err(|e| SettingsError::within(section, e))?;
        }
        let order = &self.banks.provider_order;
        if order.is_empty() || (1..order.len()).any(|i| order[..i].contains(&order[i])) {
            return invalid(
                "banks.provider_order",
                "must name each provider at most once, and at least one",
            );
        }
        if self.banks.max_in_flight == 0 {
            return invalid("banks.max_in_flight", "must be at least 1");
        }
        self.breaker
            .validate()
            .map_err(|e| SettingsError::within("breaker", e))?;
        let balances = &self.balances;
        if balances.fresh_for > balances.max_stale
            || balances.fresh_for_when_rate_limited > balances.max_stale
        {
            return invalid(
                "balances.max_stale",
                "must be at least as long as the freshness periods",
            );
        }
        if balances.read_deadline.is_zero() {
            return invalid("balances.read_deadline", "must be greater than zero");
        }
        let sessions = &self.sessions;
        if sessions.idle_timeout.is_zero() || sessions.user_rate_per_s == 0 {
            return invalid(
                "sessions",
                "idle_timeout and user_rate_per_s must be greater than zero",
            );
        }
        let payments = &self.payments;
        if payments.min_amount <= Decimal::ZERO || payments.max_amount < payments.min_amount {
            return invalid("payments.max_amount", "needs 0 < min_amount ≤ max_amount");
        }
        if payments.per_user_limit == 0
            || payments.per_ip_limit == 0
            || payments.limit_window.is_zero()
        {
            return invalid(
                "payments",
                "per_user_limit, per_ip_limit and limit_window must be greater than zero",
            );
        }
        if payments.idempotency_ttl < Duration::from_secs(24 * 3600) {
            return invalid("payments.idempotency_ttl", "must be at least 24h");
        }
        if payments.drain_interval.is_zero() || payments.queue_max_age.is_zero() {
            return invalid(
                "payments",
                "drain_interval and queue_max_age must be greater than zero",
            );
        }
        // A payment may be looked up as abandoned only once no live request can still be
        // sending it: token, quota and the call itself each take up to the provider timeout.
        let longest_call = self
            .providers
            .neonomics
            .timeout
            .max(self.providers.psd2.timeout)
            * 4;
        if payments.in_flight_timeout < longest_call {
            return invalid(
                "payments.in_flight_timeout",
                "must be at least 4 × the longest provider timeout",
            );
        }
        for provider in ProviderId::ALL {
            match self.webhooks.secrets.get(&provider) {
                Some(secret) if secret.expose_secret().len() >= 16 => {}
                _ => {
                    return invalid(
                        "webhooks.secrets",
                        &format!("needs a secret of at least 16 bytes for {provider}"),
                    );
                }
            }
        }
        if self.ops.admin_tokens.is_empty() {
            return invalid("ops.admin_tokens", "needs at least one token");
        }
        for (i, admin) in self.ops.admin_tokens.iter().enumerate() {
            if admin.name.trim().is_empty() || admin.token.expose_secret().len() < 24 {
                return invalid(
                    "ops.admin_tokens",
                    "each needs a name and a token of at least 24 bytes",
                );
            }
            if self.ops.admin_tokens[..i]
                .iter()
                .any(|a| a.name == admin.name)
            {
                return invalid("ops.admin_tokens", "names must be unique");
            }
        }
        if let Some(url) = &self.http.public_url {
            check_url("http.public_url", url)?;
        }
        if let Err(e) = self.sandbox.validate() {
            return invalid(e.key, e.reason);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_filter).is_err() {
            return invalid("telemetry.log_filter", "is not a valid tracing filter");
        }
        Ok(())
    }
}

fn check_url(key: &'static str, url: &str) -> Result<(), SettingsError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        _ => Err(SettingsError::Invalid {
            key: key.to_owned(),
            reason: format!("`{url}` is not an http(s) URL"),
        }),
    }
}

/// Folds figment's error (which may hold several) into one line.
fn one_line(error: figment::Error) -> String {
    let count = error.count();
    let first = error
        .into_iter()
        .next()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let first = first.replace('\n', " ");
    if count > 1 {
        format!("{first} (and {} more)", count - 1)
    } else {
        first
    }
}

/// A figment provider over `BANKGATE__…` variables taken from a map.
struct EnvMap {
    vars: Vec<(String, String)>,
}

impl EnvMap {
    fn new(env: &HashMap<String, String>) -> EnvMap {
        let mut vars: Vec<_> = env
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ENV_PREFIX)?;
                Some((key.to_ascii_lowercase().replace("__", "."), v.clone()))
            })
            .collect();
        vars.sort();
        EnvMap { vars }
    }
}

impl Provider for EnvMap {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in &self.vars {
            let value: Value = raw.parse().expect("figment value parsing is infallible");
            insert_path(&mut dict, &key.split('.').collect::<Vec<_>>(), value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Inserts `value` at the path `keys` (`["http", "client_addr"]`), creating dictionaries.
fn insert_path(dict: &mut Dict, keys: &[&str], value: Value) {
    match keys {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, child) = entry {
                insert_path(child, rest, value);
            }
        }
    }
}
