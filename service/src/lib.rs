//! The flashcard service: the HTTP API, SSE job events and the worker, in one binary with
//! several modes (`standalone`, `api`, `worker`).
//!
//! It owns the HTTP surface ([`api`], [`sse`], [`server`]), the worker loop ([`worker`]), the
//! command line ([`config`]), the Prometheus registry ([`metrics`]) and its spans
//! ([`telemetry`]). What it shares with the operator lives below it: the contracts in
//! `flashcard-core`, the state in `flashcard-store`; the LLM calls in `flashcard-provider`.

pub mod api;
pub mod app;
pub mod config;
mod metrics;
mod providers;
mod server;
pub mod sse;
mod telemetry;
mod worker;
