//! How the api names a client (the identity rate limits count and that owns a job); the
//! operator renders it into the api's configuration.

/// How clients are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum IdentityMode {
    /// The request's `userId` / `user-id` header (trusted networks only).
    #[default]
    Body,
    /// API keys from a mounted file of SHA-256 hashes.
    ApiKey,
    /// An identity header set by an authenticating proxy at a trusted address.
    Proxy,
}
