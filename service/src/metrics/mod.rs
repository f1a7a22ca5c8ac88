//! Prometheus metrics of the service.
pub mod names;
