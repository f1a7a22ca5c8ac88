//! In-memory store: one process, no persistence.
