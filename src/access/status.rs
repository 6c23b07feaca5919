//! Status from what was applied: conditions as kstatus, Flux and Argo CD read
//! them, exact counts, and a bounded per-namespace list.
//!
//! Conventions (Kubernetes API conventions + kstatus):
//! - `Ready` is always present. True when everything the operator can do is
//!   done, which includes named namespaces that do not exist yet, protected
//!   namespaces matched by a selector, and grants outside their window: none
//!   of those should hold up a GitOps pipeline.
//! - `Reconciling` and `Stalled` are "abnormal-true": present only when True.
//!   Stalled means a person must act (Conflict, Denied, lasting Forbidden).
//! - `lastTransitionTime` changes only when a condition's status changes, so
//!   an unchanged outcome is an unchanged status, and no write.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::teamaccess::{NamespaceState, NamespaceStatus, Summary, TeamAccessStatus};

/// At most this many per-namespace entries; the summary stays exact.
pub const MAX_NAMESPACE_ENTRIES: usize = 100;
/// The longest message of a namespace entry, and of a condition: an
/// escalation refusal lists every rule, and 100 of those would take the
/// status near the object size limit.
pub const MAX_NAMESPACE_MESSAGE: usize = 512;
pub const MAX_CONDITION_MESSAGE: usize = 2048;

pub use crate::access::reasons::condition::{
    NAMESPACES_PENDING, READY, RECONCILING, STALLED, SUSPENDED,
};
use crate::access::reasons::reason;
use crate::access::text::{first_and_more, plural};

/// What one reconcile found and did.
#[derive(Debug, Default)]
pub struct Observed {
    pub generation: Option<i64>,
    pub suspended: bool,
    /// One entry per targeted namespace, any order.
    pub namespaces: Vec<NamespaceStatus>,
    pub next_transition: Option<Timestamp>,
    /// The API server refuses us (lacking permission) for longer than the
    /// grace period: the server's message.
    pub forbidden: Option<String>,
    /// Tiers the spec grants.
    pub tiers: Vec<crate::access::tiers::Tier>,
    /// Failed writes have lasted the grace period: Stalled, not Reconciling.
    pub failing_past_grace: bool,
    /// Namespaces where an admission policy changes what we write.
    pub mutated: Vec<String>,
    /// Grants outside their validity window, for the status.
    pub inactive_grants: Vec<crate::api::teamaccess::InactiveGrant>,
    /// Grants near their validUntil, one line each (GrantExpiringSoon).
    pub expiring: Vec<String>,
}

/// `message` cut to at most `max` bytes at a character boundary, saying how
/// much was left out.
pub fn bounded(message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let suffix = |n: usize| format!("... ({n} more bytes)");
    let mut cut = max.saturating_sub(suffix(message.len()).len());
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{}", &message[..cut], suffix(message.len() - cut))
}

/// While suspended, a namespace whose access was narrowed keeps saying so
/// after the narrowing write (the next reconcile finds nothing left to do,
/// and would otherwise report nothing): until the suspension ends.
fn keep_narrowed_notes(entries: &mut [NamespaceStatus], previous: Option<&TeamAccessStatus>) {
    let Some(previous) = previous else { return };
    for e in entries
        .iter_mut()
        .filter(|e| e.state == NamespaceState::Applied && e.message.is_none())
    {
        if let Some(before) = (previous.namespaces.iter())
            .find(|p| p.name == e.name && p.state == NamespaceState::Applied)
            .and_then(|p| p.message.as_ref())
            .filter(|m| m.starts_with(crate::access::plan::NARROWED))
        {
            e.message = Some(before.clone());
        }
    }
}

/// `t` without its fraction of a second, as the API server stores a Time.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn examples(entries: &[&NamespaceStatus]) -> String {
    let described: Vec<String> = entries
        .iter()
        .map(|e| match &e.message {
            Some(m) => format!("{}: {m}", e.name),
            None => e.name.clone(),
        })
        .collect();
    first_and_more(&described, 3, "; ")
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        // set below, from the previous status where the status did not change
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// The status to write, given what was observed and the status already there.
pub fn compute(
    observed: Observed,
    previous: Option<&TeamAccessStatus>,
    now: Timestamp,
) -> TeamAccessStatus {
    let mut entries = observed.namespaces;
    if observed.suspended {
        keep_narrowed_notes(&mut entries, previous);
    }
    // Applied last, so the bounded list keeps every other state it can
    // (Skipped, Expired and NotYetValid are declared after Applied)
    let key = |e: &NamespaceStatus| (e.state == NamespaceState::Applied, e.state);
    entries.sort_by(|a, b| (key(a), &a.name).cmp(&(key(b), &b.name)));
    let count =
        |f: &dyn Fn(NamespaceState) -> bool| entries.iter().filter(|e| f(e.state)).count() as u32;
    use NamespaceState::*;
    let summary = Summary {
        targeted: entries.len() as u32,
        applied: count(&|s| s == Applied),
        pending: count(&|s| s == Pending),
        skipped: count(&|s| matches!(s, Skipped | Expired | NotYetValid)),
        failed: count(&|s| matches!(s, Conflict | Denied | Error)),
    };
    let with = |s: NamespaceState| entries.iter().filter(|e| e.state == s).collect::<Vec<_>>();
    let (conflicts, denied, errors, pending) =
        (with(Conflict), with(Denied), with(Error), with(Pending));
    let g = observed.generation;

    let stalled = if !conflicts.is_empty() {
        Some((
            reason::CONFLICT,
            format!(
                "objects this TeamAccess does not own hold its names; they are left untouched. Rename or remove them: {}",
                examples(&conflicts)
            ),
        ))
    } else if !denied.is_empty() {
        Some((
            reason::DENIED,
            format!(
                "protected namespaces are never written; remove them from the grants: {}",
                examples(&denied)
            ),
        ))
    } else if !observed.mutated.is_empty() {
        Some((
            reason::MUTATED_ON_ADMISSION,
            format!(
                "an admission policy or webhook changes what the operator writes, so its writes back off; exempt the operator's ServiceAccount from it: {}",
                first_and_more(&observed.mutated, 3, ", ")
            ),
        ))
    } else if let Some(m) = &observed.forbidden {
        Some((
            reason::FORBIDDEN,
            format!("the API server refuses the operator (check its ClusterRole): {m}"),
        ))
    } else if observed.failing_past_grace && !errors.is_empty() {
        Some((
            reason::PERSISTENT_ERROR,
            format!(
                "writes keep failing; retried with backoff: {}",
                examples(&errors)
            ),
        ))
    } else {
        None
    };
    // kstatus reads whichever abnormal condition comes first: never both
    let reconciling = (stalled.is_none() && !errors.is_empty())
        .then(|| (reason::RETRYING_AFTER_ERROR, examples(&errors)));

    let mut conditions = Vec::new();
    let ready = match (&stalled, &reconciling) {
        (Some((reason, message)), _) => condition(READY, false, reason, message.clone(), g),
        (None, Some((reason, message))) => condition(READY, false, reason, message.clone(), g),
        (None, None) if observed.suspended => condition(
            READY,
            true,
            reason::SUSPENDED,
            format!(
                "suspended: Roles and RoleBindings are not created or updated; {} of {} applied",
                summary.applied,
                plural(summary.targeted as usize, "namespace")
            ),
            g,
        ),
        (None, None) if summary.pending > 0 => condition(
            READY,
            true,
            reason::APPLIED_WITH_PENDING,
            format!(
                "{} applied; {} named but not created yet, applied when created",
                plural(summary.applied as usize, "namespace"),
                plural(summary.pending as usize, "namespace")
            ),
            g,
        ),
        (None, None) => condition(
            READY,
            true,
            reason::APPLIED,
            format!("{} applied", plural(summary.applied as usize, "namespace")),
            g,
        ),
    };
    let mut ready = ready;
    // on every Ready, True or not: the event is sent once per line it lacks
    if !observed.expiring.is_empty() {
        ready.message = format!(
            "{}; expiring soon: {}",
            ready.message,
            first_and_more(&observed.expiring, 3, "; ")
        );
    }
    conditions.push(ready);
    if let Some((reason, message)) = reconciling {
        conditions.push(condition(RECONCILING, true, reason, message, g));
    }
    if let Some((reason, message)) = stalled {
        conditions.push(condition(STALLED, true, reason, message, g));
    }
    if !pending.is_empty() {
        conditions.push(condition(
            NAMESPACES_PENDING,
            true,
            reason::NAMESPACE_NOT_FOUND,
            format!(
                "named namespaces that do not exist yet: {}",
                examples(&pending)
            ),
            g,
        ));
    }
    if observed.suspended {
        conditions.push(condition(
            SUSPENDED,
            true,
            reason::SUSPENDED,
            "spec.suspend is true".into(),
            g,
        ));
    }

    let before: BTreeMap<&str, &Condition> = previous
        .map(|p| p.conditions.iter().map(|c| (c.type_.as_str(), c)).collect())
        .unwrap_or_default();
    for c in &mut conditions {
        c.last_transition_time = match before.get(c.type_.as_str()) {
            Some(old) if old.status == c.status => old.last_transition_time.clone(),
            _ => Time(now),
        };
    }

    for c in &mut conditions {
        c.message = bounded(std::mem::take(&mut c.message), MAX_CONDITION_MESSAGE);
    }
    entries.truncate(MAX_NAMESPACE_ENTRIES);
    for e in &mut entries {
        e.message = e.message.take().map(|m| bounded(m, MAX_NAMESPACE_MESSAGE));
    }
    let mut inactive_grants = observed.inactive_grants;
    inactive_grants.truncate(64);
    let mut tiers = observed.tiers;
    tiers.sort_by(|a, b| b.cmp(a));
    tiers.dedup();
    let tiers = (!tiers.is_empty()).then(|| {
        tiers
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(",")
    });
    TeamAccessStatus {
        observed_generation: g,
        conditions,
        tiers,
        progress: Some(format!("{}/{}", summary.applied, summary.targeted)),
        summary: Some(summary),
        // metav1.Time holds whole seconds: a fractional boundary kept as is
        // would never compare equal to what the server stored, and every
        // resync would write status again
        next_transition_time: observed.next_transition.map(whole_seconds).map(Time),
        namespaces: entries,
        inactive_grants,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::tiers::Tier;

    fn entry(name: &str, state: NamespaceState) -> NamespaceStatus {
        NamespaceStatus {
            name: name.into(),
            tier: Some(Tier::Reader),
            state,
            message: None,
        }
    }

    fn cond<'a>(s: &'a TeamAccessStatus, t: &str) -> Option<&'a Condition> {
        s.conditions.iter().find(|c| c.type_ == t)
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn pending_namespaces_are_ready_with_a_reason() {
        let s = compute(
            Observed {
                generation: Some(3),
                namespaces: vec![
                    entry("a", NamespaceState::Applied),
                    entry("b", NamespaceState::Pending),
                ],
                ..Default::default()
            },
            None,
            at("2026-11-23T00:00:00Z"),
        );
        let ready = cond(&s, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "AppliedWithPending")
        );
        assert_eq!(cond(&s, NAMESPACES_PENDING).unwrap().status, "True");
        assert!(cond(&s, RECONCILING).is_none() && cond(&s, STALLED).is_none());
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.progress.as_deref(), Some("1/2"));
        assert_eq!(s.summary.as_ref().unwrap().pending, 1);
    }

    #[test]
    fn errors_reconcile_then_stall_past_the_grace_and_never_both() {
        let failing = |past_grace, conflict: bool| {
            let mut namespaces = vec![entry("a", NamespaceState::Error)];
            if conflict {
                namespaces.push(entry("b", NamespaceState::Conflict));
            }
            compute(
                Observed {
                    namespaces,
                    failing_past_grace: past_grace,
                    ..Default::default()
                },
                None,
                Timestamp::UNIX_EPOCH,
            )
        };
        let s = failing(false, false);
        assert_eq!(
            cond(&s, RECONCILING).unwrap().reason,
            reason::RETRYING_AFTER_ERROR
        );
        assert!(cond(&s, STALLED).is_none());
        let s = failing(true, false);
        assert_eq!(cond(&s, STALLED).unwrap().reason, reason::PERSISTENT_ERROR);
        assert!(cond(&s, RECONCILING).is_none());
        // a Conflict beside an error: Stalled (Conflict), still not both
        let s = failing(false, true);
        assert_eq!(cond(&s, STALLED).unwrap().reason, reason::CONFLICT);
        assert!(cond(&s, RECONCILING).is_none());
        assert_eq!(cond(&s, READY).unwrap().status, "False");
    }

    #[test]
    fn a_narrowing_while_suspended_stays_in_status_until_unsuspended() {
        let narrowed = NamespaceStatus {
            message: Some(format!(
                "{} (subjects) to what the spec grants now",
                crate::access::plan::NARROWED
            )),
            ..entry("a", NamespaceState::Applied)
        };
        let observed = |suspended| Observed {
            suspended,
            namespaces: vec![entry("a", NamespaceState::Applied)],
            ..Default::default()
        };
        let first = compute(
            Observed {
                suspended: true,
                namespaces: vec![narrowed.clone()],
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        // the next reconcile has nothing left to narrow: the note stays
        let next = compute(observed(true), Some(&first), Timestamp::UNIX_EPOCH);
        assert_eq!(next.namespaces[0].message, narrowed.message);
        // unsuspended, it goes
        let after = compute(observed(false), Some(&next), Timestamp::UNIX_EPOCH);
        assert_eq!(after.namespaces[0].message, None);
    }

    #[test]
    fn messages_are_bounded_far_below_object_size_limits() {
        // an escalation refusal lists every rule; say 20 KiB of them, in
        // all 100 entries the status keeps
        let huge = "attempting to grant RBAC permissions not currently held: {APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"get\"]} ".repeat(200);
        let namespaces = (0..150)
            .map(|i| NamespaceStatus {
                message: Some(format!("Role: {huge}")),
                ..entry(&format!("ns-{i:03}"), NamespaceState::Error)
            })
            .collect();
        let s = compute(
            Observed {
                namespaces,
                forbidden: Some(huge.clone()),
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.namespaces.len(), MAX_NAMESPACE_ENTRIES);
        for e in &s.namespaces {
            let m = e.message.as_deref().unwrap();
            assert!(m.len() <= MAX_NAMESPACE_MESSAGE, "{}", m.len());
            assert!(m.ends_with("more bytes)"), "says it was cut: {m}");
        }
        assert!(
            s.conditions
                .iter()
                .all(|c| c.message.len() <= MAX_CONDITION_MESSAGE)
        );
        let size = serde_json::to_vec(&s).unwrap().len();
        assert!(size < 128 * 1024, "status of {size} bytes");
        // a short message is left alone; a cut never splits a character
        assert_eq!(bounded("short".into(), 10), "short");
        let cut = bounded("é".repeat(100), 40);
        assert!(cut.len() <= 40 && cut.starts_with('é'), "{cut}");
    }

    #[test]
    fn conflict_and_denied_stall_and_errors_reconcile() {
        let stalled = compute(
            Observed {
                namespaces: vec![
                    entry("a", NamespaceState::Applied),
                    entry("b", NamespaceState::Conflict),
                ],
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(cond(&stalled, STALLED).unwrap().reason, "Conflict");
        assert!(cond(&stalled, STALLED).unwrap().message.contains('b'));
        assert_eq!(cond(&stalled, READY).unwrap().status, "False");
        let denied = compute(
            Observed {
                namespaces: vec![entry("kube-system", NamespaceState::Denied)],
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(cond(&denied, READY).unwrap().reason, "Denied");
        let retrying = compute(
            Observed {
                namespaces: vec![entry("a", NamespaceState::Error)],
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(cond(&retrying, RECONCILING).unwrap().status, "True");
        assert_eq!(cond(&retrying, READY).unwrap().status, "False");
        assert!(cond(&retrying, STALLED).is_none());
    }

    #[test]
    fn skipped_expired_and_not_yet_valid_are_ready() {
        use NamespaceState::*;
        let s = compute(
            Observed {
                namespaces: vec![
                    entry("a", Skipped),
                    entry("b", Expired),
                    entry("c", NotYetValid),
                ],
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(cond(&s, READY).unwrap().reason, "Applied");
        assert_eq!(s.summary.unwrap().skipped, 3);
    }

    #[test]
    fn the_list_is_bounded_problems_first_and_the_counts_exact() {
        let mut namespaces: Vec<_> = (0..500)
            .map(|i| entry(&format!("ns-{i:03}"), NamespaceState::Applied))
            .collect();
        namespaces.push(entry("zzz", NamespaceState::Conflict));
        let s = compute(
            Observed {
                namespaces,
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.namespaces.len(), MAX_NAMESPACE_ENTRIES);
        assert_eq!(s.namespaces[0].name, "zzz");
        let sum = s.summary.unwrap();
        assert_eq!((sum.targeted, sum.applied, sum.failed), (501, 500, 1));
    }

    #[test]
    fn the_bounded_list_keeps_every_state_but_applied_first() {
        use NamespaceState::*;
        let mut namespaces: Vec<_> = (0..500)
            .map(|i| entry(&format!("ns-{i:03}"), Applied))
            .collect();
        for (name, state) in [("s", Skipped), ("e", Expired), ("n", NotYetValid)] {
            namespaces.push(entry(name, state));
        }
        let s = compute(
            Observed {
                namespaces,
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        let states: Vec<_> = (s.namespaces.iter().take(4))
            .map(|e| (e.name.as_str(), e.state))
            .collect();
        assert_eq!(
            states,
            [
                ("s", Skipped),
                ("e", Expired),
                ("n", NotYetValid),
                ("ns-000", Applied)
            ]
        );
        assert_eq!(s.summary.unwrap().skipped, 3);
    }

    #[test]
    fn an_unchanged_outcome_is_an_unchanged_status() {
        let observed = || Observed {
            generation: Some(1),
            namespaces: vec![entry("a", NamespaceState::Applied)],
            ..Default::default()
        };
        let first = compute(observed(), None, at("2026-01-01T00:00:00Z"));
        let second = compute(observed(), Some(&first), at("2026-06-01T00:00:00Z"));
        assert_eq!(first, second);
        // a status change moves the transition time
        let third = compute(
            Observed {
                namespaces: vec![entry("a", NamespaceState::Conflict)],
                ..observed()
            },
            Some(&second),
            at("2026-07-01T00:00:00Z"),
        );
        assert_eq!(
            cond(&third, READY).unwrap().last_transition_time.0,
            at("2026-07-01T00:00:00Z")
        );
    }

    #[test]
    fn suspended_is_ready_and_says_so() {
        let s = compute(
            Observed {
                generation: Some(7),
                suspended: true,
                namespaces: vec![entry("a", NamespaceState::Applied)],
                ..Default::default()
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(cond(&s, READY).unwrap().reason, "Suspended");
        assert_eq!(cond(&s, SUSPENDED).unwrap().status, "True");
        assert_eq!(s.observed_generation, Some(7));
    }

    #[test]
    fn a_fractional_boundary_round_trips_to_an_equal_status() {
        let boundary: Timestamp = "2026-12-01T00:00:00.75Z".parse().unwrap();
        let now: Timestamp = "2026-11-30T00:00:00.5Z".parse().unwrap();
        let observed = || Observed {
            generation: Some(1),
            next_transition: Some(boundary),
            ..Default::default()
        };
        let first = compute(observed(), None, now);
        // what the API server hands back: whole seconds
        let stored: TeamAccessStatus =
            serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap();
        let again = compute(observed(), Some(&stored), now);
        assert_eq!(
            Some(&again),
            Some(&stored),
            "a resync must not write status"
        );
        assert_eq!(
            again.next_transition_time.map(|t| t.0.to_string()),
            Some("2026-12-01T00:00:00Z".to_string())
        );
    }
}
