//! The layout is the architecture: only `src/controller/` (and `main.rs`)
//! may hold a Kubernetes client. Everything else is pure or offline, so it is
//! tested without a cluster and `render` runs with nothing but Rust.

use std::path::{Path, PathBuf};

/// Names that mean "talks to the API server".
const FORBIDDEN: &[&str] = &["Client", "Api", "runtime"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `kube` path a file names: `kube::api::Api`, and each name inside
/// `use kube::{api::{Api, Patch}, Client};`, with comments left out.
fn kube_paths(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("kube::") {
        // a `kube` that is part of another name (`my_kube::`) does not count
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let end = if tail["kube::".len()..].starts_with('{') {
            // the matching close brace of a grouped import
            let mut depth = 0;
            tail.char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    c == '}' && depth == 0
                })
                .map(|(i, _)| i + 1)
                .unwrap_or(tail.len())
        } else {
            tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len())
        };
        if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            paths.push(tail[..end].to_string());
        }
        rest = &tail[end.max(1)..];
    }
    paths
}

fn offending(path: &str) -> Option<&'static str> {
    let words: Vec<&str> = path
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    FORBIDDEN.iter().copied().find(|f| words.contains(f))
}

#[test]
fn only_the_controller_talks_to_the_api_server() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel.starts_with("controller") || rel == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        for p in kube_paths(&text) {
            if let Some(word) = offending(&p) {
                found.push(format!("src/{}: `{p}` names {word}", rel.display()));
            }
        }
    }
    assert!(files.len() > 20, "walked too few files: {}", files.len());
    assert!(
        found.is_empty(),
        "only src/controller/ may hold a Kubernetes client:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_every_way_of_naming_a_client() {
    for (text, bad) in [
        ("use kube::Client;", true),
        ("let a: kube::Api<Role> = todo!();", true),
        ("use kube::api::Api;", true),
        ("use kube::runtime::watcher;", true),
        (
            "use kube::{\n    api::{Api, Patch},\n    Resource,\n};",
            true,
        ),
        ("use kube::{Client, ResourceExt};", true),
        ("use kube::{CustomResource, KubeSchema};", false),
        ("use kube::core::{Selector, SelectorExt};", false),
        ("// kube::Client in a comment", false),
        ("use my_kube::Client;", false),
    ] {
        let hit = kube_paths(text).iter().any(|p| offending(p).is_some());
        assert_eq!(hit, bad, "{text}");
    }
}

#[test]
fn a_newcomer_finds_the_architecture_in_the_folder_names() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for path in [
        "api/teamaccess.rs",
        "access/tiers.rs",
        "access/desired.rs",
        "access/plan.rs",
        "controller/reconcile.rs",
        "cli/mod.rs",
        "ops/metrics.rs",
    ] {
        assert!(src.join(path).is_file(), "src/{path} is where people look");
    }
}
