//! Where Redis is and how to talk to it: one node (given directly or found through Redis
//! Sentinel) or a Redis Cluster, behind one connection type.
//!
//! [`RedisTarget`] is built from configuration (a URL, or with cluster mode a comma-separated
//! list of seed node URLs) and opens a [`Connection`]: a cheap-to-clone multiplexed connection
//! to a single Redis, or a cluster connection that routes each command to the primary owning
//! its key's slot and follows `MOVED`/`ASK` redirects.
//!
//! Design constraints:
//! - On a single node a [`Connection`] behaves exactly like `redis::aio::MultiplexedConnection`:
//!   every call is passed through untouched.
//! - On a cluster, every command the workspace sends names its keys first (an `FCALL` its first
//!   key), and all keys of one call share a hash tag, so redis-rs routes each call to one slot.
//! - redis-rs sends a whole pipeline to a single node and refuses one whose commands hash to
//!   different slots (`CrossSlot`). A [`Connection`] to a cluster splits such a pipeline into one
//!   sub-pipeline per slot, sends them concurrently and puts the replies back in order, so
//!   callers keep pipelining keys of many tiers, chests or clues. A transaction (`MULTI`/`EXEC`)
//!   cannot be split: it must stay within one slot (redis-rs refuses it otherwise).
//! - Functions live per node: [`Primaries`] reaches each primary on its own, so the library is
//!   checked and loaded on every primary (see [`crate::library::ensure_loaded`]).
//! - Secrets never reach logs: [`redact_url`] hides passwords, in seed lists too.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::sentinel::{
    SentinelClient, SentinelClientBuilder, SentinelNodeConnectionInfo, SentinelServerType,
};
use redis::{
    Arg, AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult,
    TlsCertificates, Value,
};

/// How long connecting and each command may take; `None` waits without limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// How long establishing a connection (to each node, on a cluster) may take.
    pub connect: Option<Duration>,
    /// How long one command may wait for its reply.
    pub response: Option<Duration>,
}

/// The Redis deployment a process talks to: one node, or a Redis Cluster found through seeds.
#[derive(Clone)]
pub struct RedisTarget(Target);

#[derive(Clone)]
enum Target {
    /// A single Redis (`redis://[:password@]host:port/`; boxed: with TLS its client is large).
    Single(Box<redis::Client>),
    /// A Redis Cluster, discovered from its seed nodes (boxed: its client is large).
    Cluster(Box<ClusterClient>),
    /// The primary Redis Sentinel names for a service, asked again on every connect (so a
    /// reconnect after a failover reaches the promoted replica).
    Sentinel(std::sync::Arc<tokio::sync::Mutex<SentinelClient>>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The clients' own formatting may carry credentials.
        let mode = match self.0 {
            Target::Single(_) => "single",
            Target::Cluster(_) => "cluster",
            Target::Sentinel(_) => "sentinel",
        };
        f.debug_tuple("RedisTarget").field(&mode).finish()
    }
}

impl RedisTarget {
    /// The target described by `url`: a single node's URL, a Sentinel URL
    /// (`redis+sentinel://[[user]:password@]host:port[,host:port…]/<service>`: the primary the
    /// sentinels name for the service, asked again on every connect), or with `cluster` a
    /// comma-separated list of seed node URLs (one is enough; the rest of the cluster is
    /// discovered from it). Nothing is connected yet.
    ///
    /// # Errors
    /// The Redis error when a URL is malformed, the seed list is empty, or seeds disagree on
    /// credentials.
    pub fn open(url: &str, cluster: bool) -> RedisResult<Self> {
        Self::open_with_ca(url, cluster, None)
    }

    /// [`RedisTarget::open`], trusting the certificate authorities in the PEM file `ca` for
    /// `rediss://` (TLS) URLs instead of the system's (which `SSL_CERT_FILE` may also name).
    /// Usernames (Redis ACL) and passwords come from the URLs: `rediss://user:password@host:port/`.
    ///
    /// # Errors
    /// As [`RedisTarget::open`]; also when `ca` cannot be read, or is given for URLs that are
    /// not all TLS (`rediss://`, or `rediss+sentinel://`, where it serves the sentinels and the
    /// primary alike).
    pub fn open_with_ca(url: &str, cluster: bool, ca: Option<&Path>) -> RedisResult<Self> {
        let invalid =
            |reason: &'static str| RedisError::from((ErrorKind::InvalidClientConfig, reason));
        let certificates = match ca {
            None => None,
            Some(path) => Some(TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path).map_err(|err| {
                    RedisError::from((
                        ErrorKind::InvalidClientConfig,
                        "cannot read the Redis CA file",
                        format!("{}: {err}", path.display()),
                    ))
                })?),
            }),
        };
        if !cluster {
            if let Some(sentinel) = url.strip_prefix(SENTINEL_SCHEME) {
                if certificates.is_some() {
                    return Err(invalid(
                        "a CA file applies to TLS URLs only: rediss://, or rediss+sentinel:// for Sentinel",
                    ));
                }
                return open_sentinel(sentinel, None);
            }
            if let Some(sentinel) = url.strip_prefix(SENTINEL_TLS_SCHEME) {
                return open_sentinel(sentinel, Some(certificates));
            }
            let client = match certificates {
                Some(certificates) => {
                    if !all_tls(url) {
                        return Err(invalid("a CA file applies to rediss:// (TLS) URLs only"));
                    }
                    redis::Client::build_with_tls(url, certificates)?
                }
                None => redis::Client::open(url)?,
            };
            return Ok(Self(Target::Single(Box::new(client))));
        }
        let seeds: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .collect();
        if seeds.is_empty() {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no Redis Cluster seed URL given",
            )));
        }
        let mut builder = ClusterClient::builder(seeds.iter().copied());
        if let Some(certificates) = certificates {
            if !all_tls(url) {
                return Err(invalid("a CA file applies to rediss:// (TLS) URLs only"));
            }
            builder = builder.certs(certificates);
        }
        builder
            .build()
            .map(|client| Self(Target::Cluster(Box::new(client))))
    }

    /// Whether this is a Redis Cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Target::Cluster(_))
    }

    /// Connects with `timeouts`. On a cluster this discovers the slot map and connects to the
    /// primaries.
    ///
    /// # Errors
    /// The Redis error when Redis (every seed, on a cluster) cannot be reached in time.
    pub async fn connect(&self, timeouts: Timeouts) -> RedisResult<Connection> {
        match &self.0 {
            Target::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(timeouts.connect)
                    .set_response_timeout(timeouts.response);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Connection::Single)
            }
            Target::Cluster(client) => {
                let mut config = ClusterConfig::new();
                if let Some(connect) = timeouts.connect {
                    config = config.set_connection_timeout(connect);
                }
                if let Some(response) = timeouts.response {
                    config = config.set_response_timeout(response);
                }
                client
                    .get_async_connection_with_config(config)
                    .await
                    .map(Connection::Cluster)
            }
            Target::Sentinel(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(timeouts.connect)
                    .set_response_timeout(timeouts.response);
                let connect = async {
                    client
                        .lock()
                        .await
                        .get_async_connection_with_config(&config)
                        .await
                        .map(Connection::Single)
                };
                match timeouts.connect {
                    // Asking the sentinels, then connecting to the primary they name.
                    Some(limit) => tokio::time::timeout(limit.saturating_mul(2), connect)
                        .await
                        .map_err(|_| {
                            RedisError::from((
                                ErrorKind::Io,
                                "no Redis Sentinel named a reachable primary in time",
                            ))
                        })?,
                    None => connect.await,
                }
            }
        }
    }
}

/// Why the CA file `ca` cannot serve `url`, said for a configuration error: it cannot be read,
/// or `url` is not all TLS (`rediss://`, or one `rediss+sentinel://`).
///
/// # Errors
/// The reason, in words.
pub fn check_ca_file(url: &str, ca: &Path) -> Result<(), String> {
    std::fs::File::open(ca).map_err(|err| format!("cannot read {}: {err}", ca.display()))?;
    if !all_tls(url) {
        return Err(
            "applies to TLS URLs only: rediss://, or rediss+sentinel:// for Sentinel".into(),
        );
    }
    Ok(())
}

/// Whether `url` (a single URL, a comma-separated seed list, or a Sentinel URL) names only TLS
/// nodes (`rediss://`, `rediss+sentinel://`): the URLs a CA file applies to.
#[must_use]
pub fn all_tls(url: &str) -> bool {
    if url.trim_start().starts_with(SENTINEL_TLS_SCHEME) {
        return true;
    }
    url.split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .all(|seed| seed.starts_with("rediss://"))
        && !url.trim().is_empty()
}

/// The scheme of a Sentinel target:
/// `redis+sentinel://[[user]:password@]host:port[,host:port...]/<service>`.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The scheme of a Sentinel target reached over TLS, the sentinels and the primary alike:
/// `rediss+sentinel://…`.
pub const SENTINEL_TLS_SCHEME: &str = "rediss+sentinel://";

/// A Sentinel target from the part of its URL after its scheme. The credentials, when given,
/// are used for the sentinels and for the primary alike. With `tls` (`Some`), both are reached
/// over TLS, trusting the authorities given (when `Some`) instead of the system's.
fn open_sentinel(rest: &str, tls: Option<Option<TlsCertificates>>) -> RedisResult<RedisTarget> {
    let invalid = |reason: &'static str| RedisError::from((ErrorKind::InvalidClientConfig, reason));
    let (authority, service) = rest.split_once('/').ok_or_else(|| {
        invalid("a Sentinel URL names its service: redis+sentinel://host:port/<service>")
    })?;
    let service = service.trim_end_matches('/');
    if service.is_empty() || service.contains(['/', '?', '#']) {
        return Err(invalid(
            "a Sentinel URL names one service after the hosts: redis+sentinel://host:port/<service>",
        ));
    }
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), authority),
    };
    let sentinels: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| {
            let scheme = if tls.is_some() { "rediss" } else { "redis" };
            format!("{scheme}://{credentials}{host}/")
        })
        .collect();
    let Some(first) = sentinels.first() else {
        return Err(invalid("a Sentinel URL names at least one sentinel host"));
    };
    let first = redis::IntoConnectionInfo::into_connection_info(first.as_str())?;
    let client = match tls {
        Some(Some(certificates)) => {
            // The builder is the one way to give the sentinels' connections an authority too.
            let settings = first.redis_settings();
            let addresses = sentinels
                .iter()
                .map(|url| {
                    redis::IntoConnectionInfo::into_connection_info(url.as_str())
                        .map(|info| info.addr().clone())
                })
                .collect::<RedisResult<Vec<_>>>()?;
            let mut builder =
                SentinelClientBuilder::new(addresses, service, SentinelServerType::Master)?
                    .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_sentinel_certificates(certificates.clone())
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_redis_certificates(certificates);
            if let Some(username) = settings.username() {
                builder = builder
                    .set_client_to_sentinel_username(username)
                    .set_client_to_redis_username(username);
            }
            if let Some(password) = settings.password() {
                builder = builder
                    .set_client_to_sentinel_password(password)
                    .set_client_to_redis_password(password);
            }
            builder.build()?
        }
        tls => {
            let mut node = SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(first.redis_settings().clone());
            if tls.is_some() {
                node = node.set_tls_mode(redis::TlsMode::Secure);
            }
            SentinelClient::build(sentinels, service, Some(node), SentinelServerType::Master)?
        }
    };
    Ok(RedisTarget(Target::Sentinel(std::sync::Arc::new(
        tokio::sync::Mutex::new(client),
    ))))
}

/// A connection to a [`RedisTarget`]: multiplexed, cheap to clone (clones share it).
#[derive(Clone)]
pub enum Connection {
    /// To a single Redis.
    Single(MultiplexedConnection),
    /// To a Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Single(_) => f.write_str("Connection::Single"),
            Self::Cluster(_) => f.write_str("Connection::Cluster"),
        }
    }
}

impl From<MultiplexedConnection> for Connection {
    fn from(conn: MultiplexedConnection) -> Self {
        Self::Single(conn)
    }
}

impl From<ClusterConnection> for Connection {
    fn from(conn: ClusterConnection) -> Self {
        Self::Cluster(conn)
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => Box::pin(cluster_pipeline(conn, pipeline, offset, count)),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Sends `pipeline` over a cluster connection: as it is when it is a transaction or all its
/// commands hash to one slot, otherwise split into one sub-pipeline per slot, sent concurrently.
async fn cluster_pipeline(
    conn: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    if pipeline.is_transaction() || offset != 0 || count != pipeline.len() {
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let groups = split_by_slot(pipeline);
    if groups.len() <= 1 {
        return conn.req_packed_commands(pipeline, offset, count).await;
    }
    let sends = groups.into_iter().map(|(part, positions)| {
        let mut conn = conn.clone();
        async move {
            let values = conn.req_packed_commands(&part, 0, part.len()).await?;
            if values.len() != positions.len() {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "a split pipeline got the wrong number of replies",
                )));
            }
            Ok::<_, RedisError>((positions, values))
        }
    });
    let parts = futures_util::future::try_join_all(sends).await?;
    let mut replies = vec![Value::Nil; pipeline.len()];
    for (positions, values) in parts {
        for (position, value) in positions.into_iter().zip(values) {
            replies[position] = value;
        }
    }
    Ok(replies)
}

/// `pipeline`'s commands grouped by the slot of their first key, each group with the
/// commands' positions in `pipeline`. Commands without a key join the first group.
fn split_by_slot(pipeline: &Pipeline) -> Vec<(Pipeline, Vec<usize>)> {
    let mut groups: Vec<(Pipeline, Vec<usize>)> = Vec::new();
    let mut by_slot: HashMap<Slot, usize> = HashMap::new();
    let mut keyless = Vec::new();
    for (position, cmd) in pipeline.cmd_iter().enumerate() {
        let Some(slot) = first_key(cmd).map(Slot::for_key) else {
            keyless.push(position);
            continue;
        };
        let group = *by_slot.entry(slot).or_insert_with(|| {
            groups.push((Pipeline::new(), Vec::new()));
            groups.len() - 1
        });
        groups[group].0.add_command(cmd.clone());
        groups[group].1.push(position);
    }
    if !keyless.is_empty() {
        if groups.is_empty() {
            groups.push((Pipeline::new(), Vec::new()));
        }
        let commands: Vec<&Cmd> = pipeline.cmd_iter().collect();
        for position in keyless {
            groups[0].0.add_command(commands[position].clone());
            groups[0].1.push(position);
        }
    }
    groups
}

/// The key a cluster routes `cmd` by, for the commands the workspace pipelines: the first key of
/// an `FCALL`/`EVAL`, the first stream of an `XREAD`, otherwise the first argument. `None` for a
/// call without keys.
fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|arg| match arg {
            Arg::Simple(bytes) => bytes,
            // A cursor argument is never a key.
            _ => &[],
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"FCALL" | b"FCALL_RO" | b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" => {
            let key_count: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (key_count > 0).then(|| args.get(3).copied()).flatten()
        }
        b"XREAD" | b"XREADGROUP" => {
            let streams = args
                .iter()
                .position(|arg| arg.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(streams + 1).copied()
        }
        b"PING" | b"INFO" | b"TIME" | b"ECHO" | b"FUNCTION" | b"SCRIPT" | b"CLUSTER"
        | b"CONFIG" | b"CLIENT" | b"DBSIZE" | b"FLUSHALL" | b"FLUSHDB" | b"MULTI" | b"EXEC" => None,
        _ => args.get(1).copied(),
    }
}

/// A connection that can reach each Redis primary on its own: the one node of a single Redis,
/// every primary of a cluster. What the Functions loader needs, since each node keeps its own
/// library.
pub trait Primaries: ConnectionLike + Send {
    /// Runs `cmd` on every primary; each primary's address (empty for a single node) with its
    /// reply or error.
    ///
    /// # Errors
    /// The Redis error when the primaries cannot be reached at all.
    fn query_each_primary<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> RedisFuture<'a, Vec<(String, RedisResult<Value>)>>;

    /// Runs `cmd` on the primary at `node`, an address [`query_each_primary`] named.
    ///
    /// # Errors
    /// The Redis error of the call.
    ///
    /// [`query_each_primary`]: Self::query_each_primary
    fn query_primary<'a>(&'a mut self, node: &'a str, cmd: &'a Cmd) -> RedisFuture<'a, Value>;
}

impl Primaries for MultiplexedConnection {
    fn query_each_primary<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> RedisFuture<'a, Vec<(String, RedisResult<Value>)>> {
        Box::pin(async move {
            let reply = self
                .req_packed_command(cmd)
                .await
                .and_then(Value::extract_error);
            Ok(vec![(String::new(), reply)])
        })
    }

    fn query_primary<'a>(&'a mut self, _node: &'a str, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.req_packed_command(cmd)
    }
}

impl Primaries for ClusterConnection {
    fn query_each_primary<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> RedisFuture<'a, Vec<(String, RedisResult<Value>)>> {
        Box::pin(async move {
            // Without a response policy, redis-rs answers a map of node address to reply.
            let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
            let replies = self.route_command(cmd.clone(), routing).await?;
            let Value::Map(replies) = replies else {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "a command sent to every primary did not answer per primary",
                )));
            };
            replies
                .into_iter()
                .map(|(node, reply)| {
                    let node: String = redis::from_redis_value(node)?;
                    Ok((node, reply.extract_error()))
                })
                .collect()
        })
    }

    fn query_primary<'a>(&'a mut self, node: &'a str, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (host, port) = node
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host, port.parse().ok()?)))
                .ok_or_else(|| {
                    RedisError::from((
                        ErrorKind::Client,
                        "not a cluster node address",
                        node.to_owned(),
                    ))
                })?;
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.to_owned(),
                port,
            });
            self.route_command(cmd.clone(), routing).await
        })
    }
}

impl Primaries for Connection {
    fn query_each_primary<'a>(
        &'a mut self,
        cmd: &'a Cmd,
    ) -> RedisFuture<'a, Vec<(String, RedisResult<Value>)>> {
        match self {
            Self::Single(conn) => conn.query_each_primary(cmd),
            Self::Cluster(conn) => conn.query_each_primary(cmd),
        }
    }

    fn query_primary<'a>(&'a mut self, node: &'a str, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.query_primary(node, cmd),
            Self::Cluster(conn) => conn.query_primary(node, cmd),
        }
    }
}

/// `url` with any password replaced by `***`, fit for logs and error messages; a
/// comma-separated list of cluster seeds is redacted seed by seed.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let trimmed = url.trim_start();
    if trimmed.starts_with(SENTINEL_SCHEME) || trimmed.starts_with(SENTINEL_TLS_SCHEME) {
        // One URL naming several sentinel hosts.
        return redact_one(url.trim());
    }
    if url.contains(',') {
        return url
            .split(',')
            .map(|seed| redact_one(seed.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redis url>".to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_passwords_of_every_seed() {
        assert_eq!(
            redact_url("redis://:s3cret@10.0.0.1:6379/0"),
            "redis://:***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis://:a@h1:7000/, redis://:b@h2:7001/"),
            "redis://:***@h1:7000/,redis://:***@h2:7001/"
        );
        assert_eq!(redact_url("garbage"), "<redis url>");
        assert_eq!(
            redact_url("redis+sentinel://:pw@s1:26379,s2:26379/hunt"),
            "redis+sentinel://:***@s1:26379,s2:26379/hunt"
        );
    }

    #[test]
    fn a_ca_file_applies_only_where_every_node_is_rediss() {
        assert!(all_tls("rediss://u:p@h:6380/"));
        assert!(all_tls("rediss://h1:7000/, rediss://h2:7000/"));
        assert!(!all_tls("rediss://h1:7000/,redis://h2:7000/"));
        assert!(!all_tls("redis://h:6379/"));
        assert!(all_tls("rediss+sentinel://s:26379/hunt"));
        assert!(!all_tls("redis+sentinel://s:26379/hunt"));
        assert!(!all_tls(" "));
    }

    #[test]
    fn sentinel_urls_name_hosts_and_one_service() -> RedisResult<()> {
        let target = RedisTarget::open("redis+sentinel://:pw@s1:26379,s2:26379/hunt", false)?;
        assert!(!target.is_cluster());
        assert_eq!(format!("{target:?}"), "RedisTarget(\"sentinel\")");
        assert!(RedisTarget::open("redis+sentinel://s1:26379/", false).is_err());
        assert!(RedisTarget::open("redis+sentinel://s1:26379", false).is_err());
        assert!(RedisTarget::open("redis+sentinel:///hunt", false).is_err());
        assert!(RedisTarget::open("redis+sentinel://s1:26379/a/b", false).is_err());
        Ok(())
    }

    #[test]
    fn targets_parse_single_urls_and_seed_lists() -> RedisResult<()> {
        assert!(!RedisTarget::open("redis://127.0.0.1:7000/", false)?.is_cluster());
        let cluster = RedisTarget::open("redis://127.0.0.1:7000/,redis://127.0.0.1:7001/", true)?;
        assert!(cluster.is_cluster());
        // The chart's seed URL names database 0 explicitly.
        assert!(RedisTarget::open("redis://:pw@redis-cluster:6379/0", true)?.is_cluster());
        assert!(RedisTarget::open(" , ", true).is_err());
        assert!(RedisTarget::open("http://nope", true).is_err());
        Ok(())
    }

    #[test]
    fn pipelines_split_by_the_slot_of_each_first_key() {
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg("hunt:{t1}:stream")
            .arg("*")
            .arg("e")
            .arg("x");
        pipe.cmd("HSET").arg("hunt:{t2}:published").arg("1").arg(1);
        pipe.cmd("HGET").arg("hunt:{t1}:published").arg("1");
        pipe.cmd("PING");
        pipe.add_command(leaderboard_proto::functions::fcall_cmd(
            "hunt_claim_chest",
            &["hunt:chest:{c1}"],
        ));
        pipe.cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("hunt:{t2}:stream")
            .arg("0");
        let groups: Vec<Vec<usize>> = split_by_slot(&pipe)
            .into_iter()
            .map(|(_, positions)| positions)
            .collect();
        assert_eq!(groups, vec![vec![0, 2, 3], vec![1, 5], vec![4]]);
    }
}
