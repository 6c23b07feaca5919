//! config/admission/: the ValidatingAdmissionPolicy that lets only the
//! operator change or delete its Roles and RoleBindings, on the real API
//! server. The adversary is the one revocation.rs uses: a member of an
//! Admin-tier group, whom RBAC allows to edit Roles and RoleBindings in its
//! namespace; the policy refuses each such edit, while the operator, the
//! garbage collector and the namespace controller keep working.
//!
//! The policy is cluster-wide and the control plane is shared by tests
//! running in parallel, so this test binds a copy of the sample to its own
//! namespaces only (a namespaceSelector on a label no other test sets), with
//! its own operator's ServiceAccount in place of the production one, and
//! removes both when it ends, failed or not.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use teamaccess::access::naming;

use crate::operator::{self, Operator};
use crate::support::{self, Cluster, can, eventually};

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/admission/policy.yaml");
/// The operator's identity in production (config/rbac, config/manager).
const PRODUCTION_OPERATOR: &str = "system:serviceaccount:teamaccess-system:teamaccess";
/// Only this test's namespaces carry it: the binding selects them by it.
const SCOPE_LABEL: &str = "teamaccess-test/admission";
/// What the policy's message says, whoever is refused.
const REFUSED: &str = "only the operator may change or delete it";

const READERS: &str = "3e7a1c5b-9d2f-4a8e-b6c4-1f0e2d3c4b5a";
const ADMINS: &str = "7b6a5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d";

/// The sample: the policy and its binding, as shipped.
fn sample() -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let text = std::fs::read_to_string(POLICY).expect("config/admission/policy.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("the sample parses");
    assert_eq!(docs.len(), 2, "a policy and its binding");
    let policy: ValidatingAdmissionPolicy =
        serde_json::from_value(docs[0].clone()).expect("a ValidatingAdmissionPolicy");
    let binding: ValidatingAdmissionPolicyBinding =
        serde_json::from_value(docs[1].clone()).expect("a ValidatingAdmissionPolicyBinding");
    (policy, binding)
}

/// The sample as this test applies it: named for `id`, the operator's
/// identity replaced by `operator`, bound to namespaces labelled `id` only.
fn scoped(
    id: &str,
    operator: &str,
) -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let (mut policy, mut binding) = sample();
    let name = format!("teamaccess-managed-rbac-{id}");
    policy.metadata.name = Some(name.clone());
    let spec = policy.spec.as_mut().unwrap();
    let variable = spec
        .variables
        .iter_mut()
        .flatten()
        .find(|v| v.name == "operator")
        .expect("the sample names the operator in variables.operator");
    assert_eq!(variable.expression, format!("'{PRODUCTION_OPERATOR}'"));
    variable.expression = format!("'{operator}'");
    binding.metadata.name = Some(name.clone());
    let b = &mut binding.spec;
    assert_eq!(b.policy_name, "teamaccess-managed-rbac");
    assert!(
        b.match_resources.is_none(),
        "the shipped binding covers every namespace"
    );
    b.policy_name = name;
    b.match_resources = Some(
        serde_json::from_value(json!({"namespaceSelector": {"matchLabels": {SCOPE_LABEL: id}}}))
            .unwrap(),
    );
    (policy, binding)
}

#[test]
fn the_sample_names_the_production_operator() {
    let sa = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/rbac/service_account.yaml"
    ))
    .unwrap();
    let sa: Value = serde_saphyr::from_str(&sa).unwrap();
    assert_eq!(
        PRODUCTION_OPERATOR,
        format!(
            "system:serviceaccount:{}:{}",
            sa["metadata"]["namespace"].as_str().unwrap(),
            sa["metadata"]["name"].as_str().unwrap()
        )
    );
    // the label the policy matches is the one the operator writes
    let (policy, _) = sample();
    let condition = &policy.spec.unwrap().match_conditions.unwrap()[0].expression;
    let label = format!(
        "oldObject.metadata.labels['{}'] == '{}'",
        naming::LABEL_MANAGED_BY,
        naming::MANAGED_BY_VALUE
    );
    assert!(condition.contains(&label), "{condition}");
    assert!(condition.contains(&format!("'{}'", naming::ANNOTATION_OWNER_UID)));
    // judged by the object before the request, never by the one requested
    assert!(
        !condition.replace("oldObject.", "").contains("object."),
        "{condition}"
    );
}

/// Whether `result` is the policy's refusal (and not, say, RBAC's).
fn refused<T: std::fmt::Debug>(what: &str, result: Result<T, kube::Error>) {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{what}: {s:?}");
            assert!(
                s.message.contains("ValidatingAdmissionPolicy") && s.message.contains(REFUSED),
                "{what}: refused, but not by the policy: {}",
                s.message
            );
        }
        other => panic!("{what}: not refused: {other:?}"),
    }
}

#[tokio::test]
async fn only_the_operator_changes_or_deletes_our_roles_and_bindings() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "admission", &[]).await;
    let (policy, binding) = scoped(&op.id, &op.user);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(cluster.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(cluster.client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("the API server accepts the sample policy");
    let result = AssertUnwindSafe(with_policy(&cluster, &op, &bindings, &binding))
        .catch_unwind()
        .await;
    // cluster-wide objects: gone whatever happened above
    let name = policy.metadata.name.as_deref().unwrap();
    let _ = bindings.delete(name, &DeleteParams::default()).await;
    let _ = policies.delete(name, &DeleteParams::default()).await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

async fn with_policy(
    cluster: &Cluster,
    op: &Operator,
    bindings: &Api<ValidatingAdmissionPolicyBinding>,
    binding: &ValidatingAdmissionPolicyBinding,
) {
    let scope = [(SCOPE_LABEL, op.id.as_str())];
    let ns = support::namespace(&cluster.client, "admission", &scope).await;
    let doomed = support::namespace(&cluster.client, "admission-gone", &scope).await;
    let readers = format!("readers-{}", op.id);
    let admins = format!("admins-{}", op.id);
    operator::apply(
        cluster,
        op,
        &readers,
        json!({"groups": [{"id": READERS}], "grants": [{"tier": "Reader", "namespaces": [ns, doomed]}]}),
    )
    .await;
    operator::ready(cluster, &readers, "Applied").await;
    operator::grant(cluster, op, &admins, ADMINS, "Admin", &ns).await;
    let c = &cluster.client;
    let object = naming::object_name(&readers);
    // without the policy, RBAC lets an Admin-tier member do all of this
    eventually("Admin access", Duration::from_secs(30), || async {
        can(
            c,
            ADMINS,
            "delete",
            "rolebindings.rbac.authorization.k8s.io",
            &ns,
        )
        .await
        .then_some(())
    })
    .await;
    for verb in ["update", "patch", "delete"] {
        for resource in ["roles", "rolebindings"] {
            assert!(
                can(
                    c,
                    ADMINS,
                    verb,
                    &format!("{resource}.rbac.authorization.k8s.io"),
                    &ns
                )
                .await,
                "RBAC allows an Admin member to {verb} {resource}"
            );
        }
    }

    bindings
        .create(&PostParams::default(), binding)
        .await
        .expect("the API server accepts the sample binding");
    let member = support::member_of(cluster, "mallory@example.com", &[ADMINS]).await;
    let roles: Api<Role> = Api::namespaced(member.clone(), &ns);
    let role_bindings: Api<RoleBinding> = Api::namespaced(member, &ns);
    // a policy takes a moment to reach the admission plugin; a dry run is
    // admitted like the real thing and changes nothing
    let dry_delete = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(
        "the policy to be enforced",
        Duration::from_secs(30),
        || async {
            role_bindings
                .delete(&object, &dry_delete)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;

    let before = Api::<Role>::namespaced(c.clone(), &ns)
        .get(&object)
        .await
        .unwrap();
    // edit our Role: add a rule the member holds itself (no escalate needed)
    let mut edited = roles.get(&object).await.unwrap();
    edited.metadata.managed_fields = None;
    edited.rules.get_or_insert_default().push(
        serde_json::from_value(
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}),
        )
        .unwrap(),
    );
    refused(
        "adding a rule",
        roles
            .replace(&object, &PostParams::default(), &edited)
            .await,
    );
    let merge = |patch: Value| Patch::Merge(patch);
    refused(
        "stripping the managed-by label",
        roles
            .patch(
                &object,
                &PatchParams::default(),
                &merge(json!({"metadata": {"labels": {naming::LABEL_MANAGED_BY: null}}})),
            )
            .await,
    );
    refused(
        "stripping every label, annotation and owner reference at once",
        roles
            .patch(
                &object,
                &PatchParams::default(),
                &merge(json!({"metadata": {"labels": null, "annotations": null, "ownerReferences": null}})),
            )
            .await,
    );
    refused(
        "removing the owner reference",
        roles
            .patch(
                &object,
                &PatchParams::default(),
                &merge(json!({"metadata": {"ownerReferences": null}})),
            )
            .await,
    );
    refused(
        "editing our RoleBinding's subjects",
        role_bindings
            .patch(
                &object,
                &PatchParams::default(),
                &merge(json!({"subjects": [{"kind": "Group", "name": ADMINS, "apiGroup": "rbac.authorization.k8s.io"}]})),
            )
            .await,
    );
    refused(
        "deleting our RoleBinding",
        role_bindings
            .delete(&object, &DeleteParams::default())
            .await,
    );
    refused(
        "deleting our Role",
        roles.delete(&object, &DeleteParams::default()).await,
    );
    let after = Api::<Role>::namespaced(c.clone(), &ns)
        .get(&object)
        .await
        .unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "nothing reached our Role"
    );
    // the member's own objects are not ours: the policy leaves them alone
    let own = Role {
        metadata: kube::api::ObjectMeta {
            name: Some("mallory-own".into()),
            ..Default::default()
        },
        rules: Some(vec![
            serde_json::from_value(
                json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}),
            )
            .unwrap(),
        ]),
    };
    roles.create(&PostParams::default(), &own).await.unwrap();
    roles
        .delete("mallory-own", &DeleteParams::default())
        .await
        .expect("a Role that is not ours is the member's to delete");

    // the operator still updates its objects: a tier change rewrites the Role
    assert!(!can(c, READERS, "create", "deployments.apps", &ns).await);
    operator::apply(
        cluster,
        op,
        &readers,
        json!({"groups": [{"id": READERS}], "grants": [{"tier": "Writer", "namespaces": [ns, doomed]}]}),
    )
    .await;
    operator::ready(cluster, &readers, "Applied").await;
    eventually("Writer access", Duration::from_secs(30), || async {
        can(c, READERS, "create", "deployments.apps", &ns)
            .await
            .then_some(())
    })
    .await;

    // the namespace controller may still empty a namespace being deleted
    Api::<Namespace>::all(c.clone())
        .delete(&doomed, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the namespace with our objects to be deleted",
        Duration::from_secs(60),
        || async {
            Api::<Namespace>::all(c.clone())
                .get_opt(&doomed)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    // and deleting the TeamAccess still cleans up, through the policy
    operator::teamaccesses(cluster)
        .delete(&readers, &DeleteParams::default())
        .await
        .unwrap();
    operator::gone(cluster, &readers).await;
    assert!(
        Api::<Role>::namespaced(c.clone(), &ns)
            .get_opt(&object)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<RoleBinding>::namespaced(c.clone(), &ns)
            .get_opt(&object)
            .await
            .unwrap()
            .is_none()
    );
    assert!(!can(c, READERS, "list", "pods", &ns).await);
}
