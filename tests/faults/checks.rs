//! What every fault test ends with: the exact set of Roles and RoleBindings
//! the TeamAccess owns (nothing missing, nothing extra, no duplicates),
//! effective access by SubjectAccessReview, a status with exact counts and
//! Ready, and an operator that is quiet once it has converged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, ObjectMeta};
use kube::{Resource, ResourceExt};
use teamaccess::api::teamaccess::TeamAccess;

use crate::harness::operator::{self, Operator, condition, teamaccesses};
use crate::harness::support::{self, Cluster, can};

/// Leader-election flags short enough for a fault test: a 5 s outage
/// outlasts the renew deadline, and a takeover waits only 6 s.
pub const LEASE: [&str; 4] = ["--lease-duration", "6s", "--lease-retry-period", "1s"];
/// 2/3 of the lease duration, as the operator computes it.
pub const RENEW_DEADLINE: SignedDuration = SignedDuration::from_secs(4);
pub const LEASE_DURATION: SignedDuration = SignedDuration::from_secs(6);
/// What a leader logs as it exits.
pub const LOST: &str = "lost the leader lease; exiting so that only the leader writes";

pub use crate::harness::support::namespaces;

/// TeamAccess `name`, in `op`'s hands: `group` gets Writer in every
/// namespace labelled `label=true`.
pub async fn writer_over(
    cluster: &Cluster,
    op: &Operator,
    name: &str,
    label: &str,
    group: &str,
) -> TeamAccess {
    operator::apply(
        cluster,
        op,
        name,
        serde_json::json!({
            "groups": [{"id": group}],
            "grants": [{"tier": "Writer", "namespaceSelector": {"matchLabels": {label: "true"}}}],
        }),
    )
    .await
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "TeamAccess")
}

/// Namespace → how many objects of kind `K` the TeamAccess with `uid` owns there.
async fn owned<K>(cluster: &Cluster, uid: &str) -> BTreeMap<String, usize>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut count = BTreeMap::new();
    for o in Api::<K>::all(cluster.client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing")
        .items
    {
        if owned_by(o.meta(), uid) {
            *count.entry(o.namespace().unwrap_or_default()).or_insert(0) += 1;
        }
    }
    count
}

/// How many Roles the TeamAccess with `uid` owns, over every namespace.
pub async fn owned_roles(cluster: &Cluster, uid: &str) -> usize {
    owned::<Role>(cluster, uid).await.values().sum()
}

/// Exactly one Role and one RoleBinding owned by `ta` in each of
/// `namespaces`, and none anywhere else.
pub async fn owns_exactly(cluster: &Cluster, ta: &TeamAccess, namespaces: &[String]) {
    let uid = ta.uid().expect("a uid");
    let want: BTreeMap<String, usize> = namespaces.iter().map(|n| (n.clone(), 1)).collect();
    for (kind, have) in [
        ("Roles", owned::<Role>(cluster, &uid).await),
        ("RoleBindings", owned::<RoleBinding>(cluster, &uid).await),
    ] {
        let extra: Vec<_> = have.keys().filter(|n| !want.contains_key(*n)).collect();
        let missing: Vec<_> = want.keys().filter(|n| !have.contains_key(*n)).collect();
        let duplicated: Vec<_> = have.iter().filter(|(_, c)| **c > 1).collect();
        assert!(
            extra.is_empty() && missing.is_empty() && duplicated.is_empty(),
            "{kind} owned by {}: missing in {missing:?}, extra in {extra:?}, duplicated {duplicated:?}",
            ta.name_any()
        );
        assert_eq!(have.values().sum::<usize>(), namespaces.len(), "{kind}");
    }
}

/// A Writer member of `group` may create Deployments in every sampled
/// namespace, may not edit RBAC there, and gets nothing in `outside`.
pub async fn writer_access(cluster: &Cluster, group: &str, sample: &[&String], outside: &str) {
    let c = &cluster.client;
    for ns in sample {
        assert!(
            can(c, group, "create", "deployments.apps", ns).await,
            "Writer creates deployments in {ns}"
        );
        assert!(
            !can(c, group, "create", "roles.rbac.authorization.k8s.io", ns).await,
            "Writer never edits RBAC in {ns}"
        );
    }
    assert!(
        !can(c, group, "get", "pods", outside).await,
        "nothing in {outside}, which no grant selects"
    );
}

/// What every kill test ends with: exactly our objects, Writer access for
/// `group` in a tenth of `namespaces` (and none in `outside`), and the
/// status counting all of them applied.
pub async fn end_state(
    cluster: &Cluster,
    ta: &TeamAccess,
    namespaces: &[String],
    group: &str,
    outside: &str,
) {
    owns_exactly(cluster, ta, namespaces).await;
    let sample: Vec<&String> = namespaces
        .iter()
        .step_by((namespaces.len() / 10).max(1))
        .collect();
    writer_access(cluster, group, &sample, outside).await;
    let n = namespaces.len();
    assert_eq!(
        ta.status.as_ref().unwrap().progress.as_deref(),
        Some(format!("{n}/{n}").as_str())
    );
}

/// Waits (up to `within`) until the status of the current generation counts
/// exactly `n` targeted and `n` applied, nothing else, and is Ready.
pub async fn converged(cluster: &Cluster, name: &str, n: u32, within: Duration) -> TeamAccess {
    let api = teamaccesses(cluster);
    support::eventually(
        &format!("TeamAccess {name}: {n}/{n} applied and Ready"),
        within,
        || {
            let api = api.clone();
            async move {
                let ta = api.get(name).await.ok()?;
                let status = ta.status.as_ref()?;
                let summary = status.summary.as_ref()?;
                let exact = summary.targeted == n
                    && summary.applied == n
                    && summary.pending == 0
                    && summary.skipped == 0
                    && summary.failed == 0;
                let ready = condition(&ta, "Ready")
                    .is_some_and(|c| c.status == "True" && c.reason == "Applied");
                (status.observed_generation == ta.metadata.generation && exact && ready)
                    .then_some(ta)
            }
        },
    )
    .await
}

/// What the operator did over a `window` of steady state.
#[derive(Debug)]
pub struct Quiet {
    /// Requests of every kind but the lease's, from the audit log.
    pub requests: usize,
    /// The lease's (a leader's renewals), counted apart.
    pub lease_requests: usize,
    pub writes: usize,
    /// Lists: a watch that had to start over (after a 410, or a failure).
    pub lists: usize,
    /// "reconciled" lines of its own log.
    pub reconciles: usize,
}

pub async fn over_steady_state(cluster: &Cluster, op: &Operator, window: Duration) -> Quiet {
    let reconciled = || {
        op.log_lines()
            .iter()
            .filter(|l| l["message"] == "reconciled")
            .count()
    };
    let before = reconciled();
    let from = Timestamp::now();
    let started = Instant::now();
    // the window is the measurement itself, not a wait for a condition
    tokio::time::sleep(window).await;
    let to = Timestamp::now();
    let all = support::requests_by(cluster, &op.user, from, to).await;
    // a leader renews its lease every retry period, converged or not
    let (leases, requests): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|r| r.resource == "leases");
    let quiet = Quiet {
        lease_requests: leases.len(),
        requests: requests.len(),
        writes: requests.iter().filter(|r| r.is_write()).count(),
        lists: requests.iter().filter(|r| r.verb == "list").count(),
        reconciles: reconciled() - before,
    };
    let mut by_kind = BTreeMap::new();
    for r in &requests {
        *by_kind
            .entry(format!("{} {} {}", r.verb, r.resource, r.code))
            .or_insert(0) += 1;
    }
    eprintln!(
        "window of {:?}: {quiet:?}; requests: {by_kind:?}",
        started.elapsed()
    );
    quiet
}

/// Waits for the operator to go quiet and checks that it has: the first 20 s
/// window (of at most 6) with no writes and no lists must also hold at most
/// one reconcile and 10 requests. Until then the watches may still be
/// starting over after 410s (with backoff grown during an outage), and a
/// reconcile from a stale cache may send creates answered AlreadyExists.
/// Returns when the quiet window began.
pub async fn goes_quiet(cluster: &Cluster, op: &Operator) -> Timestamp {
    let mut windows = Vec::new();
    let (settled, quiet) = loop {
        let window_start = Timestamp::now();
        let quiet = over_steady_state(cluster, op, Duration::from_secs(20)).await;
        let done = quiet.writes == 0 && quiet.lists == 0;
        windows.push(quiet);
        if done || windows.len() == 6 {
            break (window_start, windows.last().unwrap());
        }
    };
    eprintln!("quiet after {} window(s) of 20 s", windows.len());
    assert_eq!(quiet.writes, 0, "no writes once converged: {windows:?}");
    assert!(quiet.lists == 0, "the watches settle: {windows:?}");
    assert!(quiet.reconciles <= 1, "no reconcile loop: {quiet:?}");
    assert!(quiet.requests <= 10, "no request loop: {quiet:?}");
    // a read and an update per retry period of 1 s (LEASE), and slack
    assert!(
        quiet.lease_requests <= 2 * 20 + 4,
        "no lease loop: {quiet:?}"
    );
    settled
}

/// From the audit log over `[from, to]`, summed over `users` (the processes
/// that shared the work): no Role or RoleBinding created (201) more than `n`
/// times, and none deleted. Requests in flight at a SIGKILL of the apiserver
/// have no audit event (it is written when the response completes), so the
/// log may show fewer than `n` creates.
pub async fn created_at_most_once(
    cluster: &Cluster,
    users: &[&str],
    from: Timestamp,
    to: Timestamp,
    n: usize,
) {
    let mut writes = Vec::new();
    for user in users {
        writes.extend(support::writes_by(cluster, user, from, to).await);
    }
    let count = |resource: &str, verb: &str, code: i64| {
        writes
            .iter()
            .filter(|w| w.resource == resource && w.verb == verb && w.code == code)
            .count()
    };
    for resource in ["roles", "rolebindings"] {
        assert!(
            count(resource, "create", 201) <= n,
            "{resource} created once each"
        );
        assert!(
            !writes
                .iter()
                .any(|w| w.resource == resource && w.verb == "delete"),
            "nothing revoked: {resource}"
        );
    }
    eprintln!(
        "creates: roles {} (201) + {} (409), rolebindings {} (201) + {} (409)",
        count("roles", "create", 201),
        count("roles", "create", 409),
        count("rolebindings", "create", 201),
        count("rolebindings", "create", 409),
    );
}

/// Requests the operator has sent so far, by its own count
/// (`teamaccess_api_requests_total`, every method and answer).
pub async fn requests_sent(op: &Operator) -> u64 {
    let (code, body) = op.get("/metrics").await;
    assert_eq!(code, 200, "/metrics: {body}");
    body.lines()
        .filter(|l| l.starts_with("teamaccess_api_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The operator's log lines with `message`, from line `from` on.
pub fn log_count(op: &Operator, from: usize, message: &str) -> usize {
    (op.log_lines().iter().skip(from))
        .filter(|l| l["message"] == message)
        .count()
}

/// No Stalled condition left, or one that is False.
pub fn not_stalled(ta: &TeamAccess) -> bool {
    condition(ta, "Stalled").is_none_or(|c| c.status != "True")
}
