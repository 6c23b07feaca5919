//! The write plan without a cluster: each rule of the module comment.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::access::desired::{self, Settings};
use crate::api::fixtures::GROUP;

const UID: &str = "uid-1";
const NOW: &str = "2026-06-01T00:00:00Z";

fn access(suspend: bool, grants: serde_json::Value) -> TeamAccess {
    crate::api::fixtures::teamaccess("pay", grants, suspend)
}

fn namespace(name: &str, terminating: bool) -> Namespace {
    if terminating {
        crate::api::fixtures::terminating(name, &[])
    } else {
        crate::api::fixtures::namespace(name, &[])
    }
}

fn rules() -> BTreeMap<Tier, Vec<PolicyRule>> {
    let groups: BTreeSet<String> = [String::new()].into();
    desired::rules_by_tier(&groups, &Settings::with_defaults("teamaccess-system"))
}

fn owned<K: Managed>(mut obj: K, uid: &str, object_uid: &str) -> K {
    obj.meta_mut().uid = Some(object_uid.into());
    obj.meta_mut().owner_references = Some(vec![OwnerReference {
        api_version: "teamaccess.dev/v1alpha1".into(),
        kind: "TeamAccess".into(),
        name: "pay".into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    obj
}

fn foreign<K: Managed>(mut obj: K) -> K {
    obj.meta_mut().uid = Some("someone-else".into());
    obj.meta_mut().owner_references = None;
    obj
}

/// Our Role and RoleBinding for `tier` in `ns`, as they would exist once applied.
fn ours(ta: &TeamAccess, ns: &str, tier: Tier) -> (Role, RoleBinding) {
    let r = rules();
    (
        owned(
            desired::role(ta, ns, tier, &r[&tier]),
            UID,
            &format!("r-{ns}"),
        ),
        owned(desired::role_binding(ta, ns, tier), UID, &format!("b-{ns}")),
    )
}

fn plan_for(
    ta: &TeamAccess,
    namespaces: &[Namespace],
    roles: &[Role],
    bindings: &[RoleBinding],
    applied_before: &[&str],
) -> WritePlan {
    let index = desired::index_namespaces(namespaces);
    let desired = desired::compute(
        ta,
        &index,
        &Settings::with_defaults("teamaccess-system"),
        NOW.parse::<Timestamp>().unwrap(),
    );
    let existing = Existing::at_name("teamaccess-pay", roles, bindings);
    let applied: HashSet<String> = applied_before.iter().map(|s| s.to_string()).collect();
    plan(&Inputs {
        access: ta,
        desired: &desired,
        rules: &rules(),
        existing: &existing,
        namespaces: &index,
        applied_before: &applied,
    })
}

fn writer_in(ns: &[&str]) -> serde_json::Value {
    json!([{"tier": "Writer", "namespaces": ns}])
}

#[test]
fn missing_objects_are_created_create_only_and_a_delete_after_apply_is_drift() {
    let ta = access(false, writer_in(&["a", "b"]));
    let p = plan_for(
        &ta,
        &[namespace("a", false), namespace("b", false)],
        &[],
        &[],
        &["b"],
    );
    assert_eq!(p.grants.len(), 2);
    assert!(p.revocations.is_empty());
    let (a, b) = (&p.grants[0], &p.grants[1]);
    assert!(matches!(a.role, Decision::Create { drift: None, .. }));
    assert!(matches!(
        a.binding,
        Some(Decision::Create { drift: None, .. })
    ));
    let Decision::Create { drift: Some(d), .. } = &b.role else {
        panic!(
            "a Role deleted after we applied it is recreated as drift: {:?}",
            b.role
        )
    };
    assert_eq!(d.action, DriftAction::Recreate);
    assert_eq!(d.action.event_action(), "Recreate");
}

#[test]
fn matching_objects_cost_no_write() {
    let ta = access(false, writer_in(&["a"]));
    let (role, binding) = ours(&ta, "a", Tier::Writer);
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[binding], &["a"]);
    assert_eq!(p.grants[0].role, Decision::Keep);
    assert_eq!(p.grants[0].binding, Some(Decision::Keep));
    assert!(!p.grants[0].role.writes());
}

#[test]
fn a_foreign_role_is_a_conflict_and_no_binding_is_planned_beside_it() {
    let ta = access(false, writer_in(&["a"]));
    let (role, binding) = ours(&ta, "a", Tier::Writer);
    let p = plan_for(
        &ta,
        &[namespace("a", false)],
        &[foreign(role)],
        &[binding],
        &[],
    );
    assert!(
        matches!(&p.grants[0].role, Decision::Conflict(m) if m.contains("Role a/teamaccess-pay"))
    );
    assert_eq!(p.grants[0].binding, None);
}

#[test]
fn our_binding_beside_a_role_that_is_not_ours_is_deleted() {
    for suspend in [false, true] {
        let ta = access(suspend, writer_in(&["a"]));
        let (role, binding) = ours(&ta, "a", Tier::Writer);
        let p = plan_for(
            &ta,
            &[namespace("a", false)],
            &[foreign(role)],
            &[binding],
            &["a"],
        );
        assert!(
            matches!(p.grants[0].role, Decision::Conflict(_)),
            "suspend={suspend}"
        );
        let unbind = p.grants[0].unbind.as_ref().expect("our binding is deleted");
        assert_eq!(
            (unbind.kind, unbind.uid.as_str()),
            (Kind::RoleBinding, "b-a")
        );
    }
    // a foreign binding is never ours to delete
    let ta = access(false, writer_in(&["a"]));
    let (role, binding) = ours(&ta, "a", Tier::Writer);
    let p = plan_for(
        &ta,
        &[namespace("a", false)],
        &[foreign(role)],
        &[foreign(binding)],
        &[],
    );
    assert_eq!(p.grants[0].unbind, None);
}

#[test]
fn a_foreign_binding_is_a_conflict_and_never_written() {
    let ta = access(false, writer_in(&["a"]));
    let (role, binding) = ours(&ta, "a", Tier::Writer);
    let p = plan_for(
        &ta,
        &[namespace("a", false)],
        &[role],
        &[foreign(binding)],
        &[],
    );
    assert_eq!(p.grants[0].role, Decision::Keep);
    assert!(matches!(&p.grants[0].binding, Some(Decision::Conflict(_))));
}

#[test]
fn a_changed_role_ref_is_replaced_with_the_uid_of_what_we_saw() {
    let ta = access(false, writer_in(&["a"]));
    let (role, mut binding) = ours(&ta, "a", Tier::Writer);
    binding.role_ref = RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "ClusterRole".into(),
        name: "cluster-admin".into(),
    };
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[binding], &["a"]);
    let Some(Decision::Replace {
        old,
        drift: Some(d),
        ..
    }) = &p.grants[0].binding
    else {
        panic!("roleRef cannot change in place: {:?}", p.grants[0].binding)
    };
    assert_eq!(old.uid, "b-a");
    assert_eq!(d.action, DriftAction::ReplaceRoleRef);
}

#[test]
fn a_removed_label_is_drift_even_without_a_trace_in_managed_fields() {
    let ta = access(false, writer_in(&["a"]));
    let (mut role, binding) = ours(&ta, "a", Tier::Writer);
    role.metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("teamaccess.dev/tier");
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[binding], &["a"]);
    let Decision::Apply { drift: Some(d), .. } = &p.grants[0].role else {
        panic!(
            "a removed label is restored and reported: {:?}",
            p.grants[0].role
        )
    };
    assert_eq!(d.action, DriftAction::Revert(vec![Field::Labels]));
    assert!(d.note.contains("labels changed by someone"), "{}", d.note);
}

#[test]
fn every_write_to_an_existing_object_carries_the_version_it_was_decided_on() {
    let ta = access(false, json!([{"tier": "Admin", "namespaces": ["a"]}]));
    let (mut role, mut binding) = ours(&ta, "a", Tier::Reader);
    role.metadata.resource_version = Some("41".into());
    binding.metadata.resource_version = Some("42".into());
    let p = plan_for(
        &ta,
        &[namespace("a", false)],
        &[role.clone()],
        &[binding.clone()],
        &["a"],
    );
    let Decision::Apply { object, .. } = &p.grants[0].role else {
        panic!("{:?}", p.grants[0].role)
    };
    assert_eq!(object.metadata.resource_version.as_deref(), Some("41"));
    // revocation: UID and resourceVersion preconditions
    let gone = access(false, json!([{"tier": "Admin", "namespaces": ["b"]}]));
    let p = plan_for(&gone, &[namespace("a", false)], &[role], &[binding], &[]);
    let versions: Vec<_> = (p.revocations[0].deletes.iter())
        .map(|d| (d.uid.as_str(), d.resource_version.as_deref()))
        .collect();
    assert_eq!(versions, [("b-a", Some("42")), ("r-a", Some("41"))]);
    // a create carries none: there is nothing to be stale about
    let p = plan_for(&ta, &[namespace("a", false)], &[], &[], &[]);
    let Decision::Create { object, .. } = &p.grants[0].role else {
        panic!("{:?}", p.grants[0].role)
    };
    assert_eq!(object.metadata.resource_version, None);
}

#[test]
fn a_tier_change_applies_the_role_in_place() {
    let ta = access(false, json!([{"tier": "Admin", "namespaces": ["a"]}]));
    let (role, binding) = ours(&ta, "a", Tier::Reader);
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[binding], &["a"]);
    // our own change (no other field manager wrote): not drift
    assert!(matches!(
        p.grants[0].role,
        Decision::Apply { drift: None, .. }
    ));
    // the binding's roleRef is the same name: only its tier label changes
    assert!(matches!(p.grants[0].binding, Some(Decision::Apply { .. })));
}

#[test]
fn suspended_nothing_is_created_or_widened_and_the_status_says_why() {
    // raised from Reader to Writer while suspended: the Role keeps Reader
    let ta = access(true, writer_in(&["a", "b"]));
    let (role, binding) = ours(&ta, "a", Tier::Reader);
    let p = plan_for(
        &ta,
        &[namespace("a", false), namespace("b", false)],
        &[role],
        &[binding],
        &["a"],
    );
    assert_eq!(p.grants[0].role, Decision::Keep);
    assert_eq!(p.grants[0].suspended, Some(SuspendedNote::NotUpdated));
    assert_eq!(p.grants[1].role, Decision::HoldBack);
    assert_eq!(p.grants[1].suspended, Some(SuspendedNote::NotCreated));
    assert!(p.grants.iter().all(|g| !g.role.writes()));
}

const OTHER: &str = "6d1f0c2a-3b4e-4f5a-8b9c-0d1e2f3a4b5c";

/// TeamAccess "pay" granting `grants` to the given groups.
fn access_for(suspend: bool, groups: &[&str], grants: serde_json::Value) -> TeamAccess {
    let groups: Vec<_> = groups.iter().map(|id| json!({"id": id})).collect();
    serde_json::from_value(json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "metadata": {"name": "pay", "uid": UID},
        "spec": {"groups": groups, "grants": grants, "suspend": suspend},
    }))
    .unwrap()
}

fn subjects(b: &RoleBinding) -> Vec<&str> {
    b.subjects
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect()
}

#[test]
fn suspended_a_removed_group_loses_access_and_the_others_keep_theirs() {
    let before = access_for(false, &[GROUP, OTHER], writer_in(&["a"]));
    let (role, binding) = ours(&before, "a", Tier::Writer);
    let after = access_for(true, &[GROUP], writer_in(&["a"]));
    let p = plan_for(
        &after,
        &[namespace("a", false)],
        &[role],
        &[binding],
        &["a"],
    );
    assert_eq!(p.grants[0].role, Decision::Keep);
    let Some(Decision::Apply { object, .. }) = &p.grants[0].binding else {
        panic!("the binding is narrowed: {:?}", p.grants[0].binding)
    };
    assert_eq!(subjects(object), [GROUP]);
    assert_eq!(
        p.grants[0].suspended,
        Some(SuspendedNote::Narrowed(vec!["subjects"]))
    );
}

#[test]
fn suspended_a_subject_someone_added_is_taken_away() {
    let ta = access(true, writer_in(&["a"]));
    let (role, mut binding) = ours(&ta, "a", Tier::Writer);
    binding.subjects.as_mut().unwrap().push(Subject {
        kind: "User".into(),
        name: "mallory".into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    });
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[binding], &["a"]);
    let Some(Decision::Apply { object, .. }) = &p.grants[0].binding else {
        panic!("{:?}", p.grants[0].binding)
    };
    assert_eq!(subjects(object), [GROUP]);
}

#[test]
fn suspended_a_lowered_tier_and_a_rule_someone_added_are_taken_away() {
    let r = rules();
    // lowered from Writer to Reader
    let before = access(false, writer_in(&["a"]));
    let (role, binding) = ours(&before, "a", Tier::Writer);
    let after = access(true, json!([{"tier": "Reader", "namespaces": ["a"]}]));
    let p = plan_for(
        &after,
        &[namespace("a", false)],
        std::slice::from_ref(&role),
        std::slice::from_ref(&binding),
        &["a"],
    );
    let Decision::Apply { object, .. } = &p.grants[0].role else {
        panic!("{:?}", p.grants[0].role)
    };
    let granted = object.rules.clone().unwrap();
    assert!(
        granted
            .iter()
            .all(|g| r[&Tier::Reader].contains(g) || !r[&Tier::Writer].contains(g)),
        "never wider than Reader"
    );
    assert_eq!(
        crate::access::compare::narrowed_rules(&r[&Tier::Reader], &granted),
        granted,
        "a fixed point: the next reconcile writes nothing"
    );
    // a rule someone added to our Role: gone, and nothing else changes
    let ta = access(true, writer_in(&["a"]));
    let mut tampered = role;
    tampered.rules.as_mut().unwrap().push(PolicyRule {
        api_groups: Some(vec!["".into()]),
        resources: Some(vec!["secrets".into(), "nodes".into()]),
        verbs: vec!["*".into()],
        ..Default::default()
    });
    let p = plan_for(
        &ta,
        &[namespace("a", false)],
        &[tampered],
        &[binding],
        &["a"],
    );
    let Decision::Apply { object, .. } = &p.grants[0].role else {
        panic!("{:?}", p.grants[0].role)
    };
    assert_eq!(object.rules.as_ref(), Some(&r[&Tier::Writer]));
    assert_eq!(
        p.grants[0].suspended,
        Some(SuspendedNote::Narrowed(vec!["rules"]))
    );
}

#[test]
fn suspended_nothing_left_deletes_the_binding_and_the_role() {
    let before = access_for(false, &[OTHER], writer_in(&["a"]));
    let (role, binding) = ours(&before, "a", Tier::Writer);
    let after = access_for(true, &[GROUP], writer_in(&["a"]));
    let p = plan_for(
        &after,
        &[namespace("a", false)],
        &[role],
        &[binding],
        &["a"],
    );
    assert_eq!(p.grants[0].role, Decision::Keep);
    let Some(Decision::Remove(d)) = &p.grants[0].binding else {
        panic!("{:?}", p.grants[0].binding)
    };
    assert_eq!((d.kind, d.uid.as_str()), (Kind::RoleBinding, "b-a"));
    assert_eq!(p.grants[0].suspended, Some(SuspendedNote::Removed));

    // our Role deleted while suspended: the binding to its name goes too
    let ta = access(true, writer_in(&["a"]));
    let (_, binding) = ours(&ta, "a", Tier::Writer);
    let p = plan_for(
        &ta,
        &[namespace("a", false)],
        &[],
        std::slice::from_ref(&binding),
        &["a"],
    );
    assert_eq!(p.grants[0].role, Decision::HoldBack);
    assert!(matches!(&p.grants[0].binding, Some(Decision::Remove(d)) if d.uid == "b-a"));

    // its roleRef pointed elsewhere: not ours to keep, and not recreated
    let mut moved = binding;
    moved.role_ref.kind = "ClusterRole".into();
    moved.role_ref.name = "admin".into();
    let (role, _) = ours(&ta, "a", Tier::Writer);
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[moved], &["a"]);
    assert!(matches!(&p.grants[0].binding, Some(Decision::Remove(d)) if d.uid == "b-a"));
    assert!(p.grants[0].mode == Mode::Suspended);
}

#[test]
fn suspended_stripped_labels_are_restored() {
    let ta = access(true, writer_in(&["a"]));
    let (role, mut binding) = ours(&ta, "a", Tier::Writer);
    binding.metadata.labels = None;
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[binding], &["a"]);
    let Some(Decision::Apply {
        object,
        drift: Some(_),
    }) = &p.grants[0].binding
    else {
        panic!("{:?}", p.grants[0].binding)
    };
    assert_eq!(
        object
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(naming::LABEL_MANAGED_BY))
            .map(String::as_str),
        Some(naming::MANAGED_BY_VALUE)
    );
    assert_eq!(subjects(object), [GROUP]);
}

#[test]
fn revocation_deletes_the_binding_first_with_uid_preconditions() {
    // "a" is no longer granted; "gone" is terminating and takes ours with it
    let ta = access(false, writer_in(&["b"]));
    let (ra, ba) = ours(&ta, "a", Tier::Writer);
    let (rg, bg) = ours(&ta, "gone", Tier::Writer);
    let nss = [
        namespace("a", false),
        namespace("b", false),
        namespace("gone", true),
    ];
    let p = plan_for(&ta, &nss, &[ra, rg], &[ba, bg], &["a"]);
    let kinds: Vec<_> = p.revocations.iter().map(|r| r.namespace.as_str()).collect();
    assert_eq!(kinds, ["a", "gone"]);
    let a = &p.revocations[0];
    assert_eq!(a.target, None, "no grant reaches it: it leaves the status");
    let deletes: Vec<_> = a.deletes.iter().map(|d| (d.kind, d.uid.as_str())).collect();
    assert_eq!(deletes, [(Kind::RoleBinding, "b-a"), (Kind::Role, "r-a")]);
    assert!(p.revocations[1].deletes.is_empty());
}

#[test]
fn revocation_never_deletes_what_we_do_not_own() {
    let ta = access(false, writer_in(&["b"]));
    let (ra, ba) = ours(&ta, "a", Tier::Writer);
    let p = plan_for(
        &ta,
        &[namespace("a", false)],
        &[ra, foreign(ours(&ta, "c", Tier::Writer).0)],
        &[foreign(ba)],
        &[],
    );
    let a = p.revocations.iter().find(|r| r.namespace == "a").unwrap();
    assert_eq!(
        a.deletes.iter().map(|d| d.kind).collect::<Vec<_>>(),
        [Kind::Role]
    );
    assert!(p.revocations.iter().all(|r| r.namespace != "c"));
}

#[test]
fn a_grant_past_valid_until_is_revoked_and_reported_expired() {
    let ta = access(
        false,
        json!([{"tier": "Admin", "namespaces": ["a"], "validUntil": "2026-05-01T00:00:00Z"}]),
    );
    let (role, binding) = ours(&ta, "a", Tier::Admin);
    let p = plan_for(&ta, &[namespace("a", false)], &[role], &[binding], &["a"]);
    assert!(p.grants.is_empty());
    let r = &p.revocations[0];
    assert_eq!(r.target.as_ref().map(|t| t.plan), Some(Plan::Expired));
    assert_eq!(r.deletes.len(), 2);
}

#[test]
fn every_plan_maps_to_the_state_the_status_reports() {
    let states: Vec<_> = [
        Plan::Apply,
        Plan::Pending,
        Plan::Denied,
        Plan::Skipped,
        Plan::Expired,
        Plan::NotYetValid,
    ]
    .into_iter()
    .map(|p| plan_state(p).0)
    .collect();
    use NamespaceState::*;
    assert_eq!(
        states,
        [Applied, Pending, Denied, Skipped, Expired, NotYetValid]
    );
    assert_eq!(plan_state(Plan::Pending).1, Some("namespace not found"));
}

#[test]
fn revert_actions_name_every_changed_field() {
    let a = DriftAction::Revert(vec![Field::Rules, Field::Labels]);
    assert_eq!(a.event_action(), "RevertRulesLabels");
}

#[test]
fn a_narrowing_write_goes_before_a_widening_one() {
    let ns = [namespace("a", false)];
    let plan_between = |before: &TeamAccess, tier_before: Tier, after: &TeamAccess| {
        let (role, binding) = ours(before, "a", tier_before);
        plan_for(after, &ns, &[role], &[binding], &["a"]).grants[0].clone()
    };
    let reader = json!([{"tier": "Reader", "namespaces": ["a"]}]);
    let writer = json!([{"tier": "Writer", "namespaces": ["a"]}]);
    // raised to Writer while OTHER leaves: OTHER must never hold Writer
    let up_and_out = plan_between(
        &access_for(false, &[GROUP, OTHER], reader.clone()),
        Tier::Reader,
        &access_for(false, &[GROUP], writer.clone()),
    );
    assert!(matches!(up_and_out.role, Decision::Apply { .. }));
    assert!(up_and_out.binding_first, "{up_and_out:?}");
    // lowered to Reader while OTHER joins: OTHER must never hold Writer
    let down_and_in = plan_between(
        &access_for(false, &[GROUP], writer.clone()),
        Tier::Writer,
        &access_for(false, &[GROUP, OTHER], reader.clone()),
    );
    assert!(matches!(down_and_in.binding, Some(Decision::Apply { .. })));
    assert!(!down_and_in.binding_first);
    // raised, the same groups: the binding's write is its tier label only
    let up = plan_between(
        &access_for(false, &[GROUP], reader.clone()),
        Tier::Reader,
        &access_for(false, &[GROUP], writer.clone()),
    );
    assert!(!up.binding_first);
    // a group swapped under a raised tier: the newcomer first gets the old
    // (lower) tier, the leaver never the new one
    let swap = plan_between(
        &access_for(false, &[OTHER], reader.clone()),
        Tier::Reader,
        &access_for(false, &[GROUP], writer.clone()),
    );
    assert!(swap.binding_first);
    // suspended nothing widens, so there is nothing to order
    let suspended = plan_between(
        &access_for(false, &[GROUP, OTHER], reader),
        Tier::Reader,
        &access_for(true, &[GROUP], writer),
    );
    assert!(!suspended.binding_first);

    assert_eq!(narrowing_first(true, true), Order::BindingFirst);
    for (widens, narrows) in [(true, false), (false, true), (false, false)] {
        assert_eq!(narrowing_first(widens, narrows), Order::RoleFirst);
    }
}
