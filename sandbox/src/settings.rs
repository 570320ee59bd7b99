//! The `[sandbox]` settings section. The gateway's settings loader embeds it, so the sandbox is
//! configured in the same layered files and `BANKGATE__SANDBOX__…` variables as the gateway.

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    pub port: u16,
    pub rate_limit_per_s: u32,
    #[serde(with = "humantime_serde")]
    pub consent_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub max_hang: Duration,
    pub seed: u64,
    pub neonomics_client_id: String,
    pub neonomics_client_secret: SecretString,
}

/// A setting that parses but cannot work: its key (below `sandbox.`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    pub key: &'static str,
    pub reason: &'static str,
}

impl SandboxSettings {
    /// Rejects values that parse but cannot work.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        let invalid = |key, reason| Err(InvalidSetting { key, reason });
        if self.port > u16::MAX - 2 {
            return invalid("sandbox.port", "must leave room for port + 2");
        }
        if self.rate_limit_per_s == 0 {
            return invalid("sandbox.rate_limit_per_s", "must be at least 1");
        }
        if self.consent_ttl.is_zero() || self.access_token_ttl.is_zero() {
            return invalid("sandbox.*_ttl", "must be greater than zero");
        }
        Ok(())
    }
}
