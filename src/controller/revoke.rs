//! Revocation: performs the revoke part of the write plan (expiry, spec
//! edit, label change, protection), and the cleanup when a TeamAccess is
//! deleted. RoleBindings go first: access ends with them.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::ListParams;

use crate::access::compare;
use crate::access::naming;
use crate::access::outcome::NamespaceOutcome;
use crate::access::plan::{Delete, RevokePlan};
use crate::controller::error::Error;
use crate::controller::grant::failed;
use crate::controller::{Cached, Context};

pub async fn revoke(ctx: &Context, plan: RevokePlan) -> NamespaceOutcome {
    let mut out = unfinished(&plan);
    for delete in &plan.deletes {
        match ctx.writes.delete_exact(delete).await {
            Ok(deleted) => out.writes += deleted as usize,
            Err(e) => {
                failed(ctx, &mut out, delete.kind, e);
                break;
            }
        }
    }
    out
}

/// What the namespace reports before (or without) its deletes: its target
/// state, or, when no grant reaches it, nothing (until a delete fails).
pub fn unfinished(plan: &RevokePlan) -> NamespaceOutcome {
    match &plan.target {
        Some(t) => NamespaceOutcome::not_applied(t),
        None => NamespaceOutcome::untargeted(&plan.namespace),
    }
}

/// Deletion of a TeamAccess: removes everything it made. Lists through the
/// API, not the cache, so nothing is missed after a restart. Returns how many
/// objects were deleted.
pub async fn cleanup(ctx: &Context, name: &str, uid: &str) -> Result<usize, Error> {
    let lp = ListParams::default().labels(&format!(
        "{},{}={}",
        naming::MANAGED_SELECTOR,
        naming::LABEL_OWNER,
        naming::owner_label(name)
    ));
    let object_name = naming::object_name(name);
    Ok(
        delete_all_owned::<RoleBinding>(ctx, uid, &object_name, &lp).await?
            + delete_all_owned::<Role>(ctx, uid, &object_name, &lp).await?,
    )
}

/// Ours by the labels we set (listed through the API), and ours at our
/// name whatever its labels say now (from the cache of names): someone may
/// have stripped them, and deleting the TeamAccess must still end access.
async fn delete_all_owned<K: Cached>(
    ctx: &Context,
    uid: &str,
    object_name: &str,
    lp: &ListParams,
) -> Result<usize, Error> {
    let mut candidates: Vec<kube::api::ObjectMeta> = (ctx.writes.list::<K>(lp).await?)
        .into_iter()
        .map(|o| o.meta().clone())
        .collect();
    for m in K::names(&ctx.caches).state() {
        let listed = candidates.iter().any(|c| c.uid == m.metadata.uid);
        if !listed && m.metadata.name.as_deref() == Some(object_name) {
            candidates.push(m.metadata.clone());
        }
    }
    let mut deleted = 0;
    for meta in candidates {
        if !compare::ours_for_cleanup(&meta, uid, object_name) {
            continue;
        }
        let delete = Delete::of(K::KIND, &meta);
        deleted += ctx.writes.delete_exact(&delete).await? as usize;
    }
    Ok(deleted)
}
