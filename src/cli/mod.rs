//! The `teamaccess` command line: every flag and subcommand (`crd`,
//! `render`, `diff`, `run`, `report`). `run` turns its flags into [`Options`] for the
//! controller; nothing here talks to the API server.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::error;

use crate::access::desired::{DEFAULT_PROTECTED_NAMESPACES, Settings};
use crate::controller::Timing;
use crate::controller::run::{LeaseOptions, Options};
pub mod diff;
pub mod render;
pub mod report;
use crate::access::tiers::DEFAULT_ADMIN_EXCLUDE_API_GROUPS;

#[derive(Parser, Debug)]
#[command(
    name = "teamaccess",
    version,
    about = "Entra ID group access to Kubernetes namespaces, as the AKS built-in roles, kept true by a controller"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the TeamAccess CustomResourceDefinition as YAML.
    Crd,
    /// Print, offline, the Roles and RoleBindings that TeamAccess objects would produce.
    Render(RenderArgs),
    /// Print, offline, how access changes between two sets of TeamAccess
    /// files; exit 0 no change, 1 access changes, 2 invalid input.
    Diff(diff::DiffArgs),
    /// Run the controller.
    Run(Box<RunArgs>),
    /// Who has access to which namespaces through RBAC, and what goes against
    /// the AKS guidance (read access to the cluster is enough).
    Report(report::ReportArgs),
}

/// What decides which namespaces are written and what Admin covers; shared by
/// `run`, `render` and `diff` so what CI shows predicts what the operator does.
#[derive(Args, Debug, Clone)]
pub struct SettingsArgs {
    /// The operator's own namespace; always protected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "teamaccess-system")]
    pub operator_namespace: String,

    /// More namespaces never written, in addition to the defaults
    /// (kube-system, kube-public, kube-node-lease, flux-system, argocd,
    /// cert-manager) and the operator's own namespace.
    #[arg(long, env = "TEAMACCESS_PROTECTED_NAMESPACES", value_delimiter = ',')]
    pub protected_namespaces: Vec<String>,

    /// Drop the default protected namespaces (the operator's own stays
    /// protected). A namespace admin of kube-system is a cluster admin: use
    /// this only on a cluster where those namespaces are not what they seem.
    #[arg(long, env = "TEAMACCESS_UNPROTECT_DEFAULT_NAMESPACES", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub unprotect_default_namespaces: bool,

    /// Namespaces with labels matching this selector (kubectl -l syntax) are never written.
    #[arg(long, env = "TEAMACCESS_PROTECTED_NAMESPACE_SELECTOR")]
    pub protected_namespace_selector: Option<String>,

    /// API groups the Admin tier never grants (default: the Flux and Argo CD groups).
    #[arg(long, env = "TEAMACCESS_ADMIN_EXCLUDE_API_GROUPS", value_delimiter = ',',
          default_values_t = DEFAULT_ADMIN_EXCLUDE_API_GROUPS.iter().map(|s| s.to_string()))]
    pub admin_exclude_api_groups: Vec<String>,
}

/// Said at start by `run` and `render` when the defaults are dropped.
pub const UNPROTECTED_WARNING: &str = "--unprotect-default-namespaces: kube-system, kube-public, kube-node-lease, flux-system, argocd and cert-manager are NOT protected; a TeamAccess can grant Admin there";

impl SettingsArgs {
    /// The warning to give at start, if protection was narrowed.
    pub fn warning(&self) -> Option<&'static str> {
        self.unprotect_default_namespaces
            .then_some(UNPROTECTED_WARNING)
    }

    pub fn settings(&self) -> Result<Settings, crate::api::selector::SelectorParseError> {
        let protected_selector = self
            .protected_namespace_selector
            .as_deref()
            .map(crate::api::selector::parse)
            .transpose()?;
        let defaults = if self.unprotect_default_namespaces {
            &[][..]
        } else {
            DEFAULT_PROTECTED_NAMESPACES
        };
        let protected: Vec<String> = (defaults.iter().map(|s| s.to_string()))
            .chain(self.protected_namespaces.iter().cloned())
            .collect();
        Ok(Settings::new(
            &protected,
            protected_selector,
            self.admin_exclude_api_groups.clone(),
            &self.operator_namespace,
        ))
    }
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// TeamAccess objects, one or more YAML documents; `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Namespace objects (YAML documents, or the output of `kubectl get ns -o yaml`).
    /// Without it every namespace a grant names is taken as existing, and
    /// selectors match nothing.
    #[arg(long)]
    pub namespaces: Option<PathBuf>,

    /// Judge validFrom/validUntil at this time (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,

    /// API groups the cluster serves, for the Admin tier (comma-separated; the
    /// output of `kubectl api-versions` works). Default: a plain Kubernetes 1.36.
    #[arg(long, value_delimiter = ',')]
    pub api_groups: Option<Vec<String>>,

    #[command(flatten)]
    pub settings: SettingsArgs,
}

fn read(path: &PathBuf) -> Result<(String, String), render::RenderError> {
    let name = path.display().to_string();
    let text = if name == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s)
    } else {
        std::fs::read_to_string(path)
    };
    text.map(|t| (t, name.clone()))
        .map_err(|source| render::RenderError::Read {
            source_name: name,
            source,
        })
}

fn run_render(args: RenderArgs) -> Result<String, Box<dyn std::error::Error>> {
    if let Some(w) = args.settings.warning() {
        eprintln!("warning: {w}");
    }
    let settings = args.settings.settings()?;
    let now = match &args.now {
        Some(s) => render::parse_now(s)?,
        None => k8s_openapi::jiff::Timestamp::now(),
    };
    let (text, name) = read(&args.file)?;
    let access = render::parse_teamaccesses(&text, &name)?;
    let namespaces = match &args.namespaces {
        Some(path) => {
            let (text, name) = read(path)?;
            Some(render::parse_namespaces(&text, &name)?)
        }
        None => None,
    };
    let inventory = match &namespaces {
        Some(list) => render::Inventory::Given(list),
        None => render::Inventory::NamedOnly,
    };
    let groups: BTreeSet<String> = match args.api_groups {
        // `kubectl api-versions` prints group/version, and plain v1 for core
        Some(list) => list
            .iter()
            .map(|g| g.trim())
            .filter(|g| !g.is_empty())
            .map(|g| {
                if g == "v1" {
                    ""
                } else {
                    g.split('/').next().unwrap_or(g)
                }
                .to_string()
            })
            .chain([String::new()])
            .collect(),
        None => render::KUBERNETES_API_GROUPS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    Ok(render::render(&access, inventory, &groups, &settings, now))
}

/// Runs a parsed command line; returns the process exit code.
pub fn main(cli: Cli) -> i32 {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::api::teamaccess::crd_yaml());
            0
        }
        Command::Render(args) => match run_render(args) {
            Ok(out) => {
                print!("{out}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        },
        Command::Diff(args) => diff::run(args),
        Command::Run(args) => run(*args),
        Command::Report(args) => report::run(args),
    }
}

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

    /// A Forbidden answer, or any failed write, that lasts this long is
    /// reported as Stalled (before that: Reconciling, retried with backoff).
    #[arg(long, env = "TEAMACCESS_FORBIDDEN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub forbidden_grace: Duration,

    /// A grant that was valid for longer than this and ends within it gets a
    /// GrantExpiringSoon event and a line in the Ready message.
    #[arg(long, env = "TEAMACCESS_EXPIRY_WARNING", default_value = "24h", value_parser = parse_duration)]
    pub expiry_warning: Duration,

    #[arg(long, env = "TEAMACCESS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl RunArgs {
    /// The controller's options; refuses selectors that do not parse.
    pub fn options(&self) -> Result<Options, crate::api::selector::SelectorParseError> {
        if let Some(s) = &self.selector {
            crate::api::selector::parse(s)?;
        }
        Ok(Options {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            settings: self.settings.settings()?,
            operator_namespace: self.settings.operator_namespace.clone(),
            selector: self.selector.clone(),
            http_address: self.http_address,
            lease: self.leader_election.then(|| LeaseOptions {
                name: self.leader_election_id.clone(),
                duration: self.lease_duration,
                retry_period: self.lease_retry_period,
            }),
            identity: (self.identity.clone())
                .unwrap_or_else(|| format!("teamaccess-{}", std::process::id())),
            timing: Timing {
                resync: self.resync_period,
                write_timeout: self.write_timeout,
                forbidden_grace: self.forbidden_grace,
                expiry_warning: self.expiry_warning,
            },
        })
    }
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

/// `teamaccess run`: logging, a runtime, the controller.
fn run(args: RunArgs) -> i32 {
    init_logging(args.log_format);
    if let Some(w) = args.settings.warning() {
        tracing::warn!("{w}");
    }
    let options = match args.options() {
        Ok(o) => o,
        Err(e) => {
            error!(error = %e, "teamaccess stopped");
            return 1;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    match runtime.block_on(crate::controller::run::run(options)) {
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
