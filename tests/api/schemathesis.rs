//! schemathesis (from PyPI) against the client API's served OpenAPI document, with a valid
//! token for a user connected to DNB: every check, every phase (examples, coverage, fuzzing,
//! stateful). No 5xx, every error in the envelope, every answer as documented, schema-valid
//! data accepted and schema-invalid data refused. `tests/schemathesis.toml` holds the
//! allowances a schema cannot express (422 for checksums, of account numbers and of national
//! identity numbers, and for foreign debtor accounts).
//!
//! What it found when first run is pinned by the tests named in the README (the 405 `Allow`
//! header in `balances::the_openapi_document_matches_the_routes`, and the tightened document).

use std::process::Command;

use bankgate_actors::BankId;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_in_the_client_api() {
    let app = spawn_app().await;
    let token = app.token("schemathesis-user");
    app.connect(&token, BankId::Dnb).await;
    let base = app.gateway.client_url();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis.toml");
    // Another seed explores other data: BANKGATE_SCHEMATHESIS_SEED=n.
    let seed = std::env::var("BANKGATE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261121".into());
    let report = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking({
        let report = report.path().to_owned();
        move || {
            // Run inside the temporary folder: schemathesis keeps its example database in
            // the working directory.
            Command::new("st")
                .current_dir(&report)
                .args(["--no-color", "--config-file", config, "run"])
                .arg(format!("{base}/v1/openapi.yaml"))
                .args(["--url", &base, "--checks", "all", "--max-examples", "25"])
                .args(["--seed", &seed])
                .arg("--header")
                .arg(format!("Authorization: Bearer {token}"))
                .output()
        }
    })
    .await
    .unwrap()
    .expect("schemathesis runs (pip install schemathesis==4.32.5; .ci/run installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(!stdout.contains("failures"), "{stdout}");
}
