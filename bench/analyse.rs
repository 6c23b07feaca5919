//! The figures of one benchmark run, from its audit events and the times
//! hack/bench.sh recorded (run.json), and the table that sets the two
//! operators side by side. Pure: events in, figures out.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::audit::AuditEvent;

pub const OPERATORS: [&str; 2] = ["teamaccess", "rbac-manager"];

/// What hack/bench.sh wrote of a run: its shape, its phases' start times
/// and the figures only /proc has (memory, CPU).
pub struct Run(pub Value);

impl Run {
    pub fn text(&self, key: &str) -> &str {
        self.0[key].as_str().unwrap_or_default()
    }

    fn time(&self, key: &str) -> Result<Timestamp, String> {
        self.text(key)
            .parse()
            .map_err(|e| format!("run.json: field {key}: {e}"))
    }

    fn count(&self, key: &str) -> usize {
        self.0[key].as_u64().unwrap_or(0) as usize
    }
}

/// Nearest rank: p99 of 200 values is the 198th, a real observation.
pub fn percentile(xs: &[f64], p: usize) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    let rank = (p * xs.len()).div_ceil(100).clamp(1, xs.len());
    Some(xs[rank - 1])
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

/// For each trigger, the milliseconds to the first write with the same key at
/// or after it; and how many triggers no write followed.
fn latencies<K: Ord>(
    triggers: &[&AuditEvent],
    trigger_key: impl Fn(&AuditEvent) -> K,
    writes: &[&AuditEvent],
    write_key: impl Fn(&AuditEvent) -> K,
) -> (Vec<f64>, usize) {
    let mut by_key: BTreeMap<K, Vec<Timestamp>> = BTreeMap::new();
    for w in writes {
        by_key.entry(write_key(w)).or_default().push(w.stage);
    }
    let (mut out, mut missing) = (Vec::new(), 0);
    for t in triggers {
        let first = by_key
            .get(&trigger_key(t))
            .and_then(|ws| ws.iter().filter(|w| **w >= t.stage).min());
        match first {
            Some(w) => out.push(seconds(t.stage, *w) * 1000.0),
            None => missing += 1,
        }
    }
    (out, missing)
}

fn by_verb(events: &[&AuditEvent]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e.verb.clone()).or_insert(0) += 1;
    }
    out
}

fn is_binding_write(e: &AuditEvent) -> bool {
    e.resource == "rolebindings"
        && matches!(e.verb.as_str(), "create" | "patch" | "update")
        && e.succeeded()
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The figures of one run. `events` holds at least the operator's own
/// requests and the admin's RoleBinding deletes and namespace creates.
pub fn analyse(run: &Run, events: &[AuditEvent]) -> Result<Map<String, Value>, String> {
    let user = run.text("user");
    let started = run.time("started")?;
    let (idle_from, idle_to) = (run.time("idle_from")?, run.time("idle_to")?);
    let drift_from = run.time("drift_from")?;
    let burst_from = run.time("burst_from")?;
    let onboard_from = run.time("onboard_from")?;

    let mut own: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.user == user && e.received >= started)
        .collect();
    own.sort_by_key(|e| e.stage);
    let admin: Vec<&AuditEvent> = events.iter().filter(|e| e.user != user).collect();

    // convergence: the first request to the write that completes the set
    let first = own.iter().map(|e| e.received).min();
    let mut seen = BTreeSet::new();
    let mut done = None;
    for e in own.iter().take_while(|e| e.stage < drift_from) {
        if is_binding_write(e) {
            seen.insert((&e.namespace, &e.name));
            if seen.len() >= run.count("expected_bindings") {
                done = Some(e.stage);
                break;
            }
        }
    }
    let conv: Vec<&AuditEvent> = match (first, done) {
        (Some(first), Some(done)) => own
            .iter()
            .copied()
            .filter(|e| e.received >= first && e.received <= done)
            .collect(),
        _ => Vec::new(),
    };
    let written: BTreeSet<_> = conv
        .iter()
        .filter(|e| matches!(e.verb.as_str(), "create" | "patch" | "update") && e.succeeded())
        .filter(|e| e.resource == "roles" || e.resource == "rolebindings")
        .map(|e| (&e.resource, &e.namespace, &e.name))
        .collect();
    let idle: Vec<&AuditEvent> = own
        .iter()
        .copied()
        .filter(|e| e.received >= idle_from && e.received <= idle_to)
        .collect();

    let rb_creates: Vec<&AuditEvent> = own
        .iter()
        .copied()
        .filter(|e| is_binding_write(e) && e.verb == "create")
        .collect();
    let deletes: Vec<&AuditEvent> = admin
        .iter()
        .copied()
        .filter(|e| e.verb == "delete" && e.resource == "rolebindings" && e.succeeded())
        .collect();
    let in_phase = |from: Timestamp, to: Timestamp| -> Vec<&AuditEvent> {
        deletes
            .iter()
            .copied()
            .filter(|e| e.stage >= from && e.stage < to)
            .collect()
    };
    let at = |e: &AuditEvent| (e.namespace.clone(), e.name.clone());
    let (drift, drift_missing) = latencies(&in_phase(drift_from, burst_from), at, &rb_creates, at);
    let (burst, burst_missing) =
        latencies(&in_phase(burst_from, onboard_from), at, &rb_creates, at);
    let creates: Vec<&AuditEvent> = admin
        .iter()
        .copied()
        .filter(|e| e.verb == "create" && e.resource == "namespaces" && e.succeeded())
        .filter(|e| e.stage >= onboard_from)
        .collect();
    // a namespace create names the namespace in `name`; a RoleBinding
    // created in it names it in `namespace`
    let (onboard, onboard_missing) = latencies(
        &creates,
        |e| e.name.clone(),
        &rb_creates,
        |e| e.namespace.clone(),
    );
    let writes_idle = idle
        .iter()
        .filter(|e| e.is_write() && e.resource != "leases")
        .count();

    let opt = |v: Option<f64>| v.map_or(Value::Null, |v| json!(round(v, 1)));
    let max = |xs: &[f64]| xs.iter().copied().reduce(f64::max);
    let mut out = Map::new();
    out.insert("run".into(), run.0.clone());
    out.insert(
        "convergence_s".into(),
        match (first, done) {
            (Some(f), Some(d)) => json!(round(seconds(f, d), 3)),
            _ => Value::Null,
        },
    );
    out.insert("convergence_requests".into(), json!(conv.len()));
    out.insert("convergence_requests_by_verb".into(), json!(by_verb(&conv)));
    out.insert("objects_written".into(), json!(written.len()));
    out.insert(
        "requests_per_written_object".into(),
        if written.is_empty() {
            Value::Null
        } else {
            json!(round(conv.len() as f64 / written.len() as f64, 2))
        },
    );
    out.insert("steady_requests".into(), json!(idle.len()));
    out.insert("steady_requests_by_verb".into(), json!(by_verb(&idle)));
    out.insert("steady_writes_excluding_leases".into(), json!(writes_idle));
    for (name, xs, missing, what) in [
        ("drift", &drift, drift_missing, "not_repaired"),
        ("burst", &burst, burst_missing, "not_repaired"),
        ("onboard", &onboard, onboard_missing, "not_applied"),
    ] {
        out.insert(format!("{name}_p50_ms"), opt(percentile(xs, 50)));
        out.insert(format!("{name}_p99_ms"), opt(percentile(xs, 99)));
        out.insert(format!("{name}_max_ms"), opt(max(xs)));
        out.insert(format!("{name}_n"), json!(xs.len()));
        out.insert(format!("{name}_{what}"), json!(missing));
    }
    for (figure, key) in [
        ("peak_rss_mib", "peak_rss_mib"),
        ("rss_idle_mib", "rss_idle_mib"),
        ("cpu_convergence_s", "cpu_convergence_s"),
        ("cpu_total_s", "cpu_total_s"),
        ("cpu_steady_s", "cpu_idle_s"),
        ("apiserver_cpu_steady_s", "apiserver_cpu_idle_s"),
    ] {
        out.insert(figure.into(), run.0[key].clone());
    }
    Ok(out)
}

/// The table's rows: figure key, label, unit.
pub const FIGURES: [(&str, &str, &str); 21] = [
    (
        "convergence_s",
        "convergence (first request -> last RoleBinding)",
        "s",
    ),
    ("convergence_requests", "requests during convergence", ""),
    ("objects_written", "Roles + RoleBindings written", ""),
    (
        "requests_per_written_object",
        "requests per written object",
        "",
    ),
    ("steady_requests", "requests in steady state", ""),
    (
        "steady_writes_excluding_leases",
        "writes in steady state (not leases)",
        "",
    ),
    ("drift_p50_ms", "drift repair p50", "ms"),
    ("drift_p99_ms", "drift repair p99", "ms"),
    ("drift_max_ms", "drift repair max", "ms"),
    ("drift_not_repaired", "drift events not repaired", ""),
    ("burst_p50_ms", "burst of deletes: repair p50", "ms"),
    ("burst_max_ms", "burst of deletes: repair max", "ms"),
    ("onboard_p50_ms", "onboarding p50", "ms"),
    ("onboard_p99_ms", "onboarding p99", "ms"),
    ("onboard_not_applied", "onboarding events not applied", ""),
    ("peak_rss_mib", "peak RSS (VmHWM)", "MiB"),
    ("rss_idle_mib", "RSS in steady state", "MiB"),
    ("cpu_convergence_s", "operator CPU, convergence", "s"),
    ("cpu_total_s", "operator CPU, whole run", "s"),
    ("cpu_steady_s", "operator CPU, steady state", "s"),
    (
        "apiserver_cpu_steady_s",
        "API server CPU, steady state",
        "s",
    ),
];

fn ratio(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b != 0.0 => json!(round(a / b, 2)),
        _ => Value::Null,
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else {
                format!("{x:.2}")
            }
        }
        other => other.to_string(),
    }
}

/// The floor's best rate (objects per second), from bench-floor's output.
fn floor_rate(floor: Option<&Value>) -> Option<f64> {
    floor?.get("best")?.get("objects_per_second")?.as_f64()
}

/// One scenario's table (text) and rows (JSON), teamaccess against
/// rbac-manager; `runs` maps operator → its figures. With the `floor`, each
/// operator's convergence also as a multiple of the time the API server
/// needs to take the objects that operator wrote, from the fastest client.
pub fn table(
    runs: &BTreeMap<String, Map<String, Value>>,
    floor: Option<&Value>,
) -> (String, Value) {
    let get = |op: &str, key: &str| -> Value {
        runs.get(op)
            .and_then(|r| r.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut text = format!(
        "{:<50} {:>12} {:>13} {:>7}\n",
        "figure", "teamaccess", "rbac-manager", "ratio"
    );
    let mut rows = Map::new();
    let mut row = |key: String, label: String, a: Value, b: Value| {
        let r = ratio(&a, &b);
        text += &format!(
            "{label:<50} {:>12} {:>13} {:>7}\n",
            cell(&a),
            cell(&b),
            cell(&r)
        );
        rows.insert(key, json!({"teamaccess": a, "rbac-manager": b, "ratio": r}));
    };
    for (key, label, unit) in FIGURES {
        let label = if unit.is_empty() {
            label.to_string()
        } else {
            format!("{label} ({unit})")
        };
        row(
            key.into(),
            label,
            get("teamaccess", key),
            get("rbac-manager", key),
        );
    }
    if let Some(rate) = floor_rate(floor) {
        let concurrency = floor
            .and_then(|f| f["best"]["concurrency"].as_u64())
            .unwrap_or(0);
        let both = json!(round(rate, 0));
        row(
            "floor_objects_per_second".into(),
            format!("floor: objects/s, minimal client at concurrency {concurrency}"),
            both.clone(),
            both,
        );
        let floor_s = |op: &str| match get(op, "objects_written").as_f64() {
            Some(n) if n > 0.0 => json!(round(n / rate, 2)),
            _ => Value::Null,
        };
        row(
            "floor_s".into(),
            "floor: time for the objects it wrote (s)".into(),
            floor_s("teamaccess"),
            floor_s("rbac-manager"),
        );
        let multiple = |op: &str| ratio(&get(op, "convergence_s"), &floor_s(op));
        row(
            "convergence_over_floor".into(),
            "convergence as a multiple of the floor".into(),
            multiple("teamaccess"),
            multiple("rbac-manager"),
        );
    }
    for phase in ["convergence_requests_by_verb", "steady_requests_by_verb"] {
        let verbs: BTreeSet<String> = OPERATORS
            .iter()
            .filter_map(|op| get(op, phase).as_object().cloned())
            .flat_map(|m| m.keys().cloned().collect::<Vec<_>>())
            .collect();
        for verb in verbs {
            let count = |op: &str| {
                if runs.contains_key(op) {
                    get(op, phase).get(&verb).cloned().unwrap_or(json!(0))
                } else {
                    Value::Null
                }
            };
            let short = phase.split('_').next().unwrap_or(phase);
            row(
                format!("{phase}.{verb}"),
                format!("{short} requests: {verb}"),
                count("teamaccess"),
                count("rbac-manager"),
            );
        }
    }
    (text, Value::Object(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        user: &str,
        verb: &str,
        resource: &str,
        ns: &str,
        name: &str,
        at_ms: i64,
    ) -> AuditEvent {
        let t = Timestamp::from_millisecond(1_800_000_000_000 + at_ms).unwrap();
        AuditEvent {
            user: user.into(),
            verb: verb.into(),
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
            code: if verb == "create" { 201 } else { 200 },
            received: t,
            stage: t,
            user_agent: String::new(),
        }
    }

    fn at(ms: i64) -> String {
        Timestamp::from_millisecond(1_800_000_000_000 + ms)
            .unwrap()
            .to_string()
    }

    #[test]
    fn nearest_rank_percentiles_are_observations() {
        let xs: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&xs, 50), Some(100.0));
        assert_eq!(percentile(&xs, 99), Some(198.0));
        assert_eq!(percentile(&xs, 100), Some(200.0));
        assert_eq!(percentile(&[7.0], 99), Some(7.0));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn a_run_yields_convergence_drift_onboarding_and_steady_state() {
        let op = "system:serviceaccount:teamaccess-system:teamaccess";
        let run = Run(json!({
            "user": op, "expected_bindings": 2,
            "started": at(0), "idle_from": at(2_000), "idle_to": at(3_000),
            "drift_from": at(4_000), "burst_from": at(5_000), "onboard_from": at(6_000),
            "peak_rss_mib": 40.5, "rss_idle_mib": 30.0, "cpu_convergence_s": 1.0,
            "cpu_total_s": 2.0, "cpu_idle_s": 0.1, "apiserver_cpu_idle_s": 0.5,
        }));
        let events = vec![
            event(op, "list", "namespaces", "", "", 100),
            event(op, "create", "roles", "a", "r", 200),
            event(op, "create", "rolebindings", "a", "rb", 300),
            event(op, "create", "rolebindings", "b", "rb", 1_000),
            event(op, "patch", "teamaccesses/status", "", "t", 1_100),
            event(op, "get", "leases", "x", "l", 2_500),
            // drift: deleted at 4.1 s, recreated 30 ms later
            event("admin", "delete", "rolebindings", "a", "rb", 4_100),
            event(op, "create", "rolebindings", "a", "rb", 4_130),
            // the burst: one never repaired
            event("admin", "delete", "rolebindings", "b", "rb", 5_100),
            // onboarding: namespace c created, bound 80 ms later
            event("admin", "create", "namespaces", "", "c", 6_100),
            event(op, "create", "rolebindings", "c", "rb", 6_180),
        ];
        let f = analyse(&run, &events).unwrap();
        assert_eq!(
            f["convergence_s"],
            json!(0.9),
            "first request to the second binding"
        );
        assert_eq!(f["convergence_requests"], json!(4));
        assert_eq!(f["objects_written"], json!(3));
        assert_eq!(f["steady_requests"], json!(1));
        assert_eq!(f["steady_writes_excluding_leases"], json!(0));
        assert_eq!(f["drift_p99_ms"], json!(30.0));
        assert_eq!(f["burst_not_repaired"], json!(1));
        assert_eq!(f["onboard_p50_ms"], json!(80.0));
        assert_eq!(f["cpu_steady_s"], json!(0.1));

        let runs = BTreeMap::from([("teamaccess".to_string(), f)]);
        let floor = json!({"best": {"concurrency": 32, "objects_per_second": 10.0}});
        let (text, rows) = table(&runs, Some(&floor));
        assert!(text.contains("drift repair p99 (ms)"), "{text}");
        assert_eq!(
            rows["onboard_p50_ms"]["ratio"],
            Value::Null,
            "no peer, no ratio"
        );
        // 3 objects at 10/s take 0.3 s; converging took 0.9 s
        assert_eq!(rows["floor_s"]["teamaccess"], json!(0.3));
        assert_eq!(rows["convergence_over_floor"]["teamaccess"], json!(3.0));
        let (_, rows) = table(&runs, None);
        assert!(rows.get("floor_s").is_none(), "no floor run, no floor rows");
    }
}
