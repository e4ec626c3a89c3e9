//! A Redis primary with one replica and three sentinels, for failover tests, and the
//! [`TcpProxy`] its replication link runs through so a test can cut that link; and the controls
//! of a Redis Cluster with replicas ([`RedisCluster::start_replicated`]) for the same failover on
//! a Cluster.
//!
//! Design constraints:
//! - The replica reaches the primary only through the proxy: cutting the proxy closes the
//!   replication link and refuses the replica's reconnects, so writes the primary takes after the
//!   cut really are missing on the replica (pausing the replica alone does not do it: the kernel's
//!   socket buffers deliver the backlog when it resumes).
//! - Clients and sentinels reach every node directly; a sentinel finds the replica from the
//!   primary's `INFO` (the replica announces its own listening port).
//! - Sentinels decide fast (`down-after-milliseconds` 1000), so a failover takes a few seconds.
//! - Every process is a child owned by this value, stopped by handle on drop.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::{
    CLUSTER_PRIMARIES, READY_TIMEOUT, RedisCluster, RedisServer, TestkitError, find_on_path,
};

/// The service name the sentinels monitor.
pub const SERVICE: &str = "hunt";

/// Sentinels started by [`ReplicatedRedis::start`].
pub const SENTINELS: usize = 3;

/// A TCP proxy on a loopback port forwarding to `127.0.0.1:<upstream>`, that a test can cut or
/// point at another upstream.
///
/// Dropping it stops accepting and closes every connection.
#[derive(Debug)]
pub struct TcpProxy {
    port: u16,
    state: Arc<ProxyState>,
    acceptor: Option<thread::JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct ProxyState {
    /// Whether connections are forwarded; a cut proxy closes new ones at once.
    open: AtomicBool,
    /// The loopback port new connections are forwarded to.
    upstream: AtomicU16,
    /// Whether the proxy is being dropped.
    stopping: AtomicBool,
    /// Both ends of every forwarded connection, to close them on a cut.
    streams: Mutex<Vec<TcpStream>>,
}

impl TcpProxy {
    /// Starts forwarding a free loopback port to `upstream`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] when no port could be bound.
    pub fn start(upstream: u16) -> Result<Self, TestkitError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(TestkitError::io("binding the proxy's port"))?;
        let port = listener
            .local_addr()
            .map_err(TestkitError::io("reading the proxy's port"))?
            .port();
        let state = Arc::new(ProxyState {
            open: AtomicBool::new(true),
            upstream: AtomicU16::new(upstream),
            ..ProxyState::default()
        });
        let accepting = Arc::clone(&state);
        let acceptor = thread::spawn(move || accept(&listener, &accepting));
        Ok(Self {
            port,
            state,
            acceptor: Some(acceptor),
        })
    }

    /// The proxy's loopback port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every forwarded connection and refuses new ones until [`TcpProxy::mend`].
    pub fn cut(&self) {
        self.state.open.store(false, Ordering::SeqCst);
        close_all(&self.state);
    }

    /// Forwards new connections again.
    pub fn mend(&self) {
        self.state.open.store(true, Ordering::SeqCst);
    }

    /// Closes every forwarded connection and forwards new ones to `upstream`: a client behind
    /// one address moved to another server, as a load balancer does.
    pub fn redirect(&self, upstream: u16) {
        self.state.upstream.store(upstream, Ordering::SeqCst);
        close_all(&self.state);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        self.state.open.store(false, Ordering::SeqCst);
        // Wakes the blocking accept.
        drop(TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)));
        close_all(&self.state);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn close_all(state: &ProxyState) {
    if let Ok(mut streams) = state.streams.lock() {
        for stream in streams.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept(listener: &TcpListener, state: &Arc<ProxyState>) {
    for client in listener.incoming() {
        if state.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if !state.open.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let upstream = state.upstream.load(Ordering::SeqCst);
        let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, upstream)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let (Ok(client_copy), Ok(server_copy)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        if let Ok(mut streams) = state.streams.lock() {
            streams.push(client_copy);
            streams.push(server_copy);
        }
        pump(client, server);
    }
}

/// Copies both ways between `a` and `b` on two threads; either side ending closes both.
fn pump(a: TcpStream, b: TcpStream) {
    let (Ok(mut a_read), Ok(mut b_read)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let (mut a_write, mut b_write) = (a, b);
    thread::spawn(move || {
        let _ = io::copy(&mut a_read, &mut b_write);
        let _ = b_write.shutdown(Shutdown::Both);
        let _ = a_read.shutdown(Shutdown::Both);
    });
    thread::spawn(move || {
        let _ = io::copy(&mut b_read, &mut a_write);
        let _ = a_write.shutdown(Shutdown::Both);
        let _ = b_read.shutdown(Shutdown::Both);
    });
}

/// A primary, a replica replicating through a [`TcpProxy`], and [`SENTINELS`] sentinels
/// monitoring them as [`SERVICE`].
#[derive(Debug)]
pub struct ReplicatedRedis {
    /// The first primary (after a failover, the old one).
    pub primary: RedisServer,
    /// The first replica (after a failover, the promoted one).
    pub replica: RedisServer,
    /// The replication link, primary ← replica.
    pub link: TcpProxy,
    /// Each sentinel, with the directory of the config file it rewrites.
    sentinels: Vec<(RedisServer, tempfile::TempDir)>,
}

impl ReplicatedRedis {
    /// Starts the primary, the replica (returning once it is in sync) and the sentinels
    /// (returning once each of them knows the replica and the other sentinels).
    ///
    /// # Errors
    ///
    /// Any start error; [`TestkitError::NotReady`] when replication or the sentinels did not
    /// settle within 10 s.
    pub fn start() -> Result<Self, TestkitError> {
        let primary = RedisServer::start()?;
        let link = TcpProxy::start(primary.port())?;
        let link_port = link.port().to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &link_port])?;
        let mut redis = Self {
            primary,
            replica,
            link,
            sentinels: Vec::with_capacity(SENTINELS),
        };
        redis.wait_in_sync()?;
        for _ in 0..SENTINELS {
            let sentinel = start_sentinel(redis.primary.port())?;
            redis.sentinels.push(sentinel);
        }
        for (sentinel, _) in &redis.sentinels {
            wait_until(
                sentinel.port(),
                "the sentinels to know each other and the replica",
                || {
                    let mut conn = sentinel
                        .client()
                        .get_connection_with_timeout(READY_TIMEOUT)?;
                    let master: Vec<String> = redis::cmd("SENTINEL")
                        .arg("MASTER")
                        .arg(SERVICE)
                        .query(&mut conn)?;
                    let field = |name: &str| {
                        master
                            .iter()
                            .position(|key| key == name)
                            .and_then(|at| master.get(at + 1))
                            .and_then(|value| value.parse::<usize>().ok())
                            .unwrap_or(0)
                    };
                    Ok(field("num-slaves") >= 1 && field("num-other-sentinels") >= SENTINELS - 1)
                },
            )?;
        }
        Ok(redis)
    }

    /// The URL of the service through the sentinels: `redis+sentinel://…/hunt`.
    #[must_use]
    pub fn sentinel_url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(sentinel, _)| format!("127.0.0.1:{}", sentinel.port()))
            .collect();
        format!("redis+sentinel://{}/{SERVICE}", hosts.join(","))
    }

    /// The replication offsets of the primary (`master_repl_offset`) and of the replica
    /// (`slave_repl_offset`, or its own `master_repl_offset` once promoted).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when a node does not answer.
    pub fn offsets(&self) -> Result<(u64, u64), TestkitError> {
        let primary = info_field(&self.primary, "master_repl_offset")?;
        let replica = match info_field(&self.replica, "slave_repl_offset") {
            Ok(offset) => offset,
            Err(_) => info_field(&self.replica, "master_repl_offset")?,
        };
        Ok((primary, replica))
    }

    /// Returns once the replica's link is up and its offset equals the primary's.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotReady`] when that did not happen within 10 s.
    pub fn wait_in_sync(&self) -> Result<(), TestkitError> {
        wait_until(self.replica.port(), "the replica to be in sync", || {
            let up = info_text(&self.replica)?.contains("master_link_status:up");
            let (primary, replica) = self.offsets()?;
            Ok(up && primary == replica)
        })
    }

    /// The address the sentinels give for the service's primary now.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when the first sentinel does not answer.
    pub fn primary_port(&self) -> Result<u16, TestkitError> {
        let (sentinel, _) = self.sentinels.first().ok_or(TestkitError::NotRunning)?;
        let mut conn = sentinel
            .client()
            .get_connection_with_timeout(READY_TIMEOUT)?;
        let (_host, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SERVICE)
            .query(&mut conn)?;
        Ok(port)
    }

    /// Returns once every sentinel names the replica as the primary and it answers as one.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotReady`] when the failover did not happen within `timeout`.
    pub fn wait_promoted(&self, timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let promoted = self.sentinels.iter().all(|(sentinel, _)| {
                let Ok(mut conn) = sentinel.client().get_connection_with_timeout(READY_TIMEOUT)
                else {
                    return false;
                };
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(SERVICE)
                    .query::<(String, u16)>(&mut conn)
                    .is_ok_and(|(_, port)| port == self.replica.port())
            }) && info_text(&self.replica)
                .is_ok_and(|info| info.contains("role:master"));
            if promoted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TestkitError::NotReady {
                    port: self.replica.port(),
                    timeout,
                    log: self
                        .sentinels
                        .first()
                        .map(|(sentinel, _)| crate::log_tail(sentinel.dir()))
                        .unwrap_or_default(),
                });
            }
            thread::sleep(crate::POLL_INTERVAL);
        }
    }
}

/// Starts one sentinel monitoring the primary on `primary_port` (quorum 2), with the directory
/// of its config file (Sentinel rewrites it while it runs).
fn start_sentinel(primary_port: u16) -> Result<(RedisServer, tempfile::TempDir), TestkitError> {
    let dir = tempfile::Builder::new()
        .prefix("hunt-sentinel-conf-")
        .tempdir()
        .map_err(TestkitError::io("creating the sentinel's config directory"))?;
    let conf = dir.path().join("sentinel.conf");
    fs::write(
        &conf,
        format!(
            "sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n"
        ),
    )
    .map_err(TestkitError::io("writing the sentinel's config"))?;
    let conf = conf.to_string_lossy().into_owned();
    let sentinel = RedisServer::start_with(&[&conf, "--sentinel"])?;
    Ok((sentinel, dir))
}

fn info_text(server: &RedisServer) -> Result<String, TestkitError> {
    let mut conn = server.client().get_connection_with_timeout(READY_TIMEOUT)?;
    Ok(redis::cmd("INFO").arg("replication").query(&mut conn)?)
}

fn info_field(server: &RedisServer, name: &str) -> Result<u64, TestkitError> {
    field(&info_text(server)?, name)
}

/// The numeric field `name` of an `INFO` text.
fn field(info: &str, name: &str) -> Result<u64, TestkitError> {
    info.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| {
            TestkitError::Redis(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "INFO replication lacks the field",
                name.to_owned(),
            )))
        })
}

/// Polls `check` until it is true, for up to [`READY_TIMEOUT`].
fn wait_until(
    port: u16,
    what: &str,
    mut check: impl FnMut() -> Result<bool, TestkitError>,
) -> Result<(), TestkitError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let last = match check() {
            Ok(true) => return Ok(()),
            Ok(false) => String::new(),
            Err(err) => err.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(TestkitError::NotReady {
                port,
                timeout: READY_TIMEOUT,
                log: format!("waiting for {what}: {last}"),
            });
        }
        thread::sleep(crate::POLL_INTERVAL);
    }
}

/// A Redis Cluster whose primaries each have a replica, and the faults a lost-writes failover
/// needs.
///
/// Design constraints:
/// - Node `i` below [`CLUSTER_PRIMARIES`] is a primary; node `CLUSTER_PRIMARIES + i` is its
///   replica.
/// - A cluster replica reaches its primary at the address the cluster announces, so no proxy
///   sits on that link. [`RedisCluster::cut_replication`] pauses every replica and then has each
///   primary close its replica link: what the kernel already buffered is delivered when the
///   replica resumes, and nothing written after the cut is, because the paused replica cannot
///   reconnect before [`RedisCluster::kill_primaries`].
impl RedisCluster {
    /// Starts [`CLUSTER_PRIMARIES`] primaries owning every slot, then one replica for each,
    /// returning once every replica is in sync.
    ///
    /// # Errors
    ///
    /// Any start error of [`RedisCluster::start`]; [`TestkitError::NotReady`] when a replica did
    /// not attach or catch up within 10 s.
    pub fn start_replicated() -> Result<Self, TestkitError> {
        let server = find_on_path("redis-server").ok_or(TestkitError::NotInstalled)?;
        let mut cluster = Self::start()?;
        for index in 0..CLUSTER_PRIMARIES {
            let replica = cluster.start_node(&server, CLUSTER_PRIMARIES + index)?;
            cluster.nodes.push(replica);
        }
        for index in 0..CLUSTER_PRIMARIES {
            let primary = &cluster.nodes[index];
            let replica = &cluster.nodes[CLUSTER_PRIMARIES + index];
            let primary_id: String = {
                let mut conn = primary.client.get_connection_with_timeout(READY_TIMEOUT)?;
                redis::cmd("CLUSTER").arg("MYID").query(&mut conn)?
            };
            let mut conn = replica.client.get_connection_with_timeout(READY_TIMEOUT)?;
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(primary.port)
                .arg(primary.bus_port)
                .query::<()>(&mut conn)?;
            // The replica can follow its primary once the handshake has introduced them.
            wait_until(
                replica.port,
                "the replica to attach to its primary",
                || match redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&primary_id)
                    .query::<()>(&mut conn)
                {
                    Ok(()) => Ok(true),
                    Err(error) if matches!(error.kind(), redis::ErrorKind::Server(_)) => Ok(false),
                    Err(error) => Err(error.into()),
                },
            )?;
        }
        cluster.wait_settled()?;
        cluster.wait_in_sync()?;
        Ok(cluster)
    }

    /// Returns once every replica's link is up and its offset equals its primary's.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotReady`] when that did not happen within 10 s.
    pub fn wait_in_sync(&self) -> Result<(), TestkitError> {
        for index in 0..CLUSTER_PRIMARIES {
            let replica = self.replica(index)?;
            wait_until(replica.port, "a replica to be in sync", || {
                let up = node_info(replica)?.contains("master_link_status:up");
                Ok(up && self.replica_offset(index)? == self.primary_offset(index)?)
            })?;
        }
        Ok(())
    }

    /// The replication offset of primary `index` (`master_repl_offset`).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when the node does not answer.
    pub fn primary_offset(&self, index: usize) -> Result<u64, TestkitError> {
        let primary = self.nodes.get(index).ok_or(TestkitError::NotRunning)?;
        field(&node_info(primary)?, "master_repl_offset")
    }

    /// How far the replica of primary `index` has replicated: its `slave_repl_offset`, or its
    /// own `master_repl_offset` once promoted.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when the node does not answer.
    pub fn replica_offset(&self, index: usize) -> Result<u64, TestkitError> {
        let info = node_info(self.replica(index)?)?;
        field(&info, "slave_repl_offset").or_else(|_| field(&info, "master_repl_offset"))
    }

    /// Cuts every replication link: pauses each replica (SIGSTOP), then has each primary close
    /// its replica connections. The primaries keep answering clients.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when a primary does not answer.
    pub fn cut_replication(&self) -> Result<(), TestkitError> {
        for node in &self.nodes[CLUSTER_PRIMARIES..] {
            kill_process(Pid::from_child(&node.child), Signal::STOP)
                .map_err(|errno| TestkitError::io("pausing a replica")(errno.into()))?;
        }
        for node in &self.nodes[..CLUSTER_PRIMARIES] {
            let mut conn = node.client.get_connection_with_timeout(READY_TIMEOUT)?;
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("replica")
                .query::<i64>(&mut conn)?;
        }
        Ok(())
    }

    /// Kills every primary (SIGKILL): their last writes exist nowhere else.
    pub fn kill_primaries(&mut self) {
        for node in &mut self.nodes[..CLUSTER_PRIMARIES] {
            crate::kill_and_reap(&mut node.child);
        }
    }

    /// Resumes the replicas and promotes each with `CLUSTER FAILOVER TAKEOVER`, returning once
    /// each answers as a primary and reports `cluster_state:ok`.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when a replica refuses; [`TestkitError::NotReady`] when the
    /// cluster did not settle within 10 s.
    pub fn take_over(&self) -> Result<(), TestkitError> {
        for node in &self.nodes[CLUSTER_PRIMARIES..] {
            crate::resume_child(&node.child);
        }
        for index in 0..CLUSTER_PRIMARIES {
            let replica = self.replica(index)?;
            // Once it has read what its socket held and noticed the link is gone.
            wait_until(replica.port, "a resumed replica to lose its link", || {
                Ok(node_info(replica)?.contains("master_link_status:down"))
            })?;
            let mut conn = replica.client.get_connection_with_timeout(READY_TIMEOUT)?;
            redis::cmd("CLUSTER")
                .arg("FAILOVER")
                .arg("TAKEOVER")
                .query::<()>(&mut conn)?;
        }
        for index in 0..CLUSTER_PRIMARIES {
            let replica = self.replica(index)?;
            wait_until(replica.port, "a replica to take over", || {
                let mut conn = replica.client.get_connection_with_timeout(READY_TIMEOUT)?;
                let cluster: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn)?;
                Ok(node_info(replica)?.contains("role:master")
                    && cluster
                        .lines()
                        .any(|line| line.trim() == "cluster_state:ok"))
            })?;
        }
        Ok(())
    }

    /// Starts the killed primaries again, empty, on their ports: each rejoins, learns that its
    /// slots moved and becomes a replica of the node that took them. Returns once every one of
    /// them is in sync.
    ///
    /// # Errors
    ///
    /// Any start error; [`TestkitError::NotReady`] when a node did not become an in-sync
    /// replica within 10 s.
    pub fn restart_primaries(&mut self) -> Result<(), TestkitError> {
        let server = find_on_path("redis-server").ok_or(TestkitError::NotInstalled)?;
        for index in 0..CLUSTER_PRIMARIES {
            let (port, bus_port, tls_port) = (
                self.nodes[index].port,
                self.nodes[index].bus_port,
                self.nodes[index].tls_port,
            );
            let node = self.spawn_node(&server, index, port, bus_port, tls_port)?;
            self.nodes[index] = node;
        }
        for index in 0..CLUSTER_PRIMARIES {
            let node = &self.nodes[index];
            let promoted = self.replica(index)?;
            wait_until(node.port, "an old primary to replicate the new one", || {
                let info = node_info(node)?;
                Ok(info.contains("role:slave")
                    && info.contains("master_link_status:up")
                    && field(&info, "slave_repl_offset")?
                        == field(&node_info(promoted)?, "master_repl_offset")?)
            })?;
        }
        Ok(())
    }

    fn replica(&self, index: usize) -> Result<&crate::ClusterNode, TestkitError> {
        self.nodes
            .get(CLUSTER_PRIMARIES + index)
            .ok_or(TestkitError::NotRunning)
    }
}

fn node_info(node: &crate::ClusterNode) -> Result<String, TestkitError> {
    let mut conn = node.client.get_connection_with_timeout(READY_TIMEOUT)?;
    Ok(redis::cmd("INFO").arg("replication").query(&mut conn)?)
}
