//! The change in effective access between two sets of TeamAccess objects (a
//! pull request's base and head), as people read it.
//!
//! Effective access is per group and scope, over every object at once: moving
//! a grant from one object or file to another changes nothing. A scope is a
//! namespace, or, for a selector, the selector itself (the namespaces it
//! matches, present and future), so a selector change is a change whether or
//! not an inventory of namespaces is given. With an inventory, selectors are
//! also expanded into the namespaces they match there.
//!
//! Access is compared from `now` on, including grants that start later: a
//! pull request that adds an Admin grant from next week widens access now,
//! in the sense that matters to its reviewer. Expired grants grant nothing.
//! Protected namespaces are never access; grants naming them are refused.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;

use crate::access::desired::{self, NamespaceView, Settings};
use crate::access::text;
use crate::access::tiers::Tier;
use crate::api::teamaccess::{NamespaceSelector, SelectorOperator, TeamAccess};

/// Where access is held.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Namespace(String),
    /// Every namespace matching the selector, present and future; the
    /// selector in `kubectl -l` syntax with its terms sorted.
    Selector(String),
}

/// A stretch of time in which access holds: `from: None` means it holds
/// already, `until: None` that it does not end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub from: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

impl Window {
    pub const PERMANENT: Window = Window {
        from: None,
        until: None,
    };

    fn contains(&self, other: &Window) -> bool {
        starts_no_later(self.from, other.from) && ends_no_earlier(self.until, other.until)
    }
}

fn starts_no_later(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a <= b,
    }
}

fn ends_no_earlier(a: Option<Timestamp>, b: Option<Timestamp>) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

/// Sorted by start, overlapping and touching windows merged: two grants that
/// hand over at one instant are one stretch of access.
fn normalize(mut windows: Vec<Window>) -> Vec<Window> {
    windows.sort_by(|a, b| match (a.from, b.from) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => a.cmp(&b),
    });
    let mut out: Vec<Window> = Vec::new();
    for w in windows {
        if let Some(last) = out.last_mut() {
            let touches = match (w.from, last.until) {
                (_, None) | (None, _) => true,
                (Some(from), Some(until)) => from <= until,
            };
            if touches {
                if !ends_no_earlier(last.until, w.until) {
                    last.until = w.until;
                }
                continue;
            }
        }
        out.push(w);
    }
    out
}

/// Whether every window of `inner` lies inside a window of `outer`
/// (normalized, so a covered window lies inside a single one).
fn covered(inner: &[Window], outer: &[Window]) -> bool {
    inner.iter().all(|w| outer.iter().any(|o| o.contains(w)))
}

/// `tier` or more, during `windows`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Level {
    pub tier: Tier,
    pub windows: Vec<Window>,
}

/// What a group holds in one scope from now on: the highest tier first, then
/// each lower tier that holds for longer than the one above it. Tiers nest,
/// so this is exact: equal `Access` means equal access at every moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Never empty.
    pub levels: Vec<Level>,
}

impl Access {
    /// From the (tier, window) of every grant that reaches the scope; None
    /// when they grant nothing.
    fn of(grants: &[(Tier, Window)]) -> Option<Access> {
        let mut levels: Vec<Level> = Vec::new();
        for tier in Tier::ALL.into_iter().rev() {
            let windows = normalize(
                grants
                    .iter()
                    .filter(|(t, _)| *t >= tier)
                    .map(|(_, w)| *w)
                    .collect(),
            );
            let same_as_above = levels.last().is_some_and(|l| l.windows == windows);
            if !windows.is_empty() && !same_as_above {
                levels.push(Level { tier, windows });
            }
        }
        (!levels.is_empty()).then_some(Access { levels })
    }

    /// When the group holds `tier` or more.
    fn at_least(&self, tier: Tier) -> &[Window] {
        (self.levels.iter().rev())
            .find(|l| l.tier >= tier)
            .map(|l| &l.windows[..])
            .unwrap_or(&[])
    }

    pub fn top(&self) -> &Level {
        &self.levels[0]
    }
}

fn at_least(access: Option<&Access>, tier: Tier) -> &[Window] {
    access.map(|a| a.at_least(tier)).unwrap_or(&[])
}

/// Which way access moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// More tier, or the same tier for longer or sooner, and nothing less.
    Widening,
    /// Both: more somewhere (a higher tier, or another time), less elsewhere.
    Mixed,
    /// Less, and nothing more.
    Narrowing,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Widening => "widening",
            Direction::Mixed => "mixed",
            Direction::Narrowing => "narrowing",
        }
    }

    fn between(base: Option<&Access>, head: Option<&Access>) -> Option<Direction> {
        let widens = Tier::ALL
            .into_iter()
            .any(|t| !covered(at_least(head, t), at_least(base, t)));
        let narrows = Tier::ALL
            .into_iter()
            .any(|t| !covered(at_least(base, t), at_least(head, t)));
        match (widens, narrows) {
            (false, false) => None,
            (true, false) => Some(Direction::Widening),
            (false, true) => Some(Direction::Narrowing),
            (true, true) => Some(Direction::Mixed),
        }
    }
}

/// An Entra ID group: access is by id; the name is for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: Option<String>,
}

/// The access of one group in one scope changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub direction: Direction,
    pub group: Group,
    pub scope: Scope,
    pub base: Option<Access>,
    pub head: Option<Access>,
    /// The head still has grants here, but they are past validUntil: the
    /// latest of those times.
    pub expired_at: Option<Timestamp>,
    /// For a selector, with an inventory: the namespaces it matches there
    /// (protected ones left out, as the operator leaves them).
    pub matches: Option<Vec<String>>,
}

/// A grant in the head naming a protected namespace: it gives no access, and
/// the operator reports it as Denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub group: Group,
    pub namespace: String,
    pub tier: Tier,
    /// The TeamAccess objects holding the refused grant.
    pub team_access: Vec<String>,
}

/// Worth knowing, not an access change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// The same group id under another name: access is by id, so unchanged.
    Renamed {
        id: String,
        from: Option<String>,
        to: Option<String>,
    },
    /// `spec.suspend` changes: what the operator creates or restores, not
    /// what is declared.
    Suspend {
        team_access: String,
        suspended: bool,
    },
}

/// The whole comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    pub now: Timestamp,
    /// Whether namespaces were given (else named ones are taken as existing
    /// and selectors stay in selector form only).
    pub inventory: bool,
    /// Sorted: direction, group name, group id, scope.
    pub changes: Vec<Change>,
    /// Refusals in the head that the base does not have.
    pub refused: Vec<Refusal>,
    pub notes: Vec<Note>,
}

impl Diff {
    /// Whether access changes: what CI asks an approval for.
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }

    pub fn count(&self, direction: Direction) -> usize {
        (self.changes.iter())
            .filter(|c| c.direction == direction)
            .count()
    }
}

/// A selector in `kubectl -l` syntax, terms and values sorted, so the same
/// selector written two ways is one scope.
pub fn canonical(selector: &NamespaceSelector) -> String {
    let mut terms: BTreeSet<String> = BTreeSet::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        terms.insert(format!("{k}={v}"));
    }
    for r in selector.match_expressions.iter().flatten() {
        let values: BTreeSet<&str> = r.values.iter().flatten().map(String::as_str).collect();
        let list = values.into_iter().collect::<Vec<_>>().join(",");
        terms.insert(match r.operator {
            SelectorOperator::In => format!("{} in ({list})", r.key),
            SelectorOperator::NotIn => format!("{} notin ({list})", r.key),
            SelectorOperator::Exists => r.key.clone(),
            SelectorOperator::DoesNotExist => format!("!{}", r.key),
        });
    }
    terms.into_iter().collect::<Vec<_>>().join(",")
}

type Key = (String, Scope);

/// One side (base or head), gathered over all its objects.
#[derive(Default)]
struct Side {
    grants: BTreeMap<Key, Vec<(Tier, Window)>>,
    expired: BTreeMap<Key, Timestamp>,
    /// (group id, namespace) -> highest refused tier, and by which objects.
    refused: BTreeMap<(String, String), (Tier, BTreeSet<String>)>,
    names: BTreeMap<String, Option<String>>,
    suspended: BTreeMap<String, bool>,
    selectors: BTreeMap<String, NamespaceSelector>,
}

fn live(view: Option<&NamespaceView<'_>>) -> bool {
    !view.is_some_and(|v| v.terminating)
}

fn gather(
    objects: &[TeamAccess],
    inventory: Option<&BTreeMap<&str, NamespaceView<'_>>>,
    settings: &Settings,
    now: Timestamp,
) -> Side {
    let mut side = Side::default();
    let mut objects: Vec<&TeamAccess> = objects.iter().collect();
    // the first name given to a group wins; first by object name, so the
    // choice does not depend on file order
    objects.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for ta in objects {
        let ta_name = ta.metadata.name.clone().unwrap_or_default();
        side.suspended
            .insert(ta_name.clone(), ta.spec.suspend.unwrap_or(false));
        for g in &ta.spec.groups {
            let name = side.names.entry(g.id.clone()).or_default();
            if name.is_none() {
                name.clone_from(&g.name);
            }
        }
        for grant in &ta.spec.grants {
            let until = grant.valid_until.as_ref().map(|t| t.0);
            let expired = until.filter(|u| *u <= now);
            let window = Window {
                from: grant.valid_from.as_ref().map(|t| t.0).filter(|f| *f > now),
                until,
            };
            let mut scopes = Vec::new();
            let mut refused = Vec::new();
            for ns in grant.namespaces.iter().flatten() {
                let view = inventory.and_then(|i| i.get(ns.as_str()));
                if !live(view) {
                    continue;
                }
                if settings.is_protected(ns, view.map(|v| v.labels)) {
                    refused.push(ns.clone());
                } else {
                    scopes.push(Scope::Namespace(ns.clone()));
                }
            }
            if let Some(sel) = &grant.namespace_selector {
                let form = canonical(sel);
                side.selectors.insert(form.clone(), sel.clone());
                scopes.push(Scope::Selector(form));
                for ns in inventory
                    .map(|i| matches(sel, i, settings))
                    .unwrap_or_default()
                {
                    scopes.push(Scope::Namespace(ns));
                }
            }
            for g in &ta.spec.groups {
                for scope in &scopes {
                    let key = (g.id.clone(), scope.clone());
                    match expired {
                        Some(at) => {
                            let e = side.expired.entry(key).or_insert(at);
                            *e = (*e).max(at);
                        }
                        None => side
                            .grants
                            .entry(key)
                            .or_default()
                            .push((grant.tier, window)),
                    }
                }
                if expired.is_none() {
                    for ns in &refused {
                        let r = (side.refused)
                            .entry((g.id.clone(), ns.clone()))
                            .or_insert((grant.tier, BTreeSet::new()));
                        r.0 = r.0.max(grant.tier);
                        r.1.insert(ta_name.clone());
                    }
                }
            }
        }
    }
    side
}

/// The namespaces of the inventory a selector gives access to.
fn matches(
    selector: &NamespaceSelector,
    inventory: &BTreeMap<&str, NamespaceView<'_>>,
    settings: &Settings,
) -> Vec<String> {
    (inventory.iter())
        .filter(|(name, v)| {
            !v.terminating
                && selector.matches(v.labels)
                && !settings.is_protected(name, Some(v.labels))
        })
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The access change from `base` to `head`. `namespaces` is the inventory
/// (as `render --namespaces` takes it), or None.
pub fn diff(
    base: &[TeamAccess],
    head: &[TeamAccess],
    namespaces: Option<&[Namespace]>,
    settings: &Settings,
    now: Timestamp,
) -> Diff {
    let index = namespaces.map(desired::index_namespaces);
    let b = gather(base, index.as_ref(), settings, now);
    let h = gather(head, index.as_ref(), settings, now);

    let group = |id: &str| Group {
        id: id.to_string(),
        name: (h.names.get(id).or_else(|| b.names.get(id)))
            .cloned()
            .flatten(),
    };
    let keys: BTreeSet<&Key> = b.grants.keys().chain(h.grants.keys()).collect();
    let mut changes = Vec::new();
    for key in keys {
        let base_access = b.grants.get(key).and_then(|g| Access::of(g));
        let head_access = h.grants.get(key).and_then(|g| Access::of(g));
        let Some(direction) = Direction::between(base_access.as_ref(), head_access.as_ref()) else {
            continue;
        };
        let matches = match (&key.1, &index) {
            (Scope::Selector(form), Some(index)) => {
                let sel = h.selectors.get(form).or_else(|| b.selectors.get(form));
                sel.map(|s| matches(s, index, settings))
            }
            _ => None,
        };
        changes.push(Change {
            direction,
            group: group(&key.0),
            expired_at: head_access
                .is_none()
                .then(|| h.expired.get(key).copied())
                .flatten(),
            scope: key.1.clone(),
            base: base_access,
            head: head_access,
            matches,
        });
    }
    changes.sort_by(|x, y| {
        (x.direction, &x.group.name, &x.group.id, &x.scope).cmp(&(
            y.direction,
            &y.group.name,
            &y.group.id,
            &y.scope,
        ))
    });

    let mut refused: Vec<Refusal> = (h.refused.iter())
        .filter(|(k, (tier, _))| b.refused.get(k).map(|r| r.0) != Some(*tier))
        .map(|((id, ns), (tier, objects))| Refusal {
            group: group(id),
            namespace: ns.clone(),
            tier: *tier,
            team_access: objects.iter().cloned().collect(),
        })
        .collect();
    refused.sort_by(|x, y| {
        (&x.namespace, &x.group.name, &x.group.id).cmp(&(&y.namespace, &y.group.name, &y.group.id))
    });

    let mut notes = Vec::new();
    for (id, to) in &h.names {
        if let Some(from) = b.names.get(id)
            && from != to
        {
            notes.push(Note::Renamed {
                id: id.clone(),
                from: from.clone(),
                to: to.clone(),
            });
        }
    }
    for (name, suspended) in &h.suspended {
        if b.suspended.get(name).is_some_and(|was| was != suspended) {
            notes.push(Note::Suspend {
                team_access: name.clone(),
                suspended: *suspended,
            });
        }
    }

    Diff {
        now,
        inventory: namespaces.is_some(),
        changes,
        refused,
        notes,
    }
}

/// A piece of a sentence, so each output format can mark it up its own way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Group(Group),
    Tier(Tier),
    Scope(Scope),
    Time(Timestamp),
    /// A TeamAccess object's name.
    Object(String),
}

/// What one line of the output says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sentence(pub Vec<Part>);

impl Sentence {
    fn text(&mut self, s: &str) -> &mut Self {
        self.0.push(Part::Text(s.to_string()));
        self
    }

    fn push(&mut self, p: Part) -> &mut Self {
        self.0.push(p);
        self
    }

    fn windows(&mut self, windows: &[Window]) {
        for (i, w) in windows.iter().enumerate() {
            if i > 0 {
                self.text(" and");
            }
            if let Some(from) = w.from {
                self.text(" from ").push(Part::Time(from));
            }
            if let Some(until) = w.until {
                self.text(" until ").push(Part::Time(until));
            }
        }
    }

    /// "Admin in payments-prod until T, else Reader".
    fn access(&mut self, access: &Access, scope: Option<&Scope>) {
        for (i, level) in access.levels.iter().enumerate() {
            if i > 0 {
                self.text(", else ");
            }
            self.push(Part::Tier(level.tier));
            if i == 0
                && let Some(scope) = scope
            {
                self.text(" in ").push(Part::Scope(scope.clone()));
            }
            self.windows(&level.windows);
        }
    }

    /// "permanent", "time-bound until T".
    fn validity(&mut self, windows: &[Window]) {
        if windows == [Window::PERMANENT] {
            self.text("permanent");
        } else {
            self.text("time-bound");
            self.windows(windows);
        }
    }

    /// The plain-text line; the group id shortened when there is a name.
    pub fn plain(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(s) | Part::Object(s) => s.clone(),
                Part::Group(g) => match &g.name {
                    Some(name) => format!("group {name} ({})", short_id(&g.id)),
                    None => format!("group {}", g.id),
                },
                Part::Tier(t) => t.to_string(),
                Part::Scope(Scope::Namespace(ns)) => ns.clone(),
                Part::Scope(Scope::Selector(s)) => format!("namespaces matching {s}"),
                Part::Time(t) => t.to_string(),
            })
            .collect()
    }

    /// The Markdown line: tiers in bold, names in code spans.
    pub fn markdown(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(s) => s.clone(),
                Part::Object(s) => code(s),
                Part::Group(g) => match &g.name {
                    Some(name) => format!(
                        "group **{}** ({})",
                        escape_markdown(name),
                        code(&short_id(&g.id))
                    ),
                    None => format!("group {}", code(&g.id)),
                },
                Part::Tier(t) => format!("**{t}**"),
                Part::Scope(Scope::Namespace(ns)) => code(ns),
                Part::Scope(Scope::Selector(s)) => format!("namespaces matching {}", code(s)),
                Part::Time(t) => t.to_string(),
            })
            .collect()
    }
}

/// "0b8a..." from a GUID: enough for a person to tell groups apart in a line
/// that also carries the group's name.
pub fn short_id(id: &str) -> String {
    format!("{}...", id.get(..4).unwrap_or(id))
}

fn code(s: &str) -> String {
    // a backtick inside would end the span; a selector or name has none, but
    // a longer fence is cheap
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

fn escape_markdown(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape = matches!(
                c,
                '\\' | '*' | '_' | '`' | '[' | ']' | '<' | '>' | '|' | '#'
            );
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

impl Change {
    /// "group payments-developers (0b8a...) gains Writer in payments-dev".
    pub fn sentence(&self) -> Sentence {
        let mut s = Sentence::default();
        s.push(Part::Group(self.group.clone()));
        // what follows in one parenthesis: what it was, why it went, matches
        let mut after = Sentence::default();
        match (&self.base, &self.head) {
            (None, Some(head)) => {
                s.text(" gains ");
                s.access(head, Some(&self.scope));
            }
            (Some(base), None) => {
                s.text(" loses ");
                s.access(base, Some(&self.scope));
                match self.expired_at {
                    Some(at) => after.text("grant expired at ").push(Part::Time(at)),
                    None => after.text("grant removed"),
                };
            }
            (Some(base), Some(head)) => {
                let (b, h) = (base.top(), head.top());
                after.text("was ");
                if h.tier != b.tier {
                    s.text(if h.tier > b.tier {
                        " rises to "
                    } else {
                        " drops to "
                    });
                    s.access(head, Some(&self.scope));
                    after.access(base, None);
                } else if base.levels[1..] == head.levels[1..] {
                    s.text(": ")
                        .push(Part::Tier(h.tier))
                        .text(" in ")
                        .push(Part::Scope(self.scope.clone()))
                        .text(" becomes ");
                    s.validity(&h.windows);
                    after.validity(&b.windows);
                } else {
                    s.text(": access in ")
                        .push(Part::Scope(self.scope.clone()))
                        .text(" becomes ");
                    s.access(head, None);
                    after.access(base, None);
                }
            }
            (None, None) => {}
        }
        if let Some(m) = &self.matches {
            if !after.0.is_empty() {
                after.text("; ");
            }
            if m.is_empty() {
                after.text("matches no namespace in the inventory");
            } else {
                after.text(&format!("matches {}", text::first_and_more(m, 10, ", ")));
            }
        }
        if !after.0.is_empty() {
            s.text(" (");
            s.0.extend(after.0);
            s.text(")");
        }
        s
    }
}

impl Refusal {
    pub fn sentence(&self) -> Sentence {
        let mut s = Sentence::default();
        s.push(Part::Group(self.group.clone()))
            .text(" would get ")
            .push(Part::Tier(self.tier))
            .text(" in ")
            .push(Part::Scope(Scope::Namespace(self.namespace.clone())))
            .text(": refused, a protected namespace (TeamAccess ");
        for (i, name) in self.team_access.iter().enumerate() {
            if i > 0 {
                s.text(", ");
            }
            s.push(Part::Object(name.clone()));
        }
        s.text(")");
        s
    }
}

impl Note {
    pub fn sentence(&self) -> Sentence {
        let mut s = Sentence::default();
        match self {
            Note::Renamed { id, from, to } => {
                s.push(Part::Group(Group {
                    id: id.clone(),
                    name: None,
                }));
                match to {
                    Some(to) => s.text(&format!(" is now named {to:?}")),
                    None => s.text(" no longer has a name"),
                };
                if let Some(from) = from {
                    s.text(&format!(" (was {from:?})"));
                }
                s.text("; access is by id, so it is unchanged");
            }
            Note::Suspend {
                team_access,
                suspended,
            } => {
                s.text("TeamAccess ")
                    .push(Part::Object(team_access.clone()));
                s.text(if *suspended {
                    " becomes suspended: the operator stops creating and restoring its access, and still narrows it"
                } else {
                    " is no longer suspended: the operator creates and restores its access again"
                });
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
