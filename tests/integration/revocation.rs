//! Access the spec does not grant never survives, with a realistic
//! adversary: a member of an Admin-tier group acting in its own namespace.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde_json::json;

use crate::operator::{self, Operator, condition, status_until};
use crate::support::{self, can, eventually};

/// The Reader group, and the Admin group of the same namespace.
const READERS: &str = "6c1b7f2a-0d4e-4b8a-9e3f-2a1b0c9d8e7f";
const ADMINS: &str = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

#[tokio::test]
async fn our_binding_never_grants_a_role_someone_took_over() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "takeover", &[]).await;
    let ns = support::namespace(&cluster.client, "takeover", &[]).await;
    let readers = format!("readers-{}", op.id);
    let admins = format!("admins-{}", op.id);
    operator::grant(&cluster, &op, &readers, READERS, "Reader", &ns).await;
    operator::grant(&cluster, &op, &admins, ADMINS, "Admin", &ns).await;
    let c = &cluster.client;
    eventually("Reader access", Duration::from_secs(30), || async {
        can(c, READERS, "list", "pods", &ns).await.then_some(())
    })
    .await;
    assert!(!can(c, READERS, "get", "secrets", &ns).await);

    // an Admin-tier member takes the Reader team's Role over: drops our owner
    // reference and adds a rule it holds itself (so no escalate is needed)
    let member = support::member_of(&cluster, "mallory@example.com", &[ADMINS]).await;
    let roles: Api<Role> = Api::namespaced(member, &ns);
    let role_name = teamaccess::access::naming::object_name(&readers);
    let taken = Timestamp::now();
    let mut role = roles.get(&role_name).await.unwrap();
    role.metadata.owner_references = None;
    role.metadata.managed_fields = None;
    role.rules.get_or_insert_default().push(
        serde_json::from_value(
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
        )
        .unwrap(),
    );
    roles
        .replace(&role_name, &Default::default(), &role)
        .await
        .expect("an Admin member may edit Roles in its namespace with rules it holds");

    // the Reader group loses the stolen rule through our binding: the binding
    // is deleted, and the namespace is Conflict naming the Role
    eventually("our binding gone", Duration::from_secs(30), || async {
        (!can(c, READERS, "get", "secrets", &ns).await
            && !can(c, READERS, "list", "pods", &ns).await)
            .then_some(())
    })
    .await;
    let ta = status_until(&cluster, &readers, "Conflict", |ta| {
        condition(ta, "Stalled")
            .is_some_and(|c| c.reason == "Conflict" && c.message.contains(&role_name))
    })
    .await;
    assert_eq!(ta.status.unwrap().summary.unwrap().failed, 1);
    let bindings: Api<RoleBinding> = Api::namespaced(cluster.client.clone(), &ns);
    assert!(bindings.get_opt(&role_name).await.unwrap().is_none());
    // the foreign Role is left as its new owner made it
    let now = roles.get(&role_name).await.unwrap();
    assert!(now.metadata.owner_references.is_none());
    assert_eq!(now.rules.unwrap().len(), role.rules.unwrap().len());

    // the window, from the audit log: the takeover to our delete of the binding
    let deletes = support::writes_by(&cluster, &op.user, taken, Timestamp::now()).await;
    let delete = deletes
        .iter()
        .find(|e| e.verb == "delete" && e.resource == "rolebindings" && e.namespace == ns)
        .expect("the operator deleted its binding");
    // audit logs name the operator by its user agent
    assert_eq!(
        delete.user_agent,
        format!("teamaccess/{}", env!("CARGO_PKG_VERSION"))
    );
    let window = delete.received.duration_since(taken);
    println!("takeover to binding delete: {} ms", window.as_millis());
    assert!(
        window < k8s_openapi::jiff::SignedDuration::from_secs(10),
        "{window:?}: not from the watch"
    );
    // and the admins' own access is untouched
    assert!(can(c, ADMINS, "get", "secrets", &ns).await);
}

#[tokio::test]
async fn deleting_with_cascade_orphan_still_ends_access() {
    let cluster = support::cluster().await;
    let mut op = Operator::start(&cluster, "orphan", &[]).await;
    let ns = support::namespace(&cluster.client, "orphan", &[]).await;
    let name = format!("orphan-{}", op.id);
    operator::grant(&cluster, &op, &name, READERS, "Writer", &ns).await;
    let c = &cluster.client;
    eventually("Writer access", Duration::from_secs(30), || async {
        can(c, READERS, "create", "deployments.apps", &ns)
            .await
            .then_some(())
    })
    .await;

    // a cluster admin in a hurry: `kubectl delete --cascade=orphan`, while the
    // operator is down, so the garbage collector's orphan finalizer surely
    // strips our owner references before our cleanup runs
    op.kill();
    let from = Timestamp::now();
    let orphan = kube::api::DeleteParams {
        propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
        ..Default::default()
    };
    let _ = operator::teamaccesses(&cluster)
        .delete(&name, &orphan)
        .await
        .unwrap();
    let object = teamaccess::access::naming::object_name(&name);
    let bindings: Api<RoleBinding> = Api::namespaced(c.clone(), &ns);
    let roles: Api<Role> = Api::namespaced(c.clone(), &ns);
    eventually(
        "the garbage collector orphans our objects",
        Duration::from_secs(60),
        || async {
            let b = bindings.get(&object).await.ok()?;
            let r = roles.get(&object).await.ok()?;
            (b.metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty)
                && r.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(Vec::is_empty))
            .then_some(())
        },
    )
    .await;
    assert!(
        can(c, READERS, "create", "deployments.apps", &ns).await,
        "orphaned, access survives until cleanup"
    );

    // the operator comes back: its finalizer cleans up by the owner-UID annotation
    let back = Operator::spawn(&cluster, &op.id, &format!("{}-b", op.id), &[]).await;
    back.wait_for_log("the operator to lead", "leading: reconciling")
        .await;
    operator::gone(&cluster, &name).await;
    assert!(bindings.get_opt(&object).await.unwrap().is_none());
    assert!(roles.get_opt(&object).await.unwrap().is_none());
    eventually("access ended", Duration::from_secs(30), || async {
        (!can(c, READERS, "create", "deployments.apps", &ns).await).then_some(())
    })
    .await;
    // the operator itself deleted them (not the garbage collector)
    let deletes: Vec<String> = support::writes_by(&cluster, &back.user, from, Timestamp::now())
        .await
        .into_iter()
        .filter(|e| e.verb == "delete" && e.namespace == ns && e.code < 300)
        .map(|e| e.resource)
        .collect();
    assert_eq!(
        deletes,
        ["rolebindings", "roles"],
        "the binding first, then the Role"
    );
}

/// A second group of the same team.
const OTHERS: &str = "3e2d1c0b-9a8f-4e7d-8c6b-5a4f3e2d1c0b";

#[tokio::test]
async fn suspend_takes_away_what_the_spec_no_longer_grants() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "suspend-narrows", &[]).await;
    let ns = support::namespace(&cluster.client, "suspend-narrows", &[]).await;
    let team = format!("team-{}", op.id);
    let admins = format!("admins-{}", op.id);
    operator::grant(&cluster, &op, &admins, ADMINS, "Admin", &ns).await;
    let spec = |groups: &[&str], tier: &str, suspend: bool| {
        let groups: Vec<_> = groups.iter().map(|g| json!({"id": g})).collect();
        json!({"groups": groups, "suspend": suspend,
               "grants": [{"tier": tier, "namespaces": [&ns]}]})
    };
    operator::apply(
        &cluster,
        &op,
        &team,
        spec(&[READERS, OTHERS], "Writer", false),
    )
    .await;
    operator::ready(&cluster, &team, "Applied").await;
    let c = &cluster.client;
    for g in [READERS, OTHERS] {
        eventually("Writer access", Duration::from_secs(30), || async {
            can(c, g, "create", "deployments.apps", &ns)
                .await
                .then_some(())
        })
        .await;
    }

    // suspended, then one group removed: it loses access, the other keeps it
    operator::apply(
        &cluster,
        &op,
        &team,
        spec(&[READERS, OTHERS], "Writer", true),
    )
    .await;
    operator::ready(&cluster, &team, "Suspended").await;
    operator::apply(&cluster, &op, &team, spec(&[READERS], "Writer", true)).await;
    eventually(
        "the removed group loses Writer",
        Duration::from_secs(30),
        || async { (!can(c, OTHERS, "create", "deployments.apps", &ns).await).then_some(()) },
    )
    .await;
    assert!(can(c, READERS, "create", "deployments.apps", &ns).await);
    let ta = status_until(&cluster, &team, "says what was narrowed", |ta| {
        (ta.status.iter().flat_map(|s| &s.namespaces)).any(|n| {
            n.name == ns
                && n.message
                    .as_deref()
                    .is_some_and(|m| m.contains("narrowed (subjects)"))
        })
    })
    .await;
    assert_eq!(condition(&ta, "Ready").unwrap().reason, "Suspended");

    // an Admin-tier member adds a user to our binding and a rule to our Role
    let member = support::member_of(&cluster, "mallory@example.com", &[ADMINS]).await;
    let object = teamaccess::access::naming::object_name(&team);
    let bindings: Api<RoleBinding> = Api::namespaced(member.clone(), &ns);
    let mut b = bindings.get(&object).await.unwrap();
    b.metadata.managed_fields = None;
    b.subjects.get_or_insert_default().push(
        serde_json::from_value(json!({"kind": "User", "name": "eve@example.com",
                                      "apiGroup": "rbac.authorization.k8s.io"}))
        .unwrap(),
    );
    bindings
        .replace(&object, &Default::default(), &b)
        .await
        .unwrap();
    let roles: Api<Role> = Api::namespaced(member, &ns);
    let mut r = roles.get(&object).await.unwrap();
    r.metadata.managed_fields = None;
    r.rules.get_or_insert_default().push(
        serde_json::from_value(json!({"apiGroups": ["rbac.authorization.k8s.io"],
                                      "resources": ["roles"], "verbs": ["create"]}))
        .unwrap(),
    );
    roles
        .replace(&object, &Default::default(), &r)
        .await
        .unwrap();
    eventually(
        "the added user and rule are gone",
        Duration::from_secs(30),
        || async {
            (!support::can_user(c, "eve@example.com", "list", "pods", &ns).await
                && !can(c, READERS, "create", "roles.rbac.authorization.k8s.io", &ns).await)
                .then_some(())
        },
    )
    .await;
    assert!(can(c, READERS, "create", "deployments.apps", &ns).await);

    // the tier lowered while suspended: Writer's extra verbs go, Reader's stay
    operator::apply(&cluster, &op, &team, spec(&[READERS], "Reader", true)).await;
    eventually("Writer is taken away", Duration::from_secs(30), || async {
        (!can(c, READERS, "create", "deployments.apps", &ns).await).then_some(())
    })
    .await;
    assert!(can(c, READERS, "list", "pods", &ns).await);

    // the last group removed: nothing is left, so our objects go
    operator::apply(&cluster, &op, &team, spec(&[OTHERS], "Reader", true)).await;
    let plain = Api::<RoleBinding>::namespaced(c.clone(), &ns);
    support::absent(&plain, &object, "binding deleted", Duration::from_secs(30)).await;
    assert!(!can(c, READERS, "list", "pods", &ns).await);
    assert!(
        !can(c, OTHERS, "list", "pods", &ns).await,
        "suspend never creates"
    );
    // and the Admin team never lost anything
    assert!(can(c, ADMINS, "create", "roles.rbac.authorization.k8s.io", &ns).await);
}

#[tokio::test]
async fn a_failed_revocation_stays_in_status_and_is_retried() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "revoke-fails", &[]).await;
    let label = format!("revoke-fails-{}", op.id);
    let ns = support::namespace(
        &cluster.client,
        "revoke-fails",
        &[("teamaccess-test-webhook", &label)],
    )
    .await;
    let name = format!("revfail-{}", op.id);
    operator::grant(&cluster, &op, &name, READERS, "Reader", &ns).await;

    // a webhook that cannot be reached refuses every delete of a RoleBinding
    // in that namespace (failurePolicy Fail): the API server answers 500
    let webhooks: Api<ValidatingWebhookConfiguration> = Api::all(cluster.client.clone());
    let hook: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": label},
        "webhooks": [{
            "name": "refuse.teamaccess.test",
            "clientConfig": {"url": "https://127.0.0.1:1/refuse"},
            "rules": [{"operations": ["DELETE"], "apiGroups": ["rbac.authorization.k8s.io"],
                       "apiVersions": ["v1"], "resources": ["rolebindings"], "scope": "Namespaced"}],
            "namespaceSelector": {"matchLabels": {"teamaccess-test-webhook": label}},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 2,
        }],
    }))
    .unwrap();
    webhooks.create(&Default::default(), &hook).await.unwrap();

    // the grant removed: the namespace is no longer targeted, but our binding
    // cannot be deleted; it stays in status with the server's message
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({"groups": [{"id": READERS}],
        "grants": [{"tier": "Reader", "namespaces": ["elsewhere"]}]}),
    )
    .await;
    let both_true = |ta: &teamaccess::api::teamaccess::TeamAccess| {
        ["Reconciling", "Stalled"]
            .iter()
            .all(|t| condition(ta, t).is_some_and(|c| c.status == "True"))
    };
    let failed_entry = |ta: &teamaccess::api::teamaccess::TeamAccess| {
        (ta.status.iter().flat_map(|s| &s.namespaces)).any(|n| {
            n.name == ns
                && n.state == teamaccess::api::teamaccess::NamespaceState::Error
                && n.message.as_deref().is_some_and(|m| m.contains("webhook"))
        })
    };
    let ta = status_until(
        &cluster,
        &name,
        "Reconciling with the failed revocation",
        |ta| {
            assert!(!both_true(ta), "never Reconciling and Stalled at once");
            failed_entry(ta)
                && condition(ta, "Ready").is_some_and(|c| c.status == "False")
                && condition(ta, "Reconciling").is_some_and(|c| c.status == "True")
        },
    )
    .await;
    assert!(condition(&ta, "Stalled").is_none());
    assert!(
        can(&cluster.client, READERS, "list", "pods", &ns).await,
        "the access the status shows is real"
    );
    // past the grace period (3 s in these tests): Stalled, not Reconciling
    let ta = status_until(
        &cluster,
        &name,
        "Stalled with the failed revocation",
        |ta| {
            assert!(!both_true(ta), "never Reconciling and Stalled at once");
            failed_entry(ta)
                && condition(ta, "Stalled")
                    .is_some_and(|c| c.status == "True" && c.message.contains(&ns))
        },
    )
    .await;
    assert!(condition(&ta, "Reconciling").is_none());

    // the webhook fixed: the retry (with backoff) revokes, and the namespace leaves the status
    webhooks.delete(&label, &Default::default()).await.unwrap();
    eventually("access revoked", Duration::from_secs(60), || async {
        (!can(&cluster.client, READERS, "list", "pods", &ns).await).then_some(())
    })
    .await;
    let ta = operator::ready(&cluster, &name, "AppliedWithPending").await;
    assert!(!(ta.status.iter().flat_map(|s| &s.namespaces)).any(|n| n.name == ns));
}

/// Removes every label of `K` `ns/name`, as a cluster admin in a hurry would.
async fn strip_labels<K>(cluster: &support::Cluster, ns: &str, name: &str)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(cluster.client.clone(), ns);
    let patch = json!({"metadata": {"labels": null}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap_or_else(|e| panic!("stripping labels of {ns}/{name}: {e}"));
}

#[tokio::test]
async fn objects_we_own_are_found_by_ownership_when_their_labels_are_gone() {
    let cluster = support::cluster().await;
    let id = support::unique("unlabelled");
    let no_lease = ["--leader-election=false"];
    let mut first = Operator::spawn(&cluster, &id, &id, &no_lease).await;
    first
        .wait_for_log("the operator to lead", "leading: reconciling")
        .await;
    let expiring_ns = support::namespace(&cluster.client, "unlabelled-expiry", &[]).await;
    let deleted_ns = support::namespace(&cluster.client, "unlabelled-delete", &[]).await;
    let expiring = format!("expiring-{id}");
    let deleted = format!("deleted-{id}");
    let until = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(45);
    let until = Timestamp::from_second(until.as_second())
        .unwrap()
        .to_string();
    let spec = |ns: &str, suspend: bool| {
        json!({"groups": [{"id": READERS}], "suspend": suspend,
               "grants": [{"tier": "Reader", "namespaces": [ns], "validUntil": until}]})
    };
    operator::apply(&cluster, &first, &expiring, spec(&expiring_ns, false)).await;
    operator::grant(&cluster, &first, &deleted, READERS, "Reader", &deleted_ns).await;
    operator::ready(&cluster, &expiring, "Applied").await;
    operator::apply(&cluster, &first, &expiring, spec(&expiring_ns, true)).await;
    operator::ready(&cluster, &expiring, "Suspended").await;

    // the operator down: every label stripped, and one TeamAccess deleted
    first.kill();
    for (ns, name) in [(&expiring_ns, &expiring), (&deleted_ns, &deleted)] {
        let object = teamaccess::access::naming::object_name(name);
        strip_labels::<Role>(&cluster, ns, &object).await;
        strip_labels::<RoleBinding>(&cluster, ns, &object).await;
    }
    let from = Timestamp::now();
    operator::teamaccesses(&cluster)
        .delete(&deleted, &Default::default())
        .await
        .unwrap();

    // a new process: its label-selected caches cannot see these objects
    let second = Operator::spawn(&cluster, &id, &format!("{id}-2"), &no_lease).await;
    second
        .wait_for_log("the operator to lead", "leading: reconciling")
        .await;
    let c = &cluster.client;
    operator::gone(&cluster, &deleted).await;
    let object = teamaccess::access::naming::object_name(&deleted);
    assert!(
        Api::<RoleBinding>::namespaced(c.clone(), &deleted_ns)
            .get_opt(&object)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Role>::namespaced(c.clone(), &deleted_ns)
            .get_opt(&object)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!can(c, READERS, "list", "pods", &deleted_ns).await);
    let deletes = support::writes_by(&cluster, &second.user, from, Timestamp::now()).await;
    for resource in ["rolebindings", "roles"] {
        assert!(
            deletes
                .iter()
                .any(|e| e.verb == "delete" && e.resource == resource && e.namespace == deleted_ns),
            "the operator itself deleted our {resource}, not the garbage collector: {deletes:#?}"
        );
    }

    // suspended, unlabelled: its labels come back (that widens nothing), and
    // at validUntil its access ends
    let object = teamaccess::access::naming::object_name(&expiring);
    let bindings = Api::<RoleBinding>::namespaced(c.clone(), &expiring_ns);
    eventually(
        "our labels restored while suspended",
        Duration::from_secs(30),
        || async {
            let b = bindings.get(&object).await.ok()?;
            b.metadata
                .labels
                .as_ref()?
                .get("app.kubernetes.io/managed-by")
                .map(|_| ())
        },
    )
    .await;
    assert!(can(c, READERS, "list", "pods", &expiring_ns).await);
    support::absent(
        &bindings,
        &object,
        "the binding deleted at expiry",
        Duration::from_secs(90),
    )
    .await;
    assert!(!can(c, READERS, "list", "pods", &expiring_ns).await);
}

#[tokio::test]
async fn a_policy_that_mutates_our_writes_stalls_them_and_they_stay_bounded() {
    use kube::api::DynamicObject;
    use kube::discovery::ApiResource;
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "mutated", &[]).await;
    let label = format!("mutated-{}", op.id);
    let ns = support::namespace(
        &cluster.client,
        "mutated",
        &[("teamaccess-test-mutate", &label)],
    )
    .await;

    // a MutatingAdmissionPolicy strips our managed-by label from RoleBindings
    // in that namespace, whoever writes them
    let gvk =
        |kind: &str| kube::core::GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    let policies: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ApiResource::from_gvk(&gvk("MutatingAdmissionPolicy")),
    );
    let bindings_of_policy: Api<DynamicObject> = Api::all_with(
        cluster.client.clone(),
        &ApiResource::from_gvk(&gvk("MutatingAdmissionPolicyBinding")),
    );
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": label},
        "spec": {
            "matchConstraints": {"resourceRules": [{"apiGroups": ["rbac.authorization.k8s.io"],
                "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["rolebindings"]}]},
            "matchConditions": [{"name": "labelled",
                "expression": "has(object.metadata.labels) && 'app.kubernetes.io/managed-by' in object.metadata.labels"}],
            "failurePolicy": "Fail", "reinvocationPolicy": "Never",
            "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression":
                "[JSONPatch{op: 'remove', path: '/metadata/labels/app.kubernetes.io~1managed-by'}]"}}],
        },
    }))
    .unwrap();
    policies.create(&Default::default(), &policy).await.unwrap();
    let binding: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingAdmissionPolicyBinding",
        "metadata": {"name": label},
        "spec": {"policyName": label,
                 "matchResources": {"namespaceSelector": {"matchLabels": {"teamaccess-test-mutate": label}}}},
    }))
    .unwrap();
    bindings_of_policy
        .create(&Default::default(), &binding)
        .await
        .unwrap();
    // policies take effect shortly after they are created: probe with a binding of our own
    let rbs = Api::<RoleBinding>::namespaced(cluster.client.clone(), &ns);
    eventually("the policy in effect", Duration::from_secs(30), || async {
        let probe: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "probe", "labels": {"app.kubernetes.io/managed-by": "probe"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "Group", "name": "nobody", "apiGroup": "rbac.authorization.k8s.io"}],
        }))
        .unwrap();
        let _ = rbs.delete("probe", &Default::default()).await;
        let stored = rbs.create(&Default::default(), &probe).await.ok()?;
        let stripped = stored.metadata.labels.as_ref().is_none_or(|l| !l.contains_key("app.kubernetes.io/managed-by"));
        stripped.then_some(())
    })
    .await;

    let name = format!("mutated-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({"groups": [{"id": READERS}],
        "grants": [{"tier": "Reader", "namespaces": [ns]}]}),
    )
    .await;
    let ta = status_until(&cluster, &name, "Stalled: MutatedOnAdmission", |ta| {
        condition(ta, "Stalled")
            .is_some_and(|c| c.reason == "MutatedOnAdmission" && c.message.contains(&ns))
    })
    .await;
    assert_eq!(condition(&ta, "Ready").unwrap().status, "False");
    // writes to the binding stay bounded by the backoff: 5 s, 10 s, 20 s...
    let from = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let writes: Vec<_> = support::writes_by(&cluster, &op.user, from, Timestamp::now())
        .await
        .into_iter()
        .filter(|w| w.resource == "rolebindings" && w.namespace == ns)
        .collect();
    println!("writes to the mutated binding in 20 s: {}", writes.len());
    assert!(writes.len() <= 4, "bounded, not a loop: {writes:#?}");
    let (_, metrics) = op.get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("teamaccess_mutated_on_admission_total{kind=\"RoleBinding\"}")),
        "{metrics}"
    );
    bindings_of_policy
        .delete(&label, &Default::default())
        .await
        .unwrap();
    policies.delete(&label, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn a_write_decided_on_a_stale_version_never_touches_a_newer_object() {
    let cluster = support::cluster().await;
    let ns = support::namespace(&cluster.client, "stale", &[]).await;
    let id = support::unique("stale");
    // the operator pauses 5 s between deciding an apply in `ns` and sending it
    let failpoint = format!("before-apply:{ns}:5");
    let op = Operator::spawn_with(
        &cluster,
        &id,
        &id,
        "teamaccess-manager",
        &[],
        &[("TEAMACCESS_FAILPOINT", &failpoint)],
    )
    .await;
    op.wait_for_log("the operator to lead", "leading: reconciling")
        .await;
    let name = format!("stale-{id}");
    operator::grant(&cluster, &op, &name, READERS, "Reader", &ns).await;
    let c = &cluster.client;
    let object = teamaccess::access::naming::object_name(&name);
    let roles: Api<Role> = Api::namespaced(c.clone(), &ns);

    // drift: the operator decides to apply our Role again, on this version...
    let mut ours = roles.get(&object).await.unwrap();
    ours.metadata.managed_fields = None;
    ours.rules.get_or_insert_default().push(
        serde_json::from_value(
            json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["delete"]}),
        )
        .unwrap(),
    );
    roles
        .replace(&object, &Default::default(), &ours)
        .await
        .unwrap();
    eventually(
        "the operator paused before its apply",
        Duration::from_secs(30),
        || async {
            op.log_lines()
                .iter()
                .any(|l| l["message"] == "failpoint: pausing" && l["kind"] == "Role")
                .then_some(())
        },
    )
    .await;
    // ...and before it writes, someone replaces the Role with one of their own
    roles.delete(&object, &Default::default()).await.unwrap();
    let foreign: Role = serde_json::from_value(json!({
        "metadata": {"name": object, "labels": {"app.kubernetes.io/managed-by": "teamaccess"}},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}],
    }))
    .unwrap();
    let created = roles.create(&Default::default(), &foreign).await.unwrap();

    // the stale apply is refused (409), read again, and the namespace is
    // Conflict: the foreign Role is byte for byte what its owner made, and
    // our binding no longer grants it
    status_until(&cluster, &name, "Conflict naming the Role", |ta| {
        condition(ta, "Stalled")
            .is_some_and(|c| c.reason == "Conflict" && c.message.contains(&object))
    })
    .await;
    let now = roles.get(&object).await.unwrap();
    assert_eq!(
        serde_json::to_string(&now).unwrap(),
        serde_json::to_string(&created).unwrap(),
        "the foreign Role is unchanged"
    );
    support::absent(
        &Api::<RoleBinding>::namespaced(c.clone(), &ns),
        &object,
        "our binding deleted",
        Duration::from_secs(30),
    )
    .await;
    assert!(!can(c, READERS, "get", "secrets", &ns).await);
}

#[tokio::test]
async fn an_expiry_is_announced_before_it_happens_and_named_after() {
    let cluster = support::cluster().await;
    // a 20 s warning window for a grant that ends 45 s after its creation
    let op = Operator::start(&cluster, "expiring", &["--expiry-warning", "20s"]).await;
    let ns = support::namespace(&cluster.client, "expiring", &[]).await;
    let name = format!("expiring-{}", op.id);
    let until = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(45);
    let until = Timestamp::from_second(until.as_second()).unwrap();
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({"groups": [{"id": READERS}], "grants": [
            {"tier": "Admin", "namespaces": [&ns], "validUntil": until.to_string()},
            {"tier": "Reader", "namespaces": [&ns]},
        ]}),
    )
    .await;
    let ta = operator::ready(&cluster, &name, "Applied").await;
    let status = ta.status.unwrap();
    assert_eq!(status.tiers.as_deref(), Some("Admin,Reader"));
    assert!(
        !condition_message(&cluster, &name)
            .await
            .contains("expiring soon")
    );

    // inside the window: an event, and a line in the Ready message
    let note = format!("grant 0 (Admin in {ns}) expires at {until}");
    operator::event_with(&cluster, &name, "GrantExpiringSoon", &note).await;
    status_until(
        &cluster,
        &name,
        "the Ready message names the expiry",
        |ta| {
            condition(ta, "Ready").is_some_and(|c| c.status == "True" && c.message.contains(&note))
        },
    )
    .await;
    assert_eq!(
        operator::events(&cluster, &name, "GrantExpiringSoon")
            .await
            .len(),
        1,
        "once, not per resync"
    );

    // past it: Admin is gone from the printer column and named as expired
    let ta = status_until(&cluster, &name, "the expired grant named", |ta| {
        ta.status.as_ref().is_some_and(|s| {
            s.inactive_grants.iter().any(|g| {
                g.index == 0
                    && g.state == teamaccess::api::teamaccess::GrantState::Expired
                    && g.reaches == ns
            })
        })
    })
    .await;
    assert_eq!(ta.status.unwrap().tiers.as_deref(), Some("Reader"));
    assert!(
        !can(
            &cluster.client,
            READERS,
            "create",
            "roles.rbac.authorization.k8s.io",
            &ns
        )
        .await
    );
    assert!(can(&cluster.client, READERS, "list", "pods", &ns).await);
}

async fn condition_message(cluster: &support::Cluster, name: &str) -> String {
    let ta = operator::teamaccesses(cluster).get(name).await.unwrap();
    condition(&ta, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn onboarding_and_drift_repair_are_measured() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "latency", &[]).await;
    let team = support::unique("latency");
    let name = format!("latency-{}", op.id);
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({"groups": [{"id": READERS}],
        "grants": [{"tier": "Reader", "namespaceSelector": {"matchLabels": {"latency": team}}}]}),
    )
    .await;
    operator::ready(&cluster, &name, "Applied").await;
    let count = |body: &str, family: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(&format!("teamaccess_{family}_count")))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0.0)
    };
    let (_, before) = op.get("/metrics").await;
    let ns = support::namespace(&cluster.client, "latency", &[("latency", &team)]).await;
    let object = teamaccess::access::naming::object_name(&name);
    let bindings: Api<RoleBinding> = Api::namespaced(cluster.client.clone(), &ns);
    eventually("onboarded", Duration::from_secs(30), || async {
        bindings.get_opt(&object).await.unwrap().map(|_| ())
    })
    .await;
    bindings.delete(&object, &Default::default()).await.unwrap();
    let after = eventually(
        "both histograms counted",
        Duration::from_secs(30),
        || async {
            let (_, body) = op.get("/metrics").await;
            (count(&body, "onboarding_seconds") > count(&before, "onboarding_seconds")
                && count(&body, "drift_repair_seconds") > count(&before, "drift_repair_seconds"))
            .then_some(body)
        },
    )
    .await;
    // no label carries a namespace
    assert!(!after.contains(&ns), "{after}");
}
