//! What in an access report goes against the AKS access guidance: grant to
//! Entra groups, never to users or to everyone; keep cluster-admin for a
//! break-glass group; Admin for the platform team, just in time; one source
//! of truth for a team's access. Each finding is one subject of one binding,
//! with a severity and a one-line reason; docs/access-review.md says how to
//! fix each kind.
//!
//! Kubernetes' own bootstrap bindings are never findings: they are how the
//! cluster works, and deleting them would break it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::access::desired::DEFAULT_PROTECTED_NAMESPACES;
use crate::review::report::{Access, BindingKind, Report, Row, Scope, SubjectKind, Who};

/// Ordered so `>=` reads as "at least as bad as".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::High, Severity::Medium, Severity::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    /// system:authenticated, system:unauthenticated, system:serviceaccounts,
    /// or the anonymous user.
    BroadSubject,
    /// A ClusterRoleBinding to cluster-admin or admin, outside the allow-list.
    ClusterAdminBinding,
    /// A User subject where teams work.
    UserSubject,
    /// A Group that is not an Entra object ID.
    NonEntraGroup,
    /// A RoleBinding outside teamaccess for a group teamaccess already grants there.
    UnmanagedDuplicate,
    /// Admin through teamaccess with no validUntil.
    AdminWithoutExpiry,
}

impl FindingKind {
    pub const ALL: [FindingKind; 6] = [
        FindingKind::BroadSubject,
        FindingKind::ClusterAdminBinding,
        FindingKind::UserSubject,
        FindingKind::NonEntraGroup,
        FindingKind::UnmanagedDuplicate,
        FindingKind::AdminWithoutExpiry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::BroadSubject => "BroadSubject",
            FindingKind::ClusterAdminBinding => "ClusterAdminBinding",
            FindingKind::UserSubject => "UserSubject",
            FindingKind::NonEntraGroup => "NonEntraGroup",
            FindingKind::UnmanagedDuplicate => "UnmanagedDuplicate",
            FindingKind::AdminWithoutExpiry => "AdminWithoutExpiry",
        }
    }

    /// Each kind has one severity, so a CI gate means the same thing everywhere.
    pub fn severity(self) -> Severity {
        match self {
            FindingKind::BroadSubject | FindingKind::ClusterAdminBinding => Severity::High,
            FindingKind::UserSubject
            | FindingKind::NonEntraGroup
            | FindingKind::UnmanagedDuplicate => Severity::Medium,
            FindingKind::AdminWithoutExpiry => Severity::Low,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    pub subject: Who,
    pub display_name: Option<String>,
    pub scope: Scope,
    pub binding_kind: BindingKind,
    pub binding: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Group ids that may hold cluster-admin or admin cluster-wide (break glass).
    pub allow_cluster_admin: BTreeSet<String>,
}

/// Groups every identity of a kind is in: a binding to one is a binding to all.
const BROAD_GROUPS: &[(&str, &str)] = &[
    (
        "system:authenticated",
        "every authenticated identity (on AKS, anyone in the tenant who can reach the API server)",
    ),
    ("system:unauthenticated", "anonymous requests"),
    (
        "system:serviceaccounts",
        "every ServiceAccount of every namespace",
    ),
];
const ANONYMOUS_USER: &str = "system:anonymous";
const CLUSTER_ADMIN_ROLES: &[&str] = &["cluster-admin", "admin"];

/// A lowercase GUID: the form of an Entra object ID in an AKS token.
pub fn is_entra_object_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
}

/// Namespaces where teams do not work: Kubernetes' and the platform's own.
fn team_scope(scope: &Scope) -> bool {
    match scope {
        Scope::Cluster => true,
        Scope::Namespace(n) => !DEFAULT_PROTECTED_NAMESPACES.contains(&n.as_str()),
    }
}

fn subject_label(row: &Row) -> String {
    let who = row.subject.qualified_name();
    match &row.display_name {
        Some(name) => format!("{name} ({who})"),
        None => who,
    }
}

/// The findings of `report`, worst first.
pub fn find(report: &Report, options: &Options) -> Vec<Finding> {
    // (namespace, group) -> the TeamAccess that grants it there
    let mut managed: HashMap<(&str, &str), &str> = HashMap::new();
    for r in &report.rows {
        if let (Some(m), Scope::Namespace(ns), SubjectKind::Group) =
            (&r.managed, &r.scope, r.subject.kind)
        {
            managed.insert((ns, &r.subject.name), &m.teamaccess);
        }
    }

    let mut out = Vec::new();
    for row in report.rows.iter().filter(|r| !r.bootstrap) {
        let mut add = |kind: FindingKind, reason: String| {
            out.push(Finding {
                severity: kind.severity(),
                kind,
                subject: row.subject.clone(),
                display_name: row.display_name.clone(),
                scope: row.scope.clone(),
                binding_kind: row.binding_kind,
                binding: row.binding.clone(),
                reason,
            })
        };
        let role = format!("{} {}", row.role_kind.as_str(), row.role);
        let where_ = match &row.scope {
            Scope::Cluster => "in every namespace".to_string(),
            Scope::Namespace(n) => format!("in {n}"),
        };
        let name = row.subject.name.as_str();

        let broad = match row.subject.kind {
            SubjectKind::Group => BROAD_GROUPS
                .iter()
                .find(|(g, _)| *g == name)
                .map(|(_, who)| *who),
            SubjectKind::User if name == ANONYMOUS_USER => Some("anonymous requests"),
            _ => None,
        };
        if let Some(who) = broad {
            add(
                FindingKind::BroadSubject,
                format!("{name} gives {who} {role} {where_}"),
            );
        }

        if row.binding_kind == BindingKind::ClusterRoleBinding
            && CLUSTER_ADMIN_ROLES.contains(&row.role.as_str())
            && !(row.subject.kind == SubjectKind::Group
                && options.allow_cluster_admin.contains(name))
        {
            add(
                FindingKind::ClusterAdminBinding,
                format!(
                    "{} {} has {} in every namespace and is not in --allow-cluster-admin",
                    row.subject.kind.as_str(),
                    subject_label(row),
                    row.role
                ),
            );
        }

        // system: users are Kubernetes components, not people
        if row.subject.kind == SubjectKind::User
            && !name.starts_with("system:")
            && team_scope(&row.scope)
        {
            add(
                FindingKind::UserSubject,
                format!(
                    "user {name} is bound directly to {role} {where_}; grant to an Entra group instead"
                ),
            );
        }

        if row.subject.kind == SubjectKind::Group
            && !name.starts_with("system:")
            && !is_entra_object_id(name)
        {
            let why = if is_entra_object_id(&name.to_ascii_lowercase()) {
                "an uppercase GUID; tokens carry object IDs in lowercase, so it binds nobody"
            } else {
                "not an Entra object ID (a lowercase GUID); with Entra ID it binds nobody, or a group of another authenticator"
            };
            add(
                FindingKind::NonEntraGroup,
                format!("group {name:?} is {why}"),
            );
        }

        if let Some(m) = &row.managed
            && row.access == Access::Tier(crate::access::tiers::Tier::Admin)
            && m.grant.is_some()
            && m.valid_until.is_none()
        {
            let grant = m.grant.unwrap_or_default();
            add(
                FindingKind::AdminWithoutExpiry,
                format!(
                    "TeamAccess {} grants[{grant}] gives group {} Admin {where_} with no validUntil; Admin is for the platform team, just in time",
                    m.teamaccess,
                    subject_label(row)
                ),
            );
        }

        if row.managed.is_none()
            && row.binding_kind == BindingKind::RoleBinding
            && row.subject.kind == SubjectKind::Group
            && let Scope::Namespace(ns) = &row.scope
            && let Some(ta) = managed.get(&(ns.as_str(), name))
        {
            add(
                FindingKind::UnmanagedDuplicate,
                format!(
                    "group {} also has {role} {where_} outside TeamAccess {ta}; revoking its grant would leave this",
                    subject_label(row)
                ),
            );
        }
    }
    out.sort_by(|a, b| {
        (b.severity, a.kind, &a.scope, &a.subject, &a.binding)
            .cmp(&(a.severity, b.kind, &b.scope, &b.subject, &b.binding))
    });
    out
}

/// The worst severity among `findings`.
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

/// How many findings of each kind, every kind present (zeros too), so a
/// series never vanishes from a dashboard when its count drops to zero.
pub fn counts(findings: &[Finding]) -> BTreeMap<FindingKind, usize> {
    let mut out: BTreeMap<FindingKind, usize> =
        FindingKind::ALL.into_iter().map(|k| (k, 0)).collect();
    for f in findings {
        *out.entry(f.kind).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::report::tests::*;
    use crate::review::report::{BOOTSTRAP_LABEL, BOOTSTRAP_VALUE, build};

    fn kinds(findings: &[Finding]) -> Vec<(FindingKind, String, String)> {
        findings
            .iter()
            .map(|f| (f.kind, f.scope.as_str().to_string(), f.subject.name.clone()))
            .collect()
    }

    fn findings_of(inv: &crate::review::report::Inventory, options: &Options) -> Vec<Finding> {
        find(&build(inv, now()), options)
    }

    #[test]
    fn the_managed_sample_has_only_the_standing_admin_grant() {
        let f = findings_of(&sample(), &Options::default());
        assert_eq!(
            kinds(&f),
            [(
                FindingKind::AdminWithoutExpiry,
                "payments-sandbox".to_string(),
                PAYMENTS.to_string()
            )]
        );
        assert_eq!(f[0].severity, Severity::Low);
        assert!(f[0].reason.contains("grants[3]"), "{}", f[0].reason);
        assert!(
            f[0].reason.contains("payments-developers ("),
            "{}",
            f[0].reason
        );
        assert_eq!(worst(&f), Some(Severity::Low));
    }

    #[test]
    fn every_kind_is_found_with_its_severity_worst_first() {
        let mut inv = sample();
        inv.role_bindings.extend([
            rb(
                "payments-dev",
                "alice",
                ("ClusterRole", "edit"),
                vec![subject("User", "alice@example.com")],
            ),
            rb(
                "payments-dev",
                "everyone",
                ("ClusterRole", "view"),
                vec![
                    subject("Group", "system:authenticated"),
                    subject("Group", "system:unauthenticated"),
                    subject("Group", "system:serviceaccounts"),
                    subject("User", "system:anonymous"),
                ],
            ),
            rb(
                "payments-prod",
                "names",
                ("ClusterRole", "view"),
                vec![
                    subject("Group", "payments-devs"),
                    subject("Group", &PAYMENTS.to_uppercase()),
                    subject("Group", "system:serviceaccounts:ci"),
                ],
            ),
            rb(
                "payments-prod",
                "hand-made",
                ("ClusterRole", "edit"),
                vec![subject("Group", PAYMENTS)],
            ),
            // a user in kube-system is not a team's business; a component user is no person
            rb(
                "kube-system",
                "op",
                ("ClusterRole", "edit"),
                vec![subject("User", "bob@example.com")],
            ),
            rb(
                "payments-dev",
                "kcm",
                ("ClusterRole", "edit"),
                vec![subject("User", "system:kube-controller-manager")],
            ),
        ]);
        inv.cluster_role_bindings.extend([
            crb(
                "root",
                "cluster-admin",
                vec![subject("Group", "11111111-2222-4333-8444-555555555555")],
            ),
            crb(
                "ns-admin",
                "admin",
                vec![subject("ServiceAccount", "deployer")],
            ),
            crb(
                "viewers",
                "view",
                vec![subject("Group", "22222222-2222-4333-8444-555555555555")],
            ),
        ]);
        let f = findings_of(&inv, &Options::default());
        let got: Vec<(Severity, FindingKind, String, String)> = f
            .iter()
            .map(|f| {
                (
                    f.severity,
                    f.kind,
                    f.scope.as_str().into(),
                    f.subject.name.clone(),
                )
            })
            .collect();
        let s = |x: &str| x.to_string();
        use FindingKind::*;
        use Severity::*;
        assert_eq!(
            got,
            [
                (
                    High,
                    BroadSubject,
                    s("payments-dev"),
                    s("system:authenticated")
                ),
                (
                    High,
                    BroadSubject,
                    s("payments-dev"),
                    s("system:serviceaccounts")
                ),
                (
                    High,
                    BroadSubject,
                    s("payments-dev"),
                    s("system:unauthenticated")
                ),
                (High, BroadSubject, s("payments-dev"), s("system:anonymous")),
                (
                    High,
                    ClusterAdminBinding,
                    s("*"),
                    s("11111111-2222-4333-8444-555555555555")
                ),
                (High, ClusterAdminBinding, s("*"), s("deployer")),
                (
                    Medium,
                    UserSubject,
                    s("payments-dev"),
                    s("alice@example.com")
                ),
                (
                    Medium,
                    NonEntraGroup,
                    s("payments-prod"),
                    PAYMENTS.to_uppercase()
                ),
                (
                    Medium,
                    NonEntraGroup,
                    s("payments-prod"),
                    s("payments-devs")
                ),
                (Medium, UnmanagedDuplicate, s("payments-prod"), s(PAYMENTS)),
                (Low, AdminWithoutExpiry, s("payments-sandbox"), s(PAYMENTS)),
            ]
        );
        let reason = |kind, name: &str| {
            f.iter()
                .find(|x| x.kind == kind && x.subject.name == name)
                .unwrap()
                .reason
                .clone()
        };
        assert!(reason(NonEntraGroup, &PAYMENTS.to_uppercase()).contains("uppercase"));
        assert!(reason(UnmanagedDuplicate, PAYMENTS).contains("TeamAccess payments"));
        assert!(reason(UnmanagedDuplicate, PAYMENTS).contains("payments-developers"));
        for x in &f {
            assert!(!x.reason.contains('\n'), "one line: {}", x.reason);
        }
        assert_eq!(worst(&f), Some(High));
        let c = counts(&f);
        assert_eq!(c[&BroadSubject], 4);
        assert_eq!(c[&AdminWithoutExpiry], 1);
        assert_eq!(c.len(), FindingKind::ALL.len());
    }

    #[test]
    fn the_allow_list_admits_its_groups_only() {
        let mut inv = sample();
        let glass = "11111111-2222-4333-8444-555555555555";
        inv.cluster_role_bindings.push(crb(
            "break-glass",
            "cluster-admin",
            vec![subject("Group", glass), subject("User", glass)],
        ));
        let options = Options {
            allow_cluster_admin: BTreeSet::from([glass.to_string()]),
        };
        let f: Vec<_> = findings_of(&inv, &options)
            .into_iter()
            .filter(|f| f.kind == FindingKind::ClusterAdminBinding)
            .collect();
        // a User of the same name is not the group
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject.kind, SubjectKind::User);
        assert_eq!(
            findings_of(&inv, &Options::default())
                .iter()
                .filter(|f| f.kind == FindingKind::ClusterAdminBinding)
                .count(),
            2
        );
    }

    #[test]
    fn bootstrap_bindings_are_not_findings() {
        let mut inv = crate::review::report::Inventory::default();
        let mut b = crb(
            "system:basic-user",
            "system:basic-user",
            vec![subject("Group", "system:authenticated")],
        );
        b.metadata.labels = Some(BTreeMap::from([(
            BOOTSTRAP_LABEL.into(),
            BOOTSTRAP_VALUE.into(),
        )]));
        let mut admin = crb(
            "cluster-admin",
            "cluster-admin",
            vec![subject("Group", "system:masters")],
        );
        admin.metadata.labels = b.metadata.labels.clone();
        inv.cluster_role_bindings.extend([b.clone(), admin]);
        assert!(findings_of(&inv, &Options::default()).is_empty());
        // the same binding without the label is one
        b.metadata.labels = None;
        inv.cluster_role_bindings.push(b);
        assert_eq!(findings_of(&inv, &Options::default()).len(), 1);
    }

    #[test]
    fn entra_object_ids_are_lowercase_guids() {
        assert!(is_entra_object_id(PAYMENTS));
        assert!(!is_entra_object_id(&PAYMENTS.to_uppercase()));
        assert!(!is_entra_object_id(&PAYMENTS.replace('-', "")));
        assert!(!is_entra_object_id("0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6g"));
        assert!(!is_entra_object_id("payments"));
    }
}
