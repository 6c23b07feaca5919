//! Names and labels of the objects a TeamAccess makes.
//!
//! A TeamAccess name is a DNS subdomain of up to 253 characters; the Role and
//! RoleBinding are named `teamaccess-<name>`, and the owner label carries the
//! name. Both have limits the TeamAccess name can exceed, so over the limit the
//! name becomes a prefix plus a hash of the full name, never a bare truncation
//! (two long names sharing a prefix would otherwise collide).
//!
//! Distinctness is by construction: a plain name is always shorter than the
//! limit, a hashed one is always exactly at it, so a plain name can never equal
//! a hashed one; two hashed ones differ unless SHA-256 collides in 64 bits.

use sha2::{Digest, Sha256};

/// Prefix of every Role and RoleBinding name.
/// The one field manager of everything we write.
pub const FIELD_MANAGER: &str = "teamaccess";
/// Holds a TeamAccess until what it made is gone, garbage collector or not.
pub const FINALIZER: &str = "teamaccess.dev/cleanup";
pub const OBJECT_PREFIX: &str = "teamaccess-";
/// Maximum length of an object name (DNS subdomain).
pub const MAX_OBJECT_NAME: usize = 253;
/// Maximum length of a label value.
pub const MAX_LABEL_VALUE: usize = 63;
/// Hex digits of the hash appended to shortened names.
const HASH_HEX: usize = 16;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "teamaccess";
pub const LABEL_OWNER: &str = "teamaccess.dev/owner";
pub const LABEL_TIER: &str = "teamaccess.dev/tier";
/// The full TeamAccess name, set when the owner label had to be shortened.
pub const ANNOTATION_OWNER_NAME: &str = "teamaccess.dev/owner-name";
/// Label selector for every object this operator manages.
/// The owning TeamAccess's UID, on everything we create. Ownership is the
/// owner reference; this is read only by cleanup, to recognise our objects
/// after the garbage collector's orphan finalizer stripped their owner
/// references (`kubectl delete --cascade=orphan`).
pub const ANNOTATION_OWNER_UID: &str = "teamaccess.dev/owner-uid";
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=teamaccess";

fn hash_hex(name: &str) -> String {
    let digest = Sha256::digest(name.as_bytes());
    digest
        .iter()
        .take(HASH_HEX / 2)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `full` if it is shorter than `limit`; otherwise exactly `limit` characters:
/// a prefix of `full`, a dash and the hash of `hash_input`.
fn fit(full: String, hash_input: &str, limit: usize) -> String {
    if full.len() < limit {
        return full;
    }
    let keep = limit - HASH_HEX - 1;
    // names here are ASCII (DNS subdomains), so byte slicing is char slicing
    let mut prefix: String = full[..keep].to_string();
    // `x.-hash` is not a valid DNS label sequence; a dash is (`x--hash`)
    if prefix.ends_with('.') {
        prefix.pop();
        prefix.push('-');
    }
    format!("{prefix}-{}", hash_hex(hash_input))
}

/// Name of the Role and of the RoleBinding of TeamAccess `name`.
pub fn object_name(name: &str) -> String {
    fit(format!("{OBJECT_PREFIX}{name}"), name, MAX_OBJECT_NAME)
}

/// Name of an event about TeamAccess `name` made at `nanos` (nanoseconds
/// since the epoch): kube's Recorder names it `<name>.<nanos in hex>`, which
/// the API server refuses past 253 characters; a name too long for that
/// keeps a prefix and the hash, as object names do.
pub fn event_name(name: &str, nanos: i128) -> String {
    let stamp = format!(".{nanos:x}");
    let room = MAX_OBJECT_NAME - stamp.len();
    let base = if name.len() <= room {
        name.to_string()
    } else {
        fit(name.to_string(), name, room)
    };
    format!("{base}{stamp}")
}

/// Whether kube's Recorder can name events about TeamAccess `name`.
pub fn recorder_names_events(name: &str, nanos: i128) -> bool {
    event_name(name, nanos).starts_with(&format!("{name}."))
}

/// Value of the owner label for TeamAccess `name`; `None` for the annotation
/// when the name fits, `Some(full name)` when the label is shortened.
pub fn owner_label(name: &str) -> String {
    fit(name.to_string(), name, MAX_LABEL_VALUE)
}

/// Whether the owner label of `name` had to be shortened (then the full name
/// goes into [`ANNOTATION_OWNER_NAME`]).
pub fn owner_label_shortened(name: &str) -> bool {
    name.len() >= MAX_LABEL_VALUE
}

/// The TeamAccess a managed object's labels name, as a hint for triggers
/// only (ownership is the owner reference): the full name from the
/// annotation when the label was shortened, else the label.
pub fn owner_hint(
    labels: Option<&std::collections::BTreeMap<String, String>>,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<String> {
    if labels?.get(LABEL_MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE) {
        return None;
    }
    annotations
        .and_then(|a| a.get(ANNOTATION_OWNER_NAME))
        .or_else(|| labels?.get(LABEL_OWNER))
        .cloned()
}

/// RFC 1123 subdomain, as Kubernetes validates object names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_OBJECT_NAME && s.split('.').all(is_dns_label_part)
}

fn is_dns_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// RFC 1123 label (a namespace name).
pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_label_part(s)
}

/// A Kubernetes label value.
pub fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b.len() <= MAX_LABEL_VALUE
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A valid 253-character TeamAccess name made of dotted labels.
    fn long_name(seed: char) -> String {
        let mut s = String::new();
        while s.len() < 253 {
            s.push(seed);
            if s.len() % 20 == 19 {
                s.push('.');
            }
        }
        s.truncate(253);
        while !s.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            s.pop();
            s.push(seed);
        }
        s
    }

    #[test]
    fn short_names_are_kept_as_they_are() {
        assert_eq!(object_name("payments"), "teamaccess-payments");
        assert_eq!(owner_label("payments"), "payments");
        assert!(!owner_label_shortened("payments"));
    }

    #[test]
    fn names_at_and_over_the_limits_are_valid_and_hashed() {
        for len in [61, 62, 63, 64, 200, 240, 241, 242, 243, 253] {
            let name = "a".repeat(len);
            let obj = object_name(&name);
            assert!(is_dns_subdomain(&obj), "{obj}");
            assert!(obj.len() <= MAX_OBJECT_NAME);
            let label = owner_label(&name);
            assert!(is_label_value(&label), "{label}");
            assert_eq!(owner_label_shortened(&name), label != name);
        }
        let name = long_name('b');
        assert_eq!(name.len(), 253);
        assert!(is_dns_subdomain(&name));
        assert_eq!(object_name(&name).len(), MAX_OBJECT_NAME);
        assert_eq!(owner_label(&name).len(), MAX_LABEL_VALUE);
    }

    #[test]
    fn event_names_are_kubes_while_they_fit_and_valid_past_it() {
        // nanoseconds of 2026 are 16 hex digits: kube's name fits up to 236
        let nanos = 0x18ed_b764_bc18_77e9;
        assert_eq!(event_name("payments", nanos), "payments.18edb764bc1877e9");
        assert!(recorder_names_events(&"a".repeat(236), nanos));
        assert!(!recorder_names_events(&"a".repeat(237), nanos));
        let mut seen = BTreeSet::new();
        for name in [
            "a".repeat(236),
            "a".repeat(237),
            format!("{}b", "a".repeat(241)),
            format!("{}c", "a".repeat(241)),
            long_name('d'),
        ] {
            let event = event_name(&name, nanos);
            assert!(event.len() <= MAX_OBJECT_NAME, "{event}");
            assert!(is_dns_subdomain(&event), "{event}");
            assert!(seen.insert(event), "distinct");
        }
    }

    #[test]
    fn a_prefix_ending_in_a_dot_stays_a_valid_subdomain() {
        // place a dot exactly where the object-name prefix is cut
        let keep = MAX_OBJECT_NAME - HASH_HEX - 1 - OBJECT_PREFIX.len();
        let name = format!("{}.{}", "c".repeat(keep - 1), "d".repeat(100));
        let obj = object_name(&name);
        assert!(is_dns_subdomain(&obj), "{obj}");
        let label_keep = MAX_LABEL_VALUE - HASH_HEX - 1;
        let name = format!("{}.{}", "e".repeat(label_keep - 1), "f".repeat(30));
        assert!(is_label_value(&owner_label(&name)));
    }

    #[test]
    fn distinct_names_never_share_an_object_name_or_label() {
        // names that share long prefixes, differ only at the end, and sit on
        // both sides of each limit
        let mut names = BTreeSet::new();
        for base in ["x".repeat(250), "y.".repeat(120), "z".repeat(60)] {
            for suffix in ["", "a", "b", "1", "a1", "b1"] {
                for cut in [50, 61, 62, 63, 64, 240, 241, 242, 243, 252] {
                    let mut n = format!("{base}{suffix}");
                    n.truncate(cut.min(n.len()));
                    let n = n.trim_end_matches('.').to_string();
                    if is_dns_subdomain(&n) {
                        names.insert(n);
                    }
                }
            }
        }
        assert!(names.len() > 20);
        let objects: BTreeSet<_> = names.iter().map(|n| object_name(n)).collect();
        let labels: BTreeSet<_> = names.iter().map(|n| owner_label(n)).collect();
        assert_eq!(objects.len(), names.len());
        assert_eq!(labels.len(), names.len());
    }

    proptest::proptest! {
        // pairs of valid names near the limits: a plain name and a hashed one
        // can never be equal, nor two names share an object name or label
        #[test]
        fn plain_and_hashed_names_never_meet(
            a in "[a-z0-9]([-a-z0-9.]{0,250}[a-z0-9])?",
            b in "[a-z0-9]([-a-z0-9.]{0,250}[a-z0-9])?",
            pad in 0usize..260,
        ) {
            // pull b towards the hashing thresholds (63 and 242 characters)
            let b = format!("{b}{}", "b".repeat(pad)).chars().take(253).collect::<String>();
            let b = b.trim_end_matches(['.', '-']).to_string();
            proptest::prop_assume!(a != b && is_dns_subdomain(&a) && is_dns_subdomain(&b));
            proptest::prop_assert_ne!(object_name(&a), object_name(&b));
            proptest::prop_assert_ne!(owner_label(&a), owner_label(&b));
        }
    }

    #[test]
    fn the_hash_is_stable_across_releases() {
        // a changed hash would orphan every Role of a long-named TeamAccess
        assert_eq!(hash_hex("payments"), "df384ae97c77ad30");
    }
}
