//! Every condition type, condition reason, event reason and event action the
//! operator writes, by name. GitOps health checks, alerts and people match on
//! these strings, so each is spelled once, here.

/// Condition types (kstatus: `Ready` always present; `Reconciling` and
/// `Stalled` only while True).
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const NAMESPACES_PENDING: &str = "NamespacesPending";
    pub const SUSPENDED: &str = "Suspended";
}

/// Reasons of those conditions.
pub mod reason {
    pub const APPLIED: &str = "Applied";
    pub const APPLIED_WITH_PENDING: &str = "AppliedWithPending";
    pub const SUSPENDED: &str = "Suspended";
    pub const CONFLICT: &str = "Conflict";
    pub const DENIED: &str = "Denied";
    pub const FORBIDDEN: &str = "Forbidden";
    pub const RETRYING_AFTER_ERROR: &str = "RetryingAfterError";
    /// Writes kept failing for the grace period (a failing webhook, timeouts).
    pub const PERSISTENT_ERROR: &str = "PersistentError";
    /// What we write comes back changed by an admission policy or webhook.
    pub const MUTATED_ON_ADMISSION: &str = "MutatedOnAdmission";
    pub const NAMESPACE_NOT_FOUND: &str = "NamespaceNotFound";
}

/// Kubernetes Events on a TeamAccess: what happened (reason) and what the
/// operator did about it (action).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventReason {
    Applied,
    DriftCorrected,
    Revoked,
    Conflict,
    Denied,
    /// A long-lived grant's validUntil is within the warning window.
    GrantExpiringSoon,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::Applied => "Applied",
            EventReason::DriftCorrected => "DriftCorrected",
            EventReason::Revoked => "Revoked",
            EventReason::Conflict => "Conflict",
            EventReason::Denied => "Denied",
            EventReason::GrantExpiringSoon => "GrantExpiringSoon",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventAction {
    Apply,
    Revoke,
    /// Conflict and Denied: the namespace is left alone.
    Skip,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Apply => "Apply",
            EventAction::Revoke => "Revoke",
            EventAction::Skip => "Skip",
        }
    }
}
