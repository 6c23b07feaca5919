//! Runs the real operator binary under its own ServiceAccount, bound to
//! exactly the roles of config/rbac, never as an admin; and helpers to drive
//! TeamAccess objects and read what the operator reports.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::discovery::pinned_kind;
use serde_json::{Value, json};
use teamaccess::api::teamaccess::TeamAccess;

use crate::harness::support::{self, Cluster};

pub const OPERATOR_NS: &str = "teamaccess-system";
/// The label each test's operator selects its TeamAccess objects by.
pub const TEST_LABEL: &str = "teamaccess-test/operator";

pub const CRD_NAME: &str = "teamaccesses.teamaccess.dev";

/// Installs the committed CRD (crds/, what users apply) once per control plane.
pub async fn install_crd(cluster: &Cluster) {
    support::once(cluster, "crd", || async {
        let text = include_str!("../../../crds/teamaccess.dev_teamaccesses.yaml");
        let crd: CustomResourceDefinition = serde_saphyr::from_str(text).expect("crds/ parses");
        let api = Api::<CustomResourceDefinition>::all(cluster.client.clone());
        api.patch(
            CRD_NAME,
            &PatchParams::apply("teamaccess-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the API server accepts the CRD");
        support::eventually(
            "the CRD to be Established",
            std::time::Duration::from_secs(30),
            || async {
                let crd = api.get(CRD_NAME).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    })
    .await;
}

/// The CRD, the operator's namespace and config/rbac, once per control plane.
pub async fn install(cluster: &Cluster) {
    install_crd(cluster).await;
    support::once(cluster, "operator", || async {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(OPERATOR_NS.into());
        match Api::<Namespace>::all(cluster.client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating {OPERATOR_NS}: {e}"),
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/rbac");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "kustomization.yaml" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_saphyr::from_multiple::<DynamicObject>(&text).unwrap() {
                let gvk =
                    kube::core::GroupVersionKind::try_from(doc.types.as_ref().unwrap()).unwrap();
                let (ar, caps) = pinned_kind(&cluster.client, &gvk).await.unwrap();
                let api: Api<DynamicObject> = match (&doc.metadata.namespace, caps.scope) {
                    (Some(ns), _) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
                    (None, _) => Api::all_with(cluster.client.clone(), &ar),
                };
                api.patch(
                    &doc.metadata.name.clone().unwrap(),
                    &PatchParams::apply("teamaccess-tests").force(),
                    &Patch::Apply(&doc),
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
        }
    })
    .await;
}

fn binding_to(
    role_kind: &str,
    role: &str,
    name: &str,
    namespace: Option<&str>,
    sa: &str,
) -> RoleBinding {
    RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: namespace.map(Into::into),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: role_kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(OPERATOR_NS.into()),
            api_group: None,
        }]),
    }
}

/// A running operator for one test.
pub struct Operator {
    /// The value of [`TEST_LABEL`] its TeamAccess objects carry.
    pub id: String,
    /// Its user name, as the audit log records it.
    pub user: String,
    pub http: String,
    pub log: PathBuf,
    child: std::process::Child,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Operator {
    /// An operator of its own for one test, leading at once.
    pub async fn start(cluster: &Cluster, name: &str, extra: &[&str]) -> Operator {
        let id = support::unique(name);
        let op = Operator::spawn(cluster, &id, &id, extra).await;
        op.wait_for_log("the operator to lead", "leading: reconciling")
            .await;
        op
    }

    /// One replica of the operator whose TeamAccess objects and lease are
    /// named by `id`; replicas of one `id` share both, each under its own
    /// ServiceAccount (`replica`) so the audit log tells their writes apart.
    /// Returns once it serves HTTP, leader or not.
    pub async fn spawn(cluster: &Cluster, id: &str, replica: &str, extra: &[&str]) -> Operator {
        Operator::spawn_as(cluster, id, replica, "teamaccess-manager", extra).await
    }

    /// As [`Operator::spawn`], bound to `cluster_role` instead of config/rbac's
    /// ClusterRole (for tests of what happens when a permission is missing).
    pub async fn spawn_as(
        cluster: &Cluster,
        id: &str,
        replica: &str,
        cluster_role: &str,
        extra: &[&str],
    ) -> Operator {
        Operator::spawn_with(cluster, id, replica, cluster_role, extra, &[]).await
    }

    /// As [`Operator::spawn_as`], with more environment variables (failpoints).
    pub async fn spawn_with(
        cluster: &Cluster,
        id: &str,
        replica: &str,
        cluster_role: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        Operator::spawn_full(cluster, id, replica, cluster_role, None, extra, env).await
    }

    /// As [`Operator::spawn_with`] under config/rbac's ClusterRole, speaking
    /// to the API server at `server` (a proxy in front of it) when given.
    pub async fn spawn_via(
        cluster: &Cluster,
        id: &str,
        replica: &str,
        server: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let role = "teamaccess-manager";
        Operator::spawn_full(cluster, id, replica, role, server, extra, env).await
    }

    async fn spawn_full(
        cluster: &Cluster,
        id: &str,
        replica: &str,
        cluster_role: &str,
        server: Option<&str>,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        install(cluster).await;
        let sa = format!("op-{replica}");
        let id = id.to_string();
        let replica = replica.to_string();
        // its own ServiceAccount, bound to exactly config/rbac's roles, so the
        // audit log can tell this operator's writes from every other's
        let crbs = Api::<ClusterRoleBinding>::all(cluster.client.clone());
        let crb = ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(format!("teamaccess-manager-{replica}")),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: cluster_role.into(),
            },
            subjects: binding_to("ClusterRole", "x", "x", None, &sa).subjects,
        };
        crbs.create(&PostParams::default(), &crb).await.unwrap();
        for (ns, role) in [
            ("default", "teamaccess-events"),
            (OPERATOR_NS, "teamaccess-leader-election"),
        ] {
            Api::<RoleBinding>::namespaced(cluster.client.clone(), ns)
                .create(
                    &PostParams::default(),
                    &binding_to("Role", role, &format!("{role}-{replica}"), Some(ns), &sa),
                )
                .await
                .unwrap();
        }
        let kubeconfig = support::service_account_kubeconfig(
            cluster,
            OPERATOR_NS,
            &sa,
            Duration::from_secs(6 * 3600),
        )
        .await;
        if let Some(server) = server {
            let text = std::fs::read_to_string(&kubeconfig).unwrap();
            let text = (text.lines())
                .map(|l| match l.trim_start().strip_prefix("server: ") {
                    Some(_) => format!("    server: {server}"),
                    None => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n");
            std::fs::write(&kubeconfig, text + "\n").unwrap();
        }
        let log = kubeconfig.with_extension("log");
        let stderr = std::fs::File::create(&log).unwrap();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--selector".into(),
            format!("{TEST_LABEL}={id}"),
            "--http-address".into(),
            "127.0.0.1:0".into(),
            "--leader-election-id".into(),
            format!("lease-{id}"),
            "--log-format".into(),
            "json".into(),
            "--forbidden-grace".into(),
            "3s".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_teamaccess"))
            .args(&args)
            .env("RUST_LOG", "info,kube=warn")
            .envs(env.iter().copied())
            .stderr(stderr)
            .spawn()
            .expect("starting teamaccess run");
        let mut op = Operator {
            id,
            user: format!("system:serviceaccount:{OPERATOR_NS}:{sa}"),
            http: String::new(),
            log,
            child,
        };
        let log = op.log.clone();
        op.http = support::eventually(
            "the operator to serve HTTP",
            Duration::from_secs(60),
            || {
                let log = log.clone();
                async move {
                    let lines = log_lines(&log);
                    if let Some(fatal) = lines.iter().find(|l| l["level"] == "ERROR") {
                        panic!("the operator failed: {fatal}");
                    }
                    lines
                        .iter()
                        .find_map(|l| l["address"].as_str().map(String::from))
                }
            },
        )
        .await;
        op
    }

    /// Waits until the operator logs `message`.
    pub async fn wait_for_log(&self, what: &str, message: &str) {
        support::eventually(what, Duration::from_secs(60), || async {
            let lines = self.log_lines();
            if let Some(fatal) = lines.iter().find(|l| l["level"] == "ERROR") {
                panic!("the operator failed: {fatal}");
            }
            lines
                .iter()
                .any(|l| l["message"].as_str() == Some(message))
                .then_some(())
        })
        .await;
    }

    pub fn logged(&self, message: &str) -> bool {
        self.log_lines()
            .iter()
            .any(|l| l["message"].as_str() == Some(message))
    }

    /// Its process id, to read what the kernel knows of it (/proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once, as a crash or a node loss would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process (SIGSTOP) without ending it, so a test can make a
    /// change and see its effect before the operator reacts.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// Sends SIGTERM and waits for the process to end; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().ok().and_then(|s| s.code())
    }

    /// Waits for the process to end by itself; returns its exit code.
    pub async fn exited(&mut self, within: Duration) -> Option<i32> {
        let child = &mut self.child;
        support::eventually("the operator to exit", within, || {
            let status = child.try_wait().ok().flatten();
            async move { status.map(|s| s.code()) }
        })
        .await
    }

    /// GET `path` on the operator's HTTP endpoint: (status code, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(&self.http)
            .await
            .expect("connect");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.http
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let code = response
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// Labels that put a TeamAccess in this operator's hands.
    pub fn labels(&self) -> Value {
        json!({ TEST_LABEL: self.id })
    }

    pub fn log_lines(&self) -> Vec<Value> {
        log_lines(&self.log)
    }
}

pub fn log_lines(path: &PathBuf) -> Vec<Value> {
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

pub fn teamaccesses(cluster: &Cluster) -> Api<TeamAccess> {
    Api::all(cluster.client.clone())
}

/// Creates or updates TeamAccess `name` (server-side apply, as a person's
/// `kubectl apply --server-side` would), in `op`'s hands.
pub async fn apply(cluster: &Cluster, op: &Operator, name: &str, spec: Value) -> TeamAccess {
    let body = json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "metadata": {"name": name, "labels": op.labels()},
        "spec": spec,
    });
    teamaccesses(cluster)
        .patch(
            name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| panic!("applying TeamAccess {name}: {e}"))
}

/// The commonest setup: `group` gets `tier` in namespace `ns` through
/// TeamAccess `name`; returns once it is Ready (Applied).
pub async fn grant(
    cluster: &Cluster,
    op: &Operator,
    name: &str,
    group: &str,
    tier: &str,
    ns: &str,
) -> TeamAccess {
    apply(
        cluster,
        op,
        name,
        json!({"groups": [{"id": group}], "grants": [{"tier": tier, "namespaces": [ns]}]}),
    )
    .await;
    ready(cluster, name, "Applied").await
}

pub fn condition<'a>(
    ta: &'a TeamAccess,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ta.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// Waits until the status describes the current generation and `pred` holds.
pub async fn status_until(
    cluster: &Cluster,
    name: &str,
    what: &str,
    pred: impl Fn(&TeamAccess) -> bool,
) -> TeamAccess {
    let api = teamaccesses(cluster);
    let pred = &pred;
    support::eventually(
        &format!("TeamAccess {name}: {what}"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move {
                let ta = api.get(name).await.ok()?;
                let current = ta.status.as_ref()?.observed_generation == ta.metadata.generation;
                (current && pred(&ta)).then_some(ta)
            }
        },
    )
    .await
}

/// Waits for Ready=True with `reason` for the current generation.
pub async fn ready(cluster: &Cluster, name: &str, reason: &str) -> TeamAccess {
    status_until(cluster, name, &format!("Ready=True ({reason})"), |ta| {
        condition(ta, "Ready").is_some_and(|c| c.status == "True" && c.reason == reason)
    })
    .await
}

/// Events the operator recorded about TeamAccess `name` with `reason`.
pub async fn events(cluster: &Cluster, name: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(cluster.client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

/// Waits until an event with `reason` about `name` has a note containing `needle`.
pub async fn event_with(cluster: &Cluster, name: &str, reason: &str, needle: &str) -> Event {
    support::eventually(
        &format!("a {reason} event about {name} mentioning {needle:?}"),
        Duration::from_secs(30),
        || async {
            events(cluster, name, reason)
                .await
                .into_iter()
                .find(|e| e.note.as_deref().unwrap_or_default().contains(needle))
        },
    )
    .await
}

/// Waits until TeamAccess `name` no longer exists (its finalizer has run).
pub async fn gone(cluster: &Cluster, name: &str) {
    let api = teamaccesses(cluster);
    support::eventually(
        &format!("TeamAccess {name} to be gone"),
        Duration::from_secs(60),
        || {
            let api = api.clone();
            async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
        },
    )
    .await;
}
