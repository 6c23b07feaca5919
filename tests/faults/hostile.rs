//! Hostile specs that pass schema validation (issue 10, item 7): a selector
//! over every namespace (protected ones included) of a cluster with 5,000 of
//! them, some deleted while they are being written; names at the lengths
//! where managed object names and owner labels switch to hashed, and names
//! that equal another TeamAccess's object names; 200 TeamAccess objects
//! applied at once.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use teamaccess::access::naming;
use teamaccess::api::teamaccess::{NamespaceState, TeamAccess};

use crate::checks;
use crate::harness::operator::{self, Operator, condition, teamaccesses};
use crate::harness::support::{self, can};
use crate::plane::ControlPlane;

/// Protected by default, whatever a selector says (SPEC 2): those a fresh
/// control plane has, and the operator's own.
const PROTECTED: [&str; 4] = [
    "kube-node-lease",
    "kube-public",
    "kube-system",
    operator::OPERATOR_NS,
];

fn group(seed: u32) -> String {
    format!("{seed:08x}-0000-4000-8000-{seed:012x}")
}

/// Namespace → UIDs of the objects of kind `K` owned (by owner reference)
/// by each TeamAccess UID, from one listing.
async fn ownership<K>(client: &Client) -> BTreeMap<String, BTreeMap<String, Vec<String>>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut by_owner: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for o in Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("listing")
        .items
    {
        for owner in o.meta().owner_references.iter().flatten() {
            if owner.kind == "TeamAccess" {
                by_owner
                    .entry(owner.uid.clone())
                    .or_default()
                    .entry(o.namespace().unwrap_or_default())
                    .or_default()
                    .push(o.uid().unwrap_or_default());
            }
        }
    }
    by_owner
}

/// Every TeamAccess in `want` (UID → namespaces) owns exactly one Role and
/// one RoleBinding in each of its namespaces; no other TeamAccess owns any.
async fn owned_exactly(client: &Client, want: &BTreeMap<String, BTreeSet<String>>) {
    for (kind, have) in [
        ("Roles", ownership::<Role>(client).await),
        ("RoleBindings", ownership::<RoleBinding>(client).await),
    ] {
        let strangers: Vec<_> = have.keys().filter(|u| !want.contains_key(*u)).collect();
        assert!(strangers.is_empty(), "{kind} owned by {strangers:?}");
        for (uid, namespaces) in want {
            let empty = BTreeMap::new();
            let got = have.get(uid).unwrap_or(&empty);
            let got_ns: BTreeSet<String> = got.keys().cloned().collect();
            let duplicated: Vec<_> = got.iter().filter(|(_, u)| u.len() > 1).collect();
            assert!(
                &got_ns == namespaces && duplicated.is_empty(),
                "{kind} of {uid}: missing {:?}, extra {:?}, duplicated {duplicated:?}",
                namespaces.difference(&got_ns).collect::<Vec<_>>(),
                got_ns.difference(namespaces).collect::<Vec<_>>(),
            );
        }
    }
}

/// Whether the status of the current generation counts exactly these, with
/// Ready=True (`reason`) and neither Reconciling nor Stalled.
fn settled(ta: &TeamAccess, targeted: u32, applied: u32, skipped: u32, reason: &str) -> bool {
    let Some(status) = ta.status.as_ref() else {
        return false;
    };
    let Some(s) = status.summary.as_ref() else {
        return false;
    };
    status.observed_generation == ta.metadata.generation
        && (s.targeted, s.applied, s.pending, s.skipped, s.failed)
            == (targeted, applied, 0, skipped, targeted - applied - skipped)
        && condition(ta, "Ready").is_some_and(|c| c.status == "True" && c.reason == reason)
        && condition(ta, "Reconciling").is_none_or(|c| c.status != "True")
        && condition(ta, "Stalled").is_none_or(|c| c.status != "True")
}

/// The operator's peak resident set size (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

const BULK: usize = 5000;
/// The reconcile is held (a failpoint) before its creates in this
/// namespace, and it is deleted along with its neighbours meanwhile.
const HELD: usize = 2500;
const DELETED: std::ops::Range<usize> = 2450..2550;
const EVERYONE: &str = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a";
const NAMED: &str = "8c7b6a5f-4e3d-4c2b-9a1f-0e9d8c7b6a5f";

#[tokio::test]
async fn a_selector_over_every_namespace_of_5000_skips_the_protected_and_stays_bounded() {
    let plane = ControlPlane::up("hostile-bulk", "");
    let cluster = plane.cluster().await;
    let c = &cluster.client;
    let started = Instant::now();
    let bulk = checks::namespaces(&cluster, "bulk", BULK, "hostile-bulk").await;
    eprintln!(
        "created {BULK} namespaces (16 at a time) in {:?}",
        started.elapsed()
    );
    let held = &bulk[HELD];
    let op = Operator::spawn_with(
        &cluster,
        "hostile-bulk",
        "hostile-bulk",
        "teamaccess-manager",
        &["--leader-election=false"],
        &[("TEAMACCESS_FAILPOINT", &format!("before-create:{held}:10"))],
    )
    .await;
    op.wait_for_log("the operator to reconcile", "leading: reconciling")
        .await;
    // schema-valid, and it matches every namespace there is or will be:
    // the protected ones too
    let applied_at = Instant::now();
    let from = Timestamp::now();
    operator::apply(
        &cluster,
        &op,
        "everything",
        json!({
            "groups": [{"id": EVERYONE}],
            "grants": [{"tier": "Writer", "namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "Exists"}]}}],
        }),
    )
    .await;
    // a protected namespace named outright is Denied (a person must act)
    operator::apply(
        &cluster,
        &op,
        "names-kube-system",
        json!({
            "groups": [{"id": NAMED}],
            "grants": [{"tier": "Reader", "namespaces": ["kube-system", "default"]}],
        }),
    )
    .await;

    // namespaces deleted while being written: the held one and its
    // neighbours, some written already and some not yet
    op.wait_for_log("the reconcile to reach the pause", "failpoint: pausing")
        .await;
    let deleted: Vec<String> = DELETED.map(|i| bulk[i].clone()).collect();
    let namespaces = Api::<Namespace>::all(c.clone());
    futures::stream::iter(deleted.clone())
        .map(|name| {
            let namespaces = namespaces.clone();
            async move {
                namespaces
                    .delete(&name, &DeleteParams::default())
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("deleting namespaces");
    eprintln!(
        "deleted {} namespaces (with {held}) while the reconcile was held there",
        deleted.len()
    );

    let mut selected: Vec<String> = (bulk.iter())
        .filter(|n| !deleted.contains(n))
        .cloned()
        .collect();
    selected.push("default".into());
    let applied = selected.len() as u32;
    let targeted = applied + PROTECTED.len() as u32;
    let api = teamaccesses(&cluster);
    let everything = support::eventually(
        "TeamAccess everything: exact counts, protected skipped, Ready",
        Duration::from_secs(240),
        || {
            let api = api.clone();
            async move {
                let ta = api.get("everything").await.ok()?;
                settled(&ta, targeted, applied, PROTECTED.len() as u32, "Applied").then_some(ta)
            }
        },
    )
    .await;
    eprintln!(
        "everything: {targeted} targeted, converged {:?} after it was applied",
        applied_at.elapsed()
    );
    for name in &deleted {
        support::absent(
            &namespaces,
            name,
            "the deleted namespaces to be gone",
            Duration::from_secs(120),
        )
        .await;
    }

    // nothing in the protected namespaces, exactly one pair everywhere else
    checks::owns_exactly(&cluster, &everything, &selected).await;
    let sample: Vec<&String> = selected.iter().step_by(selected.len() / 10).collect();
    checks::writer_access(&cluster, EVERYONE, &sample, "kube-system").await;
    for ns in PROTECTED {
        assert!(
            !can(c, EVERYONE, "get", "pods", ns).await,
            "nothing granted in protected {ns}"
        );
    }

    // the status: bounded, exact, protected ones reported as Skipped first
    let status = everything.status.as_ref().unwrap();
    let bytes = serde_json::to_vec(status).unwrap().len();
    let skipped: BTreeSet<&str> = (status.namespaces.iter())
        .filter(|e| e.state == NamespaceState::Skipped)
        .map(|e| e.name.as_str())
        .collect();
    eprintln!(
        "status of everything: {bytes} bytes serialized, {} namespace entries, summary {:?}",
        status.namespaces.len(),
        status.summary
    );
    assert_eq!(status.namespaces.len(), 100, "the list is bounded");
    assert!(bytes < 32 * 1024, "the status stays small: {bytes} bytes");
    assert_eq!(
        skipped,
        BTreeSet::from(PROTECTED),
        "protected ones are Skipped"
    );
    assert!(
        (status.namespaces.iter())
            .all(|e| matches!(e.state, NamespaceState::Skipped | NamespaceState::Applied)),
        "no error left in {:?}",
        status.namespaces
    );

    let named = operator::status_until(&cluster, "names-kube-system", "Denied, Stalled", |ta| {
        condition(ta, "Stalled").is_some_and(|c| c.status == "True" && c.reason == "Denied")
            && condition(ta, "Ready").is_some_and(|c| c.status == "False")
    })
    .await;
    let s = named.status.as_ref().unwrap();
    let summary = s.summary.as_ref().unwrap();
    assert_eq!(
        (summary.targeted, summary.applied, summary.failed),
        (2, 1, 1),
        "{summary:?}"
    );
    assert!(
        (s.namespaces.iter()).any(|e| e.name == "kube-system" && e.state == NamespaceState::Denied),
        "{:?}",
        s.namespaces
    );
    checks::owns_exactly(&cluster, &named, &["default".to_string()]).await;
    assert!(!can(c, NAMED, "get", "pods", "kube-system").await);
    assert!(can(c, NAMED, "get", "pods", "default").await);

    // the held create did race the deletion: the API server refused it
    let writes = support::writes_by(&cluster, &op.user, from, Timestamp::now()).await;
    let held_creates: Vec<i64> = (writes.iter())
        .filter(|w| w.namespace == *held && w.verb == "create" && w.resource == "roles")
        .map(|w| w.code)
        .collect();
    eprintln!("Role creates in {held} (deleted while held): {held_creates:?}");
    assert!(
        !held_creates.is_empty() && held_creates.iter().all(|c| *c == 403 || *c == 404),
        "the held create was refused by the deletion: {held_creates:?}"
    );

    let peak = peak_rss_kib(op.pid());
    eprintln!(
        "operator peak RSS (VmHWM) over {BULK} namespaces and {} owned objects: {} MiB",
        2 * selected.len() + 2,
        peak / 1024
    );
    assert!(
        !op.log_lines().iter().any(|l| l["level"] == "ERROR"),
        "no errors logged"
    );
}

/// The lengths where names switch to hashed: a Role named
/// `teamaccess-<name>` must be shorter than 253 characters to stay plain,
/// an owner label shorter than 63.
const OBJECT_PLAIN_MAX: usize = naming::MAX_OBJECT_NAME - naming::OBJECT_PREFIX.len() - 1;
const LABEL_PLAIN_MAX: usize = naming::MAX_LABEL_VALUE - 1;

fn name_of(len: usize, tail: &str) -> String {
    let mut s = "h".repeat(len - tail.len());
    s.push_str(tail);
    s
}

#[tokio::test]
async fn names_at_the_hashing_thresholds_and_names_like_anothers_objects_never_meet() {
    let plane = ControlPlane::up("hostile-names", "");
    let cluster = plane.cluster().await;
    let c = &cluster.client;
    let namespaces: Vec<String> = checks::namespaces(&cluster, "names", 3, "hostile-names").await;
    let outside = support::namespace(c, "names-outside", &[]).await;
    let op = Operator::start(&cluster, "hostile-names", &["--leader-election=false"]).await;

    // the last plain name and the first two hashed ones share their first
    // characters, so a truncation alone would give all three one name
    let tas: Vec<(String, &str)> = vec![
        (name_of(OBJECT_PLAIN_MAX, "a"), "Reader"),
        (name_of(OBJECT_PLAIN_MAX + 1, "ab"), "Writer"),
        (name_of(OBJECT_PLAIN_MAX + 2, "abc"), "Admin"),
        (name_of(LABEL_PLAIN_MAX, "a"), "Writer"),
        (name_of(LABEL_PLAIN_MAX + 1, "ab"), "Reader"),
        ("shared".into(), "Reader"),
        ("teamaccess-shared".into(), "Writer"),
        ("teamaccess-teamaccess-shared".into(), "Admin"),
    ];
    assert_eq!(naming::object_name(&tas[0].0).len(), 252, "plain");
    assert_eq!(naming::object_name(&tas[1].0).len(), 253, "hashed");
    assert_eq!(naming::object_name(&tas[2].0).len(), 253, "hashed");
    assert_eq!(naming::owner_label(&tas[3].0), tas[3].0, "plain label");
    assert!(naming::owner_label_shortened(&tas[4].0), "hashed label");
    let object_names: BTreeSet<String> = tas.iter().map(|(n, _)| naming::object_name(n)).collect();
    assert_eq!(object_names.len(), tas.len(), "distinct by construction");

    for (i, (name, tier)) in tas.iter().enumerate() {
        operator::apply(
            &cluster,
            &op,
            name,
            json!({"groups": [{"id": group(i as u32 + 1)}],
                   "grants": [{"tier": tier, "namespaces": &namespaces}]}),
        )
        .await;
    }
    let mut converged = Vec::new();
    for (name, _) in &tas {
        converged.push(checks::converged(&cluster, name, 3, Duration::from_secs(90)).await);
    }
    // people see what happened: an event names each, however long its name
    for (name, _) in &tas {
        operator::event_with(&cluster, name, "Applied", "").await;
    }
    let all: BTreeSet<String> = namespaces.iter().cloned().collect();
    let want: BTreeMap<String, BTreeSet<String>> = (converged.iter())
        .map(|ta| (ta.uid().unwrap(), all.clone()))
        .collect();
    owned_exactly(c, &want).await;

    // each binding binds its own Role, and each group has its own tier
    let tier_check = async |i: usize, tier: &str, ns: &str| {
        let g = group(i as u32 + 1);
        let reads = can(c, &g, "get", "pods", ns).await;
        let writes = can(c, &g, "create", "deployments.apps", ns).await;
        let rbac = can(c, &g, "create", "roles.rbac.authorization.k8s.io", ns).await;
        let expected = match tier {
            "Reader" => (true, false, false),
            "Writer" => (true, true, false),
            _ => (true, true, true),
        };
        assert_eq!(
            (reads, writes, rbac),
            expected,
            "{tier} of {} in {ns}",
            tas[i].0
        );
    };
    for ns in &namespaces {
        let bindings = Api::<RoleBinding>::namespaced(c.clone(), ns);
        for (i, ((name, tier), ta)) in tas.iter().zip(&converged).enumerate() {
            let rb = bindings.get(&naming::object_name(name)).await.unwrap();
            assert_eq!(rb.role_ref.name, naming::object_name(name));
            assert!(
                (rb.owner_references().iter()).any(|o| Some(&o.uid) == ta.uid().as_ref()),
                "{} in {ns} is {name}'s",
                rb.name_any()
            );
            let subjects: Vec<&str> = (rb.subjects.iter().flatten())
                .map(|s| s.name.as_str())
                .collect();
            assert_eq!(subjects, [group(i as u32 + 1).as_str()]);
            tier_check(i, tier, ns).await;
        }
    }
    assert!(!can(c, &group(1), "get", "pods", &outside).await);

    // deleting the one named like another's objects, and one of the two
    // hashed names that share a prefix, leaves the others' objects as they were
    let before = ownership::<Role>(c).await;
    for gone in [&tas[6].0, &tas[1].0] {
        teamaccesses(&cluster)
            .delete(gone, &DeleteParams::default())
            .await
            .unwrap();
        operator::gone(&cluster, gone).await;
    }
    let mut want = want;
    for i in [6, 1] {
        want.remove(&converged[i].uid().unwrap());
    }
    owned_exactly(c, &want).await;
    let after = ownership::<Role>(c).await;
    for uid in want.keys() {
        assert_eq!(before.get(uid), after.get(uid), "untouched: {uid}");
    }
    for ns in &namespaces {
        for i in [6, 1] {
            assert!(!can(c, &group(i as u32 + 1), "get", "pods", ns).await);
        }
        for (i, (_, tier)) in tas.iter().enumerate() {
            if i != 6 && i != 1 {
                tier_check(i, tier, ns).await;
            }
        }
    }
    for (i, (name, _)) in tas.iter().enumerate() {
        if i != 6 && i != 1 {
            checks::converged(&cluster, name, 3, Duration::from_secs(30)).await;
        }
    }
}

const MANY: usize = 200;
const POOL: usize = 20;

#[tokio::test]
async fn two_hundred_teamaccess_objects_applied_at_once_converge_with_bounded_requests() {
    let plane = ControlPlane::up("hostile-many", "");
    let cluster = plane.cluster().await;
    let c = &cluster.client;
    let pool = checks::namespaces(&cluster, "many", POOL, "hostile-many").await;
    let op = Operator::start(&cluster, "hostile-many", &["--leader-election=false"]).await;

    // two namespaces each, never the same one twice: 6i + 3 is odd, so
    // i and 7i + 3 differ modulo 20
    let spec_of = |i: usize| -> (String, Vec<String>) {
        (
            format!("many-{i:03}"),
            vec![pool[i % POOL].clone(), pool[(7 * i + 3) % POOL].clone()],
        )
    };
    let from = Timestamp::now();
    let started = Instant::now();
    let opr = &op;
    let clusterr = &cluster;
    futures::stream::iter(0..MANY)
        .map(|i| async move {
            let (name, namespaces) = spec_of(i);
            operator::apply(
                clusterr,
                opr,
                &name,
                json!({"groups": [{"id": group(i as u32 + 1)}],
                       "grants": [{"tier": "Reader", "namespaces": namespaces}]}),
            )
            .await
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>()
        .await;
    eprintln!(
        "applied {MANY} TeamAccess objects in {:?}",
        started.elapsed()
    );

    let api = teamaccesses(&cluster);
    let all = support::eventually(
        &format!("all {MANY} TeamAccess objects 2/2 applied and Ready"),
        Duration::from_secs(180),
        || {
            let api = api.clone();
            async move {
                let list = api.list(&ListParams::default()).await.ok()?.items;
                (list.len() == MANY && list.iter().all(|ta| settled(ta, 2, 2, 0, "Applied")))
                    .then_some(list)
            }
        },
    )
    .await;
    let convergence = started.elapsed();
    let to = Timestamp::now();
    eprintln!("all {MANY} converged {convergence:?} after the first apply");

    let by_name: BTreeMap<String, &TeamAccess> = all.iter().map(|ta| (ta.name_any(), ta)).collect();
    let want: BTreeMap<String, BTreeSet<String>> = (0..MANY)
        .map(|i| {
            let (name, namespaces) = spec_of(i);
            (
                by_name[&name].uid().unwrap(),
                namespaces.into_iter().collect(),
            )
        })
        .collect();
    owned_exactly(c, &want).await;
    for i in (0..MANY).step_by(20) {
        let (_, namespaces) = spec_of(i);
        let g = group(i as u32 + 1);
        for ns in &namespaces {
            assert!(can(c, &g, "get", "pods", ns).await, "many-{i:03} in {ns}");
        }
        let elsewhere = pool.iter().find(|n| !namespaces.contains(n)).unwrap();
        assert!(
            !can(c, &g, "get", "pods", elsewhere).await,
            "many-{i:03} only in its own"
        );
    }

    // what it cost, from the audit log: per TeamAccess, its own writes
    // (finalizer, status) and those of its Roles and RoleBindings
    let requests = support::requests_by(&cluster, &op.user, from, to).await;
    let mut per_ta: BTreeMap<String, usize> = BTreeMap::new();
    for r in requests.iter().filter(|r| r.is_write()) {
        let owner = match r.resource.as_str() {
            "teamaccesses" | "teamaccesses/status" => Some(r.name.clone()),
            "roles" | "rolebindings" => {
                r.name.strip_prefix(naming::OBJECT_PREFIX).map(String::from)
            }
            _ => None,
        };
        if let Some(o) = owner {
            *per_ta.entry(o).or_insert(0) += 1;
        }
    }
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        *by_kind
            .entry(format!("{} {} {}", r.verb, r.resource, r.code))
            .or_insert(0) += 1;
    }
    let max = per_ta.values().max().copied().unwrap_or(0);
    let writes: usize = per_ta.values().sum();
    eprintln!(
        "requests until convergence: {} in all ({:.1} per TeamAccess); writes for the \
         TeamAccess objects and their objects: {writes} ({:.1} per TeamAccess, at most {max}); {by_kind:?}",
        requests.len(),
        requests.len() as f64 / MANY as f64,
        writes as f64 / MANY as f64,
    );
    assert_eq!(per_ta.len(), MANY, "every TeamAccess written for");
    // 4 creates, a finalizer and a status or two (measured: at most 7, 7.4
    // requests each in all): anything past that is a write loop
    assert!(max <= 8, "writes per TeamAccess bounded: at most {max}");
    assert!(
        requests.len() <= MANY * 12,
        "requests bounded: {} for {MANY}",
        requests.len()
    );
    let quiet = checks::over_steady_state(&cluster, &op, Duration::from_secs(10)).await;
    assert_eq!(quiet.writes, 0, "quiet once converged: {quiet:?}");
    assert!(quiet.requests <= 10, "no request loop: {quiet:?}");
}
