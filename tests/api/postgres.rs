//! The schema and the private cluster.

use std::time::Duration;

use bankgate::postgres::{PrivateCluster, migrate, pool};

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
    let pool = pool(&url, 2, Duration::from_secs(5)).unwrap();
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
    let a = pool(&url, 2, Duration::from_secs(5)).unwrap();
    let b = pool(&url, 2, Duration::from_secs(5)).unwrap();
    let (first, second) = tokio::join!(migrate(&a), migrate(&b));
    assert_eq!(first.unwrap() + second.unwrap(), migrations());
}

#[tokio::test]
async fn schema_refuses_what_must_never_be_stored() {
    let url = fresh_database().await;
    let pool = pool(&url, 2, Duration::from_secs(5)).unwrap();
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
