//! `GET /v1/banks`: per bank, whether balances and payments work, and the banner an app shows.
//! Both follow the bank's modes (operators' pins, or automatic degradation while no provider
//! path works).

use bankgate_actors::BankId;
use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

use bankgate_actors::bank::Warning;
use bankgate_actors::modes::{BalancesMode, PaymentsMode, SetBy};

use super::AppState;
use crate::copy::{PAYMENTS_DISABLED, balance_warning, degraded_banner, queued_banner};

#[derive(Debug, Serialize)]
pub struct BankView {
    pub bank: BankId,
    pub name: &'static str,
    /// `available`, `degraded` (served from cache while the bank fails), `cached` (an
    /// operator chose the cache) or `unavailable`.
    pub balances: &'static str,
    /// `available`, `queued` (accepted and sent later) or `unavailable`.
    pub payments: &'static str,
    /// Norwegian text for the app's banner; null when all is well.
    pub banner: Option<String>,
}

pub async fn list(state: AppState) -> Response {
    let mut banks = Vec::new();
    for bank in BankId::ALL {
        let available = match state.banks.get(&bank) {
            Some(handle) => handle.status().await.is_ok_and(|s| s.available()),
            None => false,
        };
        let modes = state.modes.bank(bank);
        let balances = match modes.balances {
            BalancesMode::Disabled => "unavailable",
            BalancesMode::Cached if modes.balances_set_by == SetBy::Operator => "cached",
            _ if available => "available",
            _ => "degraded",
        };
        let payments = match modes.payments {
            PaymentsMode::Disabled => "unavailable",
            PaymentsMode::Queue => "queued",
            PaymentsMode::Live if available => "available",
            PaymentsMode::Live => "queued",
        };
        let banner = if modes.balances == BalancesMode::Disabled {
            Some(balance_warning(bank, Warning::Disabled).to_owned())
        } else if modes.payments == PaymentsMode::Disabled {
            Some(PAYMENTS_DISABLED.to_owned())
        } else if !available || modes.degraded {
            Some(degraded_banner(bank))
        } else if payments == "queued" {
            Some(queued_banner(bank))
        } else if balances == "cached" {
            Some(balance_warning(bank, Warning::Stale).to_owned())
        } else {
            None
        };
        banks.push(BankView {
            bank,
            name: bank.display_name(),
            balances,
            payments,
            banner,
        });
    }
    warp::reply::json(&serde_json::json!({ "banks": banks })).into_response()
}
