//! Reads the API server's audit log for `make bench` (hack/bench.sh), with
//! the same reader the integration tests count requests with.
//!
//!   bench-audit extract AUDIT_LOG RUN_JSON > audit.jsonl
//!       keeps the operator's own requests and the admin's triggers
//!       (RoleBinding deletes, namespace creates), the fields read here only,
//!       so a run's evidence is small enough to keep.
//!   bench-audit report RUNS_DIR OUT_JSON
//!       one table per scenario on stdout, both operators and the ratio
//!       teamaccess / rbac-manager per figure; the same as JSON in OUT_JSON.

mod analyse;
mod audit;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use analyse::{OPERATORS, Run};

#[derive(Parser)]
#[command(about = "Reads the API server's audit log for make bench")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The operator's requests and the admin's triggers, one short line each.
    Extract {
        audit_log: PathBuf,
        run_json: PathBuf,
    },
    /// Tables and JSON over every run in RUNS_DIR.
    Report {
        runs_dir: PathBuf,
        out_json: PathBuf,
    },
}

fn read_run(path: &Path) -> Result<Run, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map(Run)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn events(path: &Path) -> Result<Vec<audit::AuditEvent>, String> {
    audit::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn extract(audit_log: &Path, run_json: &Path) -> Result<(), String> {
    let run = read_run(run_json)?;
    let user = run.text("user");
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // line by line: the whole log of a run at M is hundreds of MiB
    let file =
        std::fs::File::open(audit_log).map_err(|e| format!("{}: {e}", audit_log.display()))?;
    for line in std::io::BufRead::lines(std::io::BufReader::new(file)) {
        let line = line.map_err(|e| format!("{}: {e}", audit_log.display()))?;
        let Some(e) = audit::AuditEvent::parse(&line) else {
            continue;
        };
        let trigger = (e.verb == "delete" && e.resource == "rolebindings")
            || (e.verb == "create" && e.resource == "namespaces");
        if e.user == user || trigger {
            writeln!(out, "{}", e.to_line()).map_err(|e| e.to_string())?;
        }
    }
    out.flush().map_err(|e| e.to_string())
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let load: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average_at_report": load,
    })
}

fn report(runs_dir: &Path, out_json: &Path) -> Result<(), String> {
    let mut scenarios: BTreeMap<String, BTreeMap<String, serde_json::Map<String, Value>>> =
        BTreeMap::new();
    let mut floors: BTreeMap<String, Value> = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs_dir)
        .map_err(|e| format!("{}: {e}", runs_dir.display()))?
        .filter_map(|d| d.ok().map(|d| d.path()))
        .collect();
    dirs.sort();
    for dir in &dirs {
        let path = dir.join("floor.json");
        if let Ok(text) = std::fs::read_to_string(&path) {
            let floor =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let run = read_run(&dir.join("run.json"))?;
            floors.insert(run.text("scenario").to_string(), floor);
        }
    }
    for dir in dirs.iter().filter(|d| d.join("audit.jsonl").exists()) {
        let run = read_run(&dir.join("run.json"))?;
        let figures = analyse::analyse(&run, &events(&dir.join("audit.jsonl"))?)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        scenarios
            .entry(run.text("scenario").to_string())
            .or_default()
            .insert(run.text("operator").to_string(), figures);
    }
    let mut doc = json!({
        "date": k8s_openapi::jiff::Timestamp::now().to_string(),
        "machine": machine(),
        "scenarios": {},
    });
    let mut order: Vec<&String> = scenarios.keys().collect();
    order.sort_by_key(|s| "SML".find(s.as_str()).unwrap_or(usize::MAX));
    for sc in order {
        let ops = &scenarios[sc];
        let Some(any) = OPERATORS.iter().find_map(|op| ops.get(*op)) else {
            continue;
        };
        let r = &any["run"];
        println!(
            "\nscenario {sc}: {} CRs, {} namespaces, {} RoleBindings expected; drift {} deletes {} ms apart + burst {}; onboarding {} namespaces; steady state {} s",
            r["crs"],
            r["namespaces"],
            r["expected_bindings"],
            r["drift_events"],
            r["gap_ms"],
            r["burst"],
            r["onboard_events"],
            r["idle_seconds"]
        );
        let floor = floors.get(sc);
        let (text, rows) = analyse::table(ops, floor);
        print!("{text}");
        doc["scenarios"][sc] = json!({"figures": rows, "runs": ops, "floor": floor});
    }
    if let Some(parent) = out_json.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    std::fs::write(out_json, text).map_err(|e| format!("{}: {e}", out_json.display()))
}

fn main() {
    let result = match Args::parse().command {
        Command::Extract {
            audit_log,
            run_json,
        } => extract(&audit_log, &run_json),
        Command::Report { runs_dir, out_json } => report(&runs_dir, &out_json),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
