//! Performs the grant part of the write plan in one namespace: the Role,
//! then (only if the Role is ours) the RoleBinding.

use k8s_openapi::jiff::Timestamp;
use tracing::warn;

use crate::access::compare::Kind;
use crate::access::desired::{Plan, Target};
use crate::access::outcome::NamespaceOutcome;
use crate::access::plan::{self, Decision, GrantPlan, History, Mode, SuspendedNote};
use crate::api::teamaccess::NamespaceState;
use crate::controller::error::Error;
use crate::controller::writes::Created;
use crate::controller::{Cached, Context};

/// Fresh reads after a conflict before the namespace waits for the next reconcile.
const MAX_REREADS: usize = 2;

/// What the namespace reports before its writes are done.
pub fn unfinished(plan: &GrantPlan) -> NamespaceOutcome {
    NamespaceOutcome::applied(&Target {
        namespace: plan.namespace.clone(),
        tier: plan.tier,
        plan: Plan::Apply,
    })
}

pub async fn grant(ctx: &Context, uid: &str, plan: GrantPlan) -> NamespaceOutcome {
    let mut out = unfinished(&plan);
    let ns = plan.namespace.clone();
    let writes = plan.role.writes() || plan.binding.as_ref().is_some_and(Decision::writes);
    // an admission policy changed our last write here: writing again now
    // would only start a loop of writes and watch events
    if writes && let Some(until) = ctx.memory.held_off(uid, &ns, Timestamp::now()) {
        out.failed(
            format!(
                "an admission policy changes what the operator writes here; next attempt at {until}"
            ),
            None,
        );
        out.mutated = true;
        return out;
    }
    let out = perform_plan(ctx, uid, plan, out).await;
    if out.mutated {
        ctx.memory.mutated(uid, &ns, Timestamp::now());
    } else if out.status.state != NamespaceState::Error {
        ctx.memory.admitted(uid, &ns);
    }
    out
}

async fn perform_plan(
    ctx: &Context,
    uid: &str,
    plan: GrantPlan,
    mut out: NamespaceOutcome,
) -> NamespaceOutcome {
    let mode = plan.mode;
    // a binding that goes because its Role is missing or goes is deleted
    // first: access ends with the binding, and a failure leaves no binding
    // to a name someone else could fill
    if let (Decision::HoldBack | Decision::Remove(_), Some(Decision::Remove(_))) =
        (&plan.role, &plan.binding)
    {
        let binding = plan.binding.expect("matched above");
        if perform(ctx, uid, binding, mode, &mut out).await {
            perform(ctx, uid, plan.role, mode, &mut out).await;
        }
        return suspended(out, plan.suspended);
    }
    // narrowing before widening; a write that failed (or timed out and
    // could not be read back) stops the namespace, so the widening write
    // never goes out unconfirmed
    let mut binding = plan.binding;
    if plan.binding_first
        && let Some(first) = binding.take()
        && !perform(ctx, uid, first, mode, &mut out).await
    {
        return out;
    }
    if !perform(ctx, uid, plan.role, mode, &mut out).await {
        if out.status.state == NamespaceState::Conflict
            && let Some(unbind) = &plan.unbind
        {
            // the Role is someone else's: our binding must not grant it
            match ctx.writes.delete_exact(unbind).await {
                Ok(deleted) => out.writes += deleted as usize,
                Err(e) => failed(ctx, &mut out, unbind.kind, e),
            }
        }
        return out;
    }
    if let Some(binding) = binding
        && !perform(ctx, uid, binding, mode, &mut out).await
    {
        return out;
    }
    suspended(out, plan.suspended)
}

/// A suspended namespace says what was held back or taken away; one with
/// no access left through our objects is Skipped, not Applied.
fn suspended(mut out: NamespaceOutcome, note: Option<SuspendedNote>) -> NamespaceOutcome {
    if out.status.state != NamespaceState::Applied {
        return out; // an error or a conflict says more
    }
    if let Some(note) = note {
        if matches!(note, SuspendedNote::NotCreated | SuspendedNote::Removed) {
            out.status.state = NamespaceState::Skipped;
        }
        out.status.message = Some(note.message());
    }
    out
}

/// Performs one decision; returns whether the namespace may go on (false
/// after a Conflict or an error: never bind our groups to a Role that is not
/// ours).
async fn perform<K: Cached>(
    ctx: &Context,
    uid: &str,
    decision: Decision<K>,
    mode: Mode,
    out: &mut NamespaceOutcome,
) -> bool {
    let mut decision = decision;
    let mut rereads = 0;
    let mut created;
    loop {
        created = matches!(decision, Decision::Create { .. });
        let result = match decision {
            Decision::Keep | Decision::HoldBack => return true,
            Decision::Conflict(message) => {
                out.status.state = NamespaceState::Conflict;
                out.status.message = Some(message);
                return false;
            }
            Decision::Create { object, drift } => match ctx.writes.create(&object).await {
                Ok(Created::Created(stored)) => admitted(&object, &stored).map(|()| drift),
                Err(e) if e.is_timeout() && rereads < MAX_REREADS => {
                    rereads += 1;
                    match reread(ctx, uid, object, mode, out).await {
                        Ok(again) => {
                            decision = again;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                // an object the cache of labelled objects could not show: read
                // it and decide again on what is really there
                Ok(Created::AlreadyExists) => {
                    let (ns, name) = (out.status.name.clone(), object.meta().name.clone());
                    match ctx.writes.get::<K>(&ns, &name.unwrap_or_default()).await {
                        Ok(found) => {
                            decision =
                                plan::decide(uid, object, Some(&found), Mode::Active, History::New);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            },
            Decision::Apply { object, drift } => match ctx.writes.apply(&object).await {
                // changed since we decided (our cache was behind, or someone
                // wrote): read it again and decide on what is there now
                Err(e)
                    if e.api_status().is_some_and(|s| s.is_conflict()) && rereads < MAX_REREADS =>
                {
                    rereads += 1;
                    let (ns, name) = (out.status.name.clone(), object.meta().name.clone());
                    match ctx.writes.get::<K>(&ns, &name.unwrap_or_default()).await {
                        Ok(found) => {
                            let mut want = object;
                            want.meta_mut().resource_version = None;
                            decision = plan::decide(uid, want, Some(&found), mode, History::New);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                // the write may have landed or not: what exists now decides
                Err(e) if e.is_timeout() && rereads < MAX_REREADS => {
                    rereads += 1;
                    match reread(ctx, uid, object, mode, out).await {
                        Ok(again) => {
                            decision = again;
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(stored) => admitted(&object, &stored).map(|()| drift),
                Err(e) => Err(e),
            },
            Decision::Replace { old, object, drift } => {
                ctx.writes.replace(&old, &object).await.map(|()| drift)
            }
            Decision::Remove(old) => match ctx.writes.delete_exact(&old).await {
                Ok(true) => Ok(None),
                // already gone, or replaced since we looked: nothing of ours left
                Ok(false) => return true,
                Err(e) => Err(e),
            },
        };
        return match result {
            Ok(drift) => {
                out.writes += 1;
                let ns = out.status.name.clone();
                match drift {
                    Some(d) => {
                        ctx.metrics.drift_corrected(K::KIND.as_str());
                        if let Some(took) = ctx.arrivals.object_written(K::KIND, &ns, &d.name) {
                            ctx.metrics.observe_drift_repair(took);
                        }
                        out.drift.push(d);
                    }
                    None if created && K::KIND == Kind::RoleBinding => {
                        if let Some(took) = ctx.arrivals.namespace_written(&ns) {
                            ctx.metrics.observe_onboarding(took);
                        }
                    }
                    None => {}
                }
                true
            }
            Err(e) => {
                failed(ctx, out, K::KIND, e);
                false
            }
        };
    }
}

/// After a write that timed out (it may or may not have been stored): a
/// fresh read of the object, and a fresh decision on what is there now.
/// Deciding from the cache instead could repeat a write already stored or,
/// worse, take an unanswered narrowing write for done.
async fn reread<K: Cached>(
    ctx: &Context,
    uid: &str,
    mut want: K,
    mode: Mode,
    out: &NamespaceOutcome,
) -> Result<Decision<K>, Error> {
    let ns = out.status.name.clone();
    let name = want.meta().name.clone().unwrap_or_default();
    warn!(namespace = %ns, kind = K::KIND.as_str(), name = %name, "write timed out; reading the object again before deciding");
    let found = match ctx.writes.get::<K>(&ns, &name).await {
        Ok(found) => Some(found),
        Err(e) if e.api_status().is_some_and(|s| s.is_not_found()) => None,
        Err(e) => return Err(e),
    };
    want.meta_mut().resource_version = None;
    Ok(plan::decide(uid, want, found.as_ref(), mode, History::New))
}

/// Whether the API server stored what we wrote: an admission policy that
/// strips or changes it would otherwise have us write again forever.
fn admitted<K: Cached>(written: &K, stored: &K) -> Result<(), Error> {
    let changed = K::differences(written, stored);
    if changed.is_empty() {
        return Ok(());
    }
    Err(Error::MutatedOnAdmission {
        kind: K::KIND,
        namespace: written.meta().namespace.clone().unwrap_or_default(),
        name: written.meta().name.clone().unwrap_or_default(),
        fields: changed.iter().map(|f| f.as_str()).collect(),
    })
}

/// A failed write: a namespace going away is not an error; anything else is
/// retried, and a refusal is remembered for the Forbidden grace.
pub fn failed(ctx: &Context, out: &mut NamespaceOutcome, kind: Kind, e: Error) {
    if e.namespace_going_away() {
        out.gone = true;
        return;
    }
    if matches!(e, Error::MutatedOnAdmission { .. }) {
        ctx.metrics.mutated_on_admission(kind.as_str());
        out.mutated = true;
    }
    ctx.metrics.api_error(kind.as_str());
    warn!(namespace = %out.status.name, error = %e, "write failed; will retry");
    let forbidden = e.forbidden_message().map(str::to_string);
    out.failed(format!("{}: {e}", kind.as_str()), forbidden);
}
