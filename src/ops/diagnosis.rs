//! Naming the current incident in the outage runbook's terms, from the last minutes of calls
//! per bank and provider: which paths fail, how (timeouts, 5xx, 429, credentials, network,
//! expired consents), and since when. Pure: the ops service feeds it the call log.
//!
//! "Current" is taken literally: a path counts as failing by its failures since it last
//! answered well, and as slow by its latest calls, so neither minutes of healthy traffic
//! before an outage nor an incident that has since ended hides the one going on now.

use std::collections::BTreeMap;

use bankgate_actors::calls::PathStats;
use bankgate_actors::upstream::FailureClass;
use bankgate_actors::{BankId, ProviderId};
use serde::{Deserialize, Serialize};

use crate::copy::CONSENT_EXPIRED;

/// A path is failing with at least this many failures since it last answered well (or,
/// flapping, when they make up half its calls in the window and the latest one failed).
const MIN_FAILURES: u64 = 2;
/// Expired consents across users in the window that make a wave.
const CONSENT_WAVE: u64 = 3;
/// A recent p95 above this (on at least `MIN_SLOW_CALLS` calls) is slow.
const SLOW_P95_MS: u64 = 2000;
const MIN_SLOW_CALLS: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Incident {
    Healthy,
    ProviderCredentials,
    ProviderRateLimiting,
    NetworkFailure,
    ProviderOutage,
    BankDown,
    SlowResponses,
    ExpiredConsents,
}

#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    pub bank: BankId,
    pub provider: ProviderId,
    pub calls: u64,
    pub failures: BTreeMap<&'static str, u64>,
    pub failure_rate: f64,
    pub failing_for_s: Option<u64>,
    /// Failures since the path last answered well.
    pub current_failures: u64,
    pub p95_ms: Option<u64>,
    pub recent_p95_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub incident: Incident,
    pub summary: String,
    pub action: String,
    pub provider: Option<ProviderId>,
    pub banks: Vec<BankId>,
    pub evidence: Vec<Evidence>,
}

/// What the diagnosis reads.
pub struct Observed<'a> {
    pub paths: &'a BTreeMap<(BankId, ProviderId), PathStats>,
    /// Providers whose credentials were rejected.
    pub credentials_invalid: Vec<ProviderId>,
}

fn failing(stats: &PathStats) -> bool {
    let flapping = stats.current_failures > 0
        && stats.path_failures >= MIN_FAILURES
        && stats.failure_rate() >= 0.5;
    stats.current_failures >= MIN_FAILURES || flapping
}

/// Whether failures of `class` dominate `provider`'s current failures.
fn dominated_by(observed: &Observed, provider: ProviderId, class: FailureClass) -> bool {
    let (class_count, failures) = observed
        .paths
        .iter()
        .filter(|((_, p), _)| *p == provider)
        .fold((0, 0), |(c, f), (_, s)| {
            (c + s.current_count(class), f + s.current_failures)
        });
    class_count >= MIN_FAILURES && class_count * 2 >= failures
}

fn names(banks: &[BankId]) -> String {
    banks
        .iter()
        .map(|b| b.display_name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn diagnose(observed: &Observed) -> Diagnosis {
    let evidence: Vec<Evidence> = observed
        .paths
        .iter()
        .map(|(&(bank, provider), s)| Evidence {
            bank,
            provider,
            calls: s.calls,
            failures: s.failures.clone(),
            failure_rate: (s.failure_rate() * 1000.0).round() / 1000.0,
            failing_for_s: s.failing_for_s,
            current_failures: s.current_failures,
            p95_ms: s.p95_ms,
            recent_p95_ms: s.recent_p95_ms,
        })
        .collect();
    let diagnosis = |incident, summary: String, action: String, provider, banks| Diagnosis {
        incident,
        summary,
        action,
        provider,
        banks,
        evidence: evidence.clone(),
    };
    let failing_banks = |provider: ProviderId| -> Vec<BankId> {
        observed
            .paths
            .iter()
            .filter(|((_, p), s)| *p == provider && failing(s))
            .map(|((b, _), _)| *b)
            .collect()
    };

    for provider in ProviderId::ALL {
        let credentials = observed.credentials_invalid.contains(&provider)
            || dominated_by(observed, provider, FailureClass::Credentials);
        if credentials {
            return diagnosis(
                Incident::ProviderCredentials,
                format!("{provider} rejects bankgate's credentials; calls to it have stopped"),
                format!(
                    "Renew the {provider} credentials (client secret or certificate) and restart or wait for the retry; traffic fails over meanwhile. Keep it off with `bankgate ops breaker {provider} --state open --reason <incident>`."
                ),
                Some(provider),
                failing_banks(provider),
            );
        }
    }
    for provider in ProviderId::ALL {
        if dominated_by(observed, provider, FailureClass::RateLimited) {
            return diagnosis(
                Incident::ProviderRateLimiting,
                format!("{provider} is rate limiting bankgate (429)"),
                format!(
                    "Nothing to switch: bankgate honours Retry-After and serves cached balances longer. Check the quota with {provider} and lower `providers.{provider}.limits.rate_limit_per_s` if it shrank."
                ),
                Some(provider),
                failing_banks(provider),
            );
        }
    }
    for provider in ProviderId::ALL {
        if dominated_by(observed, provider, FailureClass::Network) {
            return diagnosis(
                Incident::NetworkFailure,
                format!("connections to {provider} are refused or broken"),
                format!(
                    "Check DNS, firewall and routes to {provider}; traffic fails over to the other provider meanwhile (`bankgate ops status`)."
                ),
                Some(provider),
                failing_banks(provider),
            );
        }
    }
    for provider in ProviderId::ALL {
        let banks = failing_banks(provider);
        let healthy = observed
            .paths
            .iter()
            .any(|((_, p), s)| *p == provider && s.calls > 0 && !failing(s));
        if banks.len() >= 2 && !healthy {
            return diagnosis(
                Incident::ProviderOutage,
                format!("{provider} is failing for every bank ({})", names(&banks)),
                format!(
                    "Full provider outage: traffic fails over to the backup provider. Keep {provider} off until it recovers with `bankgate ops breaker {provider} --state open --reason <incident>`, and contact {provider}."
                ),
                Some(provider),
                banks,
            );
        }
    }
    let mut down: Vec<BankId> = observed
        .paths
        .iter()
        .filter(|(_, s)| failing(s))
        .map(|((b, _), _)| *b)
        .collect();
    down.dedup();
    if let Some(&bank) = down.first() {
        let all_paths = observed
            .paths
            .iter()
            .filter(|((b, _), s)| *b == bank && s.calls > 0)
            .all(|(_, s)| failing(s));
        let summary = if all_paths {
            format!("{} is down through every provider", bank.display_name())
        } else {
            format!(
                "{} fails through one provider; the other serves it",
                bank.display_name()
            )
        };
        return diagnosis(
            Incident::BankDown,
            summary,
            format!(
                "One bank down: bankgate serves cached balances and queues payments for it automatically. To hold that state: `bankgate ops mode {bank} --balances cached --payments queue --reason <incident>`."
            ),
            None,
            down,
        );
    }
    let slow: Vec<BankId> = observed
        .paths
        .iter()
        .filter(|(_, s)| {
            s.calls >= MIN_SLOW_CALLS && s.recent_p95_ms.is_some_and(|p| p > SLOW_P95_MS)
        })
        .map(|((b, _), _)| *b)
        .collect();
    if !slow.is_empty() {
        return diagnosis(
            Incident::SlowResponses,
            format!("calls to {} are slow (p95 above 2 s)", names(&slow)),
            "Watch `bankgate ops status`; breakers open if calls start timing out.".to_owned(),
            None,
            slow,
        );
    }
    let consents: u64 = observed
        .paths
        .values()
        .map(|s| s.count(FailureClass::Consent))
        .sum();
    if consents >= CONSENT_WAVE {
        return diagnosis(
            Incident::ExpiredConsents,
            format!("{consents} reads hit expired user consents; the banks themselves answer"),
            format!(
                "A user matter, not an outage: the app asks each user to renew the connection (\"{CONSENT_EXPIRED}\"). Nothing to switch."
            ),
            None,
            Vec::new(),
        );
    }
    diagnosis(
        Incident::Healthy,
        "every bank answers through its providers".to_owned(),
        "Nothing to do.".to_owned(),
        None,
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path with `calls` calls, the latest of which failed as `failures` says.
    fn stats(calls: u64, failures: &[(FailureClass, u64)]) -> PathStats {
        let mut s = PathStats {
            calls,
            ..PathStats::default()
        };
        for &(class, n) in failures {
            s.failures.insert(class.as_str(), n);
            if class.is_path_failure() {
                s.path_failures += n;
                s.current_failures += n;
                s.current.insert(class.as_str(), n);
            }
        }
        s
    }

    /// The same path after it answered well again.
    fn recovered(mut s: PathStats) -> PathStats {
        s.calls += 1;
        s.current_failures = 0;
        s.current.clear();
        s
    }

    fn incident(paths: Vec<((BankId, ProviderId), PathStats)>) -> (Incident, Vec<BankId>) {
        let paths = paths.into_iter().collect();
        let d = diagnose(&Observed {
            paths: &paths,
            credentials_invalid: Vec::new(),
        });
        (d.incident, d.banks)
    }

    use BankId::{Dnb, Nordea};
    use FailureClass::*;
    use ProviderId::{Neonomics, Psd2};

    #[test]
    fn names_each_runbook_cause() {
        assert_eq!(
            incident(vec![
                ((Dnb, Neonomics), stats(4, &[(Timeout, 4)])),
                ((Nordea, Neonomics), stats(3, &[(Server, 3)])),
                ((Dnb, Psd2), stats(5, &[])),
            ]),
            (Incident::ProviderOutage, vec![Dnb, Nordea])
        );
        assert_eq!(
            incident(vec![
                ((Dnb, Neonomics), stats(3, &[(Server, 3)])),
                ((Dnb, Psd2), stats(3, &[(Server, 3)])),
                ((Nordea, Neonomics), stats(6, &[])),
            ]),
            (Incident::BankDown, vec![Dnb])
        );
        assert_eq!(
            incident(vec![((Dnb, Neonomics), stats(3, &[(RateLimited, 3)]))]).0,
            Incident::ProviderRateLimiting
        );
        let mut slow = stats(40, &[]);
        slow.p95_ms = Some(150);
        slow.recent_p95_ms = Some(2300);
        assert_eq!(
            incident(vec![((Dnb, Neonomics), slow)]),
            (Incident::SlowResponses, vec![Dnb])
        );
        assert_eq!(
            incident(vec![((Nordea, Psd2), stats(2, &[(Credentials, 2)]))]).0,
            Incident::ProviderCredentials
        );
        assert_eq!(
            incident(vec![
                ((Dnb, Neonomics), stats(3, &[(Network, 3)])),
                ((Nordea, Neonomics), stats(3, &[(Network, 3)])),
            ])
            .0,
            Incident::NetworkFailure
        );
        assert_eq!(
            incident(vec![
                ((Dnb, Neonomics), stats(10, &[(Consent, 2)])),
                ((Nordea, Neonomics), stats(10, &[(Consent, 2)])),
            ])
            .0,
            Incident::ExpiredConsents
        );
        assert_eq!(
            incident(vec![((Dnb, Neonomics), stats(10, &[(Timeout, 1)]))]).0,
            Incident::Healthy,
            "one timeout is no incident"
        );
    }

    #[test]
    fn an_outage_after_long_health_is_named_at_once() {
        // Ten minutes of good answers, then three timeouts and an open breaker: a failure
        // rate of 1 % over the window, and an outage all the same.
        assert_eq!(
            incident(vec![
                ((Dnb, Neonomics), stats(300, &[(Timeout, 3)])),
                ((Nordea, Neonomics), stats(300, &[(Timeout, 3)])),
            ]),
            (Incident::ProviderOutage, vec![Dnb, Nordea])
        );
    }

    #[test]
    fn an_incident_that_ended_no_longer_hides_the_next() {
        // Neonomics rejected the credentials a minute ago and has answered well since; now
        // PSD2 rate limits.
        let (incident, _) = incident(vec![
            ((Dnb, Neonomics), recovered(stats(20, &[(Credentials, 6)]))),
            ((Dnb, Psd2), stats(5, &[(RateLimited, 3)])),
        ]);
        assert_eq!(incident, Incident::ProviderRateLimiting);
        let mut was_slow = stats(40, &[]);
        was_slow.p95_ms = Some(2300);
        was_slow.recent_p95_ms = Some(120);
        assert_eq!(
            self::incident(vec![((Dnb, Neonomics), was_slow)]).0,
            Incident::Healthy
        );
    }

    #[test]
    fn one_bank_failing_at_one_provider_is_that_bank_not_an_outage() {
        let (incident, banks) = incident(vec![
            ((Dnb, Neonomics), stats(3, &[(Server, 3)])),
            ((Nordea, Neonomics), stats(5, &[])),
            ((Dnb, Psd2), stats(3, &[])),
        ]);
        assert_eq!((incident, banks), (Incident::BankDown, vec![Dnb]));
    }
}
