//! Revocation: performs the revoke part of the write plan (expiry, spec
//! edit, label change, protection), and the cleanup when a TeamAccess is
//! deleted. RoleBindings go first: access ends with them.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::ListParams;

use crate::access::compare::{self, Managed};
use crate::access::naming;
use crate::access::outcome::NamespaceOutcome;
use crate::access::plan::{Delete, RevokePlan};
use crate::controller::Context;
use crate::controller::error::Error;
use crate::controller::grant::failed;

pub async fn revoke(ctx: &Context, plan: RevokePlan) -> NamespaceOutcome {
    let mut out = match &plan.target {
        Some(t) => NamespaceOutcome::not_applied(t),
        // no grant reaches it: not a target, so not in the status
        None => NamespaceOutcome::untargeted(&plan.namespace),
    };
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

async fn delete_all_owned<K: Managed>(
    ctx: &Context,
    uid: &str,
    object_name: &str,
    lp: &ListParams,
) -> Result<usize, Error> {
    let mut deleted = 0;
    for obj in ctx.writes.list::<K>(lp).await? {
        let meta = obj.meta();
        if !compare::ours_for_cleanup(meta, uid, object_name) {
            continue;
        }
        let delete = Delete::of(K::KIND, meta);
        deleted += ctx.writes.delete_exact(&delete).await? as usize;
    }
    Ok(deleted)
}
