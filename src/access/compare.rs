//! Does an existing Role or RoleBinding match what should exist, and if not,
//! who changed it?
//!
//! The comparison is semantic: only what we set counts (others may add labels
//! or annotations of their own; server-side apply leaves those alone), and
//! server-defaulted fields such as `subjects[].apiGroup` are not a difference.
//! An equal object is never written, so the steady state costs no writes.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A part of a managed object that can differ from what we want.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// Cannot be changed in place: the binding is replaced.
    RoleRef,
    Rules,
    Subjects,
    Labels,
    Annotations,
}

impl Field {
    /// As the API names the field, for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Field::RoleRef => "roleRef",
            Field::Rules => "rules",
            Field::Subjects => "subjects",
            Field::Labels => "labels",
            Field::Annotations => "annotations",
        }
    }

    /// Capitalised, for event actions (`RevertRulesLabels`).
    pub fn title(self) -> &'static str {
        match self {
            Field::RoleRef => "RoleRef",
            Field::Rules => "Rules",
            Field::Subjects => "Subjects",
            Field::Labels => "Labels",
            Field::Annotations => "Annotations",
        }
    }
}

/// The kinds of object the operator manages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Role,
    RoleBinding,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Role => "Role",
            Kind::RoleBinding => "RoleBinding",
        }
    }
}

/// One kind of managed object, so Role and RoleBinding share one code path
/// through the plan and the writes.
pub trait Managed:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    /// The parts of `have` that differ from `want`; empty when it matches.
    fn differences(want: &Self, have: &Self) -> Vec<Field>;
    /// What we may write while suspended: `want` cut down so it grants no
    /// more than `have` does (and, built from `want`, no more than the spec
    /// does now). None when nothing would be left.
    fn narrowed(want: Self, have: &Self) -> Option<Self>;
    /// Whether `a` grants anything `b` does not: writing `a` over `b` widens
    /// access (rules or subjects; labels grant nothing).
    fn grants_beyond(a: &Self, b: &Self) -> bool;
}

impl Managed for Role {
    const KIND: Kind = Kind::Role;
    fn differences(want: &Self, have: &Self) -> Vec<Field> {
        role_differences(want, have)
    }
    fn narrowed(mut want: Self, have: &Self) -> Option<Self> {
        let rules = narrowed_rules(
            want.rules.as_deref().unwrap_or_default(),
            have.rules.as_deref().unwrap_or_default(),
        );
        if rules.is_empty() {
            return None;
        }
        want.rules = Some(rules);
        keep_tier_label(&mut want.metadata, &have.metadata);
        Some(want)
    }
    fn grants_beyond(a: &Self, b: &Self) -> bool {
        let by = b.rules.as_deref().unwrap_or_default();
        (a.rules.iter().flatten()).any(|r| !covered(r, by))
    }
}

impl Managed for RoleBinding {
    const KIND: Kind = Kind::RoleBinding;
    fn differences(want: &Self, have: &Self) -> Vec<Field> {
        binding_differences(want, have)
    }
    fn narrowed(mut want: Self, have: &Self) -> Option<Self> {
        // another roleRef grants rules we never chose: nothing of it is ours to keep
        if want.role_ref != have.role_ref {
            return None;
        }
        let held: Vec<_> = have
            .subjects
            .iter()
            .flatten()
            .map(normalize_subject)
            .collect();
        let subjects: Vec<Subject> = (want.subjects.take().into_iter().flatten())
            .filter(|s| held.contains(&normalize_subject(s)))
            .collect();
        if subjects.is_empty() {
            return None;
        }
        want.subjects = Some(subjects);
        keep_tier_label(&mut want.metadata, &have.metadata);
        Some(want)
    }
    fn grants_beyond(a: &Self, b: &Self) -> bool {
        let held: Vec<_> = b.subjects.iter().flatten().map(normalize_subject).collect();
        a.role_ref != b.role_ref
            || (a.subjects.iter().flatten()).any(|s| !held.contains(&normalize_subject(s)))
    }
}

/// While suspended the rules may stay those of the old tier: the tier label
/// keeps saying which (ours is restored if removed; it is a hint, not access).
fn keep_tier_label(want: &mut ObjectMeta, have: &ObjectMeta) {
    use crate::access::naming::LABEL_TIER;
    if let (Some(w), Some(tier)) = (
        want.labels.as_mut(),
        have.labels.as_ref().and_then(|h| h.get(LABEL_TIER)),
    ) {
        w.insert(LABEL_TIER.to_string(), tier.clone());
    }
}

/// Whether `rule` allows `verb` on `resource` in `group` (for the names
/// given; none means every name), with RBAC's wildcards.
fn allows(rule: &PolicyRule, group: &str, resource: &str, verb: &str, names: &[String]) -> bool {
    let has =
        |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == "*" || x == v);
    let resource_matches = rule.resources.iter().flatten().any(|r| {
        r == "*"
            || r == resource
            || resource
                .split_once('/')
                .is_some_and(|(_, sub)| r.strip_prefix("*/") == Some(sub))
    });
    let names_match = match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(allowed) => !names.is_empty() && names.iter().all(|n| allowed.contains(n)),
    };
    has(&rule.api_groups, group)
        && resource_matches
        && rule.verbs.iter().any(|v| v == "*" || v == verb)
        && names_match
}

/// Whether every permission `rule` spells out is allowed by one of `by`.
/// Wildcards in `rule` are taken literally, so a `*` is covered only by a `*`.
fn covered(rule: &PolicyRule, by: &[PolicyRule]) -> bool {
    if rule.resources.as_ref().is_none_or(Vec::is_empty) {
        // non-resource rules (not valid in a Role): only the same rule covers it
        return by.iter().any(|b| normalize_rule(b) == normalize_rule(rule));
    }
    let names = rule.resource_names.as_deref().unwrap_or_default();
    (rule.api_groups.iter().flatten()).all(|g| {
        (rule.resources.iter().flatten())
            .all(|r| (rule.verbs.iter()).all(|v| by.iter().any(|b| allows(b, g, r, v, names))))
    })
}

/// The rules of `want` that `have` also grants, so the result is never
/// wider than either. When `have` is already within `want` it is kept as it
/// is (no rewrite of an equal grant); otherwise each rule of `want` keeps
/// what `have` covers, split per group and resource where only part is.
pub fn narrowed_rules(want: &[PolicyRule], have: &[PolicyRule]) -> Vec<PolicyRule> {
    if have.iter().all(|h| covered(h, want)) {
        return have.to_vec();
    }
    let mut out = Vec::new();
    for rule in want {
        if covered(rule, have) {
            out.push(rule.clone());
            continue;
        }
        if rule.resources.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let names = rule.resource_names.as_deref().unwrap_or_default();
        for g in rule.api_groups.iter().flatten() {
            for r in rule.resources.iter().flatten() {
                let verbs: Vec<String> = (rule.verbs.iter())
                    .filter(|v| have.iter().any(|h| allows(h, g, r, v, names)))
                    .cloned()
                    .collect();
                if !verbs.is_empty() {
                    out.push(PolicyRule {
                        api_groups: Some(vec![g.clone()]),
                        resources: Some(vec![r.clone()]),
                        verbs,
                        resource_names: rule.resource_names.clone(),
                        non_resource_urls: None,
                    });
                }
            }
        }
    }
    out
}

/// Whether `uid` is the controller owner of `meta`. Ownership is this and
/// nothing else: labels are hints anyone can copy.
pub fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Whether cleanup of TeamAccess `uid` may delete this object: ours by owner
/// reference, or (only here) an object at our name with no owner references
/// left whose owner-UID annotation is `uid`: finalizers run in no order, and
/// the garbage collector's orphan finalizer may strip the references first.
pub fn ours_for_cleanup(meta: &ObjectMeta, uid: &str, object_name: &str) -> bool {
    owned_by(meta, uid)
        || (meta.owner_references.as_ref().is_none_or(Vec::is_empty)
            && meta.name.as_deref() == Some(object_name)
            && (meta.annotations.as_ref())
                .and_then(|a| a.get(crate::access::naming::ANNOTATION_OWNER_UID))
                .is_some_and(|v| v == uid))
}

/// The name of the TeamAccess that controls a managed object, by its
/// controller reference (for triggers: the name is the queue key).
pub fn controller_owner(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == "TeamAccess"
                && o.api_version.starts_with("teamaccess.dev/")
        })
        .map(|o| o.name.clone())
}

/// Whether a label or annotation key we set is gone from `have`. We never
/// remove our own keys, so this is someone else's doing, even when
/// managedFields keeps no trace of it (removing a field leaves none).
pub fn our_keys_removed(want: &ObjectMeta, have: &ObjectMeta) -> bool {
    let removed = |w: &Option<BTreeMap<String, String>>, h: &Option<BTreeMap<String, String>>| {
        w.iter()
            .flatten()
            .any(|(k, _)| h.as_ref().is_none_or(|h| !h.contains_key(k)))
    };
    removed(&want.labels, &have.labels) || removed(&want.annotations, &have.annotations)
}

fn ours_present(
    want: &Option<BTreeMap<String, String>>,
    have: &Option<BTreeMap<String, String>>,
) -> bool {
    want.iter()
        .flatten()
        .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
}

fn meta_differences(want: &ObjectMeta, have: &ObjectMeta, out: &mut Vec<Field>) {
    if !ours_present(&want.labels, &have.labels) {
        out.push(Field::Labels);
    }
    if !ours_present(&want.annotations, &have.annotations) {
        out.push(Field::Annotations);
    }
}

/// A rule with absent and empty lists made the same.
pub type NormalRule = [Vec<String>; 5];

pub fn normalize_rule(r: &PolicyRule) -> NormalRule {
    let v = |o: &Option<Vec<String>>| o.clone().unwrap_or_default();
    [
        v(&r.api_groups),
        v(&r.resources),
        r.verbs.clone(),
        v(&r.resource_names),
        v(&r.non_resource_urls),
    ]
}

/// The parts of `have` that differ from `want`; empty when it matches.
pub fn role_differences(want: &Role, have: &Role) -> Vec<Field> {
    let mut out = Vec::new();
    let rules = |r: &Role| {
        r.rules
            .iter()
            .flatten()
            .map(normalize_rule)
            .collect::<Vec<_>>()
    };
    // equal as stored is the common case (every drift event compares every
    // namespace of the TeamAccess) and needs no copy; only rules that differ
    // as written are normalized, to tell an omitted list from an empty one
    if want.rules != have.rules && rules(want) != rules(have) {
        out.push(Field::Rules);
    }
    meta_differences(&want.metadata, &have.metadata, &mut out);
    out
}

fn normalize_subject(s: &Subject) -> (String, String, String, String) {
    // the API server defaults apiGroup for User and Group subjects
    let api_group = match (s.kind.as_str(), s.api_group.as_deref()) {
        ("User" | "Group", None | Some("")) => "rbac.authorization.k8s.io".to_string(),
        (_, g) => g.unwrap_or_default().to_string(),
    };
    (
        s.kind.clone(),
        api_group,
        s.name.clone(),
        s.namespace.clone().unwrap_or_default(),
    )
}

/// The parts of `have` that differ from `want`; empty when it matches.
/// `roleRef` first: it cannot be changed in place, so it forces a re-create.
pub fn binding_differences(want: &RoleBinding, have: &RoleBinding) -> Vec<Field> {
    let mut out = Vec::new();
    if want.role_ref != have.role_ref {
        out.push(Field::RoleRef);
    }
    let subjects = |b: &RoleBinding| {
        b.subjects
            .iter()
            .flatten()
            .map(normalize_subject)
            .collect::<Vec<_>>()
    };
    if subjects(want) != subjects(have) {
        out.push(Field::Subjects);
    }
    meta_differences(&want.metadata, &have.metadata, &mut out);
    out
}

/// Who changed the object after our last write, from managedFields: the
/// field managers other than `ours` whose last write is at or after our own.
/// Empty when managedFields do not tell (then the change is ours to make, as
/// after a spec edit or an expiry, not drift).
pub fn changed_by(meta: &ObjectMeta, ours: &str) -> Vec<String> {
    let entries = meta.managed_fields.iter().flatten();
    let our_last = entries
        .clone()
        .filter(|e| e.manager.as_deref() == Some(ours))
        .filter_map(|e| e.time.as_ref().map(|t| t.0))
        .max();
    let mut others: Vec<String> = entries
        .filter(|e| e.manager.as_deref() != Some(ours))
        .filter(|e| match (our_last, e.time.as_ref()) {
            (Some(ours), Some(t)) => t.0 >= ours,
            // we never wrote it (recreated by someone) or no time: theirs
            (None, _) => true,
            (Some(_), None) => false,
        })
        .filter_map(|e| e.manager.clone())
        .collect();
    others.sort();
    others.dedup();
    others
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::RoleRef;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    fn binding(subject_api_group: Option<&str>) -> RoleBinding {
        let mut b = RoleBinding {
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name: "teamaccess-x".into(),
            },
            subjects: Some(vec![Subject {
                kind: "Group".into(),
                name: "g".into(),
                api_group: subject_api_group.map(Into::into),
                namespace: None,
            }]),
            ..Default::default()
        };
        b.metadata.labels = Some(BTreeMap::from([(
            "teamaccess.dev/tier".into(),
            "Reader".into(),
        )]));
        b
    }

    #[test]
    fn server_defaults_and_foreign_labels_are_not_differences() {
        let want = binding(None);
        let mut have = binding(Some("rbac.authorization.k8s.io"));
        have.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("someone/else".into(), "x".into());
        have.metadata.resource_version = Some("42".into());
        assert!(binding_differences(&want, &have).is_empty());
    }

    #[test]
    fn each_kind_of_change_is_named() {
        let want = binding(None);
        let mut have = binding(None);
        have.role_ref.name = "cluster-admin".into();
        have.subjects.as_mut().unwrap().push(Subject {
            kind: "User".into(),
            name: "mallory".into(),
            ..Default::default()
        });
        have.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("teamaccess.dev/tier".into(), "Admin".into());
        assert_eq!(
            binding_differences(&want, &have),
            [Field::RoleRef, Field::Subjects, Field::Labels]
        );

        let rule = |verb: &str| PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec![verb.into()],
            ..Default::default()
        };
        let role = |verb| Role {
            rules: Some(vec![rule(verb)]),
            ..Default::default()
        };
        assert_eq!(
            role_differences(&role("get"), &role("delete")),
            [Field::Rules]
        );
        assert!(role_differences(&role("get"), &role("get")).is_empty());
    }

    #[test]
    fn only_a_controller_reference_with_our_uid_is_ownership() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut meta = ObjectMeta::default();
        let owner = |uid: &str, controller| OwnerReference {
            uid: uid.into(),
            controller,
            ..Default::default()
        };
        assert!(!owned_by(&meta, "u1"));
        meta.owner_references = Some(vec![owner("u1", None), owner("u2", Some(true))]);
        assert!(!owned_by(&meta, "u1"));
        assert!(owned_by(&meta, "u2"));
        assert!(ours_for_cleanup(&meta, "u2", "whatever"));
    }

    #[test]
    fn the_manager_who_wrote_after_us_is_named() {
        let entry = |m: &str, t: &str| ManagedFieldsEntry {
            manager: Some(m.into()),
            time: Some(Time(t.parse().unwrap())),
            ..Default::default()
        };
        let mut meta = ObjectMeta {
            managed_fields: Some(vec![
                entry("kubectl-edit", "2026-01-01T00:00:00Z"),
                entry("teamaccess", "2026-01-02T00:00:00Z"),
            ]),
            ..Default::default()
        };
        assert!(
            changed_by(&meta, "teamaccess").is_empty(),
            "an older edit is history, not drift"
        );
        meta.managed_fields
            .as_mut()
            .unwrap()
            .push(entry("kubectl-patch", "2026-01-03T00:00:00Z"));
        assert_eq!(changed_by(&meta, "teamaccess"), ["kubectl-patch"]);
    }
}
