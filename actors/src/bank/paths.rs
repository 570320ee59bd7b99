//! The bank's provider paths: one breaker per provider, and the policy that feeds it.
//!
//! Every call asks `permit` first (an operator's pin, else the breaker), and every outcome
//! goes through `record`, the trip policy: an answer that only concerns the user or the
//! request (`FailureClass::is_path_failure` is false) leaves the path healthy; a 429 opens it
//! for the provider's `Retry-After`; refused credentials open it until the credentials
//! change; anything else counts towards the failure threshold. When every path of a bank is
//! open the bank is degraded automatically (balances from cache, payments queued); a path
//! that closes again lifts the degradation and wakes the queue drainer. The synthetic health
//! probe calls every path on a timer, so a bank nobody uses is still watched.

use ractor::ActorRef;
use serde::Serialize;
use tokio::time::Instant;
use tracing::info;

use super::{BankMsg, BankState};
use crate::breaker::{BreakerState, Permit};
use crate::metrics;
use crate::modes::BreakerPin;
use crate::upstream::{FailureClass, UpstreamError};
use crate::{BankId, ProviderId};

/// A bank's health as `/v1/banks` and ops see it.
#[derive(Debug, Clone, Serialize)]
pub struct BankStatus {
    pub bank: BankId,
    pub paths: Vec<PathStatus>,
    pub rate_limited: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathStatus {
    pub provider: ProviderId,
    pub breaker: BreakerState,
    /// An operator's override of the provider's breakers.
    pub pinned: Option<BreakerPin>,
    /// How long the breaker has been in its state.
    pub since_s: u64,
    pub last_error: Option<FailureClass>,
}

impl BankStatus {
    /// Whether any provider path can be tried (a breaker not open, or pinned closed).
    pub fn available(&self) -> bool {
        self.paths.iter().any(PathStatus::allows_calls)
    }
}

impl PathStatus {
    /// Whether a call may be tried on the path: pinned closed, or not open.
    pub fn allows_calls(&self) -> bool {
        match self.pinned {
            Some(BreakerPin::Closed) => true,
            Some(BreakerPin::Open) => false,
            None => self.breaker != BreakerState::Open,
        }
    }
}

impl BankState {
    pub(super) fn rate_limited(&self, now: Instant) -> bool {
        self.rate_limited_until.is_some_and(|until| until > now)
    }

    /// Whether a call through `provider` may go ahead: an operator's pin, else the breaker.
    pub(super) fn permit(&mut self, provider: ProviderId, now: Instant) -> Permit {
        match self.args.modes.breaker_pin(provider) {
            Some(BreakerPin::Open) => Permit::Refused,
            Some(BreakerPin::Closed) => Permit::Call,
            None => {
                let breaker = self
                    .breakers
                    .get_mut(&provider)
                    .expect("a breaker per configured provider");
                let before = breaker.state(now);
                let permit = breaker.permit(now);
                let after = breaker.state(now);
                if before != after {
                    self.export_breaker(provider, after);
                }
                permit
            }
        }
    }

    /// The synthetic health probe: one call per provider path whose breaker lets a call
    /// through (an open breaker waits for its time; a half-open one takes the probe as its
    /// trial). It feeds the breakers like any call, so a bank nobody uses is still watched,
    /// and a path that recovers closes its breaker and drains its queue without user traffic.
    pub(super) fn probe(&mut self, myself: &ActorRef<BankMsg>) {
        let now = Instant::now();
        let bank = self.bank();
        let providers = self.args.config.providers.clone();
        for provider in providers {
            if self.in_flight >= self.args.config.max_in_flight {
                return;
            }
            let permit = self.permit(provider, now);
            if permit == Permit::Refused {
                continue;
            }
            let Some(handle) = self.provider(provider) else {
                continue;
            };
            self.in_flight += 1;
            let myself = myself.clone();
            let probe = permit == Permit::Probe;
            tokio::spawn(async move {
                let result = handle.probe(bank).await;
                let _ = myself.send_message(BankMsg::ProbeOutcome {
                    provider,
                    probe,
                    result,
                });
            });
        }
    }

    pub(super) fn probe_outcome(
        &mut self,
        provider: ProviderId,
        probe: bool,
        error: Option<&UpstreamError>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let outcome = error.map_or("success", |e| e.class.as_str());
        ::metrics::counter!(metrics::PROBES, "bank" => self.bank().as_str(), "provider" => provider.as_str(), "outcome" => outcome)
            .increment(1);
        self.record(provider, probe, error);
    }

    /// Feeds one call's outcome to the path's breaker.
    pub(super) fn record(
        &mut self,
        provider: ProviderId,
        probe: bool,
        error: Option<&UpstreamError>,
    ) {
        let now = Instant::now();
        let bank = self.bank();
        let breaker = self
            .breakers
            .get_mut(&provider)
            .expect("a breaker per configured provider");
        let before = breaker.state(now);
        if let Some(error) = error {
            self.last_error.insert(provider, error.class);
        }
        match error {
            None => breaker.on_success(now),
            // The provider and bank answered: the path is healthy, and a half-open breaker's
            // trial has passed.
            Some(error) if !error.class.is_path_failure() => {
                if probe {
                    breaker.on_success(now);
                }
            }
            Some(error) => match error.class {
                FailureClass::RateLimited => {
                    let breakers = &self.args.config.breaker;
                    let wait = error
                        .retry_after
                        .unwrap_or(breakers.open_for)
                        .min(breakers.max_open);
                    breaker.open_for(now, wait);
                    self.rate_limited_until = Some(now + wait);
                }
                FailureClass::Credentials => breaker.force_open(now),
                _ => {
                    breaker.on_failure(now);
                }
            },
        }
        let after = breaker.state(now);
        if before != after {
            info!(bank = %bank, provider = %provider, from = before.as_str(), to = after.as_str(), "breaker changed");
            self.export_breaker(provider, after);
            ::metrics::counter!(metrics::BREAKER_TRANSITIONS, "bank" => bank.as_str(), "provider" => provider.as_str(), "to" => after.as_str())
                .increment(1);
            if after == BreakerState::Closed {
                self.args.modes.set_degraded(bank, false);
                self.args.drainer.wake(bank);
            } else if after == BreakerState::Open
                && self
                    .breakers
                    .values_mut()
                    .all(|b| b.state(now) == BreakerState::Open)
            {
                self.args.modes.set_degraded(bank, true);
            }
        }
    }

    pub(super) fn export_breaker(&self, provider: ProviderId, state: BreakerState) {
        ::metrics::gauge!(metrics::BREAKER_STATE, "bank" => self.bank().as_str(), "provider" => provider.as_str())
            .set(state.gauge());
    }

    pub(super) fn status(&mut self) -> BankStatus {
        let now = Instant::now();
        let paths = self
            .breakers
            .iter_mut()
            .map(|(&provider, breaker)| PathStatus {
                provider,
                breaker: breaker.state(now),
                pinned: self.args.modes.breaker_pin(provider),
                since_s: now.duration_since(breaker.since()).as_secs(),
                last_error: self.last_error.get(&provider).copied(),
            })
            .collect();
        BankStatus {
            bank: self.args.bank,
            paths,
            rate_limited: self.rate_limited(now),
        }
    }
}
