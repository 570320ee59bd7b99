//! The simulated banks' books: accounts, consents, payments and the SCA steps that approve
//! them, shared by both simulated providers so that one account looks the same through
//! Neonomics and through the bank's own PSD2 API.
//!
//! Plain data behind one mutex: every operation is short and never awaits.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use bankgate_actors::{BankId, ProviderId};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::accounts::{SeededAccount, seeded_accounts, stable_id};

/// The PSU a consent or payment is approved for when the caller named none.
pub const DEFAULT_PSU: &str = "sandbox-user";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub bank: BankId,
    pub psu: String,
    pub iban: String,
    pub bban: String,
    pub name: Cow<'static, str>,
    pub product: Cow<'static, str>,
    pub currency: Cow<'static, str>,
    pub balance: Decimal,
}

impl Account {
    /// Returns this account's id at `provider` (each provider names accounts its own way).
    pub fn id_at(&self, provider: ProviderId) -> String {
        stable_id(&[provider.as_str(), self.bank.as_str(), &self.iban])
    }
}

/// Consent states as NextGenPSD2 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConsentStatus {
    Received,
    Valid,
    Rejected,
    Expired,
    TerminatedByTpp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Consent {
    pub id: String,
    pub provider: ProviderId,
    pub bank: BankId,
    pub status: ConsentStatus,
    /// Set when the consent is created (PSU-ID) or approved; whose accounts it opens.
    pub psu: Option<String>,
    pub valid_until: DateTime<Utc>,
    pub frequency_per_day: u32,
    pub redirect_url: String,
    pub sca_id: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    unattended_reads: (Option<NaiveDate>, u32),
}

/// ISO 20022 transaction statuses used by both providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransactionStatus {
    /// Received, waiting for the PSU's SCA.
    #[serde(rename = "RCVD")]
    Received,
    /// Settlement completed after SCA.
    #[serde(rename = "ACSC")]
    Completed,
    /// Rejected by the PSU or the bank.
    #[serde(rename = "RJCT")]
    Rejected,
}

/// A payment as the bank recorded it: the sandbox's ledger is the list of these.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: String,
    pub provider: ProviderId,
    pub bank: BankId,
    pub product: String,
    /// The X-Request-ID (or x-request-id) the initiation arrived with.
    pub request_id: Option<String>,
    pub end_to_end_id: Option<String>,
    pub amount: Decimal,
    pub currency: String,
    pub debtor_iban: String,
    pub creditor_name: String,
    pub creditor_account: String,
    pub remittance_info: Option<String>,
    pub status: TransactionStatus,
    pub reject_reason: Option<String>,
    pub sca_id: String,
    pub redirect_url: String,
    pub initiated_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a consent request asks for, already validated by the provider API.
#[derive(Debug, Clone)]
pub struct NewConsent {
    pub provider: ProviderId,
    pub bank: BankId,
    /// The PSU named at creation (`PSU-ID`, `x-psu-id`), if any.
    pub psu: Option<String>,
    /// The last day the TPP asked for; the sandbox's consent lifetime caps it.
    pub requested_until: Option<NaiveDate>,
    /// Unattended reads allowed per day.
    pub frequency_per_day: u32,
    pub redirect_url: String,
}

/// What a payment initiation asks for, already validated by the provider API.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub provider: ProviderId,
    pub bank: BankId,
    pub product: String,
    pub request_id: Option<String>,
    pub end_to_end_id: Option<String>,
    pub amount: Decimal,
    pub currency: String,
    pub debtor_account: String,
    pub creditor_name: String,
    pub creditor_account: String,
    pub remittance_info: Option<String>,
    pub redirect_url: String,
}

#[derive(Debug, Clone, Copy)]
enum ScaTarget {
    Consent(usize),
    Payment(usize),
}

/// Why a consent cannot be used for an account read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentProblem {
    Unknown,
    /// Created but not (yet) approved, rejected or terminated.
    NotValid,
    Expired,
    /// More unattended reads today than the consent allows.
    AccessExceeded,
}

/// The result of a SCA step, for the redirect and the webhook.
#[derive(Debug, Clone)]
pub struct ScaOutcome {
    pub redirect_url: String,
    pub payment: Option<Payment>,
}

#[derive(Debug)]
pub struct World {
    seed: u64,
    consent_ttl: Duration,
    /// Accounts by IBAN.
    accounts: HashMap<String, Account>,
    /// Which PSUs' accounts have been generated at which bank.
    generated: HashMap<(BankId, String), Vec<String>>,
    consents: Vec<Consent>,
    consent_index: HashMap<String, usize>,
    payments: Vec<Payment>,
    payment_index: HashMap<String, usize>,
    sca: HashMap<String, ScaTarget>,
}

impl World {
    pub fn new(seed: u64, consent_ttl: Duration) -> World {
        World {
            seed,
            consent_ttl,
            accounts: HashMap::new(),
            generated: HashMap::new(),
            consents: Vec::new(),
            consent_index: HashMap::new(),
            payments: Vec::new(),
            payment_index: HashMap::new(),
            sca: HashMap::new(),
        }
    }

    /// Returns the accounts `psu` holds at `bank`, generating them on first use.
    pub fn accounts_of(&mut self, bank: BankId, psu: &str) -> Vec<Account> {
        let key = (bank, psu.to_owned());
        if !self.generated.contains_key(&key) {
            let ibans = seeded_accounts(self.seed, bank, psu)
                .into_iter()
                .map(|seeded: SeededAccount| {
                    let account = Account {
                        bank,
                        psu: psu.to_owned(),
                        iban: seeded.iban.clone(),
                        bban: seeded.bban,
                        name: Cow::Borrowed(seeded.name),
                        product: Cow::Borrowed(seeded.product),
                        currency: Cow::Borrowed("NOK"),
                        balance: seeded.balance,
                    };
                    self.accounts.entry(seeded.iban.clone()).or_insert(account);
                    seeded.iban
                })
                .collect();
            self.generated.insert(key.clone(), ibans);
        }
        self.generated[&key]
            .iter()
            .map(|iban| self.accounts[iban].clone())
            .collect()
    }

    /// Finds an account by IBAN or BBAN.
    pub fn account(&self, number: &str) -> Option<&Account> {
        self.accounts
            .get(number)
            .or_else(|| self.accounts.values().find(|a| a.bban == number))
    }

    /// Finds an account by its id at `provider`, among those `consent` opens.
    pub fn consented_account(
        &mut self,
        consent_id: &str,
        provider: ProviderId,
        account_id: &str,
    ) -> Option<Account> {
        let consent = self.consent(consent_id)?.clone();
        let psu = consent.psu.as_deref()?;
        self.accounts_of(consent.bank, psu)
            .into_iter()
            .find(|a| a.id_at(provider) == account_id)
    }

    pub fn create_consent(&mut self, new: NewConsent, now: DateTime<Utc>) -> Consent {
        let NewConsent {
            provider,
            bank,
            psu,
            requested_until,
            frequency_per_day,
            redirect_url,
        } = new;
        let ttl =
            chrono::Duration::from_std(self.consent_ttl).unwrap_or(chrono::Duration::days(90));
        let mut valid_until = now + ttl;
        if let Some(date) = requested_until {
            let end_of_day = date.and_hms_opt(23, 59, 59).expect("valid time").and_utc();
            valid_until = valid_until.min(end_of_day);
        }
        let id = uuid::Uuid::new_v4().to_string();
        let sca_id = uuid::Uuid::new_v4().simple().to_string();
        let consent = Consent {
            id: id.clone(),
            provider,
            bank,
            status: ConsentStatus::Received,
            psu,
            valid_until,
            frequency_per_day,
            redirect_url,
            sca_id: sca_id.clone(),
            created_at: now,
            unattended_reads: (None, 0),
        };
        self.sca
            .insert(sca_id, ScaTarget::Consent(self.consents.len()));
        self.consent_index.insert(id, self.consents.len());
        self.consents.push(consent.clone());
        consent
    }

    pub fn consent(&self, id: &str) -> Option<&Consent> {
        self.consent_index.get(id).map(|&i| &self.consents[i])
    }

    /// Returns the consent's status, turning a valid consent past its date into `expired`.
    pub fn consent_status(&mut self, id: &str, now: DateTime<Utc>) -> Option<ConsentStatus> {
        let &index = self.consent_index.get(id)?;
        let consent = &mut self.consents[index];
        if consent.status == ConsentStatus::Valid && consent.valid_until <= now {
            consent.status = ConsentStatus::Expired;
        }
        Some(consent.status)
    }

    /// Checks that `id` allows an account read now; `attended` reads (the PSU is present)
    /// do not count against the consent's reads per day.
    pub fn authorize_read(
        &mut self,
        id: &str,
        attended: bool,
        now: DateTime<Utc>,
    ) -> Result<Consent, ConsentProblem> {
        let status = self
            .consent_status(id, now)
            .ok_or(ConsentProblem::Unknown)?;
        let index = self.consent_index[id];
        let consent = &mut self.consents[index];
        match status {
            ConsentStatus::Valid => {}
            ConsentStatus::Expired => return Err(ConsentProblem::Expired),
            _ => return Err(ConsentProblem::NotValid),
        }
        if !attended {
            let today = now.date_naive();
            if consent.unattended_reads.0 != Some(today) {
                consent.unattended_reads = (Some(today), 0);
            }
            if consent.unattended_reads.1 >= consent.frequency_per_day {
                return Err(ConsentProblem::AccessExceeded);
            }
            consent.unattended_reads.1 += 1;
        }
        Ok(consent.clone())
    }

    /// Expires a consent at once, as if its validity had run out.
    pub fn expire_consent(&mut self, id: &str) -> Option<Consent> {
        let &index = self.consent_index.get(id)?;
        let consent = &mut self.consents[index];
        consent.status = ConsentStatus::Expired;
        Some(consent.clone())
    }

    /// Ends a consent at the TPP's request (DELETE).
    pub fn terminate_consent(&mut self, id: &str) -> Option<Consent> {
        let &index = self.consent_index.get(id)?;
        let consent = &mut self.consents[index];
        consent.status = ConsentStatus::TerminatedByTpp;
        Some(consent.clone())
    }

    pub fn consents(&self) -> &[Consent] {
        &self.consents
    }

    /// Records a payment initiation. The debtor account must exist at the bank.
    pub fn create_payment(
        &mut self,
        new: NewPayment,
        now: DateTime<Utc>,
    ) -> Result<Payment, &'static str> {
        let debtor = self
            .account(&new.debtor_account)
            .ok_or("unknown debtor account")?;
        if debtor.bank != new.bank {
            return Err("debtor account is not held at this bank");
        }
        let debtor_iban = debtor.iban.clone();
        let sca_id = uuid::Uuid::new_v4().simple().to_string();
        let payment = Payment {
            payment_id: uuid::Uuid::new_v4().to_string(),
            provider: new.provider,
            bank: new.bank,
            product: new.product,
            request_id: new.request_id,
            end_to_end_id: new.end_to_end_id,
            amount: new.amount,
            currency: new.currency,
            debtor_iban,
            creditor_name: new.creditor_name,
            creditor_account: new.creditor_account,
            remittance_info: new.remittance_info,
            status: TransactionStatus::Received,
            reject_reason: None,
            sca_id: sca_id.clone(),
            redirect_url: new.redirect_url,
            initiated_at: now,
            updated_at: now,
        };
        self.sca
            .insert(sca_id, ScaTarget::Payment(self.payments.len()));
        self.payment_index
            .insert(payment.payment_id.clone(), self.payments.len());
        self.payments.push(payment.clone());
        Ok(payment)
    }

    /// Finds a payment initiated through `provider` at `bank`.
    pub fn payment(&self, provider: ProviderId, bank: BankId, id: &str) -> Option<&Payment> {
        let payment = &self.payments[*self.payment_index.get(id)?];
        (payment.provider == provider && payment.bank == bank).then_some(payment)
    }

    /// Finds the payments initiated through `provider` at `bank` with this end-to-end
    /// reference (how a TPP finds a payment whose initiation answer it lost).
    pub fn payments_by_reference(
        &self,
        provider: ProviderId,
        bank: BankId,
        product: &str,
        end_to_end_id: &str,
    ) -> Vec<&Payment> {
        self.payments
            .iter()
            .filter(|p| p.provider == provider && p.bank == bank && p.product == product)
            .filter(|p| p.end_to_end_id.as_deref() == Some(end_to_end_id))
            .collect()
    }

    /// Every payment initiated, oldest first.
    pub fn ledger(&self) -> &[Payment] {
        &self.payments
    }

    /// Completes the SCA step `sca_id` as the PSU: approves it, or rejects it when `approve`
    /// is false. A consent opens the accounts of `psu` (or the PSU named at creation, or the
    /// default PSU); an approved payment settles at once unless the debtor lacks funds.
    /// Repeating a finished step changes nothing and redirects again.
    pub fn complete_sca(
        &mut self,
        sca_id: &str,
        approve: bool,
        psu: Option<String>,
        now: DateTime<Utc>,
    ) -> Option<ScaOutcome> {
        match *self.sca.get(sca_id)? {
            ScaTarget::Consent(index) => {
                let consent = &mut self.consents[index];
                if consent.status == ConsentStatus::Received {
                    if approve {
                        consent.status = ConsentStatus::Valid;
                        let psu = psu
                            .or(consent.psu.take())
                            .unwrap_or_else(|| DEFAULT_PSU.to_owned());
                        consent.psu = Some(psu);
                    } else {
                        consent.status = ConsentStatus::Rejected;
                    }
                }
                let (bank, psu, redirect_url) = (
                    consent.bank,
                    consent.psu.clone(),
                    consent.redirect_url.clone(),
                );
                if let Some(psu) = psu {
                    self.accounts_of(bank, &psu);
                }
                Some(ScaOutcome {
                    redirect_url,
                    payment: None,
                })
            }
            ScaTarget::Payment(index) => {
                let payment = &self.payments[index];
                if payment.status != TransactionStatus::Received {
                    return Some(ScaOutcome {
                        redirect_url: payment.redirect_url.clone(),
                        payment: None,
                    });
                }
                let debtor_iban = payment.debtor_iban.clone();
                let amount = payment.amount;
                let reject_reason = if !approve {
                    Some("PSU rejected the payment")
                } else if self
                    .accounts
                    .get(&debtor_iban)
                    .is_some_and(|a| a.balance < amount)
                {
                    Some("insufficient funds")
                } else {
                    None
                };
                if reject_reason.is_none()
                    && let Some(account) = self.accounts.get_mut(&debtor_iban)
                {
                    account.balance -= amount;
                }
                let payment = &mut self.payments[index];
                payment.status = match reject_reason {
                    Some(_) => TransactionStatus::Rejected,
                    None => TransactionStatus::Completed,
                };
                payment.reject_reason = reject_reason.map(str::to_owned);
                payment.updated_at = now;
                Some(ScaOutcome {
                    redirect_url: payment.redirect_url.clone(),
                    payment: Some(payment.clone()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
