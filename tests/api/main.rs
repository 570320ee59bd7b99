//! bankgate's integration tests: one binary (one link, one PostgreSQL cluster) whose modules
//! exercise the real pieces over real sockets.

mod balances;
mod cli;
mod crash;
mod dashboards;
mod database_outage;
mod exactly_once;
mod gateway;
mod helpers;
mod logs;
mod neonomics_conformance;
mod ops;
mod payments;
mod postgres;
mod postgres_tls;
mod prometheus;
mod sandbox_consent;
mod sandbox_faults;
mod sandbox_payments;
mod sca_return;
mod schemathesis;
mod settings;
mod soak;
mod sockets;
mod webhooks;
