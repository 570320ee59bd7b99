//! Settings layering and rejection, through the loader and through the binary.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Command;

use bankgate::settings::{Settings, SettingsError};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    file
}

#[test]
fn defaults_load_and_point_at_loopback() {
    let settings = Settings::load(None, &HashMap::new()).unwrap();
    assert_eq!(settings.http.client_addr.to_string(), "127.0.0.1:8080");
    assert_eq!(settings.http.ops_addr.to_string(), "127.0.0.1:8081");
    assert_eq!(settings.sandbox.port, 8090);
    assert!(settings.database.url.is_none());
}

#[test]
fn file_overrides_defaults_and_env_overrides_the_file() {
    let overrides =
        file("[http]\nclient_addr = \"127.0.0.1:9000\"\nops_addr = \"127.0.0.1:9001\"\n");
    let settings = Settings::load(Some(overrides.path()), &HashMap::new()).unwrap();
    assert_eq!(settings.http.client_addr.port(), 9000);
    assert_eq!(
        settings.http.body_limit_bytes, 65536,
        "untouched keys keep their defaults"
    );

    let vars = env(&[
        ("BANKGATE__HTTP__CLIENT_ADDR", "127.0.0.1:9100"),
        ("BANKGATE__SANDBOX__RATE_LIMIT_PER_S", "7"),
        ("BANKGATE__DATABASE__URL", "postgres://u@127.0.0.1:5432/db"),
        (
            "BANKGATE__PROVIDERS__PSD2__BANK_URLS__DNB",
            "http://127.0.0.1:1/dnb/v1",
        ),
        ("UNRELATED", "ignored"),
    ]);
    let settings = Settings::load(Some(overrides.path()), &vars).unwrap();
    assert_eq!(settings.http.client_addr.port(), 9100);
    assert_eq!(
        settings.http.ops_addr.port(),
        9001,
        "the file still applies where env is silent"
    );
    assert_eq!(settings.sandbox.rate_limit_per_s, 7);
    assert!(settings.database.url.is_some());
    assert_eq!(
        settings.providers.psd2.bank_urls[&bankgate_actors::BankId::Dnb],
        "http://127.0.0.1:1/dnb/v1"
    );
}

#[test]
fn unknown_keys_fail_loudly() {
    let typo = file("[http]\nclinet_addr = \"127.0.0.1:9000\"\n");
    let error = Settings::load(Some(typo.path()), &HashMap::new()).unwrap_err();
    assert!(error.to_string().contains("clinet_addr"), "{error}");

    let error = Settings::load(None, &env(&[("BANKGATE__HTTP__PROT", "1")])).unwrap_err();
    assert!(error.to_string().contains("prot"), "{error}");
    let error = Settings::load(None, &env(&[("BANKGATE__BANKS__DNB", "x")])).unwrap_err();
    assert!(error.to_string().contains("dnb"), "{error}");
}

#[test]
fn invalid_values_are_rejected_with_the_key() {
    let cases = [
        ("BANKGATE__HTTP__CLIENT_ADDR", "not-an-address"),
        ("BANKGATE__HTTP__HEADER_READ_TIMEOUT", "soon"),
        ("BANKGATE__AUTH__TOKEN_SECRET", "short"),
        ("BANKGATE__DATABASE__URL", "mysql:/nope"),
        (
            "BANKGATE__DATABASE__URL",
            "postgres://u@db/x?sslmode=verify-full",
        ),
        ("BANKGATE__PROVIDERS__NEONOMICS__BASE_URL", "ftp://example"),
        ("BANKGATE__PROVIDERS__NEONOMICS__REALM", "live/../admin"),
        ("BANKGATE__SANDBOX__RATE_LIMIT_PER_S", "0"),
        ("BANKGATE__BREAKER__FAILURE_THRESHOLD", "0"),
        ("BANKGATE__BANKS__PROVIDER_ORDER", "[\"psd2\", \"psd2\"]"),
        ("BANKGATE__BANKS__MAX_IN_FLIGHT", "0"),
        ("BANKGATE__BALANCES__MAX_STALE", "1s"),
        ("BANKGATE__BALANCES__READ_DEADLINE", "0s"),
        ("BANKGATE__SESSIONS__IDLE_TIMEOUT", "0s"),
        ("BANKGATE__SESSIONS__USER_RATE_PER_S", "0"),
        ("BANKGATE__PROVIDERS__PSD2__LIMITS__RETRY_BUDGET_RATIO", "2"),
        ("BANKGATE__TELEMETRY__LOG_FORMAT", "xml"),
    ];
    for (key, value) in cases {
        let error = Settings::load(None, &env(&[(key, value)])).unwrap_err();
        let lowered = key.trim_start_matches("BANKGATE__").to_ascii_lowercase();
        let leaf = lowered.rsplit("__").next().unwrap();
        let message = error.to_string().to_ascii_lowercase();
        assert!(message.contains(leaf), "{key}={value}: {error}");
    }
    // One secret for two sources would let one bank's pushes pass as another's.
    let shared = env(&[(
        "BANKGATE__WEBHOOKS__SECRETS__PSD2__NORDEA",
        "sandbox-dnb-psd2-webhook-secret",
    )]);
    let error = Settings::load(None, &shared).unwrap_err().to_string();
    assert!(error.contains("its own secret"), "{error}");
    assert!(matches!(
        Settings::load(
            Some(std::path::Path::new("/nonexistent.toml")),
            &HashMap::new()
        ),
        Err(SettingsError::MissingFile(_))
    ));
}

#[test]
fn the_binary_exits_64_with_one_line_on_bad_settings() {
    let output = Command::new(env!("CARGO_BIN_EXE_bankgate"))
        .args(["token", "--user", "u1"])
        .env("BANKGATE__HTTP__CLIENT_ADDR", "nowhere")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("BANKGATE__HTTP__CLIENT_ADDR"),
        "names the variable: {stderr}"
    );
}

#[test]
fn production_example_needs_only_secrets_from_the_environment() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/production.toml");
    let vars = env(&[
        (
            "BANKGATE__DATABASE__URL",
            "postgres://bankgate@db:5432/bankgate",
        ),
        (
            "BANKGATE__AUTH__TOKEN_SECRET",
            "0123456789abcdef0123456789abcdef",
        ),
    ]);
    let settings = Settings::load(Some(std::path::Path::new(path)), &vars).unwrap();
    assert_eq!(
        settings.telemetry.log_format,
        bankgate::settings::LogFormat::Json
    );
}

/// A gateway on loopback behind a reverse proxy is reachable all the same: a public URL
/// naming another host makes the development secrets refused as a public listener does, and
/// a database beyond this machine must then be reached with `sslmode=verify-full`, unless
/// the operator accepts less explicitly.
#[test]
fn a_public_url_beyond_this_machine_exposes_the_gateway() {
    let load = |pairs: &[(&str, &str)]| Settings::load(None, &env(pairs)).unwrap();
    let proxied = [(
        "BANKGATE__HTTP__PUBLIC_URL",
        "https://bankgate.drop.example",
    )];
    assert_eq!(
        load(&proxied).exposed_development_value().as_deref(),
        Some("auth.token_secret")
    );
    for local in [
        "http://localhost:8080",
        "http://127.0.0.1:8080",
        "http://[::1]:8080",
    ] {
        let settings = load(&[("BANKGATE__HTTP__PUBLIC_URL", local)]);
        assert_eq!(settings.exposed_development_value(), None, "{local}");
    }

    let database = |url: &'static str| [proxied[0], ("BANKGATE__DATABASE__URL", url)];
    let unverified = database("postgres://bankgate@db.internal:5432/bankgate?sslmode=require");
    assert_eq!(
        load(&unverified).exposed_unverified_database().as_deref(),
        Some("require")
    );
    let accepted = [
        unverified[0],
        unverified[1],
        ("BANKGATE__DATABASE__ALLOW_UNVERIFIED_TLS", "true"),
    ];
    assert_eq!(load(&accepted).exposed_unverified_database(), None);
    let local = database("postgres://bankgate@127.0.0.1:5432/bankgate");
    assert_eq!(load(&local).exposed_unverified_database(), None);
    // Not exposed: the demo's and the tests' case.
    let loopback = [(
        "BANKGATE__DATABASE__URL",
        "postgres://bankgate@db.internal/bankgate",
    )];
    assert_eq!(load(&loopback).exposed_unverified_database(), None);
}

/// `serve` refuses the published development secrets once a listener is reachable from
/// elsewhere, naming the first one still in force, and keeps them on loopback (the demo's
/// and the tests' case).
#[test]
fn serve_refuses_development_secrets_beyond_loopback() {
    let production = concat!(env!("CARGO_MANIFEST_DIR"), "/config/production.toml");
    let serve = |vars: &[(&str, &str)]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_bankgate"));
        command.args(["serve", "--config", production]).env(
            "BANKGATE__DATABASE__URL",
            "postgres://bankgate@127.0.0.1:1/x",
        );
        for (key, value) in vars {
            command.env(key, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        stderr
    };
    assert!(serve(&[]).contains("BANKGATE__AUTH__TOKEN_SECRET"));
    let secret = (
        "BANKGATE__AUTH__TOKEN_SECRET",
        "0123456789abcdef0123456789abcdef",
    );
    assert!(serve(&[secret]).contains("BANKGATE__PROVIDERS__NEONOMICS__CLIENT_SECRET"));
    let client = (
        "BANKGATE__PROVIDERS__NEONOMICS__CLIENT_SECRET",
        "from-the-dashboard",
    );
    let webhooks = [
        (
            "BANKGATE__WEBHOOKS__SECRETS__PSD2__DNB",
            "dnb-signing-secret-0",
        ),
        (
            "BANKGATE__WEBHOOKS__SECRETS__PSD2__NORDEA",
            "nordea-signing-secret",
        ),
        (
            "BANKGATE__WEBHOOKS__SECRETS__PSD2__SPAREBANK1",
            "sparebank1-signing-secret",
        ),
    ];
    // Each bank's PSD2 push has a secret of its own: one left at its development value is named.
    assert!(serve(&[secret, client]).contains("BANKGATE__WEBHOOKS__SECRETS__PSD2__DNB"));
    assert!(
        serve(&[secret, client, webhooks[0], webhooks[1]])
            .contains("BANKGATE__WEBHOOKS__SECRETS__PSD2__SPAREBANK1")
    );
    let mut all = vec![secret, client];
    all.extend(webhooks);
    assert!(serve(&all).contains("ops.admin_tokens"));
    // With its own secrets, an exposed gateway still refuses a database it cannot verify.
    all.push((
        "BANKGATE__OPS__ADMIN_TOKENS",
        "[{name=\"oncall\", token=\"0123456789abcdef0123456789abcdef\"}]",
    ));
    all.push((
        "BANKGATE__DATABASE__URL",
        "postgres://bankgate@db.internal:1/x?sslmode=require",
    ));
    assert!(serve(&all).contains("sslmode=require"));

    let loopback = Settings::load(None, &HashMap::new()).unwrap();
    assert_eq!(loopback.exposed_development_value(), None);
    let public = env(&[("BANKGATE__HTTP__OPS_ADDR", "0.0.0.0:8081")]);
    let public = Settings::load(None, &public).unwrap();
    assert_eq!(
        public.exposed_development_value().as_deref(),
        Some("auth.token_secret")
    );
}
