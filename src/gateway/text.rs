//! Amounts and instants as the client API writes them, formatted on the stack.
//!
//! rust_decimal writes a `Decimal` by dividing its 96-bit mantissa by ten once per digit, and
//! chrono's RFC 3339 writer goes through `core::fmt` into a fresh `String`; on a cached balance
//! read the two were a fifth of the time spent rendering the answer. These write the very same
//! text (the tests hold them to the libraries' own output) with `itoa` and a fixed buffer.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use rust_decimal::Decimal;
use serde::Serializer;

/// Room for the longest text either writer makes: a 29-digit mantissa with its sign and point,
/// or chrono's form of a year beyond 9999.
const CAPACITY: usize = 40;

/// Text built in place, at most `CAPACITY` bytes of ASCII.
struct Text {
    bytes: [u8; CAPACITY],
    len: usize,
}

impl Text {
    fn new() -> Text {
        Text {
            bytes: [0; CAPACITY],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// `value` in exactly `width` digits, zero-padded on the left; `value` has no more.
    fn push_padded(&mut self, mut value: u32, width: usize) {
        debug_assert!(u64::from(value) < 10_u64.pow(width as u32));
        let end = self.len + width;
        for digit in self.bytes[self.len..end].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len = end;
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only ASCII is written")
    }
}

/// Writes `value` as rust_decimal's `Display` does: every digit of its scale, `-` when the
/// sign is negative, `0` before a point with nothing in front of it.
fn decimal_text(value: &Decimal) -> Text {
    let mut text = Text::new();
    if value.is_sign_negative() {
        text.push(b"-");
    }
    let magnitude = value.mantissa().unsigned_abs();
    let mut buffer = itoa::Buffer::new();
    let digits = match u64::try_from(magnitude) {
        Ok(small) => buffer.format(small),
        Err(_) => buffer.format(magnitude),
    }
    .as_bytes();
    let scale = value.scale() as usize;
    if scale == 0 {
        text.push(digits);
    } else if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        text.push(whole);
        text.push(b".");
        text.push(fraction);
    } else {
        text.push(b"0.");
        for _ in digits.len()..scale {
            text.push(b"0");
        }
        text.push(digits);
    }
    text
}

/// Writes `at` as `to_rfc3339_opts(SecondsFormat::AutoSi, true)` does: seconds, then
/// milli-, micro- or nanoseconds as far as they are not zero, then `Z`.
fn rfc3339_text(at: &DateTime<Utc>) -> Text {
    let mut text = Text::new();
    let utc = at.naive_utc();
    let (date, time) = (utc.date(), utc.time());
    let (year, nanos) = (date.year(), time.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        // Years of other widths and leap seconds: rare enough to leave to chrono.
        text.push(at.to_rfc3339_opts(SecondsFormat::AutoSi, true).as_bytes());
        return text;
    }
    text.push_padded(year as u32, 4);
    text.push(b"-");
    text.push_padded(date.month(), 2);
    text.push(b"-");
    text.push_padded(date.day(), 2);
    text.push(b"T");
    text.push_padded(time.hour(), 2);
    text.push(b":");
    text.push_padded(time.minute(), 2);
    text.push(b":");
    text.push_padded(time.second(), 2);
    let fraction = if nanos == 0 {
        None
    } else if nanos.is_multiple_of(1_000_000) {
        Some((nanos / 1_000_000, 3))
    } else if nanos.is_multiple_of(1_000) {
        Some((nanos / 1_000, 6))
    } else {
        Some((nanos, 9))
    };
    if let Some((digits, width)) = fraction {
        text.push(b".");
        text.push_padded(digits, width);
    }
    text.push(b"Z");
    text
}

/// Serializes an amount as its decimal string, e.g. `"182748.82"`.
pub fn decimal<S: Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(decimal_text(value).as_str())
}

/// Serializes an optional amount as its decimal string, or null.
pub fn optional_decimal<S: Serializer>(
    value: &Option<Decimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => decimal(value, serializer),
        None => serializer.serialize_none(),
    }
}

/// Serializes an optional instant in RFC 3339 (UTC, `Z`), or null.
pub fn optional_rfc3339<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_str(rfc3339_text(at).as_str()),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn amounts_read_as_rust_decimal_writes_them() {
        let mut values: Vec<Decimal> = [
            "0",
            "0.00",
            "-0.00",
            "1",
            "-1",
            "0.005",
            "-0.005",
            "182748.82",
            "-182748.82",
            "100.10",
            "12345678901234567890.12",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "7.9228162514264337593543950335",
            "0.0000000000000000000000000001",
        ]
        .iter()
        .map(|text| Decimal::from_str(text).expect("a decimal"))
        .collect();
        values.push(Decimal::new(-0, 3));
        values.push(Decimal::MAX);
        values.push(Decimal::MIN);
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mantissa = i64::from_ne_bytes(seed.to_ne_bytes());
            values.push(Decimal::new(mantissa, (seed % 29) as u32));
        }
        for value in values {
            assert_eq!(
                serde_json::to_value(value).expect("rust_decimal's own"),
                serde_json::to_value(Amount(value)).expect("ours"),
                "{value:?}"
            );
        }
    }

    #[derive(serde::Serialize)]
    struct Amount(#[serde(serialize_with = "decimal")] Decimal);

    #[derive(serde::Serialize)]
    struct Instant(#[serde(serialize_with = "optional_rfc3339")] Option<DateTime<Utc>>);

    #[test]
    fn instants_read_as_chrono_writes_them() {
        let second = Utc.with_ymd_and_hms(2026, 11, 23, 5, 50, 2).unwrap();
        let mut instants = vec![
            second,
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 12, 0, 0).unwrap(),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        for nanos in [
            1,
            999,
            1_000,
            120_000,
            999_000,
            1_000_000,
            718_000_000,
            718_559_169,
            999_999_999,
        ] {
            instants.push(second.with_nanosecond(nanos).unwrap());
        }
        // A leap second, which chrono writes as second 60.
        let before_leap = Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap();
        instants.push(before_leap.with_nanosecond(1_500_000_000).unwrap());
        for instant in instants {
            assert_eq!(
                serde_json::to_string(&Instant(Some(instant))).expect("ours"),
                format!(
                    "\"{}\"",
                    instant.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                ),
            );
        }
        assert_eq!(serde_json::to_string(&Instant(None)).unwrap(), "null");
    }
}
