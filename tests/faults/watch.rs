//! Watch expiry: an API server without a watch cache (`--watch-cache=false`,
//! so a watch is served from etcd's history, and compaction ends it with
//! 410 Gone), the operator behind a proxy. Once it has converged, its
//! connections are cut and kept from coming back while the world changes
//! (a managed RoleBinding deleted, a selected namespace added) and etcd is
//! compacted to its current revision. Let back in, its watches meet 410,
//! relist, and it repairs exactly what changed: no rewrite of the world,
//! and no writes at all once settled.

use std::time::{Duration, Instant};

use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::checks;
use crate::harness::operator::{self, Operator};
use crate::harness::support;
use crate::plane::ControlPlane;
use crate::proxy::Proxy;

const N: usize = 20;
const GROUP: &str = "8b1d3f5a-7c9e-4b2d-a4f6-8a0c2e4b6d8f";

fn expired(line: &serde_json::Value) -> bool {
    let e = line["error"].as_str().unwrap_or_default().to_lowercase();
    e.contains("too old resource version") || e.contains("410") || e.contains("expired")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_expired_by_compaction_relist_and_repair_only_what_changed() {
    let plane = ControlPlane::up("watch-expiry", "--watch-cache=false");
    let cluster = plane.cluster().await;
    let proxy = Proxy::start(plane.apiserver_addr()).await;
    let mut namespaces = checks::namespaces(&cluster, "fault-watch", N, "fault-watch").await;
    let outside = support::namespace(&cluster.client, "fault-watch-outside", &[]).await;
    let op = Operator::spawn_via(
        &cluster,
        "watch",
        "watch",
        Some(&proxy.server()),
        &["--leader-election=false"],
        &[],
    )
    .await;
    op.wait_for_log("the operator to reconcile", "leading: reconciling")
        .await;
    operator::apply(
        &cluster,
        &op,
        "fault-watch",
        json!({
            "groups": [{"id": GROUP}],
            "grants": [{"tier": "Writer", "namespaceSelector": {"matchLabels": {"fault-watch": "true"}}}],
        }),
    )
    .await;
    let ta = checks::converged(&cluster, "fault-watch", N as u32, Duration::from_secs(120)).await;
    checks::owns_exactly(&cluster, &ta, &namespaces).await;

    // cut off: every connection closed, every new one refused, until the
    // refusals show the operator is knocking (its watches are down)
    proxy.block(true);
    proxy.cut_all();
    let refused = proxy.refused();
    support::eventually(
        "the operator to try to reconnect",
        Duration::from_secs(30),
        || async { (proxy.refused() > refused).then_some(()) },
    )
    .await;
    let lines_before = op.log_lines().len();

    // the world changes while it cannot see
    let object = teamaccess::access::naming::object_name("fault-watch");
    Api::<RoleBinding>::namespaced(cluster.client.clone(), &namespaces[3])
        .delete(&object, &DeleteParams::default())
        .await
        .expect("deleting a managed RoleBinding");
    let added = checks::namespaces(&cluster, "fault-watch-late", 1, "fault-watch").await;
    namespaces.extend(added.clone());
    let revision = plane.etcd_revision().await;
    plane.compact(revision).await;
    eprintln!("compacted etcd to revision {revision}");

    proxy.block(false);
    let reconnected = Timestamp::now();
    let back = Instant::now();
    // the status may count the namespace applied from a reconcile that ran
    // before the deletion reached it: wait for the repair itself too
    let bindings = Api::<RoleBinding>::namespaced(cluster.client.clone(), &namespaces[3]);
    support::eventually(
        "the deleted RoleBinding to be recreated",
        Duration::from_secs(120),
        || async { bindings.get_opt(&object).await.ok().flatten() },
    )
    .await;
    let ta = checks::converged(
        &cluster,
        "fault-watch",
        (N + 1) as u32,
        Duration::from_secs(120),
    )
    .await;
    eprintln!(
        "repaired {:?} after the proxy let it back in",
        back.elapsed()
    );
    checks::end_state(&cluster, &ta, &namespaces, GROUP, &outside).await;

    // settled: the first 20 s window (of at most 4) without lists
    let mut windows = Vec::new();
    let settled = loop {
        let start = Timestamp::now();
        let quiet = checks::over_steady_state(&cluster, &op, Duration::from_secs(20)).await;
        let done = quiet.lists == 0;
        windows.push(quiet);
        if done || windows.len() == 4 {
            break start;
        }
    };
    let quiet = windows.last().unwrap();

    // the expiry really happened: watches answered 410 and lists followed
    let expiries = (op.log_lines().iter().skip(lines_before))
        .filter(|l| l["message"] == "watch failed; retrying" && expired(l))
        .count();
    let requests = support::requests_by(&cluster, &op.user, reconnected, settled).await;
    let lists: Vec<_> = requests.iter().filter(|r| r.verb == "list").collect();
    let rbac = |r: &&support::AuditEvent| r.resource == "roles" || r.resource == "rolebindings";
    let writes: Vec<_> = (requests.iter().filter(|r| r.is_write()))
        .filter(rbac)
        .collect();
    let stored = writes
        .iter()
        .filter(|w| (200..300).contains(&w.code))
        .count();
    eprintln!(
        "after reconnecting: {expiries} watch(es) ended 410, {} lists ({:?}), \
         {} Role/RoleBinding writes ({stored} stored): {:?}",
        lists.len(),
        lists.iter().map(|l| &l.resource).collect::<Vec<_>>(),
        writes.len(),
        writes
            .iter()
            .map(|w| format!(
                "{} {} {}/{} {}",
                w.verb, w.resource, w.namespace, w.name, w.code
            ))
            .collect::<Vec<_>>()
    );
    assert!(
        expiries > 0,
        "no watch met 410 Gone: the test proved nothing"
    );
    assert!(
        lists.len() >= 5,
        "every watch relists after 410: {} lists",
        lists.len()
    );
    // exactly the repairs: the deleted RoleBinding, the new namespace's pair
    assert_eq!(
        stored, 3,
        "only what changed is written, no rewrite of the world"
    );
    assert!(writes.len() <= 6, "a few refused creates at most");
    assert_eq!(quiet.writes, 0, "no writes once settled: {windows:?}");
    assert!(quiet.reconciles <= 1, "no reconcile loop: {quiet:?}");
}
