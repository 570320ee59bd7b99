//! The runbook's scenarios, played against the real actor tree over scripted providers.
//!
//! Each test reads like a runbook entry and asserts what the user would notice: where a
//! balance came from, whether it carries a warning, how many calls the bank saw, and that no
//! one is left waiting. They run on paused tokio time, so breaker periods and timeouts cost
//! nothing, and poll eventual conditions with a deadline.
//!
//! They are unit tests of this crate rather than an integration test in `tests/` behind the
//! `test-util` feature, because a test target that needs a feature is skipped, silently, by a
//! plain `cargo test --workspace`, which is what the README and CI run. They still use only
//! what the gateway sees, the public handles, plus `test_util`: never an actor's state.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rust_decimal::Decimal;
use tokio::time::timeout;

use super::{Behaviour, Call, DEFAULT_BALANCE, PSU_IP, TestTree, eventually, test_config};
use crate::bank::{ActorUnavailable, BalanceAnswer, FetchRequest, Source, Warning};
use crate::breaker::BreakerState;
use crate::national_id::NationalId;
use crate::session::{AccountBalance, SessionError, SessionHandle};
use crate::upstream::{ConsentCall, ConsentStart, ConsentState, FailureClass, UpstreamError};
use crate::{BankId, ProviderId};

const DNB: BankId = BankId::Dnb;

fn nok(kroner: i64) -> Decimal {
    Decimal::from(kroner)
}

/// Reads all the user's balances, as `GET /v1/balances` does with the user present.
async fn read(session: &SessionHandle) -> Vec<AccountBalance> {
    session
        .balances(None, Some(PSU_IP), "scenario")
        .await
        .expect("the session answers")
}

/// The answer for the user's one account.
async fn read_one(session: &SessionHandle) -> BalanceAnswer {
    let mut answers = read(session).await;
    assert_eq!(answers.len(), 1, "the user has one account");
    answers.remove(0).answer
}

#[track_caller]
fn assert_live(answer: &BalanceAnswer, provider: ProviderId, amount: Decimal) {
    match answer {
        BalanceAnswer::Served {
            balance,
            source: Source::Live,
            warning: None,
        } => {
            assert_eq!(balance.provider, provider, "served by {provider}");
            assert_eq!(balance.amount, amount);
        }
        other => panic!("expected a live balance of {amount} from {provider}, got {other:?}"),
    }
}

#[track_caller]
fn assert_stale(answer: &BalanceAnswer, amount: Decimal) {
    match answer {
        BalanceAnswer::Served {
            balance,
            source: Source::CacheStale,
            warning: Some(Warning::Stale),
        } => assert_eq!(balance.amount, amount),
        other => panic!("expected the cached {amount} marked stale, got {other:?}"),
    }
}

/// DNB returns 503 at every provider → the breakers open → the cached balance with the stale
/// warning, without calling DNB → DNB recovers → the probe's trial closes the breakers and
/// wakes the queue drainer → live again.
#[tokio::test(start_paused = true)]
async fn dnb_failing_everywhere_is_served_stale_until_a_probe_finds_it_back() {
    // The runbook says three failures; a changed threshold must fail this test.
    let failures = 3;
    let mut config = test_config();
    config.bank.probe_interval = Duration::from_secs(1);
    let t = TestTree::start_with(config).await;
    t.store
        .connect("kari", DNB, &[ProviderId::Neonomics, ProviderId::Psd2]);
    let kari = t.session("kari");
    let upstreams = [&t.neonomics, &t.psd2];

    // DNB answers: Kari sees her balance live, and it is cached.
    for upstream in upstreams {
        upstream.set_balance(DNB, Behaviour::Answer(nok(1200)));
    }
    assert_live(&read_one(&kari).await, ProviderId::Neonomics, nok(1200));

    // DNB fails behind every provider (its health probe too): each read tries both paths
    // and serves the cached balance as stale.
    for upstream in upstreams {
        upstream.set_balance(DNB, Behaviour::fail(FailureClass::Server, 503));
        upstream.set_probe(DNB, Behaviour::fail(FailureClass::Server, 503));
    }
    for _ in 0..failures {
        assert_stale(&read_one(&kari).await, nok(1200));
    }
    assert_eq!(t.neonomics.calls(DNB, Call::Balance), 1 + failures);
    assert_eq!(t.psd2.calls(DNB, Call::Balance), failures);
    assert!(t.tree.modes.degraded(DNB), "every path to DNB is open");

    // The breakers are open: the next read is the stale balance, and DNB sees no call.
    assert_stale(&read_one(&kari).await, nok(1200));
    assert_eq!(t.neonomics.calls(DNB, Call::Balance), 1 + failures);
    assert_eq!(t.psd2.calls(DNB, Call::Balance), failures);

    // DNB recovers. Once the open period is over, the probe is the half-open trial: it
    // passes, the breakers close and the drainer is told to send DNB's queued payments.
    for upstream in upstreams {
        upstream.set_balance(DNB, Behaviour::Answer(nok(1300)));
        upstream.set_probe(DNB, Behaviour::Answer(()));
    }
    eventually("the drainer is woken", Duration::from_secs(10), || {
        let worked = t.queue.worked();
        async move { !worked.is_empty() }
    })
    .await;
    assert!(
        t.queue.worked().iter().all(|&bank| bank == DNB),
        "only DNB's queue is worked: {:?}",
        t.queue.worked()
    );
    assert!(t.neonomics.calls(DNB, Call::Probe) >= 1);
    assert_eq!(
        t.neonomics.calls(DNB, Call::Balance),
        1 + failures,
        "the probe closed the breaker, not a user's read"
    );
    assert!(!t.tree.modes.degraded(DNB));

    // Kari's next read is live again, from the primary provider.
    assert_live(&read_one(&kari).await, ProviderId::Neonomics, nok(1300));
}

/// The first provider in the bank's order serves while it can; when its path fails, the same
/// read is served live by the second.
#[tokio::test(start_paused = true)]
async fn a_path_failure_at_the_first_provider_is_served_live_by_the_second() {
    let config = test_config();
    let (first, second) = (config.bank.providers[0], config.bank.providers[1]);
    let t = TestTree::start_with(config).await;
    t.store.connect("kari", DNB, &[first, second]);
    let kari = t.session("kari");

    t.upstream(first)
        .set_balance(DNB, Behaviour::Answer(nok(1200)));
    t.upstream(second)
        .set_balance(DNB, Behaviour::Answer(nok(1200)));
    assert_live(&read_one(&kari).await, first, nok(1200));
    assert_eq!(t.upstream(second).calls(DNB, Call::Balance), 0);

    t.upstream(first)
        .set_balance(DNB, Behaviour::fail(FailureClass::Server, 503));
    assert_live(&read_one(&kari).await, second, nok(1200));
    assert_eq!(t.upstream(first).calls(DNB, Call::Balance), 2);
    assert_eq!(t.upstream(second).calls(DNB, Call::Balance), 1);
}

/// A refused consent is the user's problem, not the path's: however often the first provider
/// says so, its breaker stays closed, and the next user is served by it as before.
#[tokio::test(start_paused = true)]
async fn a_consent_failure_at_the_first_provider_does_not_trip_its_breaker() {
    let config = test_config();
    let (first, second) = (config.bank.providers[0], config.bank.providers[1]);
    let threshold = config.bank.breaker.failure_threshold as usize;
    let t = TestTree::start_with(config).await;
    t.store.connect("kari", DNB, &[first, second]);
    t.store.connect("ola", DNB, &[first, second]);

    // Kari's consent at the first provider is no longer valid; the second serves her, read
    // after read, more often than the breaker's threshold.
    t.upstream(first)
        .set_balance(DNB, Behaviour::fail(FailureClass::Consent, 401));
    t.upstream(second)
        .set_balance(DNB, Behaviour::Answer(nok(1200)));
    let kari = t.session("kari");
    for _ in 0..=threshold {
        assert_live(&read_one(&kari).await, second, nok(1200));
    }
    assert_eq!(t.upstream(first).calls(DNB, Call::Balance), threshold + 1);

    // Ola's consent there is fine: his read goes to the first provider, whose path is healthy.
    t.upstream(first)
        .set_balance(DNB, Behaviour::Answer(nok(800)));
    assert_live(&read_one(&t.session("ola")).await, first, nok(800));
    let status = t.bank(DNB).status().await.expect("the bank answers");
    let path = status.paths.iter().find(|p| p.provider == first).unwrap();
    assert_eq!(path.breaker, BreakerState::Closed);
}

/// A user's app sends the same balance request many times at once (a refresh storm): the
/// session coalesces them, and each bank sees one call per account.
#[tokio::test(start_paused = true)]
async fn concurrent_identical_reads_from_one_session_cost_one_call_per_account() {
    let t = TestTree::start().await;
    let providers = [ProviderId::Neonomics, ProviderId::Psd2];
    t.store.connect("kari", DNB, &providers);
    t.store.connect("kari", BankId::Nordea, &providers);
    // Answering takes a moment, so every request arrives while the first read is out.
    let slow = Duration::from_millis(200);
    t.neonomics
        .set_balance(DNB, Behaviour::Slow(slow, nok(1200)));
    t.neonomics
        .set_balance(BankId::Nordea, Behaviour::Slow(slow, nok(300)));
    let kari = t.session("kari");

    let answers = join_all((0..20).map(|_| read(&kari))).await;

    for accounts in &answers {
        assert_eq!(accounts.len(), 2);
        for account in accounts {
            let amount = match account.connection.bank {
                BankId::Dnb => nok(1200),
                _ => nok(300),
            };
            assert_live(&account.answer, ProviderId::Neonomics, amount);
        }
    }
    assert_eq!(t.neonomics.calls(DNB, Call::Balance), 1);
    assert_eq!(t.neonomics.calls(BankId::Nordea, Call::Balance), 1);
    assert_eq!(t.psd2.calls(DNB, Call::Balance), 0);
}

/// The provider stops accepting the token the gateway holds (401): the provider actor gets a
/// new one, once, and the read succeeds at the same provider, without failing over.
#[tokio::test(start_paused = true)]
async fn a_refused_token_is_renewed_once_and_the_read_succeeds() {
    let t = TestTree::start().await;
    t.store
        .connect("kari", DNB, &[ProviderId::Neonomics, ProviderId::Psd2]);
    let kari = t.session("kari");
    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );
    assert_eq!(t.neonomics.authentications(), 1);

    t.neonomics.revoke_tokens();
    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );
    assert_eq!(t.neonomics.authentications(), 2, "one re-authentication");
    assert_eq!(
        t.neonomics.calls(DNB, Call::Balance),
        3,
        "the refused call and its repeat with the new token"
    );
    assert_eq!(t.psd2.calls(DNB, Call::Balance), 0, "no failover");

    // The new token is held: the next read needs no authentication.
    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );
    assert_eq!(t.neonomics.authentications(), 2);
}

/// The token request dies in the adapter (a panic, as an answer the adapter could not take
/// once caused): the read waiting for it is answered at once, not left to its timeout, and
/// the next read asks for a token again and is served live.
#[tokio::test(start_paused = true)]
async fn a_token_request_that_dies_is_answered_and_the_next_read_asks_again() {
    let t = TestTree::start().await;
    t.store.connect("kari", DNB, &[ProviderId::Neonomics]);
    let kari = t.session("kari");
    t.neonomics.set_authenticate(Behaviour::Panic);
    let started = tokio::time::Instant::now();
    let failed = read_one(&kari).await;
    assert!(
        !matches!(failed, BalanceAnswer::Served { .. }),
        "no token, no balance: {failed:?}"
    );
    assert!(
        started.elapsed() < test_config().providers[&ProviderId::Neonomics].timeout,
        "answered when the request died, after {:?}",
        started.elapsed()
    );

    t.neonomics
        .set_authenticate(Behaviour::Answer(Duration::from_secs(3600)));
    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );
    assert_eq!(t.neonomics.authentications(), 2, "asked again");
}

/// A provider says its token lasts for ever (`expires_in` of 2^64-1 seconds once made the
/// deadline overflow): the token is used, and renewed within a day all the same.
#[tokio::test(start_paused = true)]
async fn a_token_said_to_last_for_ever_is_renewed_within_a_day() {
    let t = TestTree::start().await;
    t.store.connect("kari", DNB, &[ProviderId::Neonomics]);
    let kari = t.session("kari");
    t.neonomics
        .set_authenticate(Behaviour::Answer(Duration::from_secs(u64::MAX)));
    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );
    assert_eq!(t.neonomics.authentications(), 1);
    tokio::time::advance(crate::upstream::MAX_GRANT_LIFETIME).await;
    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );
    assert_eq!(t.neonomics.authentications(), 2, "renewed within a day");
}

/// A user connects a bank while the provider has stopped accepting the token the gateway
/// holds: the consent calls go through the provider actor like a read, so the token is
/// renewed once, the consent starts, and the diagnosis's call log sees the calls.
#[tokio::test(start_paused = true)]
async fn a_consent_is_started_through_the_provider_and_renews_a_refused_token() {
    let t = TestTree::start().await;
    let neonomics = &t.tree.providers[&ProviderId::Neonomics];
    let start = ConsentStart {
        bank: DNB,
        psu: NationalId::synthetic("kari"),
        redirect_url: "https://gateway.example/callback".to_owned(),
    };
    neonomics
        .start_consent(start.clone())
        .await
        .expect("started");
    assert_eq!(t.neonomics.authentications(), 1);

    t.neonomics.revoke_tokens();
    let started = neonomics.start_consent(start).await.expect("started");
    assert_eq!(t.neonomics.authentications(), 2, "one re-authentication");
    assert_eq!(
        t.neonomics.calls(DNB, Call::StartConsent),
        3,
        "the refused call and its repeat with the new token"
    );

    let consent = ConsentCall {
        bank: DNB,
        external_id: started.external_id,
        psu_ip: PSU_IP.to_string(),
    };
    t.neonomics
        .set_consent_state(DNB, Behaviour::Answer(ConsentState::Pending));
    let status = neonomics.consent_state(consent.clone()).await.unwrap();
    assert_eq!(status.state, ConsentState::Pending);
    assert_eq!(neonomics.accounts(consent).await.unwrap().len(), 1);
    let path = &t.tree.calls.summary()[&(DNB, ProviderId::Neonomics)];
    assert_eq!(
        (path.calls, path.count(FailureClass::Credentials)),
        (5, 1),
        "every consent call is in the call log, the refused one as a credentials failure"
    );
}

/// The DNB actor panics while a read waits on a hanging DNB: that read is answered
/// unavailable at once instead of waiting out the provider's timeout, so is anyone asking
/// during the restart, and once the root has restarted the actor reads are live again.
#[tokio::test(start_paused = true)]
async fn a_panicking_bank_actor_is_restarted_and_its_callers_never_hang() {
    let config = test_config();
    let provider_timeout = config.providers[&ProviderId::Neonomics].timeout;
    let t = TestTree::start_with(config).await;
    let dnb = t
        .store
        .connect("kari", DNB, &[ProviderId::Neonomics, ProviderId::Psd2]);
    let kari = t.session("kari");
    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );

    // DNB hangs; a read goes out and waits.
    t.neonomics.set_balance(DNB, Behaviour::Hang);
    t.psd2.set_balance(DNB, Behaviour::Hang);
    let waiting = tokio::spawn({
        let kari = kari.clone();
        async move { read_one(&kari).await }
    });
    eventually("DNB has the read", Duration::from_secs(1), || {
        let calls = t.neonomics.calls(DNB, Call::Balance);
        async move { calls == 2 }
    })
    .await;

    t.bank(DNB).inject_panic();
    let answer = timeout(provider_timeout / 2, waiting)
        .await
        .expect("the waiting read is answered before the provider's timeout")
        .expect("the read's task ends");
    assert!(
        matches!(
            answer,
            BalanceAnswer::Unavailable {
                warning: Warning::Unavailable
            }
        ),
        "{answer:?}"
    );

    // While the actor is down, its handle says so at once.
    let request = FetchRequest {
        connection: Arc::new(dnb),
        psu_ip: Some(PSU_IP),
        request_id: "during-restart".to_owned(),
    };
    let during = timeout(
        Duration::from_millis(50),
        t.bank(DNB).fetch(request, Duration::from_secs(5)),
    )
    .await
    .expect("the handle answers at once");
    assert!(matches!(during, Err(ActorUnavailable)));

    // DNB answers again; the root restarts the actor after its back-off and reads are live.
    t.neonomics.set_balance(DNB, Behaviour::Answer(nok(1300)));
    t.psd2.set_balance(DNB, Behaviour::Answer(nok(1300)));
    eventually(
        "DNB reads are live again",
        Duration::from_secs(5),
        || async {
            matches!(
                read_one(&kari).await,
                BalanceAnswer::Served {
                    source: Source::Live,
                    ..
                }
            )
        },
    )
    .await;
    assert_live(&read_one(&kari).await, ProviderId::Neonomics, nok(1300));
}

/// A session's read whose task panics: everyone who joined it is answered at once, and the
/// next read starts afresh instead of finding the dead one.
#[tokio::test(start_paused = true)]
async fn a_session_read_that_panics_answers_its_callers_and_is_forgotten() {
    let t = TestTree::start().await;
    t.store
        .connect("kari", DNB, &[ProviderId::Neonomics, ProviderId::Psd2]);
    let kari = t.session("kari");

    // The panicking read starts first (on this one-threaded runtime its task runs only once
    // both callers wait), so the ordinary read joins it.
    let (panicked, joined) = tokio::join!(
        kari.inject_panic(),
        kari.balances(None, Some(PSU_IP), "scenario")
    );
    assert!(matches!(panicked, Err(SessionError::Unavailable)));
    assert!(
        matches!(joined, Err(SessionError::Unavailable)),
        "the read that joined it is answered, not left waiting: {joined:?}"
    );

    assert_live(
        &read_one(&kari).await,
        ProviderId::Neonomics,
        DEFAULT_BALANCE,
    );
    assert_eq!(t.neonomics.calls(DNB, Call::Balance), 1);
}

/// DNB's Neonomics path answers 429 with an absurd `Retry-After` (u64::MAX seconds, as a
/// broken proxy once sent): the bank actor must not overflow its clock into a restart loop.
/// The breaker opens for `max_open` at most, the read fails over to PSD2, and once `max_open`
/// has passed Neonomics is tried again.
#[tokio::test(start_paused = true)]
async fn a_retry_after_beyond_any_clock_opens_the_breaker_for_max_open_at_most() {
    let config = test_config();
    let max_open = config.bank.breaker.max_open;
    let t = TestTree::start_with(config).await;
    t.store
        .connect("kari", DNB, &[ProviderId::Neonomics, ProviderId::Psd2]);
    let kari = t.session("kari");
    let mut throttled = UpstreamError::new(FailureClass::RateLimited, "scripted 429");
    throttled.status = Some(429);
    throttled.retry_after = Some(Duration::from_secs(u64::MAX));
    t.neonomics.set_balance(DNB, Behaviour::Fail(throttled));
    t.psd2.set_balance(DNB, Behaviour::Answer(nok(900)));

    assert_live(&read_one(&kari).await, ProviderId::Psd2, nok(900));
    let status = t.bank(DNB).status().await.expect("DNB's actor answers");
    let neonomics = status
        .paths
        .iter()
        .find(|p| p.provider == ProviderId::Neonomics)
        .expect("a Neonomics path");
    assert_eq!(neonomics.breaker, BreakerState::Open);

    t.neonomics.set_balance(DNB, Behaviour::Answer(nok(950)));
    tokio::time::sleep(max_open + Duration::from_secs(1)).await;
    assert_live(&read_one(&kari).await, ProviderId::Neonomics, nok(950));
    t.shutdown().await;
}
