//! `GET /v1/banks`: per bank, whether balances and payments work, and the banner an app shows.
//! Payments follow the bank's payments mode; while no provider path works they are queued.

use bankgate_actors::BankId;
use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

use super::AppState;
use crate::payments::{DISABLED_MESSAGE, PaymentsMode};

#[derive(Debug, Serialize)]
pub struct BankView {
    pub bank: BankId,
    pub name: &'static str,
    /// `available` or `degraded`.
    pub balances: &'static str,
    /// `available`, `queued` (accepted and sent later) or `unavailable`.
    pub payments: &'static str,
    /// Norwegian text for the app's banner; null when all is well.
    pub banner: Option<String>,
}

/// The banner shown while a bank cannot be reached through any provider.
pub fn degraded_banner(bank: BankId) -> String {
    format!(
        "{} opplever tekniske problemer. Saldo vises med forsinkelse, og betalinger kan bli forsinket.",
        bank.display_name()
    )
}

/// The banner while an operator holds a bank's payments in the queue.
pub fn queued_banner(bank: BankId) -> String {
    format!(
        "Betalinger fra {} settes i kø og behandles innen 2 timer.",
        bank.display_name()
    )
}

pub async fn list(state: AppState) -> Response {
    let mut banks = Vec::new();
    for bank in BankId::ALL {
        let available = match state.banks.get(&bank) {
            Some(handle) => handle.status().await.is_ok_and(|s| s.available()),
            None => false,
        };
        let (payments, payments_banner) = match state.payments.mode(bank) {
            PaymentsMode::Disabled => ("unavailable", Some(DISABLED_MESSAGE.to_owned())),
            PaymentsMode::Queue => ("queued", Some(queued_banner(bank))),
            PaymentsMode::Live if available => ("available", None),
            PaymentsMode::Live => ("queued", None),
        };
        banks.push(BankView {
            bank,
            name: bank.display_name(),
            balances: if available { "available" } else { "degraded" },
            payments,
            banner: if available {
                payments_banner
            } else {
                Some(degraded_banner(bank))
            },
        });
    }
    warp::reply::json(&serde_json::json!({ "banks": banks })).into_response()
}
