//! teamaccess: grants Microsoft Entra ID groups Reader, Writer or Admin access
//! to Kubernetes namespaces, the way the AKS built-in roles do.

pub mod cli;
pub mod crd;
pub mod desired;
pub mod discovery;
pub mod drift;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod naming;
pub mod reconcile;
pub mod render;
pub mod run;
pub mod selector;
pub mod status;
pub mod tiers;
pub mod validate;
