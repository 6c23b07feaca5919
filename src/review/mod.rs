//! Review of access, for people: pure, no Kubernetes client.
//! - [`diff`]: the change in effective access between two sets of TeamAccess
//!   objects (a pull request's base and head).

pub mod diff;
