//! `teamaccess diff`: reads the two sides of a change (files or folders of a
//! GitOps repository), compares them with [`crate::review::diff`], and prints
//! the result as text, Markdown (a pull request comment) or JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::SettingsArgs;
use super::render::{self, OtherKinds, RenderError};
use crate::api::teamaccess::TeamAccess;
use crate::review::diff::{self, Access, Change, Diff, Direction, Group, Scope, Window};

/// Exit code when access changes, so CI can ask for an approval.
pub const EXIT_CHANGED: i32 = 1;
/// Exit code on invalid input (as clap's usage errors).
pub const EXIT_INVALID: i32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// TeamAccess objects before the change: a file, or a directory read
    /// recursively (*.yaml, *.yml, *.json; documents of other kinds are skipped).
    #[arg(long)]
    pub base: PathBuf,

    /// TeamAccess objects after the change, as --base.
    #[arg(long)]
    pub head: PathBuf,

    /// Namespace objects, as `render --namespaces` takes them: selectors are
    /// then also expanded into the namespaces they match. Without it every
    /// namespace a grant names is taken as existing.
    #[arg(long)]
    pub namespaces: Option<PathBuf>,

    /// Judge validFrom/validUntil at this time (RFC 3339) instead of now.
    #[arg(long)]
    pub now: Option<String>,

    /// text for a terminal, markdown for a pull request comment, json for tools.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    #[command(flatten)]
    pub settings: SettingsArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Input(#[from] RenderError),
    #[error(
        "--{flag} {path}: no such file or directory (for a repository without TeamAccess objects yet, pass an empty directory)"
    )]
    Missing { flag: &'static str, path: String },
    #[error(
        "{file}: document {document}: TeamAccess {name:?} is defined again (first in {first_file}, document {first_document}); the API server holds one object per name"
    )]
    Duplicate {
        file: String,
        document: usize,
        name: String,
        first_file: String,
        first_document: usize,
    },
    #[error(transparent)]
    Selector(#[from] crate::api::selector::SelectorParseError),
}

/// The files to read under `path`, sorted; hidden entries (`.git`) skipped.
fn files(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), DiffError> {
    let read_error = |source| RenderError::Read {
        source_name: path.display().to_string(),
        source,
    };
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        entries.push(entry.map_err(read_error)?.path());
    }
    entries.sort();
    for entry in entries {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') {
            continue;
        }
        if entry.is_dir() {
            files(&entry, out)?;
        } else if [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e)) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Every TeamAccess under `path` (a file or a directory), strictly validated.
pub fn load(flag: &'static str, path: &Path) -> Result<Vec<TeamAccess>, DiffError> {
    if !path.exists() {
        return Err(DiffError::Missing {
            flag,
            path: path.display().to_string(),
        });
    }
    let mut list = Vec::new();
    files(path, &mut list)?;
    let mut seen: BTreeMap<String, (String, usize)> = BTreeMap::new();
    let mut out = Vec::new();
    for file in list {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).map_err(|source| RenderError::Read {
            source_name: name.clone(),
            source,
        })?;
        for (document, ta) in render::parse_teamaccess_documents(&text, &name, OtherKinds::Skip)? {
            let ta_name = ta.metadata.name.clone().unwrap_or_default();
            if let Some((first_file, first_document)) = seen.get(&ta_name) {
                return Err(DiffError::Duplicate {
                    file: name,
                    document,
                    name: ta_name,
                    first_file: first_file.clone(),
                    first_document: *first_document,
                });
            }
            seen.insert(ta_name, (name.clone(), document));
            out.push(ta);
        }
    }
    Ok(out)
}

/// The comparison the arguments ask for.
pub fn compute(args: &DiffArgs) -> Result<Diff, DiffError> {
    let settings = args.settings.settings()?;
    let now = match &args.now {
        Some(s) => render::parse_now(s)?,
        None => Timestamp::now(),
    };
    let base = load("base", &args.base)?;
    let head = load("head", &args.head)?;
    let namespaces = match &args.namespaces {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| RenderError::Read {
                source_name: name.clone(),
                source,
            })?;
            Some(render::parse_namespaces(&text, &name)?)
        }
        None => None,
    };
    Ok(diff::diff(
        &base,
        &head,
        namespaces.as_deref(),
        &settings,
        now,
    ))
}

/// The sections of the output, in order: what needs a reviewer most first.
const SECTIONS: [(Direction, &str, &str); 3] = [
    (Direction::Widening, "Widening", "more access"),
    (
        Direction::Mixed,
        "Both ways",
        "more access at some tier or time, less at another",
    ),
    (Direction::Narrowing, "Narrowing", "less access"),
];

fn counts(d: &Diff) -> String {
    let parts: Vec<String> = SECTIONS
        .iter()
        .map(|(dir, _, _)| (d.count(*dir), dir.as_str()))
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    parts.join(", ")
}

fn basis(d: &Diff) -> String {
    if d.inventory {
        format!(
            "judged at {}; selectors expanded over the given namespaces, and also compared as written since they reach future namespaces too",
            d.now
        )
    } else {
        format!(
            "judged at {}; no --namespaces: every namespace a grant names is taken as existing, selectors are compared as written",
            d.now
        )
    }
}

pub fn text(d: &Diff) -> String {
    let mut out = if d.changed() {
        format!("Access changes: {}.\n", counts(d))
    } else {
        "No access changes.\n".to_string()
    };
    out.push_str(&format!("({})\n", basis(d)));
    for (dir, title, what) in SECTIONS {
        let lines: Vec<_> = d.changes.iter().filter(|c| c.direction == dir).collect();
        if lines.is_empty() {
            continue;
        }
        let mark = match dir {
            Direction::Widening => '+',
            Direction::Mixed => '~',
            Direction::Narrowing => '-',
        };
        out.push_str(&format!("\n{title} ({what}):\n"));
        for c in lines {
            out.push_str(&format!("  {mark} {}\n", c.sentence().plain()));
        }
    }
    if !d.refused.is_empty() {
        out.push_str("\nRefused (protected namespaces: no access, the operator reports Denied):\n");
        for r in &d.refused {
            out.push_str(&format!("  ! {}\n", r.sentence().plain()));
        }
    }
    if !d.notes.is_empty() {
        out.push_str("\nNotes (no access change):\n");
        for n in &d.notes {
            out.push_str(&format!("  * {}\n", n.sentence().plain()));
        }
    }
    out
}

pub fn markdown(d: &Diff) -> String {
    let mut out = if d.changed() {
        format!("### teamaccess diff: access changes ({})\n\n", counts(d))
    } else {
        "### teamaccess diff: no access changes\n\n".to_string()
    };
    out.push_str(&format!("_{}_\n", basis(d)));
    for (dir, title, what) in SECTIONS {
        let lines: Vec<_> = d.changes.iter().filter(|c| c.direction == dir).collect();
        if lines.is_empty() {
            continue;
        }
        out.push_str(&format!("\n**{title}** ({what})\n\n"));
        for c in lines {
            out.push_str(&format!("- {}\n", c.sentence().markdown()));
        }
    }
    if !d.refused.is_empty() {
        out.push_str(
            "\n**Refused** (protected namespaces: no access, the operator reports Denied)\n\n",
        );
        for r in &d.refused {
            out.push_str(&format!("- {}\n", r.sentence().markdown()));
        }
    }
    if !d.notes.is_empty() {
        out.push_str("\n**Notes** (no access change)\n\n");
        for n in &d.notes {
            out.push_str(&format!("- {}\n", n.sentence().markdown()));
        }
    }
    out
}

fn group_json(g: &Group) -> Value {
    json!({"id": g.id, "name": g.name})
}

fn time_json(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn window_json(w: &Window) -> Value {
    json!({"from": time_json(w.from), "until": time_json(w.until)})
}

fn access_json(a: Option<&Access>) -> Value {
    match a {
        None => Value::Null,
        Some(a) => a
            .levels
            .iter()
            .map(|l| json!({"tier": l.tier, "windows": l.windows.iter().map(window_json).collect::<Vec<_>>()}))
            .collect(),
    }
}

fn change_json(c: &Change) -> Value {
    let mut v = json!({
        "direction": c.direction.as_str(),
        "group": group_json(&c.group),
        "base": access_json(c.base.as_ref()),
        "head": access_json(c.head.as_ref()),
        "text": c.sentence().plain(),
    });
    let obj = v.as_object_mut().expect("an object");
    match &c.scope {
        Scope::Namespace(ns) => obj.insert("namespace".into(), ns.clone().into()),
        Scope::Selector(s) => obj.insert("selector".into(), s.clone().into()),
    };
    if let Some(at) = c.expired_at {
        obj.insert("expiredAt".into(), at.to_string().into());
    }
    if let Some(m) = &c.matches {
        obj.insert("matches".into(), m.clone().into());
    }
    v
}

pub fn json(d: &Diff) -> String {
    let v = json!({
        "changed": d.changed(),
        "now": d.now.to_string(),
        "inventory": d.inventory,
        "summary": {
            "widening": d.count(Direction::Widening),
            "mixed": d.count(Direction::Mixed),
            "narrowing": d.count(Direction::Narrowing),
            "refused": d.refused.len(),
        },
        "changes": d.changes.iter().map(change_json).collect::<Vec<_>>(),
        "refused": d.refused.iter().map(|r| json!({
            "group": group_json(&r.group),
            "namespace": r.namespace,
            "tier": r.tier,
            "teamAccess": r.team_access,
            "text": r.sentence().plain(),
        })).collect::<Vec<_>>(),
        "notes": d.notes.iter().map(|n| json!({"text": n.sentence().plain()})).collect::<Vec<_>>(),
    });
    let mut s = serde_json::to_string_pretty(&v).expect("JSON serializes");
    s.push('\n');
    s
}

/// `teamaccess diff`: prints the change; 0 none, 1 access changes, 2 invalid input.
pub fn run(args: DiffArgs) -> i32 {
    if let Some(w) = args.settings.warning() {
        eprintln!("warning: {w}");
    }
    match compute(&args) {
        Ok(d) => {
            print!(
                "{}",
                match args.format {
                    Format::Text => text(&d),
                    Format::Markdown => markdown(&d),
                    Format::Json => json(&d),
                }
            );
            if d.changed() { EXIT_CHANGED } else { 0 }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
    }
}
