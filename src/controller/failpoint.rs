//! Test-only pauses in the write path (cargo feature `failpoints`), so a
//! test can change the cluster between a decision and its write and show
//! the write's precondition holds. `TEAMACCESS_FAILPOINT=before-apply:NS:SECS`
//! pauses every apply in namespace NS for SECS seconds, once per object kind.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use tracing::info;

use crate::access::compare::Kind;

static FIRED: Mutex<Option<HashSet<Kind>>> = Mutex::new(None);

pub async fn before_apply(kind: Kind, namespace: &str) {
    let Ok(spec) = std::env::var("TEAMACCESS_FAILPOINT") else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (Some("before-apply"), Some(ns), Some(secs)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let Ok(secs) = secs.parse::<u64>() else {
        return;
    };
    if ns != namespace {
        return;
    }
    let first = FIRED
        .lock()
        .expect("not poisoned")
        .get_or_insert_with(HashSet::new)
        .insert(kind);
    if first {
        info!(
            kind = kind.as_str(),
            namespace, "failpoint: pausing before apply"
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
}
