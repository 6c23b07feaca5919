//! The deployment manifests in config/, as kustomize renders them, against the
//! real API server: config/default applies, the operator's Pod passes the
//! "restricted" Pod Security Standard, and the RBAC names everything it grants.

use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::support::{self, ENV_KUBECONFIG};

/// The kubectl built with the test control plane (its kustomize is the one
/// `kubectl apply -k` users get with that version).
pub const ENV_KUBECTL: &str = "TEAMACCESS_TEST_KUBECTL";
const OPERATOR_NS: &str = "teamaccess-system";
const CRD_NAME: &str = "teamaccesses.teamaccess.dev";
const FIELD_MANAGER: &str = "teamaccess-config-tests";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn env_var(var: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{var} is not set: the integration tests need a real control plane and its kubectl.\n\
             Run `make test`, or `make dev-cluster` and `source` the env file it prints."
        ),
    }
}

/// Runs the test kubectl, as the admin of the test control plane, with `stdin`
/// if given; panics unless it succeeds.
fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let output = kubectl_output(args, stdin);
    assert!(
        output.status.success(),
        "kubectl {} failed ({}):\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("kubectl prints UTF-8")
}

fn kubectl_output(args: &[&str], stdin: Option<&str>) -> Output {
    let kubectl = env_var(ENV_KUBECTL);
    let kubeconfig = env_var(ENV_KUBECONFIG);
    let all: Vec<&str> = ["--kubeconfig", kubeconfig.as_str()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    support::run_tool(&kubectl, &all, stdin)
}

/// `kubectl kustomize config/<dir>`, as JSON values.
fn render(dir: &str) -> Vec<Value> {
    let path = repo(&format!("config/{dir}"));
    let yaml = kubectl(&["kustomize", path.to_str().unwrap()], None);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml)
        .unwrap_or_else(|e| panic!("config/{dir} renders to YAML that parses: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn list(items: &[&Value]) -> String {
    json!({ "apiVersion": "v1", "kind": "List", "items": items }).to_string()
}

/// kind, namespace, name: an object's identity in the messages and sets below.
fn id(doc: &Value) -> (String, String, String) {
    let s = |p: &str| {
        doc.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/kind"), s("/metadata/namespace"), s("/metadata/name"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("config/default renders no {kind} {name}"))
}

/// Every object lands where the operator expects it: its own namespace, except
/// the events Role and RoleBinding, which must be in `default`.
#[test]
fn default_renders_every_object_in_its_namespace() {
    let docs = render("default");
    let cluster_scoped = [
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
    ];
    let mut kinds = Vec::new();
    for doc in &docs {
        let (kind, namespace, name) = id(doc);
        let expected = if cluster_scoped.contains(&kind.as_str()) {
            ""
        } else if name == "teamaccess-events" {
            "default"
        } else {
            OPERATOR_NS
        };
        assert_eq!(namespace, expected, "namespace of {kind} {name}");
        kinds.push(kind);
    }
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "config/default has no {kind}"
        );
    }
    let ns = find(&docs, "Namespace", OPERATOR_NS);
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted",
        "the operator's namespace enforces the restricted Pod Security Standard"
    );
    let deployment = find(&docs, "Deployment", "teamaccess");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "teamaccess"
    );
}

/// The Namespace and the CRD are applied for real (they are shared with the
/// other tests, and applying them again changes nothing); everything else in
/// config/default is applied with a server-side dry run, which runs every
/// validation and admission check but stores nothing.
#[tokio::test]
async fn default_applies() {
    let docs = render("default");
    let (real, rest): (Vec<&Value>, Vec<&Value>) = docs
        .iter()
        .partition(|d| d["kind"] == "Namespace" || d["kind"] == "CustomResourceDefinition");
    assert_eq!(
        real.len(),
        2,
        "config/default has one Namespace and one CRD"
    );
    // the CRD is shared with every other test: never apply a stale copy over it
    let crd = real
        .iter()
        .find(|d| d["kind"] == "CustomResourceDefinition");
    assert!(
        crd.map(|d| as_crd(d)) == Some(committed_crd()),
        "config/default's CRD is not crds/'s: run `make crds`"
    );
    let apply = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager",
        FIELD_MANAGER,
        "-o",
        "json",
        "-f",
        "-",
    ];
    kubectl(&apply, Some(&list(&real)));
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            &format!("customresourcedefinition/{CRD_NAME}"),
        ],
        None,
    );

    let dry_run: Vec<&str> = apply.iter().copied().chain(["--dry-run=server"]).collect();
    let out = kubectl(&dry_run, Some(&list(&rest)));
    let out: Value = serde_json::from_str(&out).expect("kubectl -o json prints JSON");
    // one object prints as itself, several as a List
    let applied: Vec<&Value> = match out["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![&out],
    };
    let mut wanted: Vec<_> = rest.iter().map(|d| id(d)).collect();
    let mut got: Vec<_> = applied.iter().map(|d| id(d)).collect();
    wanted.sort();
    got.sort();
    assert_eq!(got, wanted, "the API server accepted every object");

    // what the API server would store is what config/ says (a dry run that
    // dropped fields would pass the check above)
    let deployment = applied
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("the Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["run", "--log-format", "json"]));
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        json!(true)
    );
}

/// A Pod made from the Deployment's template, as the ReplicaSet controller
/// would make it, in a namespace that enforces the restricted Pod Security
/// Standard.
fn template_pod(namespace: &str) -> Value {
    let docs = render("default");
    let template = &find(&docs, "Deployment", "teamaccess")["spec"]["template"];
    let mut metadata = template["metadata"].clone();
    metadata["name"] = json!("teamaccess-psa");
    metadata["namespace"] = json!(namespace);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"].clone(),
    })
}

async fn create_dry_run(pods: &Api<Pod>, pod: &Value) -> Result<Pod, kube::Error> {
    let pod: Pod = serde_json::from_value(pod.clone()).expect("the template makes a Pod");
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&params, &pod).await
}

/// The API server refuses `pod` for breaking the restricted standard on `field`.
async fn refused_for(pods: &Api<Pod>, pod: &Value, field: &str) {
    match create_dry_run(pods, pod).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "refused as Forbidden: {s:?}");
            assert!(
                s.message.contains("violates PodSecurity") && s.message.contains(field),
                "refused by Pod Security admission for {field}: {}",
                s.message
            );
        }
        Ok(_) => panic!("a Pod with a bad {field} was admitted: the namespace enforces nothing"),
        Err(e) => panic!("creating the Pod: {e}"),
    }
}

#[tokio::test]
async fn deployment_pod_passes_restricted_pod_security() {
    let cluster = support::cluster().await;
    let ns = support::namespace(
        &cluster.client,
        "config-psa",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    // the ServiceAccount admission plugin refuses a Pod whose account is missing
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("teamaccess".into());
    Api::<ServiceAccount>::namespaced(cluster.client.clone(), &ns)
        .create(&PostParams::default(), &account)
        .await
        .expect("creating the ServiceAccount");
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);

    let pod = template_pod(&ns);
    let admitted = create_dry_run(&pods, &pod)
        .await
        .unwrap_or_else(|e| panic!("the operator's Pod is refused: {e}"));

    // no automatic token volume: only ours, where in-cluster clients read
    // token, ca.crt and namespace
    let spec = admitted.spec.expect("a Pod spec");
    let volumes: Vec<_> = spec
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(volumes, ["kube-api-access"]);
    let mounts = spec.containers[0].volume_mounts.clone().unwrap_or_default();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(
        mounts[0].mount_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );

    // negative controls: the same Pod, made to break the standard, is refused,
    // so the success above is the namespace's enforcement passing it
    let mut escalating = pod.clone();
    escalating["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] =
        json!(true);
    refused_for(&pods, &escalating, "allowPrivilegeEscalation").await;

    let mut root = pod.clone();
    root["spec"]["securityContext"]["runAsNonRoot"] = json!(false);
    root["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = json!(false);
    refused_for(&pods, &root, "runAsNonRoot").await;
}

/// Every RBAC rule names its API groups, resources and verbs: no `*`.
#[test]
fn rbac_has_no_wildcards() {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo("config/rbac")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kustomization.yaml"
            || path.extension().is_none_or(|e| e != "yaml")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let file_docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs.extend(file_docs.into_iter().filter(|d| !d.is_null()));
    }
    // and whatever else config/default would install
    docs.extend(render("default"));

    let mut rules = 0;
    for doc in &docs {
        let (kind, _, name) = id(doc);
        if kind != "Role" && kind != "ClusterRole" {
            continue;
        }
        assert!(
            doc.get("aggregationRule").is_none(),
            "{kind} {name} aggregates other roles' rules"
        );
        for rule in doc["rules"].as_array().into_iter().flatten() {
            rules += 1;
            for field in [
                "verbs",
                "apiGroups",
                "resources",
                "resourceNames",
                "nonResourceURLs",
            ] {
                for value in rule[field].as_array().into_iter().flatten() {
                    let value = value.as_str().unwrap_or_default();
                    assert!(
                        !value.contains('*'),
                        "{kind} {name}: wildcard {value:?} in {field} of {rule}"
                    );
                }
            }
            for field in ["verbs", "apiGroups", "resources"] {
                assert!(
                    rule[field].as_array().is_some_and(|a| !a.is_empty()),
                    "{kind} {name}: no {field} in {rule}"
                );
            }
        }
    }
    assert!(
        rules >= 9,
        "only {rules} rules found: the check ran on nothing"
    );
}

/// config/crd holds a copy of crds/ (kustomize reads nothing outside its
/// directory); `make crds` writes both.
#[test]
fn kustomize_crd_is_the_committed_crd() {
    let name = "teamaccess.dev_teamaccesses.yaml";
    let committed = std::fs::read_to_string(repo(&format!("crds/{name}"))).unwrap();
    let copy = std::fs::read_to_string(repo(&format!("config/crd/{name}"))).unwrap();
    assert!(
        copy == committed,
        "config/crd/{name} differs from crds/{name}: run `make crds`"
    );
    let rendered: Vec<_> = render("crd").iter().map(as_crd).collect();
    assert!(
        rendered == [committed_crd()],
        "config/crd renders exactly the CRD"
    );
}

/// crds/, what users apply.
fn committed_crd() -> CustomResourceDefinition {
    let text = std::fs::read_to_string(repo("crds/teamaccess.dev_teamaccesses.yaml")).unwrap();
    serde_saphyr::from_str(&text).expect("crds/ parses")
}

/// A rendered CRD, compared as a CRD: kustomize rewrites `minimum: 0.0` as `0`.
fn as_crd(doc: &Value) -> CustomResourceDefinition {
    serde_json::from_value(doc.clone()).expect("a CustomResourceDefinition")
}
