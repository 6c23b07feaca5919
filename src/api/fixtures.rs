//! Objects for unit tests: a TeamAccess from its spec, a Namespace with labels.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::api::teamaccess::TeamAccess;

pub const GROUP: &str = "0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a";

/// TeamAccess `name` (UID `uid-1`) granting `grants` to [`GROUP`].
pub fn teamaccess(name: &str, grants: Value, suspend: bool) -> TeamAccess {
    serde_json::from_value(json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "metadata": {"name": name, "uid": "uid-1"},
        "spec": {"groups": [{"id": GROUP}], "grants": grants, "suspend": suspend},
    }))
    .expect("a valid TeamAccess")
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let mut n = Namespace::default();
    n.metadata.name = Some(name.into());
    n.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    n
}

pub fn terminating(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let mut n = namespace(name, labels);
    n.metadata.deletion_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
    n
}
