//! bankgate's supervision tree and resilience logic.
//!
//! This crate knows nothing of HTTP or of the settings loader: it names the banks, providers
//! and services bankgate talks about and, as the gateway grows, owns the actors that keep the
//! answers coming when those fail. `src/` (the `bankgate` crate) implements the ports it needs.

mod ids;

pub use ids::{BankId, ParseIdError, ProviderId, Service};
