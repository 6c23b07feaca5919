//! What one namespace came to in a reconcile: the typed record that the
//! status, the events and the log line are computed from.

use crate::access::desired::Target;
use crate::access::plan::{Drift, plan_state};
use crate::api::teamaccess::{NamespaceState, NamespaceStatus};

#[derive(Clone, Debug, PartialEq)]
pub struct NamespaceOutcome {
    pub status: NamespaceStatus,
    /// Left out of the status: the namespace is going away (not an error),
    /// or no grant reaches it any more.
    pub gone: bool,
    pub writes: usize,
    pub drift: Vec<Drift>,
    /// The API server refused us: its message (Stalled past a grace period).
    pub forbidden: Option<String>,
    /// An admission policy changes what we write here (Stalled at once).
    pub mutated: bool,
}

impl NamespaceOutcome {
    /// A namespace to grant: Applied unless something below says otherwise.
    pub fn applied(target: &Target) -> Self {
        Self::with_state(target, NamespaceState::Applied, None)
    }

    /// A target that is not to be applied (expired, protected, pending...).
    pub fn not_applied(target: &Target) -> Self {
        let (state, message) = plan_state(target.plan);
        Self::with_state(target, state, message.map(Into::into))
    }

    fn with_state(target: &Target, state: NamespaceState, message: Option<String>) -> Self {
        NamespaceOutcome {
            status: NamespaceStatus {
                name: target.namespace.clone(),
                tier: Some(target.tier),
                state,
                message,
            },
            gone: false,
            writes: 0,
            drift: Vec::new(),
            forbidden: None,
            mutated: false,
        }
    }

    /// A namespace that is no longer a target: not reported in the status.
    pub fn untargeted(namespace: &str) -> Self {
        NamespaceOutcome {
            status: NamespaceStatus {
                name: namespace.to_string(),
                tier: None,
                state: NamespaceState::Skipped,
                message: None,
            },
            gone: true,
            writes: 0,
            drift: Vec::new(),
            forbidden: None,
            mutated: false,
        }
    }

    /// A write failed for a reason worth retrying. It stays in the status
    /// even when no grant reaches the namespace any more: a revocation that
    /// failed is access that still exists, and must not be hidden.
    pub fn failed(&mut self, message: String, forbidden: Option<String>) {
        self.gone = false;
        self.status.state = NamespaceState::Error;
        self.status.message = Some(message);
        self.forbidden = forbidden;
    }

    /// Whether the reconcile should come back soon for this namespace.
    pub fn needs_retry(&self) -> bool {
        self.status.state == NamespaceState::Error || self.forbidden.is_some()
    }
}
