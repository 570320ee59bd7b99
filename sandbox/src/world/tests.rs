//! The books' rules: one account through both providers, a consent's life, the daily
//! unattended reads, a payment debited once.

use super::*;

fn world() -> World {
    World::new(1, Duration::from_secs(3600))
}

fn consent_request(frequency_per_day: u32) -> NewConsent {
    NewConsent {
        provider: ProviderId::Psd2,
        bank: BankId::Dnb,
        psu: None,
        requested_until: None,
        frequency_per_day,
        redirect_url: "http://tpp".into(),
    }
}

fn new_payment(debtor: &str, amount: i64) -> NewPayment {
    NewPayment {
        provider: ProviderId::Psd2,
        bank: BankId::Dnb,
        product: "norwegian-domestic-credit-transfers".into(),
        request_id: Some("req-1".into()),
        end_to_end_id: Some("e2e-1".into()),
        amount: Decimal::new(amount, 2),
        currency: "NOK".into(),
        debtor_account: debtor.into(),
        creditor_name: "Kari".into(),
        creditor_account: "86011117947".into(),
        remittance_info: None,
        redirect_url: "http://tpp/done".into(),
    }
}

#[test]
fn same_account_through_both_providers() {
    let mut world = world();
    let account = &world.accounts_of(BankId::Nordea, "u1")[0];
    assert_ne!(
        account.id_at(ProviderId::Neonomics),
        account.id_at(ProviderId::Psd2)
    );
    assert_eq!(
        world.accounts_of(BankId::Nordea, "u1")[0].iban,
        account.iban
    );
}

#[test]
fn consent_lifecycle() {
    let mut world = world();
    let now = Utc::now();
    let consent = world.create_consent(consent_request(4), now);
    assert_eq!(
        world.authorize_read(&consent.id, true, now).unwrap_err(),
        ConsentProblem::NotValid
    );
    world
        .complete_sca(&consent.sca_id, true, Some("u1".into()), now)
        .unwrap();
    assert_eq!(
        world
            .authorize_read(&consent.id, true, now)
            .unwrap()
            .psu
            .as_deref(),
        Some("u1")
    );
    let later = now + chrono::Duration::hours(2);
    assert_eq!(
        world.authorize_read(&consent.id, true, later).unwrap_err(),
        ConsentProblem::Expired
    );
    assert_eq!(
        world.authorize_read("nope", true, now).unwrap_err(),
        ConsentProblem::Unknown
    );
}

#[test]
fn unattended_reads_are_limited_per_day() {
    let mut world = world();
    let now = Utc::now();
    let consent = world.create_consent(consent_request(2), now);
    world
        .complete_sca(&consent.sca_id, true, None, now)
        .unwrap();
    assert!(world.authorize_read(&consent.id, false, now).is_ok());
    assert!(world.authorize_read(&consent.id, false, now).is_ok());
    assert_eq!(
        world.authorize_read(&consent.id, false, now).unwrap_err(),
        ConsentProblem::AccessExceeded
    );
    assert!(
        world.authorize_read(&consent.id, true, now).is_ok(),
        "attended reads do not count"
    );
}

#[test]
fn approved_payment_debits_once_and_rejects_without_funds() {
    let mut world = world();
    let now = Utc::now();
    let account = world.accounts_of(BankId::Dnb, "u1")[0].clone();
    let payment = world
        .create_payment(new_payment(&account.bban, 10_000), now)
        .unwrap();
    let outcome = world
        .complete_sca(&payment.sca_id, true, None, now)
        .unwrap();
    assert_eq!(
        outcome.payment.unwrap().status,
        TransactionStatus::Completed
    );
    assert!(
        world
            .complete_sca(&payment.sca_id, true, None, now)
            .unwrap()
            .payment
            .is_none()
    );
    assert_eq!(
        world.account(&account.iban).unwrap().balance,
        account.balance - Decimal::new(10_000, 2)
    );

    let too_much = world
        .create_payment(new_payment(&account.iban, 10_000_000_000), now)
        .unwrap();
    let outcome = world
        .complete_sca(&too_much.sca_id, true, None, now)
        .unwrap();
    assert_eq!(outcome.payment.unwrap().status, TransactionStatus::Rejected);
    assert!(
        world
            .create_payment(new_payment("86011117947", 100), now)
            .is_err()
    );
}
