//! The Helm chart in charts/teamaccess, with the real helm CLI
//! (TEAMACCESS_HELM, built by hack/tool-helm.sh) against the test control plane.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{self, ENV_KUBECONFIG};

pub const ENV_HELM: &str = "TEAMACCESS_HELM";
const ENV_KUBECTL: &str = "TEAMACCESS_TEST_KUBECTL";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn chart() -> String {
    repo("charts/teamaccess").display().to_string()
}

fn env_var(var: &str, how: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{var} is not set: {how}"),
    }
}

fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Output {
    support::run_tool(program, args, stdin)
}

/// Runs helm (as the test control plane's admin); returns its output.
fn helm_output(args: &[&str]) -> Output {
    let helm = env_var(
        ENV_HELM,
        "the Helm tests need the helm CLI: run `make test`, or export \
         TEAMACCESS_HELM=$(hack/tool-helm.sh)",
    );
    let kubeconfig = env_var(ENV_KUBECONFIG, "run `make test` or `make dev-cluster`");
    let mut all = vec!["--kubeconfig", &kubeconfig];
    all.extend_from_slice(args);
    run(&helm, &all, None)
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn helm(args: &[&str]) -> String {
    ok(&format!("helm {}", args.join(" ")), helm_output(args))
}

fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let kubectl = env_var(ENV_KUBECTL, "run `make test` or `make dev-cluster`");
    let kubeconfig = env_var(ENV_KUBECONFIG, "run `make test` or `make dev-cluster`");
    let mut all = vec!["--kubeconfig", &kubeconfig];
    all.extend_from_slice(args);
    ok(
        &format!("kubectl {}", args.join(" ")),
        run(&kubectl, &all, stdin),
    )
}

/// YAML documents, as the API server reads them (server-side dry run), in JSON.
fn dry_run(yaml: &str) -> Vec<Value> {
    let out = kubectl(
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=teamaccess-helm-tests",
            "-o",
            "json",
            "-f",
            "-",
        ],
        Some(yaml),
    );
    let v: Value = serde_json::from_str(&out).expect("kubectl -o json");
    match v.get("items") {
        Some(items) => items.as_array().unwrap().clone(),
        None => vec![v],
    }
}

fn cargo_version() -> String {
    let toml = std::fs::read_to_string(repo("Cargo.toml")).unwrap();
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("Cargo.toml has a package version")
        .to_string()
}

#[test]
fn chart_version_and_app_version_are_the_cargo_version() {
    let chart = std::fs::read_to_string(repo("charts/teamaccess/Chart.yaml")).unwrap();
    let want = cargo_version();
    let field = |name: &str| {
        chart
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("Chart.yaml has no {name}"))
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(
        field("version"),
        want,
        "Chart.yaml version differs from Cargo.toml"
    );
    assert_eq!(
        field("appVersion"),
        want,
        "Chart.yaml appVersion differs from Cargo.toml"
    );
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let generated = std::fs::read(repo("crds/teamaccess.dev_teamaccesses.yaml")).unwrap();
    let chart = std::fs::read(repo(
        "charts/teamaccess/crds/teamaccess.dev_teamaccesses.yaml",
    ))
    .unwrap();
    assert!(
        generated == chart,
        "charts/teamaccess/crds/ differs from crds/: run `make crds`"
    );
}

#[test]
fn chart_lints_strictly() {
    let out = helm(&["lint", "--strict", &chart()]);
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn a_values_typo_is_refused_by_the_schema() {
    for (set, needle) in [
        ("replcas=3", "replcas"),
        ("leaderElection.enable=false", "enable"),
        ("logFormat=yaml", "logFormat"),
    ] {
        let out = helm_output(&["template", "typo", &chart(), "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains("schema") && stderr.contains(needle),
            "--set {set}: the message does not name the value:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn template_is_accepted_by_the_api_server_and_rbac_is_config_rbac() {
    let cluster = support::cluster().await;
    // config/rbac's Roles live in teamaccess-system; the harness creates it
    crate::operator::install(&cluster).await;
    let ns = support::unique("helm-tpl");
    let rendered = helm(&[
        "template",
        &ns,
        &chart(),
        "-n",
        &ns,
        "--set",
        "metrics.serviceMonitor.enabled=false",
    ]);
    assert!(
        rendered.lines().count() > 100,
        "suspiciously short:\n{rendered}"
    );
    // the release namespace must exist for a namespaced dry run
    kubectl(&["create", "namespace", &ns], None);
    let chart_objs = dry_run(&rendered);
    let config_rbac = [
        "cluster_role.yaml",
        "events_role.yaml",
        "leader_election_role.yaml",
    ]
    .map(|f| std::fs::read_to_string(repo(&format!("config/rbac/{f}"))).unwrap())
    .join("\n---\n");
    let config_objs = dry_run(&config_rbac);
    kubectl(&["delete", "namespace", &ns, "--wait=false"], None);

    let rules = |objs: &[Value], kind: &str, suffix: &str| -> (Value, String) {
        let o = objs
            .iter()
            .find(|o| {
                o["kind"] == kind && o["metadata"]["name"].as_str().unwrap().ends_with(suffix)
            })
            .unwrap_or_else(|| panic!("no {kind} *{suffix}"));
        (
            o["rules"].clone(),
            o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        )
    };
    for (kind, suffix) in [
        ("ClusterRole", "manager"),
        ("Role", "events"),
        ("Role", "leader-election"),
    ] {
        let (want, _) = rules(&config_objs, kind, suffix);
        let (got, got_ns) = rules(&chart_objs, kind, suffix);
        assert_eq!(
            got, want,
            "the chart's {kind} *{suffix} differs from config/rbac"
        );
        match suffix {
            "events" => assert_eq!(got_ns, "default", "events land in default"),
            "leader-election" => assert_eq!(got_ns, ns, "the lease is in the release namespace"),
            _ => {}
        }
    }
    let deploy = chart_objs
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"], false);
    let c = &pod["containers"][0]["securityContext"];
    assert_eq!(c["readOnlyRootFilesystem"], true);
    assert_eq!(c["allowPrivilegeEscalation"], false);
    assert_eq!(c["capabilities"]["drop"], serde_json::json!(["ALL"]));
    // the ClusterRole's name carries the release name, so it never clashes with config/rbac's
    assert!(chart_objs.iter().any(
        |o| o["kind"] == "ClusterRole" && o["metadata"]["name"].as_str().unwrap().contains(&ns)
    ));
}

/// `helm install` of the chart as a unique release in a namespace of its own.
/// The harness installs the CRD for every test, so a release must not own it.
fn install_release(prefix: &str) -> (String, String) {
    let release = support::unique(prefix);
    let ns = release.clone();
    helm(&[
        "install",
        &release,
        &chart(),
        "-n",
        &ns,
        "--create-namespace",
        "--skip-crds",
    ]);
    (release, ns)
}

#[tokio::test]
async fn install_then_upgrade_changes_the_deployment() {
    let cluster = support::cluster().await;
    crate::operator::install(&cluster).await;
    let (release, ns) = install_release("helm-rel");
    let deployment = |field: &str| {
        kubectl(
            &[
                "-n",
                &ns,
                "get",
                "deployment",
                "-l",
                &format!("app.kubernetes.io/instance={release}"),
                "-o",
                &format!("jsonpath={field}"),
            ],
            None,
        )
    };
    assert_eq!(deployment("{.items[0].spec.replicas}"), "2");
    helm(&[
        "upgrade",
        &release,
        &chart(),
        "-n",
        &ns,
        "--skip-crds",
        "--set",
        "replicas=3",
        "--set",
        "logFormat=text",
    ]);
    assert_eq!(deployment("{.items[0].spec.replicas}"), "3");
    let env = deployment("{.items[0].spec.template.spec.containers[0].env}");
    let env: Value = serde_json::from_str(&env).unwrap();
    let log = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TEAMACCESS_LOG_FORMAT")
        .unwrap();
    assert_eq!(
        log["value"], "text",
        "the upgrade did not change the log format"
    );
    helm(&["uninstall", &release, "-n", &ns]);
    kubectl(&["delete", "namespace", &ns, "--wait=false"], None);
}

/// The operator, out of cluster, under the ServiceAccount and RBAC that the
/// chart installed (and nothing else), reconciles a TeamAccess.
#[tokio::test]
async fn operator_under_the_charts_service_account_reconciles() {
    use std::time::Duration;

    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    use teamaccess::api::teamaccess::TeamAccess;

    let cluster = support::cluster().await;
    crate::operator::install(&cluster).await;
    let (release, ns) = install_release("helm-op");
    let sa = kubectl(
        &[
            "-n",
            &ns,
            "get",
            "deployment",
            "-l",
            &format!("app.kubernetes.io/instance={release}"),
            "-o",
            "jsonpath={.items[0].spec.template.spec.serviceAccountName}",
        ],
        None,
    );
    assert!(!sa.is_empty(), "the Deployment names no ServiceAccount");
    let kubeconfig =
        support::service_account_kubeconfig(&cluster, &ns, &sa, Duration::from_secs(3600)).await;
    let log = kubeconfig.with_extension("log");
    // killed however the test ends, so no operator outlives a failed run
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(env!("CARGO_BIN_EXE_teamaccess"))
        .args(["run", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--selector",
            &format!("{}={release}", crate::operator::TEST_LABEL),
        ])
        .args(["--http-address", "127.0.0.1:0", "--log-format", "json"])
        // as in the Pod: the lease is in the release namespace
        .env("POD_NAMESPACE", &ns)
        .env("POD_NAME", format!("{release}-0"))
        .env("RUST_LOG", "info,kube=warn")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting teamaccess run");
    let child = Killed(child);

    let target = support::namespace(&cluster.client, "helm-target", &[]).await;
    let group = "6a1e4c1f-2b3d-4e5f-8a9b-0c1d2e3f4a5b";
    let name = release.clone();
    let body = serde_json::json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "metadata": {"name": name, "labels": {crate::operator::TEST_LABEL: release}},
        "spec": {"groups": [{"id": group}], "grants": [{"tier": "Writer", "namespaces": [target]}]},
    });
    let api = Api::<TeamAccess>::all(cluster.client.clone());
    api.patch(
        &name,
        &PatchParams::apply("kubectl").force(),
        &Patch::Apply(&body),
    )
    .await
    .unwrap();
    crate::operator::ready(&cluster, &name, "Applied").await;
    assert!(
        support::can(
            &cluster.client,
            group,
            "create",
            "deployments.apps",
            &target
        )
        .await,
        "the group cannot create Deployments in {target} after Ready"
    );
    // the lease was taken in the release namespace, through the chart's Role
    kubectl(&["-n", &ns, "get", "lease", "teamaccess"], None);

    api.delete(&name, &DeleteParams::default()).await.unwrap();
    support::eventually("the TeamAccess to be gone", Duration::from_secs(60), || {
        let api = api.clone();
        let name = name.clone();
        async move { matches!(api.get_opt(&name).await, Ok(None)).then_some(()) }
    })
    .await;
    drop(child);
    helm(&["uninstall", &release, "-n", &ns]);
    kubectl(&["delete", "namespace", &ns, &target, "--wait=false"], None);
}
