//! The gateway process: the actor tree over the provider clients and PostgreSQL, the client
//! API and the ops API on their own listeners.

mod auth;
mod balances;
mod banks;
mod client;
mod consents;
mod ops;
mod payments;
mod text;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bankgate_actors::bank::BankHandle;
use bankgate_actors::modes::ModeBoard;
use bankgate_actors::provider::{ProviderConfig, ProviderHandle};
use bankgate_actors::session::Sessions;
use bankgate_actors::tree::{ActorTree, TreeConfig};
use bankgate_actors::upstream::Upstream;
use bankgate_actors::{BankId, ProviderId};
use deadpool_postgres::Pool;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::consents::{ConsentLimits, ConsentStore, Consents};
use crate::ops::{AdminTokens, Ops, OpsStore};
use crate::payments::{
    AmountLimits, PaymentStore, Payments, PaymentsConfig, Queue, WebhookVerifier,
};
use crate::postgres::Database;
use crate::providers::neonomics::NeonomicsClient;
use crate::providers::psd2::Psd2Client;
use crate::settings::Settings;
use crate::store::PgStore;
use crate::token::TokenVerifier;
use bankgate_sandbox::http::{bind, serve};

/// What the gateway's handlers share; a clone is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

pub struct App {
    pub pool: Pool,
    pub ops: Arc<Ops>,
    pub sessions: Arc<Sessions>,
    pub banks: Arc<HashMap<BankId, BankHandle>>,
    pub providers: Arc<HashMap<ProviderId, ProviderHandle>>,
    pub tokens: Arc<TokenVerifier>,
    pub consents: Arc<Consents>,
    pub payments: Arc<Payments>,
    pub modes: Arc<ModeBoard>,
    pub body_limit: u64,
}

/// A running gateway.
pub struct Gateway {
    client: SocketAddr,
    ops: SocketAddr,
    tree: ActorTree,
    payments: Arc<Payments>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot start the gateway: {0}")]
    Listen(#[from] std::io::Error),
    #[error("cannot start the actor tree: {0}")]
    Actors(#[from] bankgate_actors::tree::SpawnErr),
}

/// How often old idempotency keys and idle rate-limiter entries are dropped.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

fn payments_config(settings: &Settings, public_url: &str) -> PaymentsConfig {
    let payments = &settings.payments;
    PaymentsConfig {
        limits: AmountLimits {
            min: payments.min_amount,
            max: payments.max_amount,
        },
        per_user_limit: payments.per_user_limit,
        per_ip_limit: payments.per_ip_limit,
        limit_window: payments.limit_window,
        idempotency_ttl: payments.idempotency_ttl,
        queue_max_age: payments.queue_max_age,
        in_flight_timeout: payments.in_flight_timeout,
        poll_after: payments.poll_after,
        public_url: public_url.to_owned(),
        allowed_redirects: settings.consents.allowed_redirect_urls.clone(),
    }
}

/// Translates settings into the actor tree's configuration.
pub fn tree_config(settings: &Settings) -> TreeConfig {
    let providers = &settings.providers;
    let provider = |limits, timeout| ProviderConfig::from_limits(limits, timeout);
    TreeConfig::from_sections(
        HashMap::from([
            (
                ProviderId::Neonomics,
                provider(&providers.neonomics.limits, providers.neonomics.timeout),
            ),
            (
                ProviderId::Psd2,
                provider(&providers.psd2.limits, providers.psd2.timeout),
            ),
        ]),
        &settings.banks,
        settings.breaker,
        &settings.balances,
        &settings.sessions,
    )
}

impl Gateway {
    /// Binds both listeners, starts the actor tree and serves. The pool must point at a
    /// migrated database.
    pub async fn start(settings: &Settings, database: Database) -> Result<Gateway, GatewayError> {
        let pool = database.pool.clone();
        crate::telemetry::prometheus();
        let client_listener = bind(settings.http.client_addr).await?;
        let ops_listener = bind(settings.http.ops_addr).await?;
        let client = client_listener.local_addr()?;
        let ops = ops_listener.local_addr()?;

        let store = PgStore::new(pool.clone());
        let neonomics = NeonomicsClient::new(&settings.providers.neonomics);
        let psd2 = Psd2Client::new(&settings.providers.psd2);
        let upstreams: Vec<Arc<dyn Upstream>> = vec![neonomics, psd2];
        let tree = ActorTree::start(tree_config(settings), upstreams, store).await?;
        let public_url = settings
            .http
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{client}"));
        let banks = Arc::new(tree.banks.clone());
        let providers = Arc::new(tree.providers.clone());
        let payments = Arc::new(Payments::new(
            PaymentStore::new(pool.clone()),
            banks.clone(),
            providers.clone(),
            tree.drainer.clone(),
            tree.modes.clone(),
            WebhookVerifier::new(&settings.webhooks.secrets, settings.webhooks.tolerance),
            payments_config(settings, &public_url),
        ));
        tree.start_drainer(
            Arc::new(Queue(payments.clone())),
            settings.payments.drain_interval,
        );
        let payments_handle = payments.clone();
        let ops_service = Arc::new(Ops::new(
            OpsStore::new(pool.clone()),
            tree.modes.clone(),
            banks.clone(),
            providers.clone(),
            payments.clone(),
            tree.calls.clone(),
            tree.drainer.clone(),
            AdminTokens::new(&settings.ops.admin_tokens),
        ));
        if let Err(error) = ops_service.load().await {
            tracing::warn!(error = %error, "ops settings not loaded at start; retrying in the background");
        }

        let consents = Arc::new(Consents::new(
            ConsentStore::new(pool.clone()),
            banks.clone(),
            providers.clone(),
            tree.sessions.clone(),
            settings.banks.provider_order.clone(),
            public_url,
            ConsentLimits::new(&settings.consents),
        ));
        let state = AppState(Arc::new(App {
            pool,
            ops: ops_service.clone(),
            sessions: tree.sessions.clone(),
            banks,
            providers,
            tokens: Arc::new(TokenVerifier::new(&settings.auth.token_secret)),
            consents: consents.clone(),
            payments: payments.clone(),
            modes: tree.modes.clone(),
            body_limit: settings.http.body_limit_bytes,
        }));
        let options = settings.http.serve_options();

        let (shutdown, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(serve(
            client_listener,
            client::routes(state.clone()),
            options,
            wait_for(stopped.clone()),
        ));
        tasks.spawn(serve(
            ops_listener,
            ops::routes(state),
            options,
            wait_for(stopped.clone()),
        ));
        tasks.spawn(async move {
            let housekeeping = async {
                let mut every = tokio::time::interval(HOUSEKEEPING_EVERY);
                loop {
                    every.tick().await;
                    payments.housekeeping().await;
                    consents.housekeeping();
                }
            };
            tokio::select! {
                () = crate::telemetry::upkeep() => {}
                () = housekeeping => {}
                () = ops_service.run(database) => {}
                () = wait_for(stopped) => {}
            }
        });
        Ok(Gateway {
            client,
            ops,
            tree,
            payments: payments_handle,
            shutdown,
            tasks,
        })
    }

    pub fn client_url(&self) -> String {
        format!("http://{}", self.client)
    }

    pub fn ops_url(&self) -> String {
        format!("http://{}", self.ops)
    }

    /// The payment service, for its internal controls (payments modes).
    pub fn payments(&self) -> &Payments {
        &self.payments
    }

    /// The actor tree, for chaos hooks and status.
    pub fn actors(&self) -> &ActorTree {
        &self.tree
    }

    /// Stops accepting, lets in-flight requests finish (up to the shutdown grace), then
    /// stops the actors.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.tree.shutdown().await;
    }
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
