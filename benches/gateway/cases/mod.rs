//! The cases, one file each, in the order `main.rs` runs them. Each takes the bench's
//! servers and answers what it measured: rows for the table, a line for the summary and its
//! part of `target/bench/gateway.json`.

pub mod cached;
pub mod fail_fast;
pub mod live;
pub mod payments;
pub mod sessions;
pub mod slow;

use serde_json::Value;

use crate::load::Figures;

/// Cases 1, 2 and 3 run each server or path this many times, in turn, and report each one's
/// median round: a slow moment of the machine then cannot land on one alone, and with five
/// rounds not even two of them can (three rounds let the stalls of a noisy host decide the
/// live p99 more than once).
pub const ROUNDS: usize = 5;
/// Cases 2 and 3 send at this rate, for this long a round.
pub const LIVE_RATE_PER_S: u64 = 100;
pub const LIVE_SECONDS: u64 = 10;

/// What one case measured.
pub struct Outcome {
    /// Its rows of the table.
    pub rows: Vec<Figures>,
    /// Its line of the summary below the table.
    pub summary: String,
    /// Its entry in `gateway.json`, under `key`.
    pub key: &'static str,
    pub report: Value,
}

/// The median of an odd number of figures.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The round whose `key` is the median of the rounds'.
pub fn median_round(mut runs: Vec<Figures>, key: fn(&Figures) -> f64) -> Figures {
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)));
    runs.swap_remove(runs.len() / 2)
}

/// Figures written as `a, b, c` with `decimals` decimals.
pub fn listed(values: &[f64], decimals: usize) -> String {
    let texts: Vec<String> = values.iter().map(|v| format!("{v:.decimals$}")).collect();
    texts.join(", ")
}
