//! bankgate's supervision tree and resilience logic.
//!
//! This crate knows nothing of HTTP or of the settings loader: it defines the ports it needs
//! (`upstream::Upstream` for a provider's API, `upstream::Store` for PostgreSQL) and `src/`
//! implements them.
//!
//! ```text
//!                         RootActor (tree.rs) — restarts failed children with back-off
//!        ┌──────────────────────┬───────────────────────┬──────────────────┬──────────┐
//!  ProviderActor ×2        BankActor ×3            SessionSweeper        Drainer
//!  (neonomics, psd2)       (dnb, nordea,           forgets idle          sends queued
//!  token, quota,           sparebank1)             sessions (records,    payments
//!  retries                 breakers, cache,        no actor each)
//!                          failover, bulkhead
//! ```
//!
//! One balance read: the warp handler verifies the token and asks the user's `SessionHandle`;
//! in the request's own task, the session rate-limits the user, answers from a fresh cache
//! or joins or starts the read of the same accounts in flight, which asks each
//! account's `BankHandle`; the bank actor answers from a fresh cache, or spawns a task that
//! calls the first provider whose breaker allows it (`ProviderHandle::balance`: quota,
//! concurrency cap, token, timeout, retries) and gets the outcome back as a message; on failure
//! it fails over to the next provider, and with none left it serves the cached balance as
//! stale with the bank's Norwegian warning, or answers unavailable. A live balance goes
//! into the cache at once and to PostgreSQL in batches (`balance_writer`).
//!
//! One payment: the payment service (in `src/`) writes it to PostgreSQL, then asks the bank's
//! `BankHandle::pay`; the bank actor picks the provider by breaker and order and fails over
//! only when the first provably did not take it. The `Drainer` actor, a fourth kind of child
//! of the root, sends queued payments when a bank recovers.
//!
//! The pure pieces live apart from the actors and are tested with paused time: `breaker`,
//! `retry` (back-off and budget), `freshness`.
//!
//! # Layout
//!
//! - `tree.rs` — the root supervisor: starts every child, restarts a failed one with back-off.
//! - `bank/` — the bank actor: `mod.rs` (messages, handle, the actor), `read.rs` (balance
//!   reads: cache, PSD2 allowance, failover, stale answers), `pay.rs` (which provider gets a
//!   payment), `paths.rs` (per-provider breakers: the permit and the **trip policy**, the
//!   health probe, automatic degradation, waking the drainer).
//! - `provider.rs` — the provider actor and handle: token, quota, concurrency cap, retries.
//! - `session/` — sessions as records (why no actor each: `session/mod.rs`): `registry.rs`
//!   (by user and `sid`, the sweep), `connections.rs` (the user's list), `read.rs` (the local
//!   answer, the coalescer, the reads from the banks).
//! - `drainer.rs` — the queue drainer actor: when each bank's **queue drain** runs (the pass
//!   itself is the gateway's, behind the `PaymentQueue` port: `src/payments/drain.rs`).
//! - `breaker.rs`, `retry.rs`, `freshness.rs` — the pure state machines.
//! - `balance_writer.rs` — live balances to the store in batches.
//! - `calls.rs` — the per-path call log the diagnosis reads; `metrics.rs` — metric names.
//! - `modes.rs` — operators' pins and the automatic degradation flags every actor reads.
//! - `upstream.rs` — the ports: `Upstream` (a provider's API) and `Store` (PostgreSQL).
//! - `config.rs` — what a configuration section says when it cannot work.
//! - `test_util/` — scripted fakes of the ports and the runbook's scenarios on paused time
//!   (tests and the `test-util` feature only).

pub mod balance_writer;
pub mod bank;
pub mod breaker;
pub mod calls;
pub mod config;
pub mod drainer;
pub mod freshness;
mod ids;
pub mod metrics;
pub mod modes;
pub mod national_id;
pub mod provider;
pub mod retry;
pub mod session;
mod slot;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod tree;
pub mod upstream;

pub use ids::{BankId, ParseIdError, ProviderId, Service, WebhookSource};
