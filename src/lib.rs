//! teamaccess: grants Microsoft Entra ID groups Reader, Writer or Admin access
//! to Kubernetes namespaces, the way the AKS built-in roles do.

pub mod cli;
pub mod crd;
pub mod desired;
pub mod discovery;
pub mod drift;
pub mod naming;
pub mod render;
pub mod selector;
pub mod status;
pub mod tiers;
pub mod validate;
