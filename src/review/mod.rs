//! Access review, for people: pure, no Kubernetes client.
//! - [`diff`]: the change in effective access between two sets of TeamAccess
//!   objects (a pull request's base and head);
//! - [`report`]: every RBAC grant in namespaces, with its source (a TeamAccess
//!   or an unmanaged binding) and the tier it amounts to;
//! - [`findings`]: what in that report goes against the AKS access guidance.
//!
//! The listing for the report is [`crate::controller::inventory`]; the output
//! formats are [`crate::cli::diff`] and [`crate::cli::report`].

pub mod diff;
pub mod findings;
pub mod report;
