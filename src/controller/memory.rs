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
    failing: Mutex<HashMap<String, Failing>>,
    /// (TeamAccess UID, namespace) whose writes an admission policy changes:
    /// not written again before the time, doubling per attempt.
    mutated: Mutex<HashMap<(String, String), (Timestamp, u32)>>,
    applied: Mutex<HashMap<String, HashSet<String>>>,
    /// While suspended: namespaces whose access was narrowed, with the note.
    /// The status keeps it too, but the TeamAccess a reconcile reads may not
    /// yet carry the status the previous one wrote.
    narrowed: Mutex<HashMap<String, HashMap<String, String>>>,
}

/// Since when, and for how many reconciles in a row, some write of this
/// TeamAccess has failed.
#[derive(Clone, Copy, Debug)]
struct Failing {
    since: Timestamp,
    reconciles: u32,
}

/// What the status and the requeue make of failed writes that persist.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Persisting {
    /// Some write has failed for the grace period: Stalled, not Reconciling.
    pub past_grace: bool,
    /// How many reconciles in a row had a failed write (0: none now).
    pub reconciles: u32,
}

/// The first retry after a failed write, doubled per failing reconcile.
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

impl Persisting {
    /// When to retry: 5 s, then doubling, at most 5 min. None: nothing failed.
    pub fn retry_after(self) -> Option<Duration> {
        let n = self.reconciles.checked_sub(1)?;
        Some((RETRY_FIRST * 2u32.saturating_pow(n.min(16))).min(RETRY_MAX))
    }
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

    /// Failed writes (a revocation refused by a failing webhook, a timeout)
    /// are retried with backoff; once they have lasted the grace period the
    /// TeamAccess is Stalled, so a person looks.
    pub fn failures(
        &self,
        uid: &str,
        outcomes: &[NamespaceOutcome],
        now: Timestamp,
        grace: Duration,
    ) -> Persisting {
        let failed = outcomes.iter().any(NamespaceOutcome::needs_retry);
        let mut failing = self.failing.lock().expect("not poisoned");
        if !failed {
            failing.remove(uid);
            return Persisting::default();
        }
        let f = failing.entry(uid.to_string()).or_insert(Failing {
            since: now,
            reconciles: 0,
        });
        f.reconciles = f.reconciles.saturating_add(1);
        Persisting {
            past_grace: past_grace(f.since, now, grace),
            reconciles: f.reconciles,
        }
    }

    /// Until when writes in `namespace` wait after an admission policy
    /// changed what we wrote there (None: they may go ahead).
    pub fn held_off(&self, uid: &str, namespace: &str, now: Timestamp) -> Option<Timestamp> {
        let mutated = self.mutated.lock().expect("not poisoned");
        let (until, _) = mutated.get(&(uid.to_string(), namespace.to_string()))?;
        (*until > now).then_some(*until)
    }

    /// Our write in `namespace` came back changed: wait before the next one.
    pub fn mutated(&self, uid: &str, namespace: &str, now: Timestamp) {
        let mut mutated = self.mutated.lock().expect("not poisoned");
        let entry = mutated
            .entry((uid.to_string(), namespace.to_string()))
            .or_insert((now, 0));
        entry.1 = entry.1.saturating_add(1);
        let wait = (RETRY_FIRST * 2u32.saturating_pow(entry.1.min(16) - 1)).min(RETRY_MAX);
        entry.0 = now + k8s_openapi::jiff::SignedDuration::try_from(wait).unwrap_or_default();
    }

    /// Our write in `namespace` was stored as written.
    pub fn admitted(&self, uid: &str, namespace: &str) {
        (self.mutated.lock().expect("not poisoned"))
            .remove(&(uid.to_string(), namespace.to_string()));
    }

    /// Remembers the narrowing notes of this reconcile (while suspended) and
    /// gives a note back to namespaces that report none now; forgets them all
    /// once the TeamAccess is no longer suspended.
    pub fn narrowed_notes(&self, uid: &str, suspended: bool, outcomes: &mut [NamespaceOutcome]) {
        let mut all = self.narrowed.lock().expect("not poisoned");
        if !suspended {
            all.remove(uid);
            return;
        }
        let notes = all.entry(uid.to_string()).or_default();
        for o in outcomes
            .iter_mut()
            .filter(|o| o.status.state == NamespaceState::Applied)
        {
            match &o.status.message {
                Some(m) if m.starts_with(crate::access::plan::NARROWED) => {
                    notes.insert(o.status.name.clone(), m.clone());
                }
                Some(_) => {}
                None => o.status.message = notes.get(&o.status.name).cloned(),
            }
        }
    }

    /// The TeamAccess is gone: nothing to remember.
    pub fn forget(&self, uid: &str) {
        self.applied.lock().expect("not poisoned").remove(uid);
        self.failing.lock().expect("not poisoned").remove(uid);
        self.narrowed.lock().expect("not poisoned").remove(uid);
        (self.mutated.lock().expect("not poisoned")).retain(|(u, _), _| u != uid);
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
    fn failed_writes_back_off_and_stall_past_the_grace_period() {
        let memory = Memory::default();
        let grace = Duration::from_secs(30);
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + k8s_openapi::jiff::SignedDuration::from_secs(s);
        let failed = [forbidden("a")];
        let first = memory.failures("u", &failed, t0, grace);
        assert_eq!(
            (first.past_grace, first.retry_after()),
            (false, Some(RETRY_FIRST))
        );
        let second = memory.failures("u", &failed, at(5), grace);
        assert_eq!(second.retry_after(), Some(RETRY_FIRST * 2));
        assert!(memory.failures("u", &failed, at(30), grace).past_grace);
        for s in 31..60 {
            memory.failures("u", &failed, at(s), grace);
        }
        assert_eq!(
            memory.failures("u", &failed, at(61), grace).retry_after(),
            Some(RETRY_MAX)
        );
        // a reconcile without failures ends it
        assert_eq!(
            memory.failures("u", &[], at(62), grace),
            Persisting::default()
        );
        assert_eq!(Persisting::default().retry_after(), None);
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
