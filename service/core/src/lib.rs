//! The contracts every part of the flashcard pipeline shares, with no I/O and no async: the job
//! model and ids ([`job`]), the Redis keyspace ([`keyspace`]), the job events' wire format
//! ([`events`]), budget periods, prices and reservation arithmetic ([`budget`]), how the api
//! names clients ([`identity`]) and the Prometheus metric names ([`metric_names`]).
//!
//! The store, the service, the operator and the monitoring definitions depend on this crate;
//! it depends on none of them.

pub mod budget;
pub mod events;
pub mod identity;
pub mod job;
pub mod keyspace;
pub mod metric_names;

/// Lower-case hex of `bytes` (digests, tokens, passwords).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
