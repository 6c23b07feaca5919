//! What this process remembers between reconciles of one TeamAccess (by
//! UID): where it applied objects (so a deleted one is drift, not a first
//! apply), and since when the API server has refused it (Forbidden grace).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::access::outcome::NamespaceOutcome;
use crate::api::teamaccess::{NamespaceState, TeamAccess};

#[derive(Default)]
pub struct Memory {
    forbidden_since: Mutex<HashMap<String, Timestamp>>,
    applied: Mutex<HashMap<String, HashSet<String>>>,
}

impl Memory {
    /// Namespaces where this TeamAccess had its objects: this process's
    /// memory, and after a restart the last status.
    pub fn applied_before(&self, ta: &TeamAccess, uid: &str) -> HashSet<String> {
        let mut set = (self.applied.lock().expect("not poisoned").get(uid))
            .cloned()
            .unwrap_or_default();
        set.extend(
            (ta.status.iter().flat_map(|s| &s.namespaces))
                .filter(|n| n.state == NamespaceState::Applied)
                .map(|n| n.name.clone()),
        );
        set
    }

    pub fn remember_applied(&self, uid: &str, outcomes: &[NamespaceOutcome]) {
        let applied = outcomes
            .iter()
            .filter(|o| o.status.state == NamespaceState::Applied && !o.gone)
            .map(|o| o.status.name.clone())
            .collect();
        (self.applied.lock().expect("not poisoned")).insert(uid.to_string(), applied);
    }

    /// A Forbidden answer is retried for the grace period (RBAC takes a
    /// moment to propagate after install); past it, the server's message,
    /// to stall on.
    pub fn forbidden_past_grace(
        &self,
        uid: &str,
        outcomes: &[NamespaceOutcome],
        now: Timestamp,
        grace: Duration,
    ) -> Option<String> {
        let forbidden = outcomes.iter().find_map(|o| o.forbidden.clone());
        let mut since = self.forbidden_since.lock().expect("not poisoned");
        match forbidden {
            None => {
                since.remove(uid);
                None
            }
            Some(message) => {
                let first = *since.entry(uid.to_string()).or_insert(now);
                past_grace(first, now, grace).then_some(message)
            }
        }
    }

    /// The TeamAccess is gone: nothing to remember.
    pub fn forget(&self, uid: &str) {
        self.applied.lock().expect("not poisoned").remove(uid);
        self.forbidden_since
            .lock()
            .expect("not poisoned")
            .remove(uid);
    }
}

/// Whether a refusal first seen at `first` has lasted the grace period.
pub fn past_grace(first: Timestamp, now: Timestamp, grace: Duration) -> bool {
    now.duration_since(first).unsigned_abs() >= grace
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::desired::{Plan, Target};
    use crate::access::tiers::Tier;

    fn forbidden(ns: &str) -> NamespaceOutcome {
        let mut o = NamespaceOutcome::applied(&Target {
            namespace: ns.into(),
            tier: Tier::Reader,
            plan: Plan::Apply,
        });
        o.failed("Role: forbidden".into(), Some("cannot escalate".into()));
        o
    }

    #[test]
    fn forbidden_stalls_only_after_the_grace_period_and_resets_when_it_ends() {
        let memory = Memory::default();
        let grace = Duration::from_secs(30);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + k8s_openapi::jiff::SignedDuration::from_secs(s);
        let refused = [forbidden("a")];
        assert_eq!(memory.forbidden_past_grace("u", &refused, t0, grace), None);
        assert_eq!(
            memory.forbidden_past_grace("u", &refused, at(29), grace),
            None
        );
        assert_eq!(
            memory
                .forbidden_past_grace("u", &refused, at(30), grace)
                .as_deref(),
            Some("cannot escalate")
        );
        // another TeamAccess has its own clock
        assert_eq!(
            memory.forbidden_past_grace("v", &refused, at(30), grace),
            None
        );
        // a reconcile without refusal resets the clock
        assert_eq!(memory.forbidden_past_grace("u", &[], at(31), grace), None);
        assert_eq!(
            memory.forbidden_past_grace("u", &refused, at(32), grace),
            None
        );
    }

    #[test]
    fn applied_namespaces_are_remembered_until_forgotten() {
        let memory = Memory::default();
        let ta = crate::api::fixtures::teamaccess("x", serde_json::json!([]), false);
        let applied = NamespaceOutcome::applied(&Target {
            namespace: "a".into(),
            tier: Tier::Reader,
            plan: Plan::Apply,
        });
        memory.remember_applied("u", &[applied, forbidden("b")]);
        assert_eq!(
            memory.applied_before(&ta, "u"),
            HashSet::from(["a".to_string()])
        );
        memory.forget("u");
        assert!(memory.applied_before(&ta, "u").is_empty());
    }
}
