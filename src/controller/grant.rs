//! Performs the grant part of the write plan in one namespace: the Role,
//! then (only if the Role is ours) the RoleBinding.

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

pub async fn grant(ctx: &Context, uid: &str, plan: GrantPlan) -> NamespaceOutcome {
    let target = Target {
        namespace: plan.namespace.clone(),
        tier: plan.tier,
        plan: Plan::Apply,
    };
    let mut out = NamespaceOutcome::applied(&target);
    if !perform(ctx, uid, plan.role, &mut out).await {
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
    if let Some(binding) = plan.binding
        && !perform(ctx, uid, binding, &mut out).await
    {
        return out;
    }
    match plan.suspended {
        None => {}
        Some(SuspendedNote::NotUpdated) => {
            out.status.message = Some("suspended: differs from the spec, not updated".into());
        }
        Some(SuspendedNote::NotCreated) => {
            out.status.state = NamespaceState::Skipped;
            out.status.message = Some("suspended: not created".into());
        }
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
    out: &mut NamespaceOutcome,
) -> bool {
    let mut decision = decision;
    let mut rereads = 0;
    loop {
        let result = match decision {
            Decision::Keep | Decision::HoldBack => return true,
            Decision::Conflict(message) => {
                out.status.state = NamespaceState::Conflict;
                out.status.message = Some(message);
                return false;
            }
            Decision::Create { object, drift } => match ctx.writes.create(&object).await {
                Ok(Created::Created) => Ok(drift),
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
                            decision =
                                plan::decide(uid, want, Some(&found), Mode::Active, History::New);
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                }
                other => other.map(|()| drift),
            },
            Decision::Replace { old, object, drift } => {
                ctx.writes.replace(&old, &object).await.map(|()| drift)
            }
        };
        return match result {
            Ok(drift) => {
                out.writes += 1;
                if let Some(d) = drift {
                    ctx.metrics.drift_corrected(K::KIND.as_str());
                    out.drift.push(d);
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

/// A failed write: a namespace going away is not an error; anything else is
/// retried, and a refusal is remembered for the Forbidden grace.
pub fn failed(ctx: &Context, out: &mut NamespaceOutcome, kind: Kind, e: Error) {
    if e.namespace_going_away() {
        out.gone = true;
        return;
    }
    ctx.metrics.api_error(kind.as_str());
    warn!(namespace = %out.status.name, error = %e, "write failed; will retry");
    let forbidden = e.forbidden_message().map(str::to_string);
    out.failed(format!("{}: {e}", kind.as_str()), forbidden);
}
