//! The sandbox upstream: a simulator of Neonomics and of the banks' own NextGenPSD2 APIs, with
//! fault injection for every cause in the outage runbook. Tests, the demo and the benchmarks
//! run bankgate against it over real HTTP.
//!
//! Three listeners:
//! - control (`port`): `/sandbox/faults`, `/sandbox/ledger`, `/sandbox/requests` (calls
//!   received), consents, webhooks, and the SCA
//!   pages a user's browser is sent to (`/sandbox/sca/{id}` approves, as BankID would);
//! - Neonomics (`port + 1`): OAuth2 token, `/ics/v3/…`;
//! - the banks' PSD2 APIs (`port + 2`): `/{bank}/v1/…`, one base path per bank.
//!
//! Each provider has its own listener so that a `refuse` fault can close it for real.
//!
//! # Layout
//!
//! - `faults`, `world`, `accounts`, `rate_limit`, `webhooks`: the simulated state (fault
//!   injection, payments and consents, seeded accounts, per-provider quotas, status pushes).
//! - `neonomics`, `psd2`, `control`, `listener`: the three listeners and the `refuse`-able
//!   accept loop.
//! - `client`: `SandboxClient`, the typed client of the control API that tests, benches, the
//!   demo and the soak share.
//! - `settings`: the `[sandbox]` settings section, which the gateway's loader embeds.
//! - `http`: the connection loop, error envelope and request ids that every bankgate listener
//!   shares, the gateway's included: it lives here because the gateway depends on the sandbox
//!   (its CLI starts it) and never the reverse.
//! - `account_number`: Norwegian account numbers (MOD11) and IBANs (mod-97), which the banks'
//!   seeded accounts carry and the gateway's payment validation checks.

pub mod account_number;
mod accounts;
mod answered;
pub mod client;
mod control;
pub mod faults;
pub mod http;
mod listener;
mod neonomics;
mod psd2;
mod rate_limit;
pub mod settings;
mod spoiled;
pub mod webhooks;
pub mod world;

pub use crate::account_number::{iban_from_bban, is_valid_bban, is_valid_iban};
pub use crate::client::{ControlError, SandboxClient};
pub use crate::control::{LedgerFilter, RequestCount};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bankgate_actors::{BankId, ProviderId};
use tokio::sync::watch;
use tokio::task::JoinSet;
use warp::Filter;

use self::faults::{FaultKind, FaultStore, Injected, Target};
use self::rate_limit::ProviderLimit;
use self::webhooks::Webhooks;
use self::world::World;
use crate::http::{ServeOptions, bind, serve};
use crate::settings::SandboxSettings;

/// Where the sandbox listens and how its providers behave.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    pub ip: IpAddr,
    /// Port of the control listener; 0 picks free ports for all three listeners.
    pub port: u16,
    pub rate_limit_per_s: u32,
    pub consent_ttl: Duration,
    pub access_token_ttl: Duration,
    pub max_hang: Duration,
    pub seed: u64,
    pub neonomics_client_id: String,
    pub neonomics_client_secret: String,
}

impl SandboxOptions {
    pub fn from_settings(settings: &SandboxSettings) -> SandboxOptions {
        use secrecy::ExposeSecret;
        SandboxOptions {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: settings.port,
            rate_limit_per_s: settings.rate_limit_per_s,
            consent_ttl: settings.consent_ttl,
            access_token_ttl: settings.access_token_ttl,
            max_hang: settings.max_hang,
            seed: settings.seed,
            neonomics_client_id: settings.neonomics_client_id.clone(),
            neonomics_client_secret: settings.neonomics_client_secret.expose_secret().to_owned(),
        }
    }
}

/// What a request is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct RequestKey {
    pub provider: ProviderId,
    pub bank: Option<BankId>,
    pub service: Option<bankgate_actors::Service>,
}

/// Shared by every sandbox handler.
pub(crate) struct SandboxState {
    pub world: Mutex<World>,
    pub faults: Arc<FaultStore>,
    pub neonomics: Mutex<neonomics::Book>,
    neonomics_limit: ProviderLimit,
    psd2_limit: ProviderLimit,
    pub webhooks: Webhooks,
    /// Requests received per provider, bank and service, so tests can count upstream calls.
    pub requests: Mutex<std::collections::BTreeMap<RequestKey, u64>>,
    pub http: reqwest::Client,
    pub options: SandboxOptions,
    /// Base URL of the control listener, for SCA links.
    pub control_url: String,
}

impl SandboxState {
    fn limit(&self, provider: ProviderId) -> &ProviderLimit {
        match provider {
            ProviderId::Neonomics => &self.neonomics_limit,
            ProviderId::Psd2 => &self.psd2_limit,
        }
    }

    /// Applies the active faults to a request: waits out latency, hangs on a timeout fault
    /// (until the fault is removed or `max_hang` passes) and returns the failure to render.
    pub async fn gate(&self, target: Target) -> Option<Injected> {
        let key = RequestKey {
            provider: target.provider,
            bank: target.bank,
            service: target.service,
        };
        *self
            .requests
            .lock()
            .expect("requests")
            .entry(key)
            .or_default() += 1;
        let decision = self.faults.decide(target);
        if !decision.delay.is_zero() {
            tokio::time::sleep(decision.delay).await;
        }
        let failure = decision.failure?;
        if failure.kind == FaultKind::Timeout {
            self.hang(failure).await;
        }
        Some(failure)
    }

    /// After a payment initiation was carried out: the fault that spoils its answer, if one
    /// fires. A `lost_response` holds the answer back like a timeout first, for the handler
    /// to render as one; `garbled` and `reset` are applied to the answer by `spoiled::spoil`.
    pub async fn after_payment(&self, target: Target) -> Option<Injected> {
        let failure = self.faults.decide_after_payment(target)?;
        if failure.kind == FaultKind::LostResponse {
            self.hang(failure).await;
        }
        Some(failure)
    }

    /// Holds a request until the fault is removed or `max_hang` passes.
    async fn hang(&self, failure: Injected) {
        let deadline = tokio::time::Instant::now() + self.options.max_hang;
        let mut changes = self.faults.subscribe();
        while self.faults.is_active(failure.fault_id) && tokio::time::Instant::now() < deadline {
            tokio::select! {
                () = self.faults.changed(&mut changes) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    pub fn sca_url(&self, sca_id: &str) -> String {
        format!("{}/sandbox/sca/{sca_id}", self.control_url)
    }
}

/// A running sandbox. Dropping it without `shutdown` leaves its tasks to the runtime.
pub struct Sandbox {
    control: SocketAddr,
    neonomics: SocketAddr,
    psd2: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot start the sandbox: {0}")]
pub struct SandboxError(#[from] std::io::Error);

impl Sandbox {
    /// Binds the three listeners and starts serving.
    pub async fn start(options: SandboxOptions) -> Result<Sandbox, SandboxError> {
        let port_after = |offset: u16| {
            if options.port == 0 {
                0
            } else {
                options.port + offset
            }
        };
        let control_listener = bind(SocketAddr::new(options.ip, options.port)).await?;
        let neonomics_listener = bind(SocketAddr::new(options.ip, port_after(1))).await?;
        let psd2_listener = bind(SocketAddr::new(options.ip, port_after(2))).await?;
        let control = control_listener.local_addr()?;
        let neonomics_addr = neonomics_listener.local_addr()?;
        let psd2_addr = psd2_listener.local_addr()?;

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let state = Arc::new(SandboxState {
            world: Mutex::new(World::new(options.seed, options.consent_ttl)),
            faults: Arc::new(FaultStore::default()),
            neonomics: Mutex::new(neonomics::Book::default()),
            neonomics_limit: ProviderLimit::per_second(options.rate_limit_per_s),
            psd2_limit: ProviderLimit::per_second(options.rate_limit_per_s),
            webhooks: Webhooks::default(),
            requests: Mutex::default(),
            http,
            control_url: format!("http://{control}"),
            options,
        });

        let (shutdown, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let control_routes =
            control::routes(state.clone()).with(warp::log("bankgate::sandbox::control"));
        let control_stop = wait_for(stopped.clone());
        let control_options = ServeOptions::new(Duration::from_secs(10), Duration::from_secs(1));
        tasks.spawn(serve(
            control_listener,
            control_routes,
            control_options,
            control_stop,
        ));
        tasks.spawn(listener::run(
            ProviderId::Neonomics,
            neonomics_listener,
            neonomics::routes(state.clone()),
            state.faults.clone(),
            stopped.clone(),
        ));
        tasks.spawn(listener::run(
            ProviderId::Psd2,
            psd2_listener,
            psd2::routes(state.clone()),
            state.faults.clone(),
            stopped,
        ));
        Ok(Sandbox {
            control,
            neonomics: neonomics_addr,
            psd2: psd2_addr,
            shutdown,
            tasks,
        })
    }

    /// Base URL of the control API and SCA pages.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.control)
    }

    /// Base URL of the simulated Neonomics.
    pub fn neonomics_url(&self) -> String {
        format!("http://{}", self.neonomics)
    }

    /// Base URL of `bank`'s simulated NextGenPSD2 API (before `/consents`, `/accounts`, …).
    pub fn psd2_url(&self, bank: BankId) -> String {
        format!("http://{}/{bank}/v1", self.psd2)
    }

    pub fn neonomics_addr(&self) -> SocketAddr {
        self.neonomics
    }

    pub fn psd2_addr(&self) -> SocketAddr {
        self.psd2
    }

    /// Stops every listener and waits for them to close.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Reads `name` from `headers` as text.
pub(crate) fn header<'a>(headers: &'a warp::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Returns whether `url` is an absolute http(s) URL a browser can be redirected to.
pub(crate) fn is_redirect_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}

/// An account as both providers' payment bodies name it: `{"iban": …}` or `{"bban": …}`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountRef {
    iban: Option<String>,
    bban: Option<String>,
}

impl AccountRef {
    /// Returns the account number when exactly one valid IBAN or Norwegian BBAN is given.
    pub fn number(&self) -> Option<String> {
        match (&self.iban, &self.bban) {
            (Some(iban), None) if is_valid_iban(iban) => Some(iban.clone()),
            (None, Some(bban)) if is_valid_bban(bban) => Some(bban.clone()),
            _ => None,
        }
    }
}
