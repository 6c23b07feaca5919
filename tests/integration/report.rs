//! `teamaccess report`, the real binary, under a ServiceAccount bound only to
//! config/rbac-report's read-only ClusterRole, against grants made by the real
//! operator and bindings made by hand. The control plane is shared with tests
//! running at the same time: every assertion is about this test's own
//! namespaces and subjects.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use teamaccess::access::tiers::{self, Tier};

use crate::operator::{self, Operator};
use crate::support::{self, Cluster};

/// The team's group, given a name in the TeamAccess.
const DEVS: &str = "5d0c3a9e-7b21-4c6f-8e13-2a4b6c8d0e1f";
/// Holds cluster-admin and is not allowed to.
const ROOT: &str = "7e1f5b3a-9c42-4d8e-a017-3b5c7d9e1f20";
/// The break-glass group, allowed.
const GLASS: &str = "8f2a6c4b-0d53-4e9f-b128-4c6d8e0f2a31";

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        kind: kind.into(),
        name: name.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    }
}

async fn bind(cluster: &Cluster, ns: &str, name: &str, role: RoleRef, subjects: Vec<Subject>) {
    let rb = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        role_ref: role,
        subjects: Some(subjects),
    };
    Api::<RoleBinding>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &rb)
        .await
        .unwrap_or_else(|e| panic!("RoleBinding {ns}/{name}: {e}"));
}

async fn bind_cluster(cluster: &Cluster, name: &str, role: &str, subjects: Vec<Subject>) {
    let crb = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: role_ref("ClusterRole", role),
        subjects: Some(subjects),
    };
    Api::<ClusterRoleBinding>::all(cluster.client.clone())
        .create(&PostParams::default(), &crb)
        .await
        .unwrap_or_else(|e| panic!("ClusterRoleBinding {name}: {e}"));
}

/// config/rbac-report's ClusterRole, as shipped.
async fn install_report_role(cluster: &Cluster) {
    let text = include_str!("../../config/rbac-report/cluster_role.yaml");
    let role: ClusterRole = serde_saphyr::from_str(text).expect("config/rbac-report parses");
    Api::<ClusterRole>::all(cluster.client.clone())
        .patch(
            "teamaccess-report",
            &PatchParams::apply("teamaccess-tests").force(),
            &Patch::Apply(&role),
        )
        .await
        .expect("applying config/rbac-report");
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn report(kubeconfig: &Path, args: &[&str]) -> Out {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_teamaccess"))
        .arg("report")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        // the admin kubeconfig of the test environment must play no part
        .env_remove("KUBECONFIG")
        .output()
        .expect("running teamaccess report");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn grants<'a>(doc: &'a Value, namespace: &str) -> Vec<&'a Value> {
    doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["namespace"] == namespace)
        .flat_map(|g| g["grants"].as_array().unwrap())
        .collect()
}

fn by_binding<'a>(grants: &[&'a Value], name: &str) -> Vec<&'a Value> {
    grants
        .iter()
        .copied()
        .filter(|g| g["binding"]["name"] == name)
        .collect()
}

fn kinds(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn report_lists_grants_and_findings_with_read_access_only() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "report", &[]).await;
    let dev = support::namespace(&cluster.client, "report-dev", &[]).await;
    let ops = support::namespace(&cluster.client, "report-ops", &[]).await;
    let ta = format!("report-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &ta,
        json!({
            "groups": [{"id": DEVS, "name": "report-devs"}],
            "grants": [
                {"tier": "Writer", "namespaces": [dev]},
                {"tier": "Admin", "namespaces": [ops]},
            ],
        }),
    )
    .await;
    operator::ready(&cluster, &ta, "Applied").await;

    // by hand: a copy of the Reader tier for the team's group (outside
    // teamaccess), a user, everyone, a group by display name, cluster-admin
    let reader = Role {
        metadata: ObjectMeta {
            name: Some("hand-reader".into()),
            namespace: Some(dev.clone()),
            ..Default::default()
        },
        rules: Some(tiers::rules(Tier::Reader, &BTreeSet::new(), &[])),
    };
    Api::<Role>::namespaced(cluster.client.clone(), &dev)
        .create(&PostParams::default(), &reader)
        .await
        .unwrap();
    let c = &cluster;
    bind(
        c,
        &dev,
        "hand-dup",
        role_ref("Role", "hand-reader"),
        vec![subject("Group", DEVS)],
    )
    .await;
    bind(
        c,
        &dev,
        "user-edit",
        role_ref("ClusterRole", "edit"),
        vec![subject("User", "alice@example.com")],
    )
    .await;
    bind(
        c,
        &dev,
        "everyone-view",
        role_ref("ClusterRole", "view"),
        vec![subject("Group", "system:authenticated")],
    )
    .await;
    bind(
        c,
        &ops,
        "named-group",
        role_ref("ClusterRole", "view"),
        vec![subject("Group", "Report-Devs")],
    )
    .await;
    let root = support::unique("report-root");
    let glass = support::unique("report-glass");
    bind_cluster(c, &root, "cluster-admin", vec![subject("Group", ROOT)]).await;
    bind_cluster(c, &glass, "cluster-admin", vec![subject("Group", GLASS)]).await;

    // the reader: a ServiceAccount bound to config/rbac-report only
    install_report_role(c).await;
    let reader_binding = support::unique("report-reader");
    let sa = "report-reader";
    bind_cluster(
        c,
        &reader_binding,
        "teamaccess-report",
        vec![Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(dev.clone()),
            api_group: None,
        }],
    )
    .await;
    let kubeconfig =
        support::service_account_kubeconfig(c, &dev, sa, Duration::from_secs(3600)).await;
    let only = format!("{dev},{ops}");
    let base = [
        "--namespaces",
        only.as_str(),
        "--allow-cluster-admin",
        GLASS,
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    let started = Timestamp::now();
    // RBAC reaches the authorizer a moment after the binding is written
    let json_out = support::eventually(
        "report to run under the read-only role",
        Duration::from_secs(30),
        || async {
            let args = with(&["--format", "json"]);
            let out = report(&kubeconfig, &as_str(&args));
            if out.code != Some(0) {
                // shown when the wait times out
                eprintln!("report exited {:?}: {}", out.code, out.stderr);
            }
            (out.code == Some(0)).then_some(out.stdout)
        },
    )
    .await;
    let finished = Timestamp::now();
    let doc: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(doc["by"], "namespace");

    let in_dev = grants(&doc, &dev);
    let managed = by_binding(&in_dev, &teamaccess::access::naming::object_name(&ta));
    assert_eq!(managed.len(), 1, "{in_dev:#?}");
    let m = managed[0];
    assert_eq!(m["source"], "TeamAccess");
    assert_eq!(m["access"], "Writer");
    assert_eq!(m["subject"]["name"], DEVS);
    assert_eq!(m["subject"]["displayName"], "report-devs");
    assert_eq!(
        m["teamAccess"],
        json!({"name": ta, "grant": 0, "validUntil": null})
    );
    assert!(kinds(m).is_empty());

    let dup = by_binding(&in_dev, "hand-dup")[0];
    assert_eq!(dup["source"], "RoleBinding");
    assert_eq!(
        dup["access"], "Reader",
        "a hand-made copy of a tier reads as that tier"
    );
    assert_eq!(dup["subject"]["displayName"], "report-devs");
    assert_eq!(kinds(dup), ["UnmanagedDuplicate"]);
    let user = by_binding(&in_dev, "user-edit")[0];
    assert_eq!(user["access"], "custom");
    assert_eq!(user["role"], json!({"kind": "ClusterRole", "name": "edit"}));
    assert_eq!(kinds(user), ["UserSubject"]);
    assert_eq!(
        kinds(by_binding(&in_dev, "everyone-view")[0]),
        ["BroadSubject"]
    );

    let in_ops = grants(&doc, &ops);
    let admin = by_binding(&in_ops, &teamaccess::access::naming::object_name(&ta))[0];
    assert_eq!(admin["access"], "Admin");
    assert_eq!(kinds(admin), ["AdminWithoutExpiry"]);
    assert_eq!(
        kinds(by_binding(&in_ops, "named-group")[0]),
        ["NonEntraGroup"]
    );

    // cluster-wide rows once, as "*", not once per namespace
    let cluster_wide = grants(&doc, "*");
    assert_eq!(
        kinds(by_binding(&cluster_wide, &root)[0]),
        ["ClusterAdminBinding"]
    );
    assert!(
        kinds(by_binding(&cluster_wide, &glass)[0]).is_empty(),
        "allow-listed"
    );
    assert_eq!(by_binding(&cluster_wide, &glass)[0]["clusterWide"], true);
    let ours = |f: &&Value| {
        f["namespace"] == dev.as_str()
            || f["namespace"] == ops.as_str()
            || f["binding"]["name"] == root.as_str()
    };
    let found: BTreeSet<(String, String)> = (doc["findings"].as_array().unwrap().iter())
        .filter(ours)
        .map(|f| {
            (
                f["kind"].as_str().unwrap().into(),
                f["severity"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expect = [
        ("AdminWithoutExpiry", "low"),
        ("BroadSubject", "high"),
        ("ClusterAdminBinding", "high"),
        ("NonEntraGroup", "medium"),
        ("UnmanagedDuplicate", "medium"),
        ("UserSubject", "medium"),
    ]
    .map(|(k, s)| (k.to_string(), s.to_string()));
    assert_eq!(found, BTreeSet::from(expect));

    // read access only, and each kind listed (no watch, no get per object)
    support::audit_barrier(c).await;
    let user_name = format!("system:serviceaccount:{dev}:{sa}");
    let requests: Vec<_> = support::audit_events(c, started, finished)
        .into_iter()
        .filter(|e| e.user == user_name)
        .collect();
    let allowed: Vec<_> = requests.iter().filter(|e| e.code == 200).collect();
    assert!(!allowed.is_empty());
    for e in &requests {
        assert_eq!(e.verb, "list", "{e:?}");
    }
    let listed: BTreeSet<&str> = allowed.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(
        listed,
        BTreeSet::from([
            "clusterrolebindings",
            "clusterroles",
            "namespaces",
            "rolebindings",
            "roles",
            "teamaccesses"
        ])
    );

    // by subject: the team's group, in both namespaces, through both sources
    let out = report(
        &kubeconfig,
        &as_str(&with(&["--format", "json", "--by", "subject"])),
    );
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let team = (doc["groups"].as_array().unwrap().iter())
        .find(|g| g["subject"]["name"] == DEVS)
        .unwrap();
    let places: BTreeSet<(String, String)> = (team["grants"].as_array().unwrap().iter())
        .filter(|g| g["namespace"] == dev.as_str() || g["namespace"] == ops.as_str())
        .map(|g| {
            (
                g["namespace"].as_str().unwrap().into(),
                g["access"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        places,
        BTreeSet::from([
            (dev.clone(), "Writer".to_string()),
            (dev.clone(), "Reader".to_string()),
            (ops.clone(), "Admin".to_string()),
        ])
    );

    // table, CSV, Markdown
    let out = report(&kubeconfig, &as_str(&with(&[])));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&format!("{dev} "))),
        "a group of lines for {dev}:\n{}",
        out.stdout
    );
    let line = (out.stdout.lines())
        .find(|l| l.contains(&format!("TeamAccess {ta} grants[0]")))
        .unwrap_or_else(|| panic!("no line for {ta}:\n{}", out.stdout));
    assert!(
        line.contains(&format!("Group report-devs ({DEVS})")) && line.contains("Writer"),
        "{line}"
    );
    assert!(out.stdout.contains("FINDINGS: "), "{}", out.stdout);
    let out = report(&kubeconfig, &as_str(&with(&["--format", "csv"])));
    let header = teamaccess::cli::report::CSV_HEADER;
    assert_eq!(out.stdout.lines().next(), Some(header));
    let user_line = (out.stdout.lines())
        .find(|l| l.starts_with(&format!("{dev},User,alice@example.com,")))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert_eq!(
        user_line,
        format!(
            "{dev},User,alice@example.com,,custom,RoleBinding,user-edit,,,RoleBinding,user-edit,ClusterRole,edit,medium,UserSubject"
        )
    );
    let out = report(&kubeconfig, &as_str(&with(&["--format", "markdown"])));
    assert!(
        out.stdout.contains(&format!("### `{dev}`")),
        "{}",
        out.stdout
    );

    // OpenMetrics counts, checked by the real promtool
    let out = report(&kubeconfig, &as_str(&with(&["--format", "openmetrics"])));
    let counts = teamaccess::cli::report::parse_counts(&out.stdout);
    for kind in [
        "AdminWithoutExpiry",
        "BroadSubject",
        "ClusterAdminBinding",
        "NonEntraGroup",
        "UnmanagedDuplicate",
        "UserSubject",
    ] {
        assert!(
            counts.get(kind).is_some_and(|n| *n >= 1),
            "{kind}: {}",
            out.stdout
        );
    }
    assert!(out.stdout.ends_with("# EOF\n"));
    let promtool = std::env::var("TEAMACCESS_PROMTOOL").unwrap_or_else(|_| {
        panic!(
            "TEAMACCESS_PROMTOOL is not set: run `make test`, or export TEAMACCESS_PROMTOOL=$(hack/tool-promtool.sh)"
        )
    });
    let checked = support::run_tool(&promtool, &["check", "metrics"], Some(&out.stdout));
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // the CI gate: medium findings here fail --fail-on medium, with output
    let out = report(
        &kubeconfig,
        &as_str(&with(&["--fail-on", "medium", "--format", "csv"])),
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stdout.starts_with(header));

    // without the role: a clear refusal naming what to bind, exit 2
    let stranger =
        support::service_account_kubeconfig(c, &dev, "no-report-role", Duration::from_secs(3600))
            .await;
    let out = report(&stranger, &[]);
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(out.stderr.contains("teamaccess-report"), "{}", out.stderr);

    let crbs = Api::<ClusterRoleBinding>::all(cluster.client.clone());
    for name in [&root, &glass, &reader_binding] {
        crbs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    operator::teamaccesses(c)
        .delete(&ta, &DeleteParams::default())
        .await
        .unwrap();
    operator::gone(c, &ta).await;
}

fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}
