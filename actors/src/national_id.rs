//! The user's Norwegian national identity number (fødselsnummer, or D-number), which banks
//! ask for as the PSU's id: it reaches bankgate in the consent request, goes to the provider
//! that needs it, and is never shown: `Debug` hides it and there is no `Display`, so it
//! cannot land in a log line or a metric by accident.

use std::fmt;

/// An 11-digit identity number whose date part and both check digits are valid.
#[derive(Clone, PartialEq, Eq)]
pub struct NationalId(String);

/// Why a string is not a national identity number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidNationalId {
    #[error("must be 11 digits")]
    Format,
    #[error("the date part is not a date")]
    Date,
    #[error("the check digits do not match")]
    Checksum,
}

/// The weights of the two mod-11 check digits (Skatteetaten's algorithm).
const K1: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const K2: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

impl NationalId {
    pub fn parse(value: &str) -> Result<NationalId, InvalidNationalId> {
        let digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
        if digits.len() != 11 || !value.chars().all(|c| c.is_ascii_digit()) {
            return Err(InvalidNationalId::Format);
        }
        // A D-number adds 40 to the day; an H-number 40 and a synthetic test id 80 to the
        // month.
        let day = digits[0] * 10 + digits[1];
        let month = digits[2] * 10 + digits[3];
        let day = if day > 40 { day - 40 } else { day };
        let month = match month {
            81.. => month - 80,
            41.. => month - 40,
            _ => month,
        };
        if !(1..=31).contains(&day) || !(1..=12).contains(&month) {
            return Err(InvalidNationalId::Date);
        }
        if check_digit(&digits[..9], &K1) != Some(digits[9])
            || check_digit(&digits[..10], &K2) != Some(digits[10])
        {
            return Err(InvalidNationalId::Checksum);
        }
        Ok(NationalId(value.to_owned()))
    }

    /// A synthetic test id for `seed`, as Skatteetaten's test data issues them (month + 80):
    /// valid in form, no one's. The sandbox's users have these.
    pub fn synthetic(seed: &str) -> NationalId {
        // FNV-1a: stable across builds, so a seed names the same id every run.
        let mut hash = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        loop {
            let day = 1 + hash % 28;
            let month = 81 + (hash / 28) % 12;
            let year = (hash / 336) % 100;
            let individual = (hash / 33_600) % 1000;
            let value = format!("{day:02}{month:02}{year:02}{individual:03}");
            let mut digits: Vec<u32> = value.chars().filter_map(|c| c.to_digit(10)).collect();
            if let Some(k1) = check_digit(&digits, &K1) {
                digits.push(k1);
                if let Some(k2) = check_digit(&digits, &K2) {
                    return NationalId(format!("{value}{k1}{k2}"));
                }
            }
            hash = hash.wrapping_add(33_600);
        }
    }

    /// The number itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The mod-11 check digit of `digits` under `weights`; none when the remainder leaves 10,
/// which no valid number has.
fn check_digit(digits: &[u32], weights: &[u32]) -> Option<u32> {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(k),
    }
}

impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NationalId(***********)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_numbers_and_names_what_is_wrong_with_the_rest() {
        // A fødselsnummer, a D-number (day + 40), a synthetic test id (month + 80).
        for valid in ["01010112377", "41010112360", "01810112332"] {
            let id = NationalId::parse(valid).unwrap_or_else(|e| panic!("{valid}: {e}"));
            assert_eq!(id.expose(), valid);
        }
        assert_eq!(
            NationalId::parse("0101011239"),
            Err(InvalidNationalId::Format)
        );
        assert_eq!(
            NationalId::parse("0101011239x"),
            Err(InvalidNationalId::Format)
        );
        assert_eq!(
            NationalId::parse("32010112377"),
            Err(InvalidNationalId::Date)
        );
        assert_eq!(
            NationalId::parse("01010112378"),
            Err(InvalidNationalId::Checksum)
        );
    }

    #[test]
    fn synthetic_ids_are_valid_and_stable() {
        for seed in ["alice", "bob", "demo-user", ""] {
            let id = NationalId::synthetic(seed);
            assert_eq!(NationalId::parse(id.expose()), Ok(id.clone()), "{seed}");
            assert_eq!(NationalId::synthetic(seed), id);
        }
        assert_ne!(NationalId::synthetic("alice"), NationalId::synthetic("bob"));
    }

    #[test]
    fn never_shows_the_number() {
        let id = NationalId::parse("01010112377").unwrap();
        assert!(!format!("{id:?}").contains("0101"));
    }
}
