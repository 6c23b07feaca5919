//! What should exist: the reconcile decision as a pure function.
//!
//! From one TeamAccess, the namespaces that exist, the API groups the cluster
//! serves, the protection settings and the time, [`compute`] says which
//! namespaces are targeted and what should happen in each; [`role`] and
//! [`role_binding`] build the objects to apply. No I/O here: the controller
//! feeds it from caches, `render` from files, the tests from tables.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};

use crate::access::naming;
use crate::access::tiers::{self, Tier};
use crate::api::teamaccess::{Grant, TeamAccess};

/// Namespaces that are never written, by default. Their controllers run with
/// cluster-wide identities; a namespace admin there is a cluster admin.
pub const DEFAULT_PROTECTED_NAMESPACES: &[&str] = &[
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "flux-system",
    "argocd",
    "cert-manager",
];

/// Operator settings that shape the desired state.
/// No `Default`: settings that protect nothing must never be one call away.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Never written (the operator's own namespace belongs here too).
    pub protected_namespaces: BTreeSet<String>,
    /// Namespaces with these labels are never written either.
    pub protected_selector: Option<Selector>,
    /// API groups the Admin tier leaves out.
    pub admin_exclude_api_groups: Vec<String>,
}

impl Settings {
    /// The defaults, with the operator's own namespace protected.
    pub fn with_defaults(operator_namespace: &str) -> Self {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Self::new(
            &strings(DEFAULT_PROTECTED_NAMESPACES),
            None,
            strings(tiers::DEFAULT_ADMIN_EXCLUDE_API_GROUPS),
            operator_namespace,
        )
    }

    /// The one way settings are built: `protected` (empty entries dropped)
    /// plus the operator's own namespace, which is always protected.
    pub fn new(
        protected: &[String],
        protected_selector: Option<Selector>,
        admin_exclude_api_groups: Vec<String>,
        operator_namespace: &str,
    ) -> Self {
        Settings {
            protected_namespaces: (protected.iter().filter(|s| !s.is_empty()).cloned())
                .chain([operator_namespace.to_string()])
                .collect(),
            protected_selector,
            admin_exclude_api_groups,
        }
    }

    /// Whether `name` is never written; `labels` is None when they are not
    /// known (the namespace does not exist, or is only assumed to).
    pub fn is_protected(&self, name: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.protected_namespaces.contains(name)
            || match (&self.protected_selector, labels) {
                (Some(sel), Some(labels)) => sel.matches(labels),
                _ => false,
            }
    }
}

/// What should happen in one targeted namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Plan {
    /// Role and RoleBinding of `tier` should exist.
    Apply,
    /// Named, does not exist yet: apply when it appears.
    Pending,
    /// Protected and named explicitly: refuse, and tell a person.
    Denied,
    /// Protected and matched only by a selector: leave it, quietly.
    Skipped,
    /// Only grants past their validUntil select it.
    Expired,
    /// Only grants before their validFrom select it.
    NotYetValid,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    /// The tier that applies, or would apply if the plan allowed.
    pub tier: Tier,
    pub plan: Plan,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every targeted namespace, sorted by name.
    pub targets: Vec<Target>,
    /// The next validFrom/validUntil boundary after `now`.
    pub next_transition: Option<Timestamp>,
}

impl Desired {
    pub fn to_apply(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.plan == Plan::Apply)
    }
}

/// Where `now` falls in a grant's validity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    Active,
    NotYetValid,
    Expired,
}

pub fn window(grant: &Grant, now: Timestamp) -> Window {
    if grant.valid_from.as_ref().is_some_and(|t| now < t.0) {
        Window::NotYetValid
    } else if grant.valid_until.as_ref().is_some_and(|t| now >= t.0) {
        Window::Expired
    } else {
        Window::Active
    }
}

/// How the grants of one TeamAccess reach one namespace.
#[derive(Default)]
struct Reach {
    active: Option<Tier>,
    active_named: bool,
    not_yet: Option<Tier>,
    expired: Option<Tier>,
}

/// Namespaces as the computation sees them: labels, and whether it is going away.
pub struct NamespaceView<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub terminating: bool,
    /// Taken as existing without being seen (offline, no inventory): its
    /// labels are unknown, so no selector matches it and no protection
    /// selector judges it.
    pub assumed: bool,
}

static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();

/// Every namespace a grant names, taken as existing with unknown labels: what
/// a reviewer without cluster access wants to see.
pub fn index_named<'a>(
    access: impl IntoIterator<Item = &'a TeamAccess>,
) -> BTreeMap<&'a str, NamespaceView<'a>> {
    access
        .into_iter()
        .flat_map(|ta| &ta.spec.grants)
        .flat_map(|g| g.namespaces.iter().flatten())
        .map(|name| {
            (
                name.as_str(),
                NamespaceView {
                    labels: &NO_LABELS,
                    terminating: false,
                    assumed: true,
                },
            )
        })
        .collect()
}

/// Indexes Namespace objects by name.
pub fn index_namespaces<'a>(
    namespaces: impl IntoIterator<Item = &'a Namespace>,
) -> BTreeMap<&'a str, NamespaceView<'a>> {
    namespaces
        .into_iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.as_deref()?;
            Some((
                name,
                NamespaceView {
                    labels: ns.metadata.labels.as_ref().unwrap_or(&NO_LABELS),
                    terminating: ns.metadata.deletion_timestamp.is_some(),
                    assumed: false,
                },
            ))
        })
        .collect()
}

/// The reconcile decision for one TeamAccess.
pub fn compute(
    access: &TeamAccess,
    namespaces: &BTreeMap<&str, NamespaceView<'_>>,
    settings: &Settings,
    now: Timestamp,
) -> Desired {
    let mut reach: BTreeMap<String, Reach> = BTreeMap::new();
    let mut next_transition: Option<Timestamp> = None;

    for grant in &access.spec.grants {
        for t in [&grant.valid_from, &grant.valid_until]
            .into_iter()
            .flatten()
        {
            if t.0 > now && next_transition.is_none_or(|n| t.0 < n) {
                next_transition = Some(t.0);
            }
        }
        let w = window(grant, now);
        let mut mark = |name: &str, named: bool| {
            let r = reach.entry(name.to_string()).or_default();
            let slot = match w {
                Window::Active => {
                    r.active_named |= named;
                    &mut r.active
                }
                Window::NotYetValid => &mut r.not_yet,
                Window::Expired => &mut r.expired,
            };
            *slot = (*slot).max(Some(grant.tier));
        };
        for name in grant.namespaces.iter().flatten() {
            mark(name, true);
        }
        if let Some(sel) = grant
            .namespace_selector
            .as_ref()
            .and_then(|s| s.to_selector())
        {
            for (name, ns) in namespaces {
                if !ns.assumed && sel.matches(ns.labels) {
                    mark(name, false);
                }
            }
        }
    }

    let targets = reach
        .into_iter()
        .filter_map(|(name, r)| {
            let ns = namespaces.get(name.as_str());
            if ns.is_some_and(|n| n.terminating) {
                return None;
            }
            let (tier, plan) = if let Some(tier) = r.active {
                let labels = ns.filter(|n| !n.assumed).map(|n| n.labels);
                let plan = if settings.is_protected(&name, labels) {
                    if r.active_named {
                        Plan::Denied
                    } else {
                        Plan::Skipped
                    }
                } else if ns.is_none() {
                    Plan::Pending
                } else {
                    Plan::Apply
                };
                (tier, plan)
            } else if let Some(tier) = r.not_yet {
                (tier, Plan::NotYetValid)
            } else {
                (r.expired?, Plan::Expired)
            };
            Some(Target {
                namespace: name,
                tier,
                plan,
            })
        })
        .collect();

    Desired {
        targets,
        next_transition,
    }
}

/// Rules for each tier, computed once per reconcile.
pub fn rules_by_tier(
    served_api_groups: &BTreeSet<String>,
    settings: &Settings,
) -> BTreeMap<Tier, Vec<PolicyRule>> {
    Tier::ALL
        .into_iter()
        .map(|t| {
            (
                t,
                tiers::rules(t, served_api_groups, &settings.admin_exclude_api_groups),
            )
        })
        .collect()
}

fn metadata(access: &TeamAccess, namespace: &str, tier: Tier) -> ObjectMeta {
    let name = access.metadata.name.as_deref().unwrap_or_default();
    let labels = BTreeMap::from([
        (
            naming::LABEL_MANAGED_BY.to_string(),
            naming::MANAGED_BY_VALUE.to_string(),
        ),
        (naming::LABEL_OWNER.to_string(), naming::owner_label(name)),
        (naming::LABEL_TIER.to_string(), tier.as_str().to_string()),
    ]);
    let mut annotations = BTreeMap::new();
    if naming::owner_label_shortened(name) {
        annotations.insert(naming::ANNOTATION_OWNER_NAME.to_string(), name.to_string());
    }
    if let Some(uid) = &access.metadata.uid {
        annotations.insert(naming::ANNOTATION_OWNER_UID.to_string(), uid.clone());
    }
    let annotations = (!annotations.is_empty()).then_some(annotations);
    // Without a UID (offline render) there is nothing to own by: the object
    // is printed without ownerReferences and the controller adopts nothing.
    let owner_references = access.metadata.uid.as_ref().map(|uid| {
        vec![OwnerReference {
            api_version: "teamaccess.dev/v1alpha1".into(),
            kind: "TeamAccess".into(),
            name: name.to_string(),
            uid: uid.clone(),
            controller: Some(true),
            // deliberately unset: setting it needs update on the owner's
            // finalizers, and foreground deletion is not what we want
            block_owner_deletion: None,
        }]
    });
    ObjectMeta {
        name: Some(naming::object_name(name)),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        annotations,
        owner_references,
        ..Default::default()
    }
}

/// The Role that gives `tier` in `namespace`.
pub fn role(access: &TeamAccess, namespace: &str, tier: Tier, rules: &[PolicyRule]) -> Role {
    Role {
        metadata: metadata(access, namespace, tier),
        rules: Some(rules.to_vec()),
    }
}

/// The RoleBinding of the Role to every declared group. Its roleRef never
/// depends on the tier, so a tier change never touches it.
pub fn role_binding(access: &TeamAccess, namespace: &str, tier: Tier) -> RoleBinding {
    let name = access.metadata.name.as_deref().unwrap_or_default();
    RoleBinding {
        metadata: metadata(access, namespace, tier),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: naming::object_name(name),
        },
        subjects: Some(
            access
                .spec
                .groups
                .iter()
                .map(|g| Subject {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Group".into(),
                    name: g.id.clone(),
                    namespace: None,
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
pub(crate) mod proptests;
#[cfg(test)]
mod tests;
