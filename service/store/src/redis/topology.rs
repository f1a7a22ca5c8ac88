//! Which Redis a URL names: one node, a Redis Cluster, or a master watched by Sentinel.
//!
//! The URL alone chooses the topology, so the Secret that holds it decides for the service and the
//! operator alike:
//!
//! | URL | topology |
//! | --- | --- |
//! | `redis://[user:pass@]host[:port][/db]`, `rediss://...` | one node; redis-rs's own URL rules (`?protocol=resp3`, `#insecure`, `valkey://`, `unix://`) |
//! | `redis+cluster://[user:pass@]host:port[,host:port...]`, `rediss+cluster://...` | Redis Cluster; the hosts are seeds, the other nodes are discovered |
//! | `redis+sentinel://[user:pass@]host:port[,host:port...]/<master>[?db=N&sentinel_username=U&sentinel_password=P]`, `rediss+sentinel://...` | the master `<master>` as named by the sentinels listed |
//!
//! For Sentinel, `user:pass@` authenticates to the master (and its replicas): that is the secret
//! every deployment has. Sentinels often run without a password, and when they have one it is a
//! separate setting, as in redis-rs, ioredis and KEDA; so it goes in the `sentinel_username` /
//! `sentinel_password` query parameters and sentinels are asked without credentials when they are
//! absent. The database number of a Sentinel master is `?db=N` (the path is the master's name).
//! `rediss+sentinel://` uses TLS to the sentinels and to the master. Ports default to 6379 for
//! nodes and 26379 for sentinels; IPv6 hosts are written in brackets (`[::1]:6379`).
//!
//! User names, passwords and query values are percent-decoded; a `/`, `?`, `#` or `@` inside them
//! must be percent-encoded. Errors never repeat any part of the URL that could hold a secret: they
//! name a host by its position or a query parameter by its name.

use std::fmt;
use std::net::Ipv6Addr;

use percent_encoding::percent_decode_str;
use redis::{ConnectionInfo, IntoConnectionInfo};

/// Default port of a Redis node.
pub const DEFAULT_NODE_PORT: u16 = 6379;
/// Default port of a Redis Sentinel.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Schemes handed to redis-rs's own single-node URL parser unchanged.
const SINGLE_SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "valkey",
    "valkeys",
    "unix",
    "redis+unix",
    "valkey+unix",
];

/// A Redis URL that was rejected. The message never contains the password (or any part of the URL
/// that could hold one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "not a Redis URL: use redis://, rediss://, redis+cluster://, rediss+cluster://, \
         redis+sentinel:// or rediss+sentinel://"
    )]
    NotAUrl,
    #[error(
        "unsupported Redis URL scheme: use redis://, rediss://, redis+cluster://, \
         rediss+cluster://, redis+sentinel:// or rediss+sentinel://"
    )]
    Scheme,
    #[error(
        "the Redis URL's user name or password contains '/', '?', '#' or '@': percent-encode them"
    )]
    ReservedCharacter,
    #[error("the Redis URL's {0} is not valid percent-encoded UTF-8")]
    Encoding(&'static str),
    #[error("the Redis URL lists no host")]
    NoHosts,
    #[error("host {index} of the Redis URL is empty or invalid")]
    Host { index: usize },
    #[error("host {index} of the Redis URL has an invalid port")]
    Port { index: usize },
    #[error(
        "a Sentinel URL names the master as its path: redis+sentinel://host:port/<master-name>"
    )]
    MissingMaster,
    #[error("a Redis Cluster has only database 0: drop the path of the redis+cluster:// URL")]
    ClusterDatabase,
    #[error("the Redis URL's database number (db) is not a non-negative integer")]
    Database,
    #[error("the Redis URL has an unknown query parameter {0:?} (supported: {1})")]
    UnknownParameter(String, &'static str),
    #[error("the Redis URL sets query parameter {0:?} twice")]
    DuplicateParameter(String),
    #[error("the Redis URL has a query parameter without '=value'")]
    ParameterWithoutValue,
    #[error("{0} URLs take no '#' fragment")]
    Fragment(&'static str),
    /// redis-rs rejected the settings (e.g. mixed TLS); its messages never echo the URL.
    #[error("invalid Redis settings: {0}")]
    Config(String),
    /// redis-rs rejected a single-node URL; its messages never echo the URL.
    #[error("invalid Redis URL: {0}")]
    Single(String),
}

/// Credentials for one kind of server. `Debug` never shows the password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One `host:port` of a multi-host URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

/// A Redis Cluster named by its seed nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTopology {
    pub seeds: Vec<Node>,
    pub tls: bool,
    pub credentials: Credentials,
}

/// A master found through Sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelTopology {
    pub sentinels: Vec<Node>,
    pub master_name: String,
    pub tls: bool,
    pub db: i64,
    /// For the master and its replicas.
    pub credentials: Credentials,
    /// For the sentinels themselves (usually none).
    pub sentinel_credentials: Credentials,
}

/// What a Redis URL names.
#[derive(Debug, Clone)]
pub enum Topology {
    /// One node (redis-rs's connection info; its `Debug` redacts the password).
    Single(Box<ConnectionInfo>),
    Cluster(ClusterTopology),
    Sentinel(SentinelTopology),
}

/// The three topologies, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyKind {
    Single,
    Cluster,
    Sentinel,
}

impl TopologyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Single => "single",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
        }
    }
}

impl fmt::Display for TopologyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Topology {
    /// Parses a Redis URL (see the module docs for the forms).
    pub fn parse(url: &str) -> Result<Self, TopologyError> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(TopologyError::NotAUrl);
        };
        let scheme = scheme.to_ascii_lowercase();
        match scheme.as_str() {
            "redis+cluster" | "rediss+cluster" => {
                let parts = Parts::split(rest)?;
                cluster(parts, scheme.starts_with("rediss")).map(Self::Cluster)
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let parts = Parts::split(rest)?;
                sentinel(parts, scheme.starts_with("rediss")).map(Self::Sentinel)
            }
            s if SINGLE_SCHEMES.contains(&s) => {
                if matches!(s, "redis" | "rediss" | "valkey" | "valkeys") {
                    // Only to give the clear error for an unencoded reserved character; redis-rs
                    // does the parsing.
                    Parts::split(rest)?;
                }
                url.into_connection_info()
                    .map(|info| Self::Single(Box::new(info)))
                    .map_err(|e| TopologyError::Single(single_reason(&e)))
            }
            // The scheme is not echoed: whatever stands before "://" might be a pasted secret.
            _ => Err(TopologyError::Scheme),
        }
    }

    pub fn kind(&self) -> TopologyKind {
        match self {
            Self::Single(_) => TopologyKind::Single,
            Self::Cluster(_) => TopologyKind::Cluster,
            Self::Sentinel(_) => TopologyKind::Sentinel,
        }
    }
}

/// `url` with its user name and password replaced by `username` and `password` (percent-encoded
/// here), everything else (scheme, hosts, database, master, query) kept: how the operator hands a
/// pipeline's pods their own ACL user on the Redis it reaches with an admin URL. For Sentinel the
/// replaced credentials are the master's, as in the URL; the sentinels' stay in the query.
/// Unix-socket URLs carry their password in the query and are refused.
pub fn with_credentials(
    url: &str,
    username: &str,
    password: &str,
) -> Result<String, TopologyError> {
    let url = url.trim();
    let kind = Topology::parse(url)?.kind();
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(TopologyError::NotAUrl);
    };
    if scheme.to_ascii_lowercase().contains("unix") {
        return Err(TopologyError::Scheme);
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let hosts = authority
        .rsplit_once('@')
        .map_or(authority, |(_, hosts)| hosts);
    // RFC 3986's unreserved characters stay as they are; everything else is encoded.
    const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let encode = |s: &str| percent_encoding::utf8_percent_encode(s, USERINFO).to_string();
    let rewritten = format!(
        "{scheme}://{}:{}@{hosts}{tail}",
        encode(username),
        encode(password)
    );
    // The same topology, or the rewrite is a bug (never a URL the pods would misread).
    if Topology::parse(&rewritten)?.kind() != kind {
        return Err(TopologyError::NotAUrl);
    }
    Ok(rewritten)
}

/// The reason redis-rs gave, without its error-kind decoration.
fn single_reason(e: &redis::RedisError) -> String {
    match e.detail() {
        Some(detail) => format!("{} ({detail})", e.category()),
        None => e.to_string(),
    }
}

/// The pieces of `[userinfo@]hosts[/path][?query][#fragment]` (everything after `://`).
struct Parts<'a> {
    userinfo: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn split(rest: &'a str) -> Result<Self, TopologyError> {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        // An '@' after the authority means the user info held an unencoded '/', '?' or '#', and
        // the pieces below would then carry parts of the password into error messages.
        if tail.contains('@') {
            return Err(TopologyError::ReservedCharacter);
        }
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (tail, fragment) = match tail.split_once('#') {
            Some((tail, fragment)) => (tail, Some(fragment)),
            None => (tail, None),
        };
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        Ok(Self {
            userinfo,
            hosts,
            path,
            query,
            fragment,
        })
    }

    fn credentials(&self) -> Result<Credentials, TopologyError> {
        let Some(userinfo) = self.userinfo else {
            return Ok(Credentials::default());
        };
        let (user, password) = match userinfo.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (userinfo, None),
        };
        Ok(Credentials {
            username: non_empty(decode(user, "user name")?),
            password: match password {
                Some(p) => non_empty(decode(p, "password")?),
                None => None,
            },
        })
    }

    fn nodes(&self, default_port: u16) -> Result<Vec<Node>, TopologyError> {
        if self.hosts.trim().is_empty() {
            return Err(TopologyError::NoHosts);
        }
        self.hosts
            .split(',')
            .enumerate()
            .map(|(i, text)| node(text.trim(), i + 1, default_port))
            .collect()
    }

    /// `name=value` pairs of the query, values percent-decoded; rejects names not in `allowed`.
    fn params(&self, allowed: &'static str) -> Result<Vec<(&'a str, String)>, TopologyError> {
        let Some(query) = self.query else {
            return Ok(Vec::new());
        };
        let mut params: Vec<(&str, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let Some((name, value)) = pair.split_once('=') else {
                return Err(TopologyError::ParameterWithoutValue);
            };
            if !allowed.split(", ").any(|a| a == name) {
                return Err(TopologyError::UnknownParameter(name.to_owned(), allowed));
            }
            if params.iter().any(|(n, _)| *n == name) {
                return Err(TopologyError::DuplicateParameter(name.to_owned()));
            }
            params.push((name, decode(value, "query parameter value")?));
        }
        Ok(params)
    }
}

fn decode(text: &str, what: &'static str) -> Result<String, TopologyError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| TopologyError::Encoding(what))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// Parses `host[:port]` or `[v6][:port]`; `index` counts from 1 for the error message.
fn node(text: &str, index: usize, default_port: u16) -> Result<Node, TopologyError> {
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (v6, after) = bracketed
            .split_once(']')
            .ok_or(TopologyError::Host { index })?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| TopologyError::Host { index })?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(TopologyError::Port { index })?),
        };
        (v6, port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(TopologyError::Port { index }),
        },
    };
    let valid_name = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    if host.is_empty() || !valid_name || host == "0.0.0.0" || host == "::" {
        return Err(TopologyError::Host { index });
    }
    Ok(Node {
        host: host.to_owned(),
        port,
    })
}

fn cluster(parts: Parts<'_>, tls: bool) -> Result<ClusterTopology, TopologyError> {
    if parts.fragment.is_some() {
        return Err(TopologyError::Fragment("redis+cluster://"));
    }
    if !matches!(parts.path.trim_matches('/'), "" | "0") {
        return Err(TopologyError::ClusterDatabase);
    }
    parts.params("(none)")?;
    Ok(ClusterTopology {
        seeds: parts.nodes(DEFAULT_NODE_PORT)?,
        tls,
        credentials: parts.credentials()?,
    })
}

fn sentinel(parts: Parts<'_>, tls: bool) -> Result<SentinelTopology, TopologyError> {
    if parts.fragment.is_some() {
        return Err(TopologyError::Fragment("redis+sentinel://"));
    }
    let master = parts.path.strip_prefix('/').unwrap_or(parts.path);
    let master = master.strip_suffix('/').unwrap_or(master);
    if master.is_empty() || master.contains('/') {
        return Err(TopologyError::MissingMaster);
    }
    let master_name = decode(master, "master name")?;
    let mut db = 0;
    let mut sentinel_credentials = Credentials::default();
    for (name, value) in parts.params("db, sentinel_username, sentinel_password")? {
        match name {
            "db" => {
                db = value
                    .parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or(TopologyError::Database)?;
            }
            "sentinel_username" => sentinel_credentials.username = non_empty(value),
            _ => sentinel_credentials.password = non_empty(value),
        }
    }
    Ok(SentinelTopology {
        sentinels: parts.nodes(DEFAULT_SENTINEL_PORT)?,
        master_name,
        tls,
        db,
        credentials: parts.credentials()?,
        sentinel_credentials,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn credentials_are_replaced_and_nothing_else() {
        let cases = [
            ("redis://:admin@db:6380/2", "redis://fc-a.b:p%2Fw@db:6380/2"),
            ("rediss://db", "rediss://fc-a.b:p%2Fw@db"),
            (
                "redis+cluster://root:x@h1:7000,h2:7001",
                "redis+cluster://fc-a.b:p%2Fw@h1:7000,h2:7001",
            ),
            (
                "redis+sentinel://:m@s1:26379,s2/mymaster?db=3&sentinel_password=s",
                "redis+sentinel://fc-a.b:p%2Fw@s1:26379,s2/mymaster?db=3&sentinel_password=s",
            ),
        ];
        for (admin, want) in cases {
            let got = with_credentials(admin, "fc-a.b", "p/w").unwrap();
            assert_eq!(got, want);
        }
        let Topology::Single(info) =
            Topology::parse(&with_credentials("redis://db", "u", "p/w").unwrap()).unwrap()
        else {
            panic!("not a single node");
        };
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().password(), Some("p/w"));
        assert!(with_credentials("unix:///tmp/r.sock", "u", "p").is_err());
        assert!(with_credentials("nope", "u", "p").is_err());
    }

    use super::*;

    fn n(host: &str, port: u16) -> Node {
        Node {
            host: host.into(),
            port,
        }
    }

    fn creds(user: Option<&str>, password: Option<&str>) -> Credentials {
        Credentials {
            username: user.map(Into::into),
            password: password.map(Into::into),
        }
    }

    #[test]
    fn single_node_urls_keep_redis_rs_rules() {
        let Topology::Single(info) = Topology::parse("redis://u:p%40ss@127.0.0.1:6380/3").unwrap()
        else {
            panic!("single expected");
        };
        assert_eq!(
            info.addr(),
            &redis::ConnectionAddr::Tcp("127.0.0.1".into(), 6380)
        );
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().username(), Some("u"));
        assert_eq!(info.redis_settings().password(), Some("p@ss"));
        let Topology::Single(tls) = Topology::parse("rediss://localhost/").unwrap() else {
            panic!("single expected");
        };
        assert!(matches!(
            tls.addr(),
            redis::ConnectionAddr::TcpTls {
                port: 6379,
                insecure: false,
                ..
            }
        ));
        assert_eq!(
            Topology::parse("redis://localhost").unwrap().kind(),
            TopologyKind::Single
        );
    }

    #[test]
    fn cluster_urls_list_seed_nodes() {
        let Topology::Cluster(c) =
            Topology::parse("redis+cluster://alice:s%2Fcret@10.0.0.1:7000,node-b:7001,[::1]:7002")
                .unwrap()
        else {
            panic!("cluster expected");
        };
        assert_eq!(
            c.seeds,
            [n("10.0.0.1", 7000), n("node-b", 7001), n("::1", 7002)]
        );
        assert!(!c.tls);
        assert_eq!(c.credentials, creds(Some("alice"), Some("s/cret")));
        let Topology::Cluster(c) = Topology::parse("rediss+cluster://:pw@redis/").unwrap() else {
            panic!("cluster expected");
        };
        assert_eq!(c.seeds, [n("redis", DEFAULT_NODE_PORT)]);
        assert!(c.tls);
        assert_eq!(c.credentials, creds(None, Some("pw")));
    }

    #[test]
    fn sentinel_urls_name_the_master_and_separate_credentials() {
        let Topology::Sentinel(s) = Topology::parse(
            "redis+sentinel://app:pw@s1:26379,s2,s3:26380/mymaster?db=2&sentinel_password=sp%26x",
        )
        .unwrap() else {
            panic!("sentinel expected");
        };
        assert_eq!(
            s.sentinels,
            [
                n("s1", 26379),
                n("s2", DEFAULT_SENTINEL_PORT),
                n("s3", 26380)
            ]
        );
        assert_eq!(s.master_name, "mymaster");
        assert_eq!(s.db, 2);
        assert!(!s.tls);
        assert_eq!(s.credentials, creds(Some("app"), Some("pw")));
        assert_eq!(s.sentinel_credentials, creds(None, Some("sp&x")));
        let Topology::Sentinel(s) =
            Topology::parse("rediss+sentinel://s1/my%20master/?sentinel_username=watch").unwrap()
        else {
            panic!("sentinel expected");
        };
        assert!(s.tls);
        assert_eq!(s.master_name, "my master");
        assert_eq!(s.db, 0);
        assert_eq!(s.credentials, Credentials::default());
        assert_eq!(s.sentinel_credentials, creds(Some("watch"), None));
    }

    #[test]
    fn bad_urls_are_rejected_with_a_reason() {
        use TopologyError as E;
        let cases: &[(&str, TopologyError)] = &[
            ("localhost:6379", E::NotAUrl),
            ("http://localhost", E::Scheme),
            ("redis+cluster://", E::NoHosts),
            ("redis+cluster://a:1,,b:2", E::Host { index: 2 }),
            ("redis+cluster://a:1,b:x", E::Port { index: 2 }),
            ("redis+cluster://a:0", E::Port { index: 1 }),
            ("redis+cluster://a:70000", E::Port { index: 1 }),
            ("redis+cluster://[::1:7000", E::Host { index: 1 }),
            ("redis+cluster://0.0.0.0:7000", E::Host { index: 1 }),
            ("redis+cluster://a:1/2", E::ClusterDatabase),
            (
                "redis+cluster://a:1?db=1",
                E::UnknownParameter("db".into(), "(none)"),
            ),
            (
                "redis+cluster://a:1#insecure",
                E::Fragment("redis+cluster://"),
            ),
            ("redis+sentinel://s1:26379", E::MissingMaster),
            ("redis+sentinel://s1:26379/", E::MissingMaster),
            ("redis+sentinel://s1/a/b", E::MissingMaster),
            ("redis+sentinel://s1/m?db=-1", E::Database),
            ("redis+sentinel://s1/m?db=x", E::Database),
            (
                "redis+sentinel://s1/m?db=1&db=2",
                E::DuplicateParameter("db".into()),
            ),
            ("redis+sentinel://s1/m?db", E::ParameterWithoutValue),
            (
                "redis+sentinel://s1/m?master=x",
                E::UnknownParameter("master".into(), "db, sentinel_username, sentinel_password"),
            ),
            ("redis+cluster://u:%FF@a:1", E::Encoding("password")),
        ];
        for (url, expected) in cases {
            assert_eq!(Topology::parse(url).unwrap_err(), *expected, "{url}");
        }
        assert!(matches!(
            Topology::parse("redis://localhost/notanumber"),
            Err(E::Single(_))
        ));
    }

    #[test]
    fn errors_never_contain_the_password() {
        let secret = "Sup3rS3cret";
        let urls = [
            format!("redis+cluster://u:{secret}@a:1,b:x"),
            format!("redis+cluster://u:{secret}@"),
            format!("redis+cluster://u:{secret}@a:1/5"),
            format!("redis+cluster://u:{secret}@a:1?x=1"),
            // Unencoded reserved characters inside the password.
            format!("redis+cluster://u:{secret}/x@a:1"),
            format!("redis+cluster://u:x?{secret}@a:1"),
            format!("redis+cluster://u:x#{secret}@a:1"),
            format!("redis+sentinel://u:pre/{secret}@s1/m"),
            format!("redis+sentinel://u:{secret}@s1"),
            format!("redis+sentinel://s1/m?sentinel_password={secret}&db=z"),
            format!("redis+sentinel://s1/m?sentinel_password={secret}%FF"),
            format!("redis://u:{secret}@localhost/abc"),
            format!("redis://u:pre/{secret}@localhost:6379"),
            format!("rediss://u:{secret}@localhost/#other"),
            format!("redis://u:{secret}@localhost/?protocol=9"),
            secret.to_string(),
            format!("{secret}://host"),
            format!("http://u:{secret}@host"),
        ];
        for url in &urls {
            let err = Topology::parse(url).expect_err(url);
            let text = format!("{err} {err:?}").to_lowercase();
            assert!(
                !text.contains(&secret.to_lowercase()),
                "{url} leaked into: {text}"
            );
        }
    }

    #[test]
    fn debug_output_redacts_passwords() {
        for url in [
            "redis+cluster://u:Sup3rS3cret@a:1",
            "redis+sentinel://u:Sup3rS3cret@s/m?sentinel_password=Sup3rS3cret",
            "redis://u:Sup3rS3cret@localhost",
        ] {
            let text = format!("{:?}", Topology::parse(url).unwrap());
            assert!(!text.contains("Sup3rS3cret"), "{text}");
        }
    }
}
