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
