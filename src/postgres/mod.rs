//! PostgreSQL: the connection pool, the migrations in `migrations/`, and a private cluster
//! for `demo` and the tests.

mod cluster;
pub mod tls;

pub use cluster::{ClusterError, PrivateCluster};
pub use tls::{TlsError, connection};

use std::time::Duration;

use bankgate_actors::upstream::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres_rustls::MakeRustlsConnect;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Lock id taken while migrating, so that gateway instances starting together migrate once.
const MIGRATION_LOCK: i64 = 0x6261_6e6b_6761_7465; // "bankgate"

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Url(#[from] TlsError),
    #[error("cannot build the connection pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(#[from] deadpool_postgres::PoolError),
    #[error("migration failed: {0}")]
    Migrate(#[from] refinery::Error),
    #[error("database error: {0}")]
    Query(#[from] tokio_postgres::Error),
}

/// The connection pool, and how to open the extra connection that LISTENs for notifications
/// (a pooled connection cannot: its messages are dropped). Derefs to the pool.
#[derive(Clone)]
pub struct Database {
    pub pool: Pool,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl std::ops::Deref for Database {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        &self.pool
    }
}

impl Database {
    /// Opens a connection outside the pool, with the pool's settings, and hands over its
    /// asynchronous messages (notifications) as they arrive. The connection closes when the
    /// receiver is dropped and the client with it.
    pub async fn dedicated(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
        ),
        DbError,
    > {
        let (client, mut connection) = self.config.connect(self.tls.clone()).await?;
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = futures_util::StreamExt::next(&mut messages).await {
                if sender.send(message).is_err() {
                    break;
                }
            }
        });
        Ok((client, receiver))
    }
}

/// How a pool connects and how long its statements may run.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    pub size: usize,
    pub connect_timeout: Duration,
    /// PostgreSQL cancels a statement running longer than this (`statement_timeout`), so a
    /// lock wait or a slow plan cannot hold a request, or a pool connection, without end.
    pub statement_timeout: Duration,
}

impl PoolOptions {
    pub fn new(size: usize, connect_timeout: Duration) -> PoolOptions {
        PoolOptions {
            size,
            connect_timeout,
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// How long a connection is idle before TCP keepalives probe it: a server that vanished
/// without closing (a failed-over host, a dropped NAT entry) is noticed in about a minute,
/// not after the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);

/// Builds a pool for `url`. Connections are opened lazily; `migrate` or a query proves them.
/// Each connection has TCP keepalives and the statement timeout of `options`, added to any
/// `options` the URL gives, and TLS as the URL's `sslmode` and `sslrootcert` ask (`tls.rs`).
pub fn pool(url: &str, options: PoolOptions) -> Result<Database, DbError> {
    let tls::Connection { mut config, tls } = tls::connection(url)?;
    config.connect_timeout(options.connect_timeout);
    if config.get_application_name().is_none() {
        config.application_name("bankgate");
    }
    config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    let timeout = format!(
        "-c statement_timeout={}",
        options.statement_timeout.as_millis()
    );
    let server_options = match config.get_options() {
        Some(given) => format!("{given} {timeout}"),
        None => timeout,
    };
    config.options(&server_options);
    let manager = Manager::from_config(
        config.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let connect_timeout = options.connect_timeout;
    let pool = Pool::builder(manager)
        .max_size(options.size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(connect_timeout))
        .create_timeout(Some(connect_timeout))
        .recycle_timeout(Some(connect_timeout))
        .build()?;
    Ok(Database { pool, config, tls })
}

/// Applies every migration not yet applied. Safe to run concurrently and repeatedly.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner()
        .run_async(&mut **client)
        .await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    Ok(report?.applied_migrations().len())
}

/// Returns whether the database answers a trivial query.
pub async fn ping(pool: &Pool) -> bool {
    match pool.get().await {
        Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    }
}

/// Reads a text column that holds one of our own enums' names.
pub fn parse_column<T: std::str::FromStr>(value: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::new(format!("unexpected value `{value}` in the database")))
}
