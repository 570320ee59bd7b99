//! The `bankgate` binary: token, migrate and demo, run as a user would.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use secrecy::SecretString;

use crate::helpers::fresh_database;

const BIN: &str = env!("CARGO_BIN_EXE_bankgate");

#[test]
fn token_prints_a_verifiable_token() {
    let output = Command::new(BIN)
        .args([
            "token",
            "--user",
            "u-17",
            "--session",
            "s-3",
            "--ttl",
            "10m",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    let secret =
        SecretString::from("bankgate-development-secret-do-not-use-in-production".to_owned());
    let claims = bankgate::token::verify(&secret, token.trim()).unwrap();
    assert_eq!((claims.sub.as_str(), claims.sid.as_str()), ("u-17", "s-3"));
    assert_eq!(claims.exp - claims.iat, 600);

    let output = Command::new(BIN)
        .args(["token", "--user", ""])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}

#[tokio::test]
async fn migrate_applies_the_schema_and_needs_a_url() {
    let url = fresh_database().await;
    let run = || {
        Command::new(BIN)
            .arg("migrate")
            .env("BANKGATE__DATABASE__URL", &url)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count();
    assert!(
        String::from_utf8_lossy(&first.stdout).contains(&format!("applied {migrations} migration")),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let second = run();
    assert!(String::from_utf8_lossy(&second.stdout).contains("applied 0 migration"));

    let output = Command::new(BIN)
        .arg("migrate")
        .env_remove("BANKGATE__DATABASE__URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("database.url"));
}

#[tokio::test]
async fn demo_comes_up_and_ctrl_c_leaves_nothing_running() {
    let workdir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(BIN)
        .arg("demo")
        .current_dir(workdir.path())
        .env("BANKGATE__HTTP__CLIENT_ADDR", "127.0.0.1:0")
        .env("BANKGATE__HTTP__OPS_ADDR", "127.0.0.1:0")
        .env("BANKGATE__SANDBOX__PORT", "0")
        .env_remove("BANKGATE__DATABASE__URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let client_url = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let url = lines.by_ref().map_while(Result::ok).find_map(|line| {
            line.trim()
                .strip_prefix("client API")
                .map(|rest| rest.trim().to_owned())
        });
        // Keep draining so the demo never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        url
    })
    .await
    .unwrap()
    .expect("demo prints the client API URL");

    let health = reqwest::get(format!("{client_url}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);

    let pid = nix::unistd::Pid::from_raw(demo.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::task::spawn_blocking(move || demo.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "demo exits cleanly on Ctrl-C: {status}");

    let data_dir = workdir.path().join(".bankgate/postgres");
    assert!(
        data_dir.join("PG_VERSION").exists(),
        "the cluster lived under the working directory"
    );
    assert!(
        !data_dir.join("postmaster.pid").exists(),
        "PostgreSQL was stopped"
    );
    assert!(
        reqwest::Client::new()
            .get(format!("{client_url}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_err()
    );
}
