//! Everything that talks to the API server. The reconcile driver
//! ([`reconcile`]) reads as its steps; the pure decisions it calls live in
//! [`crate::access`]. Here: performing the write plan ([`grant`], [`revoke`],
//! [`writes`]), events, triggers, discovery, leader election, per-process
//! memory, and the `run` wiring.

pub mod arrivals;
pub mod discovery;
pub mod error;
pub mod events;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub mod grant;
pub mod inventory;
pub mod leader;
pub mod memory;
pub mod preflight;
pub mod reconcile;
pub mod requests;
pub mod revoke;
pub mod run;
pub mod triggers;
pub mod writes;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;

use crate::access::compare::Managed;
use crate::access::desired::Settings;
use crate::ops::metrics::Metrics;

/// The caches a reconcile decides from: every namespace, and the Roles and
/// RoleBindings we label.
#[derive(Clone)]
pub struct Caches {
    pub namespaces: Store<Namespace>,
    pub roles: Store<Role>,
    pub bindings: Store<RoleBinding>,
    /// Every Role and RoleBinding at a name of ours (`teamaccess-*`),
    /// labelled or not, as metadata only. Labels are a hint anyone can
    /// remove; this is where an object of ours whose labels were stripped
    /// is still found (then read in full).
    pub role_names: Store<PartialObjectMeta<Role>>,
    pub binding_names: Store<PartialObjectMeta<RoleBinding>>,
}

/// The caches that hold objects of kind `K`.
pub trait Cached: Managed {
    fn store(caches: &Caches) -> &Store<Self>;
    fn names(caches: &Caches) -> &Store<PartialObjectMeta<Self>>;
}

impl Cached for Role {
    fn store(caches: &Caches) -> &Store<Self> {
        &caches.roles
    }
    fn names(caches: &Caches) -> &Store<PartialObjectMeta<Self>> {
        &caches.role_names
    }
}

impl Cached for RoleBinding {
    fn store(caches: &Caches) -> &Store<Self> {
        &caches.bindings
    }
    fn names(caches: &Caches) -> &Store<PartialObjectMeta<Self>> {
        &caches.binding_names
    }
}

/// How often and how long: periods and deadlines of the reconcile.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Every TeamAccess is reconciled at least this often.
    pub resync: Duration,
    /// Each write is abandoned (and retried later) after this.
    pub write_timeout: Duration,
    /// How long a Forbidden answer may last before it is Stalled: RBAC takes
    /// a moment to reach the authorizer after install.
    pub forbidden_grace: Duration,
    /// A long-lived grant this close to its validUntil is announced.
    pub expiry_warning: Duration,
}

/// Everything a reconcile needs; one per process.
pub struct Context {
    pub client: Client,
    pub writes: writes::Writes,
    /// For events that repeat (drift): folds repeats into a series.
    pub recorder: Recorder,
    pub reporter: Reporter,
    pub settings: Settings,
    pub caches: Caches,
    /// API groups with namespaced resources, from discovery (Admin part (c)).
    pub api_groups: RwLock<BTreeSet<String>>,
    pub metrics: Arc<Metrics>,
    pub timing: Timing,
    pub memory: memory::Memory,
    /// When the watch events behind pending writes arrived (latency metrics).
    pub arrivals: Arc<arrivals::Arrivals>,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        settings: Settings,
        caches: Caches,
        api_groups: BTreeSet<String>,
        metrics: Arc<Metrics>,
        timing: Timing,
    ) -> Self {
        Context {
            writes: writes::Writes::new(client.clone(), timing.write_timeout),
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            settings,
            caches,
            api_groups: RwLock::new(api_groups),
            metrics,
            timing,
            memory: memory::Memory::default(),
            arrivals: Arc::default(),
        }
    }
}
