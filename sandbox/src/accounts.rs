//! The deterministic generation of a sandbox user's accounts (valid Norwegian account numbers
//! and IBANs, seeded balances) and the sandbox's stable ids.

use bankgate_actors::BankId;

use crate::account_number::{iban_from_bban, mod11_check_digit};
use rust_decimal::Decimal;

/// The bank's registry number, the first four digits of its account numbers.
fn bank_code(bank: BankId) -> &'static str {
    match bank {
        BankId::Dnb => "1503",
        BankId::Nordea => "6063",
        BankId::Sparebank1 => "4201",
    }
}

/// One generated account, before any provider has given it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededAccount {
    pub bban: String,
    pub iban: String,
    pub name: &'static str,
    pub product: &'static str,
    pub balance: Decimal,
    /// The holder's name, the same on each of the PSU's accounts at the bank.
    pub owner: &'static str,
}

/// The names the simulated account holders go by.
const OWNERS: [&str; 6] = [
    "Kari Nordmann",
    "Ola Nordmann",
    "Ingrid Hansen",
    "Lars Johansen",
    "Sigrid Berg",
    "Anders Olsen",
];

/// Generates the accounts `psu` holds at `bank`: the same every run for the same seed.
pub fn seeded_accounts(seed: u64, bank: BankId, psu: &str) -> Vec<SeededAccount> {
    let mut stream = HashStream::new(seed, &[bank.as_str(), psu]);
    let count = 1 + (stream.next() % 2) as usize;
    let owner = OWNERS[(stream.next() % OWNERS.len() as u64) as usize];
    let kinds = [("Brukskonto", "CACC"), ("Sparekonto", "SVGS")];
    let mut accounts = Vec::with_capacity(count);
    while accounts.len() < count {
        let mut digits = [0u32; 10];
        for (i, c) in bank_code(bank).chars().enumerate() {
            digits[i] = c.to_digit(10).expect("digit");
        }
        for digit in digits.iter_mut().skip(4) {
            *digit = (stream.next() % 10) as u32;
        }
        let Some(check) = mod11_check_digit(&digits) else {
            continue;
        };
        let bban: String = digits
            .iter()
            .chain([check].iter())
            .map(|d| char::from_digit(*d, 10).unwrap())
            .collect();
        if accounts.iter().any(|a: &SeededAccount| a.bban == bban) {
            continue;
        }
        let (name, product) = kinds[accounts.len() % kinds.len()];
        // 1 000.00 to 250 000.00 NOK.
        let cents = 100_000 + stream.next() % 24_900_000;
        accounts.push(SeededAccount {
            iban: iban_from_bban(&bban),
            bban,
            name,
            product,
            balance: Decimal::new(cents as i64, 2),
            owner,
        });
    }
    accounts
}

/// A deterministic stream of numbers derived with SHA-256 from a seed and some labels.
struct HashStream {
    input: Vec<u8>,
    counter: u64,
}

impl HashStream {
    fn new(seed: u64, labels: &[&str]) -> HashStream {
        let mut input = seed.to_be_bytes().to_vec();
        for label in labels {
            input.extend_from_slice(label.as_bytes());
            input.push(0);
        }
        HashStream { input, counter: 0 }
    }

    fn next(&mut self) -> u64 {
        let mut data = self.input.clone();
        data.extend_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &data);
        u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("eight bytes"))
    }
}

/// Returns a short stable id for `parts`, e.g. a provider's id for an account.
pub fn stable_id(parts: &[&str]) -> String {
    let mut stream = HashStream::new(0, parts);
    format!("{:016x}", stream.next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account_number::{is_valid_bban, is_valid_iban};

    #[test]
    fn seeded_accounts_are_valid_and_repeatable() {
        for bank in BankId::ALL {
            let accounts = seeded_accounts(7, bank, "user-1");
            assert!(!accounts.is_empty());
            for account in &accounts {
                assert!(is_valid_bban(&account.bban), "{}", account.bban);
                assert!(is_valid_iban(&account.iban), "{}", account.iban);
                assert!(account.bban.starts_with(bank_code(bank)));
                assert!(account.balance >= Decimal::new(100_000, 2));
            }
            assert_eq!(accounts, seeded_accounts(7, bank, "user-1"));
        }
        assert_ne!(
            seeded_accounts(7, BankId::Dnb, "user-1"),
            seeded_accounts(7, BankId::Dnb, "user-2")
        );
    }
}
