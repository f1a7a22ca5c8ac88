//! Integration tests of the store: the conformance suite (memory, Redis, Cluster, Sentinel) and
//! the Redis topologies under faults.

mod support {
    pub use flashcard_test_support::*;
}

mod conformance;
mod fairness;
mod script_replies;
mod topologies;
