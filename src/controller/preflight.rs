//! Start-up checks: is what `run` needs there (the CRD served, the lease
//! namespace, every permission of its ClusterRole and Roles)? Each problem
//! is one line that says what is wrong and the command that fixes it; the
//! process keeps checking with backoff and `/readyz` says why it waits.

use std::fmt;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::{Client, Error as KubeError};

use crate::controller::error::readable;

/// One permission the operator needs, as `config/rbac` grants it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permission {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    pub scope: Scope,
}

/// Where a permission is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everywhere (the ClusterRole `teamaccess-manager`).
    Cluster,
    /// In the operator's namespace, for the leader lease (Role `teamaccess-leader-election`).
    LeaseNamespace,
    /// In `default`, where events on cluster-scoped TeamAccess objects go
    /// (Role `teamaccess-events`).
    EventsNamespace,
}

const EVENTS_NAMESPACE: &str = "default";

const fn cluster(group: &'static str, resource: &'static str, verb: &'static str) -> Permission {
    Permission {
        group,
        resource,
        verb,
        scope: Scope::Cluster,
    }
}

/// What SPEC 6's RBAC grants, permission by permission (a test keeps this
/// equal to `config/rbac`).
#[rustfmt::skip]
pub const CLUSTER_PERMISSIONS: &[Permission] = &[
    cluster("teamaccess.dev", "teamaccesses", "get"),
    cluster("teamaccess.dev", "teamaccesses", "list"),
    cluster("teamaccess.dev", "teamaccesses", "watch"),
    cluster("teamaccess.dev", "teamaccesses", "patch"),
    cluster("teamaccess.dev", "teamaccesses", "update"),
    cluster("teamaccess.dev", "teamaccesses/status", "get"),
    cluster("teamaccess.dev", "teamaccesses/status", "patch"),
    cluster("teamaccess.dev", "teamaccesses/status", "update"),
    cluster("rbac.authorization.k8s.io", "roles", "get"),
    cluster("rbac.authorization.k8s.io", "roles", "list"),
    cluster("rbac.authorization.k8s.io", "roles", "watch"),
    cluster("rbac.authorization.k8s.io", "roles", "create"),
    cluster("rbac.authorization.k8s.io", "roles", "update"),
    cluster("rbac.authorization.k8s.io", "roles", "patch"),
    cluster("rbac.authorization.k8s.io", "roles", "delete"),
    cluster("rbac.authorization.k8s.io", "roles", "escalate"),
    cluster("rbac.authorization.k8s.io", "roles", "bind"),
    cluster("rbac.authorization.k8s.io", "rolebindings", "get"),
    cluster("rbac.authorization.k8s.io", "rolebindings", "list"),
    cluster("rbac.authorization.k8s.io", "rolebindings", "watch"),
    cluster("rbac.authorization.k8s.io", "rolebindings", "create"),
    cluster("rbac.authorization.k8s.io", "rolebindings", "update"),
    cluster("rbac.authorization.k8s.io", "rolebindings", "patch"),
    cluster("rbac.authorization.k8s.io", "rolebindings", "delete"),
    cluster("", "namespaces", "get"),
    cluster("", "namespaces", "list"),
    cluster("", "namespaces", "watch"),
    cluster("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    cluster("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    cluster("apiregistration.k8s.io", "apiservices", "list"),
    cluster("apiregistration.k8s.io", "apiservices", "watch"),
];

#[rustfmt::skip]
pub const LEASE_PERMISSIONS: &[Permission] = &[
    Permission { group: "coordination.k8s.io", resource: "leases", verb: "get", scope: Scope::LeaseNamespace },
    Permission { group: "coordination.k8s.io", resource: "leases", verb: "create", scope: Scope::LeaseNamespace },
    Permission { group: "coordination.k8s.io", resource: "leases", verb: "update", scope: Scope::LeaseNamespace },
];

#[rustfmt::skip]
pub const EVENT_PERMISSIONS: &[Permission] = &[
    Permission { group: "events.k8s.io", resource: "events", verb: "create", scope: Scope::EventsNamespace },
    Permission { group: "events.k8s.io", resource: "events", verb: "patch", scope: Scope::EventsNamespace },
];

/// Something `run` needs that is not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The API server does not serve `teamaccess.dev/v1alpha1`.
    CrdNotServed,
    /// The namespace of the leader lease does not exist.
    LeaseNamespaceMissing(String),
    /// Permissions the API server says we lack, by scope.
    Missing {
        scope: Scope,
        namespace: Option<String>,
        permissions: Vec<Permission>,
    },
    /// A check itself failed (the API server unreachable, say).
    CheckFailed(String),
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        write!(f, "{} {}{group}", self.verb, self.resource)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::CrdNotServed => write!(
                f,
                "the TeamAccess CRD (teamaccess.dev/v1alpha1) is not served; install it: kubectl apply --server-side -f crds/"
            ),
            Problem::LeaseNamespaceMissing(ns) => write!(
                f,
                "namespace {ns} (for the leader lease) does not exist; create it: kubectl create namespace {ns} (or run one replica with --leader-election=false)"
            ),
            Problem::Missing {
                scope,
                namespace,
                permissions,
            } => {
                let list: Vec<String> = permissions.iter().map(ToString::to_string).collect();
                let (where_, role) = match scope {
                    Scope::Cluster => {
                        ("cluster-wide".to_string(), "ClusterRole teamaccess-manager")
                    }
                    Scope::LeaseNamespace => (
                        format!("in namespace {}", namespace.as_deref().unwrap_or_default()),
                        "Role teamaccess-leader-election",
                    ),
                    Scope::EventsNamespace => (
                        format!("in namespace {}", namespace.as_deref().unwrap_or_default()),
                        "Role teamaccess-events",
                    ),
                };
                write!(
                    f,
                    "missing permissions {where_} ({role}): {}; grant them: kubectl apply -k config/rbac",
                    list.join(", ")
                )
            }
            Problem::CheckFailed(m) => write!(f, "start-up check failed: {m}"),
        }
    }
}

/// Every problem found, in the order a person fixes them; empty when the
/// process can start.
pub async fn check(client: &Client, lease_namespace: Option<&str>) -> Vec<Problem> {
    let mut problems = Vec::new();
    match client
        .list_api_group_resources("teamaccess.dev/v1alpha1")
        .await
    {
        Ok(list) if list.resources.iter().any(|r| r.name == "teamaccesses") => {}
        Ok(_) => problems.push(Problem::CrdNotServed),
        Err(KubeError::Api(s)) if s.is_not_found() => problems.push(Problem::CrdNotServed),
        Err(e) => {
            problems.push(Problem::CheckFailed(readable(&e)));
            return problems;
        }
    }
    if let Some(ns) = lease_namespace {
        match Api::<Namespace>::all(client.clone()).get_opt(ns).await {
            Ok(Some(_)) => {}
            Ok(None) => problems.push(Problem::LeaseNamespaceMissing(ns.to_string())),
            // lacking `get namespaces` is reported below
            Err(KubeError::Api(s)) if s.is_forbidden() => {}
            Err(e) => problems.push(Problem::CheckFailed(readable(&e))),
        }
    }
    let mut sets = vec![(Scope::Cluster, None, CLUSTER_PERMISSIONS)];
    if let Some(ns) = lease_namespace {
        sets.push((
            Scope::LeaseNamespace,
            Some(ns.to_string()),
            LEASE_PERMISSIONS,
        ));
    }
    sets.push((
        Scope::EventsNamespace,
        Some(EVENTS_NAMESPACE.to_string()),
        EVENT_PERMISSIONS,
    ));
    for (scope, namespace, wanted) in sets {
        let mut missing = Vec::new();
        for p in wanted {
            match allowed(client, p, namespace.as_deref()).await {
                Ok(true) => {}
                Ok(false) => missing.push(*p),
                Err(e) => {
                    problems.push(Problem::CheckFailed(readable(&e)));
                    return problems;
                }
            }
        }
        if !missing.is_empty() {
            problems.push(Problem::Missing {
                scope,
                namespace,
                permissions: missing,
            });
        }
    }
    problems
}

/// Asks the API server whether we may, as the authorizer sees it now.
async fn allowed(
    client: &Client,
    p: &Permission,
    namespace: Option<&str>,
) -> Result<bool, KubeError> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(p.group.to_string()),
                resource: Some(p.resource.split('/').next().unwrap_or_default().to_string()),
                subresource: p.resource.split_once('/').map(|(_, s)| s.to_string()),
                verb: Some(p.verb.to_string()),
                namespace: namespace.map(str::to_string),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules of a ClusterRole or Role document, one permission each.
    fn granted(yaml: &str, kind: &str) -> Vec<(String, String, String)> {
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).unwrap();
        let mut out = Vec::new();
        for doc in docs.iter().filter(|d| d["kind"] == kind) {
            for rule in doc["rules"].as_array().unwrap() {
                let list = |k: &str| -> Vec<String> {
                    rule[k]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_string())
                        .collect()
                };
                for g in list("apiGroups") {
                    for r in list("resources") {
                        for v in list("verbs") {
                            out.push((g.clone(), r.clone(), v));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    fn ours(ps: &[Permission]) -> Vec<(String, String, String)> {
        let mut out: Vec<_> = (ps.iter())
            .map(|p| {
                (
                    p.group.to_string(),
                    p.resource.to_string(),
                    p.verb.to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_checks_are_exactly_what_config_rbac_grants() {
        let rbac = |f: &str| {
            std::fs::read_to_string(format!("{}/config/rbac/{f}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
        };
        assert_eq!(
            ours(CLUSTER_PERMISSIONS),
            granted(&rbac("cluster_role.yaml"), "ClusterRole")
        );
        assert_eq!(
            ours(LEASE_PERMISSIONS),
            granted(&rbac("leader_election_role.yaml"), "Role")
        );
        assert_eq!(
            ours(EVENT_PERMISSIONS),
            granted(&rbac("events_role.yaml"), "Role")
        );
    }

    #[test]
    fn each_problem_is_one_line_with_its_fix() {
        let problems = [
            Problem::CrdNotServed,
            Problem::LeaseNamespaceMissing("teamaccess-system".into()),
            Problem::Missing {
                scope: Scope::Cluster,
                namespace: None,
                permissions: vec![CLUSTER_PERMISSIONS[0], CLUSTER_PERMISSIONS[24]],
            },
        ];
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(lines.iter().all(|l| !l.contains('\n')));
        assert!(lines[0].contains("kubectl apply --server-side -f crds/"));
        assert!(lines[1].contains("kubectl create namespace teamaccess-system"));
        assert!(lines[1].contains("--leader-election=false"));
        assert_eq!(
            lines[2],
            "missing permissions cluster-wide (ClusterRole teamaccess-manager): get teamaccesses.teamaccess.dev, get namespaces; grant them: kubectl apply -k config/rbac"
        );
    }
}
