//! The `teamaccess` command line: `crd`, `render`, `run`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::access::desired::{DEFAULT_PROTECTED_NAMESPACES, Settings};
pub mod render;
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
    /// Run the controller.
    Run(Box<crate::controller::run::RunArgs>),
}

/// What decides which namespaces are written and what Admin covers; shared by
/// `run` and `render` so a render in CI predicts what the operator will do.
#[derive(Args, Debug, Clone)]
pub struct SettingsArgs {
    /// The operator's own namespace; always protected.
    #[arg(long, env = "POD_NAMESPACE", default_value = "teamaccess-system")]
    pub operator_namespace: String,

    /// Namespaces never written (replaces the default list; the operator's own
    /// namespace is always added).
    #[arg(long, env = "TEAMACCESS_PROTECTED_NAMESPACES", value_delimiter = ',',
          default_values_t = DEFAULT_PROTECTED_NAMESPACES.iter().map(|s| s.to_string()))]
    pub protected_namespaces: Vec<String>,

    /// Namespaces with labels matching this selector (kubectl -l syntax) are never written.
    #[arg(long, env = "TEAMACCESS_PROTECTED_NAMESPACE_SELECTOR")]
    pub protected_namespace_selector: Option<String>,

    /// API groups the Admin tier never grants (default: the Flux and Argo CD groups).
    #[arg(long, env = "TEAMACCESS_ADMIN_EXCLUDE_API_GROUPS", value_delimiter = ',',
          default_values_t = DEFAULT_ADMIN_EXCLUDE_API_GROUPS.iter().map(|s| s.to_string()))]
    pub admin_exclude_api_groups: Vec<String>,
}

impl SettingsArgs {
    pub fn settings(&self) -> Result<Settings, crate::api::selector::SelectorParseError> {
        let protected_selector = self
            .protected_namespace_selector
            .as_deref()
            .map(crate::api::selector::parse)
            .transpose()?;
        Ok(Settings {
            protected_namespaces: self
                .protected_namespaces
                .iter()
                .filter(|s| !s.is_empty())
                .cloned()
                .chain([self.operator_namespace.clone()])
                .collect(),
            protected_selector,
            admin_exclude_api_groups: self.admin_exclude_api_groups.clone(),
        })
    }
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// TeamAccess objects, one or more YAML documents; `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,

    /// Namespace objects (YAML documents, or the output of `kubectl get ns -o yaml`).
    /// Without it no namespace exists: named ones are Pending, selectors match nothing.
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
            render::parse_namespaces(&text, &name)?
        }
        None => Vec::new(),
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
    Ok(render::render(
        &access,
        &namespaces,
        &groups,
        &settings,
        now,
    ))
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
        Command::Run(args) => crate::controller::run::main(*args),
    }
}
