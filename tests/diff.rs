//! `teamaccess diff` as a pull request's CI job runs it: the real binary on
//! files in a scratch directory, no cluster. Exit 0 when access does not
//! change, 1 when it does, 2 on invalid input naming file, document and field.
//! And the example CI files under `config/ci/`: they parse, and every
//! `teamaccess` command they hold is one the real binary accepts.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap::Parser;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_teamaccess");
/// Inside the sample's incident window (validFrom 2026-11-23, validUntil 2030-01-01).
const NOW: &str = "2026-12-02T12:00:00Z";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn p(path: &Path) -> String {
    path.to_str().expect("a UTF-8 path").to_string()
}

/// An empty scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("diff-tests")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A copy of config/samples (TeamAccess files, Namespaces, kustomization)
/// under `dir`, with `edit` applied to each file's text.
fn samples_copy(dir: &Path, edit: impl Fn(&str, String) -> String) -> PathBuf {
    let out = dir.to_path_buf();
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(repo("config/samples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(out.join(&name), edit(&name, text)).unwrap();
    }
    out
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run_in(dir: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        // the settings flags have environment equivalents: keep the caller's out
        .env_remove("POD_NAMESPACE")
        .env_remove("TEAMACCESS_PROTECTED_NAMESPACES")
        .env_remove("TEAMACCESS_UNPROTECT_DEFAULT_NAMESPACES")
        .env_remove("TEAMACCESS_PROTECTED_NAMESPACE_SELECTOR")
        .env_remove("TEAMACCESS_ADMIN_EXCLUDE_API_GROUPS")
        .stdin(Stdio::null());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let o = cmd.output().expect("the teamaccess binary runs");
    Run {
        code: o.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
    }
}

fn run(args: &[&str]) -> Run {
    run_in(None, args)
}

fn diff(base: &Path, head: &Path, extra: &[&str]) -> Run {
    let (base, head) = (p(base), p(head));
    let mut args = vec!["diff", "--base", &base, "--head", &head, "--now", NOW];
    args.extend(extra);
    run(&args)
}

#[test]
fn the_samples_against_themselves_exit_0() {
    let samples = repo("config/samples");
    let r = diff(&samples, &samples, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.starts_with("No access changes.\n"), "{}", r.stdout);
    assert!(r.stderr.is_empty(), "{}", r.stderr);
}

#[test]
fn moving_a_grant_to_another_file_exits_0() {
    let dir = scratch("moved");
    // the Writer grant of payments moves to a new object in a new file, in a
    // subdirectory; the rest of payments.yaml stays
    let head = samples_copy(&dir.join("head"), |name, text| {
        if name == "payments.yaml" {
            text.replace(
                "namespaces: [payments-dev, payments-staging]",
                "namespaces: [payments-dev]",
            )
        } else {
            text
        }
    });
    std::fs::create_dir_all(head.join("more")).unwrap();
    std::fs::write(
        head.join("more/staging.yml"),
        "apiVersion: teamaccess.dev/v1alpha1
kind: TeamAccess
metadata: {name: payments-staging}
spec:
  groups: [{id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a, name: payments-developers}]
  grants: [{tier: Writer, namespaces: [payments-staging]}]
",
    )
    .unwrap();
    let samples = repo("config/samples");
    for extra in [
        &[][..],
        &["--namespaces", &p(&repo("config/samples/namespaces.yaml"))],
    ] {
        let r = diff(&samples, &head, extra);
        assert_eq!(r.code, 0, "{extra:?}\n{}{}", r.stdout, r.stderr);
    }
    // the same move without the new file is a loss: the test sees the file
    std::fs::remove_file(head.join("more/staging.yml")).unwrap();
    let r = diff(&samples, &head, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains(
            "  - group payments-developers (0b8a...) loses Writer in payments-staging (grant removed)\n"
        ),
        "{}",
        r.stdout
    );
}

/// The sample change the docs show: a new namespace, a wider selector, a
/// shorter break-glass window, an Admin selector replaced by a named Writer.
fn sample_change(dir: &Path) -> PathBuf {
    samples_copy(dir, |name, text| {
        match name {
        "payments.yaml" => text
            .replace(
                "namespaces: [payments-dev, payments-staging]",
                "namespaces: [payments-dev, payments-staging, payments-qa]",
            )
            .replace("          team: payments\n          env: prod\n", "          team: payments\n"),
        "platform-oncall.yaml" => text.replace(
            "validFrom: \"2026-11-23T00:00:00Z\"\n      validUntil: \"2030-01-01T00:00:00Z\"",
            "validUntil: \"2026-12-24T00:00:00Z\"",
        ),
        "data-platform.yaml" => text.replace(
            "    - tier: Admin\n      namespaceSelector:\n        matchLabels: {team: data, env: sandbox}\n",
            "    - tier: Writer\n      namespaces: [data-sandbox]\n",
        ),
        _ => text,
    }
    })
}

#[test]
fn an_access_change_exits_1_and_reads_as_sentences() {
    let dir = scratch("change");
    let head = sample_change(&dir.join("head"));
    let samples = repo("config/samples");
    let r = diff(&samples, &head, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    let out = &r.stdout;
    assert!(
        out.starts_with("Access changes: 4 widening, 4 narrowing.\n"),
        "{out}"
    );
    let widening = out.find("\nWidening (more access):\n").expect(out);
    let narrowing = out.find("\nNarrowing (less access):\n").expect(out);
    assert!(widening < narrowing, "{out}");
    for (line, wider) in [
        (
            "  + group payments-developers (0b8a...) gains Writer in payments-qa\n",
            true,
        ),
        (
            "  + group payments-developers (0b8a...) gains Reader in namespaces matching team=payments\n",
            true,
        ),
        (
            "  + group data-engineers (9f8e...) gains Writer in data-sandbox\n",
            true,
        ),
        (
            "  - group payments-developers (0b8a...) loses Reader in namespaces matching env=prod,team=payments (grant removed)\n",
            false,
        ),
        (
            "  - group platform-oncall (5c2d...): Admin in payments-prod becomes time-bound until 2026-12-24T00:00:00Z (was time-bound until 2030-01-01T00:00:00Z)\n",
            false,
        ),
        (
            "  - group data-contractors (1a2b...) loses Admin in namespaces matching env=sandbox,team=data (grant removed)\n",
            false,
        ),
    ] {
        let at = out
            .find(line)
            .unwrap_or_else(|| panic!("missing {line:?} in\n{out}"));
        assert_eq!(
            at < narrowing,
            wider,
            "{line:?} in the wrong section\n{out}"
        );
    }

    // with the inventory, selectors also expand to the namespaces they match
    let ns = p(&repo("config/samples/namespaces.yaml"));
    let r = diff(&samples, &head, &["--namespaces", &ns]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    for line in [
        "  - group data-engineers (9f8e...) drops to Writer in data-sandbox (was Admin)\n",
        "  + group payments-developers (0b8a...) gains Reader in namespaces matching team=payments (matches payments-dev, payments-prod)\n",
        "  - group data-engineers (9f8e...) loses Admin in namespaces matching env=sandbox,team=data (grant removed; matches data-sandbox)\n",
    ] {
        assert!(r.stdout.contains(line), "missing {line:?} in\n{}", r.stdout);
    }
}

#[test]
fn markdown_and_json_say_the_same() {
    let dir = scratch("formats");
    let head = sample_change(&dir.join("head"));
    let samples = repo("config/samples");
    let md = diff(&samples, &head, &["--format", "markdown"]);
    assert_eq!(md.code, 1, "{}", md.stderr);
    assert!(
        md.stdout
            .starts_with("### teamaccess diff: access changes (4 widening, 4 narrowing)\n"),
        "{}",
        md.stdout
    );
    assert!(
        md.stdout.contains(
            "- group **payments-developers** (`0b8a...`) gains **Writer** in `payments-qa`\n"
        ),
        "{}",
        md.stdout
    );

    let js = diff(&samples, &head, &["--format", "json"]);
    assert_eq!(js.code, 1, "{}", js.stderr);
    let v: Value = serde_json::from_str(&js.stdout).expect("JSON");
    assert_eq!(v["changed"], true);
    assert_eq!(v["now"], NOW);
    assert_eq!(v["inventory"], false);
    assert_eq!(v["summary"]["widening"], 4);
    assert_eq!(v["summary"]["narrowing"], 4);
    let changes = v["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 8);
    let qa = changes
        .iter()
        .find(|c| c["namespace"] == "payments-qa")
        .expect("payments-qa");
    assert_eq!(qa["direction"], "widening");
    // the full id in JSON, never the short form
    assert_eq!(qa["group"]["id"], "0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a");
    assert_eq!(qa["group"]["name"], "payments-developers");
    assert_eq!(qa["base"], Value::Null);
    assert_eq!(
        qa["head"],
        serde_json::json!([{"tier": "Writer", "windows": [{"from": null, "until": null}]}])
    );
    let oncall = changes
        .iter()
        .find(|c| c["namespace"] == "payments-prod" && c["group"]["name"] == "platform-oncall")
        .expect("payments-prod");
    assert_eq!(oncall["direction"], "narrowing");
    assert_eq!(
        oncall["head"][0]["windows"][0]["until"],
        "2026-12-24T00:00:00Z"
    );
    assert!(changes.iter().any(|c| c["selector"] == "team=payments"));
    // every text line of the text output is in the JSON too
    let text = diff(&samples, &head, &[]).stdout;
    for c in changes {
        assert!(text.contains(c["text"].as_str().unwrap()), "{c}");
    }
}

#[test]
fn invalid_input_exits_2_naming_file_document_and_field() {
    let dir = scratch("invalid");
    let head = samples_copy(&dir.join("head"), |name, text| {
        if name == "payments.yaml" {
            format!(
                "{text}---\n{}",
                text.replace("name: payments\n", "name: payments-two\n")
                    .replace(
                        "    - tier: Writer\n",
                        "    - tier: Writer\n      validUntill: \"2026-12-01T00:00:00Z\"\n"
                    )
            )
        } else {
            text
        }
    });
    let r = diff(&repo("config/samples"), &head, &[]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
    assert!(
        r.stderr.contains("payments.yaml: document 2"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("spec.grants[0].validUntill: unknown field"),
        "{}",
        r.stderr
    );
    assert!(r.stdout.is_empty(), "nothing half-printed: {}", r.stdout);

    // a schema rule, from the CRD's own validation: uppercase group id
    let head = samples_copy(&dir.join("head2"), |name, text| {
        if name == "data-platform.yaml" {
            text.replace("9f8e7d6c-5b4a", "9F8E7D6C-5B4A")
        } else {
            text
        }
    });
    let r = diff(&repo("config/samples"), &head, &[]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("data-platform.yaml: document 1"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("spec.groups[0].id"), "{}", r.stderr);

    // one name in two files: the API server would hold one object
    let head = samples_copy(&dir.join("head3"), |_, text| text);
    std::fs::write(
        head.join("copy.yaml"),
        std::fs::read_to_string(repo("config/samples/payments.yaml")).unwrap(),
    )
    .unwrap();
    let r = diff(&repo("config/samples"), &head, &[]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("TeamAccess \"payments\" is defined again (first in ")
            && r.stderr.contains("copy.yaml, document 1)")
            && r.stderr.contains("payments.yaml: document 1: "),
        "{}",
        r.stderr
    );

    // a bad --now, a bad inventory
    let samples = repo("config/samples");
    let r = run(&[
        "diff",
        "--base",
        &p(&samples),
        "--head",
        &p(&samples),
        "--now",
        "soon",
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--now \"soon\""), "{}", r.stderr);
    let bad_ns = dir.join("ns.yaml");
    std::fs::write(
        &bad_ns,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, lables: {}}\n",
    )
    .unwrap();
    let r = diff(&samples, &samples, &["--namespaces", &p(&bad_ns)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("ns.yaml: document 1"), "{}", r.stderr);
    assert!(
        r.stderr.contains("metadata.lables: unknown field"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_missing_base_is_an_error_and_an_empty_one_is_no_access() {
    let dir = scratch("missing");
    let samples = repo("config/samples");
    let r = diff(&dir.join("nope"), &samples, &[]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("--base ")
            && r.stderr.contains("nope: no such file or directory")
            && r.stderr.contains("pass an empty directory"),
        "{}",
        r.stderr
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let r = diff(&empty, &samples, &[]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("\nNarrowing"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("  + group payments-developers (0b8a...) gains Writer in payments-dev\n"),
        "{}",
        r.stdout
    );
    // and a single file works as a side
    let r = diff(&empty, &repo("config/samples/payments.yaml"), &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stdout.contains("platform-oncall"), "{}", r.stdout);
}

#[test]
fn a_grant_in_a_protected_namespace_is_refused_not_access() {
    let dir = scratch("protected");
    let head = samples_copy(&dir.join("head"), |name, text| {
        if name == "payments.yaml" {
            text.replace(
                "namespaces: [payments-dev, payments-staging]",
                "namespaces: [payments-dev, payments-staging, kube-system]",
            )
        } else {
            text
        }
    });
    let samples = repo("config/samples");
    let r = diff(&samples, &head, &[]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("  ! group payments-developers (0b8a...) would get Writer in kube-system: refused, a protected namespace (TeamAccess payments)\n"),
        "{}",
        r.stdout
    );
    // the operator's flags decide what is protected: the same flags here
    let r = diff(
        &samples,
        &samples,
        &["--protected-namespaces", "payments-dev"],
    );
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = diff(
        &dir.join("head"),
        &samples,
        &["--unprotect-default-namespaces"],
    );
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("NOT protected"), "{}", r.stderr);
    assert!(
        r.stdout.contains("loses Writer in kube-system"),
        "{}",
        r.stdout
    );
}

#[test]
fn usage_errors_exit_2() {
    let samples = p(&repo("config/samples"));
    for args in [
        &["diff"][..],
        &["diff", "--base", &samples],
        &[
            "diff", "--base", &samples, "--head", &samples, "--format", "yaml",
        ],
        &["diff", "--base", &samples, "--head", &samples, "--bogus"],
    ] {
        let r = run(args);
        assert_eq!(r.code, 2, "{args:?}\n{}", r.stderr);
        assert!(!r.stderr.is_empty() && r.stdout.is_empty(), "{args:?}");
    }
}

/// Every string in a YAML value, depth first.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Words of one shell command line, up to a redirection, pipe or `;`, with
/// simple quoting and `$VAR` / `${VAR}` taken from `vars`.
fn words(line: &str, vars: &[(&str, &str)]) -> Vec<String> {
    let mut line = line.to_string();
    for (k, v) in vars {
        line = line
            .replace(&format!("${{{k}}}"), v)
            .replace(&format!("${k}"), v);
    }
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, ' ' | '\t') => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            (None, '>' | '|' | ';' | '&') => break,
            (None, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    assert!(
        !line.contains("$("),
        "command substitution in {line:?}: the test cannot follow it"
    );
    out
}

/// The `teamaccess ...` command lines of a CI file's scripts.
fn teamaccess_lines(file: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo(file)).unwrap();
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}"));
    assert!(!docs.is_empty(), "{file} is empty");
    let mut all = Vec::new();
    docs.iter().for_each(|d| strings(d, &mut all));
    let lines: Vec<String> = all
        .iter()
        .flat_map(|s| s.lines())
        .map(str::trim)
        .filter(|l| l.starts_with("teamaccess "))
        .map(str::to_string)
        .collect();
    assert!(!lines.is_empty(), "{file} runs no teamaccess command");
    lines
}

/// Runs each `teamaccess diff` line of a CI file in a directory laid out as
/// the job lays it out (`base/` and `head/` checkouts, or the head at the
/// top), with the samples in place of a repository's TeamAccess folder.
fn check_ci_file(file: &str, vars: &[(&str, &str)], layout: &[&str]) -> Vec<Vec<String>> {
    let dir = scratch(&file.replace('/', "-"));
    for at in layout {
        samples_copy(&dir.join(at), |_, t| t);
    }
    let mut commands = Vec::new();
    for line in teamaccess_lines(file) {
        let args = words(&line, vars);
        // the same parser as the binary
        if let Err(e) = teamaccess::cli::Cli::try_parse_from(&args) {
            panic!("{file}: {line:?} is not a valid teamaccess command line:\n{e}");
        }
        assert_eq!(args[1], "diff", "{file}: {line:?}");
        let r = run_in(
            Some(&dir),
            &args[1..].iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(
            r.code, 0,
            "{file}: {line:?} on the samples\n{}{}",
            r.stdout, r.stderr
        );
        commands.push(args);
    }
    commands
}

#[test]
fn the_github_actions_workflow_parses_and_runs_a_real_diff() {
    let file = "config/ci/github-actions.yml";
    let text = std::fs::read_to_string(repo(file)).unwrap();
    let wf: Value = serde_saphyr::from_str(&text).unwrap();
    assert!(
        wf["on"]["pull_request"].is_object(),
        "{file}: runs on pull requests"
    );
    let jobs = wf["jobs"].as_object().expect("jobs");
    // the access change waits for a person: a job in a protected environment
    assert!(
        jobs.values()
            .any(|j| j["environment"].is_string() || j["environment"]["name"].is_string()),
        "{file}: an approval job in an environment with required reviewers"
    );
    let path = wf["env"]["TEAMACCESS_PATH"]
        .as_str()
        .expect("env.TEAMACCESS_PATH");
    let commands = check_ci_file(
        file,
        &[("TEAMACCESS_PATH", path)],
        &[&format!("base/{path}"), &format!("head/{path}")],
    );
    assert!(
        commands
            .iter()
            .any(|c| c.windows(2).any(|w| w == ["--format", "markdown"])),
        "{file}: posts Markdown: {commands:?}"
    );
}

#[test]
fn the_gitlab_pipeline_parses_and_runs_a_real_diff() {
    let file = "config/ci/gitlab-ci.yml";
    let text = std::fs::read_to_string(repo(file)).unwrap();
    let ci: Value = serde_saphyr::from_str(&text).unwrap();
    let path = ci["variables"]["TEAMACCESS_PATH"]
        .as_str()
        .expect("variables.TEAMACCESS_PATH");
    let commands = check_ci_file(
        file,
        &[("TEAMACCESS_PATH", path)],
        &[&format!("base/{path}"), path],
    );
    assert!(
        commands
            .iter()
            .any(|c| c.windows(2).any(|w| w == ["--format", "markdown"])),
        "{file}: posts Markdown: {commands:?}"
    );
    // every job that runs on merge requests only
    let jobs: Vec<&Value> = ci
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| {
            !k.starts_with('.') && (v.get("script").is_some() || v.get("trigger").is_some())
        })
        .map(|(_, v)| v)
        .collect();
    assert!(jobs.len() >= 2, "{file}: a diff job and an approval step");
}
