//! What the soak does to the system: the sandbox faults for each runbook cause, switched per
//! bank and provider on a random schedule, and the moments the gateway is killed and
//! PostgreSQL restarted.

use std::time::Duration;

use bankgate_actors::{BankId, ProviderId};
use bankgate_sandbox::faults::{FaultKind, FaultSpec};
use serde::Serialize;

use crate::ops::diagnosis::Incident;

/// Every cause of the outage runbook the sandbox can produce, as the diagnosis names them.
pub const CAUSES: [Incident; 7] = [
    Incident::ProviderOutage,
    Incident::BankDown,
    Incident::ProviderRateLimiting,
    Incident::ProviderCredentials,
    Incident::NetworkFailure,
    Incident::ExpiredConsents,
    Incident::SlowResponses,
];

/// One period of the schedule: a cause, where it strikes, and the sandbox faults that make it.
#[derive(Debug, Clone, Serialize)]
pub struct Injection {
    pub cause: Incident,
    pub bank: Option<BankId>,
    pub provider: Option<ProviderId>,
    /// Seconds into the soak.
    pub at_s: f64,
    #[serde(skip)]
    pub faults: Vec<FaultSpec>,
    /// Whether the diagnosis named the cause while it was injected (or just after).
    pub named: bool,
    /// Everything the diagnosis said meanwhile, in order, without repeats.
    pub said: Vec<Incident>,
}

/// Draws the cause of each period: every cause once in a random order, then again, so a run
/// long enough for all of them has injected each at least once.
pub fn schedule(rng: &mut fastrand::Rng, periods: usize) -> Vec<Injection> {
    let mut causes = Vec::with_capacity(periods);
    while causes.len() < periods {
        let mut round = CAUSES.to_vec();
        rng.shuffle(&mut round);
        causes.extend(round);
    }
    causes.truncate(periods);
    causes
        .into_iter()
        .map(|cause| injection(rng, cause))
        .collect()
}

fn injection(rng: &mut fastrand::Rng, cause: Incident) -> Injection {
    let bank = BankId::ALL[rng.usize(..BankId::ALL.len())];
    let provider = ProviderId::ALL[rng.usize(..ProviderId::ALL.len())];
    let at = FaultSpec::new;
    let (bank, provider, faults) = match cause {
        Incident::ProviderOutage => {
            let kind = if rng.bool() {
                FaultKind::Unavailable
            } else {
                FaultKind::Timeout
            };
            (None, Some(provider), vec![at(provider, kind)])
        }
        Incident::BankDown => (Some(bank), None, at_every_provider(bank, FaultKind::Error)),
        Incident::ProviderRateLimiting => {
            let fault = at(provider, FaultKind::RateLimit).with_retry_after_s(2);
            (None, Some(provider), vec![fault])
        }
        Incident::ProviderCredentials => (
            None,
            Some(provider),
            vec![at(provider, FaultKind::Unauthorized)],
        ),
        Incident::NetworkFailure => (None, Some(provider), vec![at(provider, FaultKind::Refuse)]),
        // Consents expire for users, not paths: at both providers, so no failover hides it.
        Incident::ExpiredConsents => (
            Some(bank),
            None,
            at_every_provider(bank, FaultKind::ConsentExpired),
        ),
        Incident::SlowResponses => {
            let fault = at(provider, FaultKind::Latency).with_latency_ms(2300);
            (None, Some(provider), vec![fault])
        }
        Incident::Healthy => (None, None, Vec::new()),
    };
    Injection {
        cause,
        bank,
        provider,
        at_s: 0.0,
        faults,
        named: false,
        said: Vec::new(),
    }
}

/// `kind` at `bank` through every provider, so no failover hides it.
fn at_every_provider(bank: BankId, kind: FaultKind) -> Vec<FaultSpec> {
    ProviderId::ALL
        .iter()
        .map(|&p| FaultSpec::new(p, kind).with_bank(bank))
        .collect()
}

/// What happens to the processes, as offsets into the soak.
#[derive(Debug, Clone)]
pub struct Disruptions {
    pub kills: Vec<Duration>,
    /// When PostgreSQL stops, and for how long.
    pub database_outage: Option<(Duration, Duration)>,
}

/// Spreads `kills` SIGKILLs and one PostgreSQL restart over the middle 80 % of the run: the
/// span is cut into equal segments, the middle one holds the database outage, each other one a
/// kill at a random point of its middle half, so no two land on top of each other and no kill
/// falls while the database is away.
pub fn disruptions(
    rng: &mut fastrand::Rng,
    duration: Duration,
    kills: u32,
    restart_database: bool,
) -> Disruptions {
    let segments = kills + u32::from(restart_database);
    if segments == 0 {
        return Disruptions {
            kills: Vec::new(),
            database_outage: None,
        };
    }
    let start = duration.mul_f64(0.1);
    let segment = duration.mul_f64(0.8) / segments;
    let database_segment = restart_database.then_some(segments / 2);
    let mut planned = Disruptions {
        kills: Vec::new(),
        database_outage: None,
    };
    for index in 0..segments {
        let begins = start + segment * index;
        if Some(index) == database_segment {
            let outage = (segment / 2).min(Duration::from_secs(8));
            planned.database_outage = Some((begins + segment / 4, outage));
        } else {
            planned
                .kills
                .push(begins + segment.mul_f64(0.25 + rng.f64() * 0.5));
        }
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_enough_schedule_injects_every_cause() {
        let mut rng = fastrand::Rng::with_seed(7);
        let plan = schedule(&mut rng, 7);
        for cause in CAUSES {
            assert!(plan.iter().any(|i| i.cause == cause), "{cause:?}");
        }
        assert!(plan.iter().all(|i| !i.faults.is_empty()));
    }

    #[test]
    fn kills_stay_apart_and_clear_of_the_database_outage() {
        let mut rng = fastrand::Rng::with_seed(11);
        let minute = Duration::from_secs(60);
        let plan = disruptions(&mut rng, minute, 5, true);
        assert_eq!(plan.kills.len(), 5);
        let (down, outage) = plan.database_outage.expect("an outage");
        let up = down + outage;
        for pair in plan.kills.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_secs(4), "{pair:?}");
        }
        for kill in &plan.kills {
            assert!(
                *kill < down || *kill > up + Duration::from_secs(2),
                "{kill:?}"
            );
            assert!(*kill > Duration::from_secs(6) && *kill < Duration::from_secs(54));
        }
    }
}
