//! config/prometheus/: the alert rules, their PrometheusRule copy and the
//! Grafana dashboard, checked without a cluster. promtool comes from
//! TEAMACCESS_PROMTOOL (hack/tool-promtool.sh; `make test` sets it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use teamaccess::ops::metrics::Metrics;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus")
}

fn yaml(file: &str) -> Value {
    let path = dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn promtool() -> PathBuf {
    let p = std::env::var_os("TEAMACCESS_PROMTOOL").unwrap_or_else(|| {
        panic!(
            "TEAMACCESS_PROMTOOL is not set: it must be the absolute path of promtool. \
             Run `make test`, or export TEAMACCESS_PROMTOOL=$(hack/tool-promtool.sh)"
        )
    });
    let p = PathBuf::from(p);
    assert!(
        p.is_absolute() && p.is_file(),
        "TEAMACCESS_PROMTOOL={} is not an absolute path to a file",
        p.display()
    );
    p
}

fn run_promtool(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir())
        .output()
        .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_the_rules() {
    run_promtool(&["check", "rules", "rules.yaml"]);
}

#[test]
fn promtool_unit_tests_of_the_rules_pass() {
    run_promtool(&["test", "rules", "rules_test.yaml"]);
}

/// Each alert of rules.yaml appears in rules_test.yaml both firing and not.
#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let rules = yaml("rules.yaml");
    let tests = yaml("rules_test.yaml");
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = a["alertname"].as_str().expect("alertname").to_string();
            let exp = a["exp_alerts"].as_array().map(Vec::len).unwrap_or(0);
            if exp == 0 {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let alerts: Vec<String> = rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect();
    assert!(!alerts.is_empty(), "rules.yaml has no alerts");
    for a in &alerts {
        assert!(firing.contains(a), "{a}: no test case where it fires");
        assert!(
            silent.contains(a),
            "{a}: no test case where it stays silent"
        );
    }
}

#[test]
fn prometheusrule_carries_the_groups_of_rules_yaml() {
    let rules = yaml("rules.yaml");
    let object = yaml("prometheusrule.yaml");
    assert_eq!(object["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(object["kind"], "PrometheusRule");
    assert!(rules["groups"].is_array(), "rules.yaml has no groups");
    assert_eq!(
        object["spec"]["groups"], rules["groups"],
        "config/prometheus/prometheusrule.yaml is stale: run hack/gen-prometheusrule.sh"
    );
}

#[test]
fn the_helm_chart_ships_the_same_rules() {
    let chart = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/charts/teamaccess/files/rules.yaml"
    ))
    .unwrap();
    let plain = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/prometheus/rules.yaml"
    ))
    .unwrap();
    assert!(
        chart == plain,
        "charts/teamaccess/files/rules.yaml differs from config/prometheus/rules.yaml: copy it"
    );
}

/// Series names the operator can export, from the `# TYPE` lines of its
/// encoded registry (counters there lack `_total`). prometheus-client leaves
/// out a labelled family with no series yet, so every setter is called once.
fn exported_series() -> BTreeSet<String> {
    let m = Metrics::default();
    m.observe_reconcile("t", true, std::time::Duration::from_millis(5));
    m.drift_corrected("RoleBinding");
    m.api_error("rolebindings");
    m.set_managed(1, 1);
    m.set_leader(true);
    m.set_conditions(
        "t",
        &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "Applied".into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }],
    );
    m.set_grant_expiry("t", Some(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let text = m.encode();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let (Some(name), Some(kind)) = (it.next(), it.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// Every `teamaccess_*` identifier in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("teamaccess_") {
        let start = i + at;
        let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        let mut end = start;
        while end < b.len() && ident(b[end]) {
            end += 1;
        }
        // a label named teamaccess_x or a longer identifier is not a metric start
        if start == 0 || !ident(b[start - 1]) {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

fn used_by_rules_and_dashboard() -> Vec<(String, String)> {
    let mut used = Vec::new();
    let rules = yaml("rules.yaml");
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let expr = r["expr"].as_str().expect("expr");
            for m in metric_names(expr) {
                used.push((format!("rules.yaml {}", r["alert"]), m));
            }
        }
    }
    let path = dir().join("dashboard.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard.json"))
            .expect("dashboard.json is JSON");
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            for m in metric_names(t["expr"].as_str().expect("expr")) {
                used.push((format!("dashboard.json panel {}", p["title"]), m));
            }
        }
    }
    used
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_operator_exports() {
    let exported = exported_series();
    assert!(
        exported.contains("teamaccess_reconciles_total"),
        "{exported:?}"
    );
    let used = used_by_rules_and_dashboard();
    assert!(used.len() >= 10, "too few metric uses found: {used:?}");
    let unknown: Vec<_> = used.iter().filter(|(_, m)| !exported.contains(m)).collect();
    assert!(
        unknown.is_empty(),
        "not exported by the operator: {unknown:?}\nexported: {exported:?}"
    );
}

#[test]
fn dashboard_covers_the_operator_metrics() {
    let used: BTreeSet<String> = used_by_rules_and_dashboard()
        .into_iter()
        .filter(|(w, _)| w.starts_with("dashboard"))
        .map(|(_, m)| m)
        .collect();
    for m in [
        "teamaccess_reconciles_total",
        "teamaccess_reconcile_duration_seconds_bucket",
        "teamaccess_drift_corrections_total",
        "teamaccess_managed_objects",
        "teamaccess_leader",
        "teamaccess_api_errors_total",
        "teamaccess_condition",
    ] {
        assert!(used.contains(m), "dashboard.json has no panel on {m}");
    }
}

#[test]
fn metric_names_finds_suffixed_names_and_skips_labels() {
    assert_eq!(
        metric_names(
            r#"sum(rate(teamaccess_reconciles_total{teamaccess="x"}[5m])) / teamaccess_leader"#
        ),
        ["teamaccess_reconciles_total", "teamaccess_leader"]
    );
}
