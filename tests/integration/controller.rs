//! The controller, end to end: a real operator process under its own
//! ServiceAccount against the real control plane. Every access claim is
//! checked as the API server's authorizer sees it (SubjectAccessReview for a
//! member of the group), not only by the objects' presence.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use crate::operator::{self, Operator, condition, ready, status_until};
use crate::support::{self, Cluster, can, can_named, eventually};

const G: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";
const WAIT: Duration = Duration::from_secs(60);

fn object_name(ta: &str) -> String {
    teamaccess::access::naming::object_name(ta)
}

fn role_bindings(cluster: &Cluster, ns: &str) -> Api<RoleBinding> {
    Api::namespaced(cluster.client.clone(), ns)
}

fn roles(cluster: &Cluster, ns: &str) -> Api<Role> {
    Api::namespaced(cluster.client.clone(), ns)
}

/// Proves the operator has reconciled TeamAccess `name` after everything the
/// test did before the call: bumps the object's own generation and waits
/// until its status reports it (a reconcile that read the object after the
/// bump), then takes the bump back the same way, so the object ends as it
/// was. The bump is a group's display name, which grants nothing.
async fn barrier(cluster: &Cluster, name: &str) {
    const MANAGER: &str = "teamaccess-tests-barrier";
    let api = operator::teamaccesses(cluster);
    let group = api.get(name).await.unwrap().spec.groups[0].id.clone();
    let mark = support::unique("barrier");
    for groups in [json!([{"id": group, "name": mark}]), json!(null)] {
        let mut body = json!({
            "apiVersion": "teamaccess.dev/v1alpha1",
            "kind": "TeamAccess",
            "metadata": {"name": name},
        });
        // an empty apply gives up the field: the display name goes away
        if !groups.is_null() {
            body["spec"] = json!({ "groups": groups });
        }
        let ta = api
            .patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
            .unwrap_or_else(|e| panic!("barrier on TeamAccess {name}: {e}"));
        let generation = ta.metadata.generation;
        status_until(
            cluster,
            name,
            "the barrier's generation is reconciled",
            |ta| {
                ta.status
                    .as_ref()
                    .is_some_and(|s| s.observed_generation >= generation)
            },
        )
        .await;
    }
}

async fn wait_can(cluster: &Cluster, verb: &str, resource: &str, ns: &str, want: bool) {
    eventually(
        &format!("group may {verb} {resource} in {ns}: {want}"),
        WAIT,
        || async { (can(&cluster.client, G, verb, resource, ns).await == want).then_some(()) },
    )
    .await;
}

/// A namespaced custom resource, so the Admin tier has a non-core API group to cover.
async fn install_widgets(cluster: &Cluster) {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.widgets.example.com"},
        "spec": {
            "group": "widgets.example.com",
            "names": {"kind": "Widget", "plural": "widgets"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
        }
    }))
    .unwrap();
    let api = Api::<CustomResourceDefinition>::all(cluster.client.clone());
    api.patch(
        "widgets.widgets.example.com",
        &PatchParams::apply("teamaccess-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    eventually("widgets to be served", WAIT, || async {
        let d = kube::Discovery::new(cluster.client.clone())
            .run_aggregated()
            .await
            .ok()?;
        d.groups()
            .any(|g| g.name() == "widgets.example.com")
            .then_some(())
    })
    .await;
}

/// One expected answer: (group, verb, resource, resource name, namespace,
/// allowed, why).
type AccessRow<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    bool,
    &'a str,
);

#[tokio::test]
async fn each_tier_gives_exactly_what_the_spec_says() {
    let cluster = support::cluster().await;
    install_widgets(&cluster).await;
    let op = Operator::start(&cluster, "tiers", &[]).await;
    let r = support::namespace(&cluster.client, "tier-reader", &[]).await;
    let w = support::namespace(&cluster.client, "tier-writer", &[]).await;
    let a = support::namespace(&cluster.client, "tier-admin", &[]).await;
    let name = format!("tiers-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({
            "groups": [{"id": G}],
            "grants": [
                {"tier": "Reader", "namespaces": [r]},
                {"tier": "Writer", "namespaces": [w]},
                {"tier": "Admin", "namespaces": [a]}
            ]
        }),
    )
    .await;
    ready(&cluster, &name, "Applied").await;
    let c = &cluster.client;
    let (r, w, a) = (r.as_str(), w.as_str(), a.as_str());
    let a_owned = a.to_string();
    #[rustfmt::skip]
    let table: &[AccessRow] = &[
        (G, "list",   "pods",                                   None, r, true,  "Reader lists pods"),
        (G, "get",    "pods/log",                               None, r, true,  "Reader reads pods/log"),
        (G, "watch",  "deployments.apps",                       None, r, true,  "Reader watches deployments"),
        (G, "get",    "secrets",                                None, r, false, "Reader gets secrets"),
        (G, "create", "pods/exec",                              None, r, false, "Reader execs"),
        (G, "get",    "pods/exec",                              None, r, false, "Reader execs (get)"),
        (G, "create", "pods",                                   None, r, false, "Reader create pods"),
        (G, "create", "configmaps",                             None, r, false, "Reader create configmaps"),
        (G, "delete", "deployments.apps",                       None, r, false, "Reader delete deployments.apps"),
        (G, "patch",  "services",                               None, r, false, "Reader patch services"),
        (G, "create", "deployments.apps",                       None, w, true,  "Writer creates deployments"),
        (G, "create", "pods/exec",                              None, w, true,  "Writer execs"),
        (G, "get",    "secrets",                                None, w, true,  "Writer reads secrets"),
        (G, "create", "rolebindings.rbac.authorization.k8s.io", None, w, false, "Writer creates rolebindings"),
        (G, "create", "widgets.widgets.example.com",            None, w, false, "Writer creates custom resources"),
        (G, "create", "rolebindings.rbac.authorization.k8s.io", None, a, true,  "Admin creates rolebindings"),
        (G, "create", "widgets.widgets.example.com",            None, a, true,  "Admin creates custom resources"),
        (G, "delete", "resourcequotas",                         None, a, false, "Admin deletes the resourcequota"),
        (G, "patch",  "namespaces",                             Some(a), a, false, "Admin patches its namespace"),
        (G, "delete", "namespaces",                             Some(a), a, false, "Admin deletes its namespace"),
        (G, "bind",   "clusterroles.rbac.authorization.k8s.io", Some("cluster-admin"), a, false, "Admin binds cluster-admin"),
        (G, "escalate", "roles.rbac.authorization.k8s.io",      None, a, false, "Admin escalates"),
    ];
    let mut wrong = Vec::new();
    for &(group, verb, resource, object, ns, allowed, why) in table {
        if can_named(c, group, verb, resource, ns, object).await != allowed {
            let want = if allowed { "allowed" } else { "refused" };
            wrong.push(format!("{why}: {verb} {resource} in {ns} should be {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "tier rows that do not hold:\n{}",
        wrong.join("\n")
    );
    let a = a_owned;

    // and for real: a member of the group tries to bind cluster-admin in its namespace
    let member = support::member_of(&cluster, "someone@example.com", &[G]).await;
    let escalation = RoleBinding {
        metadata: ObjectMeta {
            name: Some("make-me-admin".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: G.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        }]),
    };
    let member_rb: Api<RoleBinding> = Api::namespaced(member, &a);
    match member_rb.create(&PostParams::default(), &escalation).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("binding cluster-admin must be refused, got {other:?}"),
    }
    // Admin is useful within its rights: a member writes a Role and binds a colleague to it
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "pod-readers"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(member_rb.clone().into_client(), &a)
        .create(&PostParams::default(), &role)
        .await
        .expect("Admin creates a Role");
    let mut readers = escalation.clone();
    readers.metadata.name = Some("pod-readers".into());
    readers.role_ref.kind = "Role".into();
    readers.role_ref.name = "pod-readers".into();
    readers.subjects.as_mut().unwrap()[0].name = "colleagues".into();
    member_rb
        .create(&PostParams::default(), &readers)
        .await
        .expect("Admin binds a Role within its rights");
    // the authorizer's cache takes a moment to see a new binding
    eventually("the colleagues to list pods", WAIT, || async {
        can(c, "colleagues", "list", "pods", &a).await.then_some(())
    })
    .await;
}

#[tokio::test]
async fn drift_is_reverted_and_reported() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "drift", &[]).await;
    let ns = support::namespace(&cluster.client, "drift", &[]).await;
    let name = format!("drift-{}", op.id);
    let obj = object_name(&name);
    operator::grant(&cluster, &op, &name, G, "Writer", &ns).await;
    crate::gitops::assert_argo(&cluster, &name, "Healthy").await;
    let rbs = role_bindings(&cluster, &ns);
    let rls = roles(&cluster, &ns);
    let original_role = rls.get(&obj).await.unwrap();
    let original_rb = rbs.get(&obj).await.unwrap();

    // deleted
    rbs.delete(&obj, &DeleteParams::default()).await.unwrap();
    eventually("the RoleBinding to be recreated", WAIT, || async {
        let rb = rbs.get_opt(&obj).await.unwrap()?;
        (rb.metadata.uid != original_rb.metadata.uid).then_some(())
    })
    .await;
    operator::event_with(
        &cluster,
        &name,
        "DriftCorrected",
        &format!("RoleBinding {ns}/{obj} was deleted"),
    )
    .await;
    wait_can(&cluster, "create", "deployments.apps", &ns, true).await;

    // rules edited
    let pp = |m: &str| PatchParams {
        field_manager: Some(m.into()),
        ..Default::default()
    };
    rls.patch(
        &obj,
        &pp("kubectl-edit"),
        &Patch::Merge(
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
    )
    .await
    .unwrap();
    eventually("the Role's rules to be restored", WAIT, || async {
        (rls.get(&obj).await.ok()?.rules == original_role.rules).then_some(())
    })
    .await;
    operator::event_with(
        &cluster,
        &name,
        "DriftCorrected",
        "rules changed by kubectl-edit",
    )
    .await;

    // a subject added
    // the operator is held still while the subject is added, so the test
    // sees the access it gives before seeing it taken away
    let mallory = support::Identity {
        user: "mallory@example.com",
        groups: &[],
    };
    op.pause();
    let mut subjects = original_rb.subjects.clone().unwrap();
    subjects.push(Subject {
        kind: "User".into(),
        name: "mallory@example.com".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    });
    rbs.patch(
        &obj,
        &pp("kubectl-patch"),
        &Patch::Merge(json!({"subjects": subjects})),
    )
    .await
    .unwrap();
    // asked as the very user someone added (by name, in no group): the
    // authorizer's answer, not the object, says the access came and went
    eventually(
        "the added user to get access through our binding",
        Duration::from_secs(10),
        || async {
            let may = support::may(
                &cluster.client,
                &mallory,
                "create",
                "deployments.apps",
                &ns,
                None,
            );
            may.await.then_some(())
        },
    )
    .await;
    op.resume();
    eventually("the added user to lose its access", WAIT, || async {
        let may = support::may(
            &cluster.client,
            &mallory,
            "create",
            "deployments.apps",
            &ns,
            None,
        );
        (!may.await).then_some(())
    })
    .await;
    let rb = rbs.get(&obj).await.unwrap();
    assert_eq!(rb.subjects, original_rb.subjects, "only our group is left");
    operator::event_with(
        &cluster,
        &name,
        "DriftCorrected",
        "subjects changed by kubectl-patch",
    )
    .await;

    // a label changed
    rls.patch(
        &obj,
        &pp("kubectl-label"),
        &Patch::Merge(json!({"metadata": {"labels": {"teamaccess.dev/tier": "Admin"}}})),
    )
    .await
    .unwrap();
    eventually("the tier label to be restored", WAIT, || async {
        let r = rls.get(&obj).await.ok()?;
        (r.metadata.labels.as_ref()?.get("teamaccess.dev/tier")? == "Writer").then_some(())
    })
    .await;
    operator::event_with(
        &cluster,
        &name,
        "DriftCorrected",
        "labels changed by kubectl-label",
    )
    .await;

    // a label removed: managedFields keeps no trace of who did it, and it is
    // drift all the same (restored, and told)
    rbs.patch(
        &obj,
        &pp("kubectl-label"),
        &Patch::<()>::Json(
            serde_json::from_value(json!([
                {"op": "remove", "path": "/metadata/labels/teamaccess.dev~1tier"}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    eventually("the removed label to be restored", WAIT, || async {
        let rb = rbs.get(&obj).await.ok()?;
        (rb.metadata.labels.as_ref()?.get("teamaccess.dev/tier")? == "Writer").then_some(())
    })
    .await;
    eventually(
        "a DriftCorrected event for the removed label",
        WAIT,
        || async {
            operator::events(&cluster, &name, "DriftCorrected")
                .await
                .iter()
                .any(|e| {
                    e.action.as_deref() == Some("RevertLabels")
                        && e.related.as_ref().and_then(|r| r.kind.as_deref()) == Some("RoleBinding")
                })
                .then_some(())
        },
    )
    .await;

    // roleRef changed: delete and recreate by hand, keeping the ownerReference
    let mut bad = rbs.get(&obj).await.unwrap();
    bad.metadata = ObjectMeta {
        name: bad.metadata.name.clone(),
        labels: bad.metadata.labels.clone(),
        owner_references: bad.metadata.owner_references.clone(),
        ..Default::default()
    };
    bad.role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: "view".into(),
    };
    // the operator recreates a deleted binding at once, so this races it
    let mut replaced = false;
    for _ in 0..50 {
        let _ = rbs.delete(&obj, &DeleteParams::default()).await;
        if rbs.create(&PostParams::default(), &bad).await.is_ok() {
            replaced = true;
            break;
        }
    }
    assert!(
        replaced,
        "could not put a RoleBinding with another roleRef in place"
    );
    eventually("the roleRef to be restored", WAIT, || async {
        let rb = rbs.get(&obj).await.ok()?;
        (rb.role_ref == original_rb.role_ref).then_some(())
    })
    .await;
    operator::event_with(&cluster, &name, "DriftCorrected", "roleRef").await;
    wait_can(&cluster, "create", "deployments.apps", &ns, true).await;
    assert!(!support::may(&cluster.client, &mallory, "list", "pods", &ns, None).await);
}

#[tokio::test]
async fn namespaces_are_onboarded_and_offboarded_by_their_events() {
    let cluster = support::cluster().await;
    // an hour between resyncs: only watch events can make this test pass
    let op = Operator::start(&cluster, "onboard", &["--resync-period", "1h"]).await;
    let team = support::unique("team");
    let late = support::unique("late");
    let name = format!("onboard-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({
            "groups": [{"id": G}],
            "grants": [
                {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": team}}},
                {"tier": "Writer", "namespaces": [late]}
            ]
        }),
    )
    .await;
    ready(&cluster, &name, "AppliedWithPending").await;
    crate::gitops::assert_argo(&cluster, &name, "Healthy").await;

    let ns = support::namespace(&cluster.client, "onboard", &[("team", &team)]).await;
    wait_can(&cluster, "list", "pods", &ns, true).await;

    Api::<Namespace>::all(cluster.client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": null}}})),
        )
        .await
        .unwrap();
    wait_can(&cluster, "list", "pods", &ns, false).await;
    assert!(
        roles(&cluster, &ns)
            .get_opt(&object_name(&name))
            .await
            .unwrap()
            .is_none()
    );

    let mut n = Namespace::default();
    n.metadata.name = Some(late.clone());
    Api::<Namespace>::all(cluster.client.clone())
        .create(&PostParams::default(), &n)
        .await
        .unwrap();
    wait_can(&cluster, "create", "deployments.apps", &late, true).await;
    ready(&cluster, &name, "Applied").await;
}

#[tokio::test]
async fn a_tier_change_updates_the_role_in_place() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "tierchange", &[]).await;
    let ns = support::namespace(&cluster.client, "tierchange", &[]).await;
    let name = format!("tierchange-{}", op.id);
    let spec =
        |tier: &str| json!({"groups": [{"id": G}], "grants": [{"tier": tier, "namespaces": [ns]}]});
    operator::apply(&cluster, &op, &name, spec("Reader")).await;
    ready(&cluster, &name, "Applied").await;
    let rbs = role_bindings(&cluster, &ns);
    let before = rbs.get(&object_name(&name)).await.unwrap();

    // watch the binding for the whole change
    let mut seen = watcher(
        rbs.clone(),
        watcher::Config::default().fields(&format!("metadata.name={}", object_name(&name))),
    )
    .boxed();
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let recorder = tokio::spawn(async move {
        let mut events = Vec::new();
        loop {
            tokio::select! {
                _ = &mut stopped => return events,
                e = seen.next() => match e {
                    Some(Ok(e)) => events.push(e),
                    Some(Err(_)) => {}
                    None => return events,
                },
            }
        }
    });
    operator::apply(&cluster, &op, &name, spec("Writer")).await;
    ready(&cluster, &name, "Applied").await;
    wait_can(&cluster, "create", "deployments.apps", &ns, true).await;
    barrier(&cluster, &name).await;
    stop.send(()).unwrap();
    let events = recorder.await.unwrap();
    assert!(!events.is_empty(), "the watch saw the binding");
    for e in &events {
        match e {
            watcher::Event::Delete(_) => panic!("the RoleBinding was deleted during a tier change"),
            watcher::Event::Apply(rb) | watcher::Event::InitApply(rb) => {
                assert_eq!(
                    rb.metadata.uid, before.metadata.uid,
                    "the same RoleBinding throughout"
                );
                assert_eq!(rb.role_ref, before.role_ref, "roleRef never changes");
            }
            _ => {}
        }
    }
    let after = rbs.get(&object_name(&name)).await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
}

#[tokio::test]
async fn deleting_a_teamaccess_removes_what_it_made_and_nothing_else() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "delete", &[]).await;
    let ns1 = support::namespace(&cluster.client, "delete-a", &[]).await;
    let ns2 = support::namespace(&cluster.client, "delete-b", &[]).await;
    let name = format!("delete-{}", op.id);
    let other = format!("keep-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({"groups": [{"id": G}], "grants": [{"tier": "Writer", "namespaces": [ns1, ns2]}]}),
    )
    .await;
    operator::apply(
        &cluster,
        &op,
        &other,
        json!({"groups": [{"id": G}], "grants": [{"tier": "Reader", "namespaces": [ns1]}]}),
    )
    .await;
    ready(&cluster, &name, "Applied").await;
    ready(&cluster, &other, "Applied").await;
    let bystander = RoleBinding {
        metadata: ObjectMeta {
            name: Some("bystander".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: object_name(&name),
        },
        subjects: Some(vec![Subject {
            kind: "Group".into(),
            name: "bystanders".into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            namespace: None,
        }]),
    };
    // someone else's binding that even references our Role: not ours to delete
    role_bindings(&cluster, &ns1)
        .create(&PostParams::default(), &bystander)
        .await
        .unwrap();

    let from = Timestamp::now();
    operator::teamaccesses(&cluster)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    operator::gone(&cluster, &name).await;
    // the garbage collector would delete them too once the TeamAccess is
    // gone, so their absence proves nothing: the operator's own deletes
    // (before it let the TeamAccess go) do, each by name, binding first
    let deletes = support::writes_by(&cluster, &op.user, from, Timestamp::now()).await;
    for ns in [&ns1, &ns2] {
        let done: Vec<(&str, &str)> = (deletes.iter())
            .filter(|e| e.verb == "delete" && e.namespace == *ns && e.code < 300)
            .map(|e| (e.resource.as_str(), e.name.as_str()))
            .collect();
        let obj = object_name(&name);
        assert_eq!(
            done,
            [("rolebindings", obj.as_str()), ("roles", obj.as_str())],
            "{ns}: the operator deleted what it made, the binding first: {deletes:#?}"
        );
    }
    for ns in [&ns1, &ns2] {
        assert!(
            roles(&cluster, ns)
                .get_opt(&object_name(&name))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            role_bindings(&cluster, ns)
                .get_opt(&object_name(&name))
                .await
                .unwrap()
                .is_none()
        );
    }
    assert!(
        role_bindings(&cluster, &ns1)
            .get_opt("bystander")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        role_bindings(&cluster, &ns1)
            .get_opt(&object_name(&other))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        can(&cluster.client, G, "list", "pods", &ns1).await,
        "the other TeamAccess still grants Reader"
    );
    assert!(!can(&cluster.client, G, "create", "deployments.apps", &ns2).await);
}

#[tokio::test]
async fn an_object_we_do_not_own_is_never_touched() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "conflict", &[]).await;
    let plain = support::namespace(&cluster.client, "conflict-plain", &[]).await;
    let labelled = support::namespace(&cluster.client, "conflict-labelled", &[]).await;
    let name = format!("conflict-{}", op.id);
    let obj = object_name(&name);
    let theirs = |labels: Option<serde_json::Value>| -> RoleBinding {
        serde_json::from_value(json!({
            "metadata": {"name": obj, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "someone-elses-group", "apiGroup": "rbac.authorization.k8s.io"}]
        }))
        .unwrap()
    };
    let ours_labels =
        json!({"app.kubernetes.io/managed-by": "teamaccess", "teamaccess.dev/owner": name});
    let before_plain = role_bindings(&cluster, &plain)
        .create(&PostParams::default(), &theirs(None))
        .await
        .unwrap();
    let before_labelled = role_bindings(&cluster, &labelled)
        .create(&PostParams::default(), &theirs(Some(ours_labels)))
        .await
        .unwrap();

    operator::apply(&cluster, &op, &name, json!({"groups": [{"id": G}], "grants": [{"tier": "Admin", "namespaces": [plain, labelled]}]})).await;
    let ta = status_until(&cluster, &name, "Stalled with Conflict", |ta| {
        condition(ta, "Stalled").is_some_and(|c| c.status == "True" && c.reason == "Conflict")
    })
    .await;
    crate::gitops::assert_argo(&cluster, &name, "Degraded").await;
    let stalled = condition(&ta, "Stalled").unwrap();
    assert_eq!(condition(&ta, "Ready").unwrap().status, "False");
    assert!(
        stalled
            .message
            .contains(&format!("RoleBinding {plain}/{obj}")),
        "{}",
        stalled.message
    );
    let summary = ta.status.as_ref().unwrap().summary.clone().unwrap();
    assert_eq!((summary.failed, summary.applied), (2, 0));
    operator::event_with(&cluster, &name, "Conflict", &plain).await;

    barrier(&cluster, &name).await;
    for (ns, before) in [(&plain, before_plain), (&labelled, before_labelled)] {
        let after = role_bindings(&cluster, ns).get(&obj).await.unwrap();
        assert_eq!(
            after.metadata.resource_version, before.metadata.resource_version,
            "{ns}: untouched"
        );
        assert_eq!(
            serde_json::to_value(&after).unwrap(),
            serde_json::to_value(&before).unwrap()
        );
        // and the group got nothing through someone else's binding
        assert!(!can(&cluster.client, G, "list", "pods", ns).await);
    }
}

#[tokio::test]
async fn protected_namespaces_are_denied_when_named_and_skipped_when_selected() {
    let cluster = support::cluster().await;
    let named = support::namespace(&cluster.client, "protected-named", &[]).await;
    let team = support::unique("team");
    let selected = support::namespace(
        &cluster.client,
        "protected-selected",
        &[("team", &team), ("guarded", "yes")],
    )
    .await;
    let normal = support::namespace(&cluster.client, "protected-normal", &[("team", &team)]).await;
    let protected = format!("kube-system,{named}");
    let op = Operator::start(
        &cluster,
        "protected",
        &[
            "--protected-namespaces",
            &protected,
            "--protected-namespace-selector",
            "guarded=yes",
        ],
    )
    .await;
    let denied = format!("denied-{}", op.id);
    let skipped = format!("skipped-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &denied,
        json!({"groups": [{"id": G}], "grants": [{"tier": "Admin", "namespaces": [named]}]}),
    )
    .await;
    operator::apply(&cluster, &op, &skipped, json!({"groups": [{"id": G}], "grants": [{"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": team}}}]})).await;

    let ta = status_until(&cluster, &denied, "Stalled with Denied", |ta| {
        condition(ta, "Stalled").is_some_and(|c| c.status == "True" && c.reason == "Denied")
    })
    .await;
    assert!(condition(&ta, "Stalled").unwrap().message.contains(&named));
    crate::gitops::assert_argo(&cluster, &denied, "Degraded").await;
    operator::event_with(&cluster, &denied, "Denied", &named).await;
    let ta = ready(&cluster, &skipped, "Applied").await;
    let entry = |n: &str| {
        ta.status
            .as_ref()
            .unwrap()
            .namespaces
            .iter()
            .find(|e| e.name == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(entry(&selected).state.as_str(), "Skipped");
    assert_eq!(entry(&normal).state.as_str(), "Applied");
    assert!(condition(&ta, "Stalled").is_none());

    barrier(&cluster, &denied).await;
    barrier(&cluster, &skipped).await;
    let writes =
        support::writes_by(&cluster, &op.user, Timestamp::UNIX_EPOCH, Timestamp::now()).await;
    assert!(
        !writes
            .iter()
            .any(|w| w.namespace == named || w.namespace == selected),
        "nothing written in protected namespaces: {writes:#?}"
    );
    assert!(!can(&cluster.client, G, "list", "pods", &selected).await);
    wait_can(&cluster, "list", "pods", &normal, true).await;
}

#[tokio::test]
async fn status_is_exact_and_bounded_at_every_stage() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "status", &[]).await;
    let bulk = support::unique("bulk");
    let missing = support::unique("missing");
    let name = format!("status-{}", op.id);
    let ta = operator::apply(&cluster, &op, &name, json!({
        "groups": [{"id": G}],
        "grants": [{"tier": "Reader", "namespaces": [missing], "namespaceSelector": {"matchLabels": {"bulk": bulk}}}]
    }))
    .await;
    let ta = {
        let t = ready(&cluster, &name, "AppliedWithPending").await;
        assert_eq!(
            t.status.as_ref().unwrap().observed_generation,
            ta.metadata.generation
        );
        t
    };
    assert_eq!(condition(&ta, "NamespacesPending").unwrap().status, "True");
    assert!(condition(&ta, "Reconciling").is_none() && condition(&ta, "Stalled").is_none());
    let s = ta.status.as_ref().unwrap();
    assert_eq!(s.summary.as_ref().unwrap().pending, 1);
    assert_eq!(s.namespaces[0].name, missing);

    // 500 selected namespaces
    let labels = [("bulk", bulk.as_str())];
    let created: Vec<String> = futures::stream::iter(0..500)
        .map(|_| support::namespace(&cluster.client, "bulk", &labels))
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(created.len(), 500);
    let ta = status_until(&cluster, &name, "500 namespaces applied", |ta| {
        ta.status
            .as_ref()
            .and_then(|s| s.summary.as_ref())
            .is_some_and(|s| s.applied == 500)
    })
    .await;
    let s = ta.status.as_ref().unwrap();
    let sum = s.summary.as_ref().unwrap();
    assert_eq!(
        (
            sum.targeted,
            sum.applied,
            sum.pending,
            sum.failed,
            sum.skipped
        ),
        (501, 500, 1, 0, 0)
    );
    assert_eq!(s.progress.as_deref(), Some("500/501"));
    assert_eq!(s.namespaces.len(), 100, "the list is bounded");
    assert_eq!(
        s.namespaces[0].name, missing,
        "entries needing attention come first"
    );
    assert_eq!(
        condition(&ta, "Ready").unwrap().reason,
        "AppliedWithPending"
    );
    let size = serde_json::to_vec(s).unwrap().len();
    assert!(size < 32 * 1024, "status stays small: {size} bytes");
    for ns in created.iter().step_by(97) {
        wait_can(&cluster, "list", "pods", ns, true).await;
    }
}

#[tokio::test]
async fn suspend_stops_writes_but_not_revocation() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "suspend", &[]).await;
    let ns = support::namespace(&cluster.client, "suspend", &[]).await;
    let timed_ns = support::namespace(&cluster.client, "suspend-timed", &[]).await;
    let name = format!("suspend-{}", op.id);
    let until = Timestamp::now() + SignedDuration::from_secs(12);
    let spec = |suspend: bool| {
        json!({
            "groups": [{"id": G}],
            "suspend": suspend,
            "grants": [
                {"tier": "Writer", "namespaces": [ns]},
                {"tier": "Admin", "namespaces": [timed_ns], "validUntil": until.to_string()}
            ]
        })
    };
    operator::apply(&cluster, &op, &name, spec(false)).await;
    ready(&cluster, &name, "Applied").await;
    wait_can(
        &cluster,
        "create",
        "rolebindings.rbac.authorization.k8s.io",
        &timed_ns,
        true,
    )
    .await;

    let ta = operator::apply(&cluster, &op, &name, spec(true)).await;
    let ta = {
        let t = ready(&cluster, &name, "Suspended").await;
        assert_eq!(
            t.status.as_ref().unwrap().observed_generation,
            ta.metadata.generation
        );
        t
    };
    assert_eq!(condition(&ta, "Suspended").unwrap().status, "True");
    crate::gitops::assert_argo(&cluster, &name, "Suspended").await;
    role_bindings(&cluster, &ns)
        .delete(&object_name(&name), &DeleteParams::default())
        .await
        .unwrap();
    barrier(&cluster, &name).await;
    assert!(
        role_bindings(&cluster, &ns)
            .get_opt(&object_name(&name))
            .await
            .unwrap()
            .is_none(),
        "a deleted binding stays deleted"
    );
    assert!(!can(&cluster.client, G, "create", "deployments.apps", &ns).await);

    // the timed grant still ends on time while suspended
    wait_can(
        &cluster,
        "create",
        "rolebindings.rbac.authorization.k8s.io",
        &timed_ns,
        false,
    )
    .await;
    assert!(Timestamp::now() >= until);
    // the binding goes first (that ends access), the Role right after
    eventually("the timed Role to be deleted", WAIT, || async {
        roles(&cluster, &timed_ns)
            .get_opt(&object_name(&name))
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    operator::apply(&cluster, &op, &name, spec(false)).await;
    ready(&cluster, &name, "Applied").await;
    wait_can(&cluster, "create", "deployments.apps", &ns, true).await;
}

#[tokio::test]
async fn grants_begin_and_end_at_their_boundaries() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "window", &["--resync-period", "1h"]).await;
    let ending = support::namespace(&cluster.client, "window-ending", &[]).await;
    let starting = support::namespace(&cluster.client, "window-starting", &[]).await;
    let name = format!("window-{}", op.id);
    // whole seconds, so creationTimestamp (seconds) can be compared with it
    let boundary = Timestamp::from_second(Timestamp::now().as_second() + 10).unwrap();
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({
            "groups": [{"id": G}],
            "grants": [
                {"tier": "Admin", "namespaces": [ending], "validUntil": boundary.to_string()},
                {"tier": "Writer", "namespaces": [starting], "validFrom": boundary.to_string()}
            ]
        }),
    )
    .await;
    let ta = ready(&cluster, &name, "Applied").await;
    let s = ta.status.as_ref().unwrap();
    assert_eq!(s.next_transition_time.as_ref().map(|t| t.0), Some(boundary));
    let state = |n: &str| {
        s.namespaces
            .iter()
            .find(|e| e.name == n)
            .map(|e| e.state.as_str())
    };
    assert_eq!(state(&ending), Some("Applied"));
    assert_eq!(state(&starting), Some("NotYetValid"));
    assert!(
        can(
            &cluster.client,
            G,
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            &ending
        )
        .await
    );
    assert!(!can(&cluster.client, G, "create", "deployments.apps", &starting).await);

    wait_can(&cluster, "create", "deployments.apps", &starting, true).await;
    wait_can(
        &cluster,
        "create",
        "rolebindings.rbac.authorization.k8s.io",
        &ending,
        false,
    )
    .await;
    let revoked = operator::event_with(&cluster, &name, "Revoked", &ending).await;
    let at = revoked
        .event_time
        .map(|t| t.0)
        .or(revoked.metadata.creation_timestamp.map(|t| t.0))
        .unwrap();
    assert!(
        at >= boundary,
        "revoked at {at}, before validUntil {boundary}"
    );
    let created = role_bindings(&cluster, &starting)
        .get(&object_name(&name))
        .await
        .unwrap();
    assert!(
        created.metadata.creation_timestamp.unwrap().0 >= boundary,
        "granted before validFrom"
    );
}

#[tokio::test]
async fn a_namespace_deleted_while_selected_is_not_an_error() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "nsdelete", &[]).await;
    let team = support::unique("team");
    let stays = support::namespace(&cluster.client, "nsdelete-stays", &[("team", &team)]).await;
    let goes = support::namespace(&cluster.client, "nsdelete-goes", &[("team", &team)]).await;
    let name = format!("nsdelete-{}", op.id);
    operator::apply(&cluster, &op, &name, json!({"groups": [{"id": G}], "grants": [{"tier": "Writer", "namespaceSelector": {"matchLabels": {"team": team}}}]})).await;
    status_until(&cluster, &name, "2 namespaces applied", |ta| {
        ta.status.as_ref().and_then(|s| s.progress.as_deref()) == Some("2/2")
    })
    .await;

    Api::<Namespace>::all(cluster.client.clone())
        .delete(&goes, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the namespace to be gone", WAIT, || async {
        Api::<Namespace>::all(cluster.client.clone())
            .get_opt(&goes)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let ta = status_until(&cluster, &name, "1 namespace applied", |ta| {
        ta.status.as_ref().and_then(|s| s.progress.as_deref()) == Some("1/1")
    })
    .await;
    barrier(&cluster, &name).await;
    assert_eq!(condition(&ta, "Ready").unwrap().reason, "Applied");
    assert!(condition(&ta, "Stalled").is_none() && condition(&ta, "Reconciling").is_none());
    assert!(
        operator::events(&cluster, &name, "DriftCorrected")
            .await
            .is_empty(),
        "a deleted namespace is not drift"
    );
    let warnings: Vec<_> = op
        .log_lines()
        .into_iter()
        .filter(|l| l["level"] == "WARN" || l["level"] == "ERROR")
        .collect();
    assert!(warnings.is_empty(), "no errors logged: {warnings:#?}");
    wait_can(&cluster, "create", "deployments.apps", &stays, true).await;
}

#[tokio::test]
async fn the_steady_state_costs_no_writes() {
    let cluster = support::cluster().await;
    let resync = Duration::from_secs(3);
    let op = Operator::start(&cluster, "steady", &["--resync-period", "3s"]).await;
    let team = support::unique("team");
    let a = support::namespace(&cluster.client, "steady-a", &[("team", &team)]).await;
    let b = support::namespace(&cluster.client, "steady-b", &[]).await;
    let name = format!("steady-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({
            "groups": [{"id": G}, {"id": "9b2c1d4e-0000-4000-8000-000000000001"}],
            "grants": [
                {"tier": "Admin", "namespaces": [b, "steady-missing"]},
                {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": team}}}
            ]
        }),
    )
    .await;
    ready(&cluster, &name, "AppliedWithPending").await;
    wait_can(&cluster, "list", "pods", &a, true).await;
    // let the reconcile that follows our own writes settle
    barrier(&cluster, &name).await;

    let from = Timestamp::now();
    // the measurement window: several resync periods of an idle operator
    tokio::time::sleep(resync * 4).await;
    let to = Timestamp::now();
    let reconciles = op
        .log_lines()
        .iter()
        .filter(|l| l["message"] == "reconciled" && l["teamaccess"] == name.as_str())
        .filter(|l| {
            l["timestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| t >= from && t <= to)
        })
        .count();
    assert!(
        reconciles >= 3,
        "the operator resynced during the window ({reconciles} reconciles)"
    );
    let writes: Vec<_> = support::writes_by(&cluster, &op.user, from, to)
        .await
        .into_iter()
        .filter(|w| w.resource != "leases")
        .collect();
    assert!(
        writes.is_empty(),
        "no writes in the steady state: {writes:#?}"
    );
}
