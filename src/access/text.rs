//! Small wording helpers for status messages, events and logs, so every
//! message counts and truncates lists the same way.

/// "1 namespace", "3 namespaces".
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The first `shown` items joined by `separator`, then "and N more": a list
/// in a message stays short however many items there are.
pub fn first_and_more(items: &[String], shown: usize, separator: &str) -> String {
    let mut parts: Vec<String> = items.iter().take(shown).cloned().collect();
    if items.len() > shown {
        parts.push(format!("and {} more", items.len() - shown));
    }
    parts.join(separator)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_says_one_or_many() {
        assert_eq!(plural(1, "namespace"), "1 namespace");
        assert_eq!(plural(0, "namespace"), "0 namespaces");
        assert_eq!(plural(7, "group"), "7 groups");
    }

    #[test]
    fn long_lists_are_cut_with_a_count() {
        let items: Vec<String> = (1..=7).map(|i| format!("ns{i}")).collect();
        assert_eq!(first_and_more(&items[..2], 5, ", "), "ns1, ns2");
        assert_eq!(
            first_and_more(&items, 5, ", "),
            "ns1, ns2, ns3, ns4, ns5, and 2 more"
        );
        assert_eq!(first_and_more(&items, 3, "; "), "ns1; ns2; ns3; and 4 more");
    }
}
