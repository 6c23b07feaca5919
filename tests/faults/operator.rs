//! The operator SIGKILLed in the middle of a reconcile of 500 namespaces and
//! started again: the new process converges to exactly the spec and goes
//! quiet.

use std::time::{Duration, Instant};

use crate::checks;
use crate::harness::operator::Operator;
use crate::harness::support;
use crate::plane::ControlPlane;

const N: usize = 500;
const GROUP: &str = "7c2e4a6b-8d0f-4e1a-b3c5-d7e9f1a3b5c7";

#[tokio::test]
async fn operator_killed_mid_reconcile_of_500_namespaces_converges_after_restart() {
    let plane = ControlPlane::up("operator-kill", "");
    let cluster = plane.cluster().await;
    let namespaces = checks::namespaces(&cluster, "fault-op", N, "fault-op").await;
    let outside = support::namespace(&cluster.client, "fault-op-outside", &[]).await;
    // the pause holds the reconcile open, so the kill lands in the middle of it
    let mut first = Operator::spawn_with(
        &cluster,
        "operator",
        "operator-1",
        "teamaccess-manager",
        &["--leader-election=false"],
        &[("TEAMACCESS_FAILPOINT", "before-create:fault-op-250:30")],
    )
    .await;
    first
        .wait_for_log("the operator to reconcile", "leading: reconciling")
        .await;
    let ta = checks::writer_over(&cluster, &first, "fault-op", "fault-op", GROUP).await;
    let uid = ta.metadata.uid.clone().unwrap();
    first
        .wait_for_log("the reconcile to reach the pause", "failpoint: pausing")
        .await;
    first.kill();
    let at_kill = checks::owned_roles(&cluster, &uid).await;
    assert!(at_kill < N, "the reconcile had finished before the kill");
    eprintln!("operator SIGKILLed with {at_kill} of {N} Roles written");

    // as a kubelet would: a new process (its own ServiceAccount, so the audit
    // log tells the two apart), same selector, no failpoint
    let restarted = Instant::now();
    let second = Operator::spawn(
        &cluster,
        "operator",
        "operator-2",
        &["--leader-election=false"],
    )
    .await;
    let ta = checks::converged(&cluster, "fault-op", N as u32, Duration::from_secs(240)).await;
    eprintln!("converged {:?} after the restart", restarted.elapsed());

    checks::end_state(&cluster, &ta, &namespaces, GROUP, &outside).await;

    checks::goes_quiet(&cluster, &second).await;
}
