//! Offline validation of a TeamAccess, by the CRD's own schema.
//!
//! `render` must never accept what the API server would refuse. Rather than a
//! second, hand-kept copy of the rules, this walks the very openAPIV3Schema
//! that `teamaccess crd` prints (types, required, enums, patterns, bounds,
//! list uniqueness, unknown fields) and then runs its `x-kubernetes-validations`
//! through kube's CEL evaluator. Change a rule in `api/teamaccess.rs` and both the API
//! server and `render` enforce it.

use std::sync::OnceLock;

use serde_json::Value;

/// One refused field, in the API server's words where we can.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// e.g. `spec.groups[0].id`
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let crd = crate::api::teamaccess::definition();
        let s = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("the derived CRD has a schema");
        serde_json::to_value(s).expect("the schema serializes")
    })
}

/// Every reason the API server would refuse `object` (a TeamAccess as JSON),
/// empty when it would accept it.
pub fn teamaccess(object: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match object.pointer("/metadata/name").and_then(Value::as_str) {
        None => errors.push(FieldError {
            path: "metadata.name".into(),
            message: "Required value: name is required".into(),
        }),
        Some(n) if !crate::access::naming::is_dns_subdomain(n) => errors.push(FieldError {
            path: "metadata.name".into(),
            message: format!(
                "Invalid value: {n:?}: must be a lowercase RFC 1123 subdomain of at most 253 characters"
            ),
        }),
        Some(_) => {}
    }
    // the API server serves apiVersion, kind and metadata implicitly: they are
    // not in the CRD's schema, but are not unknown fields either
    let mut body = object.clone();
    if let Some(obj) = body.as_object_mut() {
        for implicit in ["apiVersion", "kind", "metadata"] {
            obj.remove(implicit);
        }
    }
    structural(schema(), &body, "", &mut errors);
    // CEL runs on a structurally valid object only, as on the API server
    if errors.is_empty()
        && let Err(cel) =
            CEL.with(|(validator, compiled)| validator.validate_compiled(compiled, object, None))
    {
        errors.extend(cel.into_vec().into_iter().map(|e| FieldError {
            path: e.field_path.trim_start_matches('.').to_string(),
            message: e.message,
        }));
    }
    errors
}

thread_local! {
    /// The CRD's CEL rules, compiled once per thread (render validates many objects).
    static CEL: (kube::core::cel::Validator, kube::core::cel::CompiledSchema) =
        (kube::core::cel::Validator::new(), kube::core::cel::compile_schema(schema()));
    static PATTERNS: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
        Default::default();
}

/// Whether `s` matches the schema pattern `p` (an invalid pattern matches nothing).
fn matches_pattern(p: &str, s: &str) -> bool {
    PATTERNS.with(|cache| {
        cache
            .borrow_mut()
            .entry(p.to_string())
            .or_insert_with(|| regex::Regex::new(p).ok())
            .as_ref()
            .is_some_and(|re| re.is_match(s))
    })
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn structural(schema: &Value, value: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let mut err = |message: String| {
        errors.push(FieldError {
            path: path.to_string(),
            message,
        })
    };
    let get = |k: &str| schema.get(k);
    if let Some(want) = get("type").and_then(Value::as_str) {
        let got = type_name(value);
        let ok = got == want || (want == "number" && got == "integer");
        if !ok {
            err(format!(
                "Invalid value: \"{got}\": {path} in body must be of type {want}"
            ));
            return;
        }
    }
    match value {
        Value::Object(map) => {
            let props = get("properties").and_then(Value::as_object);
            let additional = get("additionalProperties").filter(|a| a.is_object());
            for req in get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let req = req.as_str().unwrap_or_default();
                if map.get(req).is_none_or(Value::is_null) {
                    errors.push(FieldError {
                        path: join(path, req),
                        message: "Required value".into(),
                    });
                }
            }
            if let Some(max) = get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errors.push(FieldError {
                    path: path.into(),
                    message: format!("Too many: {}: must have at most {max} items", map.len()),
                });
            }
            let free_form = props.is_none() && additional.is_none()
                || get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            for (k, v) in map {
                // the API server drops nulls of non-nullable fields before validating
                if v.is_null() {
                    continue;
                }
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(s), _) | (None, Some(s)) => structural(s, v, &join(path, k), errors),
                    (None, None) if free_form => {}
                    (None, None) => errors.push(FieldError {
                        path: join(path, k),
                        message: "unknown field".into(),
                    }),
                }
            }
        }
        Value::Array(items) => {
            if let Some(min) = get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                err(format!(
                    "Invalid value: {}: {path} in body should have at least {min} items",
                    items.len()
                ));
            }
            if let Some(max) = get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                err(format!(
                    "Too many: {}: must have at most {max} items",
                    items.len()
                ));
            }
            if let Some(item_schema) = get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
            let key_of = |item: &Value| -> Value {
                match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("map") => {
                        let keys = schema
                            .get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array);
                        Value::Array(
                            keys.into_iter()
                                .flatten()
                                .map(|k| {
                                    item.get(k.as_str().unwrap_or_default())
                                        .cloned()
                                        .unwrap_or(Value::Null)
                                })
                                .collect(),
                        )
                    }
                    _ => item.clone(),
                }
            };
            if matches!(
                schema.get("x-kubernetes-list-type").and_then(Value::as_str),
                Some("set" | "map")
            ) {
                for (i, item) in items.iter().enumerate() {
                    if items[..i]
                        .iter()
                        .any(|earlier| key_of(earlier) == key_of(item))
                    {
                        errors.push(FieldError {
                            path: format!("{path}[{i}]"),
                            message: format!("Duplicate value: {}", key_of(item)),
                        });
                    }
                }
            }
        }
        Value::String(s) => {
            if let Some(allowed) = get("enum").and_then(Value::as_array)
                && !allowed.iter().any(|a| a.as_str() == Some(s))
            {
                let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                err(format!(
                    "Unsupported value: {s:?}: supported values: {}",
                    list.join(", ")
                ));
            }
            let chars = s.chars().count() as u64;
            if let Some(min) = get("minLength").and_then(Value::as_u64)
                && chars < min
            {
                err(format!(
                    "Invalid value: {s:?}: {path} in body should be at least {min} chars long"
                ));
            }
            if let Some(max) = get("maxLength").and_then(Value::as_u64)
                && chars > max
            {
                err(format!("Too long: may not be more than {max} bytes"));
            }
            if let Some(p) = get("pattern").and_then(Value::as_str)
                && !matches_pattern(p, s)
            {
                err(format!(
                    "Invalid value: {s:?}: {path} in body should match '{p}'"
                ));
            }
            if get("format").and_then(Value::as_str) == Some("date-time")
                && s.parse::<k8s_openapi::jiff::Timestamp>().is_err()
            {
                err(format!(
                    "Invalid value: {s:?}: {path} in body must be of type date-time (RFC 3339, e.g. 2026-12-01T00:00:00Z)"
                ));
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: Value) -> Vec<String> {
        let obj = json!({"apiVersion": "teamaccess.dev/v1alpha1", "kind": "TeamAccess",
                         "metadata": {"name": "t"}, "spec": spec});
        teamaccess(&obj)
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    const G: &str = "0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a";

    #[test]
    fn a_valid_object_passes() {
        let errs = check(json!({
            "groups": [{"id": G, "name": "payments"}],
            "grants": [
                {"tier": "Writer", "namespaces": ["payments-dev"]},
                {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "payments", "example.com/tier": "a_b.c"},
                    "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]},
                                         {"key": "legacy", "operator": "DoesNotExist"}]}},
                {"tier": "Admin", "namespaces": ["sandbox"], "validFrom": "2026-11-01T00:00:00Z", "validUntil": "2026-12-01T00:00:00+01:00"}
            ],
            "suspend": false
        }));
        assert!(errs.is_empty(), "{errs:?}");
    }

    /// The same table the integration tests send to the API server: each
    /// invalid object is refused, naming its field.
    #[test]
    fn every_invalid_object_is_refused_naming_its_field() {
        for case in cases::invalid() {
            let errs = check(case.spec);
            assert!(
                errs.iter().any(|e| e.contains(case.field)),
                "{}: expected an error naming {:?}, got {errs:?}",
                case.name,
                case.field
            );
        }
    }
}

/// Invalid TeamAccess specs, shared by the unit tests of `render` and the
/// integration tests against the API server, so the two cannot drift apart.
pub mod cases {
    use serde_json::{Value, json};

    /// The group ID the cases use where they need a valid one.
    pub const GROUP: &str = "0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a";

    pub struct Invalid {
        pub name: &'static str,
        pub spec: Value,
        /// the field the refusal must name
        pub field: &'static str,
    }

    fn with_grant(grant: Value) -> Value {
        json!({"groups": [{"id": GROUP}], "grants": [grant]})
    }

    pub fn invalid() -> Vec<Invalid> {
        let ok_grant = json!({"tier": "Reader", "namespaces": ["a"]});
        let case = |name, spec, field| Invalid { name, spec, field };
        vec![
            case(
                "uppercase GUID",
                json!({"groups": [{"id": GROUP.to_uppercase()}], "grants": [ok_grant]}),
                "spec.groups[0].id",
            ),
            case(
                "not a GUID",
                json!({"groups": [{"id": "payments-developers"}], "grants": [ok_grant]}),
                "spec.groups[0].id",
            ),
            case(
                "duplicate group",
                json!({"groups": [{"id": GROUP}, {"id": GROUP, "name": "again"}], "grants": [ok_grant]}),
                // server-side apply says `.spec.groups: duplicate entries for key [id="…"]`
                "spec.groups",
            ),
            case(
                "no groups",
                json!({"groups": [], "grants": [ok_grant]}),
                "spec.groups",
            ),
            case(
                "unknown tier",
                with_grant(json!({"tier": "Owner", "namespaces": ["a"]})),
                "spec.grants[0].tier",
            ),
            case(
                "lowercase tier",
                with_grant(json!({"tier": "reader", "namespaces": ["a"]})),
                "spec.grants[0].tier",
            ),
            case(
                "grant with neither namespaces nor selector",
                with_grant(json!({"tier": "Reader"})),
                "spec.grants[0]",
            ),
            case(
                "grant with an empty namespaces list and no selector",
                with_grant(json!({"tier": "Reader", "namespaces": []})),
                "spec.grants[0]",
            ),
            case(
                "empty selector {}",
                with_grant(json!({"tier": "Reader", "namespaceSelector": {}})),
                "spec.grants[0].namespaceSelector",
            ),
            case(
                "matchExpression with an unknown operator",
                with_grant(
                    json!({"tier": "Reader", "namespaceSelector": {"matchExpressions": [
                    {"key": "team", "operator": "Equals", "values": ["a"]}]}}),
                ),
                "spec.grants[0].namespaceSelector.matchExpressions[0].operator",
            ),
            case(
                "In without values",
                with_grant(
                    json!({"tier": "Reader", "namespaceSelector": {"matchExpressions": [
                    {"key": "team", "operator": "In"}]}}),
                ),
                "spec.grants[0].namespaceSelector.matchExpressions[0].values",
            ),
            case(
                "Exists with values",
                with_grant(
                    json!({"tier": "Reader", "namespaceSelector": {"matchExpressions": [
                    {"key": "team", "operator": "Exists", "values": ["a"]}]}}),
                ),
                "spec.grants[0].namespaceSelector.matchExpressions[0].values",
            ),
            case(
                "invalid label value in matchLabels",
                with_grant(
                    json!({"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "not a label value"}}}),
                ),
                "spec.grants[0].namespaceSelector.matchLabels.team",
            ),
            case(
                "invalid label key in matchExpressions",
                with_grant(
                    json!({"tier": "Reader", "namespaceSelector": {"matchExpressions": [
                    {"key": "bad key", "operator": "Exists"}]}}),
                ),
                "spec.grants[0].namespaceSelector.matchExpressions[0].key",
            ),
            case(
                "invalid namespace name",
                with_grant(json!({"tier": "Reader", "namespaces": ["Payments_Dev"]})),
                "spec.grants[0].namespaces[0]",
            ),
            case(
                "validFrom after validUntil",
                with_grant(json!({"tier": "Admin", "namespaces": ["a"],
                    "validFrom": "2026-12-02T00:00:00Z", "validUntil": "2026-12-01T00:00:00Z"})),
                "spec.grants[0].validUntil",
            ),
            case(
                "validUntil not RFC 3339",
                with_grant(
                    json!({"tier": "Admin", "namespaces": ["a"], "validUntil": "next tuesday"}),
                ),
                "spec.grants[0].validUntil",
            ),
            case(
                "too many groups",
                json!({"groups": (0..65).map(|i| json!({"id": format!("00000000-0000-0000-0000-{i:012x}")})).collect::<Vec<_>>(),
                       "grants": [ok_grant]}),
                "spec.groups",
            ),
            case(
                "too many grants",
                json!({"groups": [{"id": GROUP}], "grants": vec![ok_grant.clone(); 33]}),
                "spec.grants",
            ),
            case(
                "too many namespaces in a grant",
                with_grant(
                    json!({"tier": "Reader", "namespaces": (0..257).map(|i| format!("ns-{i}")).collect::<Vec<_>>()}),
                ),
                "spec.grants[0].namespaces",
            ),
            case(
                "unknown field",
                json!({"groups": [{"id": GROUP}], "grants": [ok_grant], "suspendd": true}),
                "spec.suspendd",
            ),
            case("empty spec", json!({}), "spec.groups"),
        ]
    }
}
