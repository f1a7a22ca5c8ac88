//! The FlashcardPipeline operator: CRD types, rendering of the children, the autoscaling and
//! budget decisions, the reconciler, leader election and the operator's own metrics.

pub mod budget;
pub mod crd;
pub mod crdgen;
pub mod render;
pub mod scaling;
