//! The Grafana dashboard in deploy/grafana/ queries only series the service exposes.

use std::collections::{BTreeMap, BTreeSet};

use crate::helpers::*;

/// The sample names a family of each type exposes (OpenMetrics, as prometheus-client writes
/// it: counters get `_total`, histograms `_bucket`/`_sum`/`_count`).
fn sample_names(family: &str, kind: &str) -> Vec<String> {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total", "_created"],
        "histogram" => &["_bucket", "_sum", "_count", "_created"],
        "summary" => &["", "_sum", "_count", "_created"],
        "info" => &["_info"],
        _ => &[""],
    };
    suffixes.iter().map(|s| format!("{family}{s}")).collect()
}

/// Every `authz_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("authz_") {
        let start = i + at;
        let preceded = start > 0 && {
            let b = bytes[start - 1];
            b.is_ascii_alphanumeric() || b == b'_' || b == b':'
        };
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(expr.len() - start);
        if !preceded {
            names.push(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// Every target `expr` of every panel, rows' nested panels included.
fn exprs(panels: &[serde_json::Value], out: &mut Vec<(String, String)>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((title.clone(), expr.to_owned()));
            }
        }
        if let Some(nested) = panel["panels"].as_array() {
            exprs(nested, out);
        }
    }
}

#[tokio::test]
async fn dashboard_queries_only_exposed_metrics() {
    let app = spawn_app(&[]).await;
    // Traffic so that every labelled family has series: allows and denies, l1 and db lookups.
    for _ in 0..2 {
        app.check(get("/issues.json").header("x-redmine-api-key", demo_key("alice")))
            .await;
    }
    app.check(get("/issues.json")).await;
    app.check(get("/issues.json").header(
        "x-redmine-api-key",
        "0000000000000000000000000000000000000000",
    ))
    .await;
    let scrape = http_get(app.admin_port.expect("admin port"), "/metrics").await;

    // Families from the `# TYPE` lines, and the sample names actually present.
    let families: BTreeMap<&str, &str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(families.len() >= 7, "too few families in\n{scrape}");
    let declared: BTreeMap<String, &str> = families
        .iter()
        .flat_map(|(family, kind)| {
            sample_names(family, kind)
                .into_iter()
                .map(move |s| (s, *family))
        })
        .collect();
    let present: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/redmine-authz-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard file"))
            .expect("dashboard is JSON");
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 39);
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "a prometheus `datasource` variable"
    );

    let mut queries = Vec::new();
    exprs(
        dashboard["panels"].as_array().expect("panels"),
        &mut queries,
    );
    // Template variable queries (label_values(...)) must name real series too.
    for variable in variables {
        if let Some(query) = variable["definition"].as_str() {
            queries.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    assert!(queries.len() >= 10, "{queries:?}");

    let mut problems = Vec::new();
    for (title, expr) in &queries {
        let names = metric_names(expr);
        if names.is_empty() && title.starts_with("variable") {
            continue;
        }
        assert!(!names.is_empty(), "{title}: no authz_* metric in {expr}");
        for name in names {
            match declared.get(&name) {
                Some(_) if !present.contains(name.as_str()) => {
                    problems.push(format!("{title}: {name} has no sample in the scrape"))
                }
                Some(_) => {}
                None => problems.push(format!(
                    "{title}: {name} is not exposed (a series of a family in `# TYPE`)"
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{}\nexposed: {:?}",
        problems.join("\n"),
        declared.keys().collect::<Vec<_>>()
    );
}

#[test]
fn metric_names_in_promql() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(authz_decision_duration_seconds_bucket{job=~"$job"}[5m]))) / x_authz_y"#
        ),
        ["authz_decision_duration_seconds_bucket"]
    );
    assert_eq!(
        metric_names(
            r#"sum(rate(authz_lookups_total{tier=~"l1|redis"}[1m])) / authz_lookups_total"#
        ),
        ["authz_lookups_total", "authz_lookups_total"]
    );
}
