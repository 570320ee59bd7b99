//! The `bankgate` command line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret as _;

use crate::gateway::Gateway;
use crate::settings::Settings;
use crate::shutdown::shutdown_signal;
use bankgate_sandbox::{Sandbox, SandboxOptions};

/// Exit code for bad settings or usage (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "bankgate",
    version,
    about = "Resilient open-banking gateway for Drop"
)]
pub struct Cli {
    /// Settings file layered over the built-in defaults.
    #[arg(long, global = true, env = "BANKGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: client API and ops API (needs database.url).
    Serve,
    /// Run the sandbox upstream alone (Neonomics on port + 1, PSD2 banks on port + 2).
    Sandbox {
        /// Port of the sandbox's control API.
        #[arg(long)]
        port: Option<u16>,
    },
    /// Run PostgreSQL, the sandbox and the gateway together; Ctrl-C stops everything.
    Demo,
    /// Chaos soak: traffic, random faults, SIGKILLs and a database restart against a gateway
    /// process; exits 1 if a promise broke.
    Soak(crate::soak::SoakArgs),
    /// Apply the database migrations and exit.
    Migrate,
    /// Operate a running gateway through its ops API: status, diagnosis, modes, breakers.
    Ops(crate::ops_cli::OpsArgs),
    /// Print a client bearer token signed with the configured secret.
    Token {
        /// User id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// Session id (the token's `sid`); a fresh one when omitted.
        #[arg(long)]
        session: Option<String>,
        /// Lifetime, e.g. 15m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// A failure that maps to an exit code: bad settings (64) or a runtime error (1).
enum Failure {
    Config(String),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Runtime(error)
    }
}

/// Parses the command line, runs the command and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut settings = match Settings::load(cli.config.as_deref(), &env) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("bankgate: invalid settings: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if matches!(cli.command, Command::Soak(_)) {
        // The soak's output is its timeline and report; the sandbox's access log would bury it.
        settings.telemetry.log_filter = "warn".to_owned();
    }
    crate::telemetry::init_logging(&settings.telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bankgate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command, cli.config, settings));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(message)) => {
            eprintln!("bankgate: {message}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(error)) => {
            eprintln!("bankgate: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Option<PathBuf>, settings: Settings) -> Result<(), Failure> {
    match command {
        Command::Serve => serve(settings).await,
        Command::Sandbox { port } => sandbox(settings, port).await,
        Command::Demo => Ok(crate::demo::run(settings).await?),
        Command::Soak(args) => {
            let report = crate::soak::run(settings, config, args).await?;
            if report.passed() {
                Ok(())
            } else {
                Err(Failure::Runtime(anyhow::anyhow!(
                    "the soak broke a promise (see the report)"
                )))
            }
        }
        Command::Ops(args) => {
            let url = format!("http://{}", settings.http.ops_addr);
            Ok(crate::ops_cli::run(args, url).await?)
        }
        Command::Migrate => {
            let pool = configured_pool(&settings)?;
            let applied = crate::postgres::migrate(&pool)
                .await
                .context("failed to migrate")?;
            println!("applied {applied} migration(s); the schema is up to date");
            Ok(())
        }
        Command::Token { user, session, ttl } => {
            let session = session.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let token = crate::token::mint(&settings.auth.token_secret, &user, &session, ttl)
                .map_err(|e| Failure::Config(e.to_string()))?;
            println!("{token}");
            Ok(())
        }
    }
}

fn configured_pool(settings: &Settings) -> Result<crate::postgres::Database, Failure> {
    let Some(url) = &settings.database.url else {
        return Err(Failure::Config(
            "database.url is not set (e.g. BANKGATE__DATABASE__URL=postgres://…); `bankgate demo` runs without one"
                .to_owned(),
        ));
    };
    let db = &settings.database;
    crate::postgres::pool(url.expose_secret(), db.pool_options())
        .map_err(|e| Failure::Config(e.to_string()))
}

async fn serve(settings: Settings) -> Result<(), Failure> {
    if let Some(key) = settings.exposed_development_value() {
        let var = format!("BANKGATE__{}", key.replace('.', "__").to_uppercase());
        return Err(Failure::Config(format!(
            "`{key}` is the built-in development value and the gateway is reachable beyond this machine (a listener or http.public_url): set your own ({var})"
        )));
    }
    if let Some(mode) = settings.exposed_unverified_database() {
        return Err(Failure::Config(format!(
            "database.url has sslmode={mode} for a server beyond this machine and the gateway is reachable beyond it: use sslmode=verify-full with sslrootcert, or set database.allow_unverified_tls (BANKGATE__DATABASE__ALLOW_UNVERIFIED_TLS=true)"
        )));
    }
    let pool = configured_pool(&settings)?;
    crate::postgres::migrate(&pool)
        .await
        .context("failed to migrate the database")?;
    let gateway = Gateway::start(&settings, pool)
        .await
        .map_err(anyhow::Error::from)?;
    tracing::info!(client = %gateway.client_url(), ops = %gateway.ops_url(), "gateway listening");
    shutdown_signal().await;
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}

async fn sandbox(settings: Settings, port: Option<u16>) -> Result<(), Failure> {
    let mut options = SandboxOptions::from_settings(&settings.sandbox);
    if let Some(port) = port {
        options.port = port;
    }
    let sandbox = Sandbox::start(options).await.map_err(anyhow::Error::from)?;
    println!(
        "sandbox control + SCA  {}/sandbox/faults",
        sandbox.control_url()
    );
    println!("sandbox Neonomics      {}/ics/v3", sandbox.neonomics_url());
    for bank in bankgate_actors::BankId::ALL {
        println!(
            "sandbox PSD2 {:<10} {}",
            bank.as_str(),
            sandbox.psd2_url(bank)
        );
    }
    shutdown_signal().await;
    sandbox.shutdown().await;
    Ok(())
}
