//! Integration tests against a real kube-apiserver, etcd and
//! kube-controller-manager. One binary, so one control plane serves them all:
//! `make test` starts it and passes its kubeconfig in TEAMACCESS_TEST_KUBECONFIG.

mod admission;
mod api;
mod config;
mod controller;
mod gitops;
mod ha;
mod harness;
mod helm;
mod report;
mod revocation;
/// The rig itself is real (RBAC, tokens, the audit log).
mod rig;
mod scale;

use harness::{operator, support};
