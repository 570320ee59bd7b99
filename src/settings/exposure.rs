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
    /// Whether the gateway is reachable from beyond this machine: a listener bound beyond
    /// loopback, or a public URL naming another host (a gateway on loopback behind a reverse
    /// proxy is as reachable as one bound to every address).
    pub fn exposed(&self) -> bool {
        let listening = [self.http.client_addr, self.http.ops_addr]
            .iter()
            .any(|addr| !addr.ip().is_loopback());
        let public = (self.http.public_url.as_deref())
            .is_some_and(|url| !reqwest::Url::parse(url).is_ok_and(|u| names_this_machine(&u)));
        listening || public
    }

    /// The key of the first built-in development value in force when the gateway is exposed
    /// (`exposed`); `None` when none is, or the gateway is reachable from this machine only.
    pub fn exposed_development_value(&self) -> Option<String> {
        if !self.exposed() {
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

    /// The database URL's `sslmode` when an exposed gateway (`exposed`) would connect to a
    /// database beyond this machine without checking the server's name (below
    /// `verify-full`), and the operator has not accepted that with
    /// `database.allow_unverified_tls`; `None` when it may connect.
    pub fn exposed_unverified_database(&self) -> Option<String> {
        if !self.exposed() || self.database.allow_unverified_tls {
            return None;
        }
        let url = self.database.url.as_ref()?;
        crate::postgres::tls::unverified_remote(url.expose_secret())
    }
}

/// Whether `url`'s host is this machine: `localhost` or a loopback address.
fn names_this_machine(url: &reqwest::Url) -> bool {
    url.host_str().is_some_and(is_loopback_host)
}

/// Whether a host name or address (an IPv6 one bracketed or not) is this machine's loopback.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
