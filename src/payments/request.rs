//! `POST /v1/payments`: the request body and the `Idempotency-Key`, checked field by field.
//!
//! Shape errors (not JSON, wrong types, unknown or missing fields) are 400; values that parse
//! but are not acceptable (amount out of range, bad checksum, unknown bank) are 422. Every
//! problem found is listed in `details`, one entry per field.

use bankgate_actors::BankId;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use bankgate_sandbox::account_number::{is_valid_bban, is_valid_iban};
use bankgate_sandbox::http::{ApiError, ErrorCode};

/// The longest creditor name the banks' payment schemes carry.
const MAX_NAME_CHARS: usize = 70;
/// The longest unstructured remittance information (ISO 20022).
const MAX_REMITTANCE_CHARS: usize = 140;
const MAX_KEY_BYTES: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentKind {
    Remittance,
    Qr,
}

impl PaymentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentKind::Remittance => "remittance",
            PaymentKind::Qr => "qr",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditorBody {
    name: String,
    #[serde(default)]
    iban: Option<String>,
    #[serde(default)]
    account_number: Option<String>,
    country: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaymentBody {
    bank: String,
    debtor_account_id: Uuid,
    amount: String,
    currency: String,
    creditor: CreditorBody,
    #[serde(default)]
    remittance_info: Option<String>,
    kind: PaymentKind,
    #[serde(default)]
    redirect_url: Option<String>,
}

/// Who is paid, as stored with the payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creditor {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iban: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_number: Option<String>,
    pub country: String,
}

impl Creditor {
    /// The account as the providers take it: the IBAN, else the Norwegian account number.
    pub fn account(&self) -> &str {
        self.iban
            .as_deref()
            .or(self.account_number.as_deref())
            .unwrap_or_default()
    }
}

/// A payment request that passed every check.
#[derive(Debug, Clone)]
pub struct PaymentRequest {
    pub bank: BankId,
    pub debtor_account_id: Uuid,
    pub amount: Decimal,
    pub currency: String,
    pub creditor: Creditor,
    pub remittance_info: Option<String>,
    pub kind: PaymentKind,
    /// Where the user's browser goes back to the app after the bank's SCA (checked against
    /// the allow-list by the intake).
    pub redirect_url: Option<String>,
}

impl PaymentRequest {
    /// SHA-256 of the request as understood, so that the same payment sent with other
    /// spacing or key order is recognised as the same request.
    pub fn fingerprint(&self) -> Vec<u8> {
        let canonical = serde_json::to_vec(&json!([
            self.bank.as_str(),
            self.debtor_account_id,
            self.amount.to_string(),
            self.currency,
            self.creditor,
            self.remittance_info,
            self.kind,
            self.redirect_url,
        ]))
        .expect("plain values serialize");
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical)
            .as_ref()
            .to_vec()
    }
}

/// The amounts accepted, in NOK.
#[derive(Debug, Clone, Copy)]
pub struct AmountLimits {
    pub min: Decimal,
    pub max: Decimal,
}

/// Checks the `Idempotency-Key` header: 1–255 visible ASCII characters.
pub fn idempotency_key(value: Option<&str>) -> Result<String, ApiError> {
    const FIELD: &str = "Idempotency-Key";
    let key = value.ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            "the Idempotency-Key header is required",
        )
        .with_detail(FIELD, "required")
    })?;
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "the Idempotency-Key header must be 1 to 255 visible ASCII characters",
        )
        .with_detail(FIELD, "must be 1 to 255 visible ASCII characters"));
    }
    Ok(key.to_owned())
}

/// Parses and checks the body. `body` must already be valid JSON.
pub fn parse(body: &serde_json::Value, limits: AmountLimits) -> Result<PaymentRequest, ApiError> {
    let parsed: PaymentBody = serde_json::from_value(body.clone()).map_err(|e| {
        let issue = e.to_string();
        ApiError::new(
            ErrorCode::BadRequest,
            format!("the payment body is not valid: {issue}"),
        )
        .with_detail("body", issue)
    })?;
    let mut problems = ApiError::new(ErrorCode::Unprocessable, "the payment was not accepted");

    let bank = parsed.bank.parse::<BankId>().ok();
    if bank.is_none() {
        problems = problems.with_detail("bank", "must be one of dnb, nordea, sparebank1");
    }
    let amount = check_amount(&parsed.amount, limits);
    if let Err(issue) = &amount {
        problems = problems.with_detail("amount", issue.clone());
    }
    if parsed.currency != "NOK" {
        problems = problems.with_detail("currency", "must be NOK");
    }

    let creditor = parsed.creditor;
    let name = creditor.name.trim().to_owned();
    if name.is_empty()
        || name.chars().count() > MAX_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        problems = problems.with_detail(
            "creditor.name",
            format!("must be 1 to {MAX_NAME_CHARS} printable characters"),
        );
    }
    let country = creditor.country.trim().to_ascii_uppercase();
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        problems = problems.with_detail("creditor.country", "must be a two-letter ISO 3166 code");
    }
    let iban = creditor
        .iban
        .map(|i| i.replace(' ', "").to_ascii_uppercase());
    let account_number = creditor.account_number.map(|a| a.replace(['.', ' '], ""));
    match (&iban, &account_number) {
        (Some(_), Some(_)) | (None, None) => {
            problems =
                problems.with_detail("creditor", "give exactly one of iban and account_number");
        }
        (Some(iban), None) => {
            if !is_valid_iban(iban) {
                problems = problems.with_detail("creditor.iban", "is not a valid IBAN (checksum)");
            } else if !iban.starts_with(&country) {
                problems =
                    problems.with_detail("creditor.country", "must match the IBAN's country");
            }
        }
        (None, Some(number)) => {
            if !is_valid_bban(number) {
                problems = problems.with_detail(
                    "creditor.account_number",
                    "is not a valid Norwegian account number (11 digits, MOD11 check digit)",
                );
            } else if country != "NO" {
                problems = problems.with_detail(
                    "creditor.country",
                    "must be NO for a Norwegian account number",
                );
            }
        }
    }
    let remittance_info = parsed
        .remittance_info
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if remittance_info.as_ref().is_some_and(|r| {
        r.chars().count() > MAX_REMITTANCE_CHARS || r.chars().any(char::is_control)
    }) {
        problems = problems.with_detail(
            "remittance_info",
            format!("must be at most {MAX_REMITTANCE_CHARS} printable characters"),
        );
    }
    if !problems.details.is_empty() {
        return Err(problems);
    }
    Ok(PaymentRequest {
        bank: bank.expect("checked above"),
        debtor_account_id: parsed.debtor_account_id,
        amount: amount.expect("checked above"),
        currency: parsed.currency,
        creditor: Creditor {
            name,
            iban,
            account_number,
            country,
        },
        remittance_info,
        kind: parsed.kind,
        redirect_url: parsed.redirect_url,
    })
}

fn check_amount(text: &str, limits: AmountLimits) -> Result<Decimal, String> {
    let well_formed = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|b| *b == b'.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    let amount = text
        .parse::<Decimal>()
        .ok()
        .filter(|_| well_formed)
        .ok_or_else(|| "must be a decimal string such as \"150.00\"".to_owned())?;
    if amount.scale() > 2 {
        return Err("must have at most 2 decimals".to_owned());
    }
    if amount < limits.min || amount > limits.max {
        return Err(format!(
            "must be between {} and {} NOK",
            limits.min, limits.max
        ));
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AmountLimits = AmountLimits {
        min: Decimal::from_parts(100, 0, 0, false, 0),
        max: Decimal::from_parts(50_000, 0, 0, false, 0),
    };

    fn body() -> serde_json::Value {
        json!({
            "bank": "dnb",
            "debtor_account_id": "6f1f3a52-5d1c-4d5e-8a4a-0f0e7b8d9c01",
            "amount": "150.50",
            "currency": "NOK",
            "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
            "remittance_info": "Husleie",
            "kind": "remittance",
        })
    }

    fn fields(error: ApiError) -> Vec<String> {
        error.details.into_iter().map(|d| d.field).collect()
    }

    #[test]
    fn a_valid_payment_passes() {
        let request = parse(&body(), LIMITS).unwrap();
        assert_eq!(request.bank, BankId::Dnb);
        assert_eq!(request.amount.to_string(), "150.50");
        assert_eq!(request.creditor.account(), "86011117947");
    }

    #[test]
    fn amounts_are_checked_for_shape_decimals_and_range() {
        for (amount, ok) in [
            ("100", true),
            ("50000.00", true),
            ("99.99", false),
            ("50000.01", false),
            ("150.505", false),
            ("1e3", false),
            ("-150", false),
            ("", false),
            ("150.", false),
        ] {
            let mut b = body();
            b["amount"] = json!(amount);
            assert_eq!(parse(&b, LIMITS).is_ok(), ok, "{amount}");
        }
    }

    #[test]
    fn creditor_accounts_need_a_valid_checksum_and_matching_country() {
        let mut b = body();
        b["creditor"]["account_number"] = json!("86011117948");
        assert_eq!(
            fields(parse(&b, LIMITS).unwrap_err()),
            ["creditor.account_number"]
        );

        let mut b = body();
        b["creditor"] = json!({"name": "Hans", "iban": "DE89370400440532013000", "country": "DE"});
        assert!(parse(&b, LIMITS).is_ok());
        b["creditor"]["iban"] = json!("DE89370400440532013001");
        assert_eq!(fields(parse(&b, LIMITS).unwrap_err()), ["creditor.iban"]);
        b["creditor"] = json!({"name": "Hans", "iban": "DE89370400440532013000", "country": "SE"});
        assert_eq!(fields(parse(&b, LIMITS).unwrap_err()), ["creditor.country"]);

        let mut b = body();
        b["creditor"]["iban"] = json!("NO9386011117947");
        assert_eq!(fields(parse(&b, LIMITS).unwrap_err()), ["creditor"]);
    }

    #[test]
    fn every_problem_is_listed_and_shape_errors_are_400() {
        let mut b = body();
        b["bank"] = json!("handelsbanken");
        b["currency"] = json!("SEK");
        b["creditor"]["name"] = json!("  ");
        let error = parse(&b, LIMITS).unwrap_err();
        assert_eq!(error.code, ErrorCode::Unprocessable);
        assert_eq!(fields(error), ["bank", "currency", "creditor.name"]);

        let mut b = body();
        b["surprise"] = json!(1);
        assert_eq!(parse(&b, LIMITS).unwrap_err().code, ErrorCode::BadRequest);
        let mut b = body();
        b["kind"] = json!("gift");
        assert_eq!(parse(&b, LIMITS).unwrap_err().code, ErrorCode::BadRequest);
    }

    #[test]
    fn idempotency_keys_are_visible_ascii_up_to_255() {
        assert!(idempotency_key(Some("order-42")).is_ok());
        assert!(idempotency_key(Some(&"k".repeat(255))).is_ok());
        assert!(idempotency_key(None).is_err());
        assert!(idempotency_key(Some("")).is_err());
        assert!(idempotency_key(Some(&"k".repeat(256))).is_err());
        assert!(idempotency_key(Some("has space")).is_err());
        assert!(idempotency_key(Some("blåbær")).is_err());
    }
}
