use super::*;
use serde_json::{Value, json};

use crate::api::fixtures::namespace;

const PAYMENTS: &str = "0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a";
const ONCALL: &str = "5c2d8e1f-7a3b-4c9d-8e6f-0a1b2c3d4e5f";

fn now() -> Timestamp {
    "2026-12-01T00:00:00Z".parse().unwrap()
}

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// TeamAccess `name` for `groups` ([(id, name)]) with `grants`.
fn ta(name: &str, groups: &[(&str, &str)], grants: Value) -> TeamAccess {
    let groups: Vec<Value> = groups
        .iter()
        .map(|(id, n)| json!({"id": id, "name": n}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "metadata": {"name": name},
        "spec": {"groups": groups, "grants": grants},
    }))
    .expect("a valid TeamAccess")
}

fn payments(grants: Value) -> TeamAccess {
    ta("payments", &[(PAYMENTS, "payments-developers")], grants)
}

fn settings() -> Settings {
    Settings::with_defaults("teamaccess-system")
}

fn run(base: &[TeamAccess], head: &[TeamAccess]) -> Diff {
    diff(base, head, None, &settings(), now())
}

/// The plain lines of the changes, in order.
fn lines(d: &Diff) -> Vec<String> {
    d.changes.iter().map(|c| c.sentence().plain()).collect()
}

#[test]
fn moving_a_grant_between_objects_changes_nothing() {
    let base = [payments(json!([
        {"tier": "Writer", "namespaces": ["payments-dev", "payments-staging"]},
        {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "payments", "env": "prod"}}},
    ]))];
    // split over two objects, the namespaces in another order, the selector
    // written the other way round
    let head = [
        payments(json!([{"tier": "Writer", "namespaces": ["payments-staging"]}])),
        ta(
            "payments-more",
            &[(PAYMENTS, "payments-developers")],
            json!([
                {"tier": "Writer", "namespaces": ["payments-dev"]},
                {"tier": "Reader", "namespaceSelector": {"matchLabels": {"env": "prod", "team": "payments"}}},
                // below Writer where Writer holds: no change either
                {"tier": "Reader", "namespaces": ["payments-dev"]},
            ]),
        ),
    ];
    let d = run(&base, &head);
    assert!(!d.changed(), "{:?}", lines(&d));
    assert!(d.notes.is_empty() && d.refused.is_empty());
}

#[test]
fn gains_and_losses_read_as_sentences() {
    let base = [payments(json!([
        {"tier": "Writer", "namespaces": ["payments-dev"]},
        {"tier": "Admin", "namespaces": ["data-sandbox"]},
    ]))];
    let head = [payments(json!([
        {"tier": "Writer", "namespaces": ["payments-dev", "payments-qa"]},
    ]))];
    let d = run(&base, &head);
    assert_eq!(
        lines(&d),
        [
            "group payments-developers (0b8a...) gains Writer in payments-qa",
            "group payments-developers (0b8a...) loses Admin in data-sandbox (grant removed)",
        ]
    );
    assert_eq!(d.count(Direction::Widening), 1);
    assert_eq!(d.count(Direction::Narrowing), 1);
}

#[test]
fn a_tier_rises_or_drops() {
    let base = [payments(json!([
        {"tier": "Writer", "namespaces": ["payments-dev"]},
        {"tier": "Admin", "namespaces": ["payments-sandbox"]},
    ]))];
    let head = [payments(json!([
        {"tier": "Admin", "namespaces": ["payments-dev"]},
        {"tier": "Reader", "namespaces": ["payments-sandbox"]},
    ]))];
    let d = run(&base, &head);
    assert_eq!(
        lines(&d),
        [
            "group payments-developers (0b8a...) rises to Admin in payments-dev (was Writer)",
            "group payments-developers (0b8a...) drops to Reader in payments-sandbox (was Admin)",
        ]
    );
    assert_eq!(d.changes[0].direction, Direction::Widening);
    assert_eq!(d.changes[1].direction, Direction::Narrowing);
}

#[test]
fn a_permanent_grant_that_becomes_time_bound_is_narrowing() {
    let until = "2026-12-24T00:00:00Z";
    let base = [ta(
        "oncall",
        &[(ONCALL, "platform-oncall")],
        json!([{"tier": "Admin", "namespaces": ["payments-prod"]}]),
    )];
    let head = [ta(
        "oncall",
        &[(ONCALL, "platform-oncall")],
        json!([{"tier": "Admin", "namespaces": ["payments-prod"], "validUntil": until}]),
    )];
    let d = run(&base, &head);
    assert_eq!(
        lines(&d),
        [
            "group platform-oncall (5c2d...): Admin in payments-prod becomes time-bound until 2026-12-24T00:00:00Z (was permanent)"
        ]
    );
    assert_eq!(d.changes[0].direction, Direction::Narrowing);
    // and back: widening
    let d = run(&head, &base);
    assert_eq!(
        lines(&d),
        [
            "group platform-oncall (5c2d...): Admin in payments-prod becomes permanent (was time-bound until 2026-12-24T00:00:00Z)"
        ]
    );
    assert_eq!(d.changes[0].direction, Direction::Widening);
}

#[test]
fn a_future_grant_is_a_change_and_an_expired_one_grants_nothing() {
    let reader = json!({"tier": "Reader", "namespaces": ["payments-prod"]});
    let base = [payments(json!([reader]))];
    // Admin from next week: nothing now, but it is what the reviewer approves
    let head = [payments(json!([reader,
        {"tier": "Admin", "namespaces": ["payments-prod"],
         "validFrom": "2026-12-08T00:00:00Z", "validUntil": "2026-12-09T00:00:00Z"}]))];
    let d = run(&base, &head);
    assert_eq!(
        lines(&d),
        [
            "group payments-developers (0b8a...) rises to Admin in payments-prod from 2026-12-08T00:00:00Z until 2026-12-09T00:00:00Z, else Reader (was Reader)"
        ]
    );
    assert_eq!(d.changes[0].direction, Direction::Widening);

    // a grant past validUntil is no access: adding or removing it is no change
    let expired = json!({"tier": "Admin", "namespaces": ["payments-prod"],
                         "validUntil": "2026-11-30T00:00:00Z"});
    let head = [payments(json!([reader, expired]))];
    assert!(!run(&base, &head).changed());
    assert!(!run(&head, &base).changed());

    // losing the last grant to expiry says so
    let base = [payments(
        json!([{"tier": "Admin", "namespaces": ["payments-prod"]}]),
    )];
    let head = [payments(json!([expired]))];
    assert_eq!(
        lines(&run(&base, &head)),
        [
            "group payments-developers (0b8a...) loses Admin in payments-prod (grant expired at 2026-11-30T00:00:00Z)"
        ]
    );
}

#[test]
fn windows_that_hand_over_are_one_stretch() {
    let one = [payments(json!([{"tier": "Admin", "namespaces": ["x"],
        "validFrom": "2026-12-02T00:00:00Z", "validUntil": "2026-12-04T00:00:00Z"}]))];
    let two = [payments(json!([
        {"tier": "Admin", "namespaces": ["x"], "validFrom": "2026-12-02T00:00:00Z", "validUntil": "2026-12-03T00:00:00Z"},
        {"tier": "Admin", "namespaces": ["x"], "validFrom": "2026-12-03T00:00:00Z", "validUntil": "2026-12-04T00:00:00Z"},
    ]))];
    assert!(!run(&one, &two).changed());
    // a day later start and a day later end: more at one time, less at another
    let later = [payments(json!([{"tier": "Admin", "namespaces": ["x"],
        "validFrom": "2026-12-03T00:00:00Z", "validUntil": "2026-12-05T00:00:00Z"}]))];
    let d = run(&one, &later);
    assert_eq!(d.changes.len(), 1);
    assert_eq!(d.changes[0].direction, Direction::Mixed);
    // a validFrom already past is the same as none
    let started = [payments(json!([{"tier": "Admin", "namespaces": ["x"],
        "validFrom": "2026-11-01T00:00:00Z"}]))];
    let plain = [payments(json!([{"tier": "Admin", "namespaces": ["x"]}]))];
    assert!(!run(&started, &plain).changed());
}

#[test]
fn a_selector_change_without_an_inventory_is_a_change_in_selector_form() {
    let base = [payments(json!([
        {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "payments", "env": "prod"}}},
    ]))];
    let head = [payments(json!([
        {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "payments"}}},
    ]))];
    let d = run(&base, &head);
    assert!(d.changed());
    assert_eq!(
        lines(&d),
        [
            "group payments-developers (0b8a...) gains Reader in namespaces matching team=payments",
            "group payments-developers (0b8a...) loses Reader in namespaces matching env=prod,team=payments (grant removed)",
        ]
    );
    assert!(d.changes.iter().all(|c| c.matches.is_none()));
}

#[test]
fn with_an_inventory_selectors_are_expanded_and_their_matches_shown() {
    let inventory = [
        namespace("payments-dev", &[("team", "payments"), ("env", "dev")]),
        namespace("payments-prod", &[("team", "payments"), ("env", "prod")]),
        namespace("kube-system", &[("team", "payments")]),
    ];
    let base = [payments(json!([
        {"tier": "Writer", "namespaces": ["payments-dev"]},
    ]))];
    let head = [payments(json!([
        {"tier": "Writer", "namespaces": ["payments-dev"]},
        {"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "payments"}}},
    ]))];
    let d = diff(&base, &head, Some(&inventory), &settings(), now());
    // payments-dev has Writer already; kube-system is protected: skipped quietly
    assert_eq!(
        lines(&d),
        [
            "group payments-developers (0b8a...) gains Reader in payments-prod",
            "group payments-developers (0b8a...) gains Reader in namespaces matching team=payments (matches payments-dev, payments-prod)",
        ]
    );
    assert!(d.inventory);
    assert!(d.refused.is_empty());
}

#[test]
fn protected_namespaces_are_refused_not_counted() {
    let base = [payments(
        json!([{"tier": "Writer", "namespaces": ["payments-dev"]}]),
    )];
    let head = [payments(json!([
        {"tier": "Writer", "namespaces": ["payments-dev"]},
        {"tier": "Admin", "namespaces": ["kube-system", "teamaccess-system"]},
    ]))];
    let d = run(&base, &head);
    assert!(!d.changed(), "{:?}", lines(&d));
    let refused: Vec<String> = d.refused.iter().map(|r| r.sentence().plain()).collect();
    assert_eq!(
        refused,
        [
            "group payments-developers (0b8a...) would get Admin in kube-system: refused, a protected namespace (TeamAccess payments)",
            "group payments-developers (0b8a...) would get Admin in teamaccess-system: refused, a protected namespace (TeamAccess payments)",
        ]
    );
    // a refusal the base already has is not news
    assert!(run(&head, &head).refused.is_empty());
    // the same settings flags as the operator: more protected namespaces
    let strict = Settings::new(
        &["payments-dev".to_string()],
        None,
        vec![],
        "teamaccess-system",
    );
    let d = diff(&[], &base, None, &strict, now());
    assert!(!d.changed());
    assert_eq!(d.refused.len(), 1);
}

#[test]
fn a_renamed_group_with_the_same_id_is_a_note_not_a_change() {
    let grants = json!([{"tier": "Writer", "namespaces": ["payments-dev"]}]);
    let base = [ta(
        "payments",
        &[(PAYMENTS, "payments-developers")],
        grants.clone(),
    )];
    let head = [ta("payments", &[(PAYMENTS, "payments-devs")], grants)];
    let d = run(&base, &head);
    assert!(!d.changed());
    assert_eq!(
        d.notes,
        [Note::Renamed {
            id: PAYMENTS.into(),
            from: Some("payments-developers".into()),
            to: Some("payments-devs".into()),
        }]
    );
}

#[test]
fn a_group_id_change_is_a_change_even_under_the_same_name() {
    let grants = json!([{"tier": "Writer", "namespaces": ["payments-dev"]}]);
    let base = [ta(
        "payments",
        &[(PAYMENTS, "payments-developers")],
        grants.clone(),
    )];
    let head = [ta("payments", &[(ONCALL, "payments-developers")], grants)];
    let d = run(&base, &head);
    assert_eq!(d.changes.len(), 2, "{:?}", lines(&d));
    let ids: Vec<&str> = d.changes.iter().map(|c| c.group.id.as_str()).collect();
    assert_eq!(ids, [ONCALL, PAYMENTS]);
}

#[test]
fn groups_without_a_name_show_their_full_id_and_markdown_marks_up() {
    let base = [];
    let head = [serde_json::from_value::<TeamAccess>(json!({
        "apiVersion": "teamaccess.dev/v1alpha1", "kind": "TeamAccess",
        "metadata": {"name": "x"},
        "spec": {"groups": [{"id": PAYMENTS}], "grants": [{"tier": "Reader", "namespaces": ["a"]}]},
    }))
    .unwrap()];
    let d = run(&base, &head);
    assert_eq!(lines(&d), [format!("group {PAYMENTS} gains Reader in a")]);
    assert_eq!(
        d.changes[0].sentence().markdown(),
        format!("group `{PAYMENTS}` gains **Reader** in `a`")
    );
}

#[test]
fn output_is_sorted_widening_first_then_by_group_and_scope() {
    let base = [ta(
        "z",
        &[(ONCALL, "b-group")],
        json!([{"tier": "Admin", "namespaces": ["n1"]}]),
    )];
    let head = [ta(
        "a",
        &[(PAYMENTS, "a-group"), (ONCALL, "b-group")],
        json!([{"tier": "Reader", "namespaces": ["n2", "n1"]}]),
    )];
    let d = run(&base, &head);
    let got: Vec<(Direction, &str, &Scope)> = d
        .changes
        .iter()
        .map(|c| (c.direction, c.group.name.as_deref().unwrap(), &c.scope))
        .collect();
    let ns = |s: &str| Scope::Namespace(s.into());
    assert_eq!(
        got,
        [
            (Direction::Widening, "a-group", &ns("n1")),
            (Direction::Widening, "a-group", &ns("n2")),
            (Direction::Widening, "b-group", &ns("n2")),
            (Direction::Narrowing, "b-group", &ns("n1")),
        ]
    );
}

#[test]
fn canonical_selectors_sort_terms_and_values() {
    let sel: NamespaceSelector = serde_json::from_value(json!({
        "matchLabels": {"team": "payments"},
        "matchExpressions": [
            {"key": "env", "operator": "NotIn", "values": ["prod", "dev"]},
            {"key": "tier", "operator": "Exists"},
            {"key": "legacy", "operator": "DoesNotExist"},
            {"key": "app", "operator": "In", "values": ["b", "a"]},
        ],
    }))
    .unwrap();
    let form = canonical(&sel);
    assert_eq!(
        form,
        "!legacy,app in (a,b),env notin (dev,prod),team=payments,tier"
    );
    // the form is `kubectl -l` syntax that selects what the selector does
    let parsed = crate::api::selector::parse(&form).unwrap();
    use kube::core::SelectorExt;
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for l in [
        labels(&[("team", "payments"), ("tier", "1"), ("app", "a")]),
        labels(&[
            ("team", "payments"),
            ("tier", "1"),
            ("app", "a"),
            ("env", "prod"),
        ]),
        labels(&[("team", "payments"), ("app", "a")]),
    ] {
        assert_eq!(parsed.matches(&l), sel.matches(&l), "{l:?}");
    }
}

#[test]
fn windows_normalize_and_cover() {
    let w = |from: Option<&str>, until: Option<&str>| Window {
        from: from.map(t),
        until: until.map(t),
    };
    let a = "2026-12-02T00:00:00Z";
    let b = "2026-12-03T00:00:00Z";
    let c = "2026-12-04T00:00:00Z";
    assert_eq!(
        normalize(vec![
            w(Some(b), Some(c)),
            w(None, Some(a)),
            w(Some(a), Some(b))
        ]),
        [w(None, Some(c))]
    );
    assert_eq!(
        normalize(vec![w(Some(b), None), w(None, Some(a))]),
        [w(None, Some(a)), w(Some(b), None)]
    );
    assert!(covered(&[w(Some(a), Some(b))], &[w(None, Some(c))]));
    assert!(!covered(&[w(Some(a), None)], &[w(None, Some(c))]));
    assert!(covered(&[], &[]));
}

#[test]
fn lower_tiers_and_mixed_changes_are_worded_too() {
    let until = "2026-12-24T00:00:00Z";
    let admin_until = json!({"tier": "Admin", "namespaces": ["x"], "validUntil": until});
    let base = [payments(
        json!([admin_until, {"tier": "Reader", "namespaces": ["x"]}]),
    )];
    let head = [payments(
        json!([admin_until, {"tier": "Writer", "namespaces": ["x"]}]),
    )];
    let d = run(&base, &head);
    assert_eq!(
        lines(&d),
        [
            "group payments-developers (0b8a...): access in x becomes Admin until 2026-12-24T00:00:00Z, else Writer (was Admin until 2026-12-24T00:00:00Z, else Reader)"
        ]
    );
    assert_eq!(d.changes[0].direction, Direction::Widening);

    // Writer for ever becomes Admin for three weeks: more now, less later
    let base = [payments(json!([{"tier": "Writer", "namespaces": ["x"]}]))];
    let head = [payments(json!([admin_until]))];
    let d = run(&base, &head);
    assert_eq!(
        lines(&d),
        [
            "group payments-developers (0b8a...) rises to Admin in x until 2026-12-24T00:00:00Z (was Writer)"
        ]
    );
    assert_eq!(d.changes[0].direction, Direction::Mixed);
}
