//! One reconcile of one TeamAccess, as its steps: gather what exists, compute
//! what should exist and the writes that get there (pure, in
//! [`crate::access`]), execute them (grants, then revocations), tell people,
//! write status from what was applied, requeue.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use tracing::{info, warn};

use crate::access::desired::{self, Desired};
use crate::access::naming::{self, FIELD_MANAGER, FINALIZER};
use crate::access::outcome::NamespaceOutcome;
use crate::access::plan::{self, Existing, Inputs, WritePlan};
use crate::access::status::{self, Observed};
use crate::access::text::first_and_more;
use crate::access::tiers::Tier;
use crate::api::teamaccess::{TeamAccess, TeamAccessStatus};
use crate::controller::error::{Error, readable};
use crate::controller::{Context, events, grant, revoke};

/// Namespaces worked on at once within one reconcile.
const NAMESPACE_CONCURRENCY: usize = 16;
/// Retry delay after a failed write.
const RETRY: Duration = Duration::from_secs(5);
/// Requeue this much after a validity boundary, so it has passed.
const BOUNDARY_SLACK: Duration = Duration::from_millis(50);

/// Entry point for the controller: finalizer first, then apply or clean up.
pub async fn reconcile(ta: Arc<TeamAccess>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let name = ta.name_any();
    let api: Api<TeamAccess> = Api::all(ctx.client.clone());
    // the finalizer helper's own patches are not timed one by one: a deadline
    // on the whole reconcile bounds them, and frees the worker for others
    let deadline = ctx.timing.write_timeout * 6;
    let work = finalizer(&api, FINALIZER, ta, |event| async {
        match event {
            Finalizer::Apply(ta) => apply(&ta, &ctx).await,
            Finalizer::Cleanup(ta) => cleanup(&ta, &ctx).await,
        }
    });
    let result = match tokio::time::timeout(deadline, work).await {
        Ok(r) => r.or_else(|e| match e {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => Err(e),
            // cleaned up, and the object is gone already: that is success
            kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
                if s.is_not_found() =>
            {
                Ok(Action::await_change())
            }
            other => Err(Error::Finalizer {
                name: name.clone(),
                message: match &other {
                    kube::runtime::finalizer::Error::AddFinalizer(e) => {
                        format!("adding the finalizer: {}", readable(e))
                    }
                    kube::runtime::finalizer::Error::RemoveFinalizer(e) => {
                        format!("removing the finalizer: {}", readable(e))
                    }
                    _ => other.to_string(),
                },
            }),
        }),
        Err(_) => Err(Error::Timeout {
            what: format!("reconcile of TeamAccess {name}"),
            after: deadline,
        }),
    };
    (ctx.metrics).observe_reconcile(&name, result.is_ok(), start.elapsed());
    result
}

/// The reconcile, step by step.
async fn apply(ta: &TeamAccess, ctx: &Context) -> Result<Action, Error> {
    let (start, now) = (Instant::now(), Timestamp::now());
    let world = gather(ctx, ta);
    let (desired, plan) = decide(ta, &world, ctx, now);
    let outcomes = execute(ctx, ta, plan).await;
    let forbidden = remember(ctx, ta, &outcomes, now);
    tell_people(ctx, ta, &outcomes).await;
    let done = Done::new(&outcomes, start);
    let status = status::compute(
        observe(ta, &desired, outcomes, forbidden),
        ta.status.as_ref(),
        now,
    );
    let written = write_status(ctx, ta, &status).await?;
    done.log(ctx, ta, &status, written);
    let after = requeue_after(
        ctx.timing.resync,
        desired.next_transition,
        Timestamp::now(),
        done.retry,
    );
    Ok(Action::requeue(after))
}

/// Step 1: what exists, as the caches hold it, and what this process
/// remembers of this TeamAccess.
struct World {
    namespaces: Vec<Arc<Namespace>>,
    roles: Vec<Arc<Role>>,
    bindings: Vec<Arc<RoleBinding>>,
    rules: BTreeMap<Tier, Vec<PolicyRule>>,
    applied_before: HashSet<String>,
}

fn gather(ctx: &Context, ta: &TeamAccess) -> World {
    let groups = ctx.api_groups.read().expect("not poisoned");
    World {
        namespaces: ctx.caches.namespaces.state(),
        roles: ctx.caches.roles.state(),
        bindings: ctx.caches.bindings.state(),
        rules: desired::rules_by_tier(&groups, &ctx.settings),
        applied_before: ctx.memory.applied_before(ta, &ta.uid().unwrap_or_default()),
    }
}

/// Steps 2 and 3, pure: what should exist, and the writes that get there.
fn decide(ta: &TeamAccess, world: &World, ctx: &Context, now: Timestamp) -> (Desired, WritePlan) {
    let index = desired::index_namespaces(world.namespaces.iter().map(AsRef::as_ref));
    let desired = desired::compute(ta, &index, &ctx.settings, now);
    let existing = Existing::at_name(
        &naming::object_name(&ta.name_any()),
        world.roles.iter().map(AsRef::as_ref),
        world.bindings.iter().map(AsRef::as_ref),
    );
    let plan = plan::plan(&Inputs {
        access: ta,
        desired: &desired,
        rules: &world.rules,
        existing: &existing,
        namespaces: &index,
        applied_before: &world.applied_before,
    });
    (desired, plan)
}

/// Step 4: perform the plan, grants (concurrently within a bound), then
/// revocations. Returns what each namespace came to.
async fn execute(ctx: &Context, ta: &TeamAccess, plan: WritePlan) -> Vec<NamespaceOutcome> {
    let uid = ta.uid().unwrap_or_default();
    // collected first: a closure kept inside the stream would make the
    // reconcile future's lifetimes too general for the controller
    let grants: Vec<_> = (plan.grants.into_iter())
        .map(|g| grant::grant(ctx, &uid, g))
        .collect();
    let mut outcomes: Vec<NamespaceOutcome> = futures::stream::iter(grants)
        .buffer_unordered(NAMESPACE_CONCURRENCY)
        .collect()
        .await;
    for r in plan.revocations {
        outcomes.push(revoke::revoke(ctx, r).await);
    }
    outcomes
}

/// What this process keeps for the next reconcile; returns the Forbidden
/// message once it has lasted past the grace period.
fn remember(
    ctx: &Context,
    ta: &TeamAccess,
    outcomes: &[NamespaceOutcome],
    now: Timestamp,
) -> Option<String> {
    let uid = ta.uid().unwrap_or_default();
    ctx.memory.remember_applied(&uid, outcomes);
    (ctx.memory).forbidden_past_grace(&uid, outcomes, now, ctx.timing.forbidden_grace)
}

/// Step 5: events, each for something that happened in this reconcile.
async fn tell_people(ctx: &Context, ta: &TeamAccess, outcomes: &[NamespaceOutcome]) {
    for notice in events::notices(ta, outcomes) {
        events::publish(ctx, ta, notice).await;
    }
}

/// What a reconcile did, for its log line and its requeue.
struct Done {
    writes: usize,
    touched: Vec<String>,
    retry: bool,
    start: Instant,
}

impl Done {
    fn new(outcomes: &[NamespaceOutcome], start: Instant) -> Self {
        Done {
            writes: outcomes.iter().map(|o| o.writes).sum(),
            touched: (outcomes.iter().filter(|o| o.writes > 0))
                .map(|o| o.status.name.clone())
                .collect(),
            retry: outcomes.iter().any(NamespaceOutcome::needs_retry),
            start,
        }
    }

    /// One line per reconcile, and the gauges: managed objects, this
    /// TeamAccess's conditions and its nearest grant expiry.
    fn log(&self, ctx: &Context, ta: &TeamAccess, status: &TeamAccessStatus, status_written: bool) {
        (ctx.metrics).set_managed(
            ctx.caches.roles.state().len(),
            ctx.caches.bindings.state().len(),
        );
        let name = ta.name_any();
        ctx.metrics.set_conditions(&name, &status.conditions);
        ctx.metrics
            .set_grant_expiry(&name, nearest_expiry(ta, Timestamp::now()));
        let ready = status.conditions.iter().find(|c| c.type_ == status::READY);
        info!(
            teamaccess = %ta.name_any(),
            writes = self.writes,
            status_written,
            namespaces_touched = %first_and_more(&self.touched, 5, ", "),
            targeted = status.summary.as_ref().map(|s| s.targeted).unwrap_or(0),
            ready = ready.map(|c| c.status.as_str()).unwrap_or(""),
            reason = ready.map(|c| c.reason.as_str()).unwrap_or(""),
            duration_ms = self.start.elapsed().as_millis() as u64,
            "reconciled"
        );
    }
}

/// What the status is computed from: the outcomes, minus namespaces that
/// left (going away, or no longer targeted).
fn observe(
    ta: &TeamAccess,
    desired: &Desired,
    outcomes: Vec<NamespaceOutcome>,
    forbidden: Option<String>,
) -> Observed {
    Observed {
        generation: ta.metadata.generation,
        suspended: ta.suspended(),
        namespaces: (outcomes.into_iter().filter(|o| !o.gone))
            .map(|o| o.status)
            .collect(),
        next_transition: desired.next_transition,
        forbidden,
        tiers: ta.spec.grants.iter().map(|g| g.tier).collect(),
    }
}

/// Step 6: writes `status` unless it is what the object already has;
/// returns whether it wrote. An unchanged outcome is an unchanged status
/// (lastTransitionTime included), so a resync that finds nothing to do
/// writes nothing.
async fn write_status(
    ctx: &Context,
    ta: &TeamAccess,
    status: &TeamAccessStatus,
) -> Result<bool, Error> {
    if ta.status.as_ref() == Some(status) {
        return Ok(false);
    }
    let name = ta.name_any();
    let api: Api<TeamAccess> = Api::all(ctx.client.clone());
    let body = serde_json::json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "status": status,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let what = || format!("status of TeamAccess {name}");
    (ctx.writes
        .timed(what, api.patch_status(&name, &pp, &Patch::Apply(&body)))
        .await?)
        .map_err(|source| {
            ctx.metrics.api_error("TeamAccess/status");
            Error::Status {
                name: name.clone(),
                source,
            }
        })?;
    Ok(true)
}

/// The nearest `validUntil` still ahead, for the expiry gauge (alerts on
/// grants about to end).
pub fn nearest_expiry(ta: &TeamAccess, now: Timestamp) -> Option<Timestamp> {
    (ta.spec.grants.iter())
        .filter_map(|g| g.valid_until.as_ref().map(|t| t.0))
        .filter(|t| *t > now)
        .min()
}

/// When to come back: at the next validity boundary, sooner after errors,
/// else at the resync period.
pub fn requeue_after(
    resync: Duration,
    next_transition: Option<Timestamp>,
    now: Timestamp,
    retry: bool,
) -> Duration {
    let mut after = resync;
    if let Some(next) = next_transition {
        // a boundary that passed while the reconcile ran: at once
        let until = if next > now {
            now.duration_until(next).unsigned_abs()
        } else {
            Duration::ZERO
        };
        after = after.min(until + BOUNDARY_SLACK);
    }
    if retry {
        after = after.min(RETRY);
    }
    after
}

/// Deletion: remove everything this TeamAccess made, then forget it.
async fn cleanup(ta: &TeamAccess, ctx: &Context) -> Result<Action, Error> {
    let (name, uid) = (ta.name_any(), ta.uid().unwrap_or_default());
    let deleted = revoke::cleanup(ctx, &name, &uid).await?;
    ctx.memory.forget(&uid);
    ctx.metrics.forget(&name);
    info!(teamaccess = %name, deleted, "cleaned up");
    Ok(Action::await_change())
}

/// Failed reconciles (status writes, cleanup): log once, retry with a delay.
pub fn error_policy(ta: Arc<TeamAccess>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(teamaccess = %ta.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_expiry_gauge_shows_the_nearest_validuntil_ahead() {
        let ta = crate::api::fixtures::teamaccess(
            "x",
            serde_json::json!([
                {"tier": "Admin", "namespaces": ["a"], "validUntil": "2026-01-01T00:00:00Z"},
                {"tier": "Admin", "namespaces": ["b"], "validUntil": "2026-03-01T00:00:00Z"},
                {"tier": "Writer", "namespaces": ["c"], "validUntil": "2026-02-01T00:00:00Z"},
                {"tier": "Reader", "namespaces": ["d"]}
            ]),
            false,
        );
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        assert_eq!(
            nearest_expiry(&ta, at("2025-12-01T00:00:00Z")),
            Some(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            nearest_expiry(&ta, at("2026-01-15T00:00:00Z")),
            Some(at("2026-02-01T00:00:00Z"))
        );
        assert_eq!(nearest_expiry(&ta, at("2026-03-01T00:00:00Z")), None);
    }

    #[test]
    fn requeue_at_the_boundary_sooner_after_errors_else_at_resync() {
        let resync = Duration::from_secs(600);
        let now = at("2026-01-01T00:00:00Z");
        assert_eq!(requeue_after(resync, None, now, false), resync);
        assert_eq!(requeue_after(resync, None, now, true), RETRY);
        let soon = Some(at("2026-01-01T00:00:02Z"));
        assert_eq!(
            requeue_after(resync, soon, now, false),
            Duration::from_secs(2) + BOUNDARY_SLACK
        );
        // an error retries sooner than a far boundary, a near boundary wins
        let far = Some(at("2026-01-01T01:00:00Z"));
        assert_eq!(requeue_after(resync, far, now, true), RETRY);
        // a boundary already past (it passed during the reconcile): at once
        let past = Some(at("2025-12-31T23:59:58Z"));
        assert_eq!(requeue_after(resync, past, now, false), BOUNDARY_SLACK);
        let near = Some(at("2026-01-01T00:00:01Z"));
        assert_eq!(
            requeue_after(resync, near, now, true),
            Duration::from_secs(1) + BOUNDARY_SLACK
        );
    }
}
