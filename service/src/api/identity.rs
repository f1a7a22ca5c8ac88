//! Who the client is: the identity that rate limits count and that owns a job.
//!
//! Chosen by configuration (`--client-identity`):
//! - `body` (the seed's behaviour, for trusted networks): the request's `userId` (or `user-id`
//!   header) names the client. Anyone may claim any id, so use it only behind something that
//!   already authenticated the caller.
//! - `api-key`: every request presents a key (`Authorization: Bearer <key>` or `X-API-Key`);
//!   keys are stored hashed (SHA-256) in a mounted file that maps them to principals.
//! - `proxy`: an authenticating proxy in front (oauth2-proxy, an Ingress with external auth) sets
//!   an identity header (`X-Forwarded-User` by default), trusted only from the configured proxy
//!   addresses.
//!
//! With `api-key` or `proxy`, a job's status and events are served only to its owner (anyone
//! else gets 404, as if it did not exist). When no identity is given, the client address names
//! the client: the peer's address, or behind trusted proxies the last untrusted address of
//! `X-Forwarded-For`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use ipnet::IpNet;
use subtle::ConstantTimeEq;

use super::error::ApiError;

use flashcard_core::hex;
use flashcard_core::identity::IdentityMode;

/// The identity configuration failed to load.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read the API keys file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "API keys file line {line}: expected `<sha256-hex-of-key> <principal>` (64 hex digits, a space, a name)"
    )]
    Line { line: usize },
    #[error(
        "--client-identity api-key needs --api-keys-file (or API_KEYS_FILE) with at least one key"
    )]
    NoKeys,
    #[error("invalid trusted proxy {0:?}: expected an address or CIDR such as 10.0.0.0/8")]
    Proxy(String),
    #[error("invalid identity header name {0:?}")]
    Header(String),
}

/// The loaded identity configuration.
#[derive(Clone)]
pub struct Identities {
    mode: IdentityMode,
    /// SHA-256 of each key -> principal.
    keys: HashMap<[u8; 32], String>,
    header: HeaderName,
    trusted: Vec<IpNet>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("mode", &self.mode)
            .field("keys", &self.keys.len())
            .field("header", &self.header)
            .field("trusted", &self.trusted)
            .finish()
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// An identity that was proven (API key) or vouched for (trusted proxy), if any.
    pub principal: Option<String>,
    /// The client's address (the peer, or from `X-Forwarded-For` behind trusted proxies).
    pub address: IpAddr,
    /// An anonymous client's owner token (`X-Owner-Token`, or `ownerToken` for EventSource):
    /// the secret its jobs belong to, so clients behind one address (a NAT) cannot read each
    /// other's jobs.
    pub owner_token: Option<String>,
}

/// The header an anonymous client presents its owner token in.
pub const OWNER_TOKEN_HEADER: &str = "x-owner-token";

/// Checks a presented owner token: 16 to 128 characters of `A-Z a-z 0-9 _ -`.
pub fn parse_owner_token(raw: &str) -> Result<String, ApiError> {
    let ok = (16..=128).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_OWNER_TOKEN",
            "An owner token is 16 to 128 characters of A-Z, a-z, 0-9, _ and -",
        ));
    }
    Ok(raw.to_owned())
}

/// A new owner token for an anonymous client that brought none (128 random bits, hex).
pub fn new_owner_token() -> String {
    hex(&rand::random::<[u8; 16]>())
}

/// SHA-256 of `bytes` (API keys, owner tokens, the admin token).
pub(super) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Identities {
    /// The seed's behaviour: no keys, no proxies.
    pub fn body() -> Self {
        Self {
            mode: IdentityMode::Body,
            keys: HashMap::new(),
            header: HeaderName::from_static("x-forwarded-user"),
            trusted: Vec::new(),
        }
    }

    pub fn load(
        mode: IdentityMode,
        keys_file: Option<&Path>,
        header: &str,
        trusted: &[String],
    ) -> Result<Self, IdentityError> {
        let mut keys = HashMap::new();
        if let Some(path) = keys_file {
            let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read {
                path: path.display().to_string(),
                source,
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let (hash, principal) = line
                    .split_once(char::is_whitespace)
                    .map(|(h, p)| (h, p.trim()))
                    .ok_or(IdentityError::Line { line: n + 1 })?;
                let hash = parse_hex(&hash.to_ascii_lowercase())
                    .filter(|_| !principal.is_empty())
                    .ok_or(IdentityError::Line { line: n + 1 })?;
                keys.insert(hash, principal.to_owned());
            }
        }
        if mode == IdentityMode::ApiKey && keys.is_empty() {
            return Err(IdentityError::NoKeys);
        }
        let header = HeaderName::try_from(header.trim().to_ascii_lowercase())
            .map_err(|_| IdentityError::Header(header.to_owned()))?;
        let trusted = trusted
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.parse::<IpNet>()
                    .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| IdentityError::Proxy(t.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            mode,
            keys,
            header,
            trusted,
        })
    }

    pub fn mode(&self) -> IdentityMode {
        self.mode
    }

    /// Whether jobs are served only to their owner.
    pub fn enforces_ownership(&self) -> bool {
        self.mode != IdentityMode::Body
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// The client address: behind trusted proxies, the last address in `X-Forwarded-For` that
    /// is not a trusted proxy itself (earlier entries are the client's to forge).
    fn address(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        forwarded
            .into_iter()
            .rev()
            .find(|a| !self.trusts(*a))
            .unwrap_or(peer)
    }

    /// The key a request presents: `X-API-Key`, or a `Bearer` token (scheme case-insensitive).
    fn presented_key(headers: &HeaderMap) -> Option<&str> {
        if let Some(key) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            return Some(key.trim());
        }
        bearer(headers)
    }

    /// Who sent a request; refuses a request without a valid key in `api-key` mode.
    pub fn client(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<Client, ApiError> {
        let address = self.address(headers, peer.ip());
        let principal = match self.mode {
            IdentityMode::Body => None,
            IdentityMode::ApiKey => {
                let Some(key) = Self::presented_key(headers) else {
                    return Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        "UNAUTHORIZED",
                        "An API key is required: `Authorization: Bearer <key>` or `X-API-Key: <key>`",
                    ));
                };
                let hash = sha256(key.as_bytes());
                // Compare with every stored hash in constant time, so the lookup leaks nothing.
                let found = self
                    .keys
                    .iter()
                    .filter(|(stored, _)| bool::from(stored.ct_eq(&hash)))
                    .map(|(_, principal)| principal.clone())
                    .next();
                match found {
                    Some(principal) => Some(principal),
                    None => {
                        return Err(ApiError::new(
                            StatusCode::UNAUTHORIZED,
                            "INVALID_API_KEY",
                            "The API key is not valid",
                        ));
                    }
                }
            }
            IdentityMode::Proxy => {
                if self.trusts(peer.ip()) {
                    headers
                        .get(&self.header)
                        .and_then(|v| v.to_str().ok())
                        .map(str::trim)
                        .filter(|v| !v.is_empty() && v.len() <= 256)
                        .map(str::to_owned)
                } else {
                    None
                }
            }
        };
        // Checked whenever presented (a malformed one is a 400 in every mode, as the API
        // document says), used only by an anonymous client.
        let presented = headers
            .get(OWNER_TOKEN_HEADER)
            .map(|v| parse_owner_token(v.to_str().unwrap_or_default().trim()))
            .transpose()?;
        let owner_token = match (&principal, self.mode) {
            (None, IdentityMode::Proxy) => presented,
            _ => None,
        };
        Ok(Client {
            principal,
            address,
            owner_token,
        })
    }

    /// Whether `client` has no identity where jobs belong to their owner (`proxy` mode without
    /// the trusted header): its jobs belong to an owner token.
    pub fn is_anonymous(&self, client: &Client) -> bool {
        client.principal.is_none() && self.enforces_ownership()
    }

    /// The owner of a job `client` submits: its principal, or in `body` mode the request's
    /// user id, or else its owner token's digest (its address for a client without one: jobs
    /// made before owner tokens).
    pub fn owner(&self, client: &Client, user_id: &str) -> String {
        match (&client.principal, self.mode, &client.owner_token) {
            (Some(principal), _, _) => format!("user:{principal}"),
            (None, IdentityMode::Body, _) => user_id.to_owned(),
            (None, _, Some(token)) => format!("anon:{}", hash_key_hex(token)),
            (None, _, None) => format!("ip:{}", client.address),
        }
    }

    /// Who a rate limit counts for `client`: its owner, except that an anonymous client counts
    /// as its address (it could change its owner token at will).
    pub fn rate_subject(&self, client: &Client, user_id: &str) -> String {
        match self.is_anonymous(client) {
            true => format!("ip:{}", client.address),
            false => self.owner(client, user_id),
        }
    }

    /// Whether `client` may see a job owned by `owner`.
    pub fn may_read(&self, client: &Client, owner: &str) -> bool {
        !self.enforces_ownership() || self.owner(client, "") == owner
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is case-insensitive
/// (RFC 7235).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(char::is_whitespace)?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `printf %s "$KEY" | sha256sum`, for tests and the docs' example.
pub fn hash_key_hex(key: &str) -> String {
    hex(&sha256(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 5000)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn keys_file(lines: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(lines)
    }

    /// A throwaway file, removed on drop (no dependency for one test helper).
    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "fc-keys-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4().simple()
                ));
                std::fs::write(&path, text).unwrap();
                Self(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn api_keys_are_checked_against_their_hashes() {
        let file = keys_file(&format!(
            "# principal per key\n{} alice\n{}  bob\n",
            hash_key_hex("key-a"),
            hash_key_hex("key-b")
        ));
        let ids =
            Identities::load(IdentityMode::ApiKey, Some(&file.0), "x-forwarded-user", &[]).unwrap();
        let alice = ids
            .client(
                &headers(&[("authorization", "Bearer key-a")]),
                peer("10.0.0.1"),
            )
            .unwrap();
        assert_eq!(alice.principal.as_deref(), Some("alice"));
        // The scheme is case-insensitive; X-API-Key works too.
        for h in [
            headers(&[("authorization", "bearer key-b")]),
            headers(&[("authorization", "BEARER key-b")]),
            headers(&[("x-api-key", "key-b")]),
        ] {
            assert_eq!(
                ids.client(&h, peer("10.0.0.1"))
                    .unwrap()
                    .principal
                    .as_deref(),
                Some("bob")
            );
        }
        let wrong = ids
            .client(
                &headers(&[("authorization", "Bearer nope")]),
                peer("10.0.0.1"),
            )
            .unwrap_err();
        assert_eq!(wrong.code, "INVALID_API_KEY");
        let missing = ids.client(&HeaderMap::new(), peer("10.0.0.1")).unwrap_err();
        assert_eq!(
            (missing.status.as_u16(), missing.code),
            (401, "UNAUTHORIZED")
        );
        assert_eq!(ids.owner(&alice, "whatever-the-body-says"), "user:alice");
        assert!(ids.may_read(&alice, "user:alice"));
        assert!(!ids.may_read(&alice, "user:bob"));
    }

    #[test]
    fn a_bad_keys_file_is_refused_with_its_line() {
        let file = keys_file("not-a-hash alice\n");
        let err = Identities::load(IdentityMode::ApiKey, Some(&file.0), "x", &[]).unwrap_err();
        assert!(matches!(err, IdentityError::Line { line: 1 }), "{err}");
        let empty = keys_file("# nothing\n");
        let err = Identities::load(IdentityMode::ApiKey, Some(&empty.0), "x", &[]).unwrap_err();
        assert!(matches!(err, IdentityError::NoKeys));
    }

    #[test]
    fn the_identity_header_counts_only_from_trusted_proxies() {
        let ids = Identities::load(
            IdentityMode::Proxy,
            None,
            "X-Forwarded-User",
            &["10.0.0.0/8".into()],
        )
        .unwrap();
        let h = headers(&[
            ("x-forwarded-user", "carol"),
            ("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.1.2.3"),
        ]);
        let via_proxy = ids.client(&h, peer("10.9.9.9")).unwrap();
        assert_eq!(via_proxy.principal.as_deref(), Some("carol"));
        // The last untrusted hop, not the forgeable first entry.
        assert_eq!(via_proxy.address, "203.0.113.7".parse::<IpAddr>().unwrap());
        let direct = ids.client(&h, peer("198.51.100.1")).unwrap();
        assert_eq!(direct.principal, None, "a header from outside is ignored");
        assert_eq!(direct.address, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert_eq!(ids.owner(&direct, "victim"), "ip:198.51.100.1");
        assert!(!ids.may_read(&direct, "user:carol"));
    }

    #[test]
    fn body_mode_is_the_seed_s_behaviour() {
        let ids = Identities::body();
        let c = ids
            .client(
                &headers(&[("x-forwarded-user", "mallory")]),
                peer("1.2.3.4"),
            )
            .unwrap();
        assert_eq!(c.principal, None);
        assert_eq!(ids.owner(&c, "u-17"), "u-17");
        assert!(
            ids.may_read(&c, "anyone"),
            "no ownership checks in body mode"
        );
    }

    #[test]
    fn bearer_schemes_are_case_insensitive_and_need_a_token() {
        assert_eq!(
            bearer(&headers(&[("authorization", "Bearer t")])),
            Some("t")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "bEaReR   t2 ")])),
            Some("t2")
        );
        assert_eq!(
            bearer(&headers(&[("authorization", "Basic dXNlcg==")])),
            None
        );
        assert_eq!(bearer(&headers(&[("authorization", "Bearer")])), None);
    }
}
