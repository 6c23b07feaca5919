use super::*;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::json;

const G1: &str = "0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a";

fn ta(grants: serde_json::Value) -> TeamAccess {
    serde_json::from_value(json!({
        "apiVersion": "teamaccess.dev/v1alpha1",
        "kind": "TeamAccess",
        "metadata": {"name": "payments", "uid": "uid-1",
                     "labels": {"argocd.argoproj.io/instance": "x"},
                     "annotations": {"kustomize.toolkit.fluxcd.io/name": "y"}},
        "spec": {"groups": [{"id": G1}], "grants": grants}
    }))
    .unwrap()
}

use crate::api::fixtures::{namespace as ns, terminating};

fn now() -> Timestamp {
    "2026-11-23T12:00:00Z".parse().unwrap()
}

fn plan(
    grants: serde_json::Value,
    namespaces: &[Namespace],
    settings: &Settings,
    at: Timestamp,
) -> Vec<(String, Tier, Plan)> {
    let idx = index_namespaces(namespaces);
    compute(&ta(grants), &idx, settings, at)
        .targets
        .into_iter()
        .map(|t| (t.namespace, t.tier, t.plan))
        .collect()
}

fn world() -> Vec<Namespace> {
    vec![
        ns("payments-dev", &[("team", "payments"), ("env", "dev")]),
        ns("payments-prod", &[("team", "payments"), ("env", "prod")]),
        ns("orders-dev", &[("team", "orders"), ("env", "dev")]),
        ns("kube-system", &[("team", "payments")]),
        ns("shared", &[("team", "payments"), ("protected", "true")]),
        terminating("payments-old", &[("team", "payments")]),
    ]
}

fn s(v: &str) -> String {
    v.to_string()
}

#[test]
fn selection_by_names_selector_and_both() {
    use Plan::*;
    use Tier::*;
    let settings = Settings::with_defaults("teamaccess-system");
    type Case = (&'static str, serde_json::Value, Vec<(String, Tier, Plan)>);
    let cases: Vec<Case> = vec![
        (
            "names only, one missing",
            json!([{"tier": "Writer", "namespaces": ["payments-dev", "payments-new"]}]),
            vec![
                (s("payments-dev"), Writer, Apply),
                (s("payments-new"), Writer, Pending),
            ],
        ),
        (
            "selector only: protected kube-system skipped quietly, terminating not targeted",
            json!([{"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "payments"}}}]),
            vec![
                (s("kube-system"), Reader, Skipped),
                (s("payments-dev"), Reader, Apply),
                (s("payments-prod"), Reader, Apply),
                (s("shared"), Reader, Apply),
            ],
        ),
        (
            "both: union",
            json!([{"tier": "Reader", "namespaces": ["orders-dev"],
                    "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]}}]),
            vec![
                (s("orders-dev"), Reader, Apply),
                (s("payments-prod"), Reader, Apply),
            ],
        ),
        (
            "NotIn and DoesNotExist as Kubernetes evaluates them",
            json!([{"tier": "Reader", "namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "NotIn", "values": ["orders"]},
                {"key": "protected", "operator": "DoesNotExist"}]}}]),
            vec![
                (s("kube-system"), Reader, Skipped),
                (s("payments-dev"), Reader, Apply),
                (s("payments-prod"), Reader, Apply),
            ],
        ),
        (
            "a protected namespace named explicitly is denied",
            json!([{"tier": "Admin", "namespaces": ["kube-system", "teamaccess-system"]}]),
            vec![
                (s("kube-system"), Admin, Denied),
                (s("teamaccess-system"), Admin, Denied),
            ],
        ),
        (
            "a terminating namespace named explicitly is not targeted",
            json!([{"tier": "Admin", "namespaces": ["payments-old"]}]),
            vec![],
        ),
    ];
    for (what, grants, want) in cases {
        assert_eq!(plan(grants, &world(), &settings, now()), want, "{what}");
    }
}

#[test]
fn highest_tier_wins_whatever_the_grant_order() {
    let settings = Settings::with_defaults("teamaccess-system");
    let a = json!({"tier": "Reader", "namespaceSelector": {"matchLabels": {"team": "payments"}}});
    let b = json!({"tier": "Admin", "namespaces": ["payments-dev"]});
    let c = json!({"tier": "Writer", "namespaces": ["payments-dev", "payments-prod"]});
    for grants in [json!([a, b, c]), json!([c, b, a]), json!([b, a, c])] {
        let got = plan(grants, &world(), &settings, now());
        let tier_of = |n: &str| got.iter().find(|t| t.0 == n).unwrap().1;
        assert_eq!(tier_of("payments-dev"), Tier::Admin);
        assert_eq!(tier_of("payments-prod"), Tier::Writer);
        assert_eq!(tier_of("shared"), Tier::Reader);
    }
}

#[test]
fn validity_windows_at_their_boundaries() {
    let settings = Settings::with_defaults("teamaccess-system");
    let from = "2026-11-23T12:00:00Z";
    let until = "2026-11-23T13:00:00Z";
    let grants = json!([
        {"tier": "Reader", "namespaces": ["payments-dev"]},
        {"tier": "Admin", "namespaces": ["payments-dev", "payments-prod"], "validFrom": from, "validUntil": until}
    ]);
    let at = |t: &str| -> Timestamp { t.parse().unwrap() };
    let before = at("2026-11-23T11:59:59.999Z");
    let cases = [
        (before, Tier::Reader, Plan::NotYetValid, Some(at(from))),
        (at(from), Tier::Admin, Plan::Apply, Some(at(until))),
        (
            at("2026-11-23T12:59:59.999Z"),
            Tier::Admin,
            Plan::Apply,
            Some(at(until)),
        ),
        (at(until), Tier::Reader, Plan::Expired, None),
    ];
    for (when, dev_tier, prod_plan, next) in cases {
        let idx_ns = world();
        let idx = index_namespaces(&idx_ns);
        let d = compute(&ta(grants.clone()), &idx, &settings, when);
        let dev = d
            .targets
            .iter()
            .find(|t| t.namespace == "payments-dev")
            .unwrap();
        assert_eq!(
            (dev.tier, dev.plan),
            (dev_tier, Plan::Apply),
            "payments-dev at {when}"
        );
        let prod = d
            .targets
            .iter()
            .find(|t| t.namespace == "payments-prod")
            .unwrap();
        assert_eq!(prod.plan, prod_plan, "payments-prod at {when}");
        assert_eq!(d.next_transition, next, "next transition at {when}");
    }
}

#[test]
fn protected_by_selector_flag() {
    let mut settings = Settings::with_defaults("teamaccess-system");
    settings.protected_selector = Some(crate::api::selector::parse("protected=true").unwrap());
    let got = plan(
        json!([{"tier": "Writer", "namespaces": ["shared"]},
               {"tier": "Reader", "namespaceSelector": {"matchLabels": {"env": "dev"}}}]),
        &world(),
        &settings,
        now(),
    );
    assert!(got.contains(&(s("shared"), Tier::Writer, Plan::Denied)));
    assert!(got.contains(&(s("orders-dev"), Tier::Reader, Plan::Apply)));
}

#[test]
fn objects_carry_ownership_and_hints_but_nothing_of_the_teamaccess_metadata() {
    let access = ta(json!([{"tier": "Writer", "namespaces": ["payments-dev"]}]));
    let rules = tiers::rules(Tier::Writer, &BTreeSet::new(), &[]);
    let role = role(&access, "payments-dev", Tier::Writer, &rules);
    let rb = role_binding(&access, "payments-dev", Tier::Writer);
    for meta in [&role.metadata, &rb.metadata] {
        assert_eq!(meta.name.as_deref(), Some("teamaccess-payments"));
        assert_eq!(meta.namespace.as_deref(), Some("payments-dev"));
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels.len(), 3, "only our three labels: {labels:?}");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "teamaccess");
        assert_eq!(labels["teamaccess.dev/owner"], "payments");
        assert_eq!(labels["teamaccess.dev/tier"], "Writer");
        // only the owner's UID, for cleanup after an orphaning delete
        assert_eq!(
            meta.annotations,
            Some(BTreeMap::from([(
                "teamaccess.dev/owner-uid".to_string(),
                "uid-1".to_string()
            )]))
        );
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "uid-1");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(owners[0].block_owner_deletion, None);
    }
    assert_eq!(rb.role_ref.name, "teamaccess-payments");
    assert_eq!(rb.role_ref.kind, "Role");
    let subjects = rb.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("Group", G1)
    );
    // the roleRef does not depend on the tier
    assert_eq!(
        role_binding(&access, "x", Tier::Admin).role_ref,
        role_binding(&access, "x", Tier::Reader).role_ref
    );
}

#[test]
fn long_names_get_the_full_name_in_an_annotation() {
    let mut access = ta(json!([{"tier": "Reader", "namespaces": ["a"]}]));
    let long = format!("{}.example.com", "p".repeat(100));
    access.metadata.name = Some(long.clone());
    let rb = role_binding(&access, "a", Tier::Reader);
    let meta = &rb.metadata;
    assert_eq!(
        meta.labels.as_ref().unwrap()["teamaccess.dev/owner"].len(),
        63
    );
    assert_eq!(
        meta.annotations.as_ref().unwrap()["teamaccess.dev/owner-name"],
        long
    );
    assert_eq!(rb.role_ref.name, *meta.name.as_ref().unwrap());
}
