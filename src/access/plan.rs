//! The write plan: from what exists and what should exist, the writes one
//! reconcile intends (create, apply, replace, delete), each with the
//! precondition it carries. Pure; the controller only performs it.
//!
//! The rules it encodes:
//! - an object at our name that this TeamAccess does not own (no controller
//!   owner reference with its UID) is never written: the namespace is Conflict,
//!   no RoleBinding is planned beside a Role that is not ours, and our own
//!   RoleBinding there is deleted (even suspended: it only narrows);
//! - an object missing from the cache of labelled objects is created with a
//!   create-only write, so a foreign object without our labels answers
//!   AlreadyExists instead of being overwritten (the controller then reads it
//!   and plans that object again);
//! - a roleRef cannot change in place: the binding is replaced (delete with a
//!   UID precondition, then create);
//! - suspended, nothing is created and nothing widens, but what the spec no
//!   longer grants is taken away: an object we own is cut down to what both
//!   it and the spec grant (subjects in both, rules within both), and deleted
//!   only when nothing is left, so removing one group never locks out the
//!   others; a binding whose Role is gone or removed goes with it;
//! - revocation deletes the RoleBinding before the Role (access ends with the
//!   binding), each with a UID precondition, and leaves a terminating
//!   namespace to take our objects with it.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use kube::ResourceExt;

use crate::access::compare::{self, Field, Kind, Managed};
use crate::access::desired::{self, Desired, NamespaceView, Plan, Target};
use crate::access::naming;
use crate::access::tiers::Tier;
use crate::api::teamaccess::{NamespaceState, TeamAccess};

/// Whether access may be created or restored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Active,
    /// `spec.suspend`: hold back creating and widening; narrowing goes on.
    Suspended,
}

/// Whether this process (or the last status) saw our objects in a namespace
/// before: a missing object there was deleted by someone, which is drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum History {
    New,
    AppliedBefore,
}

/// What we do about a change someone else made to one of our objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriftAction {
    /// It was deleted: create it again.
    Recreate,
    /// Its roleRef was changed: replace the binding.
    ReplaceRoleRef,
    /// These fields were changed: apply ours again.
    Revert(Vec<Field>),
}

impl DriftAction {
    /// The event action; one series per kind of change, so a note is never
    /// hidden under another's.
    pub fn event_action(&self) -> String {
        match self {
            DriftAction::Recreate => "Recreate".into(),
            DriftAction::ReplaceRoleRef => "ReplaceRoleRef".into(),
            DriftAction::Revert(fields) => {
                let mut a = String::from("Revert");
                fields.iter().for_each(|f| a.push_str(f.title()));
                a
            }
        }
    }
}

/// A change someone else made to one of our objects, which we revert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub action: DriftAction,
    pub note: String,
}

/// The decision for one object we want to exist.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision<K> {
    /// It exists and matches (or we may not change it while suspended).
    Keep,
    /// Suspended and missing: not created.
    HoldBack,
    /// Create-only: AlreadyExists means an object we could not see.
    Create { object: K, drift: Option<Drift> },
    /// Server-side apply of ours over an object we own.
    Apply { object: K, drift: Option<Drift> },
    /// Delete exactly the object seen (`old`), then create `object`
    /// (roleRef is immutable).
    Replace {
        old: Delete,
        object: K,
        drift: Option<Drift>,
    },
    /// Someone else's object holds our name: never touched.
    Conflict(String),
    /// Suspended, and nothing the spec grants is left in it: delete exactly
    /// the object seen.
    Remove(Delete),
}

impl<K> Decision<K> {
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Decision::Create { .. }
                | Decision::Apply { .. }
                | Decision::Replace { .. }
                | Decision::Remove(_)
        )
    }
}

/// A delete of exactly the object we decided on: UID and resourceVersion
/// preconditions, so neither a newer object at the same name nor a version
/// changed since the decision is hit (that is read again and decided afresh).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: Option<String>,
}

impl Delete {
    /// The delete of the object `meta` describes, as it was seen.
    pub fn of(kind: Kind, meta: &kube::api::ObjectMeta) -> Self {
        Delete {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone(),
        }
    }
}

/// Grant access in one namespace: the Role, then the RoleBinding.
#[derive(Clone, Debug, PartialEq)]
pub struct GrantPlan {
    pub namespace: String,
    pub tier: Tier,
    pub role: Decision<Role>,
    /// None when the Role is not ours: never bind our groups to it.
    pub binding: Option<Decision<RoleBinding>>,
    /// Our RoleBinding, to delete if the Role at our name turns out not to
    /// be ours (its owner reference removed, or replaced by someone): our
    /// binding would grant the groups someone else's rules.
    pub unbind: Option<Delete>,
    /// Suspended: what we hold back or took away, for the status.
    pub suspended: Option<SuspendedNote>,
    /// The mode the decisions were made in; a fresh decision after a
    /// conflict is made in the same one.
    pub mode: Mode,
    /// The RoleBinding's write narrows (a group goes) and the Role's widens
    /// (a higher tier): the binding is written, and confirmed, first. In the
    /// other order the departing group would hold the new tier, which
    /// neither the old spec nor the new one grants, for as long as the
    /// second write takes (or for good, if it fails).
    pub binding_first: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuspendedNote {
    /// Both exist, but differ from the spec in ways that would widen access.
    NotUpdated,
    /// One or both are missing.
    NotCreated,
    /// What the spec no longer grants was taken away (the fields or objects named).
    Narrowed(Vec<&'static str>),
    /// Nothing the spec grants was left: our objects were deleted.
    Removed,
}

/// How a namespace's status message starts once access was taken away
/// while suspended; the status keeps it until the suspension ends.
pub const NARROWED: &str = "suspended: narrowed";

impl SuspendedNote {
    /// The namespace's status message.
    pub fn message(&self) -> String {
        match self {
            SuspendedNote::NotUpdated => "suspended: differs from the spec, not widened".into(),
            SuspendedNote::NotCreated => "suspended: not created".into(),
            SuspendedNote::Narrowed(what) => format!(
                "{NARROWED} ({}) to what the spec grants now; nothing widened",
                what.join(" and ")
            ),
            SuspendedNote::Removed => {
                "suspended: nothing the spec grants was left; Role and RoleBinding deleted".into()
            }
        }
    }
}

/// Revoke access in one namespace: bindings before roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokePlan {
    pub namespace: String,
    /// The target this namespace still is (expired, protected...), or None
    /// when no grant reaches it any more (then it leaves the status).
    pub target: Option<Target>,
    pub deletes: Vec<Delete>,
}

/// Every write one reconcile intends, in the order it performs them: grants,
/// then revocations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WritePlan {
    pub grants: Vec<GrantPlan>,
    pub revocations: Vec<RevokePlan>,
}

/// Our objects (at our name) that exist, by namespace: what the cache holds.
#[derive(Debug, Default)]
pub struct Existing<'a> {
    pub roles: BTreeMap<&'a str, &'a Role>,
    pub bindings: BTreeMap<&'a str, &'a RoleBinding>,
}

impl<'a> Existing<'a> {
    /// The objects named `name` among `roles` and `bindings`, by namespace.
    pub fn at_name(
        name: &str,
        roles: impl IntoIterator<Item = &'a Role>,
        bindings: impl IntoIterator<Item = &'a RoleBinding>,
    ) -> Self {
        fn index<'a, K: Managed>(
            name: &str,
            items: impl IntoIterator<Item = &'a K>,
        ) -> BTreeMap<&'a str, &'a K> {
            items
                .into_iter()
                .filter(|o| o.meta().name.as_deref() == Some(name))
                .filter_map(|o| Some((o.meta().namespace.as_deref()?, o)))
                .collect()
        }
        Existing {
            roles: index(name, roles),
            bindings: index(name, bindings),
        }
    }
}

/// Everything the plan is computed from.
pub struct Inputs<'a> {
    pub access: &'a TeamAccess,
    pub desired: &'a Desired,
    pub rules: &'a BTreeMap<Tier, Vec<PolicyRule>>,
    pub existing: &'a Existing<'a>,
    pub namespaces: &'a BTreeMap<&'a str, NamespaceView<'a>>,
    /// Namespaces where our objects were applied before.
    pub applied_before: &'a HashSet<String>,
}

/// The reconcile's writes.
pub fn plan(inputs: &Inputs<'_>) -> WritePlan {
    let access = inputs.access;
    let uid = access.uid().unwrap_or_default();
    let mode = if access.suspended() {
        Mode::Suspended
    } else {
        Mode::Active
    };
    let grants = inputs
        .desired
        .to_apply()
        .map(|t| {
            let history = if inputs.applied_before.contains(&t.namespace) {
                History::AppliedBefore
            } else {
                History::New
            };
            let role = desired::role(access, &t.namespace, t.tier, &inputs.rules[&t.tier]);
            let binding = desired::role_binding(access, &t.namespace, t.tier);
            let have = (
                inputs.existing.roles.get(t.namespace.as_str()).copied(),
                inputs.existing.bindings.get(t.namespace.as_str()).copied(),
            );
            grant(&uid, t, (role, binding), have, mode, history)
        })
        .collect();
    WritePlan {
        grants,
        revocations: revocations(inputs, &uid),
    }
}

/// The plan for one namespace to grant: `want` is our Role and RoleBinding,
/// `have` the objects at our name, if any.
fn grant(
    uid: &str,
    target: &Target,
    (role_want, binding_want): (Role, RoleBinding),
    (role_have, binding_have): (Option<&Role>, Option<&RoleBinding>),
    mode: Mode,
    history: History,
) -> GrantPlan {
    let suspended = (mode == Mode::Suspended)
        .then(|| suspended_note(uid, (&role_want, &binding_want), (role_have, binding_have)))
        .flatten();
    let unbind = binding_have
        .filter(|b| compare::owned_by(&b.metadata, uid))
        .map(|b| Delete::of(Kind::RoleBinding, &b.metadata));
    let order = narrowing_first(
        role_have.is_none_or(|h| Role::grants_beyond(&role_want, h)),
        binding_have.is_some_and(|h| RoleBinding::grants_beyond(h, &binding_want)),
    );
    let role = decide(uid, role_want, role_have, mode, history);
    let binding = match &role {
        Decision::Conflict(_) => None,
        // suspended, and our Role is missing or goes: a binding of ours left
        // to its name would grant whatever Role someone creates there next
        Decision::HoldBack | Decision::Remove(_) if unbind.is_some() => {
            unbind.clone().map(Decision::Remove)
        }
        _ => Some(decide(uid, binding_want, binding_have, mode, history)),
    };
    // suspended, nothing widens: either order only narrows
    let binding_first = order == Order::BindingFirst
        && mode == Mode::Active
        && role.writes()
        && binding.as_ref().is_some_and(Decision::writes);
    GrantPlan {
        namespace: target.namespace.clone(),
        tier: target.tier,
        role,
        binding,
        unbind,
        suspended,
        mode,
        binding_first,
    }
}

/// In which order one namespace's two writes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    RoleFirst,
    BindingFirst,
}

/// Narrowing before widening: every moment between the two writes then
/// grants no more than the old spec or the new one does. A Role that
/// narrows goes first (the groups still bound, old and new, hold less); a
/// binding that narrows goes first when the Role widens (a departing group
/// never holds the higher tier). When both narrow, or both widen, the Role
/// goes first as always: the groups bound before are those of the old spec,
/// and the tiers nest.
pub fn narrowing_first(role_widens: bool, binding_narrows: bool) -> Order {
    if role_widens && binding_narrows {
        Order::BindingFirst
    } else {
        Order::RoleFirst
    }
}

/// What a suspended namespace reports: held back, narrowed, or nothing.
fn suspended_note(
    uid: &str,
    (role_want, binding_want): (&Role, &RoleBinding),
    (role_have, binding_have): (Option<&Role>, Option<&RoleBinding>),
) -> Option<SuspendedNote> {
    let (Some(r), Some(b)) = (role_have, binding_have) else {
        return Some(match binding_have {
            Some(b) if compare::owned_by(&b.metadata, uid) => SuspendedNote::Removed,
            _ => SuspendedNote::NotCreated,
        });
    };
    if !compare::owned_by(&r.metadata, uid) || !compare::owned_by(&b.metadata, uid) {
        return None; // a Conflict, which reports itself
    }
    let (role_cut, binding_cut) = (
        Role::narrowed(role_want.clone(), r),
        RoleBinding::narrowed(binding_want.clone(), b),
    );
    let (Some(role_cut), Some(binding_cut)) = (role_cut, binding_cut) else {
        return Some(SuspendedNote::Removed);
    };
    let mut narrowed = Vec::new();
    if Role::differences(&role_cut, r).contains(&Field::Rules) {
        narrowed.push("rules");
    }
    if RoleBinding::differences(&binding_cut, b).contains(&Field::Subjects) {
        narrowed.push("subjects");
    }
    if !narrowed.is_empty() {
        return Some(SuspendedNote::Narrowed(narrowed));
    }
    let matches = Role::differences(role_want, r).is_empty()
        && RoleBinding::differences(binding_want, b).is_empty();
    (!matches).then_some(SuspendedNote::NotUpdated)
}

/// The decision for one object: `want` is ours, `have` what exists at its name.
pub fn decide<K: Managed>(
    uid: &str,
    want: K,
    have: Option<&K>,
    mode: Mode,
    history: History,
) -> Decision<K> {
    let namespace = want.meta().namespace.clone().unwrap_or_default();
    let name = want.meta().name.clone().unwrap_or_default();
    let kind = K::KIND.as_str();
    let Some(have) = have else {
        if mode == Mode::Suspended {
            return Decision::HoldBack;
        }
        let drift = (history == History::AppliedBefore).then(|| Drift {
            kind: K::KIND,
            namespace: namespace.clone(),
            name: name.clone(),
            action: DriftAction::Recreate,
            note: format!("{kind} {namespace}/{name} was deleted; recreated"),
        });
        return Decision::Create {
            object: want,
            drift,
        };
    };
    if !compare::owned_by(have.meta(), uid) {
        return Decision::Conflict(format!(
            "{kind} {namespace}/{name} exists and is not owned by this TeamAccess"
        ));
    }
    let want = match mode {
        Mode::Active => want,
        // only what both grant; labels of ours come back (they widen nothing)
        Mode::Suspended => match K::narrowed(want, have) {
            Some(cut) => cut,
            None => return Decision::Remove(Delete::of(K::KIND, have.meta())),
        },
    };
    let differences = K::differences(&want, have);
    if differences.is_empty() {
        return Decision::Keep;
    }
    let replace = differences.contains(&Field::RoleRef);
    let by = compare::changed_by(have.meta(), naming::FIELD_MANAGER);
    // a change only we made (a spec edit, an expiry) is not drift; a roleRef
    // we never change in place always is
    let drift = (!by.is_empty() || replace || compare::our_keys_removed(want.meta(), have.meta()))
        .then(|| {
            let who = if by.is_empty() {
                "someone".to_string()
            } else {
                by.join(", ")
            };
            let fields: Vec<&str> = differences.iter().map(|f| f.as_str()).collect();
            Drift {
                kind: K::KIND,
                namespace: namespace.clone(),
                name: name.clone(),
                action: if replace {
                    DriftAction::ReplaceRoleRef
                } else {
                    DriftAction::Revert(differences.clone())
                },
                note: format!(
                    "{kind} {namespace}/{name}: {} changed by {who}; reverted",
                    fields.join(", ")
                ),
            }
        });
    if replace {
        Decision::Replace {
            old: Delete::of(K::KIND, have.meta()),
            object: want,
            drift,
        }
    } else {
        // the version the decision was made on: the API server refuses the
        // apply (409) if the object changed since, even with force
        let mut object = want;
        object.meta_mut().resource_version = have.meta().resource_version.clone();
        Decision::Apply { object, drift }
    }
}

/// Wherever we hold objects but should not: every target not to be applied
/// (expired, protected, ...), and namespaces no grant reaches any more.
fn revocations(inputs: &Inputs<'_>, uid: &str) -> Vec<RevokePlan> {
    let mut revoke_in: BTreeMap<&str, Option<&Target>> = inputs
        .desired
        .targets
        .iter()
        .filter(|t| t.plan != Plan::Apply)
        .map(|t| (t.namespace.as_str(), Some(t)))
        .collect();
    let to_apply: HashSet<&str> = inputs
        .desired
        .to_apply()
        .map(|t| t.namespace.as_str())
        .collect();
    let ours = |meta: &kube::api::ObjectMeta| compare::owned_by(meta, uid);
    let held = (inputs.existing.roles.iter())
        .filter(|(_, r)| ours(&r.metadata))
        .map(|(ns, _)| *ns)
        .chain(
            (inputs.existing.bindings.iter())
                .filter(|(_, b)| ours(&b.metadata))
                .map(|(ns, _)| *ns),
        );
    for ns in held {
        if !to_apply.contains(ns) {
            revoke_in.entry(ns).or_insert(None);
        }
    }
    revoke_in
        .into_iter()
        .map(|(ns, target)| {
            // a terminating namespace takes our objects with it
            let terminating = inputs.namespaces.get(ns).is_some_and(|n| n.terminating);
            let mut deletes = Vec::new();
            if !terminating {
                let delete = |kind: Kind, meta: &kube::api::ObjectMeta| {
                    ours(meta).then(|| Delete::of(kind, meta))
                };
                deletes.extend(
                    (inputs.existing.bindings.get(ns))
                        .and_then(|b| delete(Kind::RoleBinding, &b.metadata)),
                );
                deletes.extend(
                    (inputs.existing.roles.get(ns)).and_then(|r| delete(Kind::Role, &r.metadata)),
                );
            }
            RevokePlan {
                namespace: ns.to_string(),
                target: target.cloned(),
                deletes,
            }
        })
        .collect()
}

/// The state and message a namespace that is not to be applied reports.
pub fn plan_state(plan: Plan) -> (NamespaceState, Option<&'static str>) {
    match plan {
        Plan::Apply => (NamespaceState::Applied, None),
        Plan::Pending => (NamespaceState::Pending, Some("namespace not found")),
        Plan::Denied => (NamespaceState::Denied, Some("protected namespace")),
        Plan::Skipped => (NamespaceState::Skipped, Some("protected namespace")),
        Plan::Expired => (
            NamespaceState::Expired,
            Some("every grant for it is past validUntil"),
        ),
        Plan::NotYetValid => (
            NamespaceState::NotYetValid,
            Some("every grant for it is before validFrom"),
        ),
    }
}

#[cfg(test)]
mod invariant;
#[cfg(test)]
mod tests;
