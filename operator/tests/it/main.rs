//! Integration tests of the operator: generated manifests, leadership, the binary, and its
//! store connector on real Redis topologies. Reconcile logic is tested without a cluster in
//! the crate itself (the kube mock service).

mod cel_rules;
mod crdgen;
mod leadership;
mod manifests;
mod redis_acl;
mod redis_state;
mod redis_topologies;
mod startup;
