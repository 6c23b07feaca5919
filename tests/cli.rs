//! The `teamaccess` command line, as a CI job runs it: the real binary, no
//! cluster. `render` must print only Roles and RoleBindings that belong
//! together, refuse bad input with exit 1 naming the document and field, and
//! print nothing at all when it refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use k8s_openapi::api::rbac::v1::Role;
use serde_json::{Value, json};
use teamaccess::access::tiers;

const BIN: &str = env!("CARGO_BIN_EXE_teamaccess");

/// Inside the incident window of the platform-oncall sample
/// (validFrom 2026-11-23, validUntil 2030-01-01).
const IN_WINDOW: &str = "2026-11-24T00:00:00Z";
/// The moment the platform-oncall Admin grant ends.
const AT_UNTIL: &str = "2030-01-01T00:00:00Z";
const AFTER_WINDOW: &str = "2030-01-02T00:00:00Z";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn namespaces_file() -> String {
    p(&repo("config/samples/namespaces.yaml"))
}

/// Paths as arguments; the repository's paths are UTF-8.
fn p(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// A scratch directory for this test binary, under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli-tests")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "expected exit 0\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self.stdout
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().expect("exited, not killed by a signal"),
            stdout: String::from_utf8(o.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(o.stderr).expect("stderr is UTF-8"),
        }
    }
}

fn run(args: &[&str]) -> Run {
    Command::new(BIN)
        .args(args)
        // the settings flags have environment equivalents: keep the caller's out
        .env_remove("POD_NAMESPACE")
        .env_remove("TEAMACCESS_PROTECTED_NAMESPACES")
        .env_remove("TEAMACCESS_UNPROTECT_DEFAULT_NAMESPACES")
        .env_remove("TEAMACCESS_PROTECTED_NAMESPACE_SELECTOR")
        .env_remove("TEAMACCESS_ADMIN_EXCLUDE_API_GROUPS")
        .stdin(Stdio::null())
        .output()
        .expect("the teamaccess binary runs")
        .into()
}

fn run_with_stdin(args: &[&str], input: &str) -> Run {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("POD_NAMESPACE")
        .env_remove("TEAMACCESS_PROTECTED_NAMESPACES")
        .env_remove("TEAMACCESS_UNPROTECT_DEFAULT_NAMESPACES")
        .env_remove("TEAMACCESS_PROTECTED_NAMESPACE_SELECTOR")
        .env_remove("TEAMACCESS_ADMIN_EXCLUDE_API_GROUPS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the teamaccess binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap().into()
}

/// The sample files holding TeamAccess objects, with those objects.
fn samples() -> Vec<(String, Vec<Value>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo("config/samples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        let access: Vec<Value> = docs
            .into_iter()
            .filter(|d| d["kind"] == "TeamAccess")
            .collect();
        if !access.is_empty() {
            out.push((p(&path), access));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 3, "the samples are missing: {out:?}");
    out
}

fn sample(name: &str) -> String {
    p(&repo(&format!("config/samples/{name}.yaml")))
}

/// The objects of a render, with a check that they are only Roles and
/// RoleBindings of rbac.authorization.k8s.io/v1.
fn objects(stdout: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(stdout)
        .unwrap_or_else(|e| panic!("render output is not YAML: {e}\n{stdout}"));
    for d in &docs {
        assert_eq!(d["apiVersion"], "rbac.authorization.k8s.io/v1", "{d}");
        assert!(d["kind"] == "Role" || d["kind"] == "RoleBinding", "{d}");
        assert!(d["metadata"]["name"].is_string(), "{d}");
        assert!(d["metadata"]["namespace"].is_string(), "{d}");
    }
    docs
}

fn key(d: &Value) -> (String, String) {
    (
        d["metadata"]["namespace"].as_str().unwrap().to_string(),
        d["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

/// The comment lines of a render: namespace -> "Tier what".
fn plan_lines(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| !l.starts_with("next change"))
        .map(|l| {
            let (ns, rest) = l.split_once(": ").expect("`namespace: plan`");
            (ns.to_string(), rest.to_string())
        })
        .collect()
}

/// Checks that every Role has its RoleBinding and the other way round, the
/// binding refers to the Role, and binds exactly `groups` as Groups.
fn check_pairs(docs: &[Value], ta_name: &str, groups: &BTreeSet<String>) {
    let roles: BTreeMap<_, _> = docs
        .iter()
        .filter(|d| d["kind"] == "Role")
        .map(|d| (key(d), d))
        .collect();
    let bindings: BTreeMap<_, _> = docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding")
        .map(|d| (key(d), d))
        .collect();
    assert_eq!(
        roles.len() + bindings.len(),
        docs.len(),
        "an object is printed twice"
    );
    assert_eq!(
        roles.keys().collect::<Vec<_>>(),
        bindings.keys().collect::<Vec<_>>(),
        "every Role needs a RoleBinding of the same name in the same namespace"
    );
    for ((ns, name), binding) in &bindings {
        assert_eq!(name, &format!("teamaccess-{ta_name}"));
        let role = roles[&(ns.clone(), name.clone())];
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}),
            "{binding}"
        );
        let subjects = binding["subjects"].as_array().expect("subjects");
        for s in subjects {
            assert_eq!(s["kind"], "Group", "{binding}");
            assert_eq!(s["apiGroup"], "rbac.authorization.k8s.io", "{binding}");
            assert!(s.get("namespace").is_none(), "{binding}");
        }
        let names: BTreeSet<String> = subjects
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names.len(), subjects.len(), "a subject twice: {binding}");
        assert_eq!(&names, groups, "{binding}");
        // Role and RoleBinding carry the same labels, ours only
        assert_eq!(role["metadata"]["labels"], binding["metadata"]["labels"]);
        let labels = role["metadata"]["labels"].as_object().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "teamaccess");
        assert_eq!(labels["teamaccess.dev/owner"], ta_name);
        // offline there is no UID to own by
        assert!(role["metadata"].get("ownerReferences").is_none());
        assert!(!role["rules"].as_array().expect("rules").is_empty());
    }
}

/// Every namespace a grant of `ta` names.
fn named_namespaces(ta: &Value) -> BTreeSet<String> {
    ta["spec"]["grants"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["namespaces"].as_array().cloned().unwrap_or_default())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn group_ids(ta: &Value) -> BTreeSet<String> {
    ta["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_sample_renders_only_matching_roles_and_bindings() {
    let ns_file = namespaces_file();
    for (path, access) in samples() {
        assert_eq!(access.len(), 1, "{path:?}: one TeamAccess per sample");
        let ta = &access[0];
        let name = ta["metadata"]["name"].as_str().unwrap();
        let groups = group_ids(ta);
        for now in [None, Some(IN_WINDOW), Some(AFTER_WINDOW)] {
            let mut args: Vec<&str> = vec!["render", "-f"];
            args.push(&path);
            if let Some(now) = now {
                args.extend(["--now", now]);
            }
            // without --namespaces the named namespaces are taken as
            // existing and get their objects; selectors match nothing
            let out = run(&args).ok();
            let (header, rest) = out.split_once('\n').expect("a header line");
            assert!(
                header.starts_with("# No --namespaces given: ")
                    && header.contains("taken as existing")
                    && header.contains("selectors match nothing"),
                "{path:?}\n{out}"
            );
            assert!(
                rest.starts_with(&format!("# TeamAccess {name}: ")),
                "{path:?}\n{out}"
            );
            let docs = objects(&out);
            check_pairs(&docs, name, &groups);
            let named = named_namespaces(ta);
            let printed: BTreeSet<String> = docs.iter().map(|d| key(d).0).collect();
            let plans = plan_lines(&out);
            assert_eq!(
                plans.keys().cloned().collect::<BTreeSet<_>>(),
                named,
                "{path:?}: only named namespaces are targeted\n{out}"
            );
            for (ns, plan) in &plans {
                assert!(!plan.contains(" pending: "), "{path:?}: {ns}: {plan}");
                assert_eq!(
                    printed.contains(ns),
                    plan.ends_with("Role and RoleBinding below"),
                    "{path:?}: {ns}: {plan}\n{out}"
                );
            }

            args.extend(["--namespaces", &ns_file]);
            let out = run(&args).ok();
            let docs = objects(&out);
            check_pairs(&docs, name, &groups);
            // the comment block and the objects agree on where access goes
            let applied: BTreeSet<String> = plan_lines(&out)
                .into_iter()
                .filter(|(_, plan)| plan.ends_with("Role and RoleBinding below"))
                .map(|(ns, _)| ns)
                .collect();
            let printed: BTreeSet<String> = docs.iter().map(|d| key(d).0).collect();
            assert_eq!(applied, printed, "{path:?}\n{out}");
            assert!(!printed.is_empty(), "{path:?}: the sample grants something");
        }
    }
}

/// Namespace -> tier of the Roles printed for it.
fn tiers_by_namespace(out: &str) -> BTreeMap<String, String> {
    objects(out)
        .iter()
        .filter(|d| d["kind"] == "Role")
        .map(|d| {
            (
                key(d).0,
                d["metadata"]["labels"]["teamaccess.dev/tier"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect()
}

fn role_in(out: &str, namespace: &str) -> Role {
    let doc = objects(out)
        .into_iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == namespace)
        .unwrap_or_else(|| panic!("no Role in {namespace}\n{out}"));
    serde_json::from_value(doc).unwrap()
}

#[test]
fn the_time_bound_admin_grant_is_there_inside_its_window_only() {
    let render_at = |now: &str| {
        run(&[
            "render",
            "-f",
            &sample("platform-oncall"),
            "--namespaces",
            &namespaces_file(),
            "--now",
            now,
        ])
        .ok()
    };

    let during = render_at(IN_WINDOW);
    let tiers = tiers_by_namespace(&during);
    assert_eq!(tiers["payments-prod"], "Admin", "{during}");
    assert!(
        during.contains("#   next change at 2030-01-01T00:00:00Z"),
        "{during}"
    );
    let admin = role_in(&during, "payments-prod");
    let rules = admin.rules.as_deref().unwrap();
    assert!(tiers::allows(
        rules,
        "rbac.authorization.k8s.io",
        "rolebindings",
        "create"
    ));
    assert!(tiers::allows(rules, "", "secrets", "get"));

    for now in [AT_UNTIL, AFTER_WINDOW, "2026-11-22T23:59:59Z"] {
        let out = render_at(now);
        let tiers = tiers_by_namespace(&out);
        assert!(!tiers.is_empty(), "{now}\n{out}");
        assert!(
            tiers.values().all(|t| t == "Reader"),
            "{now}: only Reader outside the window\n{out}"
        );
        assert!(tiers.contains_key("payments-prod"), "{now}\n{out}");
        assert!(!out.contains("Admin Role and RoleBinding"), "{now}\n{out}");
        let reader = role_in(&out, "payments-prod");
        let rules = reader.rules.as_deref().unwrap();
        assert!(!tiers::allows(
            rules,
            "rbac.authorization.k8s.io",
            "rolebindings",
            "create"
        ));
        assert!(!tiers::allows(rules, "", "secrets", "get"));
        assert!(tiers::allows(rules, "", "pods", "list"));
    }
}

#[test]
fn an_invalid_second_document_fails_the_whole_file_naming_it() {
    let good = std::fs::read_to_string(sample("payments")).unwrap();
    let bad = good
        .replace("name: payments\n", "name: payments-typo\n")
        .replacen(
            "    - tier: Writer\n",
            "    - tier: Writer\n      validUntill: \"2026-12-01T00:00:00Z\"\n",
            1,
        );
    assert_ne!(good, bad);
    let file = scratch("typo").join("access.yaml");
    std::fs::write(&file, format!("{good}---\n{bad}")).unwrap();
    let r = run(&[
        "render",
        "-f",
        &p(&file),
        "--namespaces",
        &namespaces_file(),
    ]);
    assert_eq!(r.code, 1, "stderr: {}", r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(r.stderr.contains("access.yaml"), "{}", r.stderr);
    assert!(r.stderr.contains("document 2"), "{}", r.stderr);
    assert!(
        r.stderr.contains("spec.grants[0].validUntill"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "nothing half-printed:\n{}", r.stdout);
}

#[test]
fn every_invalid_case_is_refused_naming_its_field() {
    let dir = scratch("invalid");
    for (i, case) in teamaccess::api::validate::cases::invalid()
        .into_iter()
        .enumerate()
    {
        let object = json!({
            "apiVersion": "teamaccess.dev/v1alpha1",
            "kind": "TeamAccess",
            "metadata": {"name": "invalid-case"},
            "spec": case.spec,
        });
        let json_file = dir.join(format!("case-{i}.json"));
        std::fs::write(&json_file, serde_json::to_string_pretty(&object).unwrap()).unwrap();
        let yaml_file = dir.join(format!("case-{i}.yaml"));
        std::fs::write(&yaml_file, serde_saphyr::to_string(&object).unwrap()).unwrap();
        for file in [json_file, yaml_file] {
            let r = run(&["render", "-f", &p(&file)]);
            assert_eq!(
                r.code, 1,
                "{}: {file:?} must be refused\nstdout: {}\nstderr: {}",
                case.name, r.stdout, r.stderr
            );
            assert!(
                r.stderr.contains(case.field),
                "{}: expected an error naming {:?}, got {}",
                case.name,
                case.field,
                r.stderr
            );
            assert!(r.stderr.contains("document 1"), "{}", r.stderr);
            assert!(r.stdout.is_empty(), "{}: {}", case.name, r.stdout);
        }
    }
}

#[test]
fn standard_input_is_read_with_dash() {
    let path = sample("payments");
    let text = std::fs::read_to_string(&path).unwrap();
    let ns = namespaces_file();
    let common = ["--namespaces", &ns, "--now", IN_WINDOW];
    let mut from_file: Vec<&str> = vec!["render", "-f", &path];
    from_file.extend(common);
    let mut from_stdin: Vec<&str> = vec!["render", "-f", "-"];
    from_stdin.extend(common);

    let expected = run(&from_file).ok();
    let got = run_with_stdin(&from_stdin, &text).ok();
    assert_eq!(got, expected);
    assert!(!objects(&got).is_empty());

    // errors from standard input name it as `-`
    let r = run_with_stdin(&from_stdin, &format!("{text}---\nkind: [unclosed\n"));
    assert_eq!(r.code, 1);
    // a syntax error is reported at its line in the whole stream
    let line = text.lines().count() + 2;
    assert!(
        r.stderr
            .starts_with(&format!("error: -: invalid YAML: line {line} ")),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty());
}

#[test]
fn a_bad_now_is_refused_naming_the_flag() {
    let r = run(&["render", "-f", &sample("payments"), "--now", "notatime"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--now"), "{}", r.stderr);
    assert!(r.stderr.contains("notatime"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn protected_namespaces_are_never_rendered() {
    let ns = namespaces_file();
    let payments = sample("payments");
    let base = || -> Vec<&str> { vec!["render", "-f", &payments, "--namespaces", &ns] };

    // named in a grant and protected by name: Denied, nothing printed
    let mut args = base();
    args.extend(["--protected-namespaces", "payments-dev,other"]);
    let out = run(&args).ok();
    let plans = plan_lines(&out);
    assert!(plans["payments-dev"].contains("denied"), "{out}");
    let printed: BTreeSet<String> = objects(&out).iter().map(|d| key(d).0).collect();
    assert!(!printed.contains("payments-dev"), "{out}");
    assert!(printed.contains("payments-prod"), "{out}");

    // matched only by a selector and protected by label: Skipped, nothing printed
    let mut args = base();
    args.extend(["--protected-namespace-selector", "env=prod"]);
    let out = run(&args).ok();
    let plans = plan_lines(&out);
    assert!(plans["payments-prod"].contains("skipped"), "{out}");
    let printed: BTreeSet<String> = objects(&out).iter().map(|d| key(d).0).collect();
    assert!(!printed.contains("payments-prod"), "{out}");
    assert!(printed.contains("payments-dev"), "{out}");

    // the defaults protect kube-system and the operator's own namespace
    let access = "apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata: {name: sneaky}
spec:
  groups: [{id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a}]
  grants:
    - tier: Admin
      namespaces: [kube-system, teamaccess-system, payments-dev]
";
    let namespaces = "apiVersion: v1
kind: Namespace
metadata: {name: kube-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: teamaccess-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: payments-dev}
";
    let dir = scratch("protected");
    std::fs::write(dir.join("ns.yaml"), namespaces).unwrap();
    let out = run_with_stdin(
        &[
            "render",
            "-f",
            "-",
            "--namespaces",
            &p(&dir.join("ns.yaml")),
        ],
        access,
    )
    .ok();
    let plans = plan_lines(&out);
    assert!(plans["kube-system"].contains("denied"), "{out}");
    assert!(plans["teamaccess-system"].contains("denied"), "{out}");
    let printed: BTreeSet<String> = objects(&out).iter().map(|d| key(d).0).collect();
    assert_eq!(
        printed,
        BTreeSet::from(["payments-dev".to_string()]),
        "{out}"
    );
}

#[test]
fn protection_is_added_to_and_dropped_only_by_its_own_flag() {
    let access = "apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata: {name: sneaky}
spec:
  groups: [{id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a}]
  grants:
    - tier: Admin
      namespaces: [kube-system, extra, payments-dev]
";
    let dir = scratch("protection-flags");
    let ns: String = ["kube-system", "extra", "payments-dev"]
        .iter()
        .map(|n| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {n}}}\n---\n"))
        .collect();
    std::fs::write(dir.join("ns.yaml"), ns).unwrap();
    let ns = p(&dir.join("ns.yaml"));
    // --protected-namespaces adds: kube-system stays protected
    let out = run_with_stdin(
        &[
            "render",
            "-f",
            "-",
            "--namespaces",
            &ns,
            "--protected-namespaces",
            "extra",
        ],
        access,
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    let out = out.ok();
    let plans = plan_lines(&out);
    assert!(plans["kube-system"].contains("denied"), "{out}");
    assert!(plans["extra"].contains("denied"), "{out}");
    let printed: BTreeSet<String> = objects(&out).iter().map(|d| key(d).0).collect();
    assert_eq!(
        printed,
        BTreeSet::from(["payments-dev".to_string()]),
        "{out}"
    );

    // dropping the defaults takes the explicit flag, and says so
    let out = run_with_stdin(
        &[
            "render",
            "-f",
            "-",
            "--namespaces",
            &ns,
            "--unprotect-default-namespaces",
        ],
        access,
    );
    assert!(
        out.stderr.contains("kube-system") && out.stderr.contains("NOT protected"),
        "{}",
        out.stderr
    );
    let out = out.ok();
    let printed: BTreeSet<String> = objects(&out).iter().map(|d| key(d).0).collect();
    assert!(printed.contains("kube-system"), "{out}");
}

#[test]
fn render_without_namespaces_takes_named_ones_as_existing_and_selectors_match_nothing() {
    // a selector that a namespace without labels would match: it must still
    // match nothing, since the labels of an assumed namespace are unknown
    let access = "apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata: {name: review}
spec:
  groups: [{id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a}]
  grants:
    - tier: Writer
      namespaces: [payments-dev, kube-system]
    - tier: Admin
      namespaceSelector:
        matchExpressions: [{key: legacy, operator: DoesNotExist}]
";
    let out = run_with_stdin(&["render", "-f", "-"], access).ok();
    assert!(
        out.starts_with("# No --namespaces given: every namespace a grant names is taken as existing; selectors match nothing.\n"),
        "{out}"
    );
    let plans = plan_lines(&out);
    assert_eq!(
        plans["payments-dev"], "Writer Role and RoleBinding below",
        "{out}"
    );
    // protection by name still holds
    assert!(plans["kube-system"].contains("denied"), "{out}");
    assert_eq!(plans.len(), 2, "the selector matched something: {out}");
    let docs = objects(&out);
    let printed: BTreeSet<(String, String)> = docs
        .iter()
        .map(|d| (key(d).0, d["kind"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        printed,
        BTreeSet::from([
            ("payments-dev".to_string(), "Role".to_string()),
            ("payments-dev".to_string(), "RoleBinding".to_string()),
        ])
    );

    // with --namespaces, exactly as before: a named namespace missing from it
    // is pending, and no header comment
    let dir = scratch("named-only");
    std::fs::write(
        dir.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: other, labels: {team: x}}\n",
    )
    .unwrap();
    let out = run_with_stdin(
        &[
            "render",
            "-f",
            "-",
            "--namespaces",
            &p(&dir.join("ns.yaml")),
        ],
        access,
    )
    .ok();
    assert!(out.starts_with("# TeamAccess review: "), "{out}");
    let plans = plan_lines(&out);
    assert!(plans["payments-dev"].contains(" pending: "), "{out}");
    assert!(
        plans["other"].ends_with("Role and RoleBinding below"),
        "{out}"
    );
    assert_eq!(
        objects(&out)
            .iter()
            .map(|d| key(d).0)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["other".to_string()])
    );
}

#[test]
fn crd_prints_the_committed_crd() {
    let out = run(&["crd"]).ok();
    let committed = std::fs::read_to_string(repo("crds/teamaccess.dev_teamaccesses.yaml")).unwrap();
    assert!(
        out == committed,
        "`teamaccess crd` differs from crds/teamaccess.dev_teamaccesses.yaml"
    );
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["frobnicate"][..],
        &["render", "--bogus"],
        &["render"],
        &["crd", "--bogus"],
        &[],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}\nstderr: {}", r.stderr);
        assert!(!r.stderr.is_empty(), "{args:?}");
        assert!(r.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn report_refuses_bad_flags_before_it_connects() {
    // a kubeconfig that points nowhere: the flags are judged first
    let kubeconfig = scratch("report").join("nowhere.kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\"}}]\n\
         users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let kc = p(&kubeconfig);
    let r = run(&[
        "report",
        "--kubeconfig",
        &kc,
        "--allow-cluster-admin",
        "Platform-Admins",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("--allow-cluster-admin: \"Platform-Admins\" is not an Entra group object ID"),
        "{}",
        r.stderr
    );
    let r = run(&[
        "report",
        "--kubeconfig",
        &kc,
        "--namespaces",
        "Payments_Prod",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("--namespaces: \"Payments_Prod\""),
        "{}",
        r.stderr
    );
    // nothing listening: exit 2 (the job is broken), not 1 (access is wrong)
    let r = run(&["report", "--kubeconfig", &kc, "--fail-on", "high"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.starts_with("error: listing "), "{}", r.stderr);
    let r = run(&["report", "--fail-on", "critical"]);
    assert_eq!(r.code, 2, "clap refuses an unknown severity: {}", r.stderr);
}

#[test]
fn a_file_that_is_not_utf8_is_refused_naming_it() {
    let dir = std::env::temp_dir().join(format!("teamaccess-cli-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("latin1.yaml");
    // "name: caf\xe9" in Latin-1: a byte no UTF-8 text holds
    std::fs::write(
        &file,
        b"apiVersion: teamaccess.dev/v1alpha1\nkind: TeamAccess\nmetadata:\n  name: caf\xe9\n",
    )
    .unwrap();
    let out = run(&["render", "-f", &p(&file)]);
    std::fs::remove_dir_all(&dir).unwrap();
    // render's code for input it refuses, as for any other invalid file
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("latin1.yaml"), "{}", out.stderr);
    assert!(out.stderr.contains("UTF-8"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}
