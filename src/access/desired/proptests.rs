//! Property tests of the reconcile decision: for any TeamAccess the API server
//! would accept and any set of namespaces, [`compute`], [`role`] and
//! [`role_binding`] produce only objects the API server accepts, binding only
//! the declared groups to only the tier's rules, never in a protected or
//! terminating namespace; and the plan of every namespace is the one a plain
//! reading of the spec gives (an independent model below).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use super::*;
use crate::api::teamaccess::{
    EntraGroup, NamespaceSelector, SelectorOperator, SelectorRequirement, TeamAccessSpec,
};

pub(crate) const OPERATOR_NAMESPACE: &str = "teamaccess-system";

pub(crate) fn now() -> Timestamp {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

const DNS_LABEL: &str = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?";
const GUID: &str = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

/// Namespace names shared by grants and the generated Namespace objects, so
/// that names and selectors actually meet; protected ones among them.
const NAMESPACES: &[&str] = &[
    "payments-dev",
    "payments-prod",
    "orders",
    "data",
    "a",
    "z9",
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "flux-system",
    "argocd",
    "cert-manager",
    OPERATOR_NAMESPACE,
    "shared",
    "n123456789-123456789-123456789-123456789-123456789-123456789-12",
];

const LABEL_KEYS: &[&str] = &[
    "team",
    "env",
    "protected",
    "example.com/tier",
    "a_b.c",
    "kubernetes.io/metadata.name",
];

const LABEL_VALUES: &[&str] = &[
    "payments",
    "orders",
    "data",
    "prod",
    "dev",
    "true",
    "",
    "a_b.c",
    "V123456789-123456789-123456789-123456789-123456789-123456789-1z",
];

/// API groups a cluster might serve, with the ones Admin must never open.
const API_GROUPS: &[&str] = &[
    "",
    "apps",
    "batch",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "example.com",
    "cert-manager.io",
    "argoproj.io",
    "kustomize.toolkit.fluxcd.io",
    "*",
];

/// `--protected-namespace-selector` values, with what they mean.
pub(crate) type LabelTest = fn(&BTreeMap<String, String>) -> bool;
const PROTECTED_SELECTORS: &[(&str, LabelTest)] = &[
    ("protected=true", |l| {
        l.get("protected").map(String::as_str) == Some("true")
    }),
    ("env in (prod)", |l| {
        l.get("env").map(String::as_str) == Some("prod")
    }),
    ("env notin (dev)", |l| {
        l.get("env").map(String::as_str) != Some("dev")
    }),
    ("!team", |l| !l.contains_key("team")),
];

/// Cuts a name made of DNS labels to at most `max` and mends its end.
fn fit_name(mut s: String, max: usize) -> String {
    s.truncate(max);
    while s.ends_with(['.', '-']) {
        s.pop();
    }
    s
}

/// A name of `len` characters with a dot at `dot`, and dots every 50
/// characters elsewhere (labels stay within 63).
fn name_with_dot_at(dot: usize, len: usize, fill: &[u8]) -> String {
    let mut b: Vec<u8> = (0..len).map(|i| fill[i % fill.len()]).collect();
    b[dot] = b'.';
    for i in (50..len - 1).step_by(50) {
        if i.abs_diff(dot) > 1 {
            b[i] = b'.';
        }
    }
    String::from_utf8(b).unwrap()
}

/// TeamAccess names: DNS subdomains up to 253, many around the limits where
/// the object name (253) and the owner label (63) switch to prefix + hash.
fn ta_name() -> impl Strategy<Value = String> {
    let label_long = "[a-z0-9]([-a-z0-9]{30,61}[a-z0-9])";
    // the object name keeps 236 characters of `teamaccess-<name>`, so 225 of
    // the name; the owner label keeps 46
    let cut_dots = prop_oneof![43usize..=48, 222usize..=228];
    prop_oneof![
        3 => "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
        2 => vec(DNS_LABEL, 1..=8).prop_map(|ls| fit_name(ls.join("."), 253)),
        2 => (vec(label_long, 4..=6), 230usize..=253)
            .prop_map(|(ls, len)| fit_name(ls.join("."), len)),
        1 => (vec(DNS_LABEL, 2..=3), 58usize..=68)
            .prop_map(|(ls, len)| fit_name(ls.join("."), len)),
        2 => (cut_dots, 0usize..=30, vec(select(b"abz09".as_slice()), 1..=5))
            .prop_map(|(dot, extra, fill)| {
                let len = if dot < 100 { 63 + extra } else { 242 + extra.min(11) };
                name_with_dot_at(dot, len.max(dot + 2), &fill)
            }),
    ]
}

fn namespace_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(NAMESPACES).prop_map(String::from),
        1 => DNS_LABEL.prop_map(String::from),
    ]
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(LABEL_KEYS).prop_map(String::from),
        1 => "([a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,10}){0,3}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?",
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(LABEL_VALUES).prop_map(String::from),
        1 => "(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?",
    ]
}

fn labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(label_key(), label_value(), 0..=4)
}

fn requirement() -> impl Strategy<Value = SelectorRequirement> {
    let operator = select(
        &[
            SelectorOperator::In,
            SelectorOperator::NotIn,
            SelectorOperator::Exists,
            SelectorOperator::DoesNotExist,
        ][..],
    );
    (
        label_key(),
        operator,
        vec(label_value(), 1..=4),
        any::<bool>(),
    )
        .prop_map(|(key, operator, values, empty_list)| {
            let values = match operator {
                SelectorOperator::In | SelectorOperator::NotIn => Some(values),
                // `values: []` is allowed for these, as in Kubernetes
                SelectorOperator::Exists | SelectorOperator::DoesNotExist => {
                    empty_list.then(Vec::new)
                }
            };
            SelectorRequirement {
                key,
                operator,
                values,
            }
        })
}

fn selector() -> impl Strategy<Value = NamespaceSelector> {
    (
        option::of(btree_map(label_key(), label_value(), 0..=3)),
        option::of(vec(requirement(), 0..=3)),
    )
        .prop_filter("an empty selector is refused", |(ml, me)| {
            ml.as_ref().is_some_and(|m| !m.is_empty()) || me.as_ref().is_some_and(|e| !e.is_empty())
        })
        .prop_map(|(match_labels, match_expressions)| NamespaceSelector {
            match_labels,
            match_expressions,
        })
}

/// Seconds from `now`: often exactly at it or a second away.
fn offset() -> impl Strategy<Value = i64> {
    prop_oneof![
        1 => Just(0i64),
        1 => -2i64..=2,
        3 => -864_000i64..=864_000,
    ]
}

pub(crate) fn at(offset: i64) -> Time {
    Time(Timestamp::from_second(now().as_second() + offset).unwrap())
}

pub(crate) fn window() -> impl Strategy<Value = (Option<Time>, Option<Time>)> {
    (option::of(offset()), option::of(offset())).prop_map(|(from, until)| match (from, until) {
        (Some(f), Some(u)) => {
            let (f, u) = (f.min(u), f.max(u));
            (Some(at(f)), Some(at(if u == f { u + 1 } else { u })))
        }
        (f, u) => (f.map(at), u.map(at)),
    })
}

fn unique(names: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

fn grant() -> impl Strategy<Value = Grant> {
    let namespaces = prop_oneof![
        60 => vec(namespace_name(), 0..=8),
        1 => vec(DNS_LABEL.prop_map(String::from), 200..=256),
    ]
    .prop_map(unique);
    (
        select(&Tier::ALL[..]),
        option::of(namespaces),
        option::of(selector()),
        window(),
    )
        .prop_filter(
            "a grant needs namespaces or a selector",
            |(_, ns, sel, _)| ns.as_ref().is_some_and(|n| !n.is_empty()) || sel.is_some(),
        )
        .prop_map(
            |(tier, namespaces, namespace_selector, (from, until))| Grant {
                tier,
                namespaces,
                namespace_selector,
                valid_from: from,
                valid_until: until,
            },
        )
}

fn groups() -> impl Strategy<Value = Vec<EntraGroup>> {
    // mostly a few, sometimes up to the limit: validation's cost grows with size
    let sizes = prop_oneof![3 => 1usize..=4, 1 => 1usize..=64];
    sizes
        .prop_flat_map(|n| vec((GUID, option::of("\\PC{0,40}")), n))
        .prop_map(|gs| {
            let mut seen = BTreeSet::new();
            gs.into_iter()
                .filter(|(id, _)| seen.insert(id.clone()))
                .map(|(id, name)| EntraGroup { id, name })
                .collect()
        })
}

fn teamaccess() -> impl Strategy<Value = TeamAccess> {
    (
        ta_name(),
        groups(),
        prop_oneof![3 => 1usize..=4, 1 => 1usize..=32].prop_flat_map(|n| vec(grant(), n)),
        option::of(any::<bool>()),
        option::of("[a-f0-9]{8}-[a-f0-9]{4}"),
    )
        .prop_map(|(name, groups, grants, suspend, uid)| {
            let mut ta = TeamAccess::new(
                &name,
                TeamAccessSpec {
                    groups,
                    grants,
                    suspend,
                },
            );
            ta.metadata.uid = uid;
            // what GitOps tools put on it; never to be copied onto our objects
            ta.metadata.labels = Some(BTreeMap::from([(
                "argocd.argoproj.io/instance".into(),
                "platform".into(),
            )]));
            ta.metadata.annotations = Some(BTreeMap::from([(
                "kustomize.toolkit.fluxcd.io/name".into(),
                "access".into(),
            )]));
            ta
        })
}

fn namespaces() -> impl Strategy<Value = Vec<Namespace>> {
    btree_map(
        namespace_name(),
        (labels(), prop::bool::weighted(0.2)),
        0..=24,
    )
    .prop_map(|m| {
        m.into_iter()
            .map(|(name, (labels, terminating))| {
                let mut ns = Namespace::default();
                ns.metadata.name = Some(name);
                ns.metadata.labels = Some(labels);
                ns.metadata.deletion_timestamp = terminating.then(|| at(-60));
                ns
            })
            .collect()
    })
}

/// Operator settings: the defaults, maybe a protected selector, maybe more
/// excluded API groups; and the API groups the cluster serves.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) settings: Settings,
    pub(crate) protected_by_labels: Option<LabelTest>,
    pub(crate) served: BTreeSet<String>,
}

pub(crate) fn world() -> impl Strategy<Value = World> {
    (
        option::of(select(PROTECTED_SELECTORS)),
        vec(select(API_GROUPS), 0..=3),
        btree_set(select(API_GROUPS), 0..=API_GROUPS.len()),
    )
        .prop_map(|(protected, exclude, served)| {
            let mut settings = Settings::with_defaults(OPERATOR_NAMESPACE);
            settings.protected_selector =
                protected.map(|(s, _)| crate::api::selector::parse(s).expect("a valid selector"));
            settings
                .admin_exclude_api_groups
                .extend(exclude.into_iter().map(String::from));
            World {
                settings,
                protected_by_labels: protected.map(|(_, f)| f),
                served: served.into_iter().map(String::from).collect(),
            }
        })
}

/// Label selection as Kubernetes defines it, written out independently.
fn model_matches(sel: &NamespaceSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = sel.match_expressions.iter().flatten().all(|r| {
        let values = r.values.as_deref().unwrap_or_default();
        let got = labels.get(&r.key);
        match r.operator {
            SelectorOperator::In => got.is_some_and(|v| values.contains(v)),
            SelectorOperator::NotIn => got.is_none_or(|v| !values.contains(v)),
            SelectorOperator::Exists => got.is_some(),
            SelectorOperator::DoesNotExist => got.is_none(),
        }
    });
    by_labels && by_expressions
}

/// The plan of every namespace, read straight off the spec (sections 1-2).
pub(crate) fn model(
    ta: &TeamAccess,
    namespaces: &[Namespace],
    world: &World,
    now: Timestamp,
) -> Vec<(String, Tier, Plan)> {
    let existing: BTreeMap<&str, &Namespace> = namespaces
        .iter()
        .map(|n| (n.metadata.name.as_deref().unwrap(), n))
        .collect();
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for g in &ta.spec.grants {
        names.extend(g.namespaces.iter().flatten().map(String::as_str));
        if let Some(sel) = &g.namespace_selector {
            for (name, ns) in &existing {
                if model_matches(sel, ns.metadata.labels.as_ref().unwrap()) {
                    names.insert(name);
                }
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        let ns = existing.get(name);
        if ns.is_some_and(|n| n.metadata.deletion_timestamp.is_some()) {
            continue;
        }
        // (grant, named explicitly) for every grant that selects it
        let reaching: Vec<(&Grant, bool)> = ta
            .spec
            .grants
            .iter()
            .filter_map(|g| {
                let named = g.namespaces.iter().flatten().any(|n| n == name);
                let matched = ns.is_some_and(|ns| {
                    g.namespace_selector
                        .as_ref()
                        .is_some_and(|s| model_matches(s, ns.metadata.labels.as_ref().unwrap()))
                });
                (named || matched).then_some((g, named))
            })
            .collect();
        let started = |g: &Grant| g.valid_from.as_ref().is_none_or(|t| t.0 <= now);
        let ended = |g: &Grant| g.valid_until.as_ref().is_some_and(|t| t.0 <= now);
        let active: Vec<_> = reaching
            .iter()
            .filter(|(g, _)| started(g) && !ended(g))
            .collect();
        let best = |gs: &mut dyn Iterator<Item = &Grant>| gs.map(|g| g.tier).max().unwrap();
        let protected = world.settings.protected_namespaces.contains(name)
            || world
                .protected_by_labels
                .is_some_and(|f| ns.is_some_and(|ns| f(ns.metadata.labels.as_ref().unwrap())));
        let situation = Situation {
            active: !active.is_empty(),
            protected,
            named_by_active: active.iter().any(|(_, named)| *named),
            exists: ns.is_some(),
            some_not_started: reaching.iter().any(|(g, _)| !started(g)),
        };
        let plan = plan_from_table(situation);
        let tier = match plan {
            Plan::NotYetValid => best(
                &mut reaching
                    .iter()
                    .filter(|(g, _)| !started(g))
                    .map(|(g, _)| *g),
            ),
            Plan::Expired => best(&mut reaching.iter().map(|(g, _)| *g)),
            _ => best(&mut active.iter().map(|(g, _)| *g)),
        };
        let entry = (tier, plan);
        out.push((name.to_string(), entry.0, entry.1));
    }
    out
}

/// What the model knows of one selected namespace.
#[derive(Clone, Copy, Debug)]
struct Situation {
    /// Some grant selecting it is inside its validity window.
    active: bool,
    protected: bool,
    /// An active grant names it explicitly (not only by selector).
    named_by_active: bool,
    exists: bool,
    /// Some grant selecting it has not reached its validFrom.
    some_not_started: bool,
}

/// SPEC 2 as a truth table, written apart from the code's if/else chain so
/// the two cannot share a bug. Columns: active, protected, named by an
/// active grant, exists, some grant not started; `None` is "either".
#[rustfmt::skip]
const PLAN_TABLE: &[([Option<bool>; 5], Plan)] = &[
    ([Some(true),  Some(true),  Some(true),  None,        None       ], Plan::Denied),
    ([Some(true),  Some(true),  Some(false), None,        None       ], Plan::Skipped),
    ([Some(true),  Some(false), None,        Some(true),  None       ], Plan::Apply),
    ([Some(true),  Some(false), None,        Some(false), None       ], Plan::Pending),
    ([Some(false), None,        None,        None,        Some(true) ], Plan::NotYetValid),
    ([Some(false), None,        None,        None,        Some(false)], Plan::Expired),
];

/// The one row of [`PLAN_TABLE`] that fits; the table must cover every
/// situation exactly once.
fn plan_from_table(s: Situation) -> Plan {
    let facts = [
        s.active,
        s.protected,
        s.named_by_active,
        s.exists,
        s.some_not_started,
    ];
    let rows: Vec<Plan> = PLAN_TABLE
        .iter()
        .filter(|(cols, _)| {
            cols.iter()
                .zip(facts)
                .all(|(c, f)| c.is_none_or(|c| c == f))
        })
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "the truth table must decide {s:?} exactly once: {rows:?}"
    );
    rows[0]
}

#[test]
fn the_truth_table_covers_every_situation_exactly_once() {
    for bits in 0..32u8 {
        let b = |i: u8| bits & (1 << i) != 0;
        plan_from_table(Situation {
            active: b(0),
            protected: b(1),
            named_by_active: b(2),
            exists: b(3),
            some_not_started: b(4),
        });
    }
}

fn check(ta: TeamAccess, namespaces: Vec<Namespace>, world: World) -> Result<(), TestCaseError> {
    let now = now();
    let name = ta.metadata.name.clone().unwrap();

    // the generator makes only what the API server accepts
    let json = serde_json::to_value(&ta).unwrap();
    let errors = crate::api::validate::teamaccess(&json);
    prop_assert!(errors.is_empty(), "generated an invalid object: {errors:?}");
    // and render reads it back, strictly, as it was
    let text = serde_json::to_string(&ta).unwrap();
    let parsed = crate::cli::render::parse_teamaccesses(&text, "generated");
    prop_assert!(parsed.is_ok(), "render refuses it: {}", parsed.unwrap_err());
    let parsed = parsed.unwrap();
    prop_assert_eq!(parsed.len(), 1);
    prop_assert_eq!(serde_json::to_value(&parsed[0]).unwrap(), json);

    let index = index_namespaces(&namespaces);
    let d = compute(&ta, &index, &world.settings, now);

    prop_assert_eq!(
        d.targets
            .iter()
            .map(|t| (t.namespace.clone(), t.tier, t.plan))
            .collect::<Vec<_>>(),
        model(&ta, &namespaces, &world, now),
        "the plan differs from the model"
    );
    let next = ta
        .spec
        .grants
        .iter()
        .flat_map(|g| [&g.valid_from, &g.valid_until])
        .flatten()
        .map(|t| t.0)
        .filter(|t| *t > now)
        .min();
    prop_assert_eq!(d.next_transition, next);

    let rules = rules_by_tier(&world.served, &world.settings);
    let group_ids: Vec<&str> = ta.spec.groups.iter().map(|g| g.id.as_str()).collect();
    for t in &d.targets {
        let ns = index.get(t.namespace.as_str());
        prop_assert!(
            !ns.is_some_and(|n| n.terminating),
            "{} is terminating",
            t.namespace
        );
        if t.plan != Plan::Apply {
            continue;
        }
        let ns = ns.expect("an Apply target exists");
        prop_assert!(!world.settings.protected_namespaces.contains(&t.namespace));
        if let Some(sel) = &world.settings.protected_selector {
            prop_assert!(!sel.matches(ns.labels), "{} is protected", t.namespace);
        }

        let role = role(&ta, &t.namespace, t.tier, &rules[&t.tier]);
        let binding = role_binding(&ta, &t.namespace, t.tier);

        for meta in [&role.metadata, &binding.metadata] {
            let obj = meta.name.as_deref().unwrap();
            prop_assert!(naming::is_dns_subdomain(obj), "object name {obj:?}");
            prop_assert!(obj.len() <= naming::MAX_OBJECT_NAME);
            prop_assert!(obj.starts_with(naming::OBJECT_PREFIX), "{obj}");
            let full = format!("{}{name}", naming::OBJECT_PREFIX);
            if full.len() < naming::MAX_OBJECT_NAME {
                prop_assert_eq!(obj, full.as_str());
            }
            prop_assert_eq!(meta.namespace.as_deref(), Some(t.namespace.as_str()));
            let labels = meta.labels.as_ref().unwrap();
            prop_assert_eq!(
                labels.keys().map(String::as_str).collect::<Vec<_>>(),
                vec![
                    naming::LABEL_MANAGED_BY,
                    naming::LABEL_OWNER,
                    naming::LABEL_TIER
                ]
            );
            for v in labels.values() {
                prop_assert!(naming::is_label_value(v), "label value {v:?}");
            }
            prop_assert_eq!(&labels[naming::LABEL_TIER], t.tier.as_str());
            let owner = &labels[naming::LABEL_OWNER];
            // annotations: the full name when the label is shortened, and the
            // owner's UID (for cleanup after an orphaning delete) when there is one
            let mut expected = BTreeMap::new();
            if name.len() < naming::MAX_LABEL_VALUE {
                prop_assert_eq!(owner, &name);
            } else {
                expected.insert(naming::ANNOTATION_OWNER_NAME.to_string(), name.clone());
            }
            if let Some(uid) = &ta.metadata.uid {
                expected.insert(naming::ANNOTATION_OWNER_UID.to_string(), uid.clone());
            }
            prop_assert_eq!(
                meta.annotations.clone(),
                (!expected.is_empty()).then_some(expected)
            );
            match &ta.metadata.uid {
                None => prop_assert!(meta.owner_references.is_none()),
                Some(uid) => {
                    let refs = meta.owner_references.as_deref().unwrap();
                    prop_assert_eq!(refs.len(), 1);
                    prop_assert_eq!(&refs[0].uid, uid);
                    prop_assert_eq!(&refs[0].name, &name);
                    prop_assert_eq!(refs[0].controller, Some(true));
                    prop_assert_eq!(refs[0].block_owner_deletion, None);
                }
            }
        }
        prop_assert_eq!(&role.metadata.name, &binding.metadata.name);

        prop_assert_eq!(binding.role_ref.kind.as_str(), "Role");
        prop_assert_eq!(
            binding.role_ref.api_group.as_deref(),
            Some("rbac.authorization.k8s.io")
        );
        prop_assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
        let subjects = binding.subjects.as_deref().unwrap();
        prop_assert_eq!(
            subjects.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            group_ids.clone()
        );
        for s in subjects {
            prop_assert_eq!(s.kind.as_str(), "Group");
            prop_assert_eq!(s.api_group.as_deref(), Some("rbac.authorization.k8s.io"));
            prop_assert!(s.namespace.is_none());
        }

        let got = role.rules.as_deref().unwrap();
        let want = tiers::rules(
            t.tier,
            &world.served,
            &world.settings.admin_exclude_api_groups,
        );
        prop_assert_eq!(got, want.as_slice());
        // whatever discovery says, no tier opens every group, lets a namespace
        // admin escalate, or reaches an excluded group
        for r in got {
            prop_assert!(
                !r.api_groups.iter().flatten().any(|g| g == "*"),
                "wildcard group in {r:?}"
            );
            prop_assert!(r.resource_names.is_none() && r.non_resource_urls.is_none());
        }
        for verb in ["bind", "escalate"] {
            prop_assert!(!tiers::allows(
                got,
                "rbac.authorization.k8s.io",
                "roles",
                verb
            ));
            prop_assert!(!tiers::allows(
                got,
                "rbac.authorization.k8s.io",
                "clusterroles",
                verb
            ));
        }
        for g in &world.settings.admin_exclude_api_groups {
            if !g.is_empty() && g != "rbac.authorization.k8s.io" {
                prop_assert!(
                    !tiers::allows(got, g, "anything", "get"),
                    "{} opens excluded group {g:?}",
                    t.tier
                );
            }
        }
        if t.tier != Tier::Admin {
            prop_assert!(!tiers::allows(got, "example.com", "widgets", "get"));
            prop_assert!(!tiers::allows(
                got,
                "rbac.authorization.k8s.io",
                "roles",
                "get"
            ));
        }
        if t.tier == Tier::Reader {
            prop_assert!(!tiers::allows(got, "", "secrets", "get"));
            prop_assert!(!tiers::allows(got, "", "pods/exec", "create"));
        }
    }

    // render prints exactly a Role and a RoleBinding per Apply target, as YAML
    let out = crate::cli::render::render(
        std::slice::from_ref(&ta),
        crate::cli::render::Inventory::Given(&namespaces),
        &world.served,
        &world.settings,
        now,
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out)
        .map_err(|e| TestCaseError::fail(format!("render output is not YAML: {e}\n{out}")))?;
    prop_assert_eq!(docs.len(), 2 * d.to_apply().count());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_valid_teamaccess_yields_only_safe_valid_objects(
        ta in teamaccess(),
        namespaces in namespaces(),
        world in world(),
    ) {
        check(ta, namespaces, world)?;
    }
}

/// The name strategies reach both hashing limits and the dot-at-the-cut case.
#[test]
fn the_name_generator_reaches_the_limits() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let names: Vec<String> = (0..400)
        .map(|_| ta_name().new_tree(&mut runner).unwrap().current())
        .collect();
    for n in &names {
        assert!(naming::is_dns_subdomain(n), "{n:?}");
    }
    assert!(names.iter().any(|n| n.len() == 253));
    assert!(names.iter().any(|n| n.len() < naming::MAX_LABEL_VALUE));
    assert!(names.iter().any(|n| (63..242).contains(&n.len())));
    assert!(
        names
            .iter()
            .any(|n| n.len() >= 242 && n.as_bytes()[224] == b'.')
    );
    assert!(
        names
            .iter()
            .any(|n| n.len() >= 63 && n.as_bytes()[45] == b'.')
    );
}
