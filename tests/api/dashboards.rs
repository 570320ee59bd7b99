//! Every metric that the shipped alert rules and dashboards query is one the gateway exports.

use bankgate_actors::metrics::ALL;

#[test]
fn alert_rules_query_only_exported_metrics() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml" | "json")
        ) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (start, _) in text.match_indices("bankgate_") {
            let name: String = text[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(
                ALL.contains(&base),
                "{} queries `{name}`, which the gateway does not export",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 0, "the rules query at least one metric");
}

/// Runs `promtool` (Debian's `prometheus` package) on the shipped rules and their unit tests.
fn promtool(args: &[&str]) -> std::process::Output {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards");
    std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool is needed (apt-get install prometheus): {e}"))
}

#[test]
fn alert_rules_are_valid_and_pass_their_unit_tests() {
    let check = promtool(&["check", "rules", "alerts.yml"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let test = promtool(&["test", "rules", "alerts.test.yml"]);
    let output = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{output}{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn the_grafana_dashboard_is_importable_json_with_a_bank_variable() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/bankgate.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(variables.iter().any(|v| v["name"] == "bank"));
    let panels = dashboard["panels"].as_array().unwrap();
    let queried = panels
        .iter()
        .filter(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty()))
        .count();
    assert!(queried >= 10, "{queried} panels query Prometheus");
}
