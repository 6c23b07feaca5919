//! config/fleet/: the many-cluster examples (an Argo CD ApplicationSet, Flux
//! Kustomizations per cluster, Azure Kubernetes Fleet Manager placements),
//! checked without a cluster. Neither Argo CD's, Flux's nor Fleet's CRDs are
//! available offline, so the fields that decide what those tools do are
//! checked here: the ApplicationSet's template as a typed Application that
//! refuses unknown fields, the order each tool installs things in, the
//! references between objects, and the TeamAccess objects each cluster would
//! get, validated by the CRD's own schema.
//!
//! Also: every YAML file under config/ parses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Every document of a YAML file; a parse error names the file.
fn docs_in(path: &Path, text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    docs_in(path, &read(path))
}

fn one_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: one document", path.display());
    docs.remove(0)
}

fn kind_is(doc: &Value, api_version: &str, kind: &str) -> bool {
    doc["apiVersion"] == api_version && doc["kind"] == kind
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no metadata.name: {doc}"))
}

/// The objects a kustomization directory builds. Only `resources` is
/// supported (files and directories): every kustomization this reads has
/// nothing else, and a field added later fails here instead of being ignored.
fn kustomize(dir: &Path) -> Vec<Value> {
    let file = dir.join("kustomization.yaml");
    let k = one_doc(&file);
    for key in k.as_object().unwrap().keys() {
        assert!(
            ["apiVersion", "kind", "resources"].contains(&key.as_str()),
            "{}: `{key}` is not supported by this test's kustomize; extend it",
            file.display()
        );
    }
    let mut out = Vec::new();
    for r in k["resources"].as_array().expect("resources") {
        let path = dir.join(r.as_str().unwrap());
        if path.is_dir() {
            out.extend(kustomize(&path));
        } else {
            assert!(
                path.is_file(),
                "{}: {} does not exist",
                file.display(),
                path.display()
            );
            out.extend(yaml_docs(&path));
        }
    }
    out
}

/// Files of `dir` named in its kustomization.yaml, and the other YAML files
/// beside it: they must be the same.
fn assert_lists_every_file(dir: &Path) {
    let listed: BTreeSet<String> = one_doc(&dir.join("kustomization.yaml"))["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .filter(|r| !r.contains('/'))
        .collect();
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed,
        on_disk,
        "{}/kustomization.yaml lists every manifest",
        dir.display()
    );
}

fn the_crd() -> Value {
    one_doc(&repo("crds/teamaccess.dev_teamaccesses.yaml"))
}

/// A TeamAccess as the API server would judge it; the message names the file.
fn assert_valid_teamaccess(doc: &Value, whence: &str) {
    assert!(
        kind_is(doc, "teamaccess.dev/v1alpha1", "TeamAccess"),
        "{whence}: only TeamAccess objects here, found {}",
        doc["kind"]
    );
    let errors = teamaccess::api::validate::teamaccess(doc);
    assert!(
        errors.is_empty(),
        "{whence}: TeamAccess {} would be refused: {}",
        doc["metadata"]["name"],
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
}

// ---- every YAML file under config/

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_yaml_file_under_config_parses() {
    let mut files = Vec::new();
    yaml_files(&repo("config"), &mut files);
    let fleet = files
        .iter()
        .filter(|f| f.starts_with(repo("config/fleet")))
        .count();
    assert!(fleet >= 10, "config/fleet/ walked: {fleet} files");
    for f in &files {
        let docs = yaml_docs(f);
        assert!(!docs.is_empty(), "{}: no document", f.display());
        for (i, d) in docs.iter().enumerate() {
            assert!(d.is_object(), "{} document {i}: not a mapping", f.display());
        }
    }
}

// ---- Argo CD: an Application, typed, so that a misspelt field fails

/// A sync option Argo CD knows (`Name=value` in `syncOptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum SyncOption {
    ServerSideApply,
    CreateNamespace,
    SkipDryRunOnMissingResource,
    PruneLast,
    ApplyOutOfSyncOnly,
    RespectIgnoreDifferences,
    FailOnSharedResource,
    Replace,
    Validate,
    Prune,
    Delete,
    PrunePropagationPolicy,
}

impl SyncOption {
    /// `Name=value`, with the values Argo CD accepts for that name.
    fn parse(s: &str) -> Result<(SyncOption, String), String> {
        use SyncOption::*;
        let (name, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: a sync option is Name=value"))?;
        let option = match name {
            "ServerSideApply" => ServerSideApply,
            "CreateNamespace" => CreateNamespace,
            "SkipDryRunOnMissingResource" => SkipDryRunOnMissingResource,
            "PruneLast" => PruneLast,
            "ApplyOutOfSyncOnly" => ApplyOutOfSyncOnly,
            "RespectIgnoreDifferences" => RespectIgnoreDifferences,
            "FailOnSharedResource" => FailOnSharedResource,
            "Replace" => Replace,
            "Validate" => Validate,
            "Prune" => Prune,
            "Delete" => Delete,
            "PrunePropagationPolicy" => PrunePropagationPolicy,
            other => return Err(format!("{other:?} is not an Argo CD sync option")),
        };
        let allowed: &[&str] = match option {
            PrunePropagationPolicy => &["foreground", "background", "orphan"],
            Prune => &["false", "confirm"],
            Delete => &["false", "confirm"],
            _ => &["true", "false"],
        };
        if !allowed.contains(&value) {
            return Err(format!("{s:?}: {name} takes one of {allowed:?}"));
        }
        Ok((option, value.to_string()))
    }
}

fn sync_options<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<SyncOption, String>>, D::Error> {
    let raw: Option<Vec<String>> = Option::deserialize(d)?;
    raw.map(|list| {
        list.iter()
            .map(|s| SyncOption::parse(s).map_err(serde::de::Error::custom))
            .collect()
    })
    .transpose()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct Application {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: AppMetadata,
    spec: AppSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct AppMetadata {
    name: String,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    finalizers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct AppSpec {
    project: String,
    source: Option<Source>,
    sources: Option<Vec<Source>>,
    destination: Destination,
    sync_policy: Option<SyncPolicy>,
    ignore_differences: Option<Vec<Value>>,
    revision_history_limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct Source {
    #[serde(rename = "repoURL")]
    repo_url: String,
    target_revision: Option<String>,
    path: Option<String>,
    chart: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<String>,
    helm: Option<Helm>,
    kustomize: Option<Map<String, Value>>,
    directory: Option<Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct Helm {
    release_name: Option<String>,
    values_object: Option<Map<String, Value>>,
    values: Option<String>,
    value_files: Option<Vec<String>>,
    parameters: Option<Vec<HelmParameter>>,
    skip_crds: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct HelmParameter {
    name: String,
    value: String,
    force_string: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct Destination {
    server: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct SyncPolicy {
    automated: Option<Automated>,
    #[serde(default, deserialize_with = "sync_options")]
    sync_options: Option<BTreeMap<SyncOption, String>>,
    retry: Option<Retry>,
    managed_namespace_metadata: Option<ManagedNamespaceMetadata>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct Automated {
    prune: Option<bool>,
    self_heal: Option<bool>,
    allow_empty: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct Retry {
    limit: Option<i64>,
    backoff: Option<Backoff>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct Backoff {
    duration: Option<String>,
    factor: Option<u32>,
    max_duration: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct ManagedNamespaceMetadata {
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

impl Application {
    /// The Application Argo CD would accept: typed (unknown fields refused),
    /// one of source/sources, one of destination server/name.
    fn parse(v: &Value, whence: &str) -> Application {
        let app: Application = serde_path_to_error::deserialize(v.clone())
            .unwrap_or_else(|e| panic!("{whence}: not a valid Application: {e}"));
        if let Some(a) = &app.api_version {
            assert_eq!(a, "argoproj.io/v1alpha1", "{whence}");
        }
        if let Some(k) = &app.kind {
            assert_eq!(k, "Application", "{whence}");
        }
        assert!(
            teamaccess::access::naming::is_dns_subdomain(&app.metadata.name),
            "{whence}: metadata.name {:?} is not a valid object name",
            app.metadata.name
        );
        assert!(!app.spec.project.is_empty(), "{whence}: spec.project");
        assert!(
            app.spec.source.is_some() != app.spec.sources.is_some(),
            "{whence}: exactly one of spec.source and spec.sources"
        );
        for s in app.sources() {
            assert!(
                s.path.is_some() != s.chart.is_some() || s.reference.is_some(),
                "{whence}: a source has a path (Git) or a chart (Helm repository)"
            );
        }
        let d = &app.spec.destination;
        assert!(
            d.server.is_some() != d.name.is_some(),
            "{whence}: exactly one of destination.server and destination.name"
        );
        app
    }

    fn sources(&self) -> Vec<&Source> {
        self.spec
            .source
            .iter()
            .chain(self.spec.sources.iter().flatten())
            .collect()
    }

    fn wave(&self) -> i32 {
        wave(self.metadata.annotations.as_ref())
    }
}

const WAVE: &str = "argocd.argoproj.io/sync-wave";

/// A sync wave, 0 when not annotated (as Argo CD reads it).
fn wave(annotations: Option<&BTreeMap<String, String>>) -> i32 {
    annotations
        .and_then(|a| a.get(WAVE))
        .map(|w| {
            w.parse()
                .unwrap_or_else(|_| panic!("{WAVE}: {w:?} is not a number"))
        })
        .unwrap_or(0)
}

/// `{{param}}` placeholders of the cluster generator replaced by `params`;
/// one it does not provide fails (Argo CD would leave it in the name).
fn expand(v: &Value, params: &BTreeMap<&str, &str>, whence: &str) -> Value {
    match v {
        Value::String(s) => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(start) = rest.find("{{") {
                out.push_str(&rest[..start]);
                let end = rest[start..]
                    .find("}}")
                    .unwrap_or_else(|| panic!("{whence}: unclosed {{{{ in {s:?}"));
                let key = rest[start + 2..start + end].trim();
                let value = params.get(key).unwrap_or_else(|| {
                    panic!("{whence}: {{{{{key}}}}} is not a parameter of the cluster generator")
                });
                out.push_str(value);
                rest = &rest[start + end + 2..];
            }
            out.push_str(rest);
            Value::String(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| expand(i, params, whence)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, i)| (k.clone(), expand(i, params, whence)))
                .collect(),
        ),
        other => other.clone(),
    }
}

const APPSET: &str = "config/fleet/argocd/applicationset.yaml";

#[test]
fn the_applicationset_makes_one_valid_application_per_cluster_operator_first() {
    let path = repo(APPSET);
    let docs = yaml_docs(&path);
    let appsets: Vec<&Value> = docs
        .iter()
        .filter(|d| kind_is(d, "argoproj.io/v1alpha1", "ApplicationSet"))
        .collect();
    assert_eq!(appsets.len(), 1, "{APPSET}: one ApplicationSet");
    let appset = appsets[0];
    assert_eq!(appset["metadata"]["namespace"], "argocd");
    let generators = appset["spec"]["generators"].as_array().expect("generators");
    assert_eq!(generators.len(), 1);
    let clusters = generators[0]
        .get("clusters")
        .expect("the cluster generator");
    assert!(
        clusters["selector"]["matchLabels"]
            .as_object()
            .is_some_and(|m| !m.is_empty()),
        "only labelled clusters join the fleet"
    );

    // the template, for two clusters, as the ApplicationSet controller fills it in
    let template = &appset["spec"]["template"];
    let mut names = BTreeSet::new();
    for (name, server) in [
        ("prod-westeurope", "https://prod-westeurope.example.com:443"),
        ("staging", "https://10.0.0.1"),
    ] {
        let params = BTreeMap::from([("name", name), ("server", server)]);
        let whence = format!("{APPSET} spec.template for cluster {name}");
        let app = Application::parse(&expand(template, &params, &whence), &whence);
        assert!(
            app.metadata.name.contains(name),
            "{whence}: the name carries the cluster's"
        );
        names.insert(app.metadata.name.clone());
        assert_eq!(
            app.spec.destination.server.as_deref(),
            Some(server),
            "{whence}"
        );
        assert_eq!(app.metadata.namespace.as_deref(), Some("argocd"));
        assert!(
            app.metadata.finalizers.is_none(),
            "{whence}: deleting an Application must not cascade into revoking access"
        );
        let sync = app.spec.sync_policy.as_ref().expect("syncPolicy");
        let automated = sync.automated.as_ref().expect("automated sync");
        assert_eq!(automated.prune, Some(true));
        assert_eq!(automated.self_heal, Some(true));
        let options = sync.sync_options.as_ref().unwrap();
        assert_eq!(
            options
                .get(&SyncOption::ServerSideApply)
                .map(String::as_str),
            Some("true")
        );
        // the chart does not create its release namespace
        assert_eq!(
            options
                .get(&SyncOption::CreateNamespace)
                .map(String::as_str),
            Some("true")
        );
        let restricted = &sync.managed_namespace_metadata.as_ref().unwrap().labels;
        let namespace = one_doc(&repo("config/manager/namespace.yaml"));
        assert_eq!(
            json!(restricted),
            namespace["metadata"]["labels"],
            "the namespace Argo CD creates is labelled as config/manager's"
        );
        assert_eq!(
            app.spec.destination.namespace.as_deref(),
            namespace["metadata"]["name"].as_str()
        );
        assert!(sync.retry.as_ref().unwrap().limit.unwrap() > 0);
        assert_eq!(app.wave(), 0);

        let sources = app.sources();
        let chart = sources
            .iter()
            .find(|s| s.path.as_deref() == Some("charts/teamaccess"))
            .expect("a source for the operator's chart");
        let helm = chart.helm.as_ref().expect("helm");
        assert_eq!(helm.release_name.as_deref(), Some("teamaccess"));
        let schema: Value =
            serde_json::from_str(&read(&repo("charts/teamaccess/values.schema.json"))).unwrap();
        for key in helm.values_object.iter().flat_map(|v| v.keys()) {
            assert!(
                schema["properties"].get(key).is_some(),
                "{whence}: helm.valuesObject.{key} is not a value of the chart"
            );
        }
        let access = sources
            .iter()
            .find(|s| s.path.as_deref() != Some("charts/teamaccess"))
            .expect("a source for the TeamAccess objects");
        assert_eq!(sources.len(), 2);
        for s in &sources {
            assert!(
                repo(s.path.as_deref().unwrap()).is_dir(),
                "{whence}: {:?}",
                s.path
            );
            assert_eq!(s.repo_url, sources[0].repo_url, "one repository");
        }

        // the order: the chart is wave 0 (nothing in it carries a wave); the
        // TeamAccess objects come in a later wave of the same sync
        let templates = repo("charts/teamaccess/templates");
        for entry in std::fs::read_dir(&templates).unwrap() {
            let p = entry.unwrap().path();
            assert!(
                !read(&p).contains(WAVE),
                "{}: the chart is wave 0",
                p.display()
            );
        }
        let overlay = repo(access.path.as_deref().unwrap());
        let k = one_doc(&overlay.join("kustomization.yaml"));
        let annotations: BTreeMap<String, String> =
            serde_json::from_value(k["commonAnnotations"].clone()).expect("commonAnnotations");
        assert!(
            wave(Some(&annotations)) > 0,
            "{}: the TeamAccess objects sync after the chart",
            overlay.display()
        );
        assert_eq!(
            annotations
                .get("argocd.argoproj.io/sync-options")
                .map(String::as_str),
            Some("SkipDryRunOnMissingResource=true")
        );
        let mut plain = k.clone();
        plain.as_object_mut().unwrap().remove("commonAnnotations");
        let objects: Vec<Value> = plain["resources"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| kustomize(&overlay.join(r.as_str().unwrap())))
            .collect();
        assert!(!objects.is_empty());
        for o in &objects {
            assert_valid_teamaccess(o, &overlay.display().to_string());
        }
    }
    assert_eq!(
        names.len(),
        2,
        "one Application per cluster, each its own name"
    );

    // the project lets it place exactly what the chart and the objects are
    let project_name = template["spec"]["project"].as_str().unwrap();
    let project = docs
        .iter()
        .find(|d| kind_is(d, "argoproj.io/v1alpha1", "AppProject") && name_of(d) == project_name)
        .unwrap_or_else(|| panic!("{APPSET}: no AppProject {project_name}"));
    let listed = |key: &str| -> BTreeSet<(String, String)> {
        project["spec"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["group"].as_str().unwrap().to_string(),
                    e["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let cluster_kinds = listed("clusterResourceWhitelist");
    let namespaced_kinds = listed("namespaceResourceWhitelist");
    let (chart_kinds, chart_namespaces) = chart_objects();
    for (group, kind) in &chart_kinds {
        let entry = (group.clone(), kind.clone());
        assert!(
            cluster_kinds.contains(&entry) || namespaced_kinds.contains(&entry),
            "AppProject {project_name} does not allow the chart's {group}/{kind}"
        );
    }
    for needed in [("", "Namespace"), ("teamaccess.dev", "TeamAccess")] {
        assert!(
            cluster_kinds.contains(&(needed.0.to_string(), needed.1.to_string())),
            "AppProject {project_name} allows {needed:?}"
        );
    }
    let destinations: BTreeSet<&str> = project["spec"]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["namespace"].as_str().unwrap())
        .collect();
    for ns in &chart_namespaces {
        assert!(
            destinations.contains(ns.as_str()),
            "AppProject allows namespace {ns}"
        );
    }
    let repos: Vec<&str> = project["spec"]["sourceRepos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        repos,
        [template["spec"]["sources"][0]["repoURL"].as_str().unwrap()]
    );
}

/// The kinds (group, kind) the chart can create, from its templates and
/// crds/, and the namespaces it writes to (the release namespace being
/// teamaccess-system).
fn chart_objects() -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let mut kinds = BTreeSet::from([(
        "apiextensions.k8s.io".to_string(),
        "CustomResourceDefinition".to_string(),
    )]);
    let mut namespaces = BTreeSet::new();
    for entry in std::fs::read_dir(repo("charts/teamaccess/templates")).unwrap() {
        let text = read(&entry.unwrap().path());
        let mut group = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("apiVersion: ") {
                group = Some(v.rsplit_once('/').map(|(g, _)| g).unwrap_or("").to_string());
            } else if let Some(k) = line.strip_prefix("kind: ") {
                kinds.insert((group.take().expect("apiVersion before kind"), k.to_string()));
            } else if let Some(ns) = line.strip_prefix("  namespace: ") {
                let ns = if ns.contains(".Release.Namespace") {
                    "teamaccess-system"
                } else {
                    ns
                };
                namespaces.insert(ns.to_string());
            }
        }
    }
    assert!(
        kinds.len() > 5,
        "the chart's templates were read: {kinds:?}"
    );
    (kinds, namespaces)
}

#[test]
fn the_typed_application_refuses_a_misspelt_field() {
    let template = yaml_docs(&repo(APPSET))
        .into_iter()
        .find(|d| d["kind"] == "ApplicationSet")
        .unwrap()["spec"]["template"]
        .clone();
    let params = BTreeMap::from([("name", "c1"), ("server", "https://c1")]);
    let good = expand(&template, &params, "test");
    let parse =
        |v: &Value| serde_path_to_error::deserialize::<_, Application>(v.clone()).map(|_| ());
    parse(&good).expect("the template is valid");
    let mut typo = good.clone();
    let policy = typo["spec"]["syncPolicy"].as_object_mut().unwrap();
    let automated = policy.remove("automated").unwrap();
    policy.insert("automatic".into(), automated);
    let err = parse(&typo).unwrap_err().to_string();
    assert!(err.contains("automatic"), "{err}");
    let mut typo = good.clone();
    typo["spec"]["syncPolicy"]["syncOptions"] = json!(["ServerSideApply=yes"]);
    let err = parse(&typo).unwrap_err().to_string();
    assert!(err.contains("ServerSideApply"), "{err}");
    let mut typo = good.clone();
    typo["spec"]["syncPolicy"]["syncOptions"] = json!(["CreateNamespaces=true"]);
    assert!(parse(&typo).is_err());
    let mut typo = good;
    typo["spec"]["sources"][0]["repoUrl"] = typo["spec"]["sources"][0]["repoURL"].take();
    typo["spec"]["sources"][0]
        .as_object_mut()
        .unwrap()
        .remove("repoURL");
    assert!(parse(&typo).is_err());
    assert!(
        std::panic::catch_unwind(|| expand(&json!("x-{{nmae}}"), &params, "t")).is_err(),
        "an unknown generator parameter fails"
    );
}

#[test]
fn the_single_cluster_argo_cd_applications_are_valid_too() {
    let path = repo("config/gitops/argocd/application.yaml");
    let apps: Vec<Application> = yaml_docs(&path)
        .iter()
        .filter(|d| d["kind"] == "Application")
        .map(|d| Application::parse(d, &path.display().to_string()))
        .collect();
    assert_eq!(apps.len(), 2);
    assert!(apps[0].wave() < apps[1].wave());
}

// ---- Flux: a directory per cluster, the same Kustomizations, its own variables

const FLUX: &str = "config/fleet/flux";

struct FluxCluster {
    name: String,
    docs: Vec<Value>,
    vars: BTreeMap<String, String>,
}

fn flux_clusters() -> Vec<FluxCluster> {
    let dir = repo(&format!("{FLUX}/clusters"));
    let mut out: Vec<FluxCluster> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| {
            assert_lists_every_file(&p);
            let docs = kustomize(&p);
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            FluxCluster {
                name,
                vars: BTreeMap::new(),
                docs,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(out.len() >= 2, "{FLUX}/clusters: a directory per cluster");
    out
}

fn kustomizations(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| kind_is(d, "kustomize.toolkit.fluxcd.io/v1", "Kustomization"))
        .collect()
}

/// `${name}` replaced from `vars`, as Flux's postBuild substitution does; a
/// variable `vars` lacks is an error (Flux would put an empty string).
fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unclosed ${{ at {:?}", &rest[start..]))?;
        let name = &rest[start + 2..start + end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric());
        if !valid {
            return Err(format!("${{{name}}} is not a Flux variable name"));
        }
        out.push_str(
            vars.get(name)
                .ok_or_else(|| format!("${{{name}}} is not defined"))?,
        );
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[test]
fn flux_installs_the_operator_first_on_every_cluster_and_substitutes_its_variables() {
    let mut clusters = flux_clusters();
    let first_docs = clusters[0].docs.clone();
    for c in &mut clusters {
        let whence = format!("{FLUX}/clusters/{}", c.name);
        let ks = kustomizations(&c.docs);
        assert_eq!(ks.len(), 2, "{whence}: two Kustomizations");
        let sources: Vec<&Value> = c
            .docs
            .iter()
            .filter(|d| kind_is(d, "source.toolkit.fluxcd.io/v1", "GitRepository"))
            .collect();
        for k in &ks {
            let n = name_of(k);
            let spec = &k["spec"];
            assert_eq!(spec["sourceRef"]["kind"], "GitRepository", "{whence} {n}");
            assert!(
                sources
                    .iter()
                    .any(|s| name_of(s) == spec["sourceRef"]["name"]
                        && s["metadata"]["namespace"] == k["metadata"]["namespace"]),
                "{whence}: {n}'s sourceRef is a GitRepository of these files"
            );
            let path = spec["path"].as_str().unwrap();
            assert!(
                repo(path.trim_start_matches("./")).is_dir(),
                "{whence} {n}: {path}"
            );
            assert!(spec["timeout"].is_string(), "{whence} {n}: a bounded wait");
            assert_eq!(spec["prune"], true, "{whence} {n}");
        }
        let operator = ks
            .iter()
            .find(|k| k["spec"]["path"] == "./config/default")
            .unwrap_or_else(|| panic!("{whence}: a Kustomization for config/default"));
        assert_eq!(
            operator["spec"]["wait"], true,
            "{whence}: Ready only once the CRD is established and the Deployment rolled out"
        );
        let access = ks
            .iter()
            .find(|k| k["spec"]["path"] != "./config/default")
            .unwrap();
        // dependsOn names a Kustomization of these same files
        let depends: Vec<&Value> = access["spec"]["dependsOn"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        assert_eq!(depends.len(), 1, "{whence}");
        let on = depends[0]["name"].as_str().unwrap();
        let ns = depends[0]["namespace"]
            .as_str()
            .or(access["metadata"]["namespace"].as_str());
        assert!(
            ks.iter()
                .any(|k| name_of(k) == on && k["metadata"]["namespace"].as_str() == ns),
            "{whence}: dependsOn {on} is not a Kustomization here"
        );
        assert_eq!(
            on,
            name_of(operator),
            "{whence}: the access objects wait for the operator"
        );
        assert!(
            access["spec"]["wait"] == true
                || access["spec"]["healthChecks"]
                    .as_array()
                    .is_some_and(|h| !h.is_empty()),
            "{whence}: the TeamAccess objects are health-checked"
        );
        // substituteFrom: a ConfigMap of this cluster's directory
        let from = access["spec"]["postBuild"]["substituteFrom"]
            .as_array()
            .expect("postBuild.substituteFrom");
        assert_eq!(from.len(), 1);
        assert_eq!(from[0]["kind"], "ConfigMap");
        assert!(
            from[0].get("optional").is_none_or(|o| o == false),
            "{whence}: required"
        );
        let cm = c
            .docs
            .iter()
            .find(|d| {
                kind_is(d, "v1", "ConfigMap")
                    && name_of(d) == from[0]["name"]
                    && d["metadata"]["namespace"] == access["metadata"]["namespace"]
            })
            .unwrap_or_else(|| panic!("{whence}: no ConfigMap {} beside it", from[0]["name"]));
        c.vars = serde_json::from_value(cm["data"].clone())
            .unwrap_or_else(|e| panic!("{whence}: ConfigMap data are strings: {e}"));

        // the TeamAccess objects this cluster gets: every variable defined,
        // each object valid as the API server judges it
        let access_dir = repo(
            access["spec"]["path"]
                .as_str()
                .unwrap()
                .trim_start_matches("./"),
        );
        assert_lists_every_file(&access_dir);
        let k = one_doc(&access_dir.join("kustomization.yaml"));
        let mut names = BTreeSet::new();
        for f in k["resources"].as_array().unwrap() {
            let file = access_dir.join(f.as_str().unwrap());
            let text = read(&file);
            // kustomize parses the files before Flux substitutes
            docs_in(&file, &text);
            let text = substitute(&text, &c.vars)
                .unwrap_or_else(|e| panic!("{} for cluster {}: {e}", file.display(), c.name));
            for doc in docs_in(&file, &text) {
                assert_valid_teamaccess(
                    &doc,
                    &format!("{} for cluster {}", file.display(), c.name),
                );
                assert!(
                    names.insert(name_of(&doc).to_string()),
                    "{}: duplicate",
                    file.display()
                );
            }
        }
        assert!(!names.is_empty(), "{whence}: TeamAccess objects");

        // the same Kustomizations everywhere: only the variables differ
        let without_vars = |docs: &[Value]| -> Vec<Value> {
            docs.iter()
                .filter(|d| d["kind"] != "ConfigMap")
                .cloned()
                .collect()
        };
        assert_eq!(without_vars(&c.docs), without_vars(&first_docs), "{whence}");
    }
    let keys: Vec<BTreeSet<&String>> = clusters.iter().map(|c| c.vars.keys().collect()).collect();
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "every cluster defines the same variables: {keys:?}"
    );
    let envs: BTreeSet<&String> = clusters.iter().map(|c| &c.vars["cluster_env"]).collect();
    assert_eq!(envs.len(), clusters.len(), "the clusters differ");
}

#[test]
fn substitution_refuses_an_undefined_or_malformed_variable() {
    let vars = BTreeMap::from([("env".to_string(), "prod".to_string())]);
    assert_eq!(
        substitute("ns-${env}: ${env}", &vars).unwrap(),
        "ns-prod: prod"
    );
    assert!(
        substitute("${envv}", &vars)
            .unwrap_err()
            .contains("not defined")
    );
    assert!(substitute("${1env}", &vars).is_err());
    assert!(substitute("${env", &vars).is_err());
}

// ---- Azure Kubernetes Fleet Manager

const FLEET: &str = "config/fleet/fleet-manager";

/// One resource selector of a placement: GVK plus a name or labels.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)] // read by serde only: the fields listed are accepted, any other refused
struct ResourceSelector {
    group: String,
    version: String,
    kind: String,
    name: Option<String>,
    label_selector: Option<Value>,
}

fn selectors(placement: &Value) -> Vec<ResourceSelector> {
    serde_path_to_error::deserialize(placement["spec"]["resourceSelectors"].clone())
        .unwrap_or_else(|e| panic!("{FLEET}: {} resourceSelectors: {e}", name_of(placement)))
}

#[test]
fn fleet_places_the_crd_the_operator_and_every_teamaccess_in_one_ordered_placement() {
    let placement = yaml_docs(&repo(&format!("{FLEET}/placement.yaml")));
    let crps: Vec<&Value> = placement
        .iter()
        .filter(|d| {
            kind_is(
                d,
                "placement.kubernetes-fleet.io/v1",
                "ClusterResourcePlacement",
            )
        })
        .collect();
    assert_eq!(
        crps.len(),
        1,
        "one placement: Fleet orders kinds only inside one"
    );
    let crp = crps[0];
    assert!(
        crp["metadata"].get("namespace").is_none(),
        "a CRP is cluster-scoped"
    );
    let selected = selectors(crp);
    let crd = the_crd();
    let find = |group: &str, kind: &str| {
        selected
            .iter()
            .find(|s| s.group == group && s.kind == kind)
            .unwrap_or_else(|| panic!("the CRP selects no {group}/{kind}"))
    };
    // every TeamAccess, as it is: it is cluster-scoped
    assert_eq!(crd["spec"]["scope"], "Cluster");
    let ta = find("teamaccess.dev", "TeamAccess");
    assert_eq!(crd["spec"]["group"], ta.group.as_str());
    assert_eq!(crd["spec"]["names"]["kind"], ta.kind.as_str());
    assert!(
        crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == ta.version.as_str() && v["served"] == true),
        "TeamAccess {} is a served version",
        ta.version
    );
    assert!(
        ta.name.is_none() && ta.label_selector.is_none(),
        "every TeamAccess on the hub"
    );
    // the CRD, by its real name
    let c = find("apiextensions.k8s.io", "CustomResourceDefinition");
    assert_eq!(c.version, "v1");
    assert_eq!(c.name.as_deref(), crd["metadata"]["name"].as_str());

    // everything config/default installs reaches the members: cluster-scoped
    // objects by name, the operator's namespace with its contents, and the
    // events Role and RoleBinding in `default` by the ResourcePlacement
    let rps: Vec<&Value> = placement
        .iter()
        .filter(|d| {
            kind_is(
                d,
                "placement.kubernetes-fleet.io/v1beta1",
                "ResourcePlacement",
            )
        })
        .collect();
    let default = kustomize(&repo("config/default"));
    let namespaces: BTreeSet<&str> = default
        .iter()
        .filter(|d| d["kind"] == "Namespace")
        .map(name_of)
        .collect();
    for obj in &default {
        let (group, version) = match obj["apiVersion"].as_str().unwrap().rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", obj["apiVersion"].as_str().unwrap()),
        };
        let kind = obj["kind"].as_str().unwrap();
        let name = name_of(obj);
        let by = |s: &ResourceSelector| {
            s.group == group
                && s.version == version
                && s.kind == kind
                && s.name.as_deref() == Some(name)
        };
        match obj["metadata"]["namespace"].as_str() {
            None => assert!(
                selected.iter().any(by),
                "the CRP does not place {group}/{kind} {name} of config/default"
            ),
            Some(ns) if namespaces.contains(ns) => assert!(
                selected
                    .iter()
                    .any(|s| s.kind == "Namespace" && s.name.as_deref() == Some(ns)),
                "the CRP does not place namespace {ns}, which holds {kind} {name}"
            ),
            Some(ns) => assert!(
                rps.iter()
                    .any(|rp| rp["metadata"]["namespace"] == ns && selectors(rp).iter().any(by)),
                "no ResourcePlacement in {ns} places {kind} {name}"
            ),
        }
    }
    for rp in &rps {
        // a ResourcePlacement places into a namespace the members already
        // have; it must not be one a CRP would take over
        let ns = rp["metadata"]["namespace"].as_str().unwrap();
        assert!(!namespaces.contains(ns), "{ns}");
        assert_eq!(
            rp["spec"]["policy"], crp["spec"]["policy"],
            "the same clusters"
        );
    }
    // the same clusters as the other engines: labelled teamaccess.dev/enabled
    let terms = &crp["spec"]["policy"]["affinity"]["clusterAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["clusterSelectorTerms"];
    assert_eq!(
        terms[0]["labelSelector"]["matchLabels"],
        json!({"teamaccess.dev/enabled": "true"})
    );
    let policy_type = crp["spec"]["policy"]["placementType"].as_str().unwrap();
    assert!(["PickAll", "PickN", "PickFixed"].contains(&policy_type));

    // the hub holds the placements, config/default and the TeamAccess objects
    let hub = kustomize(&repo(FLEET));
    for wanted in [&crd, crp] {
        assert!(hub.contains(wanted), "the hub gets {}", name_of(wanted));
    }
    let hub_teamaccess: Vec<&Value> = hub.iter().filter(|d| d["kind"] == "TeamAccess").collect();
    assert!(!hub_teamaccess.is_empty());
    for t in hub_teamaccess {
        assert_valid_teamaccess(t, FLEET);
    }
}
