//! Two replicas under leader election, the leader broken mid-reconcile while
//! its follower waits: SIGKILLed, the follower takes the lease and finishes
//! the work; SIGSTOPped past its lease duration, the follower takes over and
//! the old leader, resumed, sends nothing at all (by the audit log) and exits.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::Api;

use crate::checks::{self, LEASE, LEASE_DURATION, LOST};
use crate::harness::operator::{OPERATOR_NS, Operator};
use crate::harness::support::{self, Cluster};
use crate::plane::ControlPlane;

const N: usize = 200;
const GROUP: &str = "3e5a7c9b-1d2f-4b6a-8c0e-2f4a6b8c0d1e";

/// Two replicas of operator `id`: `a` leading and held by a failpoint in the
/// middle of its reconcile of N namespaces (the others go on being written
/// around it), `b` synced and waiting for the lease.
struct Pair {
    // fields drop in order: the operators go before their control plane
    a: Operator,
    b: Operator,
    cluster: Cluster,
    namespaces: Vec<String>,
    outside: String,
    uid: String,
    /// Before a started.
    began: Timestamp,
    /// Before the TeamAccess was applied.
    from: Timestamp,
    /// Held for its drop, which stops the control plane.
    _plane: ControlPlane,
}

fn replica_flags(identity: &str) -> Vec<&str> {
    LEASE
        .iter()
        .copied()
        .chain(["--identity", identity])
        .collect()
}

/// How long `before-renew` holds a renewal: shorter than what is left of the
/// renew deadline (4 s after the previous renewal began, one retry period
/// ago), so the pause alone never costs the lease.
const RENEWAL_PAUSE: SignedDuration = SignedDuration::from_millis(1500);

/// `extra`: more failpoints for the leader.
async fn leader_mid_reconcile(id: &str, prefix: &str, extra: &str) -> Pair {
    let plane = ControlPlane::up(id, "");
    let cluster = plane.cluster().await;
    let namespaces = checks::namespaces(&cluster, prefix, N, prefix).await;
    let outside = support::namespace(&cluster.client, &format!("{prefix}-outside"), &[]).await;
    // the failpoint on the leader only: the follower must not pause there
    let failpoint = format!("before-create:{prefix}-050:30{extra}");
    let (ra, rb) = (format!("{id}-a"), format!("{id}-b"));
    let began = Timestamp::now();
    let a = Operator::spawn_with(
        &cluster,
        id,
        &ra,
        "teamaccess-manager",
        &replica_flags(&ra),
        &[("TEAMACCESS_FAILPOINT", &failpoint)],
    )
    .await;
    a.wait_for_log("replica a to lead", "leading: reconciling")
        .await;
    let b = Operator::spawn(&cluster, id, &rb, &replica_flags(&rb)).await;
    b.wait_for_log("replica b to sync its caches", "caches synced")
        .await;
    assert!(!b.logged("leading: reconciling"), "b follows");

    let from = Timestamp::now();
    let ta = checks::writer_over(&cluster, &a, prefix, prefix, GROUP).await;
    let uid = ta.metadata.uid.clone().unwrap();
    a.wait_for_log("the reconcile to reach the pause", "failpoint: pausing")
        .await;
    Pair {
        a,
        b,
        cluster,
        namespaces,
        outside,
        uid,
        began,
        from,
        _plane: plane,
    }
}

impl Pair {
    /// What the follower must end with: exactly the spec, Ready.
    async fn follower_converges(&self, name: &str) {
        let ta = checks::converged(&self.cluster, name, N as u32, Duration::from_secs(240)).await;
        checks::end_state(&self.cluster, &ta, &self.namespaces, GROUP, &self.outside).await;
    }
}

#[tokio::test]
async fn leader_killed_mid_reconcile_the_follower_takes_the_lease_and_finishes() {
    let mut p = leader_mid_reconcile("leader-kill", "fault-lk", "").await;
    p.a.kill();
    let killed = Instant::now();
    let at_kill = checks::owned_roles(&p.cluster, &p.uid).await;
    assert!(at_kill < N, "the reconcile had finished before the kill");
    eprintln!("leader SIGKILLed with {at_kill} of {N} Roles written");

    p.b.wait_for_log("replica b to take over", "leading: reconciling")
        .await;
    let takeover = killed.elapsed();
    // the lease (6 s) and one retry period (1 s), plus slack on busy cores
    assert!(
        takeover <= Duration::from_secs(6 + 1 + 3),
        "took over after {takeover:?}"
    );
    p.follower_converges("fault-lk").await;
    eprintln!(
        "b took over {takeover:?} after the kill, converged {:?} after it",
        killed.elapsed()
    );

    let settled = checks::goes_quiet(&p.cluster, &p.b).await;
    checks::created_at_most_once(&p.cluster, &[&p.a.user, &p.b.user], p.from, settled, N).await;
    // the two never wrote at once: every write of b's comes after a's last
    // request of any kind
    let by_a = support::requests_by(&p.cluster, &p.a.user, p.from, settled).await;
    let by_b = support::writes_by(&p.cluster, &p.b.user, p.from, settled).await;
    let last_a = by_a.iter().map(|r| r.received).max().expect("a worked");
    let first_b = (by_b.iter())
        .filter(|w| w.resource != "leases")
        .map(|w| w.received)
        .min()
        .expect("b wrote");
    assert!(last_a < first_b, "a at {last_a}, b already at {first_b}");
}

/// Polls the Lease until `successor` holds it; the last renewTime it held
/// for `holder` (read from the object, so the very value the successor
/// judged expiry by).
async fn renewal_before_takeover(
    cluster: &Cluster,
    lease: &str,
    holder: &str,
    successor: &str,
) -> Timestamp {
    let api = Api::<Lease>::namespaced(cluster.client.clone(), OPERATOR_NS);
    let limit = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        let spec = api.get(lease).await.expect("the lease").spec.unwrap();
        let renewed = spec.renew_time.map(|t| t.0);
        match spec.holder_identity.as_deref() {
            Some(h) if h == holder => last = last.max(renewed),
            Some(h) if h == successor => {
                return last.expect("the lease was seen held by the paused leader");
            }
            _ => {}
        }
        assert!(Instant::now() < limit, "{successor} never took {lease}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn leader_paused_past_its_lease_sends_nothing_after_it_and_exits_when_resumed() {
    // the worst moment to be paused: inside a renewal, its deadline checked
    // and its request not yet sent (nothing but the gate stops that request
    // when the process runs again)
    let renewal_pause = format!(
        ",before-renew:{OPERATOR_NS}:{}",
        RENEWAL_PAUSE.as_secs_f64()
    );
    let mut p = leader_mid_reconcile("leader-pause", "fault-lp", &renewal_pause).await;
    let renewing = support::eventually(
        "a's renewal to reach its pause",
        Duration::from_secs(30),
        || async {
            p.a.log_lines()
                .into_iter()
                .find(|l| l["point"] == "before-renew")
                .and_then(|l| l["timestamp"].as_str()?.parse::<Timestamp>().ok())
        },
    )
    .await;
    p.a.pause();
    let paused = Instant::now();
    let stopped = Timestamp::now();
    assert!(
        stopped < renewing + RENEWAL_PAUSE,
        "the SIGSTOP came {:?} after the renewal's pause began, after it had ended",
        stopped.duration_since(renewing)
    );
    let at_pause = checks::owned_roles(&p.cluster, &p.uid).await;
    assert!(at_pause < N, "the reconcile had finished before the pause");
    eprintln!("leader SIGSTOPped with {at_pause} of {N} Roles written");

    let last_renewal = renewal_before_takeover(
        &p.cluster,
        "lease-leader-pause",
        "leader-pause-a",
        "leader-pause-b",
    )
    .await;
    p.b.wait_for_log("replica b to lead", "leading: reconciling")
        .await;
    // b took the lease only once it had seen a's last renewal unchanged for
    // a full lease duration, so a is now past it; resumed while b works
    let resumed = Timestamp::now();
    assert!(resumed > last_renewal + LEASE_DURATION);
    p.a.resume();
    eprintln!("a resumed after {:?} stopped", paused.elapsed());
    assert_eq!(
        p.a.exited(Duration::from_secs(20)).await,
        Some(1),
        "the resumed leader exits"
    );
    p.follower_converges("fault-lp").await;

    let requests = support::requests_by(&p.cluster, &p.a.user, p.began, Timestamp::now()).await;
    // the audit policy logs metadata only, so the renewTime itself is read
    // from the Lease (above); the audit log's stand-in, a's last successful
    // lease write as received, is a little later and shown beside it
    let last_update = (requests.iter())
        // taking the lease (create) renews it as much as an update does
        .filter(|r| r.resource == "leases" && r.is_write() && r.succeeded())
        .map(|r| r.received)
        .max()
        .expect("a renewed its lease");
    let cutoff = last_renewal + LEASE_DURATION;
    let late: Vec<_> = (requests.iter())
        .filter(|r| r.received > cutoff)
        .map(|r| {
            format!(
                "{} {} {}/{} -> {}",
                r.received, r.verb, r.resource, r.name, r.code
            )
        })
        .collect();
    let last_a = requests.iter().map(|r| r.received).max().unwrap();
    eprintln!(
        "a: last renewTime {last_renewal}, its update received {last_update}; \
         {} requests in all, the last received {last_a}; {} after {cutoff}",
        requests.len(),
        late.len()
    );
    assert!(
        late.is_empty(),
        "a sent {} requests after its lease could have passed to b: {late:#?}",
        late.len()
    );
    assert!(
        p.a.logged("could not renew the leader lease in time"),
        "it says why"
    );
    assert!(p.a.logged(LOST));
    // and the renewal it was paused in was refused by the gate, not sent
    assert!(
        p.a.log_lines().iter().any(|l| {
            l["message"] == "renewing the leader lease failed"
                && l["error"].as_str().is_some_and(|e| e.contains("not sent"))
        }),
        "the paused renewal was refused"
    );
}
