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
