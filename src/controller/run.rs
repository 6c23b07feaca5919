//! `teamaccess run`: caches, triggers, leader election, the controller, and
//! the HTTP endpoints, wired together.
//!
//! The caches of namespaces, Roles and RoleBindings start at once, leader or
//! not, so `/readyz` turns ready on every replica and a rolling update
//! completes; the TeamAccess cache is the controller's own watch, which starts
//! once the replica leads. Only the leader reconciles (every write comes from
//! a reconcile). Losing the lease ends the process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ops::http::Readiness;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::access::compare::Kind;
use crate::access::desired::Settings;
use crate::access::naming;
use crate::api::teamaccess::TeamAccess;
use crate::controller::arrivals::Arrivals;
use crate::controller::leader::{GateLayer, LeaderElector, LeaseGate};
use crate::controller::requests::CountLayer;
use crate::controller::{Caches, Context, Timing, reconcile, triggers};
use crate::controller::{discovery, preflight};
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

/// The operator's client: every request passes the lease gate first, and
/// every one that leaves the gate is counted (a refused one never left).
async fn client(
    args: &Options,
    gate: &LeaseGate,
    metrics: &Arc<Metrics>,
) -> Result<Client, RunError> {
    let config = config(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let builder = kube::client::ClientBuilder::try_from(config)
        .map_err(|x| RunError::Kubeconfig(x.to_string()))?;
    Ok(builder
        .with_layer(&CountLayer(metrics.clone()))
        .with_layer(&GateLayer(gate.clone()))
        .build())
}

/// A client from `kubeconfig` and `context` as `run` reads them: the file, else
/// the context of the default kubeconfig, else in-cluster or the default.
/// `report` connects the same way.
pub async fn connect(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<Client, RunError> {
    let config = config(kubeconfig, context).await?;
    Client::try_from(config).map_err(|x| RunError::Kubeconfig(x.to_string()))
}

async fn config(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<Config, RunError> {
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
    Ok(config)
}

/// A cache of `api` objects matching `config`, each `trim`med before it is
/// stored, and the stream that feeds it.
fn cache<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
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
    reflected(watcher(api, config).map_ok(move |e| e.modify(trim)))
}

/// managedFields say which manager wrote which field; drift attribution
/// ([`crate::access::compare::changed_by`]) needs only who wrote and when.
/// The field sets are most of the size of a Role or RoleBinding as listed.
fn keep_writers_only<K: kube::Resource>(obj: &mut K) {
    for entry in obj.meta_mut().managed_fields.iter_mut().flatten() {
        entry.fields_v1 = None;
    }
}

/// Nothing reads a namespace's or a TeamAccess's managedFields.
fn drop_managed_fields<K: kube::Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// A store fed by `events`, and the stream of objects they touch; a failed
/// watch is logged once per failure and retried with backoff.
fn reflected<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> (Store<K>, impl Stream<Item = K> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, events)
        .default_backoff()
        .touched_objects()
        .filter_map(|r| async move {
            r.map_err(|e| warn!(error = %crate::controller::error::readable_watch(&e), "watch failed; retrying"))
                .ok()
        });
    (store, stream)
}

/// A metadata-only cache of every `K` at a name of ours (`teamaccess-*`):
/// the watch is unfiltered (no selector can name a prefix), so each event is
/// filtered here before anything is stored, and managedFields are dropped.
/// Names never change, so an object once filtered out never needs storing.
fn names_cache<K>(
    client: Client,
) -> (
    Store<PartialObjectMeta<K>>,
    impl Stream<Item = PartialObjectMeta<K>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let ours = |m: &PartialObjectMeta<K>| {
        (m.metadata.name.as_deref()).is_some_and(|n| n.starts_with(naming::OBJECT_PREFIX))
    };
    // an Api of PartialObjectMeta asks for metadata only
    let api = Api::<PartialObjectMeta<K>>::all(client);
    let events = watcher(api, watcher::Config::default())
        .try_filter(move |e| {
            std::future::ready(match e {
                watcher::Event::Apply(m)
                | watcher::Event::InitApply(m)
                | watcher::Event::Delete(m) => ours(m),
                watcher::Event::Init | watcher::Event::InitDone => true,
            })
        })
        .map_ok(|e| {
            e.modify(|m| {
                m.metadata.managed_fields = None;
            })
        });
    reflected(events)
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

/// Runs the start-up checks until they pass, each problem logged once (as one
/// line with its fix) while it lasts, and the first one as `/readyz`'s reason.
async fn preflight(client: &Client, args: &Options, ready: &Readiness) {
    let lease_namespace = args
        .lease
        .as_ref()
        .map(|_| args.operator_namespace.as_str());
    let mut delay = Duration::from_secs(1);
    let mut reported: Vec<preflight::Problem> = Vec::new();
    loop {
        let problems = preflight::check(client, lease_namespace).await;
        if problems.is_empty() {
            if !reported.is_empty() {
                info!("start-up checks pass now");
            }
            return;
        }
        // WARN, not ERROR: the process is not failing, it waits for a fix
        // and goes on by itself
        for p in problems.iter().filter(|p| !reported.contains(p)) {
            warn!("{p}");
        }
        ready.not_ready(match problems.len() {
            1 => problems[0].to_string(),
            n => format!("{} (and {} more; see the log)", problems[0], n - 1),
        });
        reported = problems;
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

pub async fn run(args: Options) -> Result<(), RunError> {
    let gate = LeaseGate::default();
    let metrics = Arc::new(Metrics::default());
    let client = client(&args, &gate, &metrics).await?;
    let identity = args.identity.clone();
    let ready = Arc::new(Readiness::default());
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

    // what the process needs, checked before anything depends on it
    let shutdown = shutdown_signal().shared();
    tokio::select! {
        _ = preflight(&client, &args, &ready) => {},
        _ = shutdown.clone() => return Ok(()),
    }
    ready.not_ready("caches not synced");

    // caches: every namespace, and only the Roles and RoleBindings we label
    let managed = watcher::Config::default().labels(naming::MANAGED_SELECTOR);
    let (namespaces, ns_events) = cache(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        drop_managed_fields,
    );
    let (roles, role_events) = cache(
        Api::<Role>::all(client.clone()),
        managed.clone(),
        keep_writers_only,
    );
    let (bindings, binding_events) = cache(
        Api::<RoleBinding>::all(client.clone()),
        managed,
        keep_writers_only,
    );
    let (role_names, role_name_events) = names_cache::<Role>(client.clone());
    let (binding_names, binding_name_events) = names_cache::<RoleBinding>(client.clone());
    let caches = Caches {
        namespaces: namespaces.clone(),
        roles: roles.clone(),
        bindings: bindings.clone(),
        role_names: role_names.clone(),
        binding_names: binding_names.clone(),
    };
    // the controller's own watch is the one TeamAccess cache; it starts
    // when the controller does (once leading), since only the leader's
    // triggers need it, and a standby then holds no TeamAccess at all
    let (teamaccesses, ta_writer) = reflector::store();
    let ta_changes = watcher(
        Api::<TeamAccess>::all(client.clone()),
        teamaccess_watch(&args.selector),
    )
    .map_ok(|e| e.modify(drop_managed_fields))
    .default_backoff()
    .reflect(ta_writer)
    .inspect_err(
        |e| warn!(error = %crate::controller::error::readable_watch(e), "watch failed; retrying"),
    )
    .applied_objects()
    .predicate_filter(triggers::reconcile_worthy, Default::default());

    // triggers reach the controller only while we lead; before that they are
    // dropped, and leading starts with a reconcile of everything anyway
    let leading = Arc::new(AtomicBool::new(false));
    let arrivals = Arc::new(Arrivals::default());
    let (trigger, triggers) = mpsc::unbounded_channel::<ObjectRef<TeamAccess>>();
    {
        let (leading, trigger) = (leading.clone(), trigger.clone());
        let (tas, caches, arrivals) = (teamaccesses.clone(), caches.clone(), arrivals.clone());
        tokio::spawn(ns_events.for_each(move |ns| {
            if leading.load(Ordering::Relaxed) {
                let refs = triggers::for_namespace(&ns, &tas, &caches);
                if !refs.is_empty() {
                    arrivals.namespace_event(ns.metadata.name.as_deref().unwrap_or_default());
                }
                for r in refs {
                    let _ = trigger.send(r);
                }
            }
            std::future::ready(())
        }));
    }
    let owner_trigger = |kind: Kind| {
        let (leading, trigger, arrivals) = (leading.clone(), trigger.clone(), arrivals.clone());
        move |meta: &kube::api::ObjectMeta| {
            if leading.load(Ordering::Relaxed)
                && let Some(owner) = triggers::for_managed(meta)
            {
                let (ns, name) = (meta.namespace.as_deref(), meta.name.as_deref());
                arrivals.object_event(kind, ns.unwrap_or_default(), name.unwrap_or_default());
                let _ = trigger.send(owner);
            }
        }
    };
    fn each<K: kube::Resource>(
        mut f: impl FnMut(&kube::api::ObjectMeta),
    ) -> impl FnMut(K) -> std::future::Ready<()> {
        move |obj: K| {
            f(obj.meta());
            std::future::ready(())
        }
    }
    tokio::spawn(role_events.for_each(each::<Role>(owner_trigger(Kind::Role))));
    tokio::spawn(binding_events.for_each(each::<RoleBinding>(owner_trigger(Kind::RoleBinding))));
    tokio::spawn(
        role_name_events.for_each(each::<PartialObjectMeta<Role>>(owner_trigger(Kind::Role))),
    );
    tokio::spawn(
        binding_name_events.for_each(each::<PartialObjectMeta<RoleBinding>>(owner_trigger(
            Kind::RoleBinding,
        ))),
    );
    // a reconcile decides from these caches, so nothing is decided (and no
    // lease is sought) before they hold the whole picture; a shutdown
    // request while waiting ends the process at once
    let synced = async {
        let _ = tokio::join!(
            namespaces.wait_until_ready(),
            roles.wait_until_ready(),
            bindings.wait_until_ready(),
            role_names.wait_until_ready(),
            binding_names.wait_until_ready(),
        );
    };
    tokio::select! {
        _ = synced => {},
        _ = shutdown.clone() => return Ok(()),
    }
    ready.ready();
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
    let mut ctx = Context::new(
        client.clone(),
        reporter,
        args.settings.clone(),
        caches,
        groups,
        metrics.clone(),
        args.timing,
    );
    // shared with the triggers, which note arrivals before the context exists
    ctx.arrivals = arrivals;
    let ctx = Arc::new(ctx);
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
            gate,
        );
        info!(lease = %lease.name, identity = %identity, "waiting for the leader lease");
        tokio::select! {
            _ = elector.acquire() => {},
            _ = shutdown.clone() => return Ok(()),
        }
        let metrics = metrics.clone();
        Some(tokio::spawn(async move {
            tokio::select! {
                _ = elector.hold() => {
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

    Controller::for_stream(ta_changes, teamaccesses)
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
