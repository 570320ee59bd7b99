//! The simulated banks' books: accounts, consents, payments and the SCA steps that approve
//! them, shared by both simulated providers so that one account looks the same through
//! Neonomics and through the bank's own PSD2 API.
//!
//! Plain data behind one mutex: every operation is short and never awaits.
//!
//! Here: the records and the accounts; consents, payments and the SCA step are one file
//! each.

mod consents;
mod payments;
mod sca;

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
    pub owner: Cow<'static, str>,
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
    /// Authorised by the PSU, waiting for the TPP to complete it (Neonomics' flow only:
    /// <https://docs.neonomics.io/reference/completepayment>).
    #[serde(rename = "ACTC")]
    Authorised,
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
                        owner: Cow::Borrowed(seeded.owner),
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
}

#[cfg(test)]
mod tests;
