//! The write primitives: a create-only probe, server-side apply, replace on a
//! changed roleRef, and delete with a UID precondition. Every request has a
//! deadline; a timeout is an [`Error::Timeout`], like any other failure.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource};

use crate::access::compare::{Kind, Managed};
use crate::access::naming::FIELD_MANAGER;
use crate::access::plan::Delete;
use crate::controller::error::{Error, Verb};

/// What a create-only write found.
pub enum Created<K> {
    /// As the API server stored it (after admission).
    Created(K),
    /// An object already holds the name: one the cache could not show us.
    AlreadyExists,
}

/// Writes to the API server, each bounded by `timeout`.
#[derive(Clone)]
pub struct Writes {
    client: Client,
    timeout: Duration,
}

impl Writes {
    pub fn new(client: Client, timeout: Duration) -> Self {
        Writes { client, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `fut` under the deadline.
    pub async fn timed<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl Future<Output = T>,
    ) -> Result<T, Error> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| Error::Timeout {
                what: what(),
                after: self.timeout,
            })
    }

    /// One request about `K` `namespace/name`: deadline, then the API answer
    /// turned into [`Error::Api`].
    async fn request<K: Managed, T>(
        &self,
        verb: Verb,
        namespace: &str,
        name: &str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        let what = || format!("{} {} {namespace}/{name}", verb.as_str(), K::KIND.as_str());
        self.timed(what, fut).await?.map_err(|source| Error::Api {
            verb,
            kind: K::KIND,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        })
    }

    fn api<K: Managed>(&self, namespace: &str) -> Api<K> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Create-only: never overwrites an object we could not see.
    pub async fn create<K: Managed>(&self, object: &K) -> Result<Created<K>, Error> {
        let (ns, name) = names(object);
        #[cfg(feature = "failpoints")]
        crate::controller::failpoint::before_create(K::KIND, &ns).await;
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .request::<K, _>(
                Verb::Create,
                &ns,
                &name,
                self.api::<K>(&ns).create(&pp, object),
            )
            .await
        {
            Ok(stored) => Ok(Created::Created(stored)),
            Err(e) if e.api_status().is_some_and(|s| s.is_already_exists()) => {
                Ok(Created::AlreadyExists)
            }
            Err(e) => Err(e),
        }
    }

    /// A fresh read, for a decision the cache could not make.
    pub async fn get<K: Managed>(&self, namespace: &str, name: &str) -> Result<K, Error> {
        self.request::<K, _>(
            Verb::Get,
            namespace,
            name,
            self.api::<K>(namespace).get(name),
        )
        .await
    }

    /// Server-side apply under our one field manager; returns the object as
    /// the API server stored it (after admission).
    pub async fn apply<K: Managed>(&self, object: &K) -> Result<K, Error> {
        let (ns, name) = names(object);
        #[cfg(feature = "failpoints")]
        crate::controller::failpoint::before_apply(K::KIND, &ns).await;
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(object);
        self.request::<K, _>(
            Verb::Apply,
            &ns,
            &name,
            self.api::<K>(&ns).patch(&name, &pp, &patch),
        )
        .await
    }

    /// roleRef cannot change in place: delete exactly the object seen, create ours.
    pub async fn replace<K: Managed>(&self, old: &Delete, object: &K) -> Result<(), Error> {
        self.delete_exact(old).await?;
        match self.create(object).await? {
            Created::Created(_) => Ok(()),
            // someone created another object at our name in between: the
            // next reconcile sees it and decides afresh
            Created::AlreadyExists => Ok(()),
        }
    }

    /// Deletes exactly the object with `delete.uid`; returns whether it did.
    /// Gone already, replaced by another object (the precondition fails), or
    /// in a namespace going away: nothing of ours to delete.
    pub async fn delete_exact(&self, delete: &Delete) -> Result<bool, Error> {
        match delete.kind {
            Kind::Role => self.delete::<Role>(delete).await,
            Kind::RoleBinding => self.delete::<RoleBinding>(delete).await,
        }
    }

    async fn delete<K: Managed>(&self, d: &Delete) -> Result<bool, Error> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(d.uid.clone()),
                resource_version: d.resource_version.clone(),
            }),
            ..Default::default()
        };
        let api = self.api::<K>(&d.namespace);
        match self
            .request::<K, _>(
                Verb::Delete,
                &d.namespace,
                &d.name,
                api.delete(&d.name, &dp),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.api_status().is_some_and(|s| s.is_not_found()) || e.namespace_going_away() =>
            {
                Ok(false)
            }
            // a precondition failed: another object at the name is not ours
            // to delete; the same object in a newer version must be decided
            // on again, so the conflict stands and the namespace is retried
            Err(e) if e.api_status().is_some_and(|s| s.is_conflict()) => {
                match api.get_opt(&d.name).await {
                    Ok(Some(now)) if now.meta().uid.as_deref() == Some(d.uid.as_str()) => Err(e),
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Every `K` in the cluster matching `lp`, read from the API server.
    pub async fn list<K: Managed>(&self, lp: &ListParams) -> Result<Vec<K>, Error> {
        let api = Api::<K>::all(self.client.clone());
        let what = || format!("list {}s", K::KIND.as_str());
        self.timed(what, api.list(lp))
            .await?
            .map(|l| l.items)
            .map_err(|source| Error::List {
                kind: K::KIND,
                source,
            })
    }
}

fn names<K: Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}
