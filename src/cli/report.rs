//! `teamaccess report`: who has access to which namespaces through RBAC, and
//! what in that goes against the AKS guidance, as a table, JSON, CSV,
//! Markdown, or OpenMetrics counts. The listing is
//! [`crate::controller::inventory`]; the decisions are [`crate::review`];
//! here are the flags and the formats.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::review::findings::{self, Finding, Severity};
use crate::review::report::{self, BindingKind, Report, Row, Scope};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum By {
    Namespace,
    Subject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Markdown,
    /// Finding counts per kind, for a textfile collector or a CronJob's push.
    Openmetrics,
}

/// A severity threshold; a CI gate fails when a finding is at least this bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Low,
    Medium,
    High,
}

impl FailOn {
    pub fn severity(self) -> Severity {
        match self {
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
        }
    }
}

/// Exit codes: 0 done, [`EXIT_FINDINGS`] a finding at or above `--fail-on`,
/// [`EXIT_ERROR`] the report could not be made (so CI tells "access is wrong"
/// from "the job is broken").
pub const EXIT_FINDINGS: i32 = 1;
pub const EXIT_ERROR: i32 = 2;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Kubeconfig to use; in a Pod, leave it unset for the in-cluster config.
    /// Read access is enough: see config/rbac-report.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context (default: the current one).
    #[arg(long, env = "TEAMACCESS_CONTEXT")]
    pub context: Option<String>,

    /// Group the grants by namespace or by subject.
    #[arg(long, value_enum, default_value_t = By::Namespace)]
    pub by: By,

    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Entra group object IDs that may hold cluster-admin or admin through a
    /// ClusterRoleBinding (the break-glass group), comma-separated.
    #[arg(long, env = "TEAMACCESS_ALLOW_CLUSTER_ADMIN", value_delimiter = ',')]
    pub allow_cluster_admin: Vec<String>,

    /// Exit 1 when a finding is at least this severe (a CI gate).
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,

    /// Only these namespaces (comma-separated); cluster-wide grants are kept,
    /// since they apply there too.
    #[arg(long, value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Also list Kubernetes' own bootstrap bindings (never findings).
    #[arg(long)]
    pub include_bootstrap: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "--allow-cluster-admin: {0:?} is not an Entra group object ID (a lowercase GUID); a binding names groups by object ID"
    )]
    AllowList(String),
    #[error("--namespaces: {0:?} is not a namespace name (a DNS label)")]
    Namespace(String),
    #[error(transparent)]
    Inventory(#[from] crate::controller::inventory::InventoryError),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// `teamaccess report`; returns the exit code.
pub fn run(args: ReportArgs) -> i32 {
    match output(&args) {
        Ok((text, fails)) => {
            print!("{text}");
            if fails { EXIT_FINDINGS } else { 0 }
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}

fn output(args: &ReportArgs) -> Result<(String, bool), ReportError> {
    let options = options(args)?;
    let only: BTreeSet<String> = args.namespaces.iter().cloned().collect();
    if let Some(bad) = only
        .iter()
        .find(|n| !crate::access::naming::is_dns_label(n))
    {
        return Err(ReportError::Namespace(bad.clone()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ReportError::Runtime)?;
    let listed = runtime.block_on(crate::controller::inventory::list(
        args.kubeconfig.as_deref(),
        args.context.as_deref(),
    ))?;
    let now = Timestamp::now();
    let mut report = report::build(&listed.inventory, now);
    if !only.is_empty() {
        report.retain_namespaces(&only);
    }
    let found = findings::find(&report, &options);
    let fails = args
        .fail_on
        .is_some_and(|t| findings::worst(&found).is_some_and(|w| w >= t.severity()));
    let view = View::new(&report, &found, args.include_bootstrap);
    let text = match args.format {
        Format::Table => table(&view, args.by),
        Format::Json => json(&view, args.by, now),
        Format::Csv => csv(&view, args.by),
        Format::Markdown => markdown(&view, args.by, now),
        Format::Openmetrics => openmetrics(&found, now),
    };
    Ok((text, fails))
}

fn options(args: &ReportArgs) -> Result<findings::Options, ReportError> {
    let mut allow = BTreeSet::new();
    for id in args.allow_cluster_admin.iter().map(|s| s.trim()) {
        if id.is_empty() {
            continue;
        }
        if !findings::is_entra_object_id(id) {
            return Err(ReportError::AllowList(id.to_string()));
        }
        allow.insert(id.to_string());
    }
    Ok(findings::Options {
        allow_cluster_admin: allow,
    })
}

/// What the formats print: the rows shown, each with its findings.
pub struct View<'a> {
    pub rows: Vec<(&'a Row, Vec<&'a Finding>)>,
    pub findings: &'a [Finding],
    /// Bootstrap rows left out.
    pub hidden: usize,
}

type RowKey<'a> = (&'a Scope, &'a report::Who, BindingKind, &'a str);

impl<'a> View<'a> {
    pub fn new(report: &'a Report, found: &'a [Finding], include_bootstrap: bool) -> Self {
        let mut by_row: HashMap<RowKey<'a>, Vec<&'a Finding>> = HashMap::new();
        for f in found {
            by_row
                .entry((&f.scope, &f.subject, f.binding_kind, f.binding.as_str()))
                .or_default()
                .push(f);
        }
        let (shown, hidden): (Vec<&Row>, Vec<&Row>) =
            (report.rows.iter()).partition(|r| include_bootstrap || !r.bootstrap);
        let rows = shown
            .into_iter()
            .map(|r| {
                let key = (&r.scope, &r.subject, r.binding_kind, r.binding.as_str());
                (r, by_row.get(&key).cloned().unwrap_or_default())
            })
            .collect();
        View {
            rows,
            findings: found,
            hidden: hidden.len(),
        }
    }

    /// The rows in the order of `by`: grouped by namespace (cluster-wide
    /// first) or by subject.
    fn ordered(&self, by: By) -> Vec<&(&'a Row, Vec<&'a Finding>)> {
        let mut rows: Vec<_> = self.rows.iter().collect();
        if by == By::Subject {
            rows.sort_by(|(a, _), (b, _)| {
                (&a.subject, &a.scope, &a.binding).cmp(&(&b.subject, &b.scope, &b.binding))
            });
        }
        rows
    }

    fn summary(&self) -> String {
        let subjects: BTreeSet<&report::Who> = self.rows.iter().map(|(r, _)| &r.subject).collect();
        let namespaces: BTreeSet<&Scope> = (self.rows.iter())
            .map(|(r, _)| &r.scope)
            .filter(|s| **s != Scope::Cluster)
            .collect();
        let cluster = (self.rows.iter())
            .filter(|(r, _)| r.scope == Scope::Cluster)
            .count();
        let mut s = format!(
            "{} grants ({} cluster-wide, namespace *) to {} subjects in {} namespaces",
            self.rows.len(),
            cluster,
            subjects.len(),
            namespaces.len()
        );
        if self.hidden > 0 {
            let _ = write!(
                s,
                "; {} grants of Kubernetes' own bootstrap bindings not shown (--include-bootstrap)",
                self.hidden
            );
        }
        s
    }
}

fn subject_text(r: &Row) -> String {
    let who = r.subject.qualified_name();
    match &r.display_name {
        Some(name) => format!("{} {name} ({who})", r.subject.kind.as_str()),
        None => format!("{} {who}", r.subject.kind.as_str()),
    }
}

fn source_text(r: &Row) -> String {
    match &r.managed {
        Some(m) => match m.grant {
            Some(g) => format!("TeamAccess {} grants[{g}]", m.teamaccess),
            None => format!("TeamAccess {}", m.teamaccess),
        },
        None => format!("{} {}", r.binding_kind.as_str(), r.binding),
    }
}

fn role_text(r: &Row) -> String {
    format!("{} {}", r.role_kind.as_str(), r.role)
}

/// "never" for a managed grant without an end; empty where time does not apply.
fn until_text(r: &Row) -> String {
    match &r.managed {
        Some(m) => match m.valid_until {
            Some(t) => t.to_string(),
            None if m.grant.is_some() => "never".to_string(),
            None => String::new(),
        },
        None => String::new(),
    }
}

fn severity_counts(found: &[Finding]) -> String {
    let parts: Vec<String> = Severity::ALL
        .iter()
        .map(|s| {
            let n = found.iter().filter(|f| f.severity == *s).count();
            format!("{n} {}", s.as_str())
        })
        .collect();
    parts.join(", ")
}

fn aligned(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            (rows.iter())
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Columns aligned; the grouping column is printed once per group.
pub fn table(view: &View<'_>, by: By) -> String {
    let header = |first: &str, second: &str| {
        [first, second, "ACCESS", "SOURCE", "ROLE", "VALID UNTIL"]
            .map(String::from)
            .to_vec()
    };
    let mut rows = vec![match by {
        By::Namespace => header("NAMESPACE", "SUBJECT"),
        By::Subject => header("SUBJECT", "NAMESPACE"),
    }];
    let mut last = String::new();
    for (r, _) in view.ordered(by) {
        let (group, other) = match by {
            By::Namespace => (r.scope.as_str().to_string(), subject_text(r)),
            By::Subject => (subject_text(r), r.scope.as_str().to_string()),
        };
        let shown = if group == last {
            String::new()
        } else {
            group.clone()
        };
        last = group;
        rows.push(vec![
            shown,
            other,
            r.access.label().to_string(),
            source_text(r),
            role_text(r),
            until_text(r),
        ]);
    }
    let mut out = String::new();
    aligned(&mut out, &rows);
    let _ = writeln!(out, "\n{}", view.summary());
    let _ = writeln!(
        out,
        "\nFINDINGS: {} ({})",
        view.findings.len(),
        severity_counts(view.findings)
    );
    if !view.findings.is_empty() {
        let mut rows = vec![
            ["SEVERITY", "KIND", "NAMESPACE", "BINDING", "REASON"]
                .map(String::from)
                .to_vec(),
        ];
        for f in view.findings {
            rows.push(vec![
                f.severity.as_str().to_string(),
                f.kind.as_str().to_string(),
                f.scope.as_str().to_string(),
                format!("{} {}", f.binding_kind.as_str(), f.binding),
                f.reason.clone(),
            ]);
        }
        aligned(&mut out, &rows);
    }
    out
}

fn subject_json(r: &Row) -> Value {
    let mut s = json!({"kind": r.subject.kind.as_str(), "name": r.subject.name});
    if let Some(ns) = &r.subject.namespace {
        s["namespace"] = json!(ns);
    }
    if let Some(n) = &r.display_name {
        s["displayName"] = json!(n);
    }
    s
}

fn row_json(r: &Row, found: &[&Finding]) -> Value {
    let mut v = json!({
        "namespace": r.scope.as_str(),
        "clusterWide": r.scope == Scope::Cluster,
        "subject": subject_json(r),
        "access": r.access.label(),
        "binding": {"kind": r.binding_kind.as_str(), "name": r.binding},
        "role": {"kind": r.role_kind.as_str(), "name": r.role},
        "source": if r.managed.is_some() { "TeamAccess" } else { r.binding_kind.as_str() },
        "findings": found.iter().map(|f| f.kind.as_str()).collect::<Vec<_>>(),
    });
    if let Some(m) = &r.managed {
        v["teamAccess"] = json!({
            "name": m.teamaccess,
            "grant": m.grant,
            "validUntil": m.valid_until.map(|t| t.to_string()),
        });
    }
    if r.bootstrap {
        v["bootstrap"] = json!(true);
    }
    v
}

fn finding_json(f: &Finding) -> Value {
    let mut subject = json!({"kind": f.subject.kind.as_str(), "name": f.subject.name});
    if let Some(ns) = &f.subject.namespace {
        subject["namespace"] = json!(ns);
    }
    if let Some(n) = &f.display_name {
        subject["displayName"] = json!(n);
    }
    json!({
        "severity": f.severity.as_str(),
        "kind": f.kind.as_str(),
        "namespace": f.scope.as_str(),
        "subject": subject,
        "binding": {"kind": f.binding_kind.as_str(), "name": f.binding},
        "reason": f.reason,
    })
}

/// One object: the grants in groups (`{"namespace": .., "grants": [..]}` or
/// `{"subject": .., "grants": [..]}`), the findings, and their counts.
pub fn json(view: &View<'_>, by: By, now: Timestamp) -> String {
    let mut groups: Vec<Value> = Vec::new();
    let mut last: Option<Value> = None;
    for (r, found) in view.ordered(by) {
        let key = match by {
            By::Namespace => json!(r.scope.as_str()),
            By::Subject => subject_json(r),
        };
        if last.as_ref() != Some(&key) {
            let field = match by {
                By::Namespace => "namespace",
                By::Subject => "subject",
            };
            groups.push(json!({field: key.clone(), "grants": []}));
            last = Some(key);
        }
        if let Some(Value::Array(grants)) = groups.last_mut().map(|g| &mut g["grants"]) {
            grants.push(row_json(r, found));
        }
    }
    let counts: serde_json::Map<String, Value> = findings::counts(view.findings)
        .into_iter()
        .map(|(k, n)| (k.as_str().to_string(), json!(n)))
        .collect();
    let doc = json!({
        "generatedAt": now.to_string(),
        "by": match by { By::Namespace => "namespace", By::Subject => "subject" },
        "groups": groups,
        "findings": view.findings.iter().map(finding_json).collect::<Vec<_>>(),
        "counts": counts,
        "bootstrapGrantsHidden": view.hidden,
    });
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
    s.push('\n');
    s
}

/// A CSV field as RFC 4180 has it: quoted when it holds a comma, a quote or
/// a line break, quotes doubled.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub const CSV_HEADER: &str = "namespace,subject_kind,subject,display_name,access,source,source_name,grant,valid_until,binding_kind,binding,role_kind,role,severity,findings";

/// One line per grant, in the order of `by`; a finding's kinds and the worst
/// severity on the grant's own line, so a spreadsheet filter finds them.
pub fn csv(view: &View<'_>, by: By) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for (r, found) in view.ordered(by) {
        let (source, source_name, grant) = match &r.managed {
            Some(m) => (
                "TeamAccess",
                m.teamaccess.clone(),
                m.grant.map(|g| g.to_string()).unwrap_or_default(),
            ),
            None => (r.binding_kind.as_str(), r.binding.clone(), String::new()),
        };
        let worst = found.iter().map(|f| f.severity).max();
        let kinds: Vec<&str> = found.iter().map(|f| f.kind.as_str()).collect();
        let fields = [
            r.scope.as_str().to_string(),
            r.subject.kind.as_str().to_string(),
            r.subject.qualified_name(),
            r.display_name.clone().unwrap_or_default(),
            r.access.label().to_string(),
            source.to_string(),
            source_name,
            grant,
            r.managed
                .as_ref()
                .and_then(|m| m.valid_until)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            r.binding_kind.as_str().to_string(),
            r.binding.clone(),
            r.role_kind.as_str().to_string(),
            r.role.clone(),
            worst.map(|s| s.as_str().to_string()).unwrap_or_default(),
            kinds.join(";"),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// Findings first (what a reviewer acts on), then a section per group.
pub fn markdown(view: &View<'_>, by: By, now: Timestamp) -> String {
    let mut out = format!(
        "# Access report\n\nGenerated {now}. {}.\n\n## Findings\n\n",
        view.summary()
    );
    if view.findings.is_empty() {
        out.push_str("None.\n");
    } else {
        let _ = writeln!(out, "{}.\n", severity_counts(view.findings));
        out.push_str(
            "| Severity | Kind | Namespace | Binding | Reason |\n| --- | --- | --- | --- | --- |\n",
        );
        for f in view.findings {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {} `{}` | {} |",
                f.severity.as_str(),
                f.kind.as_str(),
                md(f.scope.as_str()),
                f.binding_kind.as_str(),
                md(&f.binding),
                md(&f.reason)
            );
        }
    }
    let _ = write!(
        out,
        "\n## Access by {}\n",
        match by {
            By::Namespace => "namespace",
            By::Subject => "subject",
        }
    );
    let mut last = String::new();
    for (r, found) in view.ordered(by) {
        let (group, other) = match by {
            By::Namespace => (
                match r.scope {
                    Scope::Cluster => "* (every namespace)".to_string(),
                    _ => format!("`{}`", r.scope.as_str()),
                },
                subject_text(r),
            ),
            By::Subject => (subject_text(r), r.scope.as_str().to_string()),
        };
        if group != last {
            let first = match by {
                By::Namespace => "Subject",
                By::Subject => "Namespace",
            };
            let _ = write!(
                out,
                "\n### {}\n\n| {first} | Access | Source | Role | Valid until | Findings |\n| --- | --- | --- | --- | --- | --- |\n",
                md(&group)
            );
            last = group;
        }
        let kinds: Vec<&str> = found.iter().map(|f| f.kind.as_str()).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            md(&other),
            r.access.label(),
            md(&source_text(r)),
            md(&role_text(r)),
            until_text(r),
            kinds.join(", ")
        );
    }
    out
}

pub const METRIC: &str = "teamaccess_report_findings";

/// Counts per finding kind (zeros too, so alerts can test for absence of
/// the job, not of a series), the time they were taken, and `# EOF`.
pub fn openmetrics(found: &[Finding], now: Timestamp) -> String {
    let mut out = format!(
        "# HELP {METRIC} Findings of teamaccess report, by kind; each kind has one severity.\n# TYPE {METRIC} gauge\n"
    );
    for (kind, n) in findings::counts(found) {
        let _ = writeln!(
            out,
            "{METRIC}{{kind=\"{}\",severity=\"{}\"}} {n}",
            kind.as_str(),
            kind.severity().as_str()
        );
    }
    let _ = write!(
        out,
        "# HELP teamaccess_report_timestamp_seconds When the report was made (Unix time).\n# TYPE teamaccess_report_timestamp_seconds gauge\nteamaccess_report_timestamp_seconds {}\n# EOF\n",
        now.as_second()
    );
    out
}

/// The kinds and counts in an OpenMetrics text, for tests and tools.
pub fn parse_counts(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(&format!("{METRIC}{{kind=\"")))
        .filter_map(|rest| {
            let (kind, rest) = rest.split_once('"')?;
            let n = rest.rsplit(' ').next()?.parse().ok()?;
            Some((kind.to_string(), n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::review::findings::FindingKind;
    use crate::review::report::tests::*;
    use crate::review::report::{BOOTSTRAP_LABEL, BOOTSTRAP_VALUE, build};

    fn view_of(inv: &report::Inventory) -> (Report, Vec<Finding>) {
        let r = build(inv, now());
        let f = findings::find(&r, &findings::Options::default());
        (r, f)
    }

    fn inventory() -> report::Inventory {
        let mut inv = sample();
        inv.role_bindings.push(rb(
            "payments-dev",
            "alice",
            ("ClusterRole", "edit"),
            vec![subject("User", "alice@example.com")],
        ));
        inv.cluster_role_bindings.push(crb(
            "everyone-views",
            "view",
            vec![subject("Group", "system:authenticated")],
        ));
        let pods = k8s_openapi::api::rbac::v1::PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        };
        inv.cluster_roles.extend([
            cluster_role("edit", vec![pods.clone()]),
            cluster_role("view", vec![pods]),
        ]);
        let mut boot = crb(
            "system:discovery",
            "system:discovery",
            vec![subject("Group", "system:authenticated")],
        );
        boot.metadata.labels = Some(BTreeMap::from([(
            BOOTSTRAP_LABEL.into(),
            BOOTSTRAP_VALUE.into(),
        )]));
        inv.cluster_role_bindings.push(boot);
        inv
    }

    #[test]
    fn the_table_groups_by_namespace_or_by_subject() {
        let (r, f) = view_of(&inventory());
        let view = View::new(&r, &f, false);
        let by_ns = table(&view, By::Namespace);
        let lines: Vec<&str> = by_ns.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE "), "{by_ns}");
        assert!(lines[1].starts_with("*  "), "cluster-wide first:\n{by_ns}");
        assert!(lines[2].starts_with("payments-dev "), "{by_ns}");
        // the second grant in payments-dev does not repeat the namespace
        assert!(lines[3].starts_with("   "), "{by_ns}");
        assert!(by_ns.contains("Group payments-developers (0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a)"));
        assert!(by_ns.contains("TeamAccess payments grants[2]"));
        assert!(by_ns.contains("2026-12-24T00:00:00Z"));
        assert!(by_ns.contains("RoleBinding alice"));
        assert!(
            by_ns.contains("FINDINGS: 3 (1 high, 1 medium, 1 low)"),
            "{by_ns}"
        );
        assert!(by_ns.contains("1 grants of Kubernetes' own bootstrap bindings not shown"));
        assert!(!by_ns.contains("system:discovery"));

        let by_subject = table(&view, By::Subject);
        let lines: Vec<&str> = by_subject.lines().collect();
        assert!(lines[0].starts_with("SUBJECT "));
        // Groups before Users; the payments group's three namespaces together
        assert!(
            lines[1].starts_with("Group payments-developers"),
            "{by_subject}"
        );
        assert!(
            lines[2].starts_with("   ") && lines[3].starts_with("   "),
            "{by_subject}"
        );
        assert!(
            lines[4].starts_with("Group system:authenticated"),
            "{by_subject}"
        );
        assert!(
            lines[5].starts_with("User alice@example.com"),
            "{by_subject}"
        );

        let all = View::new(&r, &f, true);
        assert!(table(&all, By::Namespace).contains("ClusterRoleBinding system:discovery"));
    }

    #[test]
    fn json_groups_carry_sources_and_findings() {
        let (r, f) = view_of(&inventory());
        let view = View::new(&r, &f, false);
        let v: Value = serde_json::from_str(&json(&view, By::Namespace, now())).unwrap();
        assert_eq!(v["groups"][0]["namespace"], "*");
        let dev = &v["groups"][1];
        assert_eq!(dev["namespace"], "payments-dev");
        let managed = &dev["grants"][0];
        assert_eq!(managed["source"], "TeamAccess");
        assert_eq!(managed["teamAccess"]["grant"], 2);
        assert_eq!(managed["access"], "Admin");
        assert_eq!(managed["subject"]["displayName"], "payments-developers");
        let alice = &dev["grants"][1];
        assert_eq!(alice["source"], "RoleBinding");
        assert_eq!(alice["access"], "custom");
        assert_eq!(alice["findings"], json!(["UserSubject"]));
        assert_eq!(v["counts"]["BroadSubject"], 1);
        assert_eq!(v["counts"]["NonEntraGroup"], 0);
        assert_eq!(v["findings"][0]["severity"], "high");
        assert_eq!(v["bootstrapGrantsHidden"], 1);

        let v: Value = serde_json::from_str(&json(&view, By::Subject, now())).unwrap();
        assert_eq!(v["groups"][0]["subject"]["name"], PAYMENTS);
        assert_eq!(v["groups"][0]["grants"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        let mut inv = inventory();
        inv.teamaccesses[0].spec.groups[0].name = Some("Payments, \"core\" devs".into());
        let (r, f) = view_of(&inv);
        let out = csv(&View::new(&r, &f, false), By::Namespace);
        let lines: Vec<&str> = out.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert!(
            lines[1].starts_with(
                "*,Group,system:authenticated,,custom,ClusterRoleBinding,everyone-views,,,"
            ),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with(",high,BroadSubject"), "{}", lines[1]);
        assert!(
            lines[2].starts_with(&format!("payments-dev,Group,{PAYMENTS},\"Payments, \"\"core\"\" devs\",Admin,TeamAccess,payments,2,2026-12-24T00:00:00Z,")),
            "{}",
            lines[2]
        );
        for l in &lines[1..lines.len() - 1] {
            let columns = split_csv(l).len();
            assert_eq!(columns, CSV_HEADER.split(',').count(), "{l}");
        }
    }

    /// Splits one CSV line as RFC 4180 reads it.
    fn split_csv(line: &str) -> Vec<String> {
        let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cur.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => out.push(std::mem::take(&mut cur)),
                _ => cur.push(c),
            }
        }
        out.push(cur);
        out
    }

    #[test]
    fn markdown_has_findings_then_a_section_per_group() {
        let mut inv = inventory();
        inv.teamaccesses[0].spec.groups[0].name = Some("pay|ments".into());
        let (r, f) = view_of(&inv);
        let out = markdown(&View::new(&r, &f, false), By::Namespace, now());
        let findings_at = out.find("## Findings").unwrap();
        let access_at = out.find("## Access by namespace").unwrap();
        assert!(findings_at < access_at);
        assert!(out.contains("### * (every namespace)"));
        assert!(out.contains("### `payments-dev`"));
        assert!(
            out.contains("pay\\|ments"),
            "a pipe in a name must not split the table"
        );
        assert!(out.contains("| high | BroadSubject | `*` |"));
    }

    #[test]
    fn openmetrics_counts_every_kind_and_ends_with_eof() {
        let (_, f) = view_of(&inventory());
        let out = openmetrics(&f, now());
        assert!(out.ends_with("# EOF\n"));
        assert!(out.contains("# TYPE teamaccess_report_findings gauge\n"));
        assert!(
            out.contains("teamaccess_report_findings{kind=\"BroadSubject\",severity=\"high\"} 1\n")
        );
        let counts = parse_counts(&out);
        assert_eq!(counts.len(), FindingKind::ALL.len());
        assert_eq!(counts["UserSubject"], 1);
        assert_eq!(counts["ClusterAdminBinding"], 0);
    }

    #[test]
    fn fail_on_compares_at_or_above() {
        let (_, f) = view_of(&sample());
        // the sample's one finding is low
        let worst = findings::worst(&f).unwrap();
        assert!(worst >= FailOn::Low.severity());
        assert!(worst < FailOn::Medium.severity());
        assert!(worst < FailOn::High.severity());
    }

    #[test]
    fn the_allow_list_takes_object_ids_only() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["teamaccess", "report"];
            argv.extend_from_slice(extra);
            match crate::cli::Cli::try_parse_from(argv).unwrap().command {
                crate::cli::Command::Report(a) => options(&a),
                _ => unreachable!(),
            }
        };
        let ok = parse(&["--allow-cluster-admin", &format!("{PAYMENTS},")]).unwrap();
        assert!(ok.allow_cluster_admin.contains(PAYMENTS));
        let err = parse(&["--allow-cluster-admin", "Platform-Admins"]).unwrap_err();
        assert!(err.to_string().contains("\"Platform-Admins\""), "{err}");
    }
}
