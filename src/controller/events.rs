//! Kubernetes Events on a TeamAccess, each for something that happened in
//! this reconcile: Applied, DriftCorrected, Revoked, Conflict, Denied. Which
//! events to emit is decided purely from the outcomes ([`notices`]); this
//! module then publishes them.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use crate::access::naming;
use crate::access::outcome::NamespaceOutcome;
use crate::access::reasons::{EventAction, EventReason};
use crate::access::text::{first_and_more, plural};
use crate::api::teamaccess::{NamespaceState, TeamAccess};
use crate::controller::Context;

/// Namespaces an event note names before "and N more".
const MAX_NAMED: usize = 10;

/// How an event relates to earlier ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Something new each time: its own event, never folded into an earlier one.
    New,
    /// A repeat of the same thing (same reason, action and related object)
    /// counts up one event's series instead of adding events.
    Repeat,
}

/// One event to publish.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub warning: bool,
    pub reason: EventReason,
    /// An [`EventAction`], or a drift action (`RevertRules`, `Recreate`...).
    pub action: String,
    pub note: String,
    pub related: Option<ObjectReference>,
    pub series: Series,
}

fn reference(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace: namespace.map(Into::into),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn namespace_ref(name: &str) -> Option<ObjectReference> {
    Some(reference("v1", "Namespace", None, name))
}

/// The events this reconcile's outcomes call for. Conflict and Denied only on
/// the transition (against the status the TeamAccess had): a resync is not news.
pub fn notices(ta: &TeamAccess, outcomes: &[NamespaceOutcome]) -> Vec<Notice> {
    let mut out = Vec::new();
    let written: Vec<String> = outcomes
        .iter()
        .filter(|o| o.writes > 0 && o.drift.is_empty() && o.status.state == NamespaceState::Applied)
        .map(|o| o.status.name.clone())
        .collect();
    if !written.is_empty() {
        out.push(Notice {
            warning: false,
            reason: EventReason::Applied,
            action: EventAction::Apply.as_str().into(),
            note: format!(
                "applied Roles and RoleBindings in {}: {}",
                plural(written.len(), "namespace"),
                first_and_more(&written, MAX_NAMED, ", ")
            ),
            related: None,
            series: Series::New,
        });
    }
    for d in outcomes.iter().flat_map(|o| &o.drift) {
        out.push(Notice {
            warning: true,
            reason: EventReason::DriftCorrected,
            action: d.action.event_action(),
            note: d.note.clone(),
            related: Some(reference(
                "rbac.authorization.k8s.io/v1",
                d.kind.as_str(),
                Some(&d.namespace),
                &d.name,
            )),
            series: Series::Repeat,
        });
    }
    // one event however many namespaces expired: a selector over thousands
    // of namespaces must not emit thousands of events
    let expired: Vec<String> = outcomes
        .iter()
        .filter(|o| o.writes > 0 && o.status.state == NamespaceState::Expired)
        .map(|o| o.status.name.clone())
        .collect();
    if !expired.is_empty() {
        out.push(Notice {
            warning: false,
            reason: EventReason::Revoked,
            action: EventAction::Revoke.as_str().into(),
            note: format!(
                "validUntil passed; revoked access in {}: {}",
                plural(expired.len(), "namespace"),
                first_and_more(&expired, MAX_NAMED, ", ")
            ),
            related: (expired.len() == 1)
                .then(|| namespace_ref(&expired[0]))
                .flatten(),
            series: Series::New,
        });
    }
    let previous_state = |ns: &str| {
        (ta.status.as_ref())
            .and_then(|s| s.namespaces.iter().find(|n| n.name == ns))
            .map(|n| n.state)
    };
    for (state, reason) in [
        (NamespaceState::Conflict, EventReason::Conflict),
        (NamespaceState::Denied, EventReason::Denied),
    ] {
        for o in outcomes.iter().filter(|o| o.status.state == state) {
            if previous_state(&o.status.name) != Some(state) {
                out.push(Notice {
                    warning: true,
                    reason,
                    action: EventAction::Skip.as_str().into(),
                    note: format!(
                        "namespace {}: {}",
                        o.status.name,
                        o.status.message.clone().unwrap_or_default()
                    ),
                    related: namespace_ref(&o.status.name),
                    series: Series::New,
                });
            }
        }
    }
    out
}

/// A GrantExpiringSoon event for each expiry line the TeamAccess's Ready
/// message does not carry yet: once when a grant enters its warning window,
/// not on every resync (and not again after a restart).
pub fn expiry_notices(ta: &TeamAccess, expiring: &[String]) -> Vec<Notice> {
    let ready = (ta.status.iter().flat_map(|s| &s.conditions))
        .find(|c| c.type_ == crate::access::status::READY)
        .map(|c| c.message.as_str())
        .unwrap_or_default();
    (expiring.iter())
        .filter(|note| !ready.contains(note.as_str()))
        .map(|note| Notice {
            warning: true,
            reason: EventReason::GrantExpiringSoon,
            action: EventAction::Revoke.as_str().into(),
            note: format!("{note}; access ends then unless validUntil is extended"),
            related: None,
            series: Series::New,
        })
        .collect()
}

/// Publishes `notice` on `ta`. Events are for people: failing to record one
/// never fails the reconcile.
pub async fn publish(ctx: &Context, ta: &TeamAccess, notice: Notice) {
    let event = Event {
        type_: if notice.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: notice.reason.as_str().into(),
        note: Some(notice.note),
        action: notice.action,
        secondary: notice.related,
    };
    // kube's Recorder folds events with the same key into a series and keeps
    // the first note; a fresh one for each new thing keeps every note
    let fresh;
    let recorder = match notice.series {
        Series::Repeat => &ctx.recorder,
        Series::New => {
            fresh = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            &fresh
        }
    };
    let reference = ta.object_ref(&());
    let published =
        if naming::recorder_names_events(&ta.name_any(), Timestamp::now().as_nanosecond()) {
            ctx.writes
                .timed(
                    || "publishing an event".into(),
                    recorder.publish(&event, &reference),
                )
                .await
        } else {
            // no series for these: kube's Recorder cannot be told another name
            ctx.writes
                .timed(
                    || "publishing an event".into(),
                    create_named(ctx, &event, reference),
                )
                .await
        };
    match published {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(teamaccess = %ta.name_any(), error = %crate::controller::error::readable(&e), "could not publish event")
        }
        Err(e) => warn!(teamaccess = %ta.name_any(), error = %e, "could not publish event"),
    }
}

/// What kube's Recorder creates, under a name that fits (its own is the
/// TeamAccess name and a timestamp, refused for names over 236 characters).
async fn create_named(
    ctx: &Context,
    event: &Event,
    reference: ObjectReference,
) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let namespace = reference.namespace.clone().unwrap_or("default".into());
    let name = naming::event_name(
        reference.name.as_deref().unwrap_or_default(),
        now.as_nanosecond(),
    );
    let created = K8sEvent {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        event_time: Some(MicroTime(now)),
        regarding: Some(reference),
        related: event.secondary.clone(),
        reporting_controller: Some(ctx.reporter.controller.clone()),
        reporting_instance: Some(
            (ctx.reporter.instance.clone()).unwrap_or_else(|| ctx.reporter.controller.clone()),
        ),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..Default::default()
    };
    Api::<K8sEvent>::namespaced(ctx.client.clone(), &namespace)
        .create(&PostParams::default(), &created)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::compare::Kind;
    use crate::access::desired::{Plan, Target};
    use crate::access::plan::{Drift, DriftAction};
    use crate::access::tiers::Tier;
    use crate::api::teamaccess::{NamespaceStatus, TeamAccessStatus};

    fn outcome(ns: &str, plan: Plan, writes: usize) -> NamespaceOutcome {
        let t = Target {
            namespace: ns.into(),
            tier: Tier::Reader,
            plan,
        };
        let mut o = if plan == Plan::Apply {
            NamespaceOutcome::applied(&t)
        } else {
            NamespaceOutcome::not_applied(&t)
        };
        o.writes = writes;
        o
    }

    fn teamaccess(previous: &[(&str, NamespaceState)]) -> TeamAccess {
        let mut ta = crate::api::fixtures::teamaccess("x", serde_json::json!([]), false);
        ta.status = Some(TeamAccessStatus {
            namespaces: previous
                .iter()
                .map(|(n, s)| NamespaceStatus {
                    name: n.to_string(),
                    tier: None,
                    state: *s,
                    message: None,
                })
                .collect(),
            ..Default::default()
        });
        ta
    }

    #[test]
    fn thousands_of_expired_namespaces_are_one_bounded_event() {
        let outcomes: Vec<_> = (0..2000)
            .map(|i| outcome(&format!("ns{i:04}"), Plan::Expired, 2))
            .collect();
        let n = notices(&teamaccess(&[]), &outcomes);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].reason, EventReason::Revoked);
        assert!(
            n[0].note.starts_with(
                "validUntil passed; revoked access in 2000 namespaces: ns0000, ns0001"
            )
        );
        assert!(n[0].note.ends_with("and 1990 more"), "{}", n[0].note);
        assert!(n[0].note.len() < 300);
    }

    #[test]
    fn each_thing_that_happened_is_one_event() {
        let mut drifted = outcome("b", Plan::Apply, 1);
        drifted.drift.push(Drift {
            kind: Kind::RoleBinding,
            namespace: "b".into(),
            name: "teamaccess-x".into(),
            action: DriftAction::Recreate,
            note: "deleted".into(),
        });
        let mut conflict = outcome("c", Plan::Apply, 0);
        conflict.status.state = NamespaceState::Conflict;
        let outcomes = [
            outcome("a", Plan::Apply, 2),
            drifted,
            conflict,
            outcome("d", Plan::Expired, 2),
            outcome("e", Plan::Expired, 0),
            outcome("f", Plan::Apply, 0),
        ];
        let n = notices(&teamaccess(&[]), &outcomes);
        let reasons: Vec<_> = n.iter().map(|n| (n.reason, n.action.as_str())).collect();
        assert_eq!(
            reasons,
            [
                (EventReason::Applied, "Apply"),
                (EventReason::DriftCorrected, "Recreate"),
                (EventReason::Revoked, "Revoke"),
                (EventReason::Conflict, "Skip"),
            ]
        );
        assert_eq!(
            n[0].note,
            "applied Roles and RoleBindings in 1 namespace: a"
        );
        assert_eq!(n[1].series, Series::Repeat);
        // a Conflict already in the status is not news
        let again = notices(&teamaccess(&[("c", NamespaceState::Conflict)]), &outcomes);
        assert!(again.iter().all(|n| n.reason != EventReason::Conflict));
    }

    #[test]
    fn an_expiry_is_announced_once_not_on_every_resync() {
        let mut ta = crate::api::fixtures::teamaccess("x", serde_json::json!([]), false);
        let line = "grant 0 (Admin in prod) expires at 2026-12-03T00:00:00Z".to_string();
        let n = expiry_notices(&ta, std::slice::from_ref(&line));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].reason, EventReason::GrantExpiringSoon);
        assert!(n[0].note.starts_with(&line));
        // once the status carries the line, the next reconcile sends nothing
        ta.status = Some(TeamAccessStatus {
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "Conflict".into(),
                message: format!("objects ...; expiring soon: {line}"),
                observed_generation: None,
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            }],
            ..Default::default()
        });
        assert!(expiry_notices(&ta, &[line]).is_empty());
    }
}
