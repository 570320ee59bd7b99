//! The gateway process killed with SIGKILL in the middle of a burst of payments and a drain,
//! then started again on the same database: every payment that got a 2xx ends in the
//! sandbox's ledger exactly once, or, cut off mid-send at Neonomics, stays unknown and never
//! sent again; no payment is initiated twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bankgate_actors::BankId;
use bankgate_actors::national_id::NationalId;
use serde_json::{Value, json};
use tokio_postgres::NoTls;

use crate::helpers::{
    DEV_TOKEN_SECRET, client, connection_at, eventually, free_port, fresh_database, serve,
    spawn_sandbox, wait_until_up,
};

#[tokio::test]
async fn sigkill_during_a_burst_and_a_drain_loses_and_doubles_nothing() {
    let sandbox = spawn_sandbox().await;
    let database = fresh_database().await;
    let (client_port, ops_port) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client_port}");
    let mut gateway = serve(&sandbox, &database, client_port, ops_port, &[], None);
    wait_until_up(&url).await;

    let secret = secrecy::SecretString::from(DEV_TOKEN_SECRET.to_owned());
    let token =
        bankgate::token::mint(&secret, "burst-user", "s-1", Duration::from_secs(600)).unwrap();
    bankgate::browser::connect(
        &url,
        &token,
        &NationalId::synthetic("burst-user"),
        BankId::Dnb,
        "https://drop.example/connected",
    )
    .await
    .expect("consent flow");
    let account = connection_at(&url, &token, BankId::Dnb).await;

    // Half the initiations fail before the bank takes them (so some payments queue and the
    // drainer works), and every call is slow enough to be cut off by the kill.
    for fault in [
        json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "unavailable", "ratio": 0.5}),
        json!({"provider": "psd2", "bank": "dnb", "service": "pisp", "kind": "unavailable", "ratio": 0.5}),
        json!({"provider": "neonomics", "bank": "dnb", "service": "pisp", "kind": "latency", "latency_ms": 150}),
    ] {
        sandbox.add_fault(fault).await;
    }
    let mut burst = tokio::task::JoinSet::new();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    for n in 0..60 {
        let (url, token, account) = (url.clone(), token.clone(), account.clone());
        let acknowledged = acknowledged.clone();
        burst.spawn(async move {
            // The burst's pace, not a wait: spread over 3 s, it is still arriving at the kill.
            tokio::time::sleep(Duration::from_millis(n * 50)).await;
            let response = client()
                .post(format!("{url}/v1/payments"))
                .bearer_auth(&token)
                .header("idempotency-key", format!("burst-{n}"))
                .json(&json!({
                    "bank": "dnb",
                    "debtor_account_id": account,
                    "amount": "100",
                    "currency": "NOK",
                    "creditor": {"name": "Kari Nordmann", "account_number": "86011117947", "country": "NO"},
                    "kind": "qr",
                }))
                .send()
                .await
                .ok()?;
            let status = response.status();
            let body: Value = response.json().await.ok()?;
            if status.is_success() {
                let id = body["payment_id"].as_str().unwrap().to_owned();
                acknowledged.lock().unwrap().push(id);
            }
            Some(())
        });
    }
    // Kill once some payments are acknowledged and while the rest are still arriving.
    eventually(Duration::from_secs(20), || async {
        (acknowledged.lock().unwrap().len() >= 5).then_some(())
    })
    .await;
    gateway.kill();
    while burst.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().unwrap().clone();

    sandbox
        .http
        .delete(sandbox.control("/sandbox/faults"))
        .send()
        .await
        .unwrap();
    let mut gateway = serve(&sandbox, &database, client_port, ops_port, &[], None);
    wait_until_up(&url).await;

    let (db, connection) = tokio_postgres::connect(&database, NoTls).await.unwrap();
    tokio::spawn(connection);
    // Settled: every payment waits for SCA, or is unknown where no look-up can find it. One
    // the bank's own API holds is found there by its reference once the upkeep asks, so an
    // unknown payment in the ledger at psd2 is still on its way.
    let (settled, ledger) = eventually(Duration::from_secs(40), || async {
        let rows = db
            .query("SELECT request_reference, status FROM payments", &[])
            .await
            .unwrap();
        let all: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let ledger = sandbox.ledger("?bank=dnb").await;
        let at_psd2 = |reference: &String| {
            ledger.iter().any(|e| {
                e["end_to_end_id"].as_str() == Some(reference.as_str()) && e["provider"] == "psd2"
            })
        };
        all.iter()
            .all(|(reference, s)| s == "pending_sca" || (s == "unknown" && !at_psd2(reference)))
            .then_some((all, ledger))
    })
    .await;
    gateway.kill();

    let mut sent: HashMap<String, usize> = HashMap::new();
    let mut status_at_bank: HashMap<String, (String, String)> = HashMap::new();
    for entry in &ledger {
        let reference = entry["end_to_end_id"].as_str().unwrap().to_owned();
        *sent.entry(reference.clone()).or_default() += 1;
        let at = |field: &str| entry[field].as_str().unwrap().to_owned();
        status_at_bank.insert(reference, (at("provider"), at("status")));
    }
    for (reference, times) in &sent {
        assert_eq!(*times, 1, "payment {reference} initiated {times} times");
        assert!(
            settled.contains_key(reference),
            "the ledger only holds our payments"
        );
    }
    // A payment cut off mid-send at Neonomics cannot be asked for there (Neonomics finds a
    // payment only by the id its lost answer carried): it stays unknown, never sent again,
    // and the bank holds it, if at all, as the initiation nobody authorised.
    for (reference, status) in &settled {
        if status == "unknown" {
            let at_bank = status_at_bank.get(reference);
            assert!(
                at_bank
                    .is_none_or(|(provider, status)| provider == "neonomics" && status == "RCVD"),
                "unknown payment {reference} is {at_bank:?} at the bank"
            );
        } else {
            assert_eq!(
                sent.get(reference),
                Some(&1),
                "payment {reference} sent once"
            );
        }
    }
    for id in &acknowledged {
        let reference = id.replace('-', "");
        assert!(
            sent.get(&reference) == Some(&1) || settled[&reference] == "unknown",
            "acknowledged payment {id} sent once"
        );
    }
}
