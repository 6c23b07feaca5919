//! Which TeamAccess objects a watch event concerns. kube's Controller queues
//! TeamAccess names; these map namespace, Role and RoleBinding events to them.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::access::compare::controller_owner;
use crate::access::naming;
use crate::api::teamaccess::TeamAccess;
use crate::controller::Caches;

/// A namespace event concerns the TeamAccess objects that select it now,
/// name it, or own a managed object in it (so a removed label revokes at
/// once). Never all of them.
pub fn for_namespace(
    ns: &Namespace,
    teamaccesses: &Store<TeamAccess>,
    caches: &Caches,
) -> Vec<ObjectRef<TeamAccess>> {
    let (tas, roles, bindings) = (
        teamaccesses.state(),
        caches.roles.state(),
        caches.bindings.state(),
    );
    let managed = (roles.iter().map(|r| &r.metadata)).chain(bindings.iter().map(|b| &b.metadata));
    teamaccesses_for_namespace(ns, tas.iter().map(|t| t.as_ref()), managed)
}

/// A Role or RoleBinding event concerns its controller owner, or, when the
/// owner reference was removed, the TeamAccess its labels name: that one
/// must learn at once that its object is no longer its own (Conflict, and
/// its binding there deleted), not at the next resync.
pub fn for_managed(meta: &ObjectMeta) -> Option<ObjectRef<TeamAccess>> {
    controller_owner(meta)
        .or_else(|| naming::owner_hint(meta.labels.as_ref(), meta.annotations.as_ref()))
        .map(|owner| ObjectRef::new(&owner))
}

/// What of a TeamAccess calls for a reconcile when it changes: its spec
/// (the generation), labels, annotations, finalizers and deletion; not its
/// status. Every reconcile writes the status, and reconciling again on that
/// write of our own was most of the reconciles of a large convergence (3,600
/// for 1,000 TeamAccess objects). A hash, as kube's predicate filter takes.
pub fn reconcile_worthy(ta: &TeamAccess) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let m = &ta.metadata;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        m.generation,
        &m.labels,
        &m.annotations,
        &m.finalizers,
        m.deletion_timestamp.as_ref().map(|t| t.0),
    )
        .hash(&mut h);
    Some(h.finish())
}

/// See [`for_namespace`]; pure, over any TeamAccess objects and managed
/// objects' metadata.
pub fn teamaccesses_for_namespace<'a>(
    ns: &Namespace,
    teamaccesses: impl IntoIterator<Item = &'a TeamAccess>,
    managed: impl IntoIterator<Item = &'a ObjectMeta>,
) -> Vec<ObjectRef<TeamAccess>> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Vec::new();
    };
    let empty = BTreeMap::new();
    let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
    let mut refs: BTreeSet<String> = teamaccesses
        .into_iter()
        .filter(|ta| {
            ta.spec.grants.iter().any(|g| {
                g.namespaces.iter().flatten().any(|n| n == name)
                    || (g.namespace_selector.as_ref()).is_some_and(|s| s.matches(labels))
            })
        })
        .map(|ta| ta.name_any())
        .collect();
    refs.extend(
        managed
            .into_iter()
            .filter(|meta| meta.namespace.as_deref() == Some(name))
            .filter_map(controller_owner),
    );
    refs.into_iter().map(|n| ObjectRef::new(&n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    use crate::api::fixtures::namespace;

    fn ta(name: &str, grants: serde_json::Value) -> TeamAccess {
        crate::api::fixtures::teamaccess(name, grants, false)
    }

    fn owned(ns: &str, owner: &str, controller: bool) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "teamaccess.dev/v1alpha1".into(),
                kind: "TeamAccess".into(),
                name: owner.into(),
                uid: "u".into(),
                controller: Some(controller),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        }
    }

    fn names(refs: Vec<ObjectRef<TeamAccess>>) -> Vec<String> {
        refs.into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn a_namespace_event_reaches_who_names_selects_or_owns_something_there() {
        let tas = [
            ta("names", json!([{"tier": "Reader", "namespaces": ["dev"]}])),
            ta(
                "selects",
                json!([{"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "a"}}}]),
            ),
            ta(
                "elsewhere",
                json!([{"tier": "Reader", "namespaces": ["prod"]}]),
            ),
            ta(
                "unlabelled",
                json!([{"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "b"}}}]),
            ),
        ];
        // the label that selected it was removed: its old owner still hears of it
        let managed = [
            owned("dev", "unlabelled", true),
            owned("dev", "not-controller", false),
            owned("prod", "elsewhere", true),
        ];
        let dev = namespace("dev", &[("team", "a")]);
        assert_eq!(
            names(teamaccesses_for_namespace(&dev, &tas, &managed)),
            ["names", "selects", "unlabelled"]
        );
        let other = namespace("other", &[]);
        assert!(teamaccesses_for_namespace(&other, &tas, &managed).is_empty());
    }

    #[test]
    fn only_a_change_beyond_the_status_calls_for_a_reconcile() {
        let mut base = ta("t", json!([{"tier": "Reader", "namespaces": ["dev"]}]));
        base.metadata.generation = Some(1);
        let h = reconcile_worthy(&base);
        let mut status = base.clone();
        status.status = Some(Default::default());
        status.metadata.resource_version = Some("42".into());
        assert_eq!(reconcile_worthy(&status), h, "our own status write");
        let changed: [fn(&mut TeamAccess); 5] = [
            |t| t.metadata.generation = Some(2),
            |t| t.metadata.labels = Some([("a".to_string(), "b".to_string())].into()),
            |t| t.metadata.annotations = Some([("a".to_string(), "b".to_string())].into()),
            |t| t.metadata.finalizers = Some(vec!["teamaccess.dev/cleanup".into()]),
            |t| {
                t.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                    ))
            },
        ];
        for (i, change) in changed.iter().enumerate() {
            let mut t = base.clone();
            change(&mut t);
            assert_ne!(reconcile_worthy(&t), h, "change {i}");
        }
    }

    #[test]
    fn a_managed_object_event_reaches_its_controller_owner_only() {
        assert_eq!(
            for_managed(&owned("dev", "x", true)).map(|r| r.name),
            Some("x".into())
        );
        assert_eq!(for_managed(&owned("dev", "x", false)), None);
        let mut foreign = owned("dev", "x", true);
        foreign.owner_references.as_mut().unwrap()[0].api_version = "example.com/v1".into();
        assert_eq!(for_managed(&foreign), None);
        // owner reference stripped: the labels still say whose it was
        let mut stripped = owned("dev", "x", true);
        stripped.owner_references = None;
        stripped.labels = Some(
            [
                (naming::LABEL_MANAGED_BY, naming::MANAGED_BY_VALUE),
                (naming::LABEL_OWNER, "x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        );
        assert_eq!(for_managed(&stripped).map(|r| r.name), Some("x".into()));
        stripped.annotations = Some(
            [(
                naming::ANNOTATION_OWNER_NAME.to_string(),
                "x-full".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            for_managed(&stripped).map(|r| r.name),
            Some("x-full".into())
        );
    }
}
