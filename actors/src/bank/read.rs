//! Balance reads at one bank.
//!
//! Fresh cache first; otherwise the first provider in the bank's order whose breaker lets the
//! call through and where the user has a consented account. A live balance is cached and
//! answered by the call's task itself, one hop sooner than through the mailbox. A failure
//! feeds that path's breaker (`paths.rs`; a consent problem does not: it is the user's) and
//! the read fails over to the next provider; when none is left it is served stale from the
//! cache, with the bank's Norwegian warning, or answered as unavailable. Reads without the
//! user present are limited per account and day (PSD2); beyond the allowance the cache
//! answers.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};

use chrono::Utc;
use ractor::{ActorRef, RpcReplyPort};
use serde::Serialize;
use tokio::time::Instant;
use tracing::debug;
use uuid::Uuid;

use super::{BankMsg, BankState};
use crate::balance_writer::BalanceWriter;
use crate::breaker::{BreakerState, Permit};
use crate::freshness::Freshness;
use crate::metrics::{self, ReadSource};
use crate::modes::BalancesMode;
use crate::upstream::{Balance, BalanceCall, Connection, FailureClass, UpstreamError};
use crate::{BankId, ProviderId};

/// Last balances by connection, shared by all bank actors and kept across their restarts.
pub type BalanceCache = moka::sync::Cache<Uuid, Arc<Balance>>;

/// Where a served balance came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Live,
    CacheFresh,
    CacheStale,
}

impl Source {
    fn metric(self) -> ReadSource {
        match self {
            Source::Live => ReadSource::Live,
            Source::CacheFresh => ReadSource::CacheFresh,
            Source::CacheStale => ReadSource::CacheStale,
        }
    }
}

/// A notice for the user that comes with a balance, or in place of one. The actors say which
/// applies; the gateway says how it reads (in Norwegian, naming the bank).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warning {
    /// The bank is failing: the balance is the last one known and may be out of date.
    Stale,
    /// An operator has switched the bank's balances off.
    Disabled,
    /// Nothing live and nothing recent enough cached: no balance can be shown.
    Unavailable,
}

impl Warning {
    pub const ALL: [Warning; 3] = [Warning::Stale, Warning::Disabled, Warning::Unavailable];
}

/// The answer to one balance read.
#[derive(Debug, Clone)]
pub enum BalanceAnswer {
    Served {
        balance: Arc<Balance>,
        source: Source,
        warning: Option<Warning>,
    },
    /// Every provider that could answer said the user's consent is no longer valid.
    ConsentExpired { providers: Vec<ProviderId> },
    /// Nothing live and nothing recent enough cached.
    Unavailable { warning: Warning },
}

/// One read to serve.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub connection: Arc<Connection>,
    /// The user's IP when the user is present; `None` for background (unattended) reads.
    pub psu_ip: Option<IpAddr>,
    pub request_id: String,
}

/// Where a read's answer goes. The actor holds it; the task calling a provider holds it
/// weakly, so that it answers a live balance itself, without a trip back through the mailbox,
/// while an actor that dies drops it at once: its caller gets a 503 then, not a wait.
type ReplySlot = Arc<ReplyCell>;
type ReplyCell = Mutex<Option<RpcReplyPort<BalanceAnswer>>>;

pub(super) struct Pending {
    request: FetchRequest,
    reply: ReplySlot,
    tried: Vec<ProviderId>,
    consent_failed: Vec<ProviderId>,
}

/// The reply port in a read's slot, unless the read has been answered already.
fn take(slot: &ReplySlot) -> Option<RpcReplyPort<BalanceAnswer>> {
    slot.lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
}

/// Counts a served read by how it was served and answers it.
fn send_answer(bank: BankId, reply: RpcReplyPort<BalanceAnswer>, answer: BalanceAnswer) {
    let source = match &answer {
        BalanceAnswer::Served { source, .. } => source.metric(),
        BalanceAnswer::ConsentExpired { .. } => ReadSource::ConsentExpired,
        BalanceAnswer::Unavailable { .. } => ReadSource::Unavailable,
    };
    metrics::count_balance_read(bank, source);
    let _ = reply.send(answer);
}

/// What a read's call task needs to serve a live balance itself.
struct Served {
    bank: BankId,
    connection: Uuid,
    failed_over: bool,
    reply: Weak<ReplyCell>,
    cache: BalanceCache,
    balances: Arc<BalanceWriter>,
}

impl Served {
    /// Caches and persists the balance and holds on to the read's reply, before the actor
    /// hears of the outcome and forgets the read; returns the answer to send, unless the
    /// actor has died meanwhile.
    fn ready(self, balance: Balance) -> Option<impl FnOnce()> {
        self.balances.save(self.connection, balance.clone());
        let balance = Arc::new(balance);
        self.cache.insert(self.connection, balance.clone());
        let slot = self.reply.upgrade()?;
        Some(move || {
            let Some(reply) = take(&slot) else {
                return;
            };
            if self.failed_over {
                ::metrics::counter!(metrics::FAILOVERS, "bank" => self.bank.as_str()).increment(1);
            }
            let answer = BalanceAnswer::Served {
                balance,
                source: Source::Live,
                warning: None,
            };
            send_answer(self.bank, reply, answer);
        })
    }
}

impl BankState {
    /// The newest balance known for the connection: this process's cache or the database's.
    fn cached(&self, connection: &Connection) -> Option<Arc<Balance>> {
        let cached = self.args.cache.get(&connection.id);
        match (cached, &connection.last_balance) {
            (Some(a), Some(b)) => Some(if a.fetched_at >= b.fetched_at {
                a
            } else {
                Arc::new(b.clone())
            }),
            (a, b) => a.or_else(|| b.clone().map(Arc::new)),
        }
    }

    fn freshness(&self, balance: &Balance, now: Instant) -> Freshness {
        let age = (Utc::now() - balance.fetched_at)
            .to_std()
            .unwrap_or_default();
        self.args
            .config
            .freshness
            .classify(age, self.rate_limited(now))
    }

    pub(super) fn fetch(
        &mut self,
        myself: &ActorRef<BankMsg>,
        request: FetchRequest,
        reply: RpcReplyPort<BalanceAnswer>,
    ) {
        let now = Instant::now();
        let cached = self.cached(&request.connection);
        match self.args.modes.balances_pin(self.bank()) {
            Some(BalancesMode::Disabled) => {
                let warning = Warning::Disabled;
                return send_answer(self.bank(), reply, BalanceAnswer::Unavailable { warning });
            }
            Some(BalancesMode::Cached) => {
                let answer = self.cache_answer(cached, now);
                return send_answer(self.bank(), reply, answer);
            }
            Some(BalancesMode::Live) | None => {}
        }
        if let Some(balance) = &cached
            && self.freshness(balance, now) == Freshness::Fresh
        {
            send_answer(
                self.bank(),
                reply,
                BalanceAnswer::Served {
                    balance: balance.clone(),
                    source: Source::CacheFresh,
                    warning: None,
                },
            );
            return;
        }
        if request.psu_ip.is_none() && !self.count_unattended(request.connection.id) {
            // PSD2 allows few reads without the user; beyond them the cache has to do.
            let answer = match cached {
                Some(balance) if self.freshness(&balance, now) != Freshness::Expired => {
                    BalanceAnswer::Served {
                        balance,
                        source: Source::CacheStale,
                        warning: None,
                    }
                }
                _ => BalanceAnswer::Unavailable {
                    warning: Warning::Unavailable,
                },
            };
            send_answer(self.bank(), reply, answer);
            return;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.insert(
            ticket,
            Pending {
                request,
                reply: Arc::new(Mutex::new(Some(reply))),
                tried: Vec::new(),
                consent_failed: Vec::new(),
            },
        );
        self.dispatch(myself, ticket);
    }

    /// Counts an unattended read; returns whether it is still within today's allowance.
    fn count_unattended(&mut self, connection: Uuid) -> bool {
        let today = Utc::now().date_naive();
        if self
            .unattended
            .values()
            .next()
            .is_some_and(|(day, _)| *day != today)
        {
            // A new day: yesterday's counts are gone (and the map does not grow forever).
            self.unattended.retain(|_, (day, _)| *day == today);
        }
        let entry = self.unattended.entry(connection).or_insert((today, 0));
        if entry.0 != today {
            *entry = (today, 0);
        }
        if entry.1 >= self.args.config.unattended_per_day {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// Starts the read at the next usable provider, or degrades when none is left.
    fn dispatch(&mut self, myself: &ActorRef<BankMsg>, ticket: u64) {
        let now = Instant::now();
        let Some(pending) = self.pending.get(&ticket) else {
            return;
        };
        let connection = pending.request.connection.clone();
        let candidates: Vec<ProviderId> = self
            .args
            .config
            .providers
            .iter()
            .copied()
            .filter(|p| !pending.tried.contains(p) && connection.account_at(*p).is_some())
            .collect();
        if self.in_flight >= self.args.config.max_in_flight {
            debug!(bank = %self.bank(), "bulkhead full; not calling upstream");
            return self.finish_without_live(ticket);
        }
        for (index, &provider) in candidates.iter().enumerate() {
            let permit = self.permit(provider, now);
            if permit == Permit::Refused {
                continue;
            }
            let later_paths = candidates[index + 1..].iter().any(|p| {
                self.breakers
                    .get_mut(p)
                    .is_some_and(|b| b.state(now) != BreakerState::Open)
            });
            let Some(handle) = self.provider(provider) else {
                continue;
            };
            let bank = self.bank();
            let pending = self.pending.get_mut(&ticket).expect("pending read");
            pending.tried.push(provider);
            let call = BalanceCall {
                bank,
                account: connection
                    .account_at(provider)
                    .expect("candidate has an account")
                    .clone(),
                psu_ip: pending.request.psu_ip,
                request_id: pending.request.request_id.clone(),
            };
            let served = Served {
                bank,
                connection: connection.id,
                failed_over: pending.tried.len() > 1,
                reply: Arc::downgrade(&pending.reply),
                cache: self.args.cache.clone(),
                balances: self.args.balances.clone(),
            };
            self.in_flight += 1;
            let myself = myself.clone();
            let probe = permit == Permit::Probe;
            tokio::spawn(async move {
                // Failover is the better retry: retry in place only on the last path.
                let (result, answer) = match handle.balance(call, !later_paths).await {
                    Ok(balance) => (Ok(()), served.ready(balance)),
                    Err(error) => (Err(error), None),
                };
                // The outcome goes first: the actor then waits behind the caller, whom the
                // answer wakes next on this thread.
                let _ = myself.send_message(BankMsg::Outcome {
                    ticket,
                    provider,
                    probe,
                    result,
                });
                if let Some(answer) = answer {
                    answer();
                }
            });
            return;
        }
        self.finish_without_live(ticket);
    }

    pub(super) fn outcome(
        &mut self,
        myself: &ActorRef<BankMsg>,
        ticket: u64,
        provider: ProviderId,
        probe: bool,
        result: Result<(), UpstreamError>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let bank = self.bank();
        self.record(provider, probe, result.as_ref().err());
        if !self.pending.contains_key(&ticket) {
            return;
        }
        match result {
            Ok(()) => {
                self.pending.remove(&ticket);
            }
            Err(error) => {
                debug!(bank = %bank, provider = %provider, error = %error, "balance read failed");
                if error.class == FailureClass::Consent
                    && let Some(pending) = self.pending.get_mut(&ticket)
                {
                    pending.consent_failed.push(provider);
                }
                self.dispatch(myself, ticket);
            }
        }
    }

    /// Answers a read no provider served: consent problem, stale cache, or unavailable.
    fn finish_without_live(&mut self, ticket: u64) {
        let Some(pending) = self.pending.remove(&ticket) else {
            return;
        };
        let Some(reply) = take(&pending.reply) else {
            return;
        };
        let now = Instant::now();
        if !pending.consent_failed.is_empty() {
            let providers = pending.consent_failed;
            send_answer(
                self.bank(),
                reply,
                BalanceAnswer::ConsentExpired { providers },
            );
            return;
        }
        let answer = self.cache_answer(self.cached(&pending.request.connection), now);
        send_answer(self.bank(), reply, answer);
    }

    /// Answers from the cache alone: fresh, stale with the bank's warning, or unavailable.
    fn cache_answer(&self, cached: Option<Arc<Balance>>, now: Instant) -> BalanceAnswer {
        match cached {
            Some(balance) => match self.freshness(&balance, now) {
                Freshness::Fresh => BalanceAnswer::Served {
                    balance,
                    source: Source::CacheFresh,
                    warning: None,
                },
                Freshness::Stale => BalanceAnswer::Served {
                    balance,
                    source: Source::CacheStale,
                    warning: Some(Warning::Stale),
                },
                Freshness::Expired => BalanceAnswer::Unavailable {
                    warning: Warning::Unavailable,
                },
            },
            None => BalanceAnswer::Unavailable {
                warning: Warning::Unavailable,
            },
        }
    }
}
