//! Layered settings: `config/default.toml` (built into the binary), then the file given with
//! `--config`, then `BANKGATE__SECTION__KEY` environment variables.
//!
//! Every struct denies unknown fields so that a typo fails at start instead of being ignored,
//! and `validate` rejects values that parse but cannot work: each section checks its own
//! (`sections.rs` for this crate's, the actors crate's and the sandbox's beside their types),
//! `Settings::validate` what spans sections. The loader takes the environment as a map
//! (`env.rs`) so tests never touch the process environment. `exposure.rs` refuses the
//! built-in development secrets on a listener beyond loopback.

mod env;
mod exposure;
mod sections;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bankgate_actors::breaker::BreakerConfig;
use bankgate_actors::config::{BalancesSection, BanksSection, ConfigError, SessionsSection};
use figment::Figment;
use figment::providers::{Format, Toml};
use serde::Deserialize;

use env::{EnvMap, one_line};

pub use bankgate_sandbox::settings::SandboxSettings;
pub use exposure::is_loopback_host;
pub use sections::*;

/// The built-in defaults, compiled in so the binary runs from any directory.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment variables that override settings; `__` separates the levels.
pub const ENV_PREFIX: &str = "BANKGATE__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub http: HttpSettings,
    pub database: DatabaseSettings,
    pub auth: AuthSettings,
    pub providers: ProvidersSettings,
    pub banks: BanksSection,
    pub breaker: BreakerConfig,
    pub balances: BalancesSection,
    pub sessions: SessionsSection,
    pub payments: PaymentsSettings,
    pub consents: ConsentsSettings,
    pub webhooks: WebhooksSettings,
    pub ops: OpsSettings,
    pub sandbox: SandboxSettings,
    pub telemetry: TelemetrySettings,
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

    /// Rejects settings that parse but cannot work: each section's own checks, then those
    /// across sections.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.http.validate()?;
        self.database.validate()?;
        self.auth.validate()?;
        self.providers.validate()?;
        let owned_by_actors = [
            ("banks", self.banks.validate()),
            ("breaker", self.breaker.validate()),
            ("balances", self.balances.validate()),
            ("sessions", self.sessions.validate()),
        ];
        for (section, checked) in owned_by_actors {
            checked.map_err(|e| SettingsError::within(section, e))?;
        }
        self.payments.validate()?;
        self.consents.validate()?;
        self.webhooks.validate()?;
        self.ops.validate()?;
        self.sandbox
            .validate()
            .map_err(|e| SettingsError::Invalid {
                key: e.key.to_owned(),
                reason: e.reason.to_owned(),
            })?;
        self.telemetry.validate()?;
        // A payment may be looked up as abandoned only once no live request can still be
        // sending it: token, quota and the call itself each take up to the provider timeout.
        if self.payments.in_flight_timeout < self.providers.longest_timeout() * 4 {
            return Err(SettingsError::Invalid {
                key: "payments.in_flight_timeout".to_owned(),
                reason: "must be at least 4 × the longest provider timeout".to_owned(),
            });
        }
        Ok(())
    }
}
