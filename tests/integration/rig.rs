//! The rig is real: RBAC with aggregated built-in roles, ServiceAccount tokens
//! refused what they lack, and an audit log that counts writes exactly.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};

use crate::harness::support::{self, can};

const GROUP: &str = "6f1c0e2a-3b4d-4c5e-8f90-a1b2c3d4e5f6";
const OTHER_GROUP: &str = "00000000-1111-2222-3333-444444444444";

fn binding(name: &str, role_kind: &str, role: &str, subject: Subject) -> RoleBinding {
    RoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: role_kind.into(),
            name: role.into(),
        },
        subjects: Some(vec![subject]),
    }
}

#[tokio::test]
async fn view_binding_gives_a_group_exactly_what_view_allows() {
    let cluster = support::cluster().await;
    let ns = support::namespace(&cluster.client, "rig-view", &[]).await;
    let group = Subject {
        kind: "Group".into(),
        name: GROUP.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    };
    Api::<RoleBinding>::namespaced(cluster.client.clone(), &ns)
        .create(
            &PostParams::default(),
            &binding("viewers", "ClusterRole", "view", group),
        )
        .await
        .unwrap();
    let c = &cluster.client;
    // `view` has rules only if the clusterrole-aggregation controller runs; a
    // new binding reaches the authorizer's cache a moment after it is created
    support::eventually(
        "view lets the group list pods",
        std::time::Duration::from_secs(10),
        || async { can(c, GROUP, "list", "pods", &ns).await.then_some(()) },
    )
    .await;
    assert!(can(c, GROUP, "get", "deployments.apps", &ns).await);
    assert!(
        !can(c, GROUP, "get", "secrets", &ns).await,
        "view never reads secrets"
    );
    assert!(!can(c, GROUP, "create", "pods", &ns).await);
    assert!(
        !can(c, OTHER_GROUP, "list", "pods", &ns).await,
        "another group gets nothing"
    );
    let elsewhere = support::namespace(c, "rig-view-other", &[]).await;
    assert!(
        !can(c, GROUP, "list", "pods", &elsewhere).await,
        "nothing outside the namespace"
    );
}

/// A ServiceAccount of the test's namespace, allowed `configmaps` get/list/create there.
async fn configmap_writer(cluster: &support::Cluster, ns: &str) -> std::path::PathBuf {
    let role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some("cm-writer".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into(), "create".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(cluster.client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let sa = Subject {
        kind: "ServiceAccount".into(),
        name: "writer".into(),
        namespace: Some(ns.into()),
        api_group: None,
    };
    Api::<RoleBinding>::namespaced(cluster.client.clone(), ns)
        .create(
            &PostParams::default(),
            &binding("cm-writer", "Role", "cm-writer", sa),
        )
        .await
        .unwrap();
    support::service_account_kubeconfig(cluster, ns, "writer", Duration::from_secs(4 * 3600)).await
}

#[tokio::test]
async fn service_account_token_is_refused_what_its_rbac_does_not_allow() {
    let cluster = support::cluster().await;
    let ns = support::namespace(&cluster.client, "rig-sa", &[]).await;
    let other = support::namespace(&cluster.client, "rig-sa-other", &[]).await;
    let kubeconfig = configmap_writer(&cluster, &ns).await;
    let sa = support::client_for(&kubeconfig).await;

    // RBAC may take a moment to reach the authorizer's cache
    support::eventually(
        "the SA may list configmaps",
        Duration::from_secs(10),
        || async {
            Api::<ConfigMap>::namespaced(sa.clone(), &ns)
                .list(&ListParams::default())
                .await
                .ok()
        },
    )
    .await;
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(forbidden(
        Api::<Secret>::namespaced(sa.clone(), &ns)
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<ConfigMap>::namespaced(sa.clone(), &other)
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
    assert!(forbidden(
        Api::<ConfigMap>::all(sa.clone())
            .list(&ListParams::default())
            .await
            .map(|_| ())
    ));
}

#[tokio::test]
async fn audit_log_counts_exactly_the_writes_a_user_made() {
    let cluster = support::cluster().await;
    let ns = support::namespace(&cluster.client, "rig-audit", &[]).await;
    let kubeconfig = configmap_writer(&cluster, &ns).await;
    let sa = support::client_for(&kubeconfig).await;
    let cms = Api::<ConfigMap>::namespaced(sa.clone(), &ns);
    support::eventually(
        "the SA may list configmaps",
        Duration::from_secs(10),
        || async { cms.list(&ListParams::default()).await.ok() },
    )
    .await;

    let from = Timestamp::now();
    for i in 0..5 {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(format!("cm-{i}"));
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    // reads are not writes, and a refused write is still a write request
    cms.list(&ListParams::default()).await.unwrap();
    let _ = Api::<Secret>::namespaced(sa.clone(), &ns)
        .create(&PostParams::default(), &Secret::default())
        .await;
    let to = Timestamp::now();

    let user = format!("system:serviceaccount:{ns}:writer");
    let writes = support::writes_by(&cluster, &user, from, to).await;
    let created: Vec<_> = writes
        .iter()
        .filter(|w| w.code == 201)
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(
        created,
        ["cm-0", "cm-1", "cm-2", "cm-3", "cm-4"],
        "{writes:#?}"
    );
    assert_eq!(
        writes.len(),
        6,
        "five creates and one refused create: {writes:#?}"
    );
    // the admin's own writes in the same window are not counted for the SA
    assert!(writes.iter().all(|w| w.user == user && w.namespace == ns));
    assert_eq!(writes.iter().filter(|w| w.resource == "secrets").count(), 1);
}
