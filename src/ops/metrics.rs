//! Prometheus metrics. Labels carry the TeamAccess name at most: nothing from
//! namespaces or groups, so cardinality follows the number of TeamAccess objects.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub teamaccess: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Histogram,
    drift: Family<KindLabels, Counter>,
    managed: Family<KindLabels, Gauge>,
    api_errors: Family<ResourceLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("teamaccess");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let drift = Family::<KindLabels, Counter>::default();
        let managed = Family::<KindLabels, Gauge>::default();
        let api_errors = Family::<ResourceLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles by TeamAccess and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        registry.register(
            "drift_corrections",
            "Managed objects changed by others and reverted",
            drift.clone(),
        );
        registry.register(
            "managed_objects",
            "Roles and RoleBindings the operator manages",
            managed.clone(),
        );
        registry.register(
            "api_errors",
            "Failed writes to the API server",
            api_errors.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            duration,
            drift,
            managed,
            api_errors,
            leader,
        }
    }
}

impl Metrics {
    pub fn observe_reconcile(&self, teamaccess: &str, ok: bool, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                teamaccess: teamaccess.to_string(),
                result: if ok { "success" } else { "error" },
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn drift_corrected(&self, kind: &'static str) {
        self.drift.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn api_error(&self, resource: &str) {
        self.api_errors
            .get_or_create(&ResourceLabels {
                resource: resource.to_string(),
            })
            .inc();
    }

    pub fn set_managed(&self, roles: usize, bindings: usize) {
        self.managed
            .get_or_create(&KindLabels { kind: "Role" })
            .set(roles as i64);
        self.managed
            .get_or_create(&KindLabels {
                kind: "RoleBinding",
            })
            .set(bindings as i64);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(leader as i64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
