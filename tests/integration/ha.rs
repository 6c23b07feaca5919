//! Two replicas: only the leader writes, a standby takes over when the leader
//! dies, a leader that loses its lease stops and exits, and SIGTERM hands the
//! lease over at once. Writers are told apart by the audit log: each replica
//! runs under its own ServiceAccount, bound to the same config/rbac roles.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::operator::{self, OPERATOR_NS, Operator};
use crate::support::{self, can};

const G: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const LEASE: [&str; 4] = ["--lease-duration", "6s", "--lease-retry-period", "1s"];

fn writes_other_than_leases(events: Vec<support::AuditEvent>) -> Vec<support::AuditEvent> {
    events
        .into_iter()
        .filter(|e| e.resource != "leases")
        .collect()
}

/// Deletes our RoleBinding in `ns` over and over, as an admin, so a leader
/// has a write to make at any moment (a lease lost between two reconciles
/// would show nothing); stops when dropped.
struct Churn(tokio::task::JoinHandle<()>);

impl Drop for Churn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn churn(cluster: &support::Cluster, ns: &str, name: &str) -> Churn {
    let api = Api::<RoleBinding>::namespaced(cluster.client.clone(), ns);
    let obj = teamaccess::access::naming::object_name(name);
    Churn(tokio::spawn(async move {
        loop {
            let _ = api.delete(&obj, &DeleteParams::default()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }))
}

/// One replica's requests, from the audit log: its successful lease
/// renewals, and every other write it attempted (refused ones too).
struct Record {
    renewals: Vec<Timestamp>,
    writes: Vec<Timestamp>,
}

async fn record(cluster: &support::Cluster, user: &str, from: Timestamp) -> Record {
    let events = support::writes_by(cluster, user, from, Timestamp::now()).await;
    let (leases, others): (Vec<_>, Vec<_>) =
        events.into_iter().partition(|e| e.resource == "leases");
    Record {
        renewals: (leases.iter())
            // taking the lease (create) renews it as much as an update does
            .filter(|e| e.code == 200 || e.code == 201)
            .map(|e| e.received)
            .collect(),
        writes: others.iter().map(|e| e.received).collect(),
    }
}

/// Waits until `user` has recreated the churned binding since `from`.
async fn repairing(cluster: &support::Cluster, user: &str, from: Timestamp) {
    support::eventually(
        &format!("{user} to repair the churned binding"),
        Duration::from_secs(30),
        || async {
            (support::writes_by(cluster, user, from, Timestamp::now())
                .await
                .iter())
            .any(|w| w.resource == "rolebindings" && w.verb == "create" && w.code == 201)
            .then_some(())
        },
    )
    .await;
}

fn ms(d: k8s_openapi::jiff::SignedDuration) -> i128 {
    d.as_millis()
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over() {
    let cluster = support::cluster().await;
    let id = support::unique("ha");
    let began = Timestamp::now();
    let mut a = Operator::spawn(&cluster, &id, &format!("{id}-a"), &LEASE).await;
    a.wait_for_log("replica a to lead", "leading: reconciling")
        .await;
    let b = Operator::spawn(&cluster, &id, &format!("{id}-b"), &LEASE).await;
    b.wait_for_log("replica b to sync its caches", "caches synced")
        .await;
    assert_eq!(
        b.get("/readyz").await.0,
        200,
        "a standby is ready: its caches are synced"
    );
    assert!(!b.logged("leading: reconciling"));

    let from = Timestamp::now();
    let ns = support::namespace(&cluster.client, "ha", &[]).await;
    let name = format!("ha-{id}");
    operator::grant(&cluster, &a, &name, G, "Reader", &ns).await;
    let to = Timestamp::now();
    assert!(
        !writes_other_than_leases(support::writes_by(&cluster, &a.user, from, to).await).is_empty(),
        "the leader wrote"
    );
    let standby = support::writes_by(&cluster, &b.user, from, to).await;
    assert!(
        standby.is_empty(),
        "the standby wrote nothing at all, not even the lease: {standby:#?}"
    );

    // the leader dies without a word; the standby must wait out the lease
    let killed = Instant::now();
    a.kill();
    b.wait_for_log("replica b to take over", "leading: reconciling")
        .await;
    let takeover = killed.elapsed();
    println!("takeover after {takeover:?} (lease 6s, retry 1s)");
    // scheduling slack on a busy 2-core machine on top of duration + retry
    assert!(
        takeover <= Duration::from_secs(6 + 1 + 3),
        "took over after {takeover:?}"
    );

    // the new leader does the work
    let from = Timestamp::now();
    let bindings = Api::<RoleBinding>::namespaced(cluster.client.clone(), &ns);
    let object = teamaccess::access::naming::object_name(&name);
    let old = bindings.get(&object).await.unwrap().metadata.uid;
    bindings
        .delete(&object, &DeleteParams::default())
        .await
        .unwrap();
    // the binding itself, recreated: an access review alone may still answer
    // from the authorizer's cache, from before the delete
    support::eventually("b to restore access", Duration::from_secs(30), || async {
        let now = bindings.get_opt(&object).await.ok()??;
        (now.metadata.uid != old && can(&cluster.client, G, "list", "pods", &ns).await)
            .then_some(())
    })
    .await;
    let to = Timestamp::now();
    let by_b = writes_other_than_leases(support::writes_by(&cluster, &b.user, from, to).await);
    assert!(
        by_b.iter()
            .any(|w| w.resource == "rolebindings" && w.verb == "create"),
        "{by_b:#?}"
    );
    // the standby waited out the dead leader's lease: its first write (the
    // lease itself) comes a full lease duration after a's last renewal
    let ra = record(&cluster, &a.user, began).await;
    let rb = record(&cluster, &b.user, began).await;
    let last_renewal = *ra.renewals.iter().max().expect("a renewed its lease");
    let taken = *rb.renewals.iter().min().expect("b took the lease");
    println!(
        "b took the lease {} ms after a's last renewal",
        ms(taken.duration_since(last_renewal))
    );
    assert!(
        taken >= last_renewal + SignedDuration::from_secs(6),
        "b took the lease at {taken}, before a's expired"
    );
    let last_a = ra.writes.iter().chain(&ra.renewals).max().unwrap();
    let first_b = rb.writes.iter().min().expect("b wrote");
    assert!(
        last_a < first_b,
        "a wrote at {last_a}, after b began at {first_b}"
    );
}

#[tokio::test]
async fn sigterm_releases_the_lease_for_an_immediate_takeover() {
    let cluster = support::cluster().await;
    let id = support::unique("term");
    // a long lease: only an explicit release lets b in quickly
    let long = ["--lease-duration", "60s", "--lease-retry-period", "1s"];
    let mut a = Operator::spawn(&cluster, &id, &format!("{id}-a"), &long).await;
    a.wait_for_log("replica a to lead", "leading: reconciling")
        .await;
    let b = Operator::spawn(&cluster, &id, &format!("{id}-b"), &long).await;
    b.wait_for_log("replica b to sync", "caches synced").await;

    let stopped = Instant::now();
    assert_eq!(a.terminate(), Some(0), "a clean exit on SIGTERM");
    assert!(a.logged("released the leader lease"));
    b.wait_for_log("replica b to take over", "leading: reconciling")
        .await;
    assert!(
        stopped.elapsed() < Duration::from_secs(30),
        "took over after {:?}, long before the 60s lease ran out",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn a_leader_that_loses_its_lease_stops_writing_and_exits() {
    let cluster = support::cluster().await;
    let began = Timestamp::now();
    let mut op = Operator::start(&cluster, "lose", &LEASE).await;
    let ns = support::namespace(&cluster.client, "lose", &[]).await;
    let name = format!("lose-{}", op.id);
    operator::grant(&cluster, &op, &name, G, "Reader", &ns).await;
    // the leader has work to do right up to the moment it loses the lease
    let start = Timestamp::now();
    let churn = churn(&cluster, &ns, &name);
    repairing(&cluster, &op.user, start).await;

    // another holder takes the lease (as a partitioned replica's successor would)
    let leases = Api::<Lease>::namespaced(cluster.client.clone(), OPERATOR_NS);
    let mut lease = leases.get(&format!("lease-{}", op.id)).await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("another-replica".into());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    spec.lease_duration_seconds = Some(3600);
    leases
        .replace(&format!("lease-{}", op.id), &PostParams::default(), &lease)
        .await
        .unwrap();
    let taken = Timestamp::now();

    assert_eq!(
        op.exited(Duration::from_secs(20)).await,
        Some(1),
        "it exits when it loses the lease"
    );
    drop(churn);
    assert!(op.logged("lost the leader lease; exiting so that only the leader writes"));
    // a leader learns of the loss at its next renewal attempt (within one
    // retry period, as with any lease)
    let noticed: Timestamp = op
        .log_lines()
        .iter()
        .find(|l| l["message"] == "lost the leader lease; exiting so that only the leader writes")
        .and_then(|l| l["timestamp"].as_str()?.parse().ok())
        .unwrap();
    assert!(
        noticed.duration_since(taken).unsigned_abs() <= Duration::from_secs(1 + 2),
        "noticed after {:?}",
        noticed.duration_since(taken)
    );

    // every write it made, from the audit log: none after its lease ran out
    // (its last renewal plus the lease duration), none after it noticed,
    // and those between the takeover and noticing it within a retry period
    let r = record(&cluster, &op.user, began).await;
    let last_renewal = *r
        .renewals
        .iter()
        .max()
        .expect("the leader renewed its lease");
    let last_write = *r
        .writes
        .iter()
        .max()
        .expect("the leader repaired the binding");
    let expiry = last_renewal + SignedDuration::from_secs(6);
    println!(
        "lease taken {} ms after the last renewal; last write {} ms after the last renewal, \
         {} ms after the takeover; loss noticed {} ms after the takeover; {} writes",
        ms(taken.duration_since(last_renewal)),
        ms(last_write.duration_since(last_renewal)),
        ms(last_write.duration_since(taken)),
        ms(noticed.duration_since(taken)),
        r.writes.len(),
    );
    assert!(
        last_write < expiry,
        "a write at {last_write}, after the lease expired at {expiry}"
    );
    assert!(
        last_write <= noticed,
        "a write at {last_write}, after it noticed the loss at {noticed}"
    );
    assert!(
        last_write.duration_since(taken) <= SignedDuration::from_secs(1 + 2),
        "writes went on {:?} after the takeover",
        last_write.duration_since(taken)
    );
}

#[tokio::test]
async fn a_leader_that_cannot_renew_stops_writing_before_its_lease_expires() {
    let cluster = support::cluster().await;
    let id = support::unique("cutoff");
    let (ra, rb) = (format!("{id}-a"), format!("{id}-b"));
    let began = Timestamp::now();
    let mut a = Operator::spawn(&cluster, &id, &ra, &LEASE).await;
    a.wait_for_log("replica a to lead", "leading: reconciling")
        .await;
    let b = Operator::spawn(&cluster, &id, &rb, &LEASE).await;
    b.wait_for_log("replica b to sync its caches", "caches synced")
        .await;
    let ns = support::namespace(&cluster.client, "cutoff", &[]).await;
    let name = format!("cutoff-{id}");
    operator::grant(&cluster, &a, &name, G, "Reader", &ns).await;
    let start = Timestamp::now();
    let churn = churn(&cluster, &ns, &name);
    repairing(&cluster, &a.user, start).await;

    // a is cut off from its lease (as by a partition: it cannot renew, and
    // cannot know whether anyone took over), while it can still write
    // everything else; b, which can, takes over once the lease expires
    Api::<RoleBinding>::namespaced(cluster.client.clone(), OPERATOR_NS)
        .delete(
            &format!("teamaccess-leader-election-{ra}"),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    let cut = Timestamp::now();
    assert_eq!(
        a.exited(Duration::from_secs(20)).await,
        Some(1),
        "it exits when it cannot renew"
    );
    assert!(a.logged("could not renew the leader lease in time"));
    b.wait_for_log("replica b to take over", "leading: reconciling")
        .await;
    repairing(&cluster, &b.user, cut).await;
    drop(churn);

    let ra = record(&cluster, &a.user, began).await;
    let rb = record(&cluster, &b.user, began).await;
    let last_renewal = *ra.renewals.iter().max().expect("a renewed its lease");
    let last_write = *ra.writes.iter().max().expect("a repaired the binding");
    let first_write_b = *rb.writes.iter().min().expect("b repaired the binding");
    let expiry = last_renewal + SignedDuration::from_secs(6);
    println!(
        "cut {} ms after a's last renewal; a's last write {} ms after it ({} ms before its lease \
         expired); b's first write {} ms after a's last",
        ms(cut.duration_since(last_renewal)),
        ms(last_write.duration_since(last_renewal)),
        ms(expiry.duration_since(last_write)),
        ms(first_write_b.duration_since(last_write)),
    );
    assert!(
        last_write < expiry,
        "a wrote at {last_write}, after its lease expired at {expiry}"
    );
    assert!(
        last_write < first_write_b,
        "two leaders wrote at once: a at {last_write}, b from {first_write_b}"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "metrics", &[]).await;
    assert_eq!(op.get("/healthz").await, (200, "ok".to_string()));
    assert_eq!(op.get("/readyz").await.0, 200);
    let ns = support::namespace(&cluster.client, "metrics", &[]).await;
    let name = format!("metrics-{}", op.id);
    operator::grant(&cluster, &op, &name, G, "Writer", &ns).await;
    Api::<RoleBinding>::namespaced(cluster.client.clone(), &ns)
        .delete(
            &teamaccess::access::naming::object_name(&name),
            &DeleteParams::default(),
        )
        .await
        .unwrap();
    operator::event_with(&cluster, &name, "DriftCorrected", "was deleted").await;

    let (code, body) = op.get("/metrics").await;
    assert_eq!(code, 200);
    let value = |series: &str| -> Option<f64> {
        body.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let reconciles =
        format!("teamaccess_reconciles_total{{teamaccess=\"{name}\",result=\"success\"}}");
    assert!(
        value(&reconciles).is_some_and(|v| v >= 2.0),
        "{reconciles} in:\n{body}"
    );
    assert_eq!(
        value("teamaccess_drift_corrections_total{kind=\"RoleBinding\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(value("teamaccess_leader"), Some(1.0));
    assert!(
        value("teamaccess_managed_objects{kind=\"Role\"}").is_some_and(|v| v >= 1.0),
        "{body}"
    );
    assert!(
        value("teamaccess_reconcile_duration_seconds_count").is_some_and(|v| v >= 2.0),
        "{body}"
    );
    // no write failed, so no API error was counted
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("teamaccess_api_errors_total")),
        "{body}"
    );
    // labels carry nothing from namespaces or groups
    assert!(!body.contains(&ns) && !body.contains(G), "{body}");
}

#[tokio::test]
async fn a_lasting_forbidden_answer_is_stalled_with_the_servers_message() {
    let cluster = support::cluster().await;
    let role_name = without_escalate(&cluster, "noescalate").await;

    // it starts with all it needs (the start-up checks would hold it back
    // otherwise); then a cluster admin takes `escalate` away
    let id = support::unique("forbidden");
    let op = Operator::spawn(&cluster, &id, &id, &[]).await;
    op.wait_for_log("the operator to lead", "leading: reconciling")
        .await;
    rebind(&cluster, &id, &role_name).await;
    let ns = support::namespace(&cluster.client, "forbidden", &[]).await;
    let name = format!("forbidden-{id}");
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({"groups": [{"id": G}], "grants": [{"tier": "Writer", "namespaces": [ns]}]}),
    )
    .await;
    // first retried (Reconciling), then, past the 3s grace the tests use, Stalled
    let ta = operator::status_until(&cluster, &name, "Stalled with Forbidden", |ta| {
        operator::condition(ta, "Stalled")
            .is_some_and(|c| c.status == "True" && c.reason == "Forbidden")
    })
    .await;
    let stalled = operator::condition(&ta, "Stalled").unwrap();
    assert!(
        stalled
            .message
            .contains("attempting to grant RBAC permissions not currently held"),
        "{}",
        stalled.message
    );
    assert_eq!(operator::condition(&ta, "Ready").unwrap().status, "False");
    assert!(!can(&cluster.client, G, "create", "deployments.apps", &ns).await);
    // still running, retrying: never a crash loop
    assert!(op.get("/healthz").await.0 == 200);
}

/// A copy of config/rbac's ClusterRole without `escalate` (the operator may
/// not write a Role with rules it does not hold itself); returns its name.
async fn without_escalate(cluster: &support::Cluster, suffix: &str) -> String {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    operator::install(cluster).await;
    let roles = Api::<ClusterRole>::all(cluster.client.clone());
    let mut crippled = roles.get("teamaccess-manager").await.unwrap();
    for rule in crippled.rules.iter_mut().flatten() {
        rule.verbs.retain(|v| v != "escalate");
    }
    let role_name = support::unique(&format!("teamaccess-manager-{suffix}"));
    crippled.metadata = kube::api::ObjectMeta {
        name: Some(role_name.clone()),
        ..Default::default()
    };
    roles
        .create(&PostParams::default(), &crippled)
        .await
        .unwrap();
    role_name
}

/// Points replica `replica`'s ClusterRoleBinding at `cluster_role` (a
/// roleRef cannot change: delete, then create).
async fn rebind(cluster: &support::Cluster, replica: &str, cluster_role: &str) {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let crbs = Api::<ClusterRoleBinding>::all(cluster.client.clone());
    let name = format!("teamaccess-manager-{replica}");
    let mut crb = crbs.get(&name).await.unwrap();
    crbs.delete(&name, &Default::default()).await.unwrap();
    crb.metadata = kube::api::ObjectMeta {
        name: Some(name),
        ..Default::default()
    };
    crb.role_ref.name = cluster_role.into();
    crbs.create(&PostParams::default(), &crb).await.unwrap();
}

#[tokio::test]
async fn start_up_checks_say_what_is_missing_and_how_to_fix_it() {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let cluster = support::cluster().await;
    let role_name = without_escalate(&cluster, "preflight").await;
    let roles = Api::<ClusterRole>::all(cluster.client.clone());
    let id = support::unique("preflight");
    let missing_ns = support::unique("no-such-namespace");
    let op = Operator::spawn_as(
        &cluster,
        &id,
        &id,
        &role_name,
        &["--operator-namespace", &missing_ns],
    )
    .await;
    let permission = "missing permissions cluster-wide (ClusterRole teamaccess-manager): escalate roles.rbac.authorization.k8s.io; grant them: kubectl apply -k config/rbac";
    let lease_line = format!(
        "namespace {missing_ns} (for the leader lease) does not exist; create it: kubectl create namespace {missing_ns} (or run one replica with --leader-election=false)"
    );
    support::eventually("both problems logged", Duration::from_secs(30), || async {
        (op.logged(permission) && op.logged(&lease_line)).then_some(())
    })
    .await;
    let (code, body) = op.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains(&format!("kubectl create namespace {missing_ns}")),
        "{body}"
    );
    assert!(
        !op.logged("leading: reconciling"),
        "nothing runs before the checks pass"
    );
    // each problem is one readable line, logged once while it lasts (not a
    // Debug dump every 2 s)
    let lines = op.log_lines();
    let errors: Vec<&str> = (lines.iter())
        .filter(|l| l["level"] == "WARN")
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(
        errors
            .iter()
            .all(|m| !m.contains("Status {") && !m.contains('\n')),
        "{errors:#?}"
    );
    assert_eq!(
        errors.iter().filter(|m| **m == permission).count(),
        1,
        "{errors:#?}"
    );

    // fixed: the full ClusterRole and the namespace; it goes on by itself
    rebind(&cluster, &id, "teamaccess-manager").await;
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some(missing_ns.clone());
    Api::<k8s_openapi::api::core::v1::Namespace>::all(cluster.client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    // the lease Role is bound in teamaccess-system only: bind it here too
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "lease", "namespace": missing_ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "teamaccess-manager-lease-test"},
        "subjects": [{"kind": "ServiceAccount", "name": format!("op-{id}"), "namespace": "teamaccess-system"}],
    }))
    .unwrap();
    let lease_role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "teamaccess-manager-lease-test"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}],
    }))
    .unwrap();
    let _ = roles.create(&PostParams::default(), &lease_role).await;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(cluster.client.clone(), &missing_ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    op.wait_for_log("the operator to lead once fixed", "leading: reconciling")
        .await;
    assert_eq!(op.get("/readyz").await.0, 200);
}

#[tokio::test]
async fn no_token_is_ever_logged() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "secrets", &[]).await;
    let ns = support::namespace(&cluster.client, "secrets", &[]).await;
    let name = format!("secrets-{}", op.id);
    operator::apply(&cluster, &op, &name, json!({"groups": [{"id": G}], "grants": [{"tier": "Admin", "namespaces": [ns, "kube-system"]}]})).await;
    operator::status_until(&cluster, &name, "reconciled", |ta| {
        operator::condition(ta, "Stalled").is_some()
    })
    .await;
    let kubeconfig = std::fs::read_to_string(op.log.with_extension("kubeconfig")).unwrap();
    let token = kubeconfig
        .split("token: ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim();
    assert!(token.len() > 100, "the kubeconfig holds a token");
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(log.contains("reconciled"), "the log has content");
    for secret in [token, &token[..40], &token[token.len() - 40..]] {
        assert!(
            !log.contains(secret),
            "the log contains (part of) the token"
        );
    }
    assert!(
        !log.contains("certificate-authority-data"),
        "nor kubeconfig contents"
    );
}
