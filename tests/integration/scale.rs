//! The request budget at 500 namespaces, counted in the audit log (never in
//! wall-clock time, which two noisy cores make meaningless): API requests
//! per managed object while one TeamAccess converges, and per repaired drift
//! event. A change that makes the operator chattier fails here.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::harness::operator::{self, Operator};
use crate::harness::support::{self, AuditEvent};

const N: usize = 500;
const DRIFT_EVENTS: usize = 20;
/// Measured here: 1.006 requests per object while converging (1,000
/// creates, one finalizer patch, two status patches, one Event, two GETs),
/// 2.0 per drift event (the recreate and its DriftCorrected Event; the status
/// does not change). The bounds leave room for a few retried writes, not
/// for one request more per object or per event.
const MAX_REQUESTS_PER_OBJECT: f64 = 1.05;
const MAX_REQUESTS_PER_DRIFT_EVENT: f64 = 2.2;

/// The elector renews on its own clock, whatever the reconciles do.
fn not_lease(e: &AuditEvent) -> bool {
    e.resource != "leases"
}

fn by_kind(events: &[AuditEvent]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(format!("{} {} {}", e.verb, e.resource, e.code))
            .or_insert(0) += 1;
    }
    out
}

/// Requests `op` made in `[from, now]`, leases aside; `settle` first lets the
/// writes that trail a convergence (a last status patch) land in the window.
async fn requests(
    cluster: &support::Cluster,
    op: &Operator,
    from: Timestamp,
    settle: Duration,
) -> Vec<AuditEvent> {
    tokio::time::sleep(settle).await;
    support::requests_by(cluster, &op.user, from, Timestamp::now())
        .await
        .into_iter()
        .filter(not_lease)
        .collect()
}

#[tokio::test]
async fn requests_per_object_and_per_drift_event_stay_within_budget() {
    let cluster = support::cluster().await;
    let op = Operator::start(&cluster, "scale", &[]).await;
    let label = support::unique("scale");
    let names = support::namespaces(&cluster, &label, N, &label).await;
    let namespaces = Api::<Namespace>::all(cluster.client.clone());

    let from = Timestamp::now();
    let name = support::unique("scale");
    operator::apply(
        &cluster,
        &op,
        &name,
        json!({
            "groups": [{"id": "3b1f6c2e-9a4d-4e8b-8c7a-1d2e3f4a5b6c"}],
            "grants": [{"tier": "Writer", "namespaceSelector": {"matchLabels": {&label: "true"}}}],
        }),
    )
    .await;
    operator::status_until(&cluster, &name, "500/500 applied and Ready", |ta| {
        let applied = ta
            .status
            .as_ref()
            .and_then(|s| s.summary.as_ref())
            .is_some_and(|s| s.targeted == N as u32 && s.applied == N as u32);
        applied
            && operator::condition(ta, "Ready")
                .is_some_and(|c| c.status == "True" && c.reason == "Applied")
    })
    .await;
    let converging = requests(&cluster, &op, from, Duration::from_secs(3)).await;
    let objects = 2 * N;
    let per_object = converging.len() as f64 / objects as f64;
    eprintln!(
        "convergence: {} requests for {objects} objects ({per_object:.3} each): {:?}",
        converging.len(),
        by_kind(&converging)
    );
    let created = |resource: &str| {
        converging
            .iter()
            .filter(|e| e.resource == resource && e.verb == "create" && e.code == 201)
            .count()
    };
    assert_eq!(
        (created("roles"), created("rolebindings")),
        (N, N),
        "every object written once"
    );
    assert!(
        per_object <= MAX_REQUESTS_PER_OBJECT,
        "{per_object:.3} requests per object while converging, over the budget of \
         {MAX_REQUESTS_PER_OBJECT}: {:?}",
        by_kind(&converging)
    );

    // drift, one event at a time over the whole selector, so each repair is
    // counted alone
    let object = teamaccess::access::naming::object_name(&name);
    let from = Timestamp::now();
    for ns in names.iter().step_by(N / DRIFT_EVENTS) {
        let bindings = Api::<RoleBinding>::namespaced(cluster.client.clone(), ns);
        let old = bindings.get(&object).await.unwrap().metadata.uid;
        bindings
            .delete(&object, &DeleteParams::default())
            .await
            .unwrap();
        support::eventually(
            &format!("RoleBinding {ns}/{object} to be recreated"),
            Duration::from_secs(30),
            || {
                let bindings = bindings.clone();
                let old = old.clone();
                let object = object.clone();
                async move {
                    let now = bindings.get_opt(&object).await.ok()??;
                    (now.metadata.uid != old).then_some(())
                }
            },
        )
        .await;
    }
    let repairing = requests(&cluster, &op, from, Duration::from_secs(3)).await;
    let per_event = repairing.len() as f64 / DRIFT_EVENTS as f64;
    eprintln!(
        "drift: {} requests for {DRIFT_EVENTS} repairs ({per_event:.2} each): {:?}",
        repairing.len(),
        by_kind(&repairing)
    );
    assert!(
        per_event <= MAX_REQUESTS_PER_DRIFT_EVENT,
        "{per_event:.2} requests per drift event, over the budget of \
         {MAX_REQUESTS_PER_DRIFT_EVENT}: {:?}",
        by_kind(&repairing)
    );

    // the shared control plane keeps serving the other tests
    operator::teamaccesses(&cluster)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    operator::gone(&cluster, &name).await;
    futures::stream::iter(names)
        .map(|n| {
            let api = namespaces.clone();
            async move { api.delete(&n, &DeleteParams::default()).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("deleting namespaces");
}
