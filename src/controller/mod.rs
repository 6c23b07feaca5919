//! Everything that talks to the API server: the reconcile, writes, revocation,
//! events, triggers, discovery, leader election, and the `run` wiring.

pub mod discovery;
pub mod leader;
pub mod reconcile;
pub mod run;
