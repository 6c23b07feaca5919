//! Test-only pauses in the write path (cargo feature `failpoints`), so a
//! test can change the cluster between a decision and its write and show
//! the write's precondition holds, or break the control plane while a
//! reconcile is surely in flight. `TEAMACCESS_FAILPOINT=POINT:NS:SECS`
//! pauses every write of that point in namespace NS for SECS seconds, once
//! per object kind. POINT is `before-apply` (server-side apply of an object
//! that exists) or `before-create` (a new object).

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tracing::info;

use crate::access::compare::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Point {
    BeforeApply,
    BeforeCreate,
}

impl Point {
    fn as_str(self) -> &'static str {
        match self {
            Point::BeforeApply => "before-apply",
            Point::BeforeCreate => "before-create",
        }
    }
}

static FIRED: Mutex<Option<HashSet<(Point, Kind)>>> = Mutex::new(None);

pub async fn before_apply(kind: Kind, namespace: &str) {
    pause(Point::BeforeApply, kind, namespace).await;
}

pub async fn before_create(kind: Kind, namespace: &str) {
    pause(Point::BeforeCreate, kind, namespace).await;
}

async fn pause(point: Point, kind: Kind, namespace: &str) {
    let Ok(spec) = std::env::var("TEAMACCESS_FAILPOINT") else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (Some(p), Some(ns), Some(secs)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(secs) = secs.parse::<u64>() else {
        return;
    };
    if p != point.as_str() || ns != namespace {
        return;
    }
    let first = FIRED
        .lock()
        .expect("not poisoned")
        .get_or_insert_with(HashSet::new)
        .insert((point, kind));
    if first {
        info!(
            point = point.as_str(),
            kind = kind.as_str(),
            namespace,
            "failpoint: pausing"
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}
