//! Account numbers as payments name them: the Norwegian 11-digit account number (BBAN) with
//! its MOD11 check digit, and IBANs with their ISO 7064 mod-97 checksum.

/// MOD11 weights of the first ten digits of a Norwegian account number.
const MOD11_WEIGHTS: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

/// Returns the check digit for the first ten digits, or `None` when no valid digit exists.
pub(crate) fn mod11_check_digit(digits: &[u32; 10]) -> Option<u32> {
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
}
