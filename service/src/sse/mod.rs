//! Server-Sent Events for job followers: the process's fan-out hub ([`hub`]) and the stream of
//! one follower ([`follow`]). The HTTP endpoint that validates requests and answers errors is
//! `api::events`; this layer knows nothing of HTTP routing or API errors.

pub mod follow;
pub mod hub;
