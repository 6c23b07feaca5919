//! Access review, pure: who can do what where, from objects already listed.
//! - [`report`]: every RBAC grant in namespaces, with its source (a TeamAccess
//!   or an unmanaged binding) and the tier it amounts to;
//! - [`findings`]: what in that report goes against the AKS access guidance.
//!
//! The listing itself is [`crate::controller::inventory`]; the output formats
//! are [`crate::cli::report`].

pub mod findings;
pub mod report;
