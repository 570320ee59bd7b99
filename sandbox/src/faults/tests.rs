//! Which requests a fault hits, how often, and which faults the control API refuses.

use super::*;

fn spec(kind: FaultKind) -> FaultSpec {
    FaultSpec {
        provider: ProviderId::Neonomics,
        bank: Some(BankId::Dnb),
        service: None,
        kind,
        ratio: None,
        duration_s: None,
        latency_ms: None,
        retry_after_s: None,
    }
}

fn target(bank: BankId, service: Service) -> Target {
    Target {
        provider: ProviderId::Neonomics,
        bank: Some(bank),
        service: Some(service),
        uses_consent: true,
    }
}

#[test]
fn faults_match_provider_bank_and_service() {
    let store = FaultStore::default();
    store
        .add(FaultSpec {
            service: Some(Service::Pisp),
            ..spec(FaultKind::Unavailable)
        })
        .unwrap();
    assert!(
        store
            .decide(target(BankId::Dnb, Service::Pisp))
            .failure
            .is_some()
    );
    assert!(
        store
            .decide(target(BankId::Dnb, Service::Aisp))
            .failure
            .is_none()
    );
    assert!(
        store
            .decide(target(BankId::Nordea, Service::Pisp))
            .failure
            .is_none()
    );
    let psd2 = Target {
        provider: ProviderId::Psd2,
        ..target(BankId::Dnb, Service::Pisp)
    };
    assert!(store.decide(psd2).failure.is_none());
}

#[test]
fn ratio_zero_never_fires_and_latency_adds_up() {
    let store = FaultStore::default();
    store
        .add(FaultSpec {
            ratio: Some(0.0),
            ..spec(FaultKind::Error)
        })
        .unwrap();
    store
        .add(FaultSpec {
            latency_ms: Some(30),
            ..spec(FaultKind::Latency)
        })
        .unwrap();
    store
        .add(FaultSpec {
            latency_ms: Some(20),
            ..spec(FaultKind::Latency)
        })
        .unwrap();
    let decision = store.decide(target(BankId::Dnb, Service::Aisp));
    assert!(decision.failure.is_none());
    assert_eq!(decision.delay, Duration::from_millis(50));
}

#[test]
fn consent_faults_only_hit_consent_reads() {
    let store = FaultStore::default();
    store.add(spec(FaultKind::ConsentExpired)).unwrap();
    let payment = Target {
        uses_consent: false,
        ..target(BankId::Dnb, Service::Pisp)
    };
    assert!(store.decide(payment).failure.is_none());
    assert!(
        store
            .decide(target(BankId::Dnb, Service::Aisp))
            .failure
            .is_some()
    );
}

#[test]
fn invalid_combinations_are_rejected() {
    let store = FaultStore::default();
    assert!(
        store
            .add(FaultSpec {
                ratio: Some(1.5),
                ..spec(FaultKind::Error)
            })
            .is_err()
    );
    assert!(store.add(spec(FaultKind::Latency)).is_err());
    assert!(store.add(spec(FaultKind::Refuse)).is_err());
    assert!(
        store
            .add(FaultSpec {
                latency_ms: Some(5),
                ..spec(FaultKind::Error)
            })
            .is_err()
    );
    assert!(
        store
            .add(FaultSpec {
                duration_s: Some(0),
                ..spec(FaultKind::Error)
            })
            .is_err()
    );
    assert!(store.list().is_empty());
}

#[test]
fn faults_on_a_payment_answer_spare_the_request_and_refuse_account_reads() {
    let store = FaultStore::default();
    for kind in [
        FaultKind::LostResponse,
        FaultKind::Garbled,
        FaultKind::Reset,
    ] {
        let refused = store.add(FaultSpec {
            service: Some(Service::Aisp),
            ..spec(kind)
        });
        assert!(refused.is_err(), "{} on aisp", kind.as_str());
        let id = store.add(spec(kind)).expect("a pisp fault").id;
        let pay = target(BankId::Dnb, Service::Pisp);
        assert!(
            store.decide(pay).failure.is_none(),
            "{} before",
            kind.as_str()
        );
        let after = store
            .decide_after_payment(pay)
            .expect("fires after the payment");
        assert_eq!(after.kind, kind);
        assert!(
            store
                .decide_after_payment(target(BankId::Nordea, Service::Pisp))
                .is_none()
        );
        store.remove(id);
    }
}

#[tokio::test(start_paused = true)]
async fn faults_expire_after_their_duration() {
    let store = FaultStore::default();
    let fault = store
        .add(FaultSpec {
            duration_s: Some(5),
            ..spec(FaultKind::Unavailable)
        })
        .unwrap();
    assert!(store.is_active(fault.id));
    let mut receiver = store.subscribe();
    receiver.mark_unchanged();
    store.changed(&mut receiver).await;
    assert!(!store.is_active(fault.id));
    assert!(
        store
            .decide(target(BankId::Dnb, Service::Aisp))
            .failure
            .is_none()
    );
}
