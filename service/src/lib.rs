//! The flashcard service: HTTP API, SSE job events, worker, shared store and LLM providers.
//!
//! One binary runs in several modes (`standalone`, `api`, `worker`); the operator uses this crate
//! as a library for the Redis keyspace, the store, budget periods, alert rules and the metric
//! names.

pub mod alerts;
pub mod api;
pub mod app;
pub mod budget;
pub mod config;
pub mod events;
pub mod job;
pub mod keyspace;
pub mod metrics;
pub mod provider;
pub mod server;
pub mod sse;
pub mod store;
pub mod store_watch;
pub mod telemetry;
pub mod worker;
