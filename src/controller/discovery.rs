//! The API groups the Admin tier covers (its part (c)), from discovery.
//!
//! Only groups with at least one namespaced resource count: a namespaced Role
//! can reach nothing else, and leaving cluster-only groups out keeps the Role
//! readable. Refreshed when a CustomResourceDefinition or APIService changes,
//! which is when a group can appear or disappear.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Client;
use kube::api::{Api, PartialObjectMeta};
use kube::discovery::{Discovery, Scope};
use kube::runtime::{WatchStreamExt, watcher};

/// Groups with namespaced resources that the cluster serves now ("" is core).
pub async fn served_groups(client: &Client) -> Result<BTreeSet<String>, kube::Error> {
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
    Ok(discovery
        .groups()
        .filter(|g| {
            g.recommended_resources()
                .iter()
                .any(|(_, caps)| caps.scope == Scope::Namespaced)
        })
        .map(|g| g.name().to_string())
        .collect())
}

/// Yields `()` whenever a CRD or APIService is added, changed or removed,
/// debounced, so a burst of CRD installs costs one discovery run.
pub fn changes(client: &Client, debounce: Duration) -> impl Stream<Item = ()> + Send + 'static {
    // metadata only: the schemas of big CRDs are no business of ours
    let crds = watcher(
        Api::<PartialObjectMeta<CustomResourceDefinition>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ())
    .boxed();
    let services = watcher(
        Api::<PartialObjectMeta<APIService>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .map(|_| ())
    .boxed();
    let merged = futures::stream::select(crds, services);
    // a new CRD's group shows in discovery only once it is Established, a
    // moment after the event; waiting out the burst covers that too
    debounced(merged, debounce)
}

fn debounced<S: Stream<Item = ()> + Send + Unpin + 'static>(
    mut input: S,
    quiet: Duration,
) -> impl Stream<Item = ()> + Send + 'static {
    async_stream(move |tx| async move {
        while input.next().await.is_some() {
            loop {
                match tokio::time::timeout(quiet, input.next()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    })
}

/// A stream fed by a task, without pulling in a stream-macro crate.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = ()> + Send + 'static
where
    F: FnOnce(tokio::sync::mpsc::Sender<()>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(f(tx));
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
