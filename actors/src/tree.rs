//! The root supervisor and the handle to the whole tree.
//!
//! The root starts one provider actor per provider, one bank actor per bank, the session
//! sweeper and (once the payment service exists) the queue drainer, all linked to it. When
//! one of them fails (a panic in a handler), the root counts
//! the restart and starts it again after a back-off that doubles with each quick failure (from
//! 100 ms up to 10 s, reset after a minute of good behaviour); its handle finds the new actor
//! through its `Slot`. Requests that were waiting on the failed actor get an error at once,
//! which the HTTP layer answers with 503; no one hangs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::balance_writer::BalanceWriter;
use crate::bank::{BalanceCache, BankActor, BankArgs, BankConfig, BankHandle};
use crate::breaker::BreakerConfig;
use crate::calls::CallLog;
use crate::config::{BalancesSection, BanksSection, SessionsSection};
use crate::drainer::{Drainer, DrainerArgs, DrainerHandle, DrainerMsg, PaymentQueue};
use crate::metrics;
use crate::modes::ModeBoard;
use crate::provider::{ProviderActor, ProviderConfig, ProviderHandle};
use crate::session::{SessionConfig, SessionDeps, SessionSweeper, Sessions};
use crate::slot::Slot;
use crate::upstream::{Store, Upstream};
use crate::{BankId, ProviderId};

pub use ractor::SpawnErr;

const FIRST_RESTART_DELAY: Duration = Duration::from_millis(100);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How far back `/ops/status` and the diagnosis look.
const CALL_WINDOW: Duration = Duration::from_secs(300);

/// Everything the tree is configured with.
#[derive(Debug, Clone, Default)]
pub struct TreeConfig {
    pub providers: HashMap<ProviderId, ProviderConfig>,
    pub bank: BankConfig,
    pub session: SessionConfig,
    /// Balances cached in memory at most.
    pub cache_capacity: u64,
    /// How long a live balance may wait to be written to the store with others.
    pub persist_balances_every: Duration,
}

impl TreeConfig {
    /// The tree as the settings' sections configure it.
    pub fn from_sections(
        providers: HashMap<ProviderId, ProviderConfig>,
        banks: &BanksSection,
        breaker: BreakerConfig,
        balances: &BalancesSection,
        sessions: &SessionsSection,
    ) -> TreeConfig {
        TreeConfig {
            providers,
            bank: BankConfig {
                providers: banks.provider_order.clone(),
                breaker,
                freshness: balances.freshness(),
                max_in_flight: banks.max_in_flight,
                unattended_per_day: balances.unattended_reads_per_day,
                probe_interval: banks.probe_interval,
            },
            session: SessionConfig {
                idle_timeout: sessions.idle_timeout,
                user_rate_per_s: sessions.user_rate_per_s,
                user_burst: sessions.user_burst,
                read_deadline: balances.read_deadline,
            },
            cache_capacity: balances.cache_capacity,
            persist_balances_every: balances.persist_every,
        }
    }
}

/// What a child of the root is, so it can be started again.
#[derive(Clone)]
pub enum Child {
    Provider(ProviderHandle),
    Bank(Box<BankArgs>),
    Sessions(Arc<Sessions>),
    Drainer(DrainerArgs),
}

impl Child {
    fn kind(&self) -> &'static str {
        match self {
            Child::Provider(_) => "provider",
            Child::Bank(_) => "bank",
            Child::Sessions(_) => "session_sweeper",
            Child::Drainer(_) => "drainer",
        }
    }

    fn name(&self) -> String {
        match self {
            Child::Provider(handle) => format!("provider {}", handle.id()),
            Child::Bank(args) => format!("bank {}", args.bank),
            Child::Sessions(_) => "session sweeper".to_owned(),
            Child::Drainer(_) => "queue drainer".to_owned(),
        }
    }

    async fn start(&self, supervisor: ActorCell) -> Result<ActorCell, ractor::SpawnErr> {
        Ok(match self {
            Child::Provider(handle) => {
                Actor::spawn_linked(None, ProviderActor, handle.clone(), supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            Child::Bank(args) => Actor::spawn_linked(None, BankActor, (**args).clone(), supervisor)
                .await?
                .0
                .get_cell(),
            Child::Sessions(sessions) => {
                Actor::spawn_linked(None, SessionSweeper, sessions.clone(), supervisor)
                    .await?
                    .0
                    .get_cell()
            }
            Child::Drainer(args) => Actor::spawn_linked(None, Drainer, args.clone(), supervisor)
                .await?
                .0
                .get_cell(),
        })
    }
}

struct Supervised {
    child: Child,
    restarts: u32,
    started: Instant,
}

pub enum RootMsg {
    Restart { child: Child, restarts: u32 },
}

pub struct RootActor;

pub struct RootState {
    children: HashMap<ractor::ActorId, Supervised>,
}

impl RootActor {
    async fn start_child(
        myself: &ActorRef<RootMsg>,
        state: &mut RootState,
        child: Child,
        restarts: u32,
    ) {
        match child.start(myself.get_cell()).await {
            Ok(cell) => {
                state.children.insert(
                    cell.get_id(),
                    Supervised {
                        child,
                        restarts,
                        started: Instant::now(),
                    },
                );
            }
            Err(error) => {
                warn!(child = %child.name(), error = %error, "child failed to start; retrying");
                let delay = restart_delay(restarts + 1);
                myself.send_after(delay, move || RootMsg::Restart {
                    child,
                    restarts: restarts + 1,
                });
            }
        }
    }
}

fn restart_delay(restarts: u32) -> Duration {
    FIRST_RESTART_DELAY
        .saturating_mul(2u32.saturating_pow(restarts.saturating_sub(1)))
        .min(MAX_RESTART_DELAY)
}

impl Actor for RootActor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = Vec<Child>;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        children: Vec<Child>,
    ) -> Result<RootState, ActorProcessingErr> {
        let mut state = RootState {
            children: HashMap::new(),
        };
        for child in children {
            let cell = child.start(myself.get_cell()).await?;
            state.children.insert(
                cell.get_id(),
                Supervised {
                    child,
                    restarts: 0,
                    started: Instant::now(),
                },
            );
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        message: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Restart { child, restarts } => {
                info!(child = %child.name(), restarts, "restarting actor");
                Self::start_child(&myself, state, child, restarts).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        // ractor's default stops the supervisor when a child fails; restart the child instead.
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(failed) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                let restarts = if failed.started.elapsed() > STABLE_AFTER {
                    1
                } else {
                    failed.restarts + 1
                };
                let delay = restart_delay(restarts);
                warn!(child = %failed.child.name(), error = %error, ?delay, "actor failed; restarting");
                ::metrics::counter!(metrics::ACTOR_RESTARTS, "actor" => failed.child.kind())
                    .increment(1);
                let child = failed.child;
                myself.send_after(delay, move || RootMsg::Restart { child, restarts });
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.children.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}

/// The running tree and the handles the HTTP layer uses.
pub struct ActorTree {
    root: ActorRef<RootMsg>,
    join: tokio::task::JoinHandle<()>,
    pub providers: HashMap<ProviderId, ProviderHandle>,
    pub banks: HashMap<BankId, BankHandle>,
    pub sessions: Arc<Sessions>,
    pub cache: BalanceCache,
    pub drainer: DrainerHandle,
    drainer_slot: Slot<DrainerMsg>,
    pub modes: Arc<ModeBoard>,
    pub calls: Arc<CallLog>,
    stop_writing: tokio::sync::watch::Sender<bool>,
    writer: tokio::task::JoinHandle<()>,
}

impl ActorTree {
    /// Starts the tree over the given provider APIs and store.
    pub async fn start(
        config: TreeConfig,
        upstreams: Vec<Arc<dyn Upstream>>,
        store: Arc<dyn Store>,
    ) -> Result<ActorTree, ractor::SpawnErr> {
        metrics::describe();
        let calls = Arc::new(CallLog::new(CALL_WINDOW));
        let cache: BalanceCache = moka::sync::Cache::builder()
            .max_capacity(config.cache_capacity.max(1))
            .time_to_live(config.bank.freshness.max_stale)
            .build();
        let providers: HashMap<ProviderId, ProviderHandle> = upstreams
            .into_iter()
            .map(|upstream| {
                let id = upstream.provider();
                let provider_config = config.providers.get(&id).cloned().unwrap_or_default();
                (
                    id,
                    ProviderHandle::new(upstream, provider_config, calls.clone()),
                )
            })
            .collect();
        let mut bank_config = config.bank.clone();
        bank_config.providers.retain(|p| providers.contains_key(p));

        let mut children: Vec<Child> = providers.values().cloned().map(Child::Provider).collect();
        let drainer_slot = Slot::default();
        let drainer = DrainerHandle::new(drainer_slot.clone());
        let modes = Arc::new(ModeBoard::default());
        let (stop_writing, stopped) = tokio::sync::watch::channel(false);
        let (balances, writer) =
            BalanceWriter::start(store.clone(), config.persist_balances_every, stopped);
        let mut banks = HashMap::new();
        for bank in BankId::ALL {
            let slot = Slot::default();
            banks.insert(bank, BankHandle::new(bank, slot.clone()));
            children.push(Child::Bank(Box::new(BankArgs {
                bank,
                config: bank_config.clone(),
                providers: providers.values().cloned().collect(),
                cache: cache.clone(),
                balances: balances.clone(),
                slot,
                drainer: drainer.clone(),
                modes: modes.clone(),
            })));
        }
        let deps = Arc::new(SessionDeps::new(
            store,
            banks.clone(),
            cache.clone(),
            modes.clone(),
            config.bank.freshness.fresh_for,
            config.session.clone(),
        ));
        let sessions = Sessions::new(deps);
        children.push(Child::Sessions(sessions.clone()));

        let (root, join) = Actor::spawn(None, RootActor, children).await?;
        Ok(ActorTree {
            root,
            join,
            providers,
            banks,
            sessions,
            cache,
            drainer,
            drainer_slot,
            modes,
            calls,
            stop_writing,
            writer,
        })
    }

    /// Starts the queue drainer under the root, over the payment service (which is built
    /// after the tree because it needs the bank handles).
    pub fn start_drainer(&self, queue: Arc<dyn PaymentQueue>, interval: Duration) {
        let child = Child::Drainer(DrainerArgs {
            queue,
            interval,
            slot: self.drainer_slot.clone(),
        });
        let _ = self
            .root
            .send_message(RootMsg::Restart { child, restarts: 0 });
    }

    /// Stops every actor, waits for the root to finish, then writes the balances still due.
    pub async fn shutdown(self) {
        self.root
            .stop_children_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        self.root.stop(None);
        let _ = self.join.await;
        let _ = self.stop_writing.send(true);
        let _ = self.writer.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_delay_doubles_to_a_cap() {
        let delays: Vec<_> = (1..=9).map(|n| restart_delay(n).as_millis()).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
    }
}
