//! The listing behind `teamaccess report`: namespaces, Roles, ClusterRoles,
//! RoleBindings, ClusterRoleBindings and TeamAccess objects, each listed once
//! in pages, all six at the same time. Read access only (config/rbac-report);
//! everything else is computed in memory by [`crate::review`].

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::teamaccess::TeamAccess;
use crate::controller::run::{self, RunError};
use crate::review::report::Inventory;

/// Items per list request: the API server's own recommendation for large lists.
pub const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Connect(#[from] RunError),
    #[error("listing {what}: {source}{hint}")]
    List {
        what: &'static str,
        #[source]
        source: kube::Error,
        hint: &'static str,
    },
}

/// What was listed, and how many requests that took.
pub struct Listed {
    pub inventory: Inventory,
    pub requests: usize,
}

/// Lists everything `report` reads, with the kubeconfig and context as `run` takes them.
pub async fn list(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<Listed, InventoryError> {
    let client = run::connect(kubeconfig, context).await?;
    let requests = AtomicUsize::new(0);
    let r = &requests;
    let (namespaces, roles, cluster_roles, role_bindings, cluster_role_bindings, teamaccesses) = futures::try_join!(
        all::<Namespace>(&client, "namespaces", r, false),
        all::<Role>(&client, "roles", r, false),
        all::<ClusterRole>(&client, "clusterroles", r, false),
        all::<RoleBinding>(&client, "rolebindings", r, false),
        all::<ClusterRoleBinding>(&client, "clusterrolebindings", r, false),
        // a cluster without the CRD simply has no managed access
        all::<TeamAccess>(&client, "teamaccesses.teamaccess.dev", r, true),
    )?;
    Ok(Listed {
        inventory: Inventory {
            namespaces,
            roles,
            cluster_roles,
            role_bindings,
            cluster_role_bindings,
            teamaccesses,
        },
        requests: requests.load(Ordering::Relaxed),
    })
}

async fn all<K>(
    client: &Client,
    what: &'static str,
    requests: &AtomicUsize,
    absent_is_empty: bool,
) -> Result<Vec<K>, InventoryError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let api: Api<K> = Api::all(client.clone());
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        requests.fetch_add(1, Ordering::Relaxed);
        let page = match api.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(s)) if absent_is_empty && s.code == 404 => return Ok(out),
            Err(source) => {
                let hint = match &source {
                    kube::Error::Api(s) if s.code == 403 => {
                        "; report needs get and list on it: bind the ClusterRole teamaccess-report (config/rbac-report)"
                    }
                    _ => "",
                };
                return Err(InventoryError::List { what, source, hint });
            }
        };
        out.extend(page.items);
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(out),
        }
    }
}
