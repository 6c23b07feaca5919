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

use clap::{Args, ValueEnum};
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

use crate::access::naming;
use crate::api::teamaccess::TeamAccess;
use crate::cli::SettingsArgs;
use crate::controller::discovery;
use crate::controller::leader::LeaderElector;
use crate::controller::reconcile::{self, Context};
use crate::ops::metrics::Metrics;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Kubeconfig to use; in a Pod, leave it unset for the in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current one).
    #[arg(long, env = "TEAMACCESS_CONTEXT")]
    pub context: Option<String>,

    #[command(flatten)]
    pub settings: SettingsArgs,

    /// Only TeamAccess objects with these labels (kubectl -l syntax), so
    /// several instances can split the work.
    #[arg(long, env = "TEAMACCESS_SELECTOR")]
    pub selector: Option<String>,

    /// Every TeamAccess is reconciled at least this often, backing up the watches.
    #[arg(long, env = "TEAMACCESS_RESYNC_PERIOD", default_value = "10m", value_parser = parse_duration)]
    pub resync_period: Duration,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TEAMACCESS_HTTP_ADDRESS", default_value = "0.0.0.0:8080")]
    pub http_address: SocketAddr,

    /// Elect a leader on a Lease so replicas are safe; only the leader writes.
    #[arg(long, env = "TEAMACCESS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the Lease, in the operator's namespace.
    #[arg(
        long,
        env = "TEAMACCESS_LEADER_ELECTION_ID",
        default_value = "teamaccess"
    )]
    pub leader_election_id: String,

    /// How long a lease lasts without renewal before another replica may take it.
    #[arg(long, env = "TEAMACCESS_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often to try to take or renew the lease.
    #[arg(long, env = "TEAMACCESS_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = parse_duration)]
    pub lease_retry_period: Duration,

    /// This replica's name in the lease and in events (in a Pod: its name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Each write to the API server is abandoned (and retried later) after this.
    #[arg(long, env = "TEAMACCESS_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,

    /// A Forbidden answer that lasts this long is reported as Stalled.
    #[arg(long, env = "TEAMACCESS_FORBIDDEN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub forbidden_grace: Duration,

    #[arg(long, env = "TEAMACCESS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `90s`, `10m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s, 10m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "ms" => return Ok(Duration::from_millis(n)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("{0}")]
    Settings(#[from] crate::api::selector::SelectorParseError),
    #[error("serving {address}: {source}")]
    Http {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

pub fn main(args: RunArgs) -> i32 {
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %RunError::Runtime(e), "cannot start");
            return 1;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => 0,
        Err(e) => {
            error!(error = %e, "teamaccess stopped");
            1
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

async fn client(args: &RunArgs) -> Result<Client, RunError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let e = |e: &dyn std::fmt::Display| RunError::Kubeconfig(e.to_string());
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|x| e(&x))?;
            Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|x| e(&x))?
        }
        None if args.context.is_some() => {
            Config::from_kubeconfig(&options).await.map_err(|x| e(&x))?
        }
        None => Config::infer().await.map_err(|x| e(&x))?,
    };
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
            r.map_err(|e| warn!(error = %e, "watch failed; retrying"))
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

pub async fn run(args: RunArgs) -> Result<(), RunError> {
    let client = client(&args).await?;
    let settings = args.settings.settings()?;
    if let Some(s) = &args.selector {
        crate::api::selector::parse(s)?;
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("teamaccess-{}", std::process::id()));
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
        let (tas, roles, bindings) = (teamaccesses.clone(), roles.clone(), bindings.clone());
        tokio::spawn(ns_events.for_each(move |ns| {
            if leading.load(Ordering::Relaxed) {
                for r in reconcile::teamaccesses_for_namespace(&ns, &tas, &roles, &bindings) {
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
                && let Some(owner) = reconcile::controller_owner(obj.meta())
            {
                let _ = trigger.send(ObjectRef::new(&owner));
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
                warn!(error = %e, "discovery failed; retrying");
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
        settings,
        namespaces,
        roles,
        bindings,
        groups,
        metrics.clone(),
        args.resync_period,
        args.write_timeout,
        args.forbidden_grace,
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
                        Err(e) => warn!(error = %e, "discovery refresh failed"),
                    }
                }
            }),
        );
    }

    // leadership
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let holder = if args.leader_election {
        let mut elector = LeaderElector::new(
            client.clone(),
            &args.settings.operator_namespace,
            &args.leader_election_id,
            &identity,
            args.lease_duration,
            args.lease_retry_period,
        );
        info!(lease = %args.leader_election_id, identity = %identity, "waiting for the leader lease");
        tokio::select! {
            _ = elector.acquire() => {},
            _ = shutdown.clone() => return Ok(()),
        }
        let renew_deadline = args.lease_duration * 2 / 3;
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
