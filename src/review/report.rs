//! The access report: every subject RBAC lets into a namespace, and through
//! what, computed in memory from one listing of the cluster ([`Inventory`]).
//!
//! A binding is a TeamAccess's when a TeamAccess that exists holds its
//! controller owner reference (by UID, as the operator decides ownership);
//! everything else is unmanaged, whatever its labels say. The access a binding
//! gives is named by comparing its role's rules with the tier tables, so a
//! hand-made copy of a tier reads as that tier, and anything else as custom.

use crate::access::compare::{NormalRule, normalize_rule};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::access::tiers::{self, Tier};
use crate::api::teamaccess::{Grant, TeamAccess};

/// The label Kubernetes puts on the RBAC objects it creates itself.
pub const BOOTSTRAP_LABEL: &str = "kubernetes.io/bootstrapping";
pub const BOOTSTRAP_VALUE: &str = "rbac-defaults";

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Everything the report reads, each kind listed once.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub namespaces: Vec<Namespace>,
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<ClusterRole>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub teamaccesses: Vec<TeamAccess>,
}

/// Where a grant applies. Ordered so cluster-wide grants come first: they
/// apply in every namespace listed after them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// A ClusterRoleBinding: every namespace, present and future.
    Cluster,
    Namespace(String),
}

impl Scope {
    /// "*" for cluster-wide, as RBAC writes "every".
    pub fn as_str(&self) -> &str {
        match self {
            Scope::Cluster => "*",
            Scope::Namespace(n) => n,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubjectKind {
    Group,
    User,
    ServiceAccount,
}

impl SubjectKind {
    /// The three kinds the API server accepts in a binding's subjects.
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "Group" => Some(SubjectKind::Group),
            "User" => Some(SubjectKind::User),
            "ServiceAccount" => Some(SubjectKind::ServiceAccount),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Group => "Group",
            SubjectKind::User => "User",
            SubjectKind::ServiceAccount => "ServiceAccount",
        }
    }
}

/// A subject of a binding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Who {
    pub kind: SubjectKind,
    pub name: String,
    /// ServiceAccounts only.
    pub namespace: Option<String>,
}

impl Who {
    /// The name as RBAC knows it: `ns/name` for a ServiceAccount.
    pub fn qualified_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BindingKind {
    RoleBinding,
    ClusterRoleBinding,
}

impl BindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingKind::RoleBinding => "RoleBinding",
            BindingKind::ClusterRoleBinding => "ClusterRoleBinding",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleKind {
    Role,
    ClusterRole,
}

impl RoleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Role => "Role",
            RoleKind::ClusterRole => "ClusterRole",
        }
    }
}

/// What a binding's role amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Access {
    /// The role's rules are exactly a tier's.
    Tier(Tier),
    /// Rules that are no tier's.
    Custom,
    /// The role does not exist (yet): nothing now, whatever it gets later.
    RoleMissing,
}

impl Access {
    pub fn label(self) -> &'static str {
        match self {
            Access::Tier(t) => t.as_str(),
            Access::Custom => "custom",
            Access::RoleMissing => "missing role",
        }
    }
}

/// The TeamAccess behind a managed binding, and the grant that gives what
/// the binding's role holds in that namespace now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Managed {
    pub teamaccess: String,
    /// Index into `spec.grants`; None when no grant valid now gives this
    /// tier here (the operator has yet to catch up).
    pub grant: Option<usize>,
    pub valid_until: Option<Timestamp>,
}

/// One subject's access through one binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub scope: Scope,
    pub subject: Who,
    /// The `name` a TeamAccess gives this group id, if any does.
    pub display_name: Option<String>,
    pub binding_kind: BindingKind,
    pub binding: String,
    pub role_kind: RoleKind,
    pub role: String,
    pub access: Access,
    pub managed: Option<Managed>,
    /// Made by Kubernetes itself (label `kubernetes.io/bootstrapping=rbac-defaults`).
    pub bootstrap: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Sorted by scope (cluster-wide first), subject, binding.
    pub rows: Vec<Row>,
}

impl Report {
    /// Keeps the cluster-wide rows and those of `namespaces`: everything that
    /// grants access there.
    pub fn retain_namespaces(&mut self, namespaces: &BTreeSet<String>) {
        self.rows.retain(|r| match &r.scope {
            Scope::Cluster => true,
            Scope::Namespace(n) => namespaces.contains(n),
        });
    }
}

fn is_bootstrap(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(BOOTSTRAP_LABEL))
        .is_some_and(|v| v == BOOTSTRAP_VALUE)
}

/// Builds the report. `now` decides which grants are valid.
pub fn build(inventory: &Inventory, now: Timestamp) -> Report {
    let by_uid: HashMap<&str, &TeamAccess> = (inventory.teamaccesses.iter())
        .filter_map(|ta| Some((ta.metadata.uid.as_deref()?, ta)))
        .collect();
    let names = group_names(&inventory.teamaccesses);
    let labels: HashMap<&str, &BTreeMap<String, String>> = (inventory.namespaces.iter())
        .filter_map(|ns| Some((ns.metadata.name.as_deref()?, ns.metadata.labels.as_ref()?)))
        .collect();
    let roles: HashMap<(&str, &str), &Role> = (inventory.roles.iter())
        .filter_map(|r| {
            Some((
                (
                    r.metadata.namespace.as_deref()?,
                    r.metadata.name.as_deref()?,
                ),
                r,
            ))
        })
        .collect();
    let cluster_roles: HashMap<&str, &ClusterRole> = (inventory.cluster_roles.iter())
        .filter_map(|r| Some((r.metadata.name.as_deref()?, r)))
        .collect();
    let mut classifier = Classifier::new();
    let mut rows = Vec::new();
    let empty = BTreeMap::new();

    for rb in &inventory.role_bindings {
        let Some(ns) = rb.metadata.namespace.as_deref() else {
            continue;
        };
        let Some((role_kind, rules)) = role_of(&rb.role_ref, |kind, name| match kind {
            RoleKind::Role => roles.get(&(ns, name)).map(|r| r.rules.as_deref()),
            RoleKind::ClusterRole => cluster_roles.get(name).map(|r| r.rules.as_deref()),
        }) else {
            continue;
        };
        let access = match rules {
            Some(rules) => classifier.access(rules.unwrap_or_default()),
            None => Access::RoleMissing,
        };
        let managed = owner(&rb.metadata, &by_uid).map(|ta| {
            let tier = match access {
                Access::Tier(t) => Some(t),
                _ => None,
            };
            let ns_labels = labels.get(ns).copied().unwrap_or(&empty);
            let (grant, valid_until) = grant_for(ta, ns, ns_labels, tier, now);
            Managed {
                teamaccess: ta.metadata.name.clone().unwrap_or_default(),
                grant,
                valid_until,
            }
        });
        push_rows(
            &mut rows,
            &names,
            Scope::Namespace(ns.to_string()),
            BindingKind::RoleBinding,
            &rb.metadata,
            rb.subjects.as_deref(),
            role_kind,
            &rb.role_ref.name,
            access,
            managed,
        );
    }

    for crb in &inventory.cluster_role_bindings {
        // a ClusterRoleBinding can only refer to a ClusterRole
        let rules = cluster_roles
            .get(crb.role_ref.name.as_str())
            .map(|r| r.rules.as_deref());
        let access = match rules {
            Some(rules) => classifier.access(rules.unwrap_or_default()),
            None => Access::RoleMissing,
        };
        push_rows(
            &mut rows,
            &names,
            Scope::Cluster,
            BindingKind::ClusterRoleBinding,
            &crb.metadata,
            crb.subjects.as_deref(),
            RoleKind::ClusterRole,
            &crb.role_ref.name,
            access,
            None,
        );
    }

    rows.sort_by(|a, b| {
        (&a.scope, &a.subject, a.binding_kind, &a.binding).cmp(&(
            &b.scope,
            &b.subject,
            b.binding_kind,
            &b.binding,
        ))
    });
    Report { rows }
}

#[allow(clippy::too_many_arguments)]
fn push_rows(
    rows: &mut Vec<Row>,
    names: &BTreeMap<String, String>,
    scope: Scope,
    binding_kind: BindingKind,
    meta: &ObjectMeta,
    subjects: Option<&[Subject]>,
    role_kind: RoleKind,
    role: &str,
    access: Access,
    managed: Option<Managed>,
) {
    let bootstrap = is_bootstrap(meta);
    for s in subjects.unwrap_or_default() {
        let Some(kind) = SubjectKind::parse(&s.kind) else {
            continue;
        };
        let display_name = match kind {
            SubjectKind::Group => names.get(&s.name).cloned(),
            _ => None,
        };
        rows.push(Row {
            scope: scope.clone(),
            subject: Who {
                kind,
                name: s.name.clone(),
                namespace: match kind {
                    SubjectKind::ServiceAccount => s.namespace.clone(),
                    _ => None,
                },
            },
            display_name,
            binding_kind,
            binding: meta.name.clone().unwrap_or_default(),
            role_kind,
            role: role.to_string(),
            access,
            managed: managed.clone(),
            bootstrap,
        });
    }
}

/// The role a RoleBinding refers to: its kind, and its rules if it exists.
fn role_of<'a>(
    role_ref: &RoleRef,
    lookup: impl Fn(RoleKind, &str) -> Option<Option<&'a [PolicyRule]>>,
) -> Option<(RoleKind, Option<Option<&'a [PolicyRule]>>)> {
    let kind = match role_ref.kind.as_str() {
        "Role" => RoleKind::Role,
        "ClusterRole" => RoleKind::ClusterRole,
        _ => return None,
    };
    Some((kind, lookup(kind, &role_ref.name)))
}

/// The TeamAccess that exists and holds the controller reference of `meta`.
fn owner<'a>(meta: &ObjectMeta, by_uid: &HashMap<&str, &'a TeamAccess>) -> Option<&'a TeamAccess> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true) && o.kind == "TeamAccess")
        .find_map(|o| by_uid.get(o.uid.as_str()).copied())
}

/// Group id -> the `name` TeamAccess objects give it; the first by TeamAccess
/// name when two disagree, so the output is stable.
pub fn group_names(teamaccesses: &[TeamAccess]) -> BTreeMap<String, String> {
    let mut sorted: Vec<&TeamAccess> = teamaccesses.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut names = BTreeMap::new();
    for ta in sorted {
        for g in &ta.spec.groups {
            if let Some(name) = g.name.as_ref().filter(|n| !n.is_empty()) {
                names.entry(g.id.clone()).or_insert_with(|| name.clone());
            }
        }
    }
    names
}

fn valid_at(grant: &Grant, now: Timestamp) -> bool {
    grant.valid_from.as_ref().is_none_or(|t| t.0 <= now)
        && grant.valid_until.as_ref().is_none_or(|t| now < t.0)
}

fn selects(grant: &Grant, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
    grant.namespaces.iter().flatten().any(|n| n == namespace)
        || grant
            .namespace_selector
            .as_ref()
            .is_some_and(|s| s.matches(labels))
}

/// The grant of `ta` valid now that gives `tier` (or its highest tier, when
/// the role is no tier) in `namespace`, and until when. Of several, the one
/// that lasts longest: access lasts as long as its longest grant.
pub fn grant_for(
    ta: &TeamAccess,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    tier: Option<Tier>,
    now: Timestamp,
) -> (Option<usize>, Option<Timestamp>) {
    let candidates: Vec<(usize, &Grant)> = (ta.spec.grants.iter().enumerate())
        .filter(|(_, g)| valid_at(g, now) && selects(g, namespace, labels))
        .collect();
    let Some(want) = tier.or_else(|| candidates.iter().map(|(_, g)| g.tier).max()) else {
        return (None, None);
    };
    // None (no end) sorts after every time here
    let end = |g: &Grant| (g.valid_until.is_none(), g.valid_until.as_ref().map(|t| t.0));
    candidates
        .into_iter()
        .filter(|(_, g)| g.tier == want)
        .max_by(|(ia, a), (ib, b)| end(a).cmp(&end(b)).then(ib.cmp(ia)))
        .map(|(i, g)| (Some(i), g.valid_until.as_ref().map(|t| t.0)))
        .unwrap_or((None, None))
}

/// (API group, resource, verb): rules compared as the requests they allow,
/// so the same permissions split into rules differently compare equal.
type Atom = (String, String, String);

/// The atoms of `rules`, or None when a rule is limited to resource names or
/// holds non-resource URLs: no tier has either.
fn atoms(rules: &[PolicyRule]) -> Option<BTreeSet<Atom>> {
    let mut out = BTreeSet::new();
    for r in rules {
        if r.resource_names.as_ref().is_some_and(|n| !n.is_empty())
            || r.non_resource_urls.as_ref().is_some_and(|n| !n.is_empty())
        {
            return None;
        }
        for g in r.api_groups.iter().flatten() {
            for res in r.resources.iter().flatten() {
                for v in &r.verbs {
                    out.insert((g.clone(), res.clone(), v.clone()));
                }
            }
        }
    }
    Some(out)
}

/// Names the tier a set of rules is, remembering each distinct rule list:
/// at thousands of namespaces most Roles are copies of a few.
pub struct Classifier {
    reader: BTreeSet<Atom>,
    writer: BTreeSet<Atom>,
    seen: HashMap<Vec<NormalRule>, Access>,
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Classifier {
    pub fn new() -> Self {
        let none = BTreeSet::new();
        let of = |t| atoms(&tiers::rules(t, &none, &[])).unwrap_or_default();
        Classifier {
            reader: of(Tier::Reader),
            writer: of(Tier::Writer),
            seen: HashMap::new(),
        }
    }

    pub fn access(&mut self, rules: &[PolicyRule]) -> Access {
        let k: Vec<NormalRule> = rules.iter().map(normalize_rule).collect();
        if let Some(a) = self.seen.get(&k) {
            return *a;
        }
        let a = match self.tier(rules) {
            Some(t) => Access::Tier(t),
            None => Access::Custom,
        };
        self.seen.insert(k, a);
        a
    }

    fn tier(&self, rules: &[PolicyRule]) -> Option<Tier> {
        let have = atoms(rules)?;
        if have.is_empty() {
            return None;
        }
        if have == self.reader {
            return Some(Tier::Reader);
        }
        if have == self.writer {
            return Some(Tier::Writer);
        }
        // Admin's part (c) names the API groups the cluster served when it
        // was written, minus an exclude list: take the groups from the role
        // itself and check that the rest is exactly Admin for those groups.
        let open: BTreeSet<String> = (have.iter())
            .filter(|(g, r, v)| {
                r == "*" && v == "*" && !g.is_empty() && g != RBAC_GROUP && g != "*"
            })
            .map(|(g, _, _)| g.clone())
            .chain([String::new()])
            .collect();
        let admin = atoms(&tiers::rules(Tier::Admin, &open, &[]))?;
        (have == admin).then_some(Tier::Admin)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::rbac::v1::RoleRef;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

    pub(crate) const NOW: &str = "2026-06-01T00:00:00Z";
    pub(crate) const PAYMENTS: &str = "0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a";

    pub(crate) fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    pub(crate) fn subject(kind: &str, name: &str) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            api_group: (kind != "ServiceAccount").then(|| RBAC_GROUP.into()),
            namespace: (kind == "ServiceAccount").then(|| "ci".into()),
        }
    }

    pub(crate) fn rb(
        ns: &str,
        name: &str,
        role: (&str, &str),
        subjects: Vec<Subject>,
    ) -> RoleBinding {
        RoleBinding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some(RBAC_GROUP.into()),
                kind: role.0.into(),
                name: role.1.into(),
            },
            subjects: Some(subjects),
        }
    }

    pub(crate) fn crb(name: &str, role: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: Some(RBAC_GROUP.into()),
                kind: "ClusterRole".into(),
                name: role.into(),
            },
            subjects: Some(subjects),
        }
    }

    pub(crate) fn role(ns: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
        Role {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            rules: Some(rules),
        }
    }

    pub(crate) fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            rules: Some(rules),
            aggregation_rule: None,
        }
    }

    pub(crate) fn served() -> BTreeSet<String> {
        [
            "",
            "apps",
            "batch",
            "rbac.authorization.k8s.io",
            "example.com",
        ]
        .map(String::from)
        .into()
    }

    pub(crate) fn teamaccess(yaml: &str) -> TeamAccess {
        let mut ta: TeamAccess = serde_saphyr::from_str(yaml).unwrap();
        ta.metadata.uid = Some(format!("uid-{}", ta.metadata.name.as_deref().unwrap()));
        ta
    }

    /// A managed Role and RoleBinding, as the operator writes them.
    pub(crate) fn managed(ta: &TeamAccess, ns: &str, tier: Tier) -> (Role, RoleBinding) {
        let rules = tiers::rules(tier, &served(), &["example.com".to_string()]);
        let mut r = crate::access::desired::role(ta, ns, tier, &rules);
        let b = crate::access::desired::role_binding(ta, ns, tier);
        r.metadata.owner_references = b.metadata.owner_references.clone();
        (r, b)
    }

    pub(crate) const PAYMENTS_TA: &str = r#"
apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata: {name: payments}
spec:
  groups: [{id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a, name: payments-developers}]
  grants:
    - {tier: Reader, namespaceSelector: {matchLabels: {team: payments}}}
    - {tier: Writer, namespaces: [payments-dev]}
    - {tier: Admin, namespaces: [payments-dev], validUntil: "2026-12-24T00:00:00Z"}
    - {tier: Admin, namespaces: [payments-sandbox]}
    - {tier: Admin, namespaces: [payments-prod], validUntil: "2026-01-01T00:00:00Z"}
"#;

    pub(crate) fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        crate::api::fixtures::namespace(name, labels)
    }

    /// payments (managed in three namespaces) and a few hand-made bindings.
    pub(crate) fn sample() -> Inventory {
        let ta = teamaccess(PAYMENTS_TA);
        let mut inv = Inventory {
            namespaces: vec![
                ns("payments-dev", &[("team", "payments")]),
                ns("payments-prod", &[("team", "payments")]),
                ns("payments-sandbox", &[]),
            ],
            ..Default::default()
        };
        for (n, tier) in [
            ("payments-dev", Tier::Admin),
            ("payments-prod", Tier::Reader),
            ("payments-sandbox", Tier::Admin),
        ] {
            let (r, b) = managed(&ta, n, tier);
            inv.roles.push(r);
            inv.role_bindings.push(b);
        }
        inv.teamaccesses.push(ta);
        inv
    }

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn managed_bindings_name_their_teamaccess_grant_and_expiry() {
        let report = build(&sample(), now());
        let row = |ns: &str| {
            report
                .rows
                .iter()
                .find(|r| r.scope == Scope::Namespace(ns.into()))
                .unwrap()
        };
        let dev = row("payments-dev");
        assert_eq!(dev.access, Access::Tier(Tier::Admin));
        assert_eq!(dev.display_name.as_deref(), Some("payments-developers"));
        assert_eq!(dev.subject.name, PAYMENTS);
        let m = dev.managed.as_ref().unwrap();
        assert_eq!(m.teamaccess, "payments");
        assert_eq!(m.grant, Some(2));
        assert_eq!(m.valid_until, Some("2026-12-24T00:00:00Z".parse().unwrap()));
        // the Admin grant of payments-prod expired; the selector's Reader is what is left
        let prod = row("payments-prod");
        assert_eq!(prod.access, Access::Tier(Tier::Reader));
        assert_eq!(prod.managed.as_ref().unwrap().grant, Some(0));
        let sandbox = row("payments-sandbox");
        assert_eq!(sandbox.managed.as_ref().unwrap().grant, Some(3));
        assert_eq!(sandbox.managed.as_ref().unwrap().valid_until, None);
    }

    #[test]
    fn a_binding_whose_owner_is_gone_or_not_the_controller_is_unmanaged() {
        let mut inv = sample();
        inv.role_bindings[0].metadata.owner_references = Some(vec![OwnerReference {
            api_version: "teamaccess.dev/v1alpha1".into(),
            kind: "TeamAccess".into(),
            name: "payments".into(),
            uid: "uid-of-a-deleted-one".into(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        inv.role_bindings[1]
            .metadata
            .owner_references
            .as_mut()
            .unwrap()[0]
            .controller = None;
        let report = build(&inv, now());
        let managed: Vec<&str> = (report.rows.iter())
            .filter(|r| r.managed.is_some())
            .map(|r| r.scope.as_str())
            .collect();
        assert_eq!(managed, ["payments-sandbox"]);
        // the labels still say teamaccess; the tier is read from the rules
        let dev = &report.rows[0];
        assert_eq!(dev.scope.as_str(), "payments-dev");
        assert_eq!(dev.access, Access::Tier(Tier::Admin));
    }

    #[test]
    fn tiers_are_recognised_by_their_rules_however_they_are_split() {
        let mut c = Classifier::new();
        let none = BTreeSet::new();
        for tier in [Tier::Reader, Tier::Writer] {
            assert_eq!(
                c.access(&tiers::rules(tier, &none, &[])),
                Access::Tier(tier)
            );
        }
        // Admin, for whatever groups the cluster served and whatever was excluded
        for exclude in [vec![], vec!["example.com".to_string()]] {
            let admin = tiers::rules(Tier::Admin, &served(), &exclude);
            assert_eq!(c.access(&admin), Access::Tier(Tier::Admin), "{exclude:?}");
        }
        // one rule per resource and verb: the same requests, so the same tier
        let split: Vec<PolicyRule> = tiers::rules(Tier::Writer, &none, &[])
            .iter()
            .flat_map(|r| {
                let g = r.api_groups.clone().unwrap();
                r.resources
                    .clone()
                    .unwrap()
                    .into_iter()
                    .flat_map(move |res| {
                        let g = g.clone();
                        r.verbs.clone().into_iter().map(move |v| PolicyRule {
                            api_groups: Some(g.clone()),
                            resources: Some(vec![res.clone()]),
                            verbs: vec![v],
                            ..Default::default()
                        })
                    })
            })
            .collect();
        assert_eq!(c.access(&split), Access::Tier(Tier::Writer));
        // one verb more, one verb less, a resource name, rbac in part (c): custom
        let mut more = tiers::rules(Tier::Reader, &none, &[]);
        more.push(rule(&[""], &["secrets"], &["get"]));
        assert_eq!(c.access(&more), Access::Custom);
        let mut less = tiers::rules(Tier::Reader, &none, &[]);
        less.pop();
        assert_eq!(c.access(&less), Access::Custom);
        let mut named = tiers::rules(Tier::Reader, &none, &[]);
        named[0].resource_names = Some(vec!["x".into()]);
        assert_eq!(c.access(&named), Access::Custom);
        let mut admin = tiers::rules(Tier::Admin, &served(), &[]);
        admin.push(rule(&[RBAC_GROUP], &["*"], &["*"]));
        assert_eq!(c.access(&admin), Access::Custom);
        assert_eq!(c.access(&[]), Access::Custom);
        assert_eq!(c.access(&[rule(&["*"], &["*"], &["*"])]), Access::Custom);
    }

    #[test]
    fn unmanaged_bindings_get_a_tier_label_custom_or_missing_role() {
        let none = BTreeSet::new();
        let mut inv = sample();
        inv.roles.push(role(
            "payments-dev",
            "copy-of-reader",
            tiers::rules(Tier::Reader, &none, &[]),
        ));
        inv.cluster_roles
            .push(cluster_role("edit", vec![rule(&[""], &["pods"], &["*"])]));
        inv.role_bindings.extend([
            rb(
                "payments-dev",
                "a",
                ("Role", "copy-of-reader"),
                vec![subject("User", "alice@example.com")],
            ),
            rb(
                "payments-dev",
                "b",
                ("ClusterRole", "edit"),
                vec![subject("ServiceAccount", "deployer")],
            ),
            rb(
                "payments-dev",
                "c",
                ("Role", "nope"),
                vec![subject("Group", "ops")],
            ),
        ]);
        inv.cluster_role_bindings
            .push(crb("d", "edit", vec![subject("Group", PAYMENTS)]));
        let report = build(&inv, now());
        let find = |binding: &str| report.rows.iter().find(|r| r.binding == binding).unwrap();
        assert_eq!(find("a").access, Access::Tier(Tier::Reader));
        assert!(find("a").managed.is_none());
        assert_eq!(find("b").access, Access::Custom);
        assert_eq!(find("b").subject.qualified_name(), "ci/deployer");
        assert_eq!(find("c").access, Access::RoleMissing);
        let d = find("d");
        assert_eq!(d.scope, Scope::Cluster);
        assert_eq!(d.display_name.as_deref(), Some("payments-developers"));
        // cluster-wide rows come first: they apply in every namespace after them
        assert_eq!(report.rows[0].binding, "d");
        assert_eq!(report.rows.len(), 3 + 4);
    }

    #[test]
    fn bootstrap_bindings_are_marked() {
        let mut inv = sample();
        let mut b = crb(
            "cluster-admin",
            "cluster-admin",
            vec![subject("Group", "system:masters")],
        );
        b.metadata.labels = Some(BTreeMap::from([(
            BOOTSTRAP_LABEL.into(),
            BOOTSTRAP_VALUE.into(),
        )]));
        inv.cluster_role_bindings.push(b);
        let report = build(&inv, now());
        assert!(report.rows[0].bootstrap);
        assert!(report.rows[1..].iter().all(|r| !r.bootstrap));
    }

    #[test]
    fn a_namespace_filter_keeps_cluster_wide_rows() {
        let mut inv = sample();
        inv.cluster_role_bindings
            .push(crb("x", "view", vec![subject("Group", "g")]));
        let mut report = build(&inv, now());
        report.retain_namespaces(&BTreeSet::from(["payments-prod".to_string()]));
        let scopes: Vec<&str> = report.rows.iter().map(|r| r.scope.as_str()).collect();
        assert_eq!(scopes, ["*", "payments-prod"]);
    }

    #[test]
    fn grants_not_yet_valid_do_not_count() {
        let mut ta = teamaccess(PAYMENTS_TA);
        ta.spec.grants[1].valid_from = Some(Time("2026-07-01T00:00:00Z".parse().unwrap()));
        let labels = BTreeMap::from([("team".to_string(), "payments".to_string())]);
        // Writer is not valid yet in payments-dev: no grant gives Writer now
        assert_eq!(
            grant_for(&ta, "payments-dev", &labels, Some(Tier::Writer), now()),
            (None, None)
        );
        assert_eq!(
            grant_for(&ta, "payments-dev", &labels, None, now()).0,
            Some(2)
        );
    }
}
