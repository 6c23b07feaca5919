//! One reconcile of one TeamAccess, as its steps: gather what exists, compute
//! what should exist and the writes that get there (pure, in
//! [`crate::access`]), execute them (revocations, then grants), tell people,
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
use crate::access::expiry;
use crate::access::naming::{self, FIELD_MANAGER, FINALIZER};
use crate::access::outcome::NamespaceOutcome;
use crate::access::plan::{self, Existing, Inputs, WritePlan};
use crate::access::status::{self, Observed};
use crate::access::text::first_and_more;
use crate::access::tiers::Tier;
use crate::api::teamaccess::{TeamAccess, TeamAccessStatus};
use crate::controller::error::{Error, readable};
use crate::controller::memory::{Persisting, RETRY_FIRST};
use crate::controller::{Cached, Context, events, grant, revoke};

/// Namespaces worked on at once within one reconcile.
const NAMESPACE_CONCURRENCY: usize = 16;
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
    let world = gather(ctx, ta).await;
    let (desired, plan) = decide(ta, &world, ctx, now);
    let mut outcomes = execute(ctx, ta, plan, ctx.timing.write_timeout * WORK_BUDGET).await;
    let uid = ta.uid().unwrap_or_default();
    (ctx.memory).narrowed_notes(&uid, ta.suspended(), &mut outcomes);
    let (forbidden, failing) = remember(ctx, ta, &outcomes, now);
    let warning = ctx.timing.expiry_warning;
    let expiring: Vec<String> = (expiry::expiring_soon(ta, now, warning).iter())
        .map(expiry::Expiring::note)
        .collect();
    tell_people(ctx, ta, &outcomes, &expiring).await;
    let done = Done::new(&outcomes, start);
    let mut observed = observe(ta, &desired, outcomes, forbidden, now);
    observed.failing_past_grace = failing.past_grace;
    observed.expiring = expiring;
    let status = status::compute(observed, ta.status.as_ref(), now);
    let written = write_status(ctx, ta, &status).await?;
    done.log(ctx, ta, &status, written);
    let next = [
        desired.next_transition,
        expiry::next_warning(ta, now, warning),
    ];
    let after = requeue_after(
        ctx.timing.resync,
        next.into_iter().flatten().min(),
        Timestamp::now(),
        failing.retry_after(),
    );
    Ok(Action::requeue(after))
}

/// The writes of one reconcile get this many write timeouts in all; what is
/// not done by then is reported and retried, so the status (written within
/// the rest of the reconcile's deadline) always says what was done.
const WORK_BUDGET: u32 = 4;

/// Step 1: what exists, as the caches hold it, and what this process
/// remembers of this TeamAccess.
struct World {
    namespaces: Vec<Arc<Namespace>>,
    roles: Vec<Arc<Role>>,
    bindings: Vec<Arc<RoleBinding>>,
    rules: BTreeMap<Tier, Vec<PolicyRule>>,
    applied_before: HashSet<String>,
}

async fn gather(ctx: &Context, ta: &TeamAccess) -> World {
    let rules = {
        let groups = ctx.api_groups.read().expect("not poisoned");
        desired::rules_by_tier(&groups, &ctx.settings)
    };
    let object = naming::object_name(&ta.name_any());
    World {
        namespaces: ctx.caches.namespaces.state(),
        roles: with_unlabelled::<Role>(ctx, &object).await,
        bindings: with_unlabelled::<RoleBinding>(ctx, &object).await,
        rules,
        applied_before: ctx.memory.applied_before(ta, &ta.uid().unwrap_or_default()),
    }
}

/// The labelled cache of `K`, plus every object at our name `object` that
/// is missing from it (its labels were removed or rewritten), read in full:
/// what we own is found by name and owner reference, never by label alone.
/// Normally there are none, and this costs nothing.
async fn with_unlabelled<K: Cached>(ctx: &Context, object: &str) -> Vec<Arc<K>> {
    // the cache holds every TeamAccess's objects (20,000 at 1,000 TeamAccess
    // objects over 10 namespaces each): only those at our name are ours to
    // decide on, so the rest are dropped before anything is copied
    let mut all = K::store(&ctx.caches).state();
    all.retain(|o| o.meta().name.as_deref() == Some(object));
    let seen: HashSet<(String, String)> = (all.iter())
        .map(|o| {
            (
                o.namespace().unwrap_or_default(),
                o.meta().uid.clone().unwrap_or_default(),
            )
        })
        .collect();
    let hidden: Vec<_> = (K::names(&ctx.caches).state().into_iter())
        .filter(|m| m.metadata.name.as_deref() == Some(object))
        .filter(|m| {
            let key = (
                m.namespace().unwrap_or_default(),
                m.metadata.uid.clone().unwrap_or_default(),
            );
            !seen.contains(&key)
        })
        .collect();
    for m in hidden {
        let ns = m.namespace().unwrap_or_default();
        match ctx.writes.get::<K>(&ns, object).await {
            Ok(found) => all.push(Arc::new(found)),
            Err(e) if e.api_status().is_some_and(|s| s.is_not_found()) => {}
            // decided without it: a create then meets AlreadyExists and reads it
            Err(e) => {
                warn!(namespace = %ns, error = %e, "reading an unlabelled object at our name failed")
            }
        }
    }
    all
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

/// Step 4: perform the plan, revocations first (access that should end is
/// never starved by a large grant), each part concurrently within a bound,
/// all within `budget`. Returns what each namespace came to; one not reached
/// in time is an error to retry, never silently dropped.
async fn execute(
    ctx: &Context,
    ta: &TeamAccess,
    plan: WritePlan,
    budget: Duration,
) -> Vec<NamespaceOutcome> {
    let uid = ta.uid().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + budget;
    // what each namespace reports if its work does not finish in time
    let mut unfinished: BTreeMap<String, NamespaceOutcome> = BTreeMap::new();
    for r in &plan.revocations {
        unfinished.insert(r.namespace.clone(), revoke::unfinished(r));
    }
    for g in &plan.grants {
        unfinished.insert(g.namespace.clone(), grant::unfinished(g));
    }
    let mut outcomes = Vec::with_capacity(unfinished.len());
    // collected first: a closure kept inside the stream would make the
    // reconcile future's lifetimes too general for the controller
    let revocations: Vec<_> = (plan.revocations.into_iter())
        .map(|r| revoke::revoke(ctx, r))
        .collect();
    let grants: Vec<_> = (plan.grants.into_iter())
        .map(|g| grant::grant(ctx, &uid, g))
        .collect();
    let mut timed_out = !run_until(revocations, deadline, &mut outcomes).await;
    if !timed_out {
        timed_out = !run_until(grants, deadline, &mut outcomes).await;
    }
    if timed_out {
        for o in &outcomes {
            unfinished.remove(&o.status.name);
        }
        warn!(
            teamaccess = %ta.name_any(),
            unfinished = unfinished.len(),
            "writes not finished within the reconcile's budget; retrying"
        );
        for (_, mut o) in unfinished {
            o.failed(
                format!("not reached within the reconcile's budget of {budget:?}; retrying"),
                None,
            );
            outcomes.push(o);
        }
    }
    outcomes
}

/// Runs `work` concurrently within a bound, collecting outcomes, until done
/// (true) or `deadline` (false; what had not finished is dropped).
async fn run_until<F>(
    work: Vec<F>,
    deadline: tokio::time::Instant,
    outcomes: &mut Vec<NamespaceOutcome>,
) -> bool
where
    F: std::future::Future<Output = NamespaceOutcome>,
{
    let mut stream = futures::stream::iter(work).buffer_unordered(NAMESPACE_CONCURRENCY);
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(o)) => outcomes.push(o),
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// What this process keeps for the next reconcile; returns the Forbidden
/// message once it has lasted past the grace period, and how long writes
/// have been failing.
fn remember(
    ctx: &Context,
    ta: &TeamAccess,
    outcomes: &[NamespaceOutcome],
    now: Timestamp,
) -> (Option<String>, Persisting) {
    let uid = ta.uid().unwrap_or_default();
    let grace = ctx.timing.forbidden_grace;
    ctx.memory.remember_applied(&uid, outcomes);
    (
        (ctx.memory).forbidden_past_grace(&uid, outcomes, now, grace),
        (ctx.memory).failures(&uid, outcomes, now, grace),
    )
}

/// Step 5: events, each for something that happened in this reconcile.
async fn tell_people(
    ctx: &Context,
    ta: &TeamAccess,
    outcomes: &[NamespaceOutcome],
    expiring: &[String],
) {
    let notices = events::notices(ta, outcomes);
    for notice in notices
        .into_iter()
        .chain(events::expiry_notices(ta, expiring))
    {
        events::publish(ctx, ta, notice).await;
    }
}

/// What a reconcile did, for its log line and its requeue.
struct Done {
    writes: usize,
    touched: Vec<String>,
    start: Instant,
}

impl Done {
    fn new(outcomes: &[NamespaceOutcome], start: Instant) -> Self {
        Done {
            writes: outcomes.iter().map(|o| o.writes).sum(),
            touched: (outcomes.iter().filter(|o| o.writes > 0))
                .map(|o| o.status.name.clone())
                .collect(),
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
    now: Timestamp,
) -> Observed {
    let mutated = (outcomes.iter())
        .filter(|o| o.mutated)
        .map(|o| o.status.name.clone())
        .collect();
    Observed {
        generation: ta.metadata.generation,
        suspended: ta.suspended(),
        namespaces: (outcomes.into_iter().filter(|o| !o.gone))
            .map(|o| o.status)
            .collect(),
        next_transition: desired.next_transition,
        forbidden,
        tiers: expiry::tiers_in_effect(ta, now),
        inactive_grants: expiry::inactive_grants(ta, now),
        expiring: Vec::new(),
        failing_past_grace: false,
        mutated,
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

/// When to come back: at the next validity boundary, at `retry` after
/// errors (backing off), else at the resync period.
pub fn requeue_after(
    resync: Duration,
    next_transition: Option<Timestamp>,
    now: Timestamp,
    retry: Option<Duration>,
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
    if let Some(retry) = retry {
        after = after.min(retry);
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
    Action::requeue(RETRY_FIRST)
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
        const RETRY: Duration = RETRY_FIRST;
        let (no, yes) = (None, Some(RETRY));
        assert_eq!(requeue_after(resync, None, now, no), resync);
        assert_eq!(requeue_after(resync, None, now, yes), RETRY);
        let soon = Some(at("2026-01-01T00:00:02Z"));
        assert_eq!(
            requeue_after(resync, soon, now, no),
            Duration::from_secs(2) + BOUNDARY_SLACK
        );
        // an error retries sooner than a far boundary, a near boundary wins
        let far = Some(at("2026-01-01T01:00:00Z"));
        assert_eq!(requeue_after(resync, far, now, yes), RETRY);
        // a boundary already past (it passed during the reconcile): at once
        let past = Some(at("2025-12-31T23:59:58Z"));
        assert_eq!(requeue_after(resync, past, now, no), BOUNDARY_SLACK);
        let near = Some(at("2026-01-01T00:00:01Z"));
        assert_eq!(
            requeue_after(resync, near, now, yes),
            Duration::from_secs(1) + BOUNDARY_SLACK
        );
    }
}
