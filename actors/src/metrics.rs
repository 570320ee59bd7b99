//! Every metric bankgate exports, declared once. Labels are bounded: bank, provider, service,
//! outcome, route, source; never a user, session, account or error text.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::upstream::FailureClass;
use crate::{BankId, ProviderId, Service};

pub const UPSTREAM_REQUESTS: &str = "bankgate_upstream_requests_total";
pub const UPSTREAM_DURATION: &str = "bankgate_upstream_request_duration_seconds";
pub const BREAKER_STATE: &str = "bankgate_breaker_state";
pub const BREAKER_TRANSITIONS: &str = "bankgate_breaker_transitions_total";
pub const BALANCE_READS: &str = "bankgate_balance_reads_total";
pub const RATE_LIMITED: &str = "bankgate_rate_limited_total";
pub const RETRIES: &str = "bankgate_retries_total";
pub const ACTOR_RESTARTS: &str = "bankgate_actor_restarts_total";
pub const SESSIONS_ACTIVE: &str = "bankgate_sessions_active";
pub const FAILOVERS: &str = "bankgate_failovers_total";
pub const HTTP_REQUESTS: &str = "bankgate_http_requests_total";
pub const HTTP_DURATION: &str = "bankgate_http_request_duration_seconds";
pub const PROVIDER_CREDENTIALS_VALID: &str = "bankgate_provider_credentials_valid";
pub const PAYMENTS: &str = "bankgate_payments_total";
pub const PAYMENT_QUEUE_DEPTH: &str = "bankgate_payment_queue_depth";
pub const PAYMENT_QUEUE_OLDEST: &str = "bankgate_payment_queue_oldest_seconds";
pub const PAYMENT_UPKEEP_ERRORS: &str = "bankgate_payment_upkeep_errors_total";
pub const WEBHOOKS: &str = "bankgate_webhooks_total";
pub const MODE_CHANGES: &str = "bankgate_mode_changes_total";
pub const BANK_DEGRADED: &str = "bankgate_bank_degraded";
pub const PROBES: &str = "bankgate_health_probes_total";
pub const HTTP_CONNECTIONS_REFUSED: &str = "bankgate_http_connections_refused_total";

/// Every metric name, for the test that checks dashboards and alert rules against them.
pub const ALL: [&str; 22] = [
    UPSTREAM_REQUESTS,
    UPSTREAM_DURATION,
    BREAKER_STATE,
    BREAKER_TRANSITIONS,
    BALANCE_READS,
    RATE_LIMITED,
    RETRIES,
    ACTOR_RESTARTS,
    SESSIONS_ACTIVE,
    FAILOVERS,
    HTTP_REQUESTS,
    HTTP_DURATION,
    PROVIDER_CREDENTIALS_VALID,
    PAYMENTS,
    PAYMENT_QUEUE_DEPTH,
    PAYMENT_QUEUE_OLDEST,
    PAYMENT_UPKEEP_ERRORS,
    WEBHOOKS,
    MODE_CHANGES,
    BANK_DEGRADED,
    PROBES,
    HTTP_CONNECTIONS_REFUSED,
];

/// How a balance read was answered: the `source` label of `bankgate_balance_reads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSource {
    Live,
    CacheFresh,
    CacheStale,
    ConsentExpired,
    Unavailable,
}

impl ReadSource {
    const ALL: [ReadSource; 5] = [
        ReadSource::Live,
        ReadSource::CacheFresh,
        ReadSource::CacheStale,
        ReadSource::ConsentExpired,
        ReadSource::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            ReadSource::Live => "live",
            ReadSource::CacheFresh => "cache_fresh",
            ReadSource::CacheStale => "cache_stale",
            ReadSource::ConsentExpired => "consent_expired",
            ReadSource::Unavailable => "unavailable",
        }
    }
}

/// Counts one balance read of `bank`. Reads are the hottest path there is, so the counters are
/// registered once, at the first read, and reused; the recorder must be installed by then (the
/// gateway installs it before it starts the actors).
pub fn count_balance_read(bank: BankId, source: ReadSource) {
    static COUNTERS: LazyLock<[[Counter; 5]; 3]> = LazyLock::new(|| {
        BankId::ALL.map(|bank| {
            ReadSource::ALL.map(|source| {
                metrics::counter!(BALANCE_READS, "bank" => bank.as_str(), "source" => source.label())
            })
        })
    });
    COUNTERS[bank as usize][source as usize].increment(1);
}

/// The `outcome` labels of an upstream call: success, then every failure class.
const OUTCOMES: usize = 1 + FailureClass::ALL.len();
/// Upstream calls are labelled by provider, bank and service (and the count by outcome).
const CALL_LABELS: usize = ProviderId::ALL.len() * BankId::ALL.len() * Service::ALL.len();

/// Counts one upstream call and records its duration. Like the balance reads, every live read
/// makes one, so each label set's handles are registered at its first call and reused.
pub fn record_upstream_call(
    provider: ProviderId,
    bank: BankId,
    service: Service,
    failure: Option<FailureClass>,
    elapsed: Duration,
) {
    static COUNTERS: [OnceLock<Counter>; CALL_LABELS * OUTCOMES] =
        [const { OnceLock::new() }; CALL_LABELS * OUTCOMES];
    static DURATIONS: [OnceLock<Histogram>; CALL_LABELS] = [const { OnceLock::new() }; CALL_LABELS];
    let (call, outcome) = (call_index(provider, bank, service), outcome_index(failure));
    let (provider, bank, service) = (provider.as_str(), bank.as_str(), service.as_str());
    COUNTERS[call * OUTCOMES + outcome]
        .get_or_init(|| {
            let outcome = failure.map_or("success", FailureClass::as_str);
            metrics::counter!(UPSTREAM_REQUESTS, "provider" => provider, "bank" => bank, "service" => service, "outcome" => outcome)
        })
        .increment(1);
    DURATIONS[call]
        .get_or_init(|| {
            metrics::histogram!(UPSTREAM_DURATION, "provider" => provider, "bank" => bank, "service" => service)
        })
        .record(elapsed.as_secs_f64());
}

fn call_index(provider: ProviderId, bank: BankId, service: Service) -> usize {
    (provider as usize * BankId::ALL.len() + bank as usize) * Service::ALL.len() + service as usize
}

fn outcome_index(failure: Option<FailureClass>) -> usize {
    failure.map_or(0, |class| 1 + class as usize)
}

/// Registers descriptions with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "connections closed on arrival by listener port: the listener held http.max_connections"
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "calls to providers by provider, bank, service and outcome"
    );
    describe_histogram!(
        UPSTREAM_DURATION,
        Unit::Seconds,
        "provider call latency by provider, bank and service"
    );
    describe_gauge!(
        BREAKER_STATE,
        "circuit breaker per bank and provider: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "breaker state changes by bank, provider and new state"
    );
    describe_counter!(
        BALANCE_READS,
        "balances served by bank and source: live, cache_fresh, cache_stale, unavailable"
    );
    describe_counter!(
        RATE_LIMITED,
        "requests held back by a rate limit: source user, local or upstream"
    );
    describe_counter!(RETRIES, "retried provider reads by provider and bank");
    describe_counter!(
        ACTOR_RESTARTS,
        "actors restarted by their supervisor, by actor kind"
    );
    describe_gauge!(SESSIONS_ACTIVE, "session actors alive");
    describe_counter!(
        FAILOVERS,
        "balance reads served by a later provider after the first failed, by bank"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered by api, route and status class"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "time to answer an HTTP request by api and route"
    );
    describe_gauge!(
        PROVIDER_CREDENTIALS_VALID,
        "1 while the provider accepts our credentials, 0 once it rejected them"
    );
    describe_counter!(
        PAYMENTS,
        "payment status transitions by bank and new status"
    );
    describe_gauge!(PAYMENT_QUEUE_DEPTH, "payments queued per bank");
    describe_gauge!(
        PAYMENT_QUEUE_OLDEST,
        Unit::Seconds,
        "age of the oldest queued payment per bank, 0 when none"
    );
    describe_counter!(
        PAYMENT_UPKEEP_ERRORS,
        "payments the queue's upkeep could not move on, by bank and work (resolve, poll, send); the pass goes on"
    );
    describe_counter!(
        WEBHOOKS,
        "provider webhooks received by provider and outcome"
    );
    describe_counter!(
        MODE_CHANGES,
        "bank mode changes by bank and who made them: operator or auto"
    );
    describe_gauge!(
        BANK_DEGRADED,
        "1 while every provider's breaker for the bank is open (automatic degradation)"
    );
    describe_counter!(
        PROBES,
        "synthetic health probes by bank, provider and outcome (success or failure class)"
    );
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_upstream_label_set_has_a_slot_of_its_own() {
        let mut calls = HashSet::new();
        for provider in ProviderId::ALL {
            for bank in BankId::ALL {
                for service in Service::ALL {
                    let call = call_index(provider, bank, service);
                    assert!(call < CALL_LABELS);
                    assert!(calls.insert(call), "{provider:?} {bank:?} {service:?}");
                }
            }
        }
        assert_eq!(calls.len(), CALL_LABELS);
        let outcomes: HashSet<usize> = std::iter::once(None)
            .chain(FailureClass::ALL.map(Some))
            .map(outcome_index)
            .collect();
        assert_eq!(outcomes, (0..OUTCOMES).collect());
    }
}
