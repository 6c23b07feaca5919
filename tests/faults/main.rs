//! Fault tests: the control plane and the operator fail mid-work, and nothing
//! is lost or granted. Each test starts a control plane of its own
//! ([`plane`], through hack/control-plane.sh in a temporary folder) and breaks
//! it on purpose. `make test-faults` runs them one at a time, with failpoints.

// the integration target's harness, shared (not copied)
#[path = "../integration/harness/mod.rs"]
mod harness;

mod apiserver;
mod checks;
mod etcd;
mod hostile;
mod leader;
mod offline;
mod operator;
mod plane;
mod proxy;
mod rig;
mod slow;
mod watch;
