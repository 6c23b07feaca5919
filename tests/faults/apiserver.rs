//! kube-apiserver SIGKILLed in the middle of a reconcile of 500 namespaces
//! and started again 5 s later. Without leader election the process itself
//! must ride out the outage; under leader election the leader must exit at
//! its renew deadline (it cannot know whether another replica took over),
//! and a new process, started as a kubelet would, finishes the work. Either
//! way: exactly the spec, then quiet.

use std::time::{Duration, Instant};

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::checks::{self, LEASE, LOST, RENEW_DEADLINE};
use crate::harness::operator::Operator;
use crate::harness::support::{self, Cluster};
use crate::plane::{Component, ControlPlane, Signal};

const N: usize = 500;
const GROUP: &str = "5a0c7e1d-2b3f-4a6c-9d8e-7f1a2b3c4d5e";
/// The outage the issue asks for.
const OUTAGE: Duration = Duration::from_secs(5);

/// A reconcile of N namespaces with the apiserver SIGKILLed in its middle.
struct Killed {
    // fields drop in order: the operator goes before its control plane
    op: Operator,
    cluster: Cluster,
    namespaces: Vec<String>,
    outside: String,
    /// Before the operator started.
    began: Timestamp,
    /// Before the TeamAccess was applied.
    from: Timestamp,
    at: Instant,
    plane: ControlPlane,
}

/// Starts the operator (replica `replica` of operator `id`, with `flags`),
/// applies the TeamAccess, and SIGKILLs kube-apiserver while one
/// namespace's creates are held by a failpoint, so the kill lands in the
/// middle of the reconcile however fast the other writes go.
async fn kill_mid_reconcile(plane: &str, prefix: &str, replica: &str, flags: &[&str]) -> Killed {
    let plane = ControlPlane::up(plane, "");
    let cluster = plane.cluster().await;
    let namespaces = checks::namespaces(&cluster, prefix, N, prefix).await;
    let outside = support::namespace(&cluster.client, &format!("{prefix}-outside"), &[]).await;
    let failpoint = format!("before-create:{prefix}-250:5");
    let began = Timestamp::now();
    let op = Operator::spawn_with(
        &cluster,
        "apiserver",
        replica,
        "teamaccess-manager",
        flags,
        &[("TEAMACCESS_FAILPOINT", &failpoint)],
    )
    .await;
    op.wait_for_log("the operator to reconcile", "leading: reconciling")
        .await;
    let from = Timestamp::now();
    let ta = checks::writer_over(&cluster, &op, prefix, prefix, GROUP).await;
    let uid = ta.metadata.uid.clone().unwrap();
    op.wait_for_log("the reconcile to reach the pause", "failpoint: pausing")
        .await;
    let at_kill = checks::owned_roles(&cluster, &uid).await;
    plane.stop(Component::KubeApiserver, Signal::Kill);
    let at = Instant::now();
    assert!(
        at_kill < N,
        "the reconcile had finished ({at_kill} Roles) before the kill"
    );
    eprintln!("kube-apiserver SIGKILLed with {at_kill} of {N} Roles written");
    Killed {
        op,
        cluster,
        namespaces,
        outside,
        began,
        from,
        at,
        plane,
    }
}

impl Killed {
    /// Starts the apiserver again once the outage has lasted [`OUTAGE`].
    async fn restart_after_outage(&self) -> Instant {
        // the outage itself: a fixed time, not a condition to wait for
        tokio::time::sleep(OUTAGE.saturating_sub(self.at.elapsed())).await;
        self.plane.start(Component::KubeApiserver);
        Instant::now()
    }
}

#[tokio::test]
async fn apiserver_killed_mid_reconcile_of_500_namespaces_converges_and_goes_quiet() {
    let k = kill_mid_reconcile(
        "apiserver-kill",
        "fault-api",
        "apiserver",
        &["--leader-election=false"],
    )
    .await;
    let restarted = k.restart_after_outage().await;
    assert!(!k.op.logged(LOST), "no lease to lose");

    let ta = checks::converged(&k.cluster, "fault-api", N as u32, Duration::from_secs(240)).await;
    eprintln!(
        "converged {:?} after kube-apiserver served again",
        restarted.elapsed()
    );
    checks::end_state(&k.cluster, &ta, &k.namespaces, GROUP, &k.outside).await;
    let settled = checks::goes_quiet(&k.cluster, &k.op).await;
    checks::created_at_most_once(&k.cluster, &[&k.op.user], k.from, settled, N).await;
}

#[tokio::test]
async fn apiserver_killed_mid_reconcile_the_leader_exits_at_its_renew_deadline_and_a_new_process_converges()
 {
    let mut k = kill_mid_reconcile("apiserver-kill-leader", "fault-lea", "leader-1", &LEASE).await;
    let began = k.began;

    // it cannot renew, so past its deadline it must assume another replica
    // leads now, and stop
    assert_eq!(
        k.op.exited(Duration::from_secs(20)).await,
        Some(1),
        "the leader exits when it cannot renew"
    );
    let exited = k.at.elapsed();
    assert!(
        k.op.logged("could not renew the leader lease in time"),
        "it says why"
    );
    assert!(k.op.logged(LOST));
    let restarted = k.restart_after_outage().await;
    eprintln!("the leader exited {exited:?} after the kill");

    // at its renew deadline: from the start of its last successful renewal
    // (a little before the apiserver received that update), plus the time to
    // notice (a retry period) and scheduling slack on these busy cores
    let renewals: Vec<Timestamp> =
        support::writes_by(&k.cluster, &k.op.user, began, Timestamp::now())
            .await
            .into_iter()
            .filter(|w| w.resource == "leases" && w.succeeded())
            .map(|w| w.received)
            .collect();
    let last_renewal = *renewals.iter().max().expect("it renewed its lease");
    let noticed: Timestamp = (k.op.log_lines().iter())
        .find(|l| l["message"] == "could not renew the leader lease in time")
        .and_then(|l| l["timestamp"].as_str()?.parse().ok())
        .expect("a timestamp on the line");
    let after = noticed.duration_since(last_renewal);
    eprintln!(
        "it gave up {} ms after its last renewal (deadline {} ms)",
        after.as_millis(),
        RENEW_DEADLINE.as_millis()
    );
    assert!(
        after >= RENEW_DEADLINE - SignedDuration::from_millis(500)
            && after <= RENEW_DEADLINE + SignedDuration::from_secs(4),
        "gave up {after:?} after its last renewal"
    );

    // as a kubelet would: a new process under a ServiceAccount of its own (so
    // the audit log tells the two apart), same lease, no failpoint; it waits
    // out the dead leader's lease before it leads
    let second = Operator::spawn(&k.cluster, "apiserver", "leader-2", &LEASE).await;
    let ta = checks::converged(&k.cluster, "fault-lea", N as u32, Duration::from_secs(240)).await;
    eprintln!(
        "converged {:?} after kube-apiserver served again",
        restarted.elapsed()
    );
    assert!(second.logged("leading: reconciling"));
    checks::end_state(&k.cluster, &ta, &k.namespaces, GROUP, &k.outside).await;
    let settled = checks::goes_quiet(&k.cluster, &second).await;
    checks::created_at_most_once(&k.cluster, &[&k.op.user, &second.user], k.from, settled, N).await;
}
