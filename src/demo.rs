//! `bankgate demo`: the main job on one machine. Starts a private PostgreSQL (unless
//! `database.url` names a server), the sandbox upstream and the gateway wired to it, prints
//! where everything is, and on Ctrl-C stops all of it in order, leaving nothing running.
//! The private PostgreSQL keeps its cluster under `database.data_dir` between runs, but the
//! demo's database is made afresh each run, as the sandbox's world is.

use anyhow::Context as _;
use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use secrecy::ExposeSecret as _;

use crate::gateway::Gateway;
use crate::payments::webhook_targets;
use crate::postgres::{self, PrivateCluster};
use crate::settings::Settings;
use crate::shutdown::shutdown_signal;
use bankgate_sandbox::{Sandbox, SandboxClient, SandboxOptions};

pub async fn run(mut settings: Settings) -> anyhow::Result<()> {
    let (url, cluster) = match &settings.database.url {
        Some(url) => (url.expose_secret().to_owned(), None),
        None => {
            let dir = &settings.database.data_dir;
            println!("starting a private PostgreSQL in {}", dir.display());
            let cluster = PrivateCluster::start(dir)
                .await
                .context("failed to start PostgreSQL")?;
            // The sandbox's world is new on every run: so is the database, or payments and
            // consents of an earlier run would be looked up in a world that never saw them.
            let url = cluster.fresh_database("bankgate").await?;
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
    let pool = postgres::pool(&url, db.pool_options())?;
    postgres::migrate(&pool)
        .await
        .context("failed to migrate the database")?;
    let gateway = Gateway::start(&settings, pool).await?;

    SandboxClient::new(sandbox.control_url())
        .register_webhooks(webhook_targets(&settings.webhooks, &gateway.client_url()))
        .await
        .context("failed to register the webhooks")?;
    let token = connect_demo_user(&settings, &gateway).await?;
    let account = dnb_account(&gateway, &token).await?;
    walk_a_payment(&gateway, &token, &account).await?;
    print_banner(&gateway, &sandbox, &token, &account);
    shutdown_signal().await;
    println!("\nstopping: gateway, sandbox, PostgreSQL");
    gateway.shutdown().await;
    sandbox.shutdown().await;
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    println!("stopped");
    Ok(())
}

/// The user the demo connects to DNB and Nordea, so balances answer right away.
const DEMO_USER: &str = "demo-user";

async fn connect_demo_user(settings: &Settings, gateway: &Gateway) -> anyhow::Result<String> {
    let ttl = std::time::Duration::from_secs(8 * 3600);
    let token = crate::token::mint(&settings.auth.token_secret, DEMO_USER, "demo-session", ttl)?;
    for bank in [BankId::Dnb, BankId::Nordea] {
        crate::browser::connect(
            &gateway.client_url(),
            &token,
            &NationalId::synthetic(DEMO_USER),
            bank,
            "https://drop.example/connected",
        )
        .await
        .with_context(|| format!("failed to connect the demo user to {bank}"))?;
    }
    Ok(token)
}

/// The demo user's first DNB account, to pay from.
async fn dnb_account(gateway: &Gateway, token: &str) -> anyhow::Result<String> {
    let connections: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/connections", gateway.client_url()))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    connections["connections"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["bank"] == "dnb"))
        .and_then(|c| c["id"].as_str())
        .map(str::to_owned)
        .context("the demo user has no DNB account")
}

/// Pays 150 NOK from the demo user's DNB account through Neonomics' documented flow
/// (<https://docs.neonomics.io/docs/payments-1>) and prints each step: the initiation, which
/// Neonomics answers 1428 with the authorize link; the authorization link the user follows;
/// the user's SCA at the bank; the browser's return, on which bankgate completes the payment.
async fn walk_a_payment(gateway: &Gateway, token: &str, account: &str) -> anyhow::Result<()> {
    let client = gateway.client_url();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let paid: serde_json::Value = http
        .post(format!("{client}/v1/payments"))
        .bearer_auth(token)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .header("x-psu-ip-address", "192.0.2.10")
        .json(&serde_json::json!({
            "bank": "dnb",
            "debtor_account_id": account,
            "amount": "150.00",
            "currency": "NOK",
            "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
            "remittance_info": "Middag",
            "kind": "remittance",
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = paid["payment_id"].as_str().context("no payment id")?;
    let link = paid["sca_redirect"]
        .as_str()
        .context("no authorization link")?;
    println!();
    println!("A payment of 150 NOK from DNB through Neonomics, step by step:");
    println!("  1. initiation: POST /ics/v3/payments/domestic-transfer → 510, errorCode 1428");
    println!("  2. authorization link (GET …/{{paymentId}}/authorize): {link}");
    let back = http.get(link).send().await?;
    let back = back
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .context("the SCA page sent the browser nowhere")?
        .to_owned();
    println!("  3. the user's SCA at the bank; the browser returns to {back}");
    let returned: serde_json::Value = http.get(&back).send().await?.json().await?;
    println!(
        "  4. complete (POST …/{{paymentId}}/complete), called on the return: the payment is {}",
        returned["status"].as_str().unwrap_or("?")
    );
    let view: serde_json::Value = http
        .get(format!("{client}/v1/payments/{id}"))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let history: Vec<&str> = view["history"]
        .as_array()
        .map(|events| events.iter().filter_map(|e| e["to"].as_str()).collect())
        .unwrap_or_default();
    println!("     its history: {}", history.join(" → "));
    Ok(())
}

fn print_banner(gateway: &Gateway, sandbox: &Sandbox, token: &str, account: &str) {
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
    let client = gateway.client_url();
    println!("The user `{DEMO_USER}` is connected to DNB and Nordea. Try:");
    println!();
    println!("  export TOKEN={token}");
    println!(
        "  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'x-psu-ip-address: 192.0.2.10' {client}/v1/balances"
    );
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {client}/v1/banks");
    println!();
    println!(
        "Pay 150 NOK from DNB (open the sca_redirect it answers to approve it; the bank\n sends the browser back to bankgate, which then completes the payment):"
    );
    println!();
    println!(
        "  curl -s -X POST {client}/v1/payments -H \"Authorization: Bearer $TOKEN\" \\\n       -H \"Idempotency-Key: $(cat /proc/sys/kernel/random/uuid)\" -H 'content-type: application/json' \\\n       -d '{{\"bank\":\"dnb\",\"debtor_account_id\":\"{account}\",\"amount\":\"150.00\",\"currency\":\"NOK\",\"creditor\":{{\"name\":\"Kari Nordmann\",\"account_number\":\"86011117947\",\"country\":\"NO\"}},\"remittance_info\":\"Middag\",\"kind\":\"remittance\"}}'"
    );
    println!("  curl -s -H \"Authorization: Bearer $TOKEN\" {client}/v1/payments");
    println!();
    println!(
        "Take DNB down at both providers for two minutes, then read the balances and pay again \n(balances come stale with a warning, payments are queued and sent when DNB is back):"
    );
    println!();
    for provider in ["neonomics", "psd2"] {
        println!(
            "  curl -s -X POST {control}/sandbox/faults -H 'content-type: application/json' \\\n       -d '{{\"provider\":\"{provider}\",\"bank\":\"dnb\",\"kind\":\"unavailable\",\"duration_s\":120}}'"
        );
    }
    println!();
}
