//! The `TeamAccess` custom resource: its spec, status, and every rule the API
//! server enforces at apply time (schema bounds and CEL).
//!
//! Bounds (maxItems, maxLength) are there for two reasons: a person gets a
//! clear refusal instead of an object the operator chokes on, and the API
//! server can prove the CEL rules' cost is bounded, which it requires.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use crate::access::tiers::Tier;

/// API group of every object this operator defines or labels.
pub const GROUP: &str = "teamaccess.dev";

/// A lowercase GUID: AKS puts group object IDs into the token in lowercase, and
/// RBAC compares subject names byte for byte, so an uppercase ID binds nobody.
pub const GUID_PATTERN: &str = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
/// RFC 1123 label, which is what a namespace name is.
pub const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A label key: optional DNS subdomain prefix and `/`, then a name of at most 63.
pub const LABEL_KEY_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A label value: empty, or at most 63 characters starting and ending alphanumeric.
pub const LABEL_VALUE_PATTERN: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Which Entra ID groups get which tier of access in which namespaces.
// several printcolumn(...) each with a `type_` read as duplicates to clippy
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "teamaccess.dev",
    version = "v1alpha1",
    kind = "TeamAccess",
    plural = "teamaccesses",
    shortname = "ta",
    status = "TeamAccessStatus",
    cel,
    doc = "Grants Microsoft Entra ID groups Reader, Writer or Admin access (as the AKS built-in roles define them) to namespaces, through a Role and a RoleBinding per namespace.",
    printcolumn(name = "Tiers", type_ = "string", json_path = ".status.tiers"),
    printcolumn(
        name = "Namespaces",
        type_ = "string",
        json_path = ".status.progress",
        description = "namespaces applied / targeted"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamAccessSpec {
    /// Entra ID security groups, by object ID. Every grant applies to all of them.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["id".into()]))]
    pub groups: Vec<EntraGroup>,

    /// What access, where. A namespace selected by several grants gets the
    /// highest tier among those currently valid.
    #[schemars(length(min = 1, max = 32))]
    pub grants: Vec<Grant>,

    /// Stop creating and updating this TeamAccess's Roles and RoleBindings.
    /// Revocation at validUntil and cleanup on deletion still happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
}

/// One Entra ID group.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntraGroup {
    /// The group's object ID, a lowercase GUID.
    #[schemars(length(max = 36))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')"
    ).message(
        "must be the group's object ID as a lowercase GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, \
         hex digits a-f in lowercase); the token carries it lowercase, so any other form binds nobody"
    ))]
    pub id: String,

    /// A name for people and reports; never used for access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub name: Option<String>,
}

/// A tier of access in a set of namespaces, optionally limited in time.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "(has(self.namespaces) && size(self.namespaces) > 0) || has(self.namespaceSelector)"
).message("a grant needs namespaces, a namespaceSelector, or both"))]
#[x_kube(validation = Rule::new(
    "!has(self.validFrom) || !has(self.validUntil) || self.validFrom < self.validUntil"
).message("validFrom must be before validUntil").field_path(".validUntil"))]
pub struct Grant {
    /// Reader, Writer or Admin, as the AKS built-in roles of those names.
    pub tier: Tier,

    /// Namespaces by name. A name that does not exist yet is Pending and gets
    /// its access the moment the namespace is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub namespaces: Option<Vec<String>>,

    /// Namespaces by label, present and future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<NamespaceSelector>,

    /// The grant takes effect at this time (RFC 3339), judged on the operator's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<Time>,

    /// The grant is revoked at this time (RFC 3339), judged on the operator's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Time>,
}

/// A label selector over namespaces, as metav1.LabelSelector, with bounds.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)"
).message(
    "an empty namespaceSelector selects every namespace, present and future; give matchLabels or matchExpressions"
))]
pub struct NamespaceSelector {
    /// Label values are checked here; label keys cannot be: a structural
    /// schema cannot bound a map key's length, so any CEL rule over the keys
    /// has an unbounded cost and the API server refuses the CRD. A key no
    /// namespace can carry simply matches nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "match_labels_schema")]
    pub match_labels: Option<BTreeMap<String, String>>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub match_expressions: Option<Vec<SelectorRequirement>>,
}

fn match_labels_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "maxProperties": 64,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "pattern": LABEL_VALUE_PATTERN,
        },
    })
}

/// One requirement of a label selector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)"
).message("values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist").field_path(".values"))]
pub struct SelectorRequirement {
    /// A label key.
    #[schemars(length(min = 1, max = 317), regex(pattern = LABEL_KEY_PATTERN))]
    pub key: String,

    pub operator: SelectorOperator,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 63), regex(pattern = LABEL_VALUE_PATTERN)))]
    pub values: Option<Vec<String>>,
}

/// The operators of a label selector requirement, exactly as Kubernetes has them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// What the operator did, in the form kstatus, Flux and Argo CD read.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TeamAccessStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Stalled, NamespacesPending, Suspended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Exact counts over every targeted namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,

    /// The tiers granted, highest first, for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<String>,

    /// "applied/targeted", for the printer column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,

    /// The next validFrom or validUntil boundary, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition_time: Option<Time>,

    /// Per-namespace state, bounded: states that need attention first, then by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<NamespaceStatus>,

    /// Grants that grant nothing now: past their validUntil, or before their
    /// validFrom (so an expired Admin grant does not simply vanish).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub inactive_grants: Vec<InactiveGrant>,
}

/// A grant outside its validity window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InactiveGrant {
    /// Its position in `spec.grants`, from 0.
    #[schemars(extend("format" = "int32"))]
    pub index: u32,
    pub tier: Tier,
    /// What it reaches: its namespaces, or its selector.
    pub reaches: String,
    pub state: GrantState,
    /// Expired: since when (its validUntil). NotYetValid: from when (its validFrom).
    pub at: Time,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum GrantState {
    Expired,
    NotYetValid,
}

/// Exact counts of targeted namespaces by outcome. The schema says `int32`
/// (a format the API server knows; `uint32` draws a warning on every apply),
/// with `minimum: 0`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Every namespace a grant names or selects (terminating ones excluded).
    #[schemars(extend("format" = "int32"))]
    pub targeted: u32,
    /// Role and RoleBinding in place.
    #[schemars(extend("format" = "int32"))]
    pub applied: u32,
    /// Named but does not exist yet; applied when it is created.
    #[schemars(extend("format" = "int32"))]
    pub pending: u32,
    /// Nothing to do now: protected and matched only by a selector, or every
    /// grant for it expired or not yet valid.
    #[schemars(extend("format" = "int32"))]
    pub skipped: u32,
    /// Blocked until a person acts (Conflict, Denied) or failing (Error).
    #[schemars(extend("format" = "int32"))]
    pub failed: u32,
}

/// The state of one targeted namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    pub state: NamespaceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome for one namespace. Ordered by how much it needs a person's attention.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    schemars::JsonSchema,
)]
pub enum NamespaceState {
    /// An object with our name that this TeamAccess does not own is in the way.
    Conflict,
    /// A protected namespace named explicitly in a grant.
    Denied,
    /// A write failed; retried.
    Error,
    /// Named, but the namespace does not exist yet.
    Pending,
    /// Role and RoleBinding match the tier.
    Applied,
    /// A protected namespace matched only by a selector.
    Skipped,
    /// Every grant for this namespace has passed its validUntil.
    Expired,
    /// Every grant for this namespace is before its validFrom.
    NotYetValid,
}

impl NamespaceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conflict => "Conflict",
            Self::Denied => "Denied",
            Self::Error => "Error",
            Self::Pending => "Pending",
            Self::Applied => "Applied",
            Self::Skipped => "Skipped",
            Self::Expired => "Expired",
            Self::NotYetValid => "NotYetValid",
        }
    }
}

impl TeamAccess {
    pub fn suspended(&self) -> bool {
        self.spec.suspend.unwrap_or(false)
    }
}

/// The CRD, as the derive makes it plus one thing it cannot express: a
/// default status of `{observedGeneration: 0}`. kstatus (Flux) calls an object
/// without `status.observedGeneration` current, so without it a new TeamAccess
/// would pass a health check before the operator had looked at it; with it, a
/// new object reads as behind its generation until the first reconcile.
pub fn definition()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON;
    use kube::CustomResourceExt;
    let mut crd = TeamAccess::crd();
    for version in &mut crd.spec.versions {
        let status = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            status.default = Some(JSON(serde_json::json!({"observedGeneration": 0})));
        }
    }
    crd
}

/// The CRD as YAML, exactly as `crds/` holds it.
pub fn crd_yaml() -> String {
    serde_saphyr::to_string(&definition()).expect("the CRD serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// crds/ is what people apply; it must be what the code defines.
    #[test]
    fn committed_crd_matches_the_type() {
        let committed = include_str!("../../crds/teamaccess.dev_teamaccesses.yaml");
        assert!(
            committed == crd_yaml(),
            "crds/teamaccess.dev_teamaccesses.yaml is stale: run `make crds` and commit it"
        );
    }

    #[test]
    fn no_default_inside_a_list_item() {
        // GitOps tools show a perpetual diff for defaulted list-item fields
        fn walk(v: &serde_json::Value, in_list: bool, path: &str) {
            if let Some(obj) = v.as_object() {
                assert!(
                    !(in_list && obj.contains_key("default")),
                    "default at {path}"
                );
                for (k, child) in obj {
                    walk(child, in_list || k == "items", &format!("{path}.{k}"));
                }
            }
            // the schema sits under spec.versions[]: arrays are walked too
            for (i, child) in v.as_array().into_iter().flatten().enumerate() {
                walk(child, in_list, &format!("{path}[{i}]"));
            }
        }
        walk(&serde_json::to_value(definition()).unwrap(), false, "");
    }

    #[test]
    fn every_format_is_one_the_api_server_knows() {
        // formats kube-apiserver validates without a warning (the default
        // strfmt registry of k8s.io/kube-openapi)
        const KNOWN: &[&str] = &[
            "int32",
            "int64",
            "float",
            "double",
            "byte",
            "date",
            "date-time",
            "duration",
            "password",
            "uuid",
            "uri",
            "email",
            "hostname",
            "ipv4",
            "ipv6",
            "cidr",
            "mac",
        ];
        fn walk(v: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
            if let Some(obj) = v.as_object() {
                if let Some(f) = obj.get("format").and_then(|f| f.as_str())
                    && !KNOWN.contains(&f)
                {
                    bad.push(format!("{path}: {f}"));
                }
                for (k, child) in obj {
                    walk(child, &format!("{path}.{k}"), bad);
                }
            }
            for (i, child) in v.as_array().into_iter().flatten().enumerate() {
                walk(child, &format!("{path}[{i}]"), bad);
            }
        }
        let mut bad = Vec::new();
        walk(&serde_json::to_value(definition()).unwrap(), "", &mut bad);
        assert!(
            bad.is_empty(),
            "formats the API server warns about: {bad:?}"
        );
    }
}
