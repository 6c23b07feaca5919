//! `teamaccess run`: caches, triggers, leader election, the controller, and
//! the HTTP endpoints, wired together.
//!
//! The caches start at once, leader or not, so `/readyz` turns ready on every
//! replica and a rolling update completes; only the leader reconciles (every
//! write comes from a reconcile). Losing the lease ends the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::access::desired::Settings;
use crate::access::naming;
use crate::api::teamaccess::TeamAccess;
use crate::controller::discovery;
use crate::controller::leader::LeaderElector;
use crate::controller::{Caches, Context, Timing, reconcile, triggers};
use crate::ops::metrics::Metrics;

/// Sent on every request, so audit logs can name the operator.
pub const USER_AGENT: &str = concat!("teamaccess/", env!("CARGO_PKG_VERSION"));

/// What `run` needs, from the command line ([`crate::cli::RunArgs`]).
#[derive(Clone, Debug)]
pub struct Options {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub settings: Settings,
    /// Where the Lease lives.
    pub operator_namespace: String,
    /// Only TeamAccess objects with these labels.
    pub selector: Option<String>,
    pub http_address: SocketAddr,
    /// None: no leader election (one replica).
    pub lease: Option<LeaseOptions>,
    /// This replica's name in the lease and in events.
    pub identity: String,
    pub timing: Timing,
}

#[derive(Clone, Debug)]
pub struct LeaseOptions {
    pub name: String,
    pub duration: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("serving {address}: {source}")]
    Http {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

async fn client(args: &Options) -> Result<Client, RunError> {
    connect(args.kubeconfig.as_deref(), args.context.as_deref()).await
}

/// A client from `kubeconfig` and `context` as `run` reads them: the file, else
/// the context of the default kubeconfig, else in-cluster or the default.
/// `report` connects the same way.
pub async fn connect(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<Client, RunError> {
    let options = KubeConfigOptions {
        context: context.map(str::to_string),
        ..Default::default()
    };
    let e = |e: &dyn std::fmt::Display| RunError::Kubeconfig(e.to_string());
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|x| e(&x))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|x| e(&x))?
        }
        None if context.is_some() => Config::from_kubeconfig(&options).await.map_err(|x| e(&x))?,
        None => Config::infer().await.map_err(|x| e(&x))?,
    };
    let mut config = config;
    // audit logs name the operator by its user agent
    config.headers.push((
        axum::http::header::USER_AGENT,
        axum::http::HeaderValue::from_static(USER_AGENT),
    ));
    Client::try_from(config).map_err(|x| e(&x))
}

/// A cache of `api` objects matching `config`, and the stream that feeds it.
fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (Store<K>, impl Stream<Item = K> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects()
        .filter_map(|r| async move {
            r.map_err(|e| warn!(error = %crate::controller::error::readable_watch(&e), "watch failed; retrying"))
                .ok()
        });
    (store, stream)
}

fn teamaccess_watch(selector: &Option<String>) -> watcher::Config {
    match selector {
        Some(s) => watcher::Config::default().labels(s),
        None => watcher::Config::default(),
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
    info!("shutting down: finishing reconciles in flight");
}

pub async fn run(args: Options) -> Result<(), RunError> {
    let client = client(&args).await?;
    let identity = args.identity.clone();
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.http_address)
        .await
        .map_err(|source| RunError::Http {
            address: args.http_address,
            source,
        })?;
    info!(address = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "serving /metrics, /healthz, /readyz");
    tokio::spawn(crate::ops::http::serve(
        listener,
        metrics.clone(),
        ready.clone(),
    ));

    // caches: every namespace, and only the Roles and RoleBindings we label
    let managed = watcher::Config::default().labels(naming::MANAGED_SELECTOR);
    let (namespaces, ns_events) = cache(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    );
    let (roles, role_events) = cache(Api::<Role>::all(client.clone()), managed.clone());
    let (bindings, binding_events) = cache(Api::<RoleBinding>::all(client.clone()), managed);
    let caches = Caches {
        namespaces: namespaces.clone(),
        roles: roles.clone(),
        bindings: bindings.clone(),
    };
    let (teamaccesses, ta_events) = cache(
        Api::<TeamAccess>::all(client.clone()),
        teamaccess_watch(&args.selector),
    );

    // triggers reach the controller only while we lead; before that they are
    // dropped, and leading starts with a reconcile of everything anyway
    let leading = Arc::new(AtomicBool::new(false));
    let (trigger, triggers) = mpsc::unbounded_channel::<ObjectRef<TeamAccess>>();
    {
        let (leading, trigger) = (leading.clone(), trigger.clone());
        let (tas, caches) = (teamaccesses.clone(), caches.clone());
        tokio::spawn(ns_events.for_each(move |ns| {
            if leading.load(Ordering::Relaxed) {
                for r in triggers::for_namespace(&ns, &tas, &caches) {
                    let _ = trigger.send(r);
                }
            }
            std::future::ready(())
        }));
    }
    fn owner_trigger<K: kube::Resource>(
        leading: Arc<AtomicBool>,
        trigger: mpsc::UnboundedSender<ObjectRef<TeamAccess>>,
    ) -> impl FnMut(K) -> std::future::Ready<()> {
        move |obj: K| {
            if leading.load(Ordering::Relaxed)
                && let Some(owner) = triggers::for_managed(obj.meta())
            {
                let _ = trigger.send(owner);
            }
            std::future::ready(())
        }
    }
    tokio::spawn(role_events.for_each(owner_trigger::<Role>(leading.clone(), trigger.clone())));
    tokio::spawn(binding_events.for_each(owner_trigger::<RoleBinding>(
        leading.clone(),
        trigger.clone(),
    )));
    tokio::spawn(ta_events.for_each(|_| std::future::ready(())));
    // a reconcile decides from these caches, so nothing is decided (and no
    // lease is sought) before they hold the whole picture; a shutdown
    // request while waiting ends the process at once
    let shutdown = shutdown_signal().shared();
    let synced = async {
        let _ = tokio::join!(
            namespaces.wait_until_ready(),
            roles.wait_until_ready(),
            bindings.wait_until_ready(),
            teamaccesses.wait_until_ready()
        );
    };
    tokio::select! {
        _ = synced => {},
        _ = shutdown.clone() => return Ok(()),
    }
    ready.store(true, Ordering::Relaxed);
    info!("caches synced");

    // discovery for the Admin tier, refreshed when an API group can change
    let groups = loop {
        match discovery::served_groups(&client).await {
            Ok(g) => break g,
            Err(e) => {
                warn!(error = %crate::controller::error::readable(&e), "discovery failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    info!(
        groups = groups.len(),
        "discovered API groups with namespaced resources"
    );
    let reporter = Reporter {
        controller: "teamaccess".into(),
        instance: Some(identity.clone()),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        reporter,
        args.settings.clone(),
        caches,
        groups,
        metrics.clone(),
        args.timing,
    ));
    let (refresh, refreshes) = mpsc::unbounded_channel::<()>();
    {
        let (client, ctx) = (client.clone(), ctx.clone());
        tokio::spawn(
            discovery::changes(&client, Duration::from_secs(2)).for_each(move |()| {
                let (client, ctx, refresh) = (client.clone(), ctx.clone(), refresh.clone());
                async move {
                    match discovery::served_groups(&client).await {
                        Ok(groups) => {
                            let changed = *ctx.api_groups.read().expect("not poisoned") != groups;
                            if changed {
                                info!(
                                    groups = groups.len(),
                                    "API groups changed; updating Admin roles"
                                );
                                *ctx.api_groups.write().expect("not poisoned") = groups;
                                let _ = refresh.send(());
                            }
                        }
                        Err(e) => warn!(error = %crate::controller::error::readable(&e), "discovery refresh failed"),
                    }
                }
            }),
        );
    }

    // leadership
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = if let Some(lease) = &args.lease {
        let mut elector = LeaderElector::new(
            client.clone(),
            &args.operator_namespace,
            &lease.name,
            &identity,
            lease.duration,
            lease.retry_period,
        );
        info!(lease = %lease.name, identity = %identity, "waiting for the leader lease");
        tokio::select! {
            _ = elector.acquire() => {},
            _ = shutdown.clone() => return Ok(()),
        }
        let renew_deadline = lease.duration * 2 / 3;
        let metrics = metrics.clone();
        Some(tokio::spawn(async move {
            tokio::select! {
                _ = elector.hold(renew_deadline) => {
                    metrics.set_leader(false);
                    error!("lost the leader lease; exiting so that only the leader writes");
                    std::process::exit(1);
                }
                _ = released => elector.release().await,
            }
        }))
    } else {
        None
    };
    leading.store(true, Ordering::Relaxed);
    metrics.set_leader(true);
    info!(identity = %identity, "leading: reconciling");

    let api: Api<TeamAccess> = Api::all(client.clone());
    Controller::new(api, teamaccess_watch(&args.selector))
        .with_config(controller::Config::default().concurrency(4))
        .reconcile_on(futures::stream::poll_fn({
            let mut triggers = triggers;
            move |cx| triggers.poll_recv(cx)
        }))
        .reconcile_all_on(futures::stream::poll_fn({
            let mut refreshes = refreshes;
            move |cx| refreshes.poll_recv(cx)
        }))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                // a trigger for a TeamAccess outside --selector lands here
                debug!(error = %e, "reconcile request not run");
            }
            std::future::ready(())
        })
        .await;
    drop(trigger);
    metrics.set_leader(false);
    if let Some(holder) = holder {
        let _ = release.send(());
        let _ = holder.await;
    }
    info!("stopped");
    Ok(())
}
