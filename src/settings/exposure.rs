//! The development values that ship in `config/default.toml` (the token secret, the ops
//! token, the webhook secrets, the Neonomics client secret) are published with the source:
//! a gateway reachable beyond this machine must not run with any of them. `bankgate serve`
//! asks `exposed_development_value` before it starts; on loopback (the demo, the tests) they
//! stay usable.

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::{ExposeSecret, SecretString};

use super::{DEFAULT_TOML, Settings, webhook_secret_key};

impl Settings {
    /// The key of the first built-in development value in force, when a listener is bound
    /// beyond loopback; `None` when none is, or every listener is on loopback.
    pub fn exposed_development_value(&self) -> Option<String> {
        let exposed = [self.http.client_addr, self.http.ops_addr]
            .iter()
            .any(|addr| !addr.ip().is_loopback());
        if !exposed {
            return None;
        }
        let defaults: Settings = Figment::from(Toml::string(DEFAULT_TOML))
            .extract()
            .expect("the built-in defaults parse");
        let same = |a: &SecretString, b: &SecretString| a.expose_secret() == b.expose_secret();
        if same(&self.auth.token_secret, &defaults.auth.token_secret) {
            return Some("auth.token_secret".to_owned());
        }
        let neonomics = &self.providers.neonomics.client_secret;
        if same(neonomics, &defaults.providers.neonomics.client_secret) {
            return Some("providers.neonomics.client_secret".to_owned());
        }
        for (source, secret) in self.webhooks.secrets.iter() {
            if defaults
                .webhooks
                .secrets
                .iter()
                .any(|(_, d)| same(secret, d))
            {
                return Some(webhook_secret_key(source));
            }
        }
        let development_tokens: Vec<_> =
            defaults.ops.admin_tokens.iter().map(|t| &t.token).collect();
        self.ops
            .admin_tokens
            .iter()
            .any(|t| development_tokens.iter().any(|d| same(&t.token, d)))
            .then(|| "ops.admin_tokens".to_owned())
    }
}
