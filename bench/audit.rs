//! The API server's audit log, read one way by everything that measures the
//! operator: the integration and fault tests (through their harness) and
//! `make bench` (through the bench-audit example). A figure only means the
//! same in a test bound and in the benchmark if both read the log alike.
//!
//! Times are the API server's own: `received` is when the request arrived,
//! `stage` when the stage this event records (ResponseComplete, or the
//! panic that ended it) was reached, so when a write took effect.

use std::io::BufRead;
use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// One request, as the audit log records it.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub user: String,
    pub verb: String,
    /// `roles`, or `teamaccesses/status` for a subresource.
    pub resource: String,
    pub namespace: String,
    pub name: String,
    /// The HTTP status of the answer; 0 when the log has none.
    pub code: i64,
    pub received: Timestamp,
    pub stage: Timestamp,
    pub user_agent: String,
}

impl AuditEvent {
    /// Reads one line of the log; `None` for a line that is not an event.
    pub fn parse(line: &str) -> Option<AuditEvent> {
        let e: Value = serde_json::from_str(line).ok()?;
        let s = |p: &str| {
            e.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let received: Timestamp = s("/requestReceivedTimestamp").parse().ok()?;
        let stage = s("/stageTimestamp").parse().unwrap_or(received);
        let resource = match s("/objectRef/subresource").as_str() {
            "" => s("/objectRef/resource"),
            sub => format!("{}/{sub}", s("/objectRef/resource")),
        };
        Some(AuditEvent {
            user: s("/user/username"),
            verb: s("/verb"),
            resource,
            namespace: s("/objectRef/namespace"),
            name: s("/objectRef/name"),
            code: e
                .pointer("/responseStatus/code")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            received,
            stage,
            user_agent: s("/userAgent"),
        })
    }

    /// The same event as a line of the log, with only the fields read here:
    /// what a benchmark run keeps, since the whole log is hundreds of MiB.
    pub fn to_line(&self) -> String {
        let (resource, subresource) = match self.resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (self.resource.as_str(), None),
        };
        json!({
            "user": {"username": self.user},
            "verb": self.verb,
            "objectRef": {
                "resource": resource,
                "subresource": subresource,
                "namespace": self.namespace,
                "name": self.name,
            },
            "responseStatus": {"code": self.code},
            "requestReceivedTimestamp": self.received.to_string(),
            "stageTimestamp": self.stage.to_string(),
            "userAgent": self.user_agent,
        })
        .to_string()
    }

    /// A request that changes what the cluster stores. Access reviews are
    /// `create`s that store nothing (the start-up checks send them, leader
    /// or not), so they are not writes.
    pub fn is_write(&self) -> bool {
        matches!(
            self.verb.as_str(),
            "create" | "update" | "patch" | "delete" | "deletecollection"
        ) && !self.resource.ends_with("accessreviews")
    }

    /// A write the API server accepted.
    pub fn succeeded(&self) -> bool {
        matches!(self.code, 200 | 201)
    }
}

/// Every event of the log at `path`, in the order logged.
pub fn read(path: &Path) -> std::io::Result<Vec<AuditEvent>> {
    let file = std::fs::File::open(path)?;
    let mut events = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        if let Some(e) = AuditEvent::parse(&line?) {
            events.push(e);
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"kind":"Event","level":"Metadata","stage":"ResponseComplete","verb":"patch","user":{"username":"system:serviceaccount:teamaccess-system:op","groups":["system:serviceaccounts"]},"userAgent":"teamaccess/0.1.0","objectRef":{"resource":"teamaccesses","namespace":"","name":"payments","apiGroup":"teamaccess.dev","subresource":"status"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-03T10:00:00.123456Z","stageTimestamp":"2026-12-03T10:00:00.130000Z"}"#;

    #[test]
    fn an_event_reads_back_the_same_from_its_short_line() {
        let e = AuditEvent::parse(LINE).expect("an event");
        assert_eq!(e.resource, "teamaccesses/status");
        assert_eq!(e.code, 200);
        assert_eq!(e.user, "system:serviceaccount:teamaccess-system:op");
        assert!(e.is_write() && e.succeeded());
        assert_eq!(
            e.stage.duration_since(e.received).as_micros(),
            6544,
            "both server times kept to the microsecond"
        );
        let again = AuditEvent::parse(&e.to_line()).expect("the short line parses");
        assert_eq!(format!("{again:?}"), format!("{e:?}"));
    }

    #[test]
    fn reviews_are_not_writes_and_garbage_is_not_an_event() {
        let review = LINE
            .replace(r#""verb":"patch""#, r#""verb":"create""#)
            .replace("teamaccesses", "selfsubjectaccessreviews")
            .replace(r#","subresource":"status""#, "");
        assert!(!AuditEvent::parse(&review).unwrap().is_write());
        assert!(AuditEvent::parse("not json").is_none());
        assert!(AuditEvent::parse("{}").is_none(), "no timestamp, no event");
    }
}
