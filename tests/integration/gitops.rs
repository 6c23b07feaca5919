//! GitOps: the Argo CD health check (config/gitops/argocd/health.lua), run by
//! the real Lua interpreter, on statuses the status module computes and on
//! statuses the operator actually wrote (see [`assert_argo`], called from the
//! controller tests); and the shape of the Flux and Argo CD manifests.
//!
//! Argo CD's interpreter is gopher-lua (Lua 5.1 semantics: every number a
//! float, no `math.type`, no integer division); these tests run the script in
//! gopher-lua's own `glua`, built by hack/tool-glua.sh, whose absolute path
//! they take from TEAMACCESS_GLUA (`make test` sets it). Without it they fail,
//! and say so: they never skip.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::process::{Command, Stdio};

use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use serde_json::{Value, json};
use teamaccess::access::status::{Observed, compute};
use teamaccess::api::teamaccess::{NamespaceState, NamespaceStatus, TeamAccess, Tier};

use crate::support::Cluster;

/// The gopher-lua interpreter: TEAMACCESS_GLUA, an absolute path.
fn glua() -> std::path::PathBuf {
    let p = std::env::var_os("TEAMACCESS_GLUA").unwrap_or_else(|| {
        panic!(
            "TEAMACCESS_GLUA is not set: it must be the absolute path of glua, the \
             gopher-lua interpreter Argo CD's health checks run in. Run `make test`, or \
             export TEAMACCESS_GLUA=$(hack/tool-glua.sh). These tests fail rather than skip."
        )
    });
    let p = std::path::PathBuf::from(p);
    assert!(
        p.is_absolute() && p.is_file(),
        "TEAMACCESS_GLUA={} is not an absolute path to a file",
        p.display()
    );
    p
}
const HEALTH_LUA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/config/gitops/argocd/health.lua"
);
const GITOPS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gitops");
const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/samples");
/// The argocd-cm key Argo CD reads a custom health check for TeamAccess from.
const HEALTH_KEY: &str = "resource.customizations.health.teamaccess.dev_TeamAccess";
const HEALTH_STATES: [&str; 6] = [
    "Healthy",
    "Progressing",
    "Degraded",
    "Suspended",
    "Missing",
    "Unknown",
];

/// A Lua expression that builds `v`: objects become tables with string keys,
/// arrays 1-based sequences, null nil. Strings are double-quoted with every
/// byte outside printable ASCII, and `"` and `\`, written as a `\ddd`
/// escape, so any text (newlines, quotes, `]]`, UTF-8, NUL) survives exactly.
pub fn lua_literal(v: &Value) -> String {
    let mut out = String::new();
    write_lua(v, &mut out);
    out
}

fn write_lua(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write!(out, "{i}").unwrap();
            } else if let Some(u) = n.as_u64() {
                // beyond i64: a float literal (gopher-lua holds every number as a float)
                write!(out, "{u}.0").unwrap();
            } else {
                let f = n.as_f64().expect("JSON numbers are finite");
                write!(out, "{f:e}").unwrap();
            }
        }
        Value::String(s) => write_lua_string(s, out),
        Value::Array(items) => {
            out.push('{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_lua(item, out);
            }
            out.push('}');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('[');
                write_lua_string(key, out);
                out.push_str("] = ");
                write_lua(item, out);
            }
            out.push('}');
        }
    }
}

fn write_lua_string(s: &str, out: &mut String) {
    out.push('"');
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => write!(out, "\\{b:03}").unwrap(),
            0x20..=0x7e => out.push(b as char),
            // three digits always, so a digit that follows is not read into it
            _ => write!(out, "\\{b:03}").unwrap(),
        }
    }
    out.push('"');
}

/// Runs `program` (Lua source) in glua with `args` as `arg[1..]`; its stdout.
/// glua reads a script from a file only, so the program goes to a temp file.
fn run_lua(program: &str, args: &[&str]) -> String {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let glua = glua();
    let file = std::env::temp_dir().join(format!(
        "teamaccess-lua-{}-{}.lua",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&file, program).expect("writing the Lua program");
    let out = Command::new(&glua)
        .arg(&file)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", glua.display()));
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "glua failed ({}): {}{}\nprogram:\n{program}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 from lua")
}

/// What Argo CD shows for TeamAccess `ta` (the object as JSON): health.lua run
/// by the real interpreter with `obj` set to it, as Argo CD does. Returns
/// `(hs.status, hs.message)`.
pub fn argo_health(ta: &Value) -> (String, String) {
    let program = format!(
        "obj = {}\n\
         local check = assert(loadfile(arg[1]))\n\
         local hs = check()\n\
         assert(type(hs) == \"table\", \"the health check returned no table\")\n\
         assert(type(hs.status) == \"string\", \"hs.status is not a string\")\n\
         io.write(hs.status, \"\\t\", tostring(hs.message or \"\"))\n",
        lua_literal(ta)
    );
    let out = run_lua(&program, &[HEALTH_LUA]);
    let (status, message) = out
        .split_once('\t')
        .unwrap_or_else(|| panic!("unexpected output from the health check: {out:?}"));
    assert!(
        HEALTH_STATES.contains(&status),
        "{status:?} is not an Argo CD health status"
    );
    (status.to_string(), message.to_string())
}

fn condition<'a>(ta: &'a Value, type_: &str) -> Option<&'a Value> {
    ta.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Asserts that Argo CD would show `want` for TeamAccess `name` as the
/// operator has written it: the object is read raw from the API server, every
/// field as it is stored, and given to health.lua.
pub async fn assert_argo(cluster: &Cluster, name: &str, want: &str) {
    let api: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ApiResource::erase::<TeamAccess>(&()),
    );
    let object = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading TeamAccess {name}: {e}"));
    let ta = serde_json::to_value(&object).unwrap();
    let (health, message) = argo_health(&ta);
    assert_eq!(
        health, want,
        "Argo CD health of TeamAccess {name} ({message}); generation {}, status:\n{:#}",
        ta["metadata"]["generation"], ta["status"]
    );
    assert!(!message.is_empty(), "a health message for {name}");
    match want {
        "Healthy" => assert_eq!(
            Some(message.as_str()),
            condition(&ta, "Ready").and_then(|c| c["message"].as_str()),
            "Healthy shows Ready's message"
        ),
        "Degraded" => {
            let stalled = condition(&ta, "Stalled").expect("Degraded comes from Stalled");
            assert!(
                message.contains(stalled["message"].as_str().unwrap()),
                "Degraded shows Stalled's message: {message}"
            );
        }
        _ => {}
    }
}

// ---- the check itself, no cluster needed

fn health_lua() -> String {
    std::fs::read_to_string(HEALTH_LUA).expect("config/gitops/argocd/health.lua")
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

fn one_doc(path: &str) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{path}: one document");
    docs.remove(0)
}

/// A TeamAccess at `generation` with `status` (or none).
fn object(generation: i64, suspend: bool, status: Option<Value>) -> Value {
    let mut ta = json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "metadata": {"name": "payments", "generation": generation, "uid": "4f1c"},
        "spec": {
            "groups": [{"id": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"}],
            "grants": [{"tier": "Writer", "namespaces": ["payments-dev"]}],
            "suspend": suspend
        }
    });
    if let Some(s) = status {
        ta["status"] = s;
    }
    ta
}

/// The status the operator computes for these namespace outcomes.
fn computed(
    generation: i64,
    suspended: bool,
    states: &[NamespaceState],
    forbidden: Option<&str>,
) -> Value {
    let status = compute(
        Observed {
            generation: Some(generation),
            suspended,
            namespaces: states
                .iter()
                .enumerate()
                .map(|(i, s)| NamespaceStatus {
                    name: format!("ns-{i}"),
                    tier: Some(Tier::Writer),
                    state: *s,
                    message: None,
                })
                .collect(),
            forbidden: forbidden.map(Into::into),
            tiers: vec![Tier::Writer],
            ..Default::default()
        },
        None,
        Timestamp::now(),
    );
    serde_json::to_value(status).unwrap()
}

#[test]
fn argocd_cm_patch_carries_health_lua_verbatim() {
    let patch = one_doc(&format!("{GITOPS}/argocd/argocd-cm-patch.yaml"));
    assert_eq!(patch["apiVersion"], "v1");
    assert_eq!(patch["kind"], "ConfigMap");
    assert_eq!(patch["metadata"]["name"], "argocd-cm");
    assert_eq!(patch["metadata"]["namespace"], "argocd");
    let inline = patch["data"][HEALTH_KEY]
        .as_str()
        .unwrap_or_else(|| panic!("argocd-cm-patch.yaml has no data.{HEALTH_KEY}"));
    assert!(
        inline == health_lua(),
        "config/gitops/argocd/argocd-cm-patch.yaml holds a copy of health.lua that differs \
         from it: copy health.lua into it again, indented by four spaces"
    );
}

#[test]
fn lua_literals_carry_any_json_exactly() {
    let strings = [
        "",
        "plain",
        "quote \" and backslash \\ and \\\"",
        "newline\nreturn\rtab\t",
        "]] ]=] [[ long brackets",
        "nul \0 and bell \x07 and del \x7f",
        "ünïcødé ✓ 𝄞",
        "1\u{1}2",
        "%s %q %%",
    ];
    let mut program = format!("obj = {}\n", lua_literal(&json!(strings)));
    program.push_str("for _, s in ipairs(obj) do io.write(#s, \":\", s, \"|\") end\n");
    let expected: String = strings
        .iter()
        .map(|s| format!("{}:{s}|", s.len()))
        .collect();
    assert_eq!(run_lua(&program, &[]), expected);

    let value = json!({
        "int": 42, "neg": -7, "big": 9007199254740993_i64, "float": 0.25, "huge": 1e300,
        "yes": true, "no": false, "nothing": null,
        "list": [1, "two", [3], {"four": 4}], "empty": [], "map": {"a b": {"c": "d"}}
    });
    let program = format!(
        "obj = {}\n\
         assert(obj.int == 42 and math.floor(obj.int) == obj.int)\n\
         assert(obj.neg == -7 and obj.big == 9007199254740993)\n\
         assert(obj.float == 0.25 and obj.huge == 1e300)\n\
         assert(obj.yes == true and obj.no == false and obj.nothing == nil)\n\
         assert(#obj.list == 4 and obj.list[1] == 1 and obj.list[2] == \"two\")\n\
         assert(obj.list[3][1] == 3 and obj.list[4].four == 4)\n\
         assert(next(obj.empty) == nil and obj.map[\"a b\"].c == \"d\")\n\
         io.write(\"ok\")\n",
        lua_literal(&value)
    );
    assert_eq!(run_lua(&program, &[]), "ok");
}

#[test]
fn a_new_object_without_status_is_progressing() {
    let (health, message) = argo_health(&object(1, false, None));
    assert_eq!(health, "Progressing");
    assert!(message.contains("waiting for the operator"), "{message}");
    // a status without observedGeneration says nothing about the spec either
    let (health, _) = argo_health(&object(1, false, Some(json!({}))));
    assert_eq!(health, "Progressing");
    // suspended, but the operator has not seen it yet
    assert_eq!(argo_health(&object(1, true, None)).0, "Progressing");
}

#[test]
fn a_status_behind_the_spec_is_progressing() {
    for status in [
        computed(2, false, &[NamespaceState::Applied], None),
        computed(2, false, &[NamespaceState::Conflict], None),
        computed(2, true, &[NamespaceState::Applied], None),
    ] {
        for suspend in [false, true] {
            let (health, message) = argo_health(&object(3, suspend, Some(status.clone())));
            assert_eq!(health, "Progressing", "{status:#}");
            assert!(message.contains("waiting for the operator"), "{message}");
            assert!(message.contains("generation 2 of 3"), "{message}");
        }
    }
}

/// One outcome the status module can report, and what Argo CD should show.
struct Case {
    what: &'static str,
    suspended: bool,
    states: &'static [NamespaceState],
    forbidden: Option<&'static str>,
    health: &'static str,
    /// a piece of the message
    says: &'static str,
}

#[test]
fn every_status_the_operator_computes_maps_to_its_health() {
    use NamespaceState::*;
    let case = |what, suspended, states, forbidden, health, says| Case {
        what,
        suspended,
        states,
        forbidden,
        health,
        says,
    };
    let cases = [
        case(
            "applied",
            false,
            &[Applied, Applied],
            None,
            "Healthy",
            "2 namespaces applied",
        ),
        case(
            "nothing targeted",
            false,
            &[],
            None,
            "Healthy",
            "0 namespaces applied",
        ),
        case(
            "pending",
            false,
            &[Applied, Pending],
            None,
            "Healthy",
            "not created yet",
        ),
        case(
            "outside the window",
            false,
            &[Skipped, Expired, NotYetValid],
            None,
            "Healthy",
            "applied",
        ),
        case(
            "conflict",
            false,
            &[Applied, Conflict],
            None,
            "Degraded",
            "Conflict: objects this TeamAccess does not own",
        ),
        case(
            "denied",
            false,
            &[Denied, Pending],
            None,
            "Degraded",
            "Denied: protected namespaces",
        ),
        case(
            "forbidden",
            false,
            &[Applied],
            Some("roles is forbidden"),
            "Degraded",
            "roles is forbidden",
        ),
        case(
            "retrying",
            false,
            &[Applied, Error],
            None,
            "Progressing",
            "RetryingAfterError",
        ),
        case(
            "suspended",
            true,
            &[Applied],
            None,
            "Suspended",
            "suspended: Roles and RoleBindings are not created or updated",
        ),
        case(
            "suspended with a conflict",
            true,
            &[Conflict],
            None,
            "Suspended",
            "Conflict",
        ),
    ];
    for c in cases {
        let status = computed(5, c.suspended, c.states, c.forbidden);
        let (health, message) = argo_health(&object(5, c.suspended, Some(status.clone())));
        let what = c.what;
        assert_eq!(health, c.health, "{what}: {message}\n{status:#}");
        assert!(
            message.contains(c.says),
            "{what}: {message:?} lacks {:?}",
            c.says
        );
        if health == "Healthy" {
            let ready = condition(&json!({ "status": status }), "Ready")
                .cloned()
                .unwrap();
            assert_eq!(Some(message.as_str()), ready["message"].as_str(), "{what}");
        }
    }
}

#[test]
fn odd_and_missing_fields_never_break_the_check() {
    let ready = |status: &str, reason: Value, message: Value| {
        json!({"observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": status, "reason": reason, "message": message}
        ]})
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "Progressing"),
        (json!({"metadata": {}}), "Progressing"),
        (
            json!({"metadata": "odd", "spec": "odd", "status": "odd"}),
            "Progressing",
        ),
        (
            object(1, false, Some(json!({"observedGeneration": 1}))),
            "Progressing",
        ),
        (
            object(
                1,
                false,
                Some(json!({"observedGeneration": 1, "conditions": "odd"})),
            ),
            "Progressing",
        ),
        (
            object(
                1,
                false,
                Some(json!({"observedGeneration": 1, "conditions": ["odd", 7, null]})),
            ),
            "Progressing",
        ),
        (
            object(
                1,
                false,
                Some(ready("Unknown", json!("Starting"), json!(""))),
            ),
            "Progressing",
        ),
        (
            object(1, false, Some(ready("True", json!(null), json!(null)))),
            "Healthy",
        ),
        (
            object(1, false, Some(ready("True", json!("Applied"), json!("")))),
            "Healthy",
        ),
        (
            object(1, false, Some(ready("False", json!(null), json!(null)))),
            "Degraded",
        ),
        (
            object(1, false, Some(ready("False", json!("Odd"), json!("odd")))),
            "Degraded",
        ),
        // a newer generation than the spec's: the status is current enough
        (
            object(
                1,
                false,
                Some(json!({"observedGeneration": 2, "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Applied", "message": "1 namespaces applied"}
                ]})),
            ),
            "Healthy",
        ),
        // no metadata.generation: judged on the conditions
        (
            json!({"status": {"observedGeneration": 1, "conditions": [
                {"type": "Stalled", "status": "True", "reason": "Denied"}
            ]}}),
            "Degraded",
        ),
        // Stalled or Reconciling written as False are not problems
        (
            object(
                1,
                false,
                Some(json!({"observedGeneration": 1, "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Applied", "message": "ok"},
                    {"type": "Stalled", "status": "False", "reason": "Fine", "message": ""},
                    {"type": "Reconciling", "status": "False", "reason": "Fine", "message": ""}
                ]})),
            ),
            "Healthy",
        ),
        // suspend must be the boolean true
        (
            {
                let mut ta = object(1, false, Some(ready("True", json!("Applied"), json!("ok"))));
                ta["spec"]["suspend"] = json!("true");
                ta
            },
            "Healthy",
        ),
        (
            object(1, true, Some(json!({"observedGeneration": 1}))),
            "Suspended",
        ),
    ];
    for (ta, want) in cases {
        let (health, message) = argo_health(&ta);
        assert_eq!(health, want, "{ta:#}: {message}");
        assert!(!message.is_empty(), "{ta:#}: a message");
    }
}

// ---- the manifests

fn names(docs: &[Value], kind: &str) -> Vec<String> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn flux_applies_the_operator_first_then_checks_every_teamaccess() {
    let dir = format!("{GITOPS}/flux");
    let listed: Vec<String> = one_doc(&format!("{dir}/kustomization.yaml"))["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let docs: Vec<Value> = listed
        .iter()
        .flat_map(|f| yaml_docs(&format!("{dir}/{f}")))
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, on_disk,
        "flux/kustomization.yaml lists every manifest"
    );

    let sources = names(&docs, "GitRepository");
    assert_eq!(sources.len(), 1);
    let source = find(&docs, "GitRepository", &sources[0]);
    assert_eq!(source["apiVersion"], "source.toolkit.fluxcd.io/v1");
    let kustomizations: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Kustomization")
        .collect();
    assert_eq!(kustomizations.len(), 2);
    for k in &kustomizations {
        assert_eq!(k["apiVersion"], "kustomize.toolkit.fluxcd.io/v1");
        assert_eq!(k["spec"]["sourceRef"]["kind"], "GitRepository");
        assert_eq!(k["spec"]["sourceRef"]["name"], sources[0].as_str());
        assert_eq!(k["metadata"]["namespace"], source["metadata"]["namespace"]);
        assert!(k["spec"]["timeout"].is_string(), "a bounded wait");
    }
    let operator = kustomizations
        .iter()
        .find(|k| k["spec"]["path"] == "./config/default")
        .expect("a Kustomization for config/default");
    assert_eq!(operator["spec"]["wait"], true);
    let access = kustomizations
        .iter()
        .find(|k| k["spec"]["path"] != "./config/default")
        .unwrap();
    assert_eq!(
        access["spec"]["dependsOn"],
        json!([{"name": operator["metadata"]["name"]}])
    );
    let checks = access["spec"]["healthChecks"]
        .as_array()
        .expect("healthChecks");
    let api_version = TeamAccess::api_version(&()).to_string();
    for c in checks {
        assert_eq!(c["apiVersion"], api_version.as_str(), "{c}");
        assert_eq!(c["kind"], "TeamAccess", "{c}");
        assert!(
            c.get("namespace").is_none(),
            "TeamAccess is cluster-scoped: {c}"
        );
    }
    // the example points at the samples: every TeamAccess there is checked
    assert_eq!(access["spec"]["path"], "./config/samples");
    let checked: BTreeSet<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    let samples: BTreeSet<String> = one_doc(&format!("{SAMPLES}/kustomization.yaml"))["resources"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| yaml_docs(&format!("{SAMPLES}/{}", f.as_str().unwrap())))
        .filter(|d| d["kind"] == "TeamAccess")
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        checked,
        samples.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "flux/team-access.yaml's healthChecks name every TeamAccess in config/samples"
    );
}

#[test]
fn argo_cd_deploys_the_operator_and_only_teamaccess_objects_from_the_access_repository() {
    let docs = yaml_docs(&format!("{GITOPS}/argocd/application.yaml"));
    let apps: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Application").collect();
    assert_eq!(apps.len(), 2);
    for app in &apps {
        assert_eq!(app["apiVersion"], "argoproj.io/v1alpha1");
        assert_eq!(app["metadata"]["namespace"], "argocd");
        let sync = &app["spec"]["syncPolicy"];
        assert_eq!(sync["automated"]["prune"], true);
        assert_eq!(sync["automated"]["selfHeal"], true);
        assert!(sync["retry"]["limit"].as_i64().unwrap() > 0);
        assert!(
            app["metadata"].get("finalizers").is_none(),
            "deleting an Application must not cascade into revoking access"
        );
    }
    let wave = |a: &Value| {
        a["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
            .as_str()
            .unwrap()
            .parse::<i32>()
            .unwrap()
    };
    let operator = apps
        .iter()
        .find(|a| a["spec"]["source"]["path"] == "config/default")
        .expect("an Application for config/default");
    let access = apps
        .iter()
        .find(|a| a["spec"]["source"]["path"] != "config/default")
        .unwrap();
    assert!(wave(operator) < wave(access), "the operator syncs first");
    let options = access["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .unwrap();
    assert!(options.contains(&json!("SkipDryRunOnMissingResource=true")));
    let project = find(
        &docs,
        "AppProject",
        access["spec"]["project"].as_str().unwrap(),
    );
    assert_eq!(
        project["spec"]["clusterResourceWhitelist"],
        json!([{"group": "teamaccess.dev", "kind": "TeamAccess"}])
    );
    assert_eq!(
        project["spec"]["namespaceResourceBlacklist"],
        json!([{"group": "*", "kind": "*"}])
    );
    assert_eq!(
        project["spec"]["sourceRepos"],
        json!([access["spec"]["source"]["repoURL"]])
    );
}
