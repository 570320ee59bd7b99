//! What tests need to run the actors alone: scripted fakes of the crate's ports and a helper
//! that starts the real tree over them.
//!
//! Compiled for this crate's own tests and, behind the `test-util` feature, for other crates'
//! tests (as linkerd exposes its `test_util`); never part of a production build.
//!
//! - `ScriptedUpstream` (`upstream.rs`) plays a provider: per bank and kind of call it answers,
//!   fails, answers late or hangs as the test scripts it, and counts what it received.
//! - `MemoryStore` (`store.rs`) plays PostgreSQL.
//! - `RecordingQueue` (`queue.rs`) plays the payment service for the drainer and records
//!   which banks it was asked to work.
//! - `TestTree` starts the real `ActorTree` over one scripted upstream per provider, a memory
//!   store and the recording queue, with `test_config`.
//!
//! The runbook's scenarios over `TestTree` are in `scenarios.rs`. Scenarios run on paused
//! tokio time (`#[tokio::test(start_paused = true)]`): a timer fires as soon as nothing else
//! can run, so waiting out a breaker's open period or a provider's timeout costs nothing.
//! Eventual conditions are polled with `eventually`.

mod queue;
#[cfg(test)]
mod scenarios;
mod store;
mod upstream;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::bank::{BankConfig, BankHandle};
use crate::breaker::BreakerConfig;
use crate::freshness::FreshnessConfig;
use crate::provider::ProviderConfig;
use crate::retry::RetryConfig;
use crate::session::{SessionConfig, SessionHandle};
use crate::tree::{ActorTree, TreeConfig};
use crate::upstream::{Store, Upstream};
use crate::{BankId, ProviderId};

pub use queue::RecordingQueue;
pub use store::MemoryStore;
pub use upstream::{Behaviour, Call, DEFAULT_BALANCE, ScriptedUpstream};

/// The user's IP on attended reads (documentation range, RFC 5737).
pub const PSU_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// The drainer's own tick, long enough never to fire in a scenario: every pass the recording
/// queue sees after start-up was asked for (a breaker closing).
pub const DRAIN_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// The tree's configuration for scenarios. What differs from production, and why:
///
/// - A cached balance is never fresh (`fresh_for` zero). Freshness is judged by the wall clock
///   (`chrono`), which paused tokio time does not move; with it zero every read asks the bank,
///   and a bank that fails serves its cached balance as stale, as it would a minute later.
/// - Breakers keep production's threshold (three failures) but a short window and open period
///   (10 s and 1 s), so a scenario waits out an open breaker in a few timer ticks.
/// - No retries in place and no jitter: each read costs one call per provider tried, so call
///   counts are exact. A test of retries turns them back on.
/// - No synthetic probe (`probe_interval` zero): a probe is a call the test did not ask for.
///   A test of recovery by probe sets one.
/// - Quotas and the user's rate limit far above what a scenario sends: both run on the wall
///   clock (governor), which paused time does not move either.
pub fn test_config() -> TreeConfig {
    let provider = ProviderConfig {
        rate_per_s: 100_000,
        concurrency: 1_000,
        retry: RetryConfig {
            max_retries: 0,
            jitter: 0.0,
            ..RetryConfig::default()
        },
        ..ProviderConfig::default()
    };
    TreeConfig {
        providers: ProviderId::ALL
            .into_iter()
            .map(|p| (p, provider.clone()))
            .collect(),
        bank: BankConfig {
            breaker: BreakerConfig {
                window: Duration::from_secs(10),
                open_for: Duration::from_secs(1),
                max_open: Duration::from_secs(10),
                ..BreakerConfig::default()
            },
            freshness: FreshnessConfig {
                fresh_for: Duration::ZERO,
                fresh_for_when_limited: Duration::ZERO,
                ..FreshnessConfig::default()
            },
            probe_interval: Duration::ZERO,
            ..BankConfig::default()
        },
        session: SessionConfig {
            user_rate_per_s: 100_000,
            user_burst: 100_000,
            ..SessionConfig::default()
        },
        cache_capacity: 10_000,
        persist_balances_every: Duration::from_millis(100),
    }
}

/// The real tree over fakes, and the fakes, for a test to script and inspect.
pub struct TestTree {
    pub tree: ActorTree,
    pub neonomics: ScriptedUpstream,
    pub psd2: ScriptedUpstream,
    pub store: MemoryStore,
    /// The drainer's payment service; empty after start-up (see `TestTree::start_with`).
    pub queue: RecordingQueue,
}

impl TestTree {
    /// Starts the tree with `test_config`.
    pub async fn start() -> TestTree {
        TestTree::start_with(test_config()).await
    }

    /// Starts the tree with `config`, and the drainer over the recording queue; waits for the
    /// drainer's first pass over every bank (it makes one at start) and forgets it, so the
    /// queue then records only the passes something asked for.
    pub async fn start_with(config: TreeConfig) -> TestTree {
        let neonomics = ScriptedUpstream::new(ProviderId::Neonomics);
        let psd2 = ScriptedUpstream::new(ProviderId::Psd2);
        let store = MemoryStore::new();
        let queue = RecordingQueue::default();
        let upstreams: Vec<Arc<dyn Upstream>> =
            vec![Arc::new(neonomics.clone()), Arc::new(psd2.clone())];
        let tree = ActorTree::start(config, upstreams, Arc::new(store.clone()) as Arc<dyn Store>)
            .await
            .expect("the tree starts");
        tree.start_drainer(Arc::new(queue.clone()), DRAIN_INTERVAL);
        eventually(
            "the drainer's start-up pass",
            Duration::from_secs(5),
            || {
                let worked = queue.worked();
                async move { BankId::ALL.iter().all(|bank| worked.contains(bank)) }
            },
        )
        .await;
        queue.take();
        TestTree {
            tree,
            neonomics,
            psd2,
            store,
            queue,
        }
    }

    /// The scripted upstream of `provider`.
    pub fn upstream(&self, provider: ProviderId) -> &ScriptedUpstream {
        match provider {
            ProviderId::Neonomics => &self.neonomics,
            ProviderId::Psd2 => &self.psd2,
        }
    }

    /// The handle of `bank`'s actor.
    pub fn bank(&self, bank: BankId) -> &BankHandle {
        &self.tree.banks[&bank]
    }

    /// A session of `user` (the same one on every call).
    pub fn session(&self, user: &str) -> SessionHandle {
        self.tree.sessions.get(user, "test-session")
    }

    pub async fn shutdown(self) {
        self.tree.shutdown().await;
    }
}

/// Polls `check` until it holds, panicking with `what` if it still does not after `within`
/// (of tokio time: on paused time the wait costs nothing, and a deadline can be generous).
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still not the case after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
