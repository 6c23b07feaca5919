//! Pure access logic, shared by the controller and the offline commands: no
//! Kubernetes client here.
//! - [`tiers`]: the tier tables, as data, traced to the AKS roles;
//! - [`desired`]: the decision of what should exist, per namespace;
//! - [`plan`]: the writes that turn what exists into that, with preconditions;
//! - [`expiry`]: tiers in effect now, inactive grants, expiry warnings;
//! - [`compare`]: semantic comparison of existing and wanted objects, ownership;
//! - [`outcome`], [`status`]: what a namespace came to, and the status from it;
//! - [`naming`], [`reasons`], [`text`]: names, the reason vocabulary, wording.

pub mod compare;
pub mod desired;
pub mod expiry;
pub mod naming;
pub mod outcome;
pub mod plan;
pub mod reasons;
pub mod status;
pub mod text;
pub mod tiers;
