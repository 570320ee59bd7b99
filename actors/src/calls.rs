//! The recent calls to each provider for each bank: what `/ops/status` and the diagnosis
//! read (failure rate, failures by class and since when, p95 latency over the last minutes).
//! Bounded in time and in size; recording takes one short lock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::upstream::FailureClass;
use crate::{BankId, ProviderId, Service};

/// Calls remembered at most, whatever the window.
const MAX_CALLS: usize = 100_000;
/// Timed calls that make a path's recent latency.
const RECENT_CALLS: usize = 20;

#[derive(Debug, Clone, Copy)]
struct Call {
    at: Instant,
    bank: BankId,
    provider: ProviderId,
    service: Service,
    failure: Option<FailureClass>,
    latency: Duration,
}

/// One (bank, provider) path over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PathStats {
    pub calls: u64,
    /// Failures that say the path is unhealthy (not consent or client errors).
    pub path_failures: u64,
    pub failures: BTreeMap<&'static str, u64>,
    /// Seconds since the oldest failure in the window.
    pub failing_for_s: Option<u64>,
    pub p95_ms: Option<u64>,
    /// p95 latency of the path's latest `RECENT_CALLS` timed calls: how it answers now.
    pub recent_p95_ms: Option<u64>,
    pub last_error: Option<FailureClass>,
    /// Path failures since the path last answered well: the incident as it stands now, which
    /// minutes of healthy history before it (or a past incident) must not hide.
    pub current_failures: u64,
    /// `current_failures` by class.
    pub current: BTreeMap<&'static str, u64>,
}

impl PathStats {
    pub fn failure_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.path_failures as f64 / self.calls as f64
        }
    }

    pub fn count(&self, class: FailureClass) -> u64 {
        self.failures.get(class.as_str()).copied().unwrap_or(0)
    }

    /// Failures of `class` since the path last answered well.
    pub fn current_count(&self, class: FailureClass) -> u64 {
        self.current.get(class.as_str()).copied().unwrap_or(0)
    }
}

pub struct CallLog {
    window: Duration,
    calls: Mutex<VecDeque<Call>>,
}

impl CallLog {
    pub fn new(window: Duration) -> CallLog {
        CallLog {
            window,
            calls: Mutex::new(VecDeque::new()),
        }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn record(
        &self,
        bank: BankId,
        provider: ProviderId,
        service: Service,
        failure: Option<FailureClass>,
        latency: Duration,
    ) {
        let now = Instant::now();
        let mut calls = self.calls.lock().expect("call log");
        Self::prune(&mut calls, now, self.window);
        if calls.len() >= MAX_CALLS {
            calls.pop_front();
        }
        calls.push_back(Call {
            at: now,
            bank,
            provider,
            service,
            failure,
            latency,
        });
    }

    fn prune(calls: &mut VecDeque<Call>, now: Instant, window: Duration) {
        while calls
            .front()
            .is_some_and(|c| now.duration_since(c.at) > window)
        {
            calls.pop_front();
        }
    }

    /// Every path that had calls in the window.
    pub fn summary(&self) -> BTreeMap<(BankId, ProviderId), PathStats> {
        let now = Instant::now();
        let mut calls = self.calls.lock().expect("call log");
        Self::prune(&mut calls, now, self.window);
        let mut paths: BTreeMap<(BankId, ProviderId), (PathStats, Vec<Duration>)> = BTreeMap::new();
        for call in calls.iter() {
            let (stats, latencies) = paths.entry((call.bank, call.provider)).or_default();
            stats.calls += 1;
            if call.service == Service::Aisp || call.failure.is_some() {
                latencies.push(call.latency);
            }
            match call.failure {
                None => {
                    stats.current_failures = 0;
                    stats.current.clear();
                }
                Some(class) => {
                    *stats.failures.entry(class.as_str()).or_default() += 1;
                    stats.last_error = Some(class);
                    // A consent or client error says nothing of the path's health either way.
                    if class.is_path_failure() {
                        stats.path_failures += 1;
                        stats.current_failures += 1;
                        *stats.current.entry(class.as_str()).or_default() += 1;
                        if stats.failing_for_s.is_none() {
                            stats.failing_for_s = Some(now.duration_since(call.at).as_secs());
                        }
                    }
                }
            }
        }
        paths
            .into_iter()
            .map(|(key, (mut stats, mut latencies))| {
                let recent = latencies.len().saturating_sub(RECENT_CALLS);
                stats.recent_p95_ms = p95_ms(&mut latencies[recent..].to_vec());
                stats.p95_ms = p95_ms(&mut latencies);
                (key, stats)
            })
            .collect()
    }
}

fn p95_ms(latencies: &mut [Duration]) -> Option<u64> {
    latencies.sort();
    let index = (latencies.len() * 95).div_ceil(100).checked_sub(1)?;
    Some(latencies[index].as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_failures_by_class_and_forgets_old_calls() {
        let log = CallLog::new(Duration::from_secs(300));
        let ok = Duration::from_millis(20);
        for _ in 0..8 {
            log.record(BankId::Dnb, ProviderId::Neonomics, Service::Aisp, None, ok);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        for class in [FailureClass::Timeout, FailureClass::Consent] {
            log.record(
                BankId::Dnb,
                ProviderId::Neonomics,
                Service::Aisp,
                Some(class),
                Duration::from_secs(3),
            );
        }
        let summary = log.summary();
        let dnb = &summary[&(BankId::Dnb, ProviderId::Neonomics)];
        assert_eq!((dnb.calls, dnb.path_failures), (10, 1));
        assert_eq!(dnb.count(FailureClass::Consent), 1);
        assert_eq!(dnb.p95_ms, Some(3000));
        assert!((dnb.failure_rate() - 0.1).abs() < 1e-9);
        assert_eq!(
            dnb.current_failures, 1,
            "the timeout since the last success"
        );
        assert_eq!(dnb.recent_p95_ms, Some(3000));

        log.record(BankId::Dnb, ProviderId::Neonomics, Service::Aisp, None, ok);
        let summary = log.summary();
        let dnb = &summary[&(BankId::Dnb, ProviderId::Neonomics)];
        assert_eq!(dnb.path_failures, 1, "still in the window");
        assert_eq!(dnb.current_failures, 0, "but over: the path answered since");
        assert_eq!(dnb.current_count(FailureClass::Timeout), 0);
        for _ in 0..20 {
            log.record(BankId::Dnb, ProviderId::Neonomics, Service::Aisp, None, ok);
        }
        let summary = log.summary();
        let dnb = &summary[&(BankId::Dnb, ProviderId::Neonomics)];
        assert_eq!(dnb.p95_ms, Some(3000), "the slow calls are in the window");
        assert_eq!(dnb.recent_p95_ms, Some(20), "but not among the latest");

        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(log.summary().is_empty());
    }
}
