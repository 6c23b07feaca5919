//! One reconcile of one TeamAccess, in the order it happens:
//! 1. gather what exists (caches: namespaces, managed Roles and RoleBindings);
//! 2. compute what should exist ([`desired::compute`], pure);
//! 3. apply the difference, namespace by namespace, writing only what differs;
//! 4. write status from what was applied, only when it changed.
//!
//! Safety rules that shape the code: an object with our name that this
//! TeamAccess does not own is never written or deleted (Conflict); a RoleBinding
//! is never created beside a Role that is not ours (it would bind the groups to
//! someone else's rules); every write has a timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::access::desired::{self, Plan, Settings, Target};
use crate::access::status::{self, Observed};
use crate::access::{compare as drift, naming};
use crate::api::teamaccess::{NamespaceState, NamespaceStatus, TeamAccess};
use crate::ops::metrics::Metrics;

/// The one field manager of everything we write.
pub const FIELD_MANAGER: &str = "teamaccess";
/// Holds a TeamAccess until what it made is gone, garbage collector or not.
pub const FINALIZER: &str = "teamaccess.dev/cleanup";
/// Namespaces worked on at once within one reconcile.
const NAMESPACE_CONCURRENCY: usize = 16;
/// Retry delay after a failed write.
const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {kind} {namespace}/{name}: {source}")]
    Write {
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("listing managed {kind}s: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("writing status of TeamAccess {name}: {source}")]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer of TeamAccess {name}: {message}")]
    Finalizer { name: String, message: String },
}

/// Everything a reconcile needs; one per process.
pub struct Context {
    pub client: Client,
    /// for events that repeat (drift): folds repeats into a series
    pub recorder: Recorder,
    pub reporter: Reporter,
    pub settings: Settings,
    pub namespaces: Store<Namespace>,
    pub roles: Store<Role>,
    pub bindings: Store<RoleBinding>,
    /// API groups with namespaced resources, from discovery (Admin part (c)).
    pub api_groups: RwLock<BTreeSet<String>>,
    pub metrics: Arc<Metrics>,
    pub resync: Duration,
    pub write_timeout: Duration,
    /// How long a Forbidden answer may last before it is Stalled: RBAC takes a
    /// moment to reach the authorizer after install.
    pub forbidden_grace: Duration,
    forbidden_since: Mutex<HashMap<String, Timestamp>>,
    /// Namespaces where this process applied each TeamAccess (by UID), so a
    /// deleted object is recognised as drift, not as a first apply.
    applied: Mutex<HashMap<String, HashSet<String>>>,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        reporter: Reporter,
        settings: Settings,
        namespaces: Store<Namespace>,
        roles: Store<Role>,
        bindings: Store<RoleBinding>,
        api_groups: BTreeSet<String>,
        metrics: Arc<Metrics>,
        resync: Duration,
        write_timeout: Duration,
        forbidden_grace: Duration,
    ) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            settings,
            namespaces,
            roles,
            bindings,
            api_groups: RwLock::new(api_groups),
            metrics,
            resync,
            write_timeout,
            forbidden_grace,
            forbidden_since: Mutex::default(),
            applied: Mutex::default(),
        }
    }
}

async fn timed<T>(
    ctx: &Context,
    what: impl FnOnce() -> String,
    fut: impl Future<Output = T>,
) -> Result<T, Error> {
    tokio::time::timeout(ctx.write_timeout, fut)
        .await
        .map_err(|_| Error::Timeout {
            what: what(),
            after: ctx.write_timeout,
        })
}

/// Entry point for the controller: finalizer first, then apply or clean up.
pub async fn reconcile(ta: Arc<TeamAccess>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = std::time::Instant::now();
    let name = ta.name_any();
    let api: Api<TeamAccess> = Api::all(ctx.client.clone());
    // the finalizer helper's own patches are not timed one by one: a deadline
    // on the whole reconcile bounds them, and frees the worker for others
    let deadline = ctx.write_timeout * 6;
    let work = finalizer(&api, FINALIZER, ta, |event| async {
        match event {
            Finalizer::Apply(ta) => apply(&ta, &ctx).await,
            Finalizer::Cleanup(ta) => cleanup(&ta, &ctx).await,
        }
    });
    let result = match tokio::time::timeout(deadline, work).await {
        Ok(r) => r,
        Err(_) => {
            ctx.metrics.observe_reconcile(&name, false, start.elapsed());
            return Err(Error::Timeout {
                what: format!("reconcile of TeamAccess {name}"),
                after: deadline,
            });
        }
    }
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer {
            name: name.clone(),
            message: other.to_string(),
        },
    });
    ctx.metrics
        .observe_reconcile(&name, result.is_ok(), start.elapsed());
    result
}

/// A change someone else made to one of our objects, which we reverted.
struct DriftNote {
    kind: &'static str,
    namespace: String,
    name: String,
    /// what we did, machine-readable: Recreate, ReplaceRoleRef, Revert...
    action: String,
    note: String,
}

/// What one namespace came to, and what was written there.
struct NamespaceOutcome {
    status: NamespaceStatus,
    /// Left out of the status: the namespace is going away (not an error),
    /// or no grant reaches it any more.
    gone: bool,
    writes: usize,
    drift: Vec<DriftNote>,
    forbidden: Option<String>,
}

impl NamespaceOutcome {
    fn new(target: &Target, state: NamespaceState, message: Option<String>) -> Self {
        NamespaceOutcome {
            status: NamespaceStatus {
                name: target.namespace.clone(),
                tier: Some(target.tier),
                state,
                message,
            },
            gone: false,
            writes: 0,
            drift: Vec::new(),
            forbidden: None,
        }
    }

    /// A namespace that is no longer a target: not reported in the status.
    fn untargeted(namespace: &str) -> Self {
        NamespaceOutcome {
            status: NamespaceStatus {
                name: namespace.to_string(),
                tier: None,
                state: NamespaceState::Skipped,
                message: None,
            },
            gone: true,
            writes: 0,
            drift: Vec::new(),
            forbidden: None,
        }
    }
}

/// A write refused because the namespace is being deleted or is gone: the
/// namespace is no longer targeted, and that is not an error.
fn namespace_going_away(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            (s.code == 403 && (s.reason == "Forbidden" && s.message.contains("being terminated")))
                || (s.code == 404 && s.details.as_ref().is_some_and(|d| d.kind == "namespaces"))
        }
        _ => false,
    }
}

fn api_status(e: &kube::Error) -> Option<(u16, &str)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.message.as_str())),
        _ => None,
    }
}

/// One kind of object we manage, so Role and RoleBinding share one code path.
trait Managed:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    fn store(ctx: &Context) -> &Store<Self>;
    fn differences(want: &Self, have: &Self) -> Vec<&'static str>;
}

impl Managed for Role {
    const KIND: &'static str = "Role";
    fn store(ctx: &Context) -> &Store<Self> {
        &ctx.roles
    }
    fn differences(want: &Self, have: &Self) -> Vec<&'static str> {
        drift::role_differences(want, have)
    }
}

impl Managed for RoleBinding {
    const KIND: &'static str = "RoleBinding";
    fn store(ctx: &Context) -> &Store<Self> {
        &ctx.bindings
    }
    fn differences(want: &Self, have: &Self) -> Vec<&'static str> {
        drift::binding_differences(want, have)
    }
}

enum Ensured {
    Unchanged,
    Written { drift: Option<DriftNote> },
    Conflict(String),
}

/// Makes the object `want` exist as we define it, never touching one we do not own.
async fn ensure<K: Managed>(
    ctx: &Context,
    uid: &str,
    want: &K,
    suspended: bool,
    previously_applied: bool,
) -> Result<Ensured, kube::Error> {
    let ns = want.meta().namespace.clone().unwrap_or_default();
    let name = want.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let cached = K::store(ctx).get(&ObjectRef::new(&name).within(&ns));
    let timeout = |e: Error| kube::Error::Service(Box::new(e));

    let existing: Arc<K> = match cached {
        Some(obj) => obj,
        None if suspended => return Ok(Ensured::Unchanged),
        None => {
            // Not in the cache of labelled objects: absent, or someone else's
            // object without our labels. A create-only write tells which.
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            let created = timed(
                ctx,
                || format!("create {} {ns}/{name}", K::KIND),
                api.create(&pp, want),
            )
            .await
            .map_err(timeout)?;
            match created {
                Ok(_) => {
                    let drift = previously_applied.then(|| DriftNote {
                        kind: K::KIND,
                        namespace: ns.clone(),
                        name: name.clone(),
                        action: "Recreate".into(),
                        note: format!("{} {ns}/{name} was deleted; recreated", K::KIND),
                    });
                    return Ok(Ensured::Written { drift });
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Arc::new(
                    timed(
                        ctx,
                        || format!("get {} {ns}/{name}", K::KIND),
                        api.get(&name),
                    )
                    .await
                    .map_err(timeout)??,
                ),
                Err(e) => return Err(e),
            }
        }
    };
    if !drift::owned_by(existing.meta(), uid) {
        return Ok(Ensured::Conflict(format!(
            "{} {ns}/{name} exists and is not owned by this TeamAccess",
            K::KIND
        )));
    }
    let differences = K::differences(want, &existing);
    if differences.is_empty() || suspended {
        return Ok(Ensured::Unchanged);
    }
    let by = drift::changed_by(existing.meta(), FIELD_MANAGER);
    let drift = (!by.is_empty() || differences.contains(&"roleRef")).then(|| {
        let who = if by.is_empty() {
            "someone".to_string()
        } else {
            by.join(", ")
        };
        let action = if differences.contains(&"roleRef") {
            "ReplaceRoleRef".to_string()
        } else {
            // one series per kind of change, so a note is never hidden under another's
            let mut a = String::from("Revert");
            for d in &differences {
                a.push_str(&d[..1].to_uppercase());
                a.push_str(&d[1..]);
            }
            a
        };
        DriftNote {
            kind: K::KIND,
            namespace: ns.clone(),
            name: name.clone(),
            action,
            note: format!(
                "{} {ns}/{name}: {} changed by {who}; reverted",
                K::KIND,
                differences.join(", ")
            ),
        }
    });
    if differences.contains(&"roleRef") {
        // roleRef is immutable: delete exactly this object (UID precondition,
        // so a newer one is never hit) and create ours
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.meta().uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match timed(
            ctx,
            || format!("delete {} {ns}/{name}", K::KIND),
            api.delete(&name, &dp),
        )
        .await
        .map_err(timeout)?
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e),
        }
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        timed(
            ctx,
            || format!("create {} {ns}/{name}", K::KIND),
            api.create(&pp, want),
        )
        .await
        .map_err(timeout)??;
    } else {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        timed(
            ctx,
            || format!("apply {} {ns}/{name}", K::KIND),
            api.patch(&name, &pp, &Patch::Apply(want)),
        )
        .await
        .map_err(timeout)??;
    }
    Ok(Ensured::Written { drift })
}

/// Deletes our object `name` in `ns` if it exists and is ours. Returns whether
/// anything was deleted.
async fn remove<K: Managed>(
    ctx: &Context,
    uid: &str,
    ns: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    let Some(existing) = K::store(ctx).get(&ObjectRef::new(name).within(ns)) else {
        return Ok(false);
    };
    if !drift::owned_by(existing.meta(), uid) {
        return Ok(false);
    }
    delete_exact::<K>(ctx, &existing).await
}

async fn delete_exact<K: Managed>(ctx: &Context, obj: &K) -> Result<bool, kube::Error> {
    let ns = obj.meta().namespace.clone().unwrap_or_default();
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.meta().uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let result = timed(
        ctx,
        || format!("delete {} {ns}/{name}", K::KIND),
        api.delete(&name, &dp),
    )
    .await
    .map_err(|e| kube::Error::Service(Box::new(e)))?;
    match result {
        Ok(_) => Ok(true),
        // gone already, or replaced by another object: nothing of ours to delete
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) if namespace_going_away(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn classify_error(outcome: &mut NamespaceOutcome, kind: &str, e: kube::Error, metrics: &Metrics) {
    if namespace_going_away(&e) {
        outcome.gone = true;
        return;
    }
    metrics.api_error(kind);
    let message = format!("{kind}: {e}");
    if let Some((403, m)) = api_status(&e) {
        outcome.forbidden = Some(m.to_string());
    }
    warn!(namespace = %outcome.status.name, error = %e, "write failed; will retry");
    outcome.status.state = NamespaceState::Error;
    outcome.status.message = Some(message);
}

/// Steps 3 for one Apply target: the Role, then (only if the Role is ours) the RoleBinding.
async fn apply_namespace(
    ctx: &Context,
    ta: &TeamAccess,
    uid: &str,
    target: &Target,
    rules: &[PolicyRule],
    previously_applied: bool,
) -> NamespaceOutcome {
    let suspended = ta.suspended();
    let mut out = NamespaceOutcome::new(target, NamespaceState::Applied, None);
    let role = desired::role(ta, &target.namespace, target.tier, rules);
    let binding = desired::role_binding(ta, &target.namespace, target.tier);
    for step in 0..2 {
        let result = if step == 0 {
            ensure(ctx, uid, &role, suspended, previously_applied).await
        } else {
            ensure(ctx, uid, &binding, suspended, previously_applied).await
        };
        let kind = if step == 0 { "Role" } else { "RoleBinding" };
        match result {
            Ok(Ensured::Unchanged) => {}
            Ok(Ensured::Written { drift }) => {
                out.writes += 1;
                if let Some(d) = drift {
                    ctx.metrics.drift_corrected(kind);
                    out.drift.push(d);
                }
            }
            Ok(Ensured::Conflict(message)) => {
                out.status.state = NamespaceState::Conflict;
                out.status.message = Some(message);
                // never bind our groups to a Role that is not ours
                return out;
            }
            Err(e) => {
                classify_error(&mut out, kind, e, &ctx.metrics);
                return out;
            }
        }
    }
    if suspended {
        let name = naming::object_name(&ta.name_any());
        let have_role = ctx
            .roles
            .get(&ObjectRef::new(&name).within(&target.namespace));
        let have_binding = ctx
            .bindings
            .get(&ObjectRef::new(&name).within(&target.namespace));
        match (have_role, have_binding) {
            (Some(r), Some(b)) => {
                if !Role::differences(&role, &r).is_empty()
                    || !RoleBinding::differences(&binding, &b).is_empty()
                {
                    out.status.message =
                        Some("suspended: differs from the spec, not updated".into());
                }
            }
            _ => {
                out.status.state = NamespaceState::Skipped;
                out.status.message = Some("suspended: not created".into());
            }
        }
    }
    out
}

/// Revokes our objects in one namespace (expiry, spec edit, label change,
/// protection). Returns how many were deleted.
async fn revoke_namespace(
    ctx: &Context,
    uid: &str,
    ns: &str,
    name: &str,
    out: &mut NamespaceOutcome,
) {
    // the binding first: access ends with it, and the Role alone grants nothing
    match remove::<RoleBinding>(ctx, uid, ns, name).await {
        Ok(deleted) => out.writes += deleted as usize,
        Err(e) => return classify_error(out, "RoleBinding", e, &ctx.metrics),
    }
    match remove::<Role>(ctx, uid, ns, name).await {
        Ok(deleted) => out.writes += deleted as usize,
        Err(e) => classify_error(out, "Role", e, &ctx.metrics),
    }
}

fn plan_state(plan: Plan) -> (NamespaceState, Option<&'static str>) {
    match plan {
        Plan::Apply => (NamespaceState::Applied, None),
        Plan::Pending => (NamespaceState::Pending, Some("namespace not found")),
        Plan::Denied => (NamespaceState::Denied, Some("protected namespace")),
        Plan::Skipped => (NamespaceState::Skipped, Some("protected namespace")),
        Plan::Expired => (
            NamespaceState::Expired,
            Some("every grant for it is past validUntil"),
        ),
        Plan::NotYetValid => (
            NamespaceState::NotYetValid,
            Some("every grant for it is before validFrom"),
        ),
    }
}

fn list_names(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(" and {} more", names.len() - 5));
    }
    s
}

/// How an event relates to earlier ones.
enum Series {
    /// Something new each time: its own event, never folded into an earlier one.
    New,
    /// A repeat of the same thing (same reason, action and related object)
    /// counts up one event's series instead of adding events.
    Repeat,
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

#[allow(clippy::too_many_arguments)]
async fn publish(
    ctx: &Context,
    ta: &TeamAccess,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
    related: Option<ObjectReference>,
    series: Series,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: related,
    };
    // kube's Recorder folds events with the same key into a series and keeps
    // the first note; a fresh one for each new thing keeps every note
    let fresh;
    let recorder = match series {
        Series::Repeat => &ctx.recorder,
        Series::New => {
            fresh = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
            &fresh
        }
    };
    // events are for people; failing to record one never fails the reconcile
    match tokio::time::timeout(
        ctx.write_timeout,
        recorder.publish(&event, &ta.object_ref(&())),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(teamaccess = %ta.name_any(), error = %e, "could not publish event"),
        Err(_) => warn!(teamaccess = %ta.name_any(), "publishing an event timed out"),
    }
}

async fn apply(ta: &TeamAccess, ctx: &Context) -> Result<Action, Error> {
    let start = std::time::Instant::now();
    let now = Timestamp::now();
    let name = ta.name_any();
    let uid = ta.uid().unwrap_or_default();

    // 1. gather
    let namespaces = ctx.namespaces.state();
    let index = desired::index_namespaces(namespaces.iter().map(|n| n.as_ref()));
    let rules = {
        let groups = ctx.api_groups.read().expect("not poisoned");
        desired::rules_by_tier(&groups, &ctx.settings)
    };
    let previously = where_we_applied(ctx, ta, &uid);

    // 2. compute
    let desired = desired::compute(ta, &index, &ctx.settings, now);

    // 3. apply the difference: grant where it should be, revoke where not
    // (collected first: a closure kept inside the stream would make the
    // reconcile future's lifetimes too general for the controller)
    let work: Vec<_> = desired
        .to_apply()
        .map(|t| {
            apply_namespace(
                ctx,
                ta,
                &uid,
                t,
                &rules[&t.tier],
                previously.contains(&t.namespace),
            )
        })
        .collect();
    let mut outcomes: Vec<NamespaceOutcome> = futures::stream::iter(work)
        .buffer_unordered(NAMESPACE_CONCURRENCY)
        .collect()
        .await;
    let (revocations, expired) = revoke(ctx, &name, &uid, &desired, &index).await;
    outcomes.extend(revocations);
    remember_applied(ctx, &uid, &outcomes);
    let forbidden_stalled = forbidden_past_grace(ctx, &uid, &outcomes, now);
    tell_people(ctx, ta, &outcomes, &expired).await;

    // 4. status, from what was applied
    let writes: usize = outcomes.iter().map(|o| o.writes).sum();
    let touched: Vec<String> = outcomes
        .iter()
        .filter(|o| o.writes > 0)
        .map(|o| o.status.name.clone())
        .collect();
    let retry = outcomes
        .iter()
        .any(|o| o.status.state == NamespaceState::Error || o.forbidden.is_some());
    let observed = Observed {
        generation: ta.metadata.generation,
        suspended: ta.suspended(),
        namespaces: outcomes
            .into_iter()
            .filter(|o| !o.gone)
            .map(|o| o.status)
            .collect(),
        next_transition: desired.next_transition,
        forbidden: forbidden_stalled,
        tiers: ta.spec.grants.iter().map(|g| g.tier).collect(),
    };
    let new_status = status::compute(observed, ta.status.as_ref(), now);
    let status_written = write_status(ctx, ta, &new_status).await?;
    ctx.metrics
        .set_managed(ctx.roles.state().len(), ctx.bindings.state().len());

    let ready = new_status
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY);
    info!(
        teamaccess = %name,
        writes,
        status_written,
        namespaces_touched = %list_names(&touched),
        targeted = new_status.summary.as_ref().map(|s| s.targeted).unwrap_or(0),
        ready = ready.map(|c| c.status.as_str()).unwrap_or(""),
        reason = ready.map(|c| c.reason.as_str()).unwrap_or(""),
        duration_ms = start.elapsed().as_millis() as u64,
        "reconciled"
    );

    // requeue: at the next validity boundary, sooner after errors, else resync
    let mut after = ctx.resync;
    if let Some(next) = desired.next_transition {
        after = after
            .min(Timestamp::now().duration_until(next).unsigned_abs() + Duration::from_millis(50));
    }
    if retry {
        after = after.min(RETRY);
    }
    Ok(Action::requeue(after))
}

/// Namespaces where this TeamAccess had its objects: this process's memory,
/// and after a restart the last status.
fn where_we_applied(ctx: &Context, ta: &TeamAccess, uid: &str) -> HashSet<String> {
    let mut set = ctx
        .applied
        .lock()
        .expect("not poisoned")
        .get(uid)
        .cloned()
        .unwrap_or_default();
    set.extend(
        ta.status
            .iter()
            .flat_map(|s| &s.namespaces)
            .filter(|n| n.state == NamespaceState::Applied)
            .map(|n| n.name.clone()),
    );
    set
}

fn remember_applied(ctx: &Context, uid: &str, outcomes: &[NamespaceOutcome]) {
    let applied = outcomes
        .iter()
        .filter(|o| o.status.state == NamespaceState::Applied && !o.gone)
        .map(|o| o.status.name.clone())
        .collect();
    ctx.applied
        .lock()
        .expect("not poisoned")
        .insert(uid.to_string(), applied);
}

/// Revokes wherever we hold objects but should not: every target that is not
/// to be applied (expired, protected, ...), and namespaces no grant reaches
/// any more. Returns an outcome per namespace, and those revoked by expiry.
async fn revoke(
    ctx: &Context,
    name: &str,
    uid: &str,
    desired: &desired::Desired,
    index: &BTreeMap<&str, desired::NamespaceView<'_>>,
) -> (Vec<NamespaceOutcome>, Vec<String>) {
    let object_name = naming::object_name(name);
    let mut revoke_in: BTreeMap<String, Option<&Target>> = desired
        .targets
        .iter()
        .filter(|t| t.plan != Plan::Apply)
        .map(|t| (t.namespace.clone(), Some(t)))
        .collect();
    let to_apply: HashSet<&str> = desired.to_apply().map(|t| t.namespace.as_str()).collect();
    let ours = |meta: &kube::api::ObjectMeta| {
        meta.name.as_deref() == Some(object_name.as_str()) && drift::owned_by(meta, uid)
    };
    let held = ctx
        .roles
        .state()
        .iter()
        .filter(|r| ours(&r.metadata))
        .filter_map(|r| r.metadata.namespace.clone())
        .chain(
            ctx.bindings
                .state()
                .iter()
                .filter(|b| ours(&b.metadata))
                .filter_map(|b| b.metadata.namespace.clone()),
        )
        .collect::<Vec<_>>();
    for ns in held {
        if !to_apply.contains(ns.as_str()) {
            revoke_in.entry(ns).or_insert(None);
        }
    }
    let mut outcomes = Vec::new();
    let mut expired = Vec::new();
    for (ns, target) in revoke_in {
        let mut out = match target {
            Some(t) => {
                let (state, message) = plan_state(t.plan);
                NamespaceOutcome::new(t, state, message.map(Into::into))
            }
            // no grant reaches it: not a target, so not in the status
            None => NamespaceOutcome::untargeted(&ns),
        };
        // a terminating namespace takes our objects with it
        if !index.get(ns.as_str()).is_some_and(|n| n.terminating) {
            revoke_namespace(ctx, uid, &ns, &object_name, &mut out).await;
        }
        if out.writes > 0 && target.is_some_and(|t| t.plan == Plan::Expired) {
            expired.push(ns);
        }
        outcomes.push(out);
    }
    (outcomes, expired)
}

/// A Forbidden answer is retried for the grace period (RBAC takes a moment to
/// propagate after install); past it, the server's message, to stall on.
fn forbidden_past_grace(
    ctx: &Context,
    uid: &str,
    outcomes: &[NamespaceOutcome],
    now: Timestamp,
) -> Option<String> {
    let forbidden = outcomes.iter().find_map(|o| o.forbidden.clone());
    let mut since = ctx.forbidden_since.lock().expect("not poisoned");
    match forbidden {
        None => {
            since.remove(uid);
            None
        }
        Some(message) => {
            let first = *since.entry(uid.to_string()).or_insert(now);
            (now.duration_since(first).unsigned_abs() >= ctx.forbidden_grace).then_some(message)
        }
    }
}

/// Events, each for something that happened in this reconcile.
async fn tell_people(
    ctx: &Context,
    ta: &TeamAccess,
    outcomes: &[NamespaceOutcome],
    expired: &[String],
) {
    let written: Vec<String> = outcomes
        .iter()
        .filter(|o| o.writes > 0 && o.drift.is_empty() && o.status.state == NamespaceState::Applied)
        .map(|o| o.status.name.clone())
        .collect();
    if !written.is_empty() {
        let note = format!(
            "applied Roles and RoleBindings in {}: {}",
            plural_namespaces(written.len()),
            list_names(&written)
        );
        publish(
            ctx,
            ta,
            EventType::Normal,
            "Applied",
            "Apply",
            note,
            None,
            Series::New,
        )
        .await;
    }
    for d in outcomes.iter().flat_map(|o| &o.drift) {
        let related = reference(
            "rbac.authorization.k8s.io/v1",
            d.kind,
            Some(&d.namespace),
            &d.name,
        );
        let (action, note) = (d.action.as_str(), d.note.clone());
        publish(
            ctx,
            ta,
            EventType::Warning,
            "DriftCorrected",
            action,
            note,
            Some(related),
            Series::Repeat,
        )
        .await;
    }
    for ns in expired {
        let note = format!("validUntil passed; revoked access in namespace {ns}");
        let related = reference("v1", "Namespace", None, ns);
        publish(
            ctx,
            ta,
            EventType::Normal,
            "Revoked",
            "Revoke",
            note,
            Some(related),
            Series::New,
        )
        .await;
    }
    // Conflict and Denied on the transition only: a resync is not news
    let previous_state = |ns: &str| {
        ta.status
            .as_ref()
            .and_then(|s| s.namespaces.iter().find(|n| n.name == ns))
            .map(|n| n.state)
    };
    for (state, reason) in [
        (NamespaceState::Conflict, "Conflict"),
        (NamespaceState::Denied, "Denied"),
    ] {
        for o in outcomes.iter().filter(|o| o.status.state == state) {
            if previous_state(&o.status.name) != Some(state) {
                let note = format!(
                    "namespace {}: {}",
                    o.status.name,
                    o.status.message.clone().unwrap_or_default()
                );
                let related = reference("v1", "Namespace", None, &o.status.name);
                publish(
                    ctx,
                    ta,
                    EventType::Warning,
                    reason,
                    "Skip",
                    note,
                    Some(related),
                    Series::New,
                )
                .await;
            }
        }
    }
}

fn plural_namespaces(n: usize) -> String {
    if n == 1 {
        "1 namespace".into()
    } else {
        format!("{n} namespaces")
    }
}

/// Writes `status` unless it is what the object already has; returns whether
/// it wrote. An unchanged outcome is an unchanged status (lastTransitionTime
/// included), so a resync that finds nothing to do writes nothing.
async fn write_status(
    ctx: &Context,
    ta: &TeamAccess,
    status: &crate::api::teamaccess::TeamAccessStatus,
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
    timed(
        ctx,
        || format!("status of TeamAccess {name}"),
        api.patch_status(&name, &pp, &Patch::Apply(&body)),
    )
    .await?
    .map_err(|source| {
        ctx.metrics.api_error("TeamAccess/status");
        Error::Status {
            name: name.clone(),
            source,
        }
    })?;
    Ok(true)
}

/// Deletion: remove everything this TeamAccess made. Lists through the API,
/// not the cache, so nothing is missed after a restart.
async fn cleanup(ta: &TeamAccess, ctx: &Context) -> Result<Action, Error> {
    let uid = ta.uid().unwrap_or_default();
    let name = ta.name_any();
    let lp = ListParams::default().labels(&format!(
        "{},{}={}",
        naming::MANAGED_SELECTOR,
        naming::LABEL_OWNER,
        naming::owner_label(&name)
    ));
    // bindings first: access ends with them
    let deleted = delete_all_owned::<RoleBinding>(ctx, &uid, &lp).await?
        + delete_all_owned::<Role>(ctx, &uid, &lp).await?;
    ctx.applied.lock().expect("not poisoned").remove(&uid);
    ctx.forbidden_since
        .lock()
        .expect("not poisoned")
        .remove(&uid);
    info!(teamaccess = %name, deleted, "cleaned up");
    Ok(Action::await_change())
}

/// Deletes every object of kind `K` matching `lp` that `uid` owns; returns how many.
async fn delete_all_owned<K: Managed>(
    ctx: &Context,
    uid: &str,
    lp: &ListParams,
) -> Result<usize, Error> {
    let api = Api::<K>::all(ctx.client.clone());
    let list = timed(ctx, || format!("list {}s", K::KIND), api.list(lp))
        .await?
        .map_err(|source| Error::List {
            kind: K::KIND,
            source,
        })?;
    let mut deleted = 0;
    for obj in list.items.iter().filter(|o| drift::owned_by(o.meta(), uid)) {
        deleted += delete_exact(ctx, obj)
            .await
            .map_err(|source| write_error("delete", K::KIND, obj, source))?
            as usize;
    }
    Ok(deleted)
}

fn write_error<K: Resource>(
    action: &'static str,
    kind: &'static str,
    obj: &K,
    source: kube::Error,
) -> Error {
    Error::Write {
        action,
        kind,
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
        source,
    }
}

/// Failed reconciles (status writes, cleanup): log once, retry with a delay.
pub fn error_policy(ta: Arc<TeamAccess>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(teamaccess = %ta.name_any(), error = %error, "reconcile failed; retrying");
    Action::requeue(RETRY)
}

/// The TeamAccess objects a namespace event concerns: those that select it
/// now, name it, or own a managed object in it. Never all of them.
pub fn teamaccesses_for_namespace(
    ns: &Namespace,
    teamaccesses: &Store<TeamAccess>,
    roles: &Store<Role>,
    bindings: &Store<RoleBinding>,
) -> Vec<ObjectRef<TeamAccess>> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Vec::new();
    };
    let empty = BTreeMap::new();
    let labels = ns.metadata.labels.as_ref().unwrap_or(&empty);
    let mut refs: BTreeSet<String> = teamaccesses
        .state()
        .iter()
        .filter(|ta| {
            ta.spec.grants.iter().any(|g| {
                g.namespaces.iter().flatten().any(|n| n == name)
                    || g.namespace_selector
                        .as_ref()
                        .is_some_and(|s| s.matches(labels))
            })
        })
        .map(|ta| ta.name_any())
        .collect();
    let in_ns = |meta: &kube::api::ObjectMeta| meta.namespace.as_deref() == Some(name);
    refs.extend(
        roles
            .state()
            .iter()
            .filter(|r| in_ns(&r.metadata))
            .filter_map(|r| controller_owner(&r.metadata)),
    );
    refs.extend(
        bindings
            .state()
            .iter()
            .filter(|b| in_ns(&b.metadata))
            .filter_map(|b| controller_owner(&b.metadata)),
    );
    refs.into_iter().map(|n| ObjectRef::new(&n)).collect()
}

/// The TeamAccess that controls a managed object, by its controller reference.
pub fn controller_owner(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true)
                && o.kind == "TeamAccess"
                && o.api_version.starts_with("teamaccess.dev/")
        })
        .map(|o| o.name.clone())
}
