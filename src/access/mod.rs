//! Pure access logic, shared by the controller and the offline commands: no
//! Kubernetes client here. Tier tables, the desired-state decision, object
//! naming, the semantic comparison of existing and wanted objects, the write
//! plan, and status computation.

pub mod compare;
pub mod desired;
pub mod naming;
pub mod status;
pub mod tiers;
