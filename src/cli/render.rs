//! `teamaccess render`: the Roles and RoleBindings that TeamAccess objects
//! would produce, offline, for review in a GitOps repository's CI.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::access::desired::{self, Plan, Settings};
use crate::api::teamaccess::TeamAccess;
use crate::api::validate::{self, FieldError};

/// API groups with namespaced resources that a plain Kubernetes 1.36 API
/// server serves; render's stand-in for discovery (override with --api-groups).
pub const KUBERNETES_API_GROUPS: &[&str] = &[
    "",
    "apps",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "storage.k8s.io",
];

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{source_name}: {source}")]
    Read {
        source_name: String,
        source: std::io::Error,
    },
    #[error("{source_name}: document {document} (line {line}): {message}")]
    Parse {
        source_name: String,
        document: usize,
        line: usize,
        message: String,
    },
    #[error("{source_name}: document {document} ({what}):\n{}", list(.errors))]
    Invalid {
        source_name: String,
        document: usize,
        what: String,
        errors: Vec<FieldError>,
    },
    #[error("{source_name}: invalid YAML: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error(
        "{source_name}: document {document}: TeamAccess {name:?} is defined again (first in document {first}); the API server holds one object per name"
    )]
    Duplicate {
        source_name: String,
        document: usize,
        first: usize,
        name: String,
    },
    #[error("--now {0:?}: not an RFC 3339 time (e.g. 2026-12-01T00:00:00Z)")]
    Now(String),
}

/// The YAML parser's message, without its own `error:` prefix and without
/// advice about parser options that a user cannot set.
fn tidy_yaml_error(message: &str) -> String {
    let m = message.trim().trim_start_matches("error:").trim();
    match m.find(", set DuplicateKeyPolicy") {
        Some(i) => m[..i].to_string(),
        None => m.to_string(),
    }
}

fn list(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One YAML document: its 1-based number, first line, and parsed value.
struct Document {
    number: usize,
    line: usize,
    value: Value,
}

/// Splits a YAML stream at `---` lines, so every error can say which document
/// and which line it is about; empty documents are skipped but still counted.
fn documents(text: &str, source_name: &str) -> Result<Vec<Document>, RenderError> {
    // syntax first, over the whole stream, so line numbers are the file's
    if let Err(e) = serde_saphyr::from_multiple::<Value>(text) {
        return Err(RenderError::Syntax {
            source_name: source_name.into(),
            message: tidy_yaml_error(&e.to_string()),
        });
    }
    let mut chunks: Vec<(usize, String)> = vec![(1, String::new())];
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            chunks.push((i + 2, String::new()));
        } else {
            let chunk = &mut chunks.last_mut().expect("never empty").1;
            chunk.push_str(line);
            chunk.push('\n');
        }
    }
    // a stream that opens with `---` (after comments, perhaps) starts its
    // first document there: what precedes it is not a document
    let preamble_only = chunks[0]
        .1
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if chunks.len() > 1 && preamble_only {
        chunks.remove(0);
    }
    let mut docs = Vec::new();
    for (n, (line, chunk)) in chunks.into_iter().enumerate() {
        let parsed: Option<Value> =
            serde_saphyr::from_str(&chunk).map_err(|e| RenderError::Parse {
                source_name: source_name.into(),
                document: n + 1,
                line,
                message: e.to_string(),
            })?;
        match parsed {
            None | Some(Value::Null) => {}
            Some(value) => docs.push(Document {
                number: n + 1,
                line,
                value,
            }),
        }
    }
    Ok(docs)
}

fn describe(v: &Value) -> String {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("no kind");
    match v.pointer("/metadata/name").and_then(Value::as_str) {
        Some(name) => format!("{kind} {name:?}"),
        None => kind.to_string(),
    }
}

fn expect_kind(doc: &Document, api_version: &str, kinds: &[&str]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let got_kind = doc
        .value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !kinds.contains(&got_kind) {
        errors.push(FieldError {
            path: "kind".into(),
            message: format!("expected {}, got {got_kind:?}", kinds.join(" or ")),
        });
    }
    let got_version = doc
        .value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got_version != api_version {
        errors.push(FieldError {
            path: "apiVersion".into(),
            message: format!("expected {api_version}, got {got_version:?}"),
        });
    }
    errors
}

/// Deserializes strictly: a field the type would silently ignore is an error,
/// and a type error names the path of the field.
fn strict<T: DeserializeOwned>(value: Value) -> Result<T, Vec<FieldError>> {
    let mut ignored = Vec::new();
    let mut on_ignored = |path: serde_ignored::Path<'_>| {
        // serde_ignored marks an Option level with `?`; people write paths without it
        let path = path.to_string().replace(".?", "");
        // type fields the deserializers read past; checked by expect_kind
        if path != "apiVersion" && path != "kind" {
            ignored.push(path)
        }
    };
    let de = serde_ignored::Deserializer::new(value, &mut on_ignored);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(de);
    match parsed {
        Err(e) => Err(vec![FieldError {
            path: e.path().to_string(),
            message: e.into_inner().to_string(),
        }]),
        Ok(_) if !ignored.is_empty() => Err(ignored
            .into_iter()
            .map(|path| FieldError {
                path,
                message: "unknown field".into(),
            })
            .collect()),
        Ok(t) => Ok(t),
    }
}

/// What to do with a document that is not a TeamAccess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherKinds {
    /// `render -f` is given TeamAccess objects: anything else is a mistake.
    Refuse,
    /// A repository folder also holds Namespaces, Kustomizations and the like.
    Skip,
}

/// Parses and validates TeamAccess documents as the API server would.
pub fn parse_teamaccesses(text: &str, source_name: &str) -> Result<Vec<TeamAccess>, RenderError> {
    Ok(
        parse_teamaccess_documents(text, source_name, OtherKinds::Refuse)?
            .into_iter()
            .map(|(_, ta)| ta)
            .collect(),
    )
}

/// Whether a document is meant as a TeamAccess: its kind says so, or its
/// apiVersion is in our group (then a wrong kind is an error, not skipped).
fn is_ours(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("TeamAccess")
        || (v.get("apiVersion").and_then(Value::as_str))
            .is_some_and(|a| a.split('/').next() == Some(crate::api::teamaccess::GROUP))
}

/// As [`parse_teamaccesses`], with each object's document number.
pub fn parse_teamaccess_documents(
    text: &str,
    source_name: &str,
    others: OtherKinds,
) -> Result<Vec<(usize, TeamAccess)>, RenderError> {
    let mut out = Vec::new();
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for doc in documents(text, source_name)? {
        if others == OtherKinds::Skip && !is_ours(&doc.value) {
            continue;
        }
        if let Some(name) = doc.value.pointer("/metadata/name").and_then(Value::as_str) {
            if let Some(&first) = seen.get(name) {
                return Err(RenderError::Duplicate {
                    source_name: source_name.into(),
                    document: doc.number,
                    first,
                    name: name.into(),
                });
            }
            seen.insert(name.into(), doc.number);
        }
        let invalid = |errors| RenderError::Invalid {
            source_name: source_name.into(),
            document: doc.number,
            what: format!("{}, line {}", describe(&doc.value), doc.line),
            errors,
        };
        let mut errors = expect_kind(&doc, "teamaccess.dev/v1alpha1", &["TeamAccess"]);
        if errors.is_empty() {
            errors = validate::teamaccess(&doc.value);
        }
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let mut value = doc.value.clone();
        // status is the operator's to write; a copy from a live object is not input
        if let Some(obj) = value.as_object_mut() {
            obj.remove("status");
        }
        out.push((doc.number, strict::<TeamAccess>(value).map_err(invalid)?));
    }
    Ok(out)
}

/// Parses Namespace documents, and `kubectl get ns -o yaml` lists.
pub fn parse_namespaces(text: &str, source_name: &str) -> Result<Vec<Namespace>, RenderError> {
    let mut out = Vec::new();
    for doc in documents(text, source_name)? {
        let invalid = |errors| RenderError::Invalid {
            source_name: source_name.into(),
            document: doc.number,
            what: format!("{}, line {}", describe(&doc.value), doc.line),
            errors,
        };
        let errors = expect_kind(&doc, "v1", &["Namespace", "List", "NamespaceList"]);
        if !errors.is_empty() {
            return Err(invalid(errors));
        }
        let (items, in_list) = match doc.value.get("kind").and_then(Value::as_str) {
            Some("Namespace") => (vec![doc.value.clone()], false),
            _ => (
                doc.value
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
                true,
            ),
        };
        for (i, item) in items.into_iter().enumerate() {
            let ns: Namespace = strict(item).map_err(|errs| {
                invalid(
                    errs.into_iter()
                        .map(|e| FieldError {
                            path: if in_list {
                                format!("items[{i}].{}", e.path)
                            } else {
                                e.path
                            },
                            message: e.message,
                        })
                        .collect(),
                )
            })?;
            out.push(ns);
        }
    }
    Ok(out)
}

/// Parses `--now`.
pub fn parse_now(s: &str) -> Result<Timestamp, RenderError> {
    s.parse().map_err(|_| RenderError::Now(s.to_string()))
}

/// Which namespaces exist, as far as an offline command knows.
#[derive(Clone, Copy, Debug)]
pub enum Inventory<'a> {
    /// `--namespaces FILE`: exactly these exist, with these labels.
    Given(&'a [Namespace]),
    /// No inventory: every namespace a grant names is taken as existing, and
    /// selectors match nothing (their labels are unknown).
    NamedOnly,
}

/// The first line of a render without an inventory, so nobody mistakes it for
/// a cluster's answer.
pub const NAMED_ONLY_HEADER: &str = "# No --namespaces given: every namespace a grant names is taken as existing; selectors match nothing.\n";

/// The YAML stream to print: per TeamAccess, a comment block with the plan of
/// every targeted namespace, then its Roles and RoleBindings.
pub fn render(
    access: &[TeamAccess],
    inventory: Inventory<'_>,
    served_api_groups: &BTreeSet<String>,
    settings: &Settings,
    now: Timestamp,
) -> String {
    let mut out = String::new();
    let index = match inventory {
        Inventory::Given(namespaces) => desired::index_namespaces(namespaces),
        Inventory::NamedOnly => {
            out.push_str(NAMED_ONLY_HEADER);
            desired::index_named(access)
        }
    };
    let rules = desired::rules_by_tier(served_api_groups, settings);
    for ta in access {
        let name = ta.metadata.name.as_deref().unwrap_or_default();
        let d = desired::compute(ta, &index, settings, now);
        out.push_str(&format!(
            "# TeamAccess {name}: {} namespace(s) targeted at {now}\n",
            d.targets.len()
        ));
        for t in &d.targets {
            let why = match t.plan {
                Plan::Apply => "Role and RoleBinding below",
                Plan::Pending => "pending: namespace not found; applied when it is created",
                Plan::Denied => "denied: protected namespace named in a grant",
                Plan::Skipped => "skipped: protected namespace matched by a selector",
                Plan::Expired => "expired: every grant for it is past validUntil",
                Plan::NotYetValid => "not yet valid: every grant for it is before validFrom",
            };
            out.push_str(&format!("#   {}: {} {why}\n", t.namespace, t.tier));
        }
        if let Some(next) = d.next_transition {
            out.push_str(&format!("#   next change at {next}\n"));
        }
        for t in d.to_apply() {
            let role = desired::role(ta, &t.namespace, t.tier, &rules[&t.tier]);
            let binding = desired::role_binding(ta, &t.namespace, t.tier);
            for doc in [
                serde_saphyr::to_string(&role),
                serde_saphyr::to_string(&binding),
            ] {
                out.push_str("---\n");
                out.push_str(&doc.expect("Role and RoleBinding serialize"));
            }
        }
    }
    out
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    const TA: &str = "apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata:
  name: payments
spec:
  groups:
    - id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a
  grants:
    - tier: Writer
      namespaces: [payments-dev, payments-new]
";

    #[test]
    fn a_typo_is_an_error_naming_document_and_field() {
        let second = TA
            .replace("name: payments", "name: orders")
            .replace("namespaces:", "validUntill: x\n      namespaces:");
        let text = format!("{TA}---\n{second}");
        let err = parse_teamaccesses(&text, "in.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("document 2"), "{err}");
        assert!(
            err.contains("spec.grants[0].validUntill: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn yaml_errors_give_the_file_line() {
        let text = format!("{TA}---\nkind: TeamAccess\nkind: again\n");
        let err = parse_teamaccesses(&text, "in.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("in.yaml: invalid YAML: "), "{err}");
        assert!(err.contains("line 13"), "{err}");
        assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
    }

    #[test]
    fn a_leading_separator_does_not_count_as_a_document() {
        let text = format!(
            "# access for payments\n---\n{}",
            TA.replace("tier: Writer", "tier: writer")
        );
        let err = parse_teamaccesses(&text, "in.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("document 1 (TeamAccess \"payments\", line 3)"),
            "{err}"
        );
    }

    #[test]
    fn a_name_defined_twice_is_refused() {
        let text = format!("{TA}---\n{TA}");
        let err = parse_teamaccesses(&text, "in.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "document 2: TeamAccess \"payments\" is defined again (first in document 1)"
            ),
            "{err}"
        );
    }

    #[test]
    fn other_kinds_are_refused() {
        let err = parse_teamaccesses(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
            "in.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kind: expected TeamAccess"), "{err}");
    }

    #[test]
    fn namespaces_accept_kubectl_lists_and_refuse_unknown_fields() {
        let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a, labels: {team: x}}\n";
        assert_eq!(parse_namespaces(list, "ns.yaml").unwrap().len(), 1);
        let bad = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, lables: {team: x}}\n";
        let err = parse_namespaces(bad, "ns.yaml").unwrap_err().to_string();
        assert!(err.contains("  metadata.lables: unknown field"), "{err}");
    }

    #[test]
    fn renders_applied_namespaces_and_reports_pending_ones() {
        let access = parse_teamaccesses(TA, "in.yaml").unwrap();
        let ns = parse_namespaces(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: payments-dev}\n",
            "ns",
        )
        .unwrap();
        let groups = KUBERNETES_API_GROUPS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let out = render(
            &access,
            Inventory::Given(&ns),
            &groups,
            &Settings::with_defaults("teamaccess-system"),
            Timestamp::now(),
        );
        assert!(out.contains("#   payments-new: Writer pending"), "{out}");
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Role", "RoleBinding"]);
        assert!(
            docs.iter()
                .all(|d| d["metadata"]["namespace"] == "payments-dev")
        );
        // no UID offline, so no ownerReferences to dangle
        assert!(
            docs.iter()
                .all(|d| d["metadata"].get("ownerReferences").is_none())
        );
    }
}
