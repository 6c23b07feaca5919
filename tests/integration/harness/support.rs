//! Test support: the control plane `make test` started, isolated namespaces,
//! effective-access checks, ServiceAccount kubeconfigs and audit-log counts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub const ENV_KUBECONFIG: &str = "TEAMACCESS_TEST_KUBECONFIG";
pub const ENV_AUDIT_LOG: &str = "TEAMACCESS_TEST_AUDIT_LOG";

fn env_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "{var} is not set: the integration tests need a real control plane.\n\
             Run `make test` (it starts one and stops it afterwards), or start one with\n\
             `make dev-cluster`, `source` the env file it prints, and run\n\
             `cargo test --test integration`."
        ),
    }
}

/// The test control plane, as the admin.
pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    /// Its API server's audit log.
    pub audit_log: PathBuf,
}

/// A client for the control plane `make test` started. A new one per test:
/// a kube Client lives on the runtime that made it, and each test has its own.
pub async fn cluster() -> Cluster {
    cluster_at(env_path(ENV_KUBECONFIG), env_path(ENV_AUDIT_LOG)).await
}

/// A client for the control plane with this admin kubeconfig and audit log
/// (a fault test's own, started by hack/control-plane.sh in its folder).
pub async fn cluster_at(kubeconfig: PathBuf, audit_log: PathBuf) -> Cluster {
    let client = client_for(&kubeconfig).await;
    Cluster {
        client,
        kubeconfig,
        audit_log,
    }
}

/// Runs `setup` once per control plane (told apart by kubeconfig) and `what`:
/// the `integration` target shares one control plane between its tests, the
/// `faults` target starts one per test in the same process.
pub async fn once<F, Fut>(cluster: &Cluster, what: &'static str, setup: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    static DONE: tokio::sync::Mutex<std::collections::BTreeSet<(PathBuf, &'static str)>> =
        tokio::sync::Mutex::const_new(std::collections::BTreeSet::new());
    let mut done = DONE.lock().await;
    let key = (cluster.kubeconfig.clone(), what);
    if !done.contains(&key) {
        setup().await;
        done.insert(key);
    }
}

pub async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client")
}

/// A name unique to this test run and process, valid as a DNS label.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{:x}{:x}-{}",
        std::process::id() % 0xfff,
        nanos % 0xfffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Creates a namespace of its own for a test, with `labels`.
pub async fn namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = unique(prefix);
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.clone());
    ns.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("teamaccess-test".to_string(), "true".to_string())])
            .collect(),
    );
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
    name
}

/// Creates `n` namespaces `{prefix}-000`… labelled `label=true`, 16 at a time.
pub async fn namespaces(cluster: &Cluster, prefix: &str, n: usize, label: &str) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    let api = Api::<Namespace>::all(cluster.client.clone());
    futures::stream::iter(names.clone())
        .map(|name| {
            let api = api.clone();
            async move {
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some([(label.to_string(), "true".to_string())].into()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                api.create(&PostParams::default(), &ns).await.map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating namespaces");
    names
}

/// An access question: "may a member of `group` do `verb` on `resource` in `namespace`?"
/// `resource` is written as kubectl does: `pods`, `pods/log`, `deployments.apps`,
/// `deployments.apps/scale`.
pub async fn can(
    client: &Client,
    group: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    can_named(client, group, verb, resource, namespace, None).await
}

/// "may user `user`, in no group but `system:authenticated`, do `verb` on
/// `resource` in `namespace`?"
pub async fn can_user(
    client: &Client,
    user: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let who = Identity { user, groups: &[] };
    may(client, &who, verb, resource, namespace, None).await
}

pub async fn can_named(
    client: &Client,
    group: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    let who = Identity {
        user: "someone@example.com",
        groups: &[group],
    };
    may(client, &who, verb, resource, namespace, name).await
}

/// Who asks, as the authenticator would present them (`system:authenticated`
/// is added to `groups`).
pub struct Identity<'a> {
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

/// An access question for exactly `who`: a subject added to a binding by
/// name (a User, a ServiceAccount) is asked about under that name.
pub async fn may(
    client: &Client,
    who: &Identity<'_>,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: Option<&str>,
) -> bool {
    let (res, sub) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_string())),
        None => (resource, None),
    };
    let (res, api_group) = match res.split_once('.') {
        Some((r, g)) => (r, g),
        None => (res, ""),
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user.into()),
            groups: Some(
                (who.groups.iter().map(|g| g.to_string()))
                    .chain(["system:authenticated".to_string()])
                    .collect(),
            ),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.into()),
                verb: Some(verb.into()),
                group: Some(api_group.into()),
                resource: Some(res.into()),
                subresource: sub,
                name: name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.map(|s| s.allowed).unwrap_or(false)
}

/// Waits until `api` holds no object `name`.
pub async fn absent<K>(api: &Api<K>, name: &str, what: &str, limit: Duration)
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(what, limit, || async {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a
/// token valid for `valid_for` (ask for longer than any test run), and nothing else.
pub async fn service_account_kubeconfig(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    valid_for: Duration,
) -> PathBuf {
    let sa = Api::<ServiceAccount>::namespaced(cluster.client.clone(), namespace);
    let mut account = ServiceAccount::default();
    account.metadata.name = Some(name.into());
    match sa.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating ServiceAccount {namespace}/{name}: {e}"),
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(valid_for.as_secs() as i64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token: TokenRequest = sa
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    let token = token.status.and_then(|s| s.token).expect("a token");

    let admin = Kubeconfig::read_from(&cluster.kubeconfig).unwrap();
    let c = admin.clusters[0].cluster.as_ref().unwrap();
    let server = c.server.clone().unwrap();
    let ca = c.certificate_authority_data.clone().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
    );
    let dir = cluster
        .kubeconfig
        .parent()
        .unwrap()
        .join("test-kubeconfigs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{namespace}-{name}.kubeconfig"));
    std::fs::write(&path, text).unwrap();
    path
}

pub use super::audit::AuditEvent;

/// Every request received in `[from, to]`, from the audit log. Call
/// [`audit_barrier`] first to be sure the log holds all of them.
pub fn audit_events(cluster: &Cluster, from: Timestamp, to: Timestamp) -> Vec<AuditEvent> {
    super::audit::read(&cluster.audit_log)
        .expect("reading the audit log")
        .into_iter()
        .filter(|e| e.received >= from && e.received <= to)
        .collect()
}

/// Write requests `user` made in `[from, to]`. Waits until a marker write made
/// after `to` shows in the log, so every earlier request has been logged.
pub async fn writes_by(
    cluster: &Cluster,
    user: &str,
    from: Timestamp,
    to: Timestamp,
) -> Vec<AuditEvent> {
    (requests_by(cluster, user, from, to).await)
        .into_iter()
        .filter(AuditEvent::is_write)
        .collect()
}

/// Every request (reads, watches and writes) `user` made in `[from, to]`,
/// once the audit log holds all of them: a loop left hot shows here even
/// when it writes nothing.
pub async fn requests_by(
    cluster: &Cluster,
    user: &str,
    from: Timestamp,
    to: Timestamp,
) -> Vec<AuditEvent> {
    audit_barrier(cluster).await;
    audit_events(cluster, from, to)
        .into_iter()
        .filter(|e| e.user == user)
        .collect()
}

/// Makes one write as the admin and waits until the audit log holds it.
pub async fn audit_barrier(cluster: &Cluster) {
    let name = unique("audit-marker");
    let cms = Api::<ConfigMap>::namespaced(cluster.client.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.clone());
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("marker write");
    for _ in 0..200 {
        let text = std::fs::read_to_string(&cluster.audit_log).unwrap_or_default();
        if text.contains(&format!("\"name\":\"{name}\"")) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the audit log never recorded marker {name}");
}

/// Polls `check` until it returns Some, or panics with `what` after `limit`.
/// Tests converge on events; the limit only turns a hang into a clear failure.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `program` with `args`, feeding it `stdin`; its whole output.
pub fn run_tool(program: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing to {program}: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"))
}

/// A client acting as `user` in `groups` (and `system:authenticated`), by
/// impersonation: a member of an Entra group, as the API server sees one.
pub async fn member_of(cluster: &Cluster, user: &str, groups: &[&str]) -> Client {
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&cluster.kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    config.auth_info.impersonate = Some(user.into());
    config.auth_info.impersonate_groups = Some(
        (groups.iter().map(|g| g.to_string()))
            .chain(["system:authenticated".to_string()])
            .collect(),
    );
    Client::try_from(config).unwrap()
}
