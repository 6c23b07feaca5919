//! Test-only pauses in the write path (cargo feature `failpoints`), so a
//! test can change the cluster between a decision and its write and show
//! the write's precondition holds, or break the control plane while a
//! reconcile is surely in flight. `TEAMACCESS_FAILPOINT=POINT:NS:SECS`
//! (several separated by commas) pauses every write of that point in
//! namespace NS for SECS seconds, once per object kind. POINT is
//! `before-apply` (server-side apply of an object that exists),
//! `before-create` (a new object), or `before-renew` (a lease renewal, after
//! the elector has checked its deadline and before it asks; NS is the
//! lease's namespace). `before-renew` fires only while another failpoint is
//! pausing, so a test can stop the process inside a renewal in the middle of
//! a reconcile, not at whichever renewal comes first.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tracing::info;

use crate::access::compare::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    BeforeApply,
    BeforeCreate,
    BeforeRenew,
}

impl Point {
    fn as_str(self) -> &'static str {
        match self {
            Point::BeforeApply => "before-apply",
            Point::BeforeCreate => "before-create",
            Point::BeforeRenew => "before-renew",
        }
    }
}

static FIRED: Mutex<Option<HashSet<(Point, &'static str)>>> = Mutex::new(None);
/// How many pauses of the write path are under way.
static PAUSING: AtomicUsize = AtomicUsize::new(0);

pub async fn before_apply(kind: Kind, namespace: &str) {
    pause(Point::BeforeApply, kind.as_str(), namespace).await;
}

pub async fn before_create(kind: Kind, namespace: &str) {
    pause(Point::BeforeCreate, kind.as_str(), namespace).await;
}

pub async fn before_renew(namespace: &str) {
    if PAUSING.load(Ordering::SeqCst) > 0 {
        pause(Point::BeforeRenew, "Lease", namespace).await;
    }
}

/// The pause configured for `point` in `namespace`, if any.
fn configured(spec: &str, point: Point, namespace: &str) -> Option<Duration> {
    spec.split(',').find_map(|one| {
        let mut parts = one.trim().splitn(3, ':');
        let (p, ns, secs) = (parts.next()?, parts.next()?, parts.next()?);
        (p == point.as_str() && ns == namespace)
            .then(|| secs.parse::<f64>().ok())
            .flatten()
            .map(Duration::from_secs_f64)
    })
}

async fn pause(point: Point, kind: &'static str, namespace: &str) {
    let Ok(spec) = std::env::var("TEAMACCESS_FAILPOINT") else {
        return;
    };
    let Some(duration) = configured(&spec, point, namespace) else {
        return;
    };
    let first = FIRED
        .lock()
        .expect("not poisoned")
        .get_or_insert_with(HashSet::new)
        .insert((point, kind));
    if first {
        info!(
            point = point.as_str(),
            kind, namespace, "failpoint: pausing"
        );
        // counted until it ends or is dropped (a reconcile out of budget)
        let _pausing = (point != Point::BeforeRenew).then(Pausing::new);
        tokio::time::sleep(duration).await;
    }
}

struct Pausing;

impl Pausing {
    fn new() -> Pausing {
        PAUSING.fetch_add(1, Ordering::SeqCst);
        Pausing
    }
}

impl Drop for Pausing {
    fn drop(&mut self) {
        PAUSING.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_point_of_a_list_is_found_by_its_namespace() {
        let spec = "before-create:team-a:30, before-renew:ops:1.5";
        assert_eq!(
            configured(spec, Point::BeforeCreate, "team-a"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            configured(spec, Point::BeforeRenew, "ops"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(configured(spec, Point::BeforeRenew, "team-a"), None);
        assert_eq!(configured(spec, Point::BeforeApply, "team-a"), None);
        assert_eq!(
            configured("before-create:x", Point::BeforeCreate, "x"),
            None
        );
    }
}
