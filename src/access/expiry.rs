//! Time-bound grants as people see them: which tiers are in effect now,
//! which grants grant nothing (expired, not yet valid), and which expire
//! soon enough to say so before they do. Pure.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::access::desired::{Window, window};
use crate::access::text::first_and_more;
use crate::access::tiers::Tier;
use crate::api::teamaccess::{Grant, GrantState, InactiveGrant, TeamAccess};

/// The default `--expiry-warning`: a day's notice.
pub const DEFAULT_WARNING: Duration = Duration::from_secs(24 * 3600);

/// What a grant reaches, for messages: its namespaces, or its selector.
pub fn reaches(grant: &Grant) -> String {
    match (&grant.namespaces, &grant.namespace_selector) {
        (Some(ns), _) if !ns.is_empty() => first_and_more(ns, 5, ", "),
        (_, Some(sel)) => match sel.to_selector() {
            Some(s) if !s.to_string().is_empty() => format!("namespaces matching {s}"),
            _ => "every namespace (empty selector)".into(),
        },
        _ => "no namespace".into(),
    }
}

/// The tiers of grants in effect at `now`, highest first, once each.
pub fn tiers_in_effect(ta: &TeamAccess, now: Timestamp) -> Vec<Tier> {
    let mut tiers: Vec<Tier> = (ta.spec.grants.iter())
        .filter(|g| window(g, now) == Window::Active)
        .map(|g| g.tier)
        .collect();
    tiers.sort_by(|a, b| b.cmp(a));
    tiers.dedup();
    tiers
}

/// Grants outside their window at `now`, in spec order.
pub fn inactive_grants(ta: &TeamAccess, now: Timestamp) -> Vec<InactiveGrant> {
    (ta.spec.grants.iter().enumerate())
        .filter_map(|(i, g)| {
            let (state, at) = match window(g, now) {
                Window::Active => return None,
                Window::Expired => (GrantState::Expired, g.valid_until.clone()?),
                Window::NotYetValid => (GrantState::NotYetValid, g.valid_from.clone()?),
            };
            Some(InactiveGrant {
                index: i as u32,
                tier: g.tier,
                reaches: reaches(g),
                state,
                at,
            })
        })
        .collect()
}

/// A grant in effect whose end is near.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expiring {
    pub index: usize,
    pub tier: Tier,
    pub reaches: String,
    pub valid_until: Timestamp,
}

impl Expiring {
    /// One line for an event and the Ready message (absolute time, so an
    /// unchanged status stays unchanged).
    pub fn note(&self) -> String {
        format!(
            "grant {} ({} in {}) expires at {}",
            self.index,
            self.tier.as_str(),
            self.reaches,
            self.valid_until
        )
    }
}

/// Grants in effect that end within `warning` of `now`, and that were valid
/// for longer than `warning` (a two-hour just-in-time grant is not news):
/// valid since their validFrom, or else since the TeamAccess was created.
pub fn expiring_soon(ta: &TeamAccess, now: Timestamp, warning: Duration) -> Vec<Expiring> {
    let warning = SignedDuration::try_from(warning).unwrap_or(SignedDuration::MAX);
    let created = ta.metadata.creation_timestamp.as_ref().map(|t| t.0);
    (ta.spec.grants.iter().enumerate())
        .filter(|(_, g)| window(g, now) == Window::Active)
        .filter_map(|(i, g)| {
            let until = g.valid_until.as_ref()?.0;
            let start = g.valid_from.as_ref().map(|t| t.0).or(created)?;
            let soon = until.duration_since(now) <= warning;
            let long_lived = until.duration_since(start) > warning;
            (soon && long_lived).then(|| Expiring {
                index: i,
                tier: g.tier,
                reaches: reaches(g),
                valid_until: until,
            })
        })
        .collect()
}

/// When the next grant enters its warning window (to requeue then).
pub fn next_warning(ta: &TeamAccess, now: Timestamp, warning: Duration) -> Option<Timestamp> {
    let warning = SignedDuration::try_from(warning).ok()?;
    (ta.spec.grants.iter())
        .filter_map(|g| g.valid_until.as_ref().map(|t| t.0))
        .filter_map(|until| until.checked_sub(warning).ok())
        .filter(|t| *t > now)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn time(s: &str) -> Time {
        Time(s.parse().expect("an RFC 3339 time"))
    }

    fn ta(created: &str) -> TeamAccess {
        let mut ta = crate::api::fixtures::teamaccess(
            "x",
            json!([
                {"tier": "Admin", "namespaces": ["prod"], "validUntil": "2026-12-03T00:00:00Z"},
                {"tier": "Writer", "namespaces": ["dev"], "validFrom": "2026-12-02T20:00:00Z", "validUntil": "2026-12-02T22:00:00Z"},
                {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "pay"}}},
                {"tier": "Admin", "namespaces": ["old"], "validUntil": "2026-11-01T00:00:00Z"},
                {"tier": "Writer", "namespaces": ["later"], "validFrom": "2027-01-01T00:00:00Z"}
            ]),
            false,
        );
        ta.metadata.creation_timestamp = Some(time(created));
        ta
    }

    #[test]
    fn only_tiers_in_effect_now_are_shown() {
        let now = time("2026-12-02T12:00:00Z").0;
        assert_eq!(
            tiers_in_effect(&ta("2026-10-01T00:00:00Z"), now),
            [Tier::Admin, Tier::Reader]
        );
    }

    #[test]
    fn expired_and_not_yet_valid_grants_are_named_with_their_time() {
        let now = time("2026-12-02T12:00:00Z").0;
        let inactive = inactive_grants(&ta("2026-10-01T00:00:00Z"), now);
        let seen: Vec<_> = (inactive.iter())
            .map(|g| {
                (
                    g.index,
                    g.tier,
                    g.reaches.as_str(),
                    g.state,
                    g.at.0.to_string(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    1,
                    Tier::Writer,
                    "dev",
                    GrantState::NotYetValid,
                    "2026-12-02T20:00:00Z".into()
                ),
                (
                    3,
                    Tier::Admin,
                    "old",
                    GrantState::Expired,
                    "2026-11-01T00:00:00Z".into()
                ),
                (
                    4,
                    Tier::Writer,
                    "later",
                    GrantState::NotYetValid,
                    "2027-01-01T00:00:00Z".into()
                ),
            ]
        );
    }

    #[test]
    fn a_long_grant_near_its_end_is_news_a_short_one_is_not() {
        let warning = DEFAULT_WARNING;
        // 12 h before the Admin grant ends; it has been valid for two months
        let now = time("2026-12-02T12:00:00Z").0;
        let soon = expiring_soon(&ta("2026-10-01T00:00:00Z"), now, warning);
        assert_eq!(soon.len(), 1);
        assert_eq!(
            soon[0].note(),
            "grant 0 (Admin in prod) expires at 2026-12-03T00:00:00Z"
        );
        // the two-hour Writer grant, in effect and ending in an hour: not news
        let now = time("2026-12-02T21:00:00Z").0;
        let soon = expiring_soon(&ta("2026-10-01T00:00:00Z"), now, warning);
        assert_eq!(soon.iter().map(|e| e.index).collect::<Vec<_>>(), [0]);
        // a TeamAccess created 6 h ago with a 12 h Admin grant: not news either
        let soon = expiring_soon(&ta("2026-12-02T15:00:00Z"), now, warning);
        assert!(soon.is_empty(), "{soon:?}");
        // outside the window: nothing, and the requeue comes at its start
        let now = time("2026-12-01T12:00:00Z").0;
        assert!(expiring_soon(&ta("2026-10-01T00:00:00Z"), now, warning).is_empty());
        assert_eq!(
            next_warning(&ta("2026-10-01T00:00:00Z"), now, warning),
            // the short grant's window starts first; its reconcile finds nothing to say
            Some(time("2026-12-01T22:00:00Z").0)
        );
    }
}
