//! The controller's one error type, and how API answers are recognised (by
//! reason and cause, never by message text alone).

use std::time::Duration;

use crate::access::compare::Kind;

/// What a write did, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Create,
    Get,
    Apply,
    Delete,
    List,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Get => "get",
            Verb::Apply => "apply",
            Verb::Delete => "delete",
            Verb::List => "list",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} {} {namespace}/{name}: {}", verb.as_str(), kind.as_str(), readable(source))]
    Api {
        verb: Verb,
        kind: Kind,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("listing {}s: {}", kind.as_str(), readable(source))]
    List {
        kind: Kind,
        #[source]
        source: kube::Error,
    },
    #[error("writing status of TeamAccess {name}: {}", readable(source))]
    Status {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer of TeamAccess {name}: {message}")]
    Finalizer { name: String, message: String },
    /// Our write came back without what we wrote: an admission policy or
    /// webhook changes it. Writing again would loop, so it backs off.
    #[error(
        "{} {namespace}/{name}: an admission policy changed what the operator wrote ({}); not written again until it stops",
        kind.as_str(),
        fields.join(", ")
    )]
    MutatedOnAdmission {
        kind: Kind,
        namespace: String,
        name: String,
        fields: Vec<&'static str>,
    },
}

impl Error {
    /// No answer within the write deadline: the write may have been stored.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// The API server's answer behind this error, if it answered.
    pub fn api_status(&self) -> Option<&kube::core::Status> {
        match self {
            Error::Api { source, .. }
            | Error::List { source, .. }
            | Error::Status { source, .. } => match source {
                kube::Error::Api(s) => Some(s),
                _ => None,
            },
            Error::Timeout { .. } | Error::Finalizer { .. } | Error::MutatedOnAdmission { .. } => {
                None
            }
        }
    }

    /// A write refused because its namespace is being deleted or is gone:
    /// the namespace is no longer targeted, and that is not an error.
    pub fn namespace_going_away(&self) -> bool {
        self.api_status().is_some_and(namespace_going_away)
    }

    /// The server's message when it refused us for lack of permission.
    pub fn forbidden_message(&self) -> Option<&str> {
        self.api_status()
            .filter(|s| s.is_forbidden() && !namespace_going_away(s))
            .map(|s| s.message.as_str())
    }
}

/// A kube error as a person reads it: the API server's message, reason and
/// code (kube's own Display appends a Debug dump of the whole Status).
pub fn readable(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => api_message(s),
        other => other.to_string(),
    }
}

/// "message (Reason, code)".
pub fn api_message(s: &kube::core::Status) -> String {
    format!("{} ({}, {})", s.message, s.reason, s.code)
}

/// A watch error as a person reads it.
pub fn readable_watch(e: &kube::runtime::watcher::Error) -> String {
    use kube::runtime::watcher::Error as W;
    match e {
        W::InitialListFailed(e) => format!("initial list failed: {}", readable(e)),
        W::WatchStartFailed(e) => format!("starting the watch failed: {}", readable(e)),
        W::WatchError(s) => format!("the API server ended the watch: {}", api_message(s)),
        W::WatchFailed(e) => format!("the watch failed: {}", readable(e)),
        other => other.to_string(),
    }
}

/// The `NamespaceTerminating` cause the API server sets on writes into a
/// terminating namespace; the message text is only a fallback for servers
/// that send no details.
pub const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

/// See [`Error::namespace_going_away`].
pub fn namespace_going_away(s: &kube::core::Status) -> bool {
    let causes = s.details.iter().flat_map(|d| &d.causes);
    let terminating = causes
        .clone()
        .any(|c| c.reason == NAMESPACE_TERMINATING_CAUSE)
        || (s.details.as_ref().is_none_or(|d| d.causes.is_empty())
            && s.message.contains("being terminated"));
    (s.is_forbidden() && terminating)
        || (s.is_not_found() && s.details.as_ref().is_some_and(|d| d.kind == "namespaces"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;
    use kube::core::response::{StatusCause, StatusDetails};

    fn status(code: u16, reason: &str, message: &str, details: Option<StatusDetails>) -> Status {
        let mut s = Status::failure(message, reason);
        s.code = code;
        s.details = details;
        s
    }

    fn details(kind: &str, causes: &[&str]) -> Option<StatusDetails> {
        Some(StatusDetails {
            name: String::new(),
            group: String::new(),
            kind: kind.into(),
            uid: String::new(),
            causes: causes
                .iter()
                .map(|c| StatusCause {
                    reason: (*c).into(),
                    message: String::new(),
                    field: String::new(),
                })
                .collect(),
            retry_after_seconds: 0,
        })
    }

    #[test]
    fn a_terminating_namespace_is_recognised_by_its_cause() {
        let by_cause = status(
            403,
            "Forbidden",
            "unable to create new content",
            details("rolebindings", &[NAMESPACE_TERMINATING_CAUSE]),
        );
        assert!(namespace_going_away(&by_cause));
        // no details at all: the message is the fallback
        let by_text = status(403, "Forbidden", "namespace x is being terminated", None);
        assert!(namespace_going_away(&by_text));
        // details with other causes: the message alone does not count
        let other = status(
            403,
            "Forbidden",
            "is being terminated",
            details("rolebindings", &["FieldValueForbidden"]),
        );
        assert!(!namespace_going_away(&other));
        // a plain RBAC refusal is not a namespace going away
        let rbac = status(403, "Forbidden", "cannot create rolebindings", None);
        assert!(!namespace_going_away(&rbac));
    }

    #[test]
    fn a_missing_namespace_is_gone_but_a_missing_object_is_not() {
        let ns = status(
            404,
            "NotFound",
            "namespaces \"x\" not found",
            details("namespaces", &[]),
        );
        assert!(namespace_going_away(&ns));
        let obj = status(
            404,
            "NotFound",
            "roles \"x\" not found",
            details("roles", &[]),
        );
        assert!(!namespace_going_away(&obj));
    }

    #[test]
    fn forbidden_carries_the_servers_message() {
        let e = Error::Api {
            verb: Verb::Create,
            kind: Kind::Role,
            namespace: "ns".into(),
            name: "n".into(),
            source: kube::Error::Api(status(403, "Forbidden", "cannot escalate", None).boxed()),
        };
        assert_eq!(e.forbidden_message(), Some("cannot escalate"));
        // readable: the server's words, reason and code, no Debug dump
        assert_eq!(
            e.to_string(),
            "create Role ns/n: cannot escalate (Forbidden, 403)"
        );
        assert!(!e.namespace_going_away());
        let t = Error::Timeout {
            what: "apply".into(),
            after: Duration::from_secs(1),
        };
        assert_eq!(t.forbidden_message(), None);
    }
}
