//! The access tiers as data, each entry traceable to the AKS built-in role it
//! mirrors ("Azure Kubernetes Service RBAC Reader / Writer / Admin").
//!
//! The AKS authorization webhook turns a Kubernetes request into an Azure
//! dataAction: get/list/watch become `read`, create/update/patch become
//! `write`, delete/deletecollection become `delete`, and every subresource is
//! judged as its parent resource, except `pods/exec` (its own action). RBAC has
//! neither that mapping nor deny rules, so the tables below spell out every
//! resource and subresource a tier gets, verb by verb. docs/tiers.md explains
//! each difference from AKS.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::rbac::v1::PolicyRule;

/// Tier of access. Ord gives Reader < Writer < Admin, so `max` picks the tier
/// that wins when several grants select one namespace.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum Tier {
    Reader,
    Writer,
    Admin,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Reader, Tier::Writer, Tier::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Reader => "Reader",
            Tier::Writer => "Writer",
            Tier::Admin => "Admin",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// API groups the Admin tier never grants by default: the Flux and Argo CD groups
/// (their objects run with their controllers' broad identities).
pub const DEFAULT_ADMIN_EXCLUDE_API_GROUPS: &[&str] = &[
    // Argo CD (Application, ApplicationSet, AppProject). Argo Rollouts, Workflows
    // and Events share this group, so they are excluded with it.
    "argoproj.io",
    // Flux v2 controllers.
    "helm.toolkit.fluxcd.io",
    "image.toolkit.fluxcd.io",
    "kustomize.toolkit.fluxcd.io",
    "notification.toolkit.fluxcd.io",
    "source.toolkit.fluxcd.io",
    // Flux source-watcher (ArtifactGenerator).
    "source.extensions.fluxcd.io",
    // Flux Operator (FluxInstance, ResourceSet): a ResourceSet applies what it
    // generates with the operator's identity unless told otherwise.
    "fluxcd.controlplane.io",
];

/// One row of a tier table: `verbs` on `resources` of `api_group`, granted
/// because the AKS role holds the dataAction `aks_source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// "" is the core group.
    pub api_group: &'static str,
    /// Resource names as RBAC spells them; "pods/log" names a subresource.
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// The dataAction string, as written in the AKS role definition, that
    /// allows these requests through the AKS webhook.
    pub aks_source: &'static str,
}

/// A row of a tier table, so each reads as one line of docs/tiers.md.
const fn row(
    api_group: &'static str,
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
    aks_source: &'static str,
) -> TableEntry {
    TableEntry {
        api_group,
        resources,
        verbs,
        aks_source,
    }
}

macro_rules! aks {
    ($action:literal) => {
        concat!("Microsoft.ContainerService/managedClusters/", $action)
    };
}

const GET: &[&str] = &["get"];
const READ: &[&str] = &["get", "list", "watch"];
/// Azure `read` + `write` + `delete`: everything a plain resource serves.
#[rustfmt::skip]
const FULL: &[&str] = &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];
const WRITE: &[&str] = &["create", "update", "patch"];
const DELETE: &[&str] = &["delete", "deletecollection"];
/// What Admin's core part adds to a plain resource on top of its core-wide read.
const WRITE_DELETE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
/// Status, scale, resize and ephemeralcontainers serve only get, update and patch.
const UPDATE: &[&str] = &["update", "patch"];
const GET_UPDATE: &[&str] = &["get", "update", "patch"];
const CREATE: &[&str] = &["create"];
/// exec, attach and portforward are authorized as create (SPDY POST) or as get
/// (a WebSocket upgrade, as kubectl sends since 1.30), so both are needed.
const CREATE_GET: &[&str] = &["create", "get"];
/// The proxy subresources take the HTTP method's verb.
const PROXY: &[&str] = &["create", "update", "patch", "delete"];
const IMPERSONATE: &[&str] = &["impersonate"];

/// Reader: read most objects of the namespace; never secrets, RBAC objects,
/// exec/attach/port-forward or proxy.
#[rustfmt::skip]
const READER: &[TableEntry] = &[
    row("apps", &["controllerrevisions"], READ, aks!("apps/controllerrevisions/read")),
    row("apps", &["daemonsets"], READ, aks!("apps/daemonsets/read")),
    row("apps", &["daemonsets/status"], GET, aks!("apps/daemonsets/read")),
    row("apps", &["deployments"], READ, aks!("apps/deployments/read")),
    row("apps", &["deployments/scale", "deployments/status"], GET, aks!("apps/deployments/read")),
    row("apps", &["replicasets"], READ, aks!("apps/replicasets/read")),
    row("apps", &["replicasets/scale", "replicasets/status"], GET, aks!("apps/replicasets/read")),
    row("apps", &["statefulsets"], READ, aks!("apps/statefulsets/read")),
    row("apps", &["statefulsets/scale", "statefulsets/status"], GET, aks!("apps/statefulsets/read")),
    row("autoscaling", &["horizontalpodautoscalers"], READ, aks!("autoscaling/horizontalpodautoscalers/read")),
    row("autoscaling", &["horizontalpodautoscalers/status"], GET, aks!("autoscaling/horizontalpodautoscalers/read")),
    row("batch", &["cronjobs"], READ, aks!("batch/cronjobs/read")),
    row("batch", &["cronjobs/status"], GET, aks!("batch/cronjobs/read")),
    row("batch", &["jobs"], READ, aks!("batch/jobs/read")),
    row("batch", &["jobs/status"], GET, aks!("batch/jobs/read")),
    row("", &["configmaps"], READ, aks!("configmaps/read")),
    row("discovery.k8s.io", &["endpointslices"], READ, aks!("discovery.k8s.io/endpointslices/read")),
    row("", &["endpoints"], READ, aks!("endpoints/read")),
    row("events.k8s.io", &["events"], READ, aks!("events.k8s.io/events/read")),
    row("", &["events"], READ, aks!("events/read")),
    row("", &["limitranges"], READ, aks!("limitranges/read")),
    row("metrics.k8s.io", &["pods"], READ, aks!("metrics.k8s.io/pods/read")),
    // In a namespaced Role this reaches only the Role's own namespace: the API
    // server authorizes `get namespaces/X` in namespace X, and a list of
    // namespaces is a cluster-scope request no Role can answer.
    row("", &["namespaces"], GET, aks!("namespaces/read")),
    row("networking.k8s.io", &["ingresses"], READ, aks!("networking.k8s.io/ingresses/read")),
    row("networking.k8s.io", &["ingresses/status"], GET, aks!("networking.k8s.io/ingresses/read")),
    row("networking.k8s.io", &["networkpolicies"], READ, aks!("networking.k8s.io/networkpolicies/read")),
    row("", &["persistentvolumeclaims"], READ, aks!("persistentvolumeclaims/read")),
    row("", &["persistentvolumeclaims/status"], GET, aks!("persistentvolumeclaims/read")),
    row("", &["pods"], READ, aks!("pods/read")),
    row("", &["pods/log", "pods/status"], GET, aks!("pods/read")),
    row("policy", &["poddisruptionbudgets"], READ, aks!("policy/poddisruptionbudgets/read")),
    row("policy", &["poddisruptionbudgets/status"], GET, aks!("policy/poddisruptionbudgets/read")),
    row("", &["replicationcontrollers"], READ, aks!("replicationcontrollers/read")),
    row("", &["replicationcontrollers/scale", "replicationcontrollers/status"], GET, aks!("replicationcontrollers/read")),
    row("", &["resourcequotas"], READ, aks!("resourcequotas/read")),
    row("", &["resourcequotas/status"], GET, aks!("resourcequotas/read")),
    row("", &["serviceaccounts"], READ, aks!("serviceaccounts/read")),
    row("", &["services"], READ, aks!("services/read")),
    row("", &["services/status"], GET, aks!("services/read")),
];

/// What Writer adds to Reader. Status subresources stay read-only and the
/// proxy subresources stay out (docs/tiers.md says why).
#[rustfmt::skip]
const WRITER: &[TableEntry] = &[
    row("apps", &["daemonsets"], FULL, aks!("apps/daemonsets/*")),
    row("apps", &["deployments"], FULL, aks!("apps/deployments/*")),
    row("apps", &["deployments/scale"], UPDATE, aks!("apps/deployments/*")),
    row("apps", &["replicasets"], FULL, aks!("apps/replicasets/*")),
    row("apps", &["replicasets/scale"], UPDATE, aks!("apps/replicasets/*")),
    row("apps", &["statefulsets"], FULL, aks!("apps/statefulsets/*")),
    row("apps", &["statefulsets/scale"], UPDATE, aks!("apps/statefulsets/*")),
    row("autoscaling", &["horizontalpodautoscalers"], FULL, aks!("autoscaling/horizontalpodautoscalers/*")),
    row("batch", &["cronjobs"], FULL, aks!("batch/cronjobs/*")),
    row("batch", &["jobs"], FULL, aks!("batch/jobs/*")),
    row("coordination.k8s.io", &["leases"], READ, aks!("coordination.k8s.io/leases/read")),
    row("coordination.k8s.io", &["leases"], WRITE, aks!("coordination.k8s.io/leases/write")),
    row("coordination.k8s.io", &["leases"], DELETE, aks!("coordination.k8s.io/leases/delete")),
    row("", &["configmaps"], FULL, aks!("configmaps/*")),
    row("", &["endpoints"], FULL, aks!("endpoints/*")),
    row("", &["events"], FULL, aks!("events/*")),
    row("", &["persistentvolumeclaims"], FULL, aks!("persistentvolumeclaims/*")),
    row("", &["pods"], FULL, aks!("pods/*")),
    row("", &["pods/attach", "pods/exec", "pods/portforward"], CREATE_GET, aks!("pods/*")),
    row("", &["pods/eviction"], CREATE, aks!("pods/*")),
    // Both serve get/update/patch and AKS allows all three through pods/*:
    // kubectl debug patches ephemeralcontainers, client-go updates them, and
    // `kubectl edit --subresource resize` reads before it writes.
    row("", &["pods/ephemeralcontainers", "pods/resize"], GET_UPDATE, aks!("pods/*")),
    row("", &["replicationcontrollers"], FULL, aks!("replicationcontrollers/*")),
    row("", &["replicationcontrollers/scale"], UPDATE, aks!("replicationcontrollers/*")),
    row("", &["secrets"], FULL, aks!("secrets/*")),
    row("", &["serviceaccounts"], FULL, aks!("serviceaccounts/*")),
    row("", &["serviceaccounts/token"], CREATE, aks!("serviceaccounts/*")),
    // Reaches only service accounts of the Role's namespace: the API server
    // authorizes impersonating system:serviceaccount:NS:NAME in namespace NS.
    row("", &["serviceaccounts"], IMPERSONATE, aks!("serviceaccounts/*")),
    row("", &["services"], FULL, aks!("services/*")),
    row("networking.k8s.io", &["ingresses"], FULL, aks!("networking.k8s.io/ingresses/*")),
    row("networking.k8s.io", &["networkpolicies"], FULL, aks!("networking.k8s.io/networkpolicies/*")),
    row("policy", &["poddisruptionbudgets"], FULL, aks!("policy/poddisruptionbudgets/*")),
];

/// What Admin adds to Writer, besides the rule built from discovery (part c).
#[rustfmt::skip]
const ADMIN: &[TableEntry] = &[
    // Part (a): every core resource and subresource may be read; RBAC's "*"
    // also covers subresources, and one served after a Kubernetes upgrade.
    row("", &["*"], READ, aks!("*")),
    // Part (a), writes. RBAC cannot say "all but namespaces and resourcequotas",
    // so each namespaced core resource and subresource Kubernetes 1.36 serves
    // is named; namespaces, namespaces/*, resourcequotas and
    // resourcequotas/status are left out (AKS notDataActions).
    row("", &["configmaps", "endpoints", "events", "limitranges", "persistentvolumeclaims", "pods", "podtemplates", "replicationcontrollers", "secrets", "serviceaccounts", "services"], WRITE_DELETE, aks!("*")),
    row("", &["persistentvolumeclaims/status", "pods/ephemeralcontainers", "pods/resize", "pods/status", "replicationcontrollers/scale", "replicationcontrollers/status", "services/status"], UPDATE, aks!("*")),
    row("", &["bindings", "pods/attach", "pods/binding", "pods/eviction", "pods/exec", "pods/portforward", "serviceaccounts/token"], CREATE, aks!("*")),
    row("", &["pods/proxy", "services/proxy"], PROXY, aks!("*")),
    row("", &["serviceaccounts"], IMPERSONATE, aks!("*")),
    // Part (b): without bind and escalate, the API server lets an Admin write
    // only Roles and RoleBindings that grant no more than the Admin holds, so
    // no one can bind cluster-admin in the namespace.
    TableEntry {
        api_group: RBAC_GROUP,
        resources: &["rolebindings", "roles"],
        verbs: FULL,
        aks_source: aks!("*"),
    },
];

const CORE_GROUP: &str = "";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
const WILDCARD: &str = "*";

/// The static entries that make up a tier's Role, lower tiers' entries
/// included. Admin's part (c) depends on discovery and is not among them.
pub fn table(tier: Tier) -> Vec<&'static TableEntry> {
    let layers: &[&[TableEntry]] = match tier {
        Tier::Reader => &[READER],
        Tier::Writer => &[READER, WRITER],
        Tier::Admin => &[READER, WRITER, ADMIN],
    };
    layers.iter().flat_map(|layer| layer.iter()).collect()
}

/// The rules of a tier's Role. `served_api_groups` is the set of API groups the
/// cluster serves (from discovery; may include "" for core, and "rbac.authorization.k8s.io");
/// only Admin part (c) uses it and `admin_exclude` (exact group names).
/// Output is deterministic (sorted, deduplicated) so two calls with the same
/// input compare equal, and the rules are in the form the API server stores them.
pub fn rules(
    tier: Tier,
    served_api_groups: &BTreeSet<String>,
    admin_exclude: &[String],
) -> Vec<PolicyRule> {
    let open_groups: BTreeSet<String> = match tier {
        Tier::Admin => served_api_groups
            .iter()
            .filter(|group| {
                group.as_str() != CORE_GROUP
                    && group.as_str() != RBAC_GROUP
                    // a "*" here would widen the rule to every group, RBAC included
                    && !group.contains(WILDCARD)
                    && !admin_exclude.iter().any(|excluded| excluded == *group)
            })
            .cloned()
            .collect(),
        Tier::Reader | Tier::Writer => BTreeSet::new(),
    };

    // group -> resource -> verbs; the static layers of Admin stay in even when
    // discovery misses a group, so the tiers nest whatever discovery says.
    let mut grants: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for entry in table(tier) {
        if open_groups.contains(entry.api_group) {
            continue;
        }
        let by_resource = grants.entry(entry.api_group).or_default();
        for resource in entry.resources {
            by_resource
                .entry(resource)
                .or_default()
                .extend(entry.verbs.iter().copied());
        }
    }

    let mut out = Vec::new();
    for (group, mut by_resource) in grants {
        let wildcard_verbs = by_resource.remove(WILDCARD).unwrap_or_default();
        if !wildcard_verbs.is_empty() {
            out.push(rule(&[group], &[WILDCARD], &wildcard_verbs));
        }
        // One rule per distinct verb set keeps the Role short and stable.
        let mut by_verbs: BTreeMap<BTreeSet<&str>, Vec<&str>> = BTreeMap::new();
        if wildcard_verbs.contains(WILDCARD) {
            by_resource.clear();
        }
        for (resource, verbs) in by_resource {
            let rest: BTreeSet<&str> = verbs.difference(&wildcard_verbs).copied().collect();
            if !rest.is_empty() {
                by_verbs.entry(rest).or_default().push(resource);
            }
        }
        for (verbs, resources) in by_verbs {
            out.push(rule(&[group], &resources, &verbs));
        }
    }
    if !open_groups.is_empty() {
        let groups: Vec<&str> = open_groups.iter().map(String::as_str).collect();
        out.push(rule(&groups, &[WILDCARD], &BTreeSet::from([WILDCARD])));
    }

    out.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    out.dedup();
    out
}

fn rule(groups: &[&str], resources: &[&str], verbs: &BTreeSet<&str>) -> PolicyRule {
    PolicyRule {
        api_groups: Some(sorted(groups.iter().copied())),
        resources: Some(sorted(resources.iter().copied())),
        verbs: sorted(verbs.iter().copied()),
        // Left unset, not empty: the API server drops empty lists, and a stored
        // None must compare equal to what we render.
        resource_names: None,
        non_resource_urls: None,
    }
}

fn sorted<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<&str> = items.collect();
    set.into_iter().map(str::to_owned).collect()
}

type RuleKey<'a> = (
    &'a [String],
    &'a [String],
    &'a [String],
    Option<&'a [String]>,
);

fn sort_key(rule: &PolicyRule) -> RuleKey<'_> {
    (
        rule.api_groups.as_deref().unwrap_or_default(),
        rule.resources.as_deref().unwrap_or_default(),
        &rule.verbs,
        rule.resource_names.as_deref(),
    )
}

/// Whether `rules` allow `verb` on `resource` ("pods" or "pods/log") of
/// `api_group`, for a request that names no object, the way the Kubernetes RBAC
/// authorizer decides it: a rule matches when its apiGroups hold the group or
/// "*", its verbs hold the verb or "*", and its resources hold the resource
/// exactly, "*" (every resource and subresource) or "*/SUB" for a request on
/// subresource SUB. Upstream RBAC gives "pods/*" no wildcard meaning, and
/// neither does this. Rules limited to resourceNames never match here.
pub fn allows(rules: &[PolicyRule], api_group: &str, resource: &str, verb: &str) -> bool {
    let subresource = resource.split_once('/').map(|(_, sub)| sub);
    rules.iter().any(|rule| {
        let named_only = rule.resource_names.as_ref().is_some_and(|n| !n.is_empty());
        let group_ok = rule
            .api_groups
            .iter()
            .flatten()
            .any(|g| g == WILDCARD || g == api_group);
        let verb_ok = rule.verbs.iter().any(|v| v == WILDCARD || v == verb);
        let resource_ok = rule.resources.iter().flatten().any(|r| {
            r == WILDCARD
                || r == resource
                || subresource.is_some_and(|sub| r.strip_prefix("*/") == Some(sub))
        });
        !named_only && group_ok && verb_ok && resource_ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERBS: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "impersonate",
        "bind",
        "escalate",
        "use",
    ];

    // Expected verb sets for the probes.
    const NONE: &[&str] = &[];
    const ANY: &[&str] = VERBS;
    const R: &[&str] = READ;
    const G: &[&str] = GET;
    const F: &[&str] = FULL;
    const F_IMP: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "impersonate",
    ];
    const CG: &[&str] = &["create", "get"];
    const C: &[&str] = &["create"];
    const GUP: &[&str] = &["get", "update", "patch"];
    const R_C: &[&str] = &["get", "list", "watch", "create"];
    const R_UP: &[&str] = &["get", "list", "watch", "update", "patch"];
    const R_PROXY: &[&str] = &[
        "get", "list", "watch", "create", "update", "patch", "delete",
    ];

    type Verbs = &'static [&'static str];

    /// (group, resource, Reader, Writer, Admin): exactly the verbs each tier
    /// gets, Admin computed with `admin_served()` and the default exclude list.
    const PROBES: &[(&str, &str, Verbs, Verbs, Verbs)] = &[
        ("", "pods", R, F, F),
        ("", "pods/log", G, G, R),
        ("", "pods/status", G, G, R_UP),
        ("", "pods/exec", NONE, CG, R_C),
        ("", "pods/attach", NONE, CG, R_C),
        ("", "pods/portforward", NONE, CG, R_C),
        ("", "pods/proxy", NONE, NONE, R_PROXY),
        ("", "pods/eviction", NONE, C, R_C),
        ("", "pods/ephemeralcontainers", NONE, GUP, R_UP),
        ("", "pods/resize", NONE, GUP, R_UP),
        ("", "pods/binding", NONE, NONE, R_C),
        ("", "bindings", NONE, NONE, R_C),
        ("", "configmaps", R, F, F),
        ("", "secrets", NONE, F, F),
        ("", "services", R, F, F),
        ("", "services/status", G, G, R_UP),
        ("", "services/proxy", NONE, NONE, R_PROXY),
        ("", "endpoints", R, F, F),
        ("", "events", R, F, F),
        ("", "persistentvolumeclaims", R, F, F),
        ("", "persistentvolumeclaims/status", G, G, R_UP),
        ("", "serviceaccounts", R, F_IMP, F_IMP),
        ("", "serviceaccounts/token", NONE, C, R_C),
        ("", "replicationcontrollers", R, F, F),
        ("", "replicationcontrollers/scale", G, GUP, R_UP),
        ("", "replicationcontrollers/status", G, G, R_UP),
        ("", "podtemplates", NONE, NONE, F),
        ("", "limitranges", R, R, F),
        ("", "resourcequotas", R, R, R),
        ("", "resourcequotas/status", G, G, R),
        ("", "namespaces", G, G, R),
        ("", "namespaces/status", NONE, NONE, R),
        ("", "namespaces/finalize", NONE, NONE, R),
        ("apps", "deployments", R, F, ANY),
        ("apps", "deployments/scale", G, GUP, ANY),
        ("apps", "deployments/status", G, G, ANY),
        ("apps", "replicasets", R, F, ANY),
        ("apps", "replicasets/scale", G, GUP, ANY),
        ("apps", "statefulsets", R, F, ANY),
        ("apps", "statefulsets/scale", G, GUP, ANY),
        ("apps", "daemonsets", R, F, ANY),
        ("apps", "daemonsets/status", G, G, ANY),
        ("apps", "controllerrevisions", R, R, ANY),
        // batch and the rest are not in admin_served(): Admin keeps Writer's rules.
        ("batch", "jobs", R, F, F),
        ("batch", "jobs/status", G, G, G),
        ("batch", "cronjobs", R, F, F),
        ("autoscaling", "horizontalpodautoscalers", R, F, F),
        ("autoscaling", "horizontalpodautoscalers/status", G, G, G),
        ("policy", "poddisruptionbudgets", R, F, F),
        ("policy", "poddisruptionbudgets/status", G, G, G),
        ("networking.k8s.io", "ingresses", R, F, F),
        ("networking.k8s.io", "ingresses/status", G, G, G),
        ("networking.k8s.io", "networkpolicies", R, F, F),
        ("discovery.k8s.io", "endpointslices", R, R, R),
        ("events.k8s.io", "events", R, R, R),
        ("coordination.k8s.io", "leases", NONE, F, F),
        ("metrics.k8s.io", "pods", R, R, R),
        ("metrics.k8s.io", "nodes", NONE, NONE, NONE),
        (RBAC_GROUP, "roles", NONE, NONE, F),
        (RBAC_GROUP, "rolebindings", NONE, NONE, F),
        (RBAC_GROUP, "clusterroles", NONE, NONE, NONE),
        (RBAC_GROUP, "clusterrolebindings", NONE, NONE, NONE),
        ("example.com", "widgets", NONE, NONE, ANY),
        ("example.com", "widgets/status", NONE, NONE, ANY),
        ("argoproj.io", "applications", NONE, NONE, NONE),
        (
            "source.toolkit.fluxcd.io",
            "gitrepositories",
            NONE,
            NONE,
            NONE,
        ),
    ];

    fn served(groups: &[&str]) -> BTreeSet<String> {
        groups.iter().map(|g| g.to_string()).collect()
    }

    fn admin_served() -> BTreeSet<String> {
        served(&["", "apps", RBAC_GROUP, "example.com", "argoproj.io"])
    }

    fn default_exclude() -> Vec<String> {
        DEFAULT_ADMIN_EXCLUDE_API_GROUPS
            .iter()
            .map(|g| g.to_string())
            .collect()
    }

    fn tier_rules(tier: Tier) -> Vec<PolicyRule> {
        rules(tier, &admin_served(), &default_exclude())
    }

    fn allowed_verbs(rules: &[PolicyRule], group: &str, resource: &str) -> BTreeSet<&'static str> {
        VERBS
            .iter()
            .copied()
            .filter(|verb| allows(rules, group, resource, verb))
            .collect()
    }

    #[test]
    fn each_tier_gets_exactly_the_listed_verbs() {
        let mut failures = Vec::new();
        for tier in Tier::ALL {
            let rules = tier_rules(tier);
            for (group, resource, reader, writer, admin) in PROBES {
                let expected: BTreeSet<&str> = match tier {
                    Tier::Reader => reader,
                    Tier::Writer => writer,
                    Tier::Admin => admin,
                }
                .iter()
                .copied()
                .collect();
                let actual = allowed_verbs(&rules, group, resource);
                if actual != expected {
                    failures.push(format!(
                        "{tier} {group:?} {resource}: expected {expected:?}, got {actual:?}"
                    ));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn reader_never_sees_secrets_or_gets_a_shell() {
        let reader = tier_rules(Tier::Reader);
        for verb in VERBS {
            assert!(!allows(&reader, "", "secrets", verb), "secrets {verb}");
            for resource in [
                "pods/exec",
                "pods/attach",
                "pods/portforward",
                "pods/proxy",
                "services/proxy",
            ] {
                assert!(!allows(&reader, "", resource, verb), "{resource} {verb}");
            }
            for resource in ["roles", "rolebindings"] {
                assert!(!allows(&reader, RBAC_GROUP, resource, verb));
            }
        }
        assert!(allows(&reader, "", "pods/log", "get"));
    }

    #[test]
    fn reader_writes_nothing() {
        for rule in tier_rules(Tier::Reader) {
            for verb in &rule.verbs {
                assert!(READ.contains(&verb.as_str()), "{rule:?}");
            }
        }
    }

    #[test]
    fn writer_stays_inside_its_namespace_objects() {
        let writer = tier_rules(Tier::Writer);
        assert!(allows(&writer, "", "pods/exec", "create"));
        assert!(allows(&writer, "", "secrets", "get"));
        assert!(allows(&writer, "", "secrets", "create"));
        assert!(allows(&writer, "apps", "deployments", "create"));
        for verb in VERBS {
            assert!(!allows(&writer, RBAC_GROUP, "rolebindings", verb));
            assert!(!allows(&writer, RBAC_GROUP, "roles", verb));
        }
        for write in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(!allows(&writer, "", "namespaces", write));
            assert!(!allows(&writer, "", "resourcequotas", write));
            assert!(!allows(&writer, "", "resourcequotas/status", write));
            assert!(!allows(&writer, "", "limitranges", write));
            assert!(!allows(
                &writer,
                "discovery.k8s.io",
                "endpointslices",
                write
            ));
        }
    }

    #[test]
    fn admin_cannot_escalate_or_touch_namespace_and_quota() {
        let admin = tier_rules(Tier::Admin);
        for resource in ["roles", "clusterroles"] {
            assert!(!allows(&admin, RBAC_GROUP, resource, "bind"));
            assert!(!allows(&admin, RBAC_GROUP, resource, "escalate"));
        }
        for write in ["create", "update", "patch", "delete", "deletecollection"] {
            for resource in [
                "namespaces",
                "namespaces/status",
                "namespaces/finalize",
                "resourcequotas",
                "resourcequotas/status",
            ] {
                assert!(!allows(&admin, "", resource, write), "{resource} {write}");
            }
        }
        assert!(allows(&admin, RBAC_GROUP, "rolebindings", "create"));
        assert!(allows(&admin, "", "secrets", "delete"));
        assert!(allows(&admin, "", "pods/exec", "create"));
        assert!(allows(&admin, "example.com", "widgets", "*"));
        assert!(allows(&admin, "apps", "deployments", "*"));
        for verb in VERBS {
            assert!(!allows(&admin, "argoproj.io", "applications", verb));
        }
    }

    /// Every namespaced core resource and subresource of Kubernetes 1.36 with
    /// the verbs its discovery document lists.
    const CORE_1_36: &[(&str, &[&str])] = &[
        ("bindings", &["create"]),
        ("configmaps", FULL),
        ("endpoints", FULL),
        ("events", FULL),
        ("limitranges", FULL),
        ("persistentvolumeclaims", FULL),
        ("persistentvolumeclaims/status", GUP),
        ("pods", FULL),
        ("pods/attach", CG),
        ("pods/binding", &["create"]),
        ("pods/ephemeralcontainers", GUP),
        ("pods/eviction", &["create"]),
        ("pods/exec", CG),
        ("pods/log", &["get"]),
        ("pods/portforward", CG),
        (
            "pods/proxy",
            &["create", "delete", "get", "patch", "update"],
        ),
        ("pods/resize", GUP),
        ("pods/status", GUP),
        ("podtemplates", FULL),
        ("replicationcontrollers", FULL),
        ("replicationcontrollers/scale", GUP),
        ("replicationcontrollers/status", GUP),
        ("resourcequotas", FULL),
        ("resourcequotas/status", GUP),
        ("secrets", FULL),
        ("serviceaccounts", FULL),
        ("serviceaccounts/token", &["create"]),
        ("services", FULL),
        (
            "services/proxy",
            &["create", "delete", "get", "patch", "update"],
        ),
        ("services/status", GUP),
    ];

    #[test]
    fn admin_core_part_covers_every_served_core_verb_but_quota_writes() {
        let admin = rules(Tier::Admin, &BTreeSet::new(), &[]);
        for (resource, served_verbs) in CORE_1_36 {
            let quota = resource.starts_with("resourcequotas");
            for verb in *served_verbs {
                let expected = !quota || READ.contains(verb);
                assert_eq!(
                    allows(&admin, "", resource, verb),
                    expected,
                    "{resource} {verb}"
                );
            }
        }
        // namespaces is cluster-scoped, but the Role still must not name it.
        for write in ["create", "update", "patch", "delete"] {
            assert!(!allows(&admin, "", "namespaces", write));
        }
    }

    #[test]
    fn tiers_nest() {
        let served = served(&[
            "",
            "apps",
            "batch",
            "policy",
            RBAC_GROUP,
            "coordination.k8s.io",
            "example.com",
        ]);
        for (served, exclude) in [
            (admin_served(), default_exclude()),
            (served, default_exclude()),
            // Exclusions and a blind discovery must not break nesting.
            (BTreeSet::new(), vec!["apps".to_string()]),
        ] {
            let by_tier: Vec<_> = Tier::ALL
                .iter()
                .map(|tier| rules(*tier, &served, &exclude))
                .collect();
            for pair in by_tier.windows(2) {
                for (group, resource, ..) in PROBES {
                    for verb in VERBS {
                        if allows(&pair[0], group, resource, verb) {
                            assert!(
                                allows(&pair[1], group, resource, verb),
                                "{group:?} {resource} {verb} lost going up a tier"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn output_is_deterministic_sorted_and_in_stored_form() {
        let exclude_reversed: Vec<String> = default_exclude().into_iter().rev().collect();
        for tier in Tier::ALL {
            let first = tier_rules(tier);
            assert_eq!(first, tier_rules(tier));
            assert_eq!(first, rules(tier, &admin_served(), &exclude_reversed));
            let mut sorted = first.clone();
            sorted.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
            sorted.dedup();
            assert_eq!(first, sorted, "{tier} rules not sorted or not unique");
            for rule in &first {
                assert_eq!(rule.resource_names, None);
                assert_eq!(rule.non_resource_urls, None);
                for list in [
                    rule.api_groups.as_ref().expect("apiGroups set"),
                    rule.resources.as_ref().expect("resources set"),
                    &rule.verbs,
                ] {
                    assert!(!list.is_empty(), "{rule:?}");
                    assert!(list.windows(2).all(|w| w[0] < w[1]), "{rule:?}");
                }
            }
        }
    }

    #[test]
    fn wildcards_only_where_the_spec_puts_them() {
        let served = served(&["", "apps", "batch", RBAC_GROUP, "example.com"]);
        for tier in Tier::ALL {
            let mut wildcard_rules = Vec::new();
            for rule in rules(tier, &served, &default_exclude()) {
                let groups = rule.api_groups.clone().unwrap_or_default();
                let resources = rule.resources.clone().unwrap_or_default();
                assert!(!groups.iter().any(|g| g.contains('*')), "{rule:?}");
                if resources.iter().any(|r| r.contains('*'))
                    || rule.verbs.iter().any(|v| v.contains('*'))
                {
                    wildcard_rules.push((groups, resources, rule.verbs));
                }
            }
            let s = |items: &[&str]| items.iter().map(|i| i.to_string()).collect::<Vec<_>>();
            let expected = match tier {
                Tier::Reader | Tier::Writer => vec![],
                Tier::Admin => vec![
                    (s(&[""]), s(&["*"]), s(&["get", "list", "watch"])),
                    (s(&["apps", "batch", "example.com"]), s(&["*"]), s(&["*"])),
                ],
            };
            assert_eq!(wildcard_rules, expected, "{tier}");
        }
    }

    #[test]
    fn admin_open_rule_follows_discovery_and_exclusions() {
        let only_fixed = served(&["", RBAC_GROUP, "argoproj.io", "helm.toolkit.fluxcd.io"]);
        let admin = rules(Tier::Admin, &only_fixed, &default_exclude());
        assert!(
            !admin.iter().any(|r| r.verbs.iter().any(|v| v == WILDCARD)),
            "no group left, so no open rule: {admin:?}"
        );

        let custom = rules(
            Tier::Admin,
            &served(&["", "apps", "example.com", "*"]),
            &["example.com".to_string()],
        );
        assert!(allows(&custom, "apps", "deployments", "deletecollection"));
        assert!(!allows(&custom, "example.com", "widgets", "get"));
        // A stray "*" from discovery must not open every group (RBAC included).
        assert!(!allows(&custom, RBAC_GROUP, "roles", "bind"));

        // Nothing but Admin looks at discovery.
        for tier in [Tier::Reader, Tier::Writer] {
            assert_eq!(
                rules(tier, &admin_served(), &[]),
                rules(tier, &BTreeSet::new(), &[])
            );
        }
    }

    #[test]
    fn the_evaluator_follows_rbac_semantics() {
        let r = |resources: &[&str]| PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        };
        assert!(allows(&[r(&["*"])], "", "pods/log", "get"));
        assert!(allows(&[r(&["pods/log"])], "", "pods/log", "get"));
        assert!(!allows(&[r(&["pods"])], "", "pods/log", "get"));
        assert!(!allows(&[r(&["pods/log"])], "", "pods", "get"));
        assert!(allows(
            &[r(&["*/scale"])],
            "",
            "replicationcontrollers/scale",
            "get"
        ));
        assert!(!allows(
            &[r(&["*/scale"])],
            "",
            "replicationcontrollers",
            "get"
        ));
        assert!(!allows(&[r(&["pods/*"])], "", "pods/log", "get"));
        assert!(!allows(&[r(&["pods"])], "apps", "pods", "get"));
        assert!(!allows(&[r(&["pods"])], "", "pods", "list"));
        let mut named = r(&["pods"]);
        named.resource_names = Some(vec!["web".into()]);
        assert!(!allows(&[named], "", "pods", "get"));
        let any_group = PolicyRule {
            api_groups: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..r(&["widgets"])
        };
        assert!(allows(&[any_group], "example.com", "widgets", "escalate"));
    }

    #[test]
    fn tier_order_names_and_serialization() {
        assert!(Tier::Reader < Tier::Writer && Tier::Writer < Tier::Admin);
        assert_eq!(Tier::ALL.iter().max(), Some(&Tier::Admin));
        for tier in Tier::ALL {
            assert_eq!(tier.to_string(), tier.as_str());
            let json = serde_json::to_string(&tier).unwrap();
            assert_eq!(json, format!("\"{}\"", tier.as_str()));
            assert_eq!(serde_json::from_str::<Tier>(&json).unwrap(), tier);
        }
        assert!(serde_json::from_str::<Tier>("\"reader\"").is_err());
        let schema = serde_json::to_value(schemars::schema_for!(Tier)).unwrap();
        assert_eq!(
            schema["enum"],
            serde_json::json!(["Reader", "Writer", "Admin"])
        );
    }

    #[test]
    fn every_entry_is_well_formed_and_traceable() {
        for tier in Tier::ALL {
            for entry in table(tier) {
                assert!(
                    entry
                        .aks_source
                        .starts_with("Microsoft.ContainerService/managedClusters/"),
                    "{entry:?}"
                );
                assert!(!entry.resources.is_empty() && !entry.verbs.is_empty());
                for verb in entry.verbs {
                    assert!(VERBS.contains(verb), "{entry:?}");
                }
            }
        }
    }

    fn markdown_table(entries: &[TableEntry]) -> String {
        let code = |items: &[&str]| {
            items
                .iter()
                .map(|i| format!("`{i}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::from(
            "| API group | Resources | Verbs | AKS source |\n| --- | --- | --- | --- |\n",
        );
        for e in entries {
            let group = if e.api_group.is_empty() {
                "core (`\"\"`)".to_string()
            } else {
                format!("`{}`", e.api_group)
            };
            out.push_str(&format!(
                "| {group} | {} | {} | `{}` |\n",
                code(e.resources),
                e.verbs.join(", "),
                e.aks_source
            ));
        }
        out
    }

    #[test]
    fn docs_show_the_tables_as_they_are() {
        let docs = include_str!("../../docs/tiers.md");
        for (name, entries) in [("Reader", READER), ("Writer", WRITER), ("Admin", ADMIN)] {
            let table = markdown_table(entries);
            assert!(
                docs.contains(&table),
                "docs/tiers.md does not hold the current {name} table; it should be:\n{table}"
            );
        }
        for group in DEFAULT_ADMIN_EXCLUDE_API_GROUPS {
            assert!(docs.contains(&format!("`{group}`")), "{group} not in docs");
        }
    }
}
