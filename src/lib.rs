//! bankgate: a resilient open-banking gateway between Drop's API and its PSD2 providers.
//!
//! # Layout
//!
//! - `browser`: plays a user's browser through a consent against the sandbox (demo, tests).
//! - `cli`: the `bankgate` command line (serve, sandbox, demo, migrate, token, ops).
//! - `copy`: every text a user sees, in Norwegian.
//! - `ops_cli`: `bankgate ops …`, the ops API from a terminal.
//! - `settings`: layered settings (built-in defaults → file → `BANKGATE__…` env vars).
//! - `shutdown`: the stop signal (SIGINT, SIGTERM) the long-running commands wait for.
//! - `telemetry`: logs and the Prometheus recorder.
//! - `gateway`: the gateway process: client API, ops API, wiring to PostgreSQL.
//! - `postgres`: connection pool, migrations, and the private cluster for demo and tests.
//! - `ops`: the ops API's service: bank modes and breaker overrides (stored, audited, spread
//!   by LISTEN/NOTIFY), status and the runbook diagnosis.
//! - `consents`: connecting a bank: the consent flow through each provider's SCA, through
//!   the provider actors, and the connections it leaves.
//! - `payments`: payment initiation with idempotency keys, the durable state machine, the
//!   queue during outages and its drain, provider webhooks.
//! - `providers`: HTTP clients of Neonomics and the banks' PSD2 APIs (the actors' `Upstream`).
//! - `quota`: a limit of so many per window (payments per user and IP, consents per user).
//! - `redirect`: where a user's browser may be sent back to the app after SCA (consents and
//!   payments), and with what.
//! - `store`: PostgreSQL behind the actors' `Store` (connections, last balances).
//! - `token`: client bearer tokens.
//! - `demo`: PostgreSQL, sandbox and gateway in one process tree.
//! - `soak`: the chaos soak: traffic, random faults, SIGKILLs and a database restart against a
//!   gateway process, then checks that nothing accepted was lost or done twice.
//!
//! The resilience logic (actors, breakers, caches) lives in the `bankgate-actors` crate. The
//! simulated upstream (Neonomics and the banks' NextGenPSD2 APIs, with fault injection) that
//! tests, the demo and the benchmarks run against lives in the `bankgate-sandbox` crate, with
//! two pieces the gateway shares with it: the HTTP plumbing every listener uses
//! (`bankgate_sandbox::http`: connection loop, error envelope, request ids) and account
//! numbers (`bankgate_sandbox::account_number`). The dependency points one way, from here to
//! the sandbox.

// warp's route trees are deeply nested types; release builds need more than the default 128.
#![recursion_limit = "256"]

pub mod browser;
pub mod cli;
pub mod consents;
pub mod copy;
pub mod demo;
pub mod gateway;
pub mod ops;
pub mod ops_cli;
pub mod payments;
pub mod postgres;
pub mod providers;
pub mod quota;
pub mod redirect;
pub mod settings;
pub mod shutdown;
pub mod soak;
pub mod store;
pub mod telemetry;
pub mod token;
