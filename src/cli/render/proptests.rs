//! Property tests of the input side of `render` and `diff`: whatever text a
//! file holds (noise, near-YAML, deep nesting, huge strings, many documents),
//! parsing never panics, and a refusal names the file; what parses renders.
//! Invalid UTF-8 never reaches here: reading the file refuses it, naming the
//! file (tests/cli.rs).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

const SOURCE: &str = "team/access.yaml";

/// Pieces of YAML, ours and not, that make near-valid streams when joined.
const PIECES: &[&str] = &[
    "apiVersion: teamaccess.dev/v1alpha1\n",
    "apiVersion: v1\n",
    "kind: TeamAccess\n",
    "kind: Namespace\n",
    "---\n",
    "--- \n",
    "metadata:\n  name: payments\n",
    "metadata: {name: x, labels: {team: a}}\n",
    "spec:\n",
    "  groups:\n    - id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a\n",
    "  grants:\n",
    "    - tier: Admin\n",
    "    - tier: Owner\n",
    "      namespaces: [payments-dev, kube-system]\n",
    "      namespaceSelector: {matchLabels: {team: a}}\n",
    "      validUntil: 2030-01-01T00:00:00Z\n",
    "      validUntil: tomorrow\n",
    "status: {ready: true}\n",
    "[",
    "]",
    "{",
    "}",
    ",",
    ": ",
    "- ",
    "? ",
    "&a ",
    "*a ",
    "*b ",
    "!!binary ",
    "!custom ",
    "'",
    "\"",
    "\\",
    "\t",
    " ",
    "\n",
    "#",
    "|\n",
    ">-\n",
    "%YAML 1.2\n",
    "...\n",
    "~",
    "0x1F",
    "1e400",
    "-.inf",
    "\u{feff}",
    "\u{0}",
];

fn near_yaml() -> impl Strategy<Value = String> {
    vec(select(PIECES), 0..60).prop_map(|p| p.concat())
}

/// Nesting far deeper than any real file, in each of YAML's three ways.
fn deep() -> impl Strategy<Value = String> {
    (0usize..3, 1usize..4000).prop_map(|(style, depth)| match style {
        0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
        _ => (0..depth)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect(),
    })
}

/// A valid TeamAccess whose one string is huge, or many documents of it.
fn big() -> impl Strategy<Value = String> {
    let doc = |name: &str| {
        format!(
            "apiVersion: teamaccess.dev/v1alpha1\nkind: TeamAccess\nmetadata:\n  name: {name}\n\
             spec:\n  groups:\n    - id: 0b8a6f3e-5d1c-4d2e-9a7b-1f2e3d4c5b6a\n  grants:\n\
             \x20   - tier: Reader\n      namespaces: [a]\n"
        )
    };
    prop_oneof![
        (1usize..400_000).prop_map(move |n| doc(&"a".repeat(n))),
        (1usize..800).prop_map(move |n| {
            (0..n)
                .map(|i| doc(&format!("t{i}")))
                .collect::<Vec<_>>()
                .join("---\n")
        }),
    ]
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), near_yaml(), deep(), big()]
}

/// Parsing a stream: never a panic; an error names the file.
fn parses_or_names_the_file(text: &str) -> Result<Option<Vec<TeamAccess>>, TestCaseError> {
    match parse_teamaccesses(text, SOURCE) {
        Ok(access) => Ok(Some(access)),
        Err(e) => {
            let message = e.to_string();
            prop_assert!(message.starts_with(SOURCE), "{message}");
            Ok(None)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_is_refused_naming_the_file(text in any_text()) {
        let Some(access) = parses_or_names_the_file(&text)? else { return Ok(()) };
        // what parses renders, with or without an inventory
        let groups = KUBERNETES_API_GROUPS.iter().map(|s| s.to_string()).collect();
        let settings = Settings::with_defaults("teamaccess-system");
        let now: Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        render(&access, Inventory::NamedOnly, &groups, &settings, now);
    }

    #[test]
    fn any_text_as_namespaces_parses_or_is_refused_naming_the_file(text in any_text()) {
        if let Err(e) = parse_namespaces(&text, SOURCE) {
            let message = e.to_string();
            prop_assert!(message.starts_with(SOURCE), "{message}");
        }
    }
}

#[test]
fn an_alias_bomb_is_refused_not_expanded() {
    let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, prev) in ('b'..='k').zip('a'..) {
        text.push_str(&format!("{i}: &{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let err = parse_teamaccesses(&text, SOURCE).unwrap_err().to_string();
    assert!(err.starts_with(SOURCE), "{err}");
}
