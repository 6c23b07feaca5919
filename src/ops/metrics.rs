//! Prometheus metrics. Labels carry the TeamAccess name at most: nothing from
//! namespaces or groups, so cardinality follows the number of TeamAccess objects.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;

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
pub struct ConditionLabels {
    pub teamaccess: String,
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TeamAccessLabels {
    pub teamaccess: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method.
    pub method: String,
    /// The status class (`2xx`, `4xx`, `5xx`); `error` when no answer
    /// came (connection refused or reset); `cancelled` when the operator
    /// stopped waiting (a deadline passed).
    pub code: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Histogram,
    onboarding: Histogram,
    drift_repair: Histogram,
    drift: Family<KindLabels, Counter>,
    mutated: Family<KindLabels, Counter>,
    managed: Family<KindLabels, Gauge>,
    api_errors: Family<ResourceLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    leader: Gauge,
    conditions: Family<ConditionLabels, Gauge>,
    /// condition types exported per TeamAccess, so a type that disappears
    /// from a status (or a TeamAccess that is deleted) leaves no stale series
    condition_types: Mutex<HashMap<String, BTreeSet<String>>>,
    grant_expiry: Family<TeamAccessLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("teamaccess");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        // 1 ms to about 33 s: a watch event to its write is milliseconds
        // when all is well, seconds under load
        let onboarding = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let drift_repair = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let drift = Family::<KindLabels, Counter>::default();
        let mutated = Family::<KindLabels, Counter>::default();
        let managed = Family::<KindLabels, Gauge>::default();
        let api_errors = Family::<ResourceLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let leader = Gauge::default();
        let conditions = Family::<ConditionLabels, Gauge>::default();
        let grant_expiry = Family::<TeamAccessLabels, Gauge>::default();
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
            "onboarding_seconds",
            "From a namespace watch event to the RoleBinding it called for, created",
            onboarding.clone(),
        );
        registry.register(
            "drift_repair_seconds",
            "From a watch event on one of our objects to the write that reverted it",
            drift_repair.clone(),
        );
        registry.register(
            "drift_corrections",
            "Managed objects changed by others and reverted",
            drift.clone(),
        );
        registry.register(
            "mutated_on_admission",
            "Writes of ours that came back changed by an admission policy or webhook",
            mutated.clone(),
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
            "api_requests",
            "Requests to the API server by method and status class, watches and leases included",
            requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        registry.register(
            "condition",
            "Status conditions by TeamAccess and type: 1 while True, 0 otherwise",
            conditions.clone(),
        );
        registry.register(
            "grant_expiry_timestamp_seconds",
            "Unix time of the nearest future validUntil among a TeamAccess's grants",
            grant_expiry.clone(),
        );
        Metrics {
            registry,
            reconciles,
            duration,
            onboarding,
            drift_repair,
            drift,
            mutated,
            managed,
            api_errors,
            requests,
            leader,
            conditions,
            condition_types: Mutex::default(),
            grant_expiry,
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

    pub fn observe_onboarding(&self, took: Duration) {
        self.onboarding.observe(took.as_secs_f64());
    }

    pub fn observe_drift_repair(&self, took: Duration) {
        self.drift_repair.observe(took.as_secs_f64());
    }

    pub fn drift_corrected(&self, kind: &'static str) {
        self.drift.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn mutated_on_admission(&self, kind: &'static str) {
        self.mutated.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn api_error(&self, resource: &str) {
        self.api_errors
            .get_or_create(&ResourceLabels {
                resource: resource.to_string(),
            })
            .inc();
    }

    /// One request answered with `status` (None: no answer at all).
    pub fn api_request(&self, method: &str, status: Option<u16>) {
        let code = match status {
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(_) => "5xx",
            None => "error",
        };
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code,
            })
            .inc();
    }

    /// One request abandoned before its answer came.
    pub fn api_request_cancelled(&self, method: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: "cancelled",
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

    /// Exports `teamaccess_condition{teamaccess,type}` for the conditions
    /// of one TeamAccess's status, as written; types no longer present lose
    /// their series.
    pub fn set_conditions(&self, teamaccess: &str, conditions: &[Condition]) {
        let mut known = self.condition_types.lock().expect("metrics lock");
        let now: BTreeSet<String> = conditions.iter().map(|c| c.type_.clone()).collect();
        if let Some(before) = known.get(teamaccess) {
            for gone in before.difference(&now) {
                self.conditions.remove(&ConditionLabels {
                    teamaccess: teamaccess.to_string(),
                    r#type: gone.clone(),
                });
            }
        }
        for c in conditions {
            self.conditions
                .get_or_create(&ConditionLabels {
                    teamaccess: teamaccess.to_string(),
                    r#type: c.type_.clone(),
                })
                .set((c.status == "True") as i64);
        }
        if now.is_empty() {
            known.remove(teamaccess);
        } else {
            known.insert(teamaccess.to_string(), now);
        }
    }

    /// Exports `teamaccess_grant_expiry_timestamp_seconds{teamaccess}`: the
    /// nearest validUntil still in the future, or no series when none is.
    pub fn set_grant_expiry(&self, teamaccess: &str, nearest_valid_until: Option<Timestamp>) {
        let labels = TeamAccessLabels {
            teamaccess: teamaccess.to_string(),
        };
        match nearest_valid_until {
            Some(t) => {
                self.grant_expiry.get_or_create(&labels).set(t.as_second());
            }
            None => {
                self.grant_expiry.remove(&labels);
            }
        }
    }

    /// Drops the per-TeamAccess gauges (conditions, grant expiry) of a
    /// TeamAccess that no longer exists.
    pub fn forget(&self, teamaccess: &str) {
        self.set_conditions(teamaccess, &[]);
        self.set_grant_expiry(teamaccess, None);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: "Test".to_string(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        }
    }

    /// The sample lines of the text exposition that start with `prefix`.
    fn lines(m: &Metrics, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = m
            .encode()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn requests_count_by_method_and_status_class() {
        let m = Metrics::default();
        m.api_request("GET", Some(200));
        m.api_request("GET", Some(404));
        m.api_request("PATCH", Some(504));
        m.api_request("GET", None);
        m.api_request("GET", Some(201));
        m.api_request_cancelled("PATCH");
        assert_eq!(
            lines(&m, "teamaccess_api_requests_total{"),
            [
                r#"teamaccess_api_requests_total{method="GET",code="2xx"} 2"#,
                r#"teamaccess_api_requests_total{method="GET",code="4xx"} 1"#,
                r#"teamaccess_api_requests_total{method="GET",code="error"} 1"#,
                r#"teamaccess_api_requests_total{method="PATCH",code="5xx"} 1"#,
                r#"teamaccess_api_requests_total{method="PATCH",code="cancelled"} 1"#,
            ]
        );
    }

    #[test]
    fn conditions_are_one_when_true_and_zero_otherwise() {
        let m = Metrics::default();
        m.set_conditions(
            "payments",
            &[
                condition("Ready", "True"),
                condition("Stalled", "False"),
                condition("Reconciling", "Unknown"),
            ],
        );
        assert_eq!(
            lines(&m, "teamaccess_condition{"),
            [
                r#"teamaccess_condition{teamaccess="payments",type="Ready"} 1"#,
                r#"teamaccess_condition{teamaccess="payments",type="Reconciling"} 0"#,
                r#"teamaccess_condition{teamaccess="payments",type="Stalled"} 0"#,
            ]
        );
        // a transition flips the value in place
        m.set_conditions(
            "payments",
            &[
                condition("Ready", "False"),
                condition("Stalled", "True"),
                condition("Reconciling", "False"),
            ],
        );
        assert_eq!(
            lines(&m, "teamaccess_condition{"),
            [
                r#"teamaccess_condition{teamaccess="payments",type="Ready"} 0"#,
                r#"teamaccess_condition{teamaccess="payments",type="Reconciling"} 0"#,
                r#"teamaccess_condition{teamaccess="payments",type="Stalled"} 1"#,
            ]
        );
    }

    #[test]
    fn a_condition_type_that_disappears_loses_its_series() {
        let m = Metrics::default();
        m.set_conditions(
            "orders",
            &[condition("Ready", "True"), condition("Stalled", "False")],
        );
        m.set_conditions("orders", &[condition("Ready", "True")]);
        assert_eq!(
            lines(&m, "teamaccess_condition{"),
            [r#"teamaccess_condition{teamaccess="orders",type="Ready"} 1"#]
        );
    }

    #[test]
    fn grant_expiry_is_the_given_unix_second_and_none_removes_it() {
        let m = Metrics::default();
        let t: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        m.set_grant_expiry("payments", Some(t));
        assert_eq!(
            lines(&m, "teamaccess_grant_expiry_timestamp_seconds{"),
            [r#"teamaccess_grant_expiry_timestamp_seconds{teamaccess="payments"} 1796083200"#]
        );
        m.set_grant_expiry("payments", None);
        assert!(lines(&m, "teamaccess_grant_expiry_timestamp_seconds{").is_empty());
    }

    #[test]
    fn forget_drops_only_that_teamaccess() {
        let m = Metrics::default();
        let t: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        for name in ["payments", "orders"] {
            m.set_conditions(name, &[condition("Ready", "True")]);
            m.set_grant_expiry(name, Some(t));
        }
        m.forget("payments");
        assert_eq!(
            lines(&m, "teamaccess_condition{"),
            [r#"teamaccess_condition{teamaccess="orders",type="Ready"} 1"#]
        );
        assert_eq!(
            lines(&m, "teamaccess_grant_expiry_timestamp_seconds{"),
            [r#"teamaccess_grant_expiry_timestamp_seconds{teamaccess="orders"} 1796083200"#]
        );
        // the families stay declared for the dashboard and the alerts
        let text = m.encode();
        assert!(text.contains("# TYPE teamaccess_condition gauge"), "{text}");
        assert!(
            text.contains("# TYPE teamaccess_grant_expiry_timestamp_seconds gauge"),
            "{text}"
        );
    }
}
