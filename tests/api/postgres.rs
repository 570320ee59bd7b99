//! The schema and the private cluster.

use std::time::Duration;

use bankgate::postgres::{PoolOptions, PrivateCluster, migrate, pool};

use crate::helpers::fresh_database;

/// The files in `migrations/`.
/// The migrations the binary embeds: every SQL file in `migrations/`.
fn migrations() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count()
}

#[tokio::test]
async fn migrations_apply_once_and_are_idempotent() {
    let url = fresh_database().await;
    let pool = pool(&url, PoolOptions::new(2, Duration::from_secs(5))).unwrap();
    assert_eq!(migrate(&pool).await.unwrap(), migrations());
    assert_eq!(
        migrate(&pool).await.unwrap(),
        0,
        "a second run applies nothing"
    );

    let client = pool.get().await.unwrap();
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    for table in [
        "consents",
        "provider_consents",
        "connections",
        "connection_accounts",
        "balances",
        "payments",
        "payment_events",
        "idempotency_keys",
        "bank_modes",
        "provider_breakers",
        "ops_audit",
        "webhook_events",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "table {table} exists in {tables:?}"
        );
    }
}

#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let url = fresh_database().await;
    let a = pool(&url, PoolOptions::new(2, Duration::from_secs(5))).unwrap();
    let b = pool(&url, PoolOptions::new(2, Duration::from_secs(5))).unwrap();
    let (first, second) = tokio::join!(migrate(&a), migrate(&b));
    assert_eq!(first.unwrap() + second.unwrap(), migrations());
}

#[tokio::test]
async fn schema_refuses_what_must_never_be_stored() {
    let url = fresh_database().await;
    let pool = pool(&url, PoolOptions::new(2, Duration::from_secs(5))).unwrap();
    migrate(&pool).await.unwrap();
    let client = pool.get().await.unwrap();
    let bad_bank = client
        .execute("INSERT INTO bank_modes (bank, balances_mode, payments_mode, set_by, reason) VALUES ('handelsbanken', 'live', 'live', 'ops', 'x')", &[])
        .await;
    assert!(bad_bank.is_err(), "unknown banks are refused");
    let bad_mode = client
        .execute("INSERT INTO bank_modes (bank, balances_mode, payments_mode, set_by, reason) VALUES ('dnb', 'sometimes', 'live', 'ops', 'x')", &[])
        .await;
    assert!(bad_mode.is_err(), "unknown modes are refused");

    // A provider's payment id is unique at one bank only: two banks' own APIs may issue the
    // same one, and both payments must be storable.
    client
        .batch_execute(
            "INSERT INTO consents (id, user_id, bank, status, redirect_url)
                 VALUES ('00000000-0000-0000-0000-00000000000c', 'u', 'dnb', 'active', 'x');
             INSERT INTO connections (id, user_id, bank, consent_id, iban, currency)
                 VALUES ('00000000-0000-0000-0000-0000000000c1', 'u', 'dnb',
                         '00000000-0000-0000-0000-00000000000c', 'NO1', 'NOK');",
        )
        .await
        .unwrap();
    let store = |n: u8, bank: &'static str| {
        let client = &client;
        async move {
            let id = uuid::Uuid::from_u128(0x100 + u128::from(n));
            client
                .execute(
                    "INSERT INTO payments (id, user_id, bank, debtor_connection, amount, currency,
                         creditor, kind, status, request_reference, provider, provider_payment_id,
                         psu_ip)
                     VALUES ($1, 'u', $2, '00000000-0000-0000-0000-0000000000c1', 10, 'NOK',
                         '{}', 'qr', 'pending_sca', $3, 'psd2', 'same-id-at-each-bank', '')",
                    &[&id, &bank, &format!("ref-{n}")],
                )
                .await
        }
    };
    store(1, "dnb").await.unwrap();
    store(2, "nordea").await.unwrap();
    assert!(
        store(3, "dnb").await.is_err(),
        "one id per provider and bank"
    );
}

#[tokio::test]
async fn a_private_cluster_stops_and_leaves_nothing_listening() {
    let cluster = PrivateCluster::start_temporary().await.unwrap();
    let port = cluster.port();
    let url = cluster.ensure_database("scratch").await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);
    let _ = driver.await;
    cluster.stop().await;
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "nothing listens on {port} after stop");
}

/// `bankgate demo` starts a new sandbox world each run, so its database starts afresh too:
/// `fresh_database` drops what an earlier run left, even with a client still connected to
/// it, while `ensure_database` keeps it.
#[tokio::test]
async fn a_fresh_database_leaves_nothing_of_the_run_before() {
    let cluster = PrivateCluster::start_temporary().await.unwrap();
    let url = cluster.ensure_database("demo").await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE left_behind (id int)")
        .await
        .unwrap();
    let tables = |url: String| async move {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE tablename = 'left_behind'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0)
    };
    assert_eq!(
        tables(cluster.ensure_database("demo").await.unwrap()).await,
        1
    );
    assert_eq!(
        tables(cluster.fresh_database("demo").await.unwrap()).await,
        0
    );
    cluster.stop().await;
}

/// The pool's connections carry a statement timeout, added to any server options the URL
/// gives: a statement that runs past it is cancelled instead of holding the connection.
#[tokio::test]
async fn a_statement_past_the_pools_timeout_is_cancelled() {
    let url = fresh_database().await;
    let url = format!("{url}?options=-c%20lock_timeout%3D5000");
    let options = PoolOptions {
        statement_timeout: Duration::from_millis(200),
        ..PoolOptions::new(1, Duration::from_secs(5))
    };
    let database = pool(&url, options).unwrap();
    let client = database.get().await.unwrap();
    let error = client.query("SELECT pg_sleep(2)", &[]).await.unwrap_err();
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{error}"
    );
    let lock_timeout: String = client
        .query_one("SHOW lock_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lock_timeout, "5s", "the URL's own options still apply");
}

/// The gateway's housekeeping (at start, then hourly) forgets idempotency keys past their
/// TTL, answered or not, and webhook event ids past their replay window, and keeps the
/// recent ones.
#[tokio::test]
async fn housekeeping_purges_old_keys_and_webhook_event_ids() {
    let url = fresh_database().await;
    let database = pool(&url, PoolOptions::new(2, Duration::from_secs(5))).unwrap();
    migrate(&database).await.unwrap();
    let client = database.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO idempotency_keys (user_id, key, request_hash, created_at)
                 VALUES ('u', 'old-unanswered', '\\x00', now() - interval '2 days'),
                        ('u', 'recent', '\\x00', now());
             INSERT INTO webhook_events (source, event_id, received_at)
                 VALUES ('neonomics', 'old', now() - interval '1 day'),
                        ('neonomics', 'recent', now());",
        )
        .await
        .unwrap();
    let app = crate::helpers::spawn_app_on(&url, crate::helpers::QUICK).await;
    let left = |table: &'static str| {
        let client = &client;
        async move {
            let sql = format!("SELECT count(*) FROM {table}");
            client
                .query_one(sql.as_str(), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    crate::helpers::eventually(Duration::from_secs(10), || async {
        (left("idempotency_keys").await == 1 && left("webhook_events").await == 1).then_some(())
    })
    .await;
    app.gateway.shutdown().await;
}
