//! Norwegian account numbers: the 11-digit BBAN with its MOD11 check digit, the IBAN built
//! from it, and the deterministic generation of a sandbox user's accounts.

use bankgate_actors::BankId;
use rust_decimal::Decimal;

/// MOD11 weights of the first ten digits of a Norwegian account number.
const MOD11_WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

/// Returns the check digit for the first ten digits, or `None` when no valid digit exists.
fn mod11_check_digit(digits: &[u32; 10]) -> Option<u32> {
    let sum: u32 = digits.iter().zip(MOD11_WEIGHTS).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        digit => Some(digit),
    }
}

/// Returns whether `bban` is an 11-digit Norwegian account number with a valid check digit.
pub fn is_valid_bban(bban: &str) -> bool {
    let digits: Vec<u32> = bban.chars().filter_map(|c| c.to_digit(10)).collect();
    if bban.len() != 11 || digits.len() != 11 {
        return false;
    }
    let first: [u32; 10] = digits[..10].try_into().expect("ten digits");
    mod11_check_digit(&first) == Some(digits[10])
}

/// Computes the ISO 7064 mod-97 remainder of an IBAN-style alphanumeric string.
fn mod97(chars: impl Iterator<Item = char>) -> Option<u32> {
    let mut remainder = 0u32;
    for c in chars {
        let value = c.to_digit(36)?;
        remainder = if value < 10 {
            remainder * 10 + value
        } else {
            remainder * 100 + value
        } % 97;
    }
    Some(remainder)
}

/// Returns whether `iban` (no spaces) has a valid structure and mod-97 checksum.
pub fn is_valid_iban(iban: &str) -> bool {
    let bytes = iban.as_bytes();
    if !(15..=34).contains(&bytes.len())
        || !bytes[..2].iter().all(u8::is_ascii_uppercase)
        || !bytes[2..4].iter().all(u8::is_ascii_digit)
        || !bytes[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    if iban.starts_with("NO") && (iban.len() != 15 || !is_valid_bban(&iban[4..])) {
        return false;
    }
    mod97(iban[4..].chars().chain(iban[..4].chars())) == Some(1)
}

/// Returns the Norwegian IBAN of a valid BBAN.
pub fn iban_from_bban(bban: &str) -> String {
    let remainder = mod97(bban.chars().chain("NO00".chars())).expect("digits only");
    format!("NO{:02}{bban}", 98 - remainder)
}

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
}

/// Generates the accounts `psu` holds at `bank`: the same every run for the same seed.
pub fn seeded_accounts(seed: u64, bank: BankId, psu: &str) -> Vec<SeededAccount> {
    let mut stream = HashStream::new(seed, &[bank.as_str(), psu]);
    let count = 1 + (stream.next() % 2) as usize;
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

    #[test]
    fn known_norwegian_numbers_validate() {
        // The example account number and IBAN published by Norwegian banks.
        assert!(is_valid_bban("86011117947"));
        assert!(is_valid_iban("NO9386011117947"));
        assert!(!is_valid_bban("86011117948"));
        assert!(!is_valid_iban("NO9386011117948"));
        assert!(is_valid_iban("DE89370400440532013000"));
        assert!(!is_valid_iban("DE89370400440532013001"));
        assert_eq!(iban_from_bban("86011117947"), "NO9386011117947");
    }

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
