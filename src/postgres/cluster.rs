//! A private PostgreSQL cluster started from the installed binaries, for `demo` and the tests.
//!
//! `initdb` creates the data directory (once), then a small watchdog shell runs
//! `pg_ctl start`, blocks reading its stdin, and runs `pg_ctl stop` when that pipe closes. The
//! pipe's other end belongs to this process, so the cluster stops when `stop` is called, when
//! the handle is dropped, and also when this process dies without cleaning up (`kill -9`, a
//! test binary that exits): nothing is left running. The watchdog runs in its own process
//! group so that Ctrl-C in a terminal reaches bankgate only, which then stops the cluster in
//! order. PostgreSQL refuses to run as root, so as root the binaries run as `postgres`.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// The superuser `initdb` creates; connections are trusted on loopback only.
const SUPERUSER: &str = "bankgate";
/// The Debian package that provides `initdb` and `pg_ctl`.
const DEBIAN_PACKAGE: &str = "postgresql";
/// The longest a cluster may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);

const WATCHDOG: &str = r#"
pg_ctl -D "$1" -l "$1/server.log" -w -s -t 60 -o "$2" start || exit 1
read _ignored || true
exec pg_ctl -D "$1" -m fast -w -s stop
"#;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; install the Debian package `{DEBIAN_PACKAGE}`"
    )]
    BinariesMissing,
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("initdb failed: {0}")]
    Initdb(String),
    #[error("PostgreSQL did not start: {0}")]
    Start(String),
    #[error("cannot create database `{name}`: {source}")]
    CreateDatabase {
        name: String,
        source: tokio_postgres::Error,
    },
}

/// A running private cluster. Stops when `stop` is awaited or the value is dropped.
pub struct PrivateCluster {
    port: u16,
    data_dir: PathBuf,
    /// The server's command-line options (port, socket directory, settings).
    options: String,
    bin_dir: PathBuf,
    watchdog: Option<Child>,
    /// Keeps a temporary data directory alive for the cluster's lifetime.
    _temp: Option<tempfile::TempDir>,
}

impl PrivateCluster {
    /// Starts (creating it on first use) a durable cluster in `data_dir`.
    pub async fn start(data_dir: &Path) -> Result<PrivateCluster, ClusterError> {
        let data_dir = absolute(data_dir)?;
        Self::launch(data_dir, None, &[]).await
    }

    /// Starts a throwaway cluster in a temporary directory, tuned for speed over durability.
    pub async fn start_temporary() -> Result<PrivateCluster, ClusterError> {
        let temp = tempfile::Builder::new()
            .prefix("bankgate-pg-")
            .tempdir()
            .map_err(|source| ClusterError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let data_dir = temp.path().join("data");
        let fast = [
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
        ];
        Self::launch(data_dir, Some(temp), &fast).await
    }

    async fn launch(
        data_dir: PathBuf,
        temp: Option<tempfile::TempDir>,
        extra_options: &[&str],
    ) -> Result<PrivateCluster, ClusterError> {
        let bin_dir = find_bin_dir().ok_or(ClusterError::BinariesMissing)?;
        let owner = cluster_owner();
        prepare_dir(&data_dir, owner.as_ref())?;
        if !data_dir.join("PG_VERSION").exists() {
            initdb(&bin_dir, &data_dir, owner.as_ref())?;
        }
        let port = free_port().map_err(|source| ClusterError::Io {
            path: data_dir.clone(),
            source,
        })?;
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            data_dir.display()
        );
        for option in extra_options {
            options.push(' ');
            options.push_str(option);
        }
        let mut cluster = PrivateCluster {
            port,
            data_dir,
            options,
            bin_dir,
            watchdog: None,
            _temp: temp,
        };
        cluster.spawn_watchdog()?;
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Runs the watchdog that starts the server and stops it when its stdin closes.
    fn spawn_watchdog(&mut self) -> Result<(), ClusterError> {
        let watchdog_log = watchdog_log_path(&self.data_dir);
        let stderr = std::fs::File::create(&watchdog_log).map_err(|source| ClusterError::Io {
            path: watchdog_log.clone(),
            source,
        })?;
        let mut command = as_owner(cluster_owner().as_ref(), "sh");
        command
            .args(["-c", WATCHDOG, "bankgate-postgres"])
            .arg(&self.data_dir)
            .arg(&self.options)
            .env("PATH", path_with(&self.bin_dir))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        self.watchdog = Some(
            command
                .spawn()
                .map_err(|e| ClusterError::Start(e.to_string()))?,
        );
        Ok(())
    }

    /// Stops the server and keeps the cluster, as a database restart or failover looks to
    /// its clients; `resume` starts it again on the same port.
    pub async fn pause(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            let _ = tokio::task::spawn_blocking(move || shut_down(watchdog)).await;
        }
    }

    /// Starts a paused cluster again, on the same port, and waits until it accepts
    /// connections.
    pub async fn resume(&mut self) -> Result<(), ClusterError> {
        if self.watchdog.is_none() {
            self.spawn_watchdog()?;
            self.wait_ready().await?;
        }
        Ok(())
    }

    /// Polls until the server accepts connections, or fails with the server log's last lines.
    async fn wait_ready(&mut self) -> Result<(), ClusterError> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if tokio_postgres::connect(&self.url("postgres"), NoTls)
                .await
                .is_ok()
            {
                return Ok(());
            }
            let exited = self
                .watchdog
                .as_mut()
                .and_then(|w| w.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.watchdog = None;
                return Err(ClusterError::Start(self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let log = read(watchdog_log_path(&self.data_dir)) + &read(self.data_dir.join("server.log"));
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        if lines.is_empty() {
            "no server log was written".to_owned()
        } else {
            lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster's data directory (owned by the user the server runs as).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Returns the connection URL of `database` on this cluster.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates the database `name` afresh, dropping any left from before (connections to it
    /// are ended), and returns its URL: for a run whose upstream world is new too, so that
    /// nothing stored refers to payments or consents that world never saw.
    pub async fn fresh_database(&self, name: &str) -> Result<String, ClusterError> {
        self.create_database(name, true).await
    }

    /// Creates `name` unless it exists, and returns its URL.
    pub async fn ensure_database(&self, name: &str) -> Result<String, ClusterError> {
        self.create_database(name, false).await
    }

    async fn create_database(&self, name: &str, fresh: bool) -> Result<String, ClusterError> {
        let create = |source| ClusterError::CreateDatabase {
            name: name.to_owned(),
            source,
        };
        let (client, connection) = tokio_postgres::connect(&self.url("postgres"), NoTls)
            .await
            .map_err(create)?;
        let driver = tokio::spawn(connection);
        let quoted = name.replace('"', "\"\"");
        if fresh {
            client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
                ))
                .await
                .map_err(create)?;
        }
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(create)?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
                .await
                .map_err(create)?;
        }
        drop(client);
        let _ = driver.await;
        Ok(self.url(name))
    }

    /// Stops the cluster and waits until it has shut down.
    pub async fn stop(mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            let _ = tokio::task::spawn_blocking(move || shut_down(watchdog)).await;
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            shut_down(watchdog);
        }
    }
}

/// Closes the watchdog's stdin, which makes it run `pg_ctl stop`, and waits for it.
fn shut_down(mut watchdog: Child) {
    if let Some(mut stdin) = watchdog.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let _ = watchdog.wait();
}

/// Finds the directory holding `initdb` and `pg_ctl`: `PATH` first, then Debian's layout.
fn find_bin_dir() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_tools(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

fn path_with(bin_dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![bin_dir.to_owned()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// The account PostgreSQL runs under: `postgres` when this process is root, else ourselves.
fn cluster_owner() -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    nix::unistd::User::from_name("postgres").ok().flatten()
}

fn as_owner(owner: Option<&nix::unistd::User>, program: &str) -> Command {
    match owner {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.args(["-u", &user.name, "--", program]);
            command
        }
        None => Command::new(program),
    }
}

fn prepare_dir(data_dir: &Path, owner: Option<&nix::unistd::User>) -> Result<(), ClusterError> {
    let io = |source| ClusterError::Io {
        path: data_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    if let Some(user) = owner {
        // The server account must own the data directory and be able to reach it.
        nix::unistd::chown(data_dir, Some(user.uid), Some(user.gid))
            .map_err(|e| io(std::io::Error::from(e)))?;
        let mut dir = data_dir.parent();
        while let Some(parent) = dir {
            use std::os::unix::fs::PermissionsExt as _;
            let metadata = std::fs::metadata(parent).map_err(io)?;
            let mode = metadata.permissions().mode();
            if mode & 0o001 == 0 {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o011))
                    .map_err(io)?;
            }
            dir = parent.parent();
        }
    }
    Ok(())
}

fn initdb(
    bin_dir: &Path,
    data_dir: &Path,
    owner: Option<&nix::unistd::User>,
) -> Result<(), ClusterError> {
    let output = as_owner(owner, &bin_dir.join("initdb").to_string_lossy())
        .arg("-D")
        .arg(data_dir)
        .args([
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .output()
        .map_err(|e| ClusterError::Initdb(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(ClusterError::Initdb(
            stderr.lines().last().unwrap_or("unknown error").to_owned(),
        ))
    }
}

/// Where the watchdog's own messages go (`pg_ctl` complaints such as a server already running).
fn watchdog_log_path(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("log")
}

fn absolute(path: &Path) -> Result<PathBuf, ClusterError> {
    std::path::absolute(path).map_err(|source| ClusterError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Returns a loopback port that was free a moment ago.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}
