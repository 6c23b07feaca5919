//! The API: the TeamAccess custom resource, its label selectors, and the
//! offline validation that checks an object by the CRD's own schema and CEL
//! rules (so `render` refuses what the API server would).

#[cfg(test)]
pub mod fixtures;
pub mod selector;
pub mod teamaccess;
pub mod validate;
