//! What a configuration section of this crate's says when it cannot work. Each `*Config` the
//! gateway's settings embed validates itself (`validate` beside its type) and names the key
//! within its own section; the settings loader adds the section's name.

/// A value that parses but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{key}`: {reason}")]
pub struct ConfigError {
    /// The key within the section, e.g. `open_for`.
    pub key: &'static str,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            key,
            reason: reason.into(),
        }
    }
}
