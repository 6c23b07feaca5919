//! teamaccess: grants Microsoft Entra ID groups Reader, Writer or Admin access
//! to Kubernetes namespaces, the way the AKS built-in roles do.
//!
//! The folders are the architecture:
//! - [`api`]: the TeamAccess type, label selectors, offline validation by the CRD's own schema;
//! - [`access`]: pure decisions (tier tables, desired state, naming, comparison, write plan, status);
//! - [`controller`]: the only code that talks to the API server;
//! - [`review`]: pure access review for people: the access change between two sets of objects, the access report and its findings;
//! - [`cli`]: every flag and subcommand; [`ops`]: metrics and the HTTP endpoints.

pub mod access;
pub mod api;
pub mod cli;
pub mod controller;
pub mod ops;
pub mod review;
