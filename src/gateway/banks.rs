//! `GET /v1/banks`: per bank, whether balances and payments work, and the banner an app shows.

use bankgate_actors::BankId;
use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

use super::AppState;

#[derive(Debug, Serialize)]
pub struct BankView {
    pub bank: BankId,
    pub name: &'static str,
    /// `available` or `degraded`.
    pub balances: &'static str,
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

pub async fn list(state: AppState) -> Response {
    let mut banks = Vec::new();
    for bank in BankId::ALL {
        let available = match state.banks.get(&bank) {
            Some(handle) => handle.status().await.is_ok_and(|s| s.available()),
            None => false,
        };
        let word = if available { "available" } else { "degraded" };
        banks.push(BankView {
            bank,
            name: bank.display_name(),
            balances: word,
            payments: word,
            banner: (!available).then(|| degraded_banner(bank)),
        });
    }
    warp::reply::json(&serde_json::json!({ "banks": banks })).into_response()
}
