//! The test harness, shared by the `integration` and `faults` test targets:
//! the control plane client and its helpers ([`support`]: SubjectAccessReview,
//! ServiceAccount kubeconfigs, audit-log counts, read as [`audit`] reads
//! them for the benchmark too) and the operator run as a
//! real process under its own ServiceAccount ([`operator`]).

// two test targets share these, and each uses only part of them
#[allow(dead_code)]
#[path = "../../../bench/audit.rs"]
pub mod audit;
#[allow(dead_code)]
pub mod operator;
#[allow(dead_code)]
pub mod support;
