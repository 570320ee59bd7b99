//! How each bank is served right now: the operators' pins and the automatic degradation.
//!
//! An operator may pin a bank's balances (`live`, `cached`, `disabled`) and payments (`live`,
//! `queue`, `disabled`), or leave either on `auto`, and may force a provider's breakers open or
//! closed. On `auto` a bank is degraded when every provider's breaker for it is open: balances
//! are then served from cache and payments queued (the bank actor and the payment service do
//! that by themselves); it returns to live when a probe closes a breaker. The board holds the
//! pins and the degraded flags in atomics, read on every request without a lock, and announces
//! each automatic change so that it can be logged, audited and counted.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{BankId, ProviderId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BalancesMode {
    Live,
    /// Served from cache (up to the maximum staleness) without calling the bank.
    Cached,
    /// Refused with the bank's Norwegian banner.
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentsMode {
    /// Initiated at once.
    Live,
    /// Accepted and queued, sent when the mode returns to live.
    Queue,
    /// Refused with 503.
    Disabled,
}

/// An operator's override of a provider's breakers (for every bank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerPin {
    Open,
    Closed,
}

/// Who decided a bank's current mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetBy {
    Operator,
    Auto,
}

/// A bank entering or leaving automatic degradation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoChange {
    pub bank: BankId,
    pub degraded: bool,
}

/// One bank's effective modes, as status pages show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BankModes {
    pub balances: BalancesMode,
    pub balances_set_by: SetBy,
    pub payments: PaymentsMode,
    pub payments_set_by: SetBy,
    /// Every provider's breaker for the bank is open.
    pub degraded: bool,
}

const AUTO: u8 = 0;

fn encode_balances(mode: Option<BalancesMode>) -> u8 {
    match mode {
        None => AUTO,
        Some(BalancesMode::Live) => 1,
        Some(BalancesMode::Cached) => 2,
        Some(BalancesMode::Disabled) => 3,
    }
}

fn decode_balances(code: u8) -> Option<BalancesMode> {
    match code {
        1 => Some(BalancesMode::Live),
        2 => Some(BalancesMode::Cached),
        3 => Some(BalancesMode::Disabled),
        _ => None,
    }
}

fn encode_payments(mode: Option<PaymentsMode>) -> u8 {
    match mode {
        None => AUTO,
        Some(PaymentsMode::Live) => 1,
        Some(PaymentsMode::Queue) => 2,
        Some(PaymentsMode::Disabled) => 3,
    }
}

fn decode_payments(code: u8) -> Option<PaymentsMode> {
    match code {
        1 => Some(PaymentsMode::Live),
        2 => Some(PaymentsMode::Queue),
        3 => Some(PaymentsMode::Disabled),
        _ => None,
    }
}

fn encode_breaker(pin: Option<BreakerPin>) -> u8 {
    match pin {
        None => AUTO,
        Some(BreakerPin::Open) => 1,
        Some(BreakerPin::Closed) => 2,
    }
}

fn decode_breaker(code: u8) -> Option<BreakerPin> {
    match code {
        1 => Some(BreakerPin::Open),
        2 => Some(BreakerPin::Closed),
        _ => None,
    }
}

fn bank_index(bank: BankId) -> usize {
    BankId::ALL
        .iter()
        .position(|b| *b == bank)
        .expect("a known bank")
}

fn provider_index(provider: ProviderId) -> usize {
    ProviderId::ALL
        .iter()
        .position(|p| *p == provider)
        .expect("a known provider")
}

pub struct ModeBoard {
    balances: [AtomicU8; 3],
    payments: [AtomicU8; 3],
    degraded: [AtomicBool; 3],
    breakers: [AtomicU8; 2],
    changes: broadcast::Sender<AutoChange>,
}

impl Default for ModeBoard {
    fn default() -> Self {
        ModeBoard {
            balances: Default::default(),
            payments: Default::default(),
            degraded: Default::default(),
            breakers: Default::default(),
            changes: broadcast::channel(64).0,
        }
    }
}

impl ModeBoard {
    /// The operator's pin on a bank's balances; `None` is auto.
    pub fn balances_pin(&self, bank: BankId) -> Option<BalancesMode> {
        decode_balances(self.balances[bank_index(bank)].load(Ordering::Relaxed))
    }

    /// The operator's pin on a bank's payments; `None` is auto.
    pub fn payments_pin(&self, bank: BankId) -> Option<PaymentsMode> {
        decode_payments(self.payments[bank_index(bank)].load(Ordering::Relaxed))
    }

    pub fn breaker_pin(&self, provider: ProviderId) -> Option<BreakerPin> {
        decode_breaker(self.breakers[provider_index(provider)].load(Ordering::Relaxed))
    }

    pub fn pin_bank(
        &self,
        bank: BankId,
        balances: Option<BalancesMode>,
        payments: Option<PaymentsMode>,
    ) {
        let i = bank_index(bank);
        self.balances[i].store(encode_balances(balances), Ordering::Relaxed);
        self.payments[i].store(encode_payments(payments), Ordering::Relaxed);
    }

    pub fn pin_breaker(&self, provider: ProviderId, pin: Option<BreakerPin>) {
        self.breakers[provider_index(provider)].store(encode_breaker(pin), Ordering::Relaxed);
    }

    pub fn degraded(&self, bank: BankId) -> bool {
        self.degraded[bank_index(bank)].load(Ordering::Relaxed)
    }

    /// Records whether every path to the bank is down; announces a change.
    pub fn set_degraded(&self, bank: BankId, degraded: bool) {
        let before = self.degraded[bank_index(bank)].swap(degraded, Ordering::Relaxed);
        if before != degraded {
            let _ = self.changes.send(AutoChange { bank, degraded });
        }
    }

    /// Automatic changes as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<AutoChange> {
        self.changes.subscribe()
    }

    /// The modes in force for `bank`.
    pub fn bank(&self, bank: BankId) -> BankModes {
        let degraded = self.degraded(bank);
        let (balances, balances_set_by) = match self.balances_pin(bank) {
            Some(mode) => (mode, SetBy::Operator),
            None if degraded => (BalancesMode::Cached, SetBy::Auto),
            None => (BalancesMode::Live, SetBy::Auto),
        };
        let (payments, payments_set_by) = match self.payments_pin(bank) {
            Some(mode) => (mode, SetBy::Operator),
            None if degraded => (PaymentsMode::Queue, SetBy::Auto),
            None => (PaymentsMode::Live, SetBy::Auto),
        };
        BankModes {
            balances,
            balances_set_by,
            payments,
            payments_set_by,
            degraded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_win_over_automatic_degradation() {
        let board = ModeBoard::default();
        let mut changes = board.subscribe();
        assert_eq!(board.bank(BankId::Dnb).balances, BalancesMode::Live);

        board.set_degraded(BankId::Dnb, true);
        board.set_degraded(BankId::Dnb, true);
        let dnb = board.bank(BankId::Dnb);
        assert_eq!(
            (dnb.balances, dnb.payments, dnb.balances_set_by),
            (BalancesMode::Cached, PaymentsMode::Queue, SetBy::Auto)
        );
        assert_eq!(board.bank(BankId::Nordea).payments, PaymentsMode::Live);
        assert_eq!(
            changes.try_recv().unwrap(),
            AutoChange {
                bank: BankId::Dnb,
                degraded: true
            }
        );
        assert!(changes.try_recv().is_err(), "a repeated state is no change");

        board.pin_bank(BankId::Dnb, Some(BalancesMode::Live), None);
        let dnb = board.bank(BankId::Dnb);
        assert_eq!(
            (dnb.balances, dnb.balances_set_by, dnb.payments),
            (BalancesMode::Live, SetBy::Operator, PaymentsMode::Queue)
        );
        board.pin_breaker(ProviderId::Psd2, Some(BreakerPin::Open));
        assert_eq!(board.breaker_pin(ProviderId::Psd2), Some(BreakerPin::Open));
        assert_eq!(board.breaker_pin(ProviderId::Neonomics), None);
    }
}
