//! Label selectors: our bounded `NamespaceSelector` to kube's matcher, and the
//! `kubectl -l` string syntax used by `--protected-namespace-selector`.

use std::collections::BTreeMap;

use kube::core::{Expression, Selector, SelectorExt};

use crate::api::teamaccess::{NamespaceSelector, SelectorOperator};

impl NamespaceSelector {
    /// The matcher for this selector. An empty selector is refused by the CRD,
    /// but if one reaches us anyway it matches nothing: "every namespace" is
    /// never a default we fall into.
    pub fn to_selector(&self) -> Option<Selector> {
        let mut exprs: Vec<Expression> = Vec::new();
        for (k, v) in self.match_labels.iter().flatten() {
            exprs.push(Expression::Equal(k.clone(), v.clone()));
        }
        for r in self.match_expressions.iter().flatten() {
            let values = r.values.iter().flatten().cloned().collect();
            exprs.push(match r.operator {
                SelectorOperator::In => Expression::In(r.key.clone(), values),
                SelectorOperator::NotIn => Expression::NotIn(r.key.clone(), values),
                SelectorOperator::Exists => Expression::Exists(r.key.clone()),
                SelectorOperator::DoesNotExist => Expression::DoesNotExist(r.key.clone()),
            });
        }
        (!exprs.is_empty()).then(|| exprs.into_iter().collect())
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.to_selector().is_some_and(|s| s.matches(labels))
    }
}

/// A selector string was not valid `kubectl -l` syntax.
#[derive(Debug, thiserror::Error)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorParseError {
    input: String,
    reason: String,
}

/// Parses `kubectl -l` syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`, joined by commas. An empty string is refused,
/// since it would select every namespace.
pub fn parse(input: &str) -> Result<Selector, SelectorParseError> {
    let err = |reason: &str| SelectorParseError {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let mut terms = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&input[start..]);
    let mut exprs = Vec::new();
    for term in terms {
        let t = term.trim();
        if t.is_empty() {
            return Err(err("empty term"));
        }
        let set = |rest: &str| -> Result<std::collections::BTreeSet<String>, SelectorParseError> {
            let rest = rest.trim();
            let inner = rest
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or_else(|| err("expected (value,...) after in/notin"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let key_ok = |k: &str| !k.is_empty() && !k.contains(char::is_whitespace);
        let expr = if let Some((k, rest)) = t.split_once(" notin ") {
            Expression::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = t.split_once(" in ") {
            Expression::In(k.trim().into(), set(rest)?)
        } else if let Some((k, v)) = t.split_once("!=") {
            Expression::NotEqual(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            Expression::Equal(k.trim().into(), v.trim().into())
        } else if let Some(k) = t.strip_prefix('!') {
            Expression::DoesNotExist(k.trim().into())
        } else {
            Expression::Exists(t.into())
        };
        let key = match &expr {
            Expression::In(k, _)
            | Expression::NotIn(k, _)
            | Expression::Equal(k, _)
            | Expression::NotEqual(k, _)
            | Expression::Exists(k)
            | Expression::DoesNotExist(k) => k,
        };
        if !key_ok(key) {
            return Err(err("a term has no valid key"));
        }
        exprs.push(expr);
    }
    Ok(exprs.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_kubectl_form() {
        let s =
            parse("tier=platform, env in (prod, stage),!legacy,owner,zone notin (x),a!=b").unwrap();
        assert!(s.matches(&labels(&[
            ("tier", "platform"),
            ("env", "prod"),
            ("owner", "me")
        ])));
        assert!(!s.matches(&labels(&[
            ("tier", "platform"),
            ("env", "dev"),
            ("owner", "me")
        ])));
        assert!(!s.matches(&labels(&[
            ("tier", "platform"),
            ("env", "prod"),
            ("owner", "me"),
            ("legacy", "")
        ])));
        assert!(!s.matches(&labels(&[("tier", "platform"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[
            ("tier", "platform"),
            ("env", "prod"),
            ("owner", "me"),
            ("a", "b")
        ])));
    }

    #[test]
    fn refuses_what_would_select_everything_or_is_malformed() {
        for bad in ["", " ", "a=b,", "env in prod", "=v"] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
