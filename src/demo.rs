//! `bankgate demo`: the main job on one machine. Starts a private PostgreSQL (unless
//! `database.url` names a server), the sandbox upstream and the gateway wired to it, prints
//! where everything is, and on Ctrl-C stops all of it in order, leaving nothing running.

use anyhow::Context as _;
use bankgate_actors::BankId;
use secrecy::ExposeSecret as _;

use crate::gateway::Gateway;
use crate::postgres::{self, PrivateCluster};
use crate::sandbox::{Sandbox, SandboxOptions};
use crate::settings::Settings;

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let (url, cluster) = match &settings.database.url {
        Some(url) => (url.expose_secret().to_owned(), None),
        None => {
            let dir = &settings.database.data_dir;
            println!("starting a private PostgreSQL in {}", dir.display());
            let cluster = PrivateCluster::start(dir)
                .await
                .context("failed to start PostgreSQL")?;
            let url = cluster.ensure_database("bankgate").await?;
            (url, Some(cluster))
        }
    };

    let sandbox = Sandbox::start(SandboxOptions::from_settings(&settings.sandbox)).await?;
    settings.providers.neonomics.base_url = sandbox.neonomics_url();
    for bank in BankId::ALL {
        settings
            .providers
            .psd2
            .bank_urls
            .insert(bank, sandbox.psd2_url(bank));
    }

    let db = &settings.database;
    let pool = postgres::pool(&url, db.pool_size, db.connect_timeout)?;
    postgres::migrate(&pool)
        .await
        .context("failed to migrate the database")?;
    let gateway = Gateway::start(&settings, pool).await?;

    print_banner(&gateway, &sandbox);
    crate::cli::shutdown_signal().await;
    println!("\nstopping: gateway, sandbox, PostgreSQL");
    gateway.shutdown().await;
    sandbox.shutdown().await;
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    println!("stopped");
    Ok(())
}

fn print_banner(gateway: &Gateway, sandbox: &Sandbox) {
    let control = sandbox.control_url();
    println!();
    println!("bankgate demo is running (Ctrl-C stops everything)");
    println!();
    println!("  client API       {}", gateway.client_url());
    println!("  ops + metrics    {}/metrics", gateway.ops_url());
    println!("  sandbox control  {control}/sandbox/faults");
    println!("  sandbox Neonomics {}/ics/v3", sandbox.neonomics_url());
    println!("  sandbox PSD2     {}", sandbox.psd2_url(BankId::Dnb));
    println!();
    println!("Try:");
    println!("  curl -i {}/healthz", gateway.client_url());
    println!("  curl -s '{control}/sandbox/accounts?bank=dnb'");
    println!(
        "  curl -s -X POST {control}/sandbox/faults -H 'content-type: application/json' \\\n       -d '{{\"provider\":\"neonomics\",\"bank\":\"dnb\",\"kind\":\"unavailable\",\"duration_s\":60}}'"
    );
    println!();
}
