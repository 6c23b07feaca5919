//! The test harness: the control plane client and its helpers
//! ([`support`]: SubjectAccessReview, ServiceAccount kubeconfigs, audit-log
//! counts), the operator run as a real process under its own ServiceAccount
//! ([`operator`]), and the tests that show the rig itself is real ([`rig`]).

pub mod operator;
mod rig;
pub mod support;
