//! Changes made while the operator is down (issue 10, item 5): a new process
//! must not trust what the last one wrote. It reads the world as it is and
//! converges on the spec: access someone added is taken away, access someone
//! removed comes back, a TeamAccess deleted meanwhile is cleaned up, and a
//! namespace recreated under the same name gets objects of its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use teamaccess::access::naming;

use crate::checks;
use crate::harness::operator::{self, Operator, teamaccesses};
use crate::harness::support::{self, can, can_user};
use crate::plane::ControlPlane;

const ALPHA: &str = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const BETA: &str = "1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e";
const GAMMA: &str = "2c3d4e5f-6a7b-4c8d-9e0f-1a2b3c4d5e6f";
/// Added to a managed RoleBinding by someone else while the operator is down.
const INTRUDER_GROUP: &str = "3d4e5f6a-7b8c-4d9e-8f0a-2b3c4d5e6f7a";
const INTRUDER_USER: &str = "mallory@example.com";
const TEAM: &str = "offline-team";

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

async fn create_namespace(client: &Client, name: &str, team: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([(TEAM.to_string(), team.to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
}

async fn relabel(client: &Client, name: &str, team: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {TEAM: team}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("relabelling {name}: {e}"));
}

fn roles(client: &Client, ns: &str) -> Api<Role> {
    Api::namespaced(client.clone(), ns)
}

fn bindings(client: &Client, ns: &str) -> Api<RoleBinding> {
    Api::namespaced(client.clone(), ns)
}

/// The Role and RoleBinding of TeamAccess `ta` in `ns`, as they are now.
async fn objects(client: &Client, ns: &str, ta: &str) -> (Role, RoleBinding) {
    let name = naming::object_name(ta);
    (
        roles(client, ns).get(&name).await.unwrap(),
        bindings(client, ns).get(&name).await.unwrap(),
    )
}

fn uid_of(o: &impl ResourceExt) -> String {
    o.uid().expect("a uid")
}

#[tokio::test]
async fn changes_made_while_the_operator_is_down_converge_after_restart() {
    let plane = ControlPlane::up("offline", "");
    let cluster = plane.cluster().await;
    let c = &cluster.client;

    // alpha: Writer by selector; beta: Reader, three named and three by
    // selector; gamma: Writer by selector, deleted while the operator is down;
    // x-0 matches nothing until it is relabelled into alpha
    let a = names("a", 0..8);
    let b = names("b", 0..6);
    let g = names("g", 0..4);
    for ns in &a {
        create_namespace(c, ns, "alpha").await;
    }
    for ns in &b[3..] {
        create_namespace(c, ns, "beta").await;
    }
    for ns in &b[..3] {
        create_namespace(c, ns, "none").await;
    }
    for ns in &g {
        create_namespace(c, ns, "gamma").await;
    }
    create_namespace(c, "x-0", "none").await;

    let mut first = Operator::spawn(
        &cluster,
        "offline",
        "offline-1",
        &["--leader-election=false"],
    )
    .await;
    first
        .wait_for_log("the operator to reconcile", "leading: reconciling")
        .await;
    let selector = |team: &str| json!({"matchLabels": {TEAM: team}});
    let specs = [
        (
            "alpha",
            json!({"groups": [{"id": ALPHA}],
                   "grants": [{"tier": "Writer", "namespaceSelector": selector("alpha")}]}),
        ),
        (
            "beta",
            json!({"groups": [{"id": BETA}],
                   "grants": [{"tier": "Reader", "namespaces": &b[..3], "namespaceSelector": selector("beta")}]}),
        ),
        (
            "gamma",
            json!({"groups": [{"id": GAMMA}],
                   "grants": [{"tier": "Writer", "namespaceSelector": selector("gamma")}]}),
        ),
    ];
    for (name, spec) in &specs {
        operator::apply(&cluster, &first, name, spec.clone()).await;
    }
    let alpha = checks::converged(&cluster, "alpha", 8, Duration::from_secs(60)).await;
    let beta = checks::converged(&cluster, "beta", 6, Duration::from_secs(60)).await;
    let gamma = checks::converged(&cluster, "gamma", 4, Duration::from_secs(60)).await;
    checks::owns_exactly(&cluster, &gamma, &g).await;
    let (old_role, old_binding) = objects(c, "a-5", "alpha").await;
    let (stripped_role, stripped_binding) = objects(c, "a-3", "alpha").await;
    let (widened_role, _) = objects(c, "a-1", "alpha").await;

    first.kill();
    eprintln!("operator SIGKILLed after converging on alpha, beta and gamma");

    // --- while it is down ---------------------------------------------------
    let alpha_name = naming::object_name("alpha");
    let beta_name = naming::object_name("beta");
    bindings(c, "a-0")
        .delete(&alpha_name, &DeleteParams::default())
        .await
        .unwrap();
    bindings(c, "b-0")
        .delete(&beta_name, &DeleteParams::default())
        .await
        .unwrap();
    // rules widened: RBAC editing for a Writer, secrets for a Reader
    for (ns, name, rule) in [
        (
            "a-1",
            &alpha_name,
            PolicyRule {
                api_groups: Some(vec!["rbac.authorization.k8s.io".into()]),
                resources: Some(vec!["rolebindings".into(), "roles".into()]),
                verbs: vec!["*".into()],
                ..Default::default()
            },
        ),
        (
            "b-3",
            &beta_name,
            PolicyRule {
                api_groups: Some(vec!["".into()]),
                resources: Some(vec!["secrets".into()]),
                verbs: vec!["get".into(), "list".into()],
                ..Default::default()
            },
        ),
    ] {
        let api = roles(c, ns);
        let mut role = api.get(name).await.unwrap();
        role.rules.get_or_insert_with(Vec::new).push(rule);
        api.replace(name, &PostParams::default(), &role)
            .await
            .unwrap();
    }
    assert!(
        can(
            c,
            ALPHA,
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "a-1"
        )
        .await,
        "the widened Role grants RBAC editing while the operator is down"
    );
    // subjects added: a user to alpha's binding, a group to beta's
    for (ns, name, subject) in [
        (
            "a-2",
            &alpha_name,
            Subject {
                kind: "User".into(),
                name: INTRUDER_USER.into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            },
        ),
        (
            "b-1",
            &beta_name,
            Subject {
                kind: "Group".into(),
                name: INTRUDER_GROUP.into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            },
        ),
    ] {
        let api = bindings(c, ns);
        let mut rb = api.get(name).await.unwrap();
        rb.subjects.get_or_insert_with(Vec::new).push(subject);
        api.replace(name, &PostParams::default(), &rb)
            .await
            .unwrap();
    }
    assert!(can_user(c, INTRUDER_USER, "create", "deployments.apps", "a-2").await);
    // our labels stripped (ownership stays: the owner reference)
    let strip = json!({"metadata": {"labels": {
        naming::LABEL_MANAGED_BY: null, naming::LABEL_OWNER: null, naming::LABEL_TIER: null,
    }}});
    roles(c, "a-3")
        .patch(&alpha_name, &PatchParams::default(), &Patch::Merge(&strip))
        .await
        .unwrap();
    bindings(c, "a-3")
        .patch(&alpha_name, &PatchParams::default(), &Patch::Merge(&strip))
        .await
        .unwrap();
    // gamma deleted: its finalizer holds it, with nobody to run it
    teamaccesses(&cluster)
        .delete("gamma", &DeleteParams::default())
        .await
        .unwrap();
    let held = teamaccesses(&cluster).get("gamma").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some()
            && held.finalizers().iter().any(|f| f == naming::FINALIZER),
        "gamma is held by its finalizer: {:?}",
        held.metadata
    );
    // relabelled: a-4 out of alpha, x-0 into alpha, b-4 from beta to alpha
    relabel(c, "a-4", "none").await;
    relabel(c, "x-0", "alpha").await;
    relabel(c, "b-4", "alpha").await;
    // a-5 deleted (the namespace controller removes what was in it) and
    // created again under the same name
    Api::<Namespace>::all(c.clone())
        .delete("a-5", &DeleteParams::default())
        .await
        .unwrap();
    support::absent(
        &Api::<Namespace>::all(c.clone()),
        "a-5",
        "namespace a-5 to be gone",
        Duration::from_secs(90),
    )
    .await;
    create_namespace(c, "a-5", "alpha").await;

    // --- restart, as a kubelet would: a new process, no memory ---------------
    let restarted = Instant::now();
    let second = Operator::spawn(
        &cluster,
        "offline",
        "offline-2",
        &["--leader-election=false"],
    )
    .await;
    let alpha_ns: Vec<String> = [
        "a-0", "a-1", "a-2", "a-3", "a-5", "a-6", "a-7", "b-4", "x-0",
    ]
    .map(String::from)
    .to_vec();
    let beta_ns: Vec<String> = ["b-0", "b-1", "b-2", "b-3", "b-5"]
        .map(String::from)
        .to_vec();
    let alpha_now = checks::converged(&cluster, "alpha", 9, Duration::from_secs(90)).await;
    let beta_now = checks::converged(&cluster, "beta", 5, Duration::from_secs(90)).await;
    operator::gone(&cluster, "gamma").await;
    eprintln!(
        "alpha, beta converged and gamma gone {:?} after the restart began",
        restarted.elapsed()
    );
    assert_eq!(alpha_now.uid(), alpha.uid());
    assert_eq!(beta_now.uid(), beta.uid());

    // exactly the spec's objects, by owner UID; gamma's all gone
    checks::owns_exactly(&cluster, &alpha_now, &alpha_ns).await;
    checks::owns_exactly(&cluster, &beta_now, &beta_ns).await;
    checks::owns_exactly(&cluster, &gamma, &[]).await;
    for ns in ["a-4"] {
        assert!(
            roles(c, ns).get_opt(&alpha_name).await.unwrap().is_none()
                && bindings(c, ns)
                    .get_opt(&alpha_name)
                    .await
                    .unwrap()
                    .is_none(),
            "relabelled out: nothing of alpha's left in {ns}"
        );
    }

    // every Role holds exactly its tier's rules, every binding exactly its group
    let (reference, _) = objects(c, "a-6", "alpha").await;
    let (beta_reference, _) = objects(c, "b-5", "beta").await;
    for (ta, group, expected, list) in [
        ("alpha", ALPHA, &reference, &alpha_ns),
        ("beta", BETA, &beta_reference, &beta_ns),
    ] {
        for ns in list {
            let (role, rb) = objects(c, ns, ta).await;
            assert_eq!(role.rules, expected.rules, "{ta}'s Role in {ns}");
            let subjects: Vec<(&str, &str)> = (rb.subjects.iter().flatten())
                .map(|s| (s.kind.as_str(), s.name.as_str()))
                .collect();
            assert_eq!(subjects, [("Group", group)], "{ta}'s RoleBinding in {ns}");
            assert_eq!(rb.role_ref.name, naming::object_name(ta));
        }
    }

    // effective access, by SubjectAccessReview
    for ns in &alpha_ns {
        assert!(
            can(c, ALPHA, "create", "deployments.apps", ns).await,
            "alpha Writer in {ns}"
        );
    }
    for ns in &beta_ns {
        assert!(can(c, BETA, "get", "pods", ns).await, "beta Reader in {ns}");
    }
    assert!(
        !can(
            c,
            ALPHA,
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "a-1"
        )
        .await,
        "the widened rule is gone"
    );
    assert!(
        !can(c, BETA, "get", "secrets", "b-3").await,
        "the widened rule (secrets) is gone"
    );
    assert!(
        !can_user(c, INTRUDER_USER, "get", "pods", "a-2").await,
        "the added user has no access"
    );
    assert!(
        !can(c, INTRUDER_GROUP, "get", "pods", "b-1").await,
        "the added group has no access"
    );
    assert!(!can(c, ALPHA, "get", "pods", "a-4").await, "a-4 left alpha");
    assert!(!can(c, BETA, "get", "pods", "b-4").await, "b-4 left beta");
    for ns in &g {
        assert!(
            !can(c, GAMMA, "get", "pods", ns).await,
            "gamma is gone: {ns}"
        );
    }

    // edited objects were corrected in place; the recreated namespace's are new
    let (role, rb) = objects(c, "a-3", "alpha").await;
    let labels = |o: &BTreeMap<String, String>| {
        (
            o.get(naming::LABEL_MANAGED_BY).cloned(),
            o.get(naming::LABEL_OWNER).cloned(),
        )
    };
    let ours = (Some("teamaccess".to_string()), Some("alpha".to_string()));
    assert_eq!(labels(role.labels()), ours, "labels restored on the Role");
    assert_eq!(
        labels(rb.labels()),
        ours,
        "labels restored on the RoleBinding"
    );
    assert_eq!(
        uid_of(&role),
        uid_of(&stripped_role),
        "the stripped Role kept"
    );
    assert_eq!(
        uid_of(&rb),
        uid_of(&stripped_binding),
        "the stripped RoleBinding kept"
    );
    let (role, _) = objects(c, "a-1", "alpha").await;
    assert_eq!(uid_of(&role), uid_of(&widened_role), "narrowed in place");
    let (role, rb) = objects(c, "a-5", "alpha").await;
    assert_ne!(
        uid_of(&role),
        uid_of(&old_role),
        "a fresh Role in the recreated a-5"
    );
    assert_ne!(
        uid_of(&rb),
        uid_of(&old_binding),
        "a fresh RoleBinding in the recreated a-5"
    );

    // events of the convergence may still be landing: the first window (of
    // at most 3) without writes must hold no reconcile loop
    let mut windows = Vec::new();
    loop {
        let quiet = checks::over_steady_state(&cluster, &second, Duration::from_secs(10)).await;
        let done = quiet.writes == 0;
        windows.push(quiet);
        if done || windows.len() == 3 {
            break;
        }
    }
    let quiet = windows.last().unwrap();
    assert_eq!(quiet.writes, 0, "quiet once converged: {windows:?}");
    assert!(quiet.reconciles <= 1, "no reconcile loop: {windows:?}");
}
