//! When the watch events that call for a write arrived, so the time from an
//! event to the write it caused is measured: onboarding (a namespace event
//! to its RoleBinding created) and drift repair (an event on one of our
//! objects to the write that reverts it). Only the first arrival counts; an
//! entry no write consumes is dropped after [`KEEP`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::access::compare::Kind;

/// Arrivals older than this are forgotten (a namespace event that led to no
/// write, say).
const KEEP: Duration = Duration::from_secs(60);
/// Past this many entries, old ones are swept on the next arrival.
const SWEEP_AT: usize = 4096;

#[derive(Default)]
pub struct Arrivals {
    namespaces: Mutex<HashMap<String, Instant>>,
    objects: Mutex<HashMap<(Kind, String, String), Instant>>,
}

fn note<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Instant>>, key: K) {
    let mut map = map.lock().expect("not poisoned");
    let now = Instant::now();
    if map.len() >= SWEEP_AT {
        map.retain(|_, t| now.duration_since(*t) < KEEP);
    }
    map.entry(key).or_insert(now);
}

fn take<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, Instant>>, key: &K) -> Option<Duration> {
    let at = map.lock().expect("not poisoned").remove(key)?;
    let took = at.elapsed();
    (took < KEEP).then_some(took)
}

impl Arrivals {
    pub fn namespace_event(&self, namespace: &str) {
        note(&self.namespaces, namespace.to_string());
    }

    pub fn object_event(&self, kind: Kind, namespace: &str, name: &str) {
        note(
            &self.objects,
            (kind, namespace.to_string(), name.to_string()),
        );
    }

    /// Time since the first unconsumed event of `namespace`, consuming it.
    pub fn namespace_written(&self, namespace: &str) -> Option<Duration> {
        take(&self.namespaces, &namespace.to_string())
    }

    /// Time since the first unconsumed event of this object, consuming it.
    pub fn object_written(&self, kind: Kind, namespace: &str, name: &str) -> Option<Duration> {
        take(
            &self.objects,
            &(kind, namespace.to_string(), name.to_string()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_arrival_counts_once() {
        let a = Arrivals::default();
        assert_eq!(a.namespace_written("x"), None);
        a.namespace_event("x");
        std::thread::sleep(Duration::from_millis(20));
        a.namespace_event("x");
        let took = a.namespace_written("x").unwrap();
        assert!(
            took >= Duration::from_millis(20),
            "{took:?}: the first event"
        );
        assert_eq!(a.namespace_written("x"), None, "consumed");
        a.object_event(Kind::Role, "ns", "teamaccess-a");
        assert!(
            a.object_written(Kind::RoleBinding, "ns", "teamaccess-a")
                .is_none()
        );
        assert!(a.object_written(Kind::Role, "ns", "teamaccess-a").is_some());
    }
}
