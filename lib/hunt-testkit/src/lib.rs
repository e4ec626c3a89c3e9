//! The test harness of hunt-pipeline: a private `redis-server` for tests and demos, a private
//! Redis Cluster ([`RedisCluster`]) of three of them, [`eventually`] (polling for an outcome
//! with a deadline), and [`recorded`] metrics. A dev-dependency of every crate, and the load
//! test's (its demo runs a private Redis).
//!
//! Design constraints:
//! - Each [`RedisServer`] is its own child process on a free loopback port (never 6379) with its
//!   own temporary directory, so tests run in parallel and never touch a developer's Redis.
//! - It is stopped only through its own handle and pid, never by name; dropping it kills and
//!   reaps the process, and the temporary directory goes with it.
//! - Readiness is observed, not assumed: start-up polls `PING` until a deadline and checks that
//!   the answering server is this child (by its `process_id`), never a bare sleep.
//! - A restart keeps the port and the directory, so clients holding [`RedisServer::url`] reconnect
//!   to the restarted server; with `keep_data` it reloads `dump.rdb` (Redis 7 keeps Functions in
//!   the RDB), without it the server comes back empty, like a Redis that lost its data.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;

pub mod recorded;
pub mod replicated;
#[cfg(test)]
mod tests;
pub mod tls;

/// How long a start or a shutdown may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Timeout of one readiness probe (connect and `PING`).
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Ports tried by [`RedisServer::start`] before it gives up.
const START_ATTEMPTS: usize = 5;
/// The port of a developer's own Redis: never used.
const DEFAULT_REDIS_PORT: u16 = 6379;
/// The RDB file name, inside the server's directory.
const DUMP_FILE: &str = "dump.rdb";
/// The log file name, inside the server's directory.
const LOG_FILE: &str = "redis.log";

/// Why the test Redis could not be started, stopped or reached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// `redis-server` (or, for a cluster, `redis-cli`) is not installed.
    #[error(
        "redis-server or redis-cli not found on PATH; install them with: sudo apt-get install -y redis-server"
    )]
    NotInstalled,
    /// A file system or process operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// `redis-server` exited before it answered `PING`.
    #[error(
        "redis-server on port {port} exited with {status} before it was ready; log tail:\n{log}"
    )]
    Exited {
        /// The port it was started on.
        port: u16,
        /// Its exit status.
        status: ExitStatus,
        /// The last lines of its log.
        log: String,
    },
    /// `redis-server` did not answer `PING` in time.
    #[error("redis-server on port {port} did not answer PING within {timeout:?}; log tail:\n{log}")]
    NotReady {
        /// The port it was started on.
        port: u16,
        /// How long it was given.
        timeout: Duration,
        /// The last lines of its log.
        log: String,
    },
    /// `SHUTDOWN SAVE` did not end the process in time (it was killed instead).
    #[error("redis-server on port {port} did not exit within {timeout:?} of SHUTDOWN SAVE")]
    ShutdownTimeout {
        /// The server's port.
        port: u16,
        /// How long it was given.
        timeout: Duration,
    },
    /// Every start attempt failed.
    #[error("redis-server failed to start after {attempts} attempts; last error: {last}")]
    StartFailed {
        /// How many ports were tried.
        attempts: usize,
        /// The last attempt's error.
        last: Box<TestkitError>,
    },
    /// `redis-cli --cluster create` failed.
    #[error("redis-cli --cluster create exited with {status}:\n{output}")]
    ClusterCreate {
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        output: String,
    },
    /// A cluster node did not report `cluster_state:ok` in time.
    #[error("the redis cluster did not settle within {timeout:?}; a node's CLUSTER INFO:\n{info}")]
    ClusterNotReady {
        /// How long it was given.
        timeout: Duration,
        /// The `CLUSTER INFO` of a node that was not ready.
        info: String,
    },
    /// The server is stopped: the call needs a running one.
    #[error("redis-server is not running")]
    NotRunning,
    /// The server is running: the call needs a stopped one.
    #[error("redis-server is already running (pid {pid})")]
    AlreadyRunning {
        /// The running server's pid.
        pid: u32,
    },
}

impl TestkitError {
    fn io(action: &'static str) -> impl FnOnce(io::Error) -> Self {
        move |source| Self::Io { action, source }
    }
}

/// A `redis-server` child process on a free loopback port, owned by the test that started it.
///
/// Dropping it kills and reaps the process and removes its directory.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    pid: u32,
    client: redis::Client,
    child: Option<Child>,
    /// Whether the server runs in a process group of its own.
    own_group: bool,
    /// Arguments given before the standard ones, on every start.
    extra: Vec<String>,
    // Declared last: dropped after the child is reaped in `Drop`.
    dir: TempDir,
}

impl RedisServer {
    /// [`RedisServer::start`], with the server in a process group of its own: for a program a
    /// person stops with Ctrl-C, so that the terminal's signal reaches only that program, which
    /// then stops its writers and router while Redis still answers, and the server on drop.
    /// Only for programs that handle Ctrl-C: one killed by it would leave the server running.
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`].
    pub fn start_own_group() -> Result<Self, TestkitError> {
        Self::start_in(true, Vec::new())
    }

    /// [`RedisServer::start`] with `extra` arguments before the standard ones (a config file
    /// first, then options such as `--replicaof`), on this start and every restart.
    ///
    /// # Errors
    ///
    /// As [`RedisServer::start`].
    pub fn start_with(extra: &[&str]) -> Result<Self, TestkitError> {
        Self::start_in(false, extra.iter().map(|arg| (*arg).to_owned()).collect())
    }

    /// Starts a private `redis-server` on a free loopback port with a fresh temporary directory,
    /// and returns once it answers `PING` (within 10 s). A port lost to a race is retried with a
    /// new one, up to 5 times.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotInstalled`] when `redis-server` is not on `PATH`;
    /// [`TestkitError::StartFailed`] when no attempt came up; [`TestkitError::Io`] when the
    /// directory or a port could not be had.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_in(false, Vec::new())
    }

    fn start_in(own_group: bool, extra: Vec<String>) -> Result<Self, TestkitError> {
        let binary = find_on_path("redis-server").ok_or(TestkitError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("hunt-redis-")
            .tempdir()
            .map_err(TestkitError::io("creating the redis directory"))?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match spawn_ready(&binary, port, dir.path(), &extra, own_group) {
                Ok((child, client)) => {
                    return Ok(Self {
                        binary,
                        port,
                        pid: child.id(),
                        client,
                        child: Some(child),
                        own_group,
                        extra,
                        dir,
                    });
                }
                Err(error) => last = Some(error),
            }
        }
        Err(TestkitError::StartFailed {
            attempts: START_ATTEMPTS,
            last: Box::new(last.unwrap_or(TestkitError::NotRunning)),
        })
    }

    /// The server's URL: `redis://127.0.0.1:<port>/`.
    #[must_use]
    pub fn url(&self) -> String {
        redis_url(self.port)
    }

    /// The server's loopback port; it stays the same across restarts.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the current (or, once stopped, the last) `redis-server` process.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's directory: `dump.rdb` and `redis.log` live here.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for this server (synchronous and asynchronous connections alike).
    #[must_use]
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// Deletes every key (`FLUSHALL`); Functions stay loaded.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when the server cannot be reached.
    pub fn flushall(&self) -> Result<(), TestkitError> {
        let mut connection = self.client.get_connection_with_timeout(READY_TIMEOUT)?;
        redis::cmd("FLUSHALL").query::<()>(&mut connection)?;
        Ok(())
    }

    /// Restarts the server on the same port and directory, resuming it first if it was paused.
    ///
    /// With `keep_data`, `SHUTDOWN SAVE` writes `dump.rdb` and the new process loads it: keys
    /// and Functions survive. Without it the process is killed (SIGKILL), its data files are
    /// deleted and it comes back empty, like a Redis that lost everything.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotRunning`] when the server is stopped; [`TestkitError::ShutdownTimeout`]
    /// when `SHUTDOWN SAVE` did not end it; any start error of the new process.
    pub fn restart(&mut self, keep_data: bool) -> Result<(), TestkitError> {
        let Some(mut child) = self.child.take() else {
            return Err(TestkitError::NotRunning);
        };
        resume_child(&child);
        if keep_data {
            shutdown_save(&self.client, &mut child, self.port)?;
        } else {
            kill_and_reap(&mut child);
            self.remove_data()?;
        }
        self.spawn_again()
    }

    /// Kills the server (SIGKILL) and reaps it. Does nothing when it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }

    /// Starts the server again after [`stop`](Self::stop), on the same port and directory,
    /// loading whatever `dump.rdb` the directory holds.
    ///
    /// # Errors
    ///
    /// [`TestkitError::AlreadyRunning`] when it was not stopped; any start error.
    pub fn start_again(&mut self) -> Result<(), TestkitError> {
        if self.child.is_some() {
            return Err(TestkitError::AlreadyRunning { pid: self.pid });
        }
        self.spawn_again()
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing answers, like a Redis
    /// that hangs. Undo with [`resume`](Self::resume); restart and drop resume it first.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotRunning`] when the server is stopped; [`TestkitError::Io`] when the
    /// signal could not be sent.
    pub fn pause(&self) -> Result<(), TestkitError> {
        let child = self.child.as_ref().ok_or(TestkitError::NotRunning)?;
        kill_process(Pid::from_child(child), Signal::STOP).map_err(|errno| TestkitError::Io {
            action: "sending SIGSTOP to redis-server",
            source: errno.into(),
        })
    }

    /// Lets a paused server run again (SIGCONT). Does nothing when it is stopped or not paused.
    pub fn resume(&self) {
        if let Some(child) = &self.child {
            resume_child(child);
        }
    }

    fn spawn_again(&mut self) -> Result<(), TestkitError> {
        let (child, client) = spawn_ready(
            &self.binary,
            self.port,
            self.dir.path(),
            &self.extra,
            self.own_group,
        )?;
        self.pid = child.id();
        self.client = client;
        self.child = Some(child);
        Ok(())
    }

    /// Deletes the RDB and append-only files, so the next start has no data.
    fn remove_data(&self) -> Result<(), TestkitError> {
        for name in [DUMP_FILE, "appendonly.aof"] {
            match fs::remove_file(self.dir().join(name)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => {
                    return Err(TestkitError::Io {
                        action: "deleting redis data files",
                        source: error,
                    });
                }
                _ => {}
            }
        }
        match fs::remove_dir_all(self.dir().join("appendonlydir")) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(TestkitError::Io {
                action: "deleting redis append-only files",
                source: error,
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            resume_child(&child);
            kill_and_reap(&mut child);
        }
    }
}

/// Primaries of a [`RedisCluster`].
pub const CLUSTER_PRIMARIES: usize = 3;

/// A private Redis Cluster of [`CLUSTER_PRIMARIES`] primaries (with one replica each when
/// started by [`RedisCluster::start_replicated`]), each a `redis-server` child on free loopback
/// ports, owned by the test that started it.
///
/// Dropping it kills and reaps every node and removes their directories.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    /// With TLS: the arguments every node gets for it, and each node a TLS port of its own.
    tls: Option<Vec<String>>,
    // Declared last: dropped after the children are reaped in `Drop`.
    dir: TempDir,
}

/// One node of a [`RedisCluster`].
#[derive(Debug)]
struct ClusterNode {
    port: u16,
    bus_port: u16,
    /// The node's TLS port, in a cluster started with TLS.
    tls_port: Option<u16>,
    client: redis::Client,
    child: Child,
}

impl RedisCluster {
    /// Starts [`CLUSTER_PRIMARIES`] cluster-enabled `redis-server`s, joins them with
    /// `redis-cli --cluster create` (the slots split evenly) and returns once every node reports
    /// `cluster_state:ok` (within 10 s).
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotInstalled`] when `redis-server` or `redis-cli` is not on `PATH`;
    /// [`TestkitError::StartFailed`] when a node did not come up; [`TestkitError::ClusterCreate`]
    /// when `redis-cli` failed; [`TestkitError::ClusterNotReady`] when the cluster did not settle.
    pub fn start() -> Result<Self, TestkitError> {
        Self::start_with_tls(None)
    }

    /// [`RedisCluster::start`], every node also speaking TLS on a port of its own (and the
    /// cluster bus over TLS) when `tls` gives the server's TLS arguments (certificates, users):
    /// a client on a TLS port is told the TLS ports of the other nodes.
    ///
    /// # Errors
    ///
    /// As [`RedisCluster::start`].
    pub fn start_with_tls(tls: Option<Vec<String>>) -> Result<Self, TestkitError> {
        let server = find_on_path("redis-server").ok_or(TestkitError::NotInstalled)?;
        let cli = find_on_path("redis-cli").ok_or(TestkitError::NotInstalled)?;
        let dir = tempfile::Builder::new()
            .prefix("hunt-redis-cluster-")
            .tempdir()
            .map_err(TestkitError::io("creating the redis cluster directory"))?;
        let mut cluster = Self {
            nodes: Vec::with_capacity(CLUSTER_PRIMARIES),
            tls,
            dir,
        };
        for index in 0..CLUSTER_PRIMARIES {
            let node = cluster.start_node(&server, index)?;
            cluster.nodes.push(node);
        }
        cluster.create(&cli)?;
        cluster.wait_settled()?;
        Ok(cluster)
    }

    /// The seed list for cluster mode: every node's URL, comma-separated.
    #[must_use]
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|node| redis_url(node.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' TLS ports, in a cluster started with TLS (empty otherwise).
    #[must_use]
    pub fn tls_ports(&self) -> Vec<u16> {
        self.nodes.iter().filter_map(|node| node.tls_port).collect()
    }

    /// The nodes' loopback ports.
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// A client for the node at `index` alone (no cluster routing).
    ///
    /// # Panics
    /// When `index` is not below the number of nodes.
    #[must_use]
    pub fn node_client(&self, index: usize) -> redis::Client {
        self.nodes[index].client.clone()
    }

    /// The index of the node serving `key`: the one that answers for it instead of redirecting.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Redis`] when a node cannot be reached; [`TestkitError::NotRunning`] when
    /// no node serves the key.
    pub fn node_of(&self, key: &str) -> Result<usize, TestkitError> {
        for (index, node) in self.nodes.iter().enumerate() {
            let mut connection = node.client.get_connection_with_timeout(READY_TIMEOUT)?;
            match redis::cmd("EXISTS").arg(key).query::<i64>(&mut connection) {
                Ok(_) => return Ok(index),
                Err(error) if error.code() == Some("MOVED") => {}
                Err(error) => return Err(error.into()),
            }
        }
        Err(TestkitError::NotRunning)
    }

    fn start_node(&self, binary: &Path, index: usize) -> Result<ClusterNode, TestkitError> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            // The cluster bus gets a port of its own: port + 10000 may not exist.
            let bus_port = free_port()?;
            let tls_port = match self.tls {
                Some(_) => Some(free_port()?),
                None => None,
            };
            match self.spawn_node(binary, index, port, bus_port, tls_port) {
                Ok(node) => return Ok(node),
                Err(error) => last = Some(error),
            }
        }
        Err(TestkitError::StartFailed {
            attempts: START_ATTEMPTS,
            last: Box::new(last.unwrap_or(TestkitError::NotRunning)),
        })
    }

    /// Starts node `index` on the given ports, with its directory and cluster config file (kept
    /// across restarts, so a restarted node rejoins as itself; its data is never saved).
    fn spawn_node(
        &self,
        binary: &Path,
        index: usize,
        port: u16,
        bus_port: u16,
        tls_port: Option<u16>,
    ) -> Result<ClusterNode, TestkitError> {
        let dir = self.dir.path().join(format!("node-{index}"));
        fs::create_dir_all(&dir).map_err(TestkitError::io("creating a node directory"))?;
        let mut extra = vec![
            "--cluster-enabled".to_owned(),
            "yes".to_owned(),
            "--cluster-config-file".to_owned(),
            dir.join(format!("nodes-{index}.conf"))
                .display()
                .to_string(),
            "--cluster-port".to_owned(),
            bus_port.to_string(),
            "--cluster-node-timeout".to_owned(),
            "5000".to_owned(),
        ];
        if let (Some(tls), Some(tls_port)) = (&self.tls, tls_port) {
            extra.extend(["--tls-port".to_owned(), tls_port.to_string()]);
            extra.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
            extra.extend(tls.iter().cloned());
        }
        let (child, client) = spawn_ready(binary, port, &dir, &extra, false)?;
        Ok(ClusterNode {
            port,
            bus_port,
            tls_port,
            client,
            child,
        })
    }

    /// `redis-cli --cluster create`: assigns the slots and introduces the nodes to each other.
    fn create(&self, cli: &Path) -> Result<(), TestkitError> {
        let output = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(
                self.nodes
                    .iter()
                    .take(CLUSTER_PRIMARIES)
                    .map(|node| format!("127.0.0.1:{}", node.port)),
            )
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(TestkitError::io("running redis-cli --cluster create"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(TestkitError::ClusterCreate {
            status: output.status,
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }

    /// Polls `CLUSTER INFO` on every node until each reports `cluster_state:ok` and knows every
    /// other node.
    fn wait_settled(&self) -> Result<(), TestkitError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let settled = |node: &ClusterNode| -> Option<String> {
            let mut connection = node
                .client
                .get_connection_with_timeout(PROBE_TIMEOUT)
                .ok()?;
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query(&mut connection)
                .ok()?;
            let known = format!("cluster_known_nodes:{}", self.nodes.len());
            let ok = info.lines().any(|line| line.trim() == "cluster_state:ok")
                && info.lines().any(|line| line.trim() == known);
            (!ok).then_some(info)
        };
        loop {
            let Some(info) = self.nodes.iter().find_map(settled) else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(TestkitError::ClusterNotReady {
                    timeout: READY_TIMEOUT,
                    info,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            kill_and_reap(&mut node.child);
        }
    }
}

fn redis_url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// A loopback port the kernel had free a moment ago: bound to port 0, read, released.
fn free_port() -> Result<u16, TestkitError> {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(TestkitError::io("binding a loopback port"))?;
        let port = listener
            .local_addr()
            .map_err(TestkitError::io("reading a bound port"))?
            .port();
        if port != DEFAULT_REDIS_PORT {
            return Ok(port);
        }
    }
}

/// Starts `redis-server` on `port` with `dir` (in a process group of its own when `own_group`)
/// and waits until this very process answers `PING`.
fn spawn_ready(
    binary: &Path,
    port: u16,
    dir: &Path,
    extra: &[String],
    own_group: bool,
) -> Result<(Child, redis::Client), TestkitError> {
    let mut command = Command::new(binary);
    if own_group {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let mut child = command
        .args(extra)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--dbfilename", DUMP_FILE])
        .arg("--logfile")
        .arg(dir.join(LOG_FILE))
        .args(["--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(TestkitError::io("spawning redis-server"))?;
    let client = redis::Client::open(redis_url(port))?;
    match wait_ready(&mut child, &client, port, dir) {
        Ok(()) => Ok((child, client)),
        Err(error) => {
            kill_and_reap(&mut child);
            Err(error)
        }
    }
}

fn wait_ready(
    child: &mut Child,
    client: &redis::Client,
    port: u16,
    dir: &Path,
) -> Result<(), TestkitError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(TestkitError::io("polling redis-server"))?
        {
            return Err(TestkitError::Exited {
                port,
                status,
                log: log_tail(dir),
            });
        }
        // Another server could hold the port (a race after `free_port`): only our own pid counts.
        if probe_pid(client) == Some(child.id()) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestkitError::NotReady {
                port,
                timeout: READY_TIMEOUT,
                log: log_tail(dir),
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The `process_id` of the server answering at `client`, if it answers `PING` in time.
fn probe_pid(client: &redis::Client) -> Option<u32> {
    let mut connection = client.get_connection_with_timeout(PROBE_TIMEOUT).ok()?;
    connection.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    connection.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    redis::cmd("PING").query::<String>(&mut connection).ok()?;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query(&mut connection)
        .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// `SHUTDOWN SAVE`, then waits for the child to exit; kills it if it does not in time.
fn shutdown_save(client: &redis::Client, child: &mut Child, port: u16) -> Result<(), TestkitError> {
    let mut connection = client.get_connection_with_timeout(READY_TIMEOUT)?;
    match redis::cmd("SHUTDOWN")
        .arg("SAVE")
        .query::<()>(&mut connection)
    {
        // The server closes the connection instead of answering.
        Ok(()) => {}
        Err(error) if error.is_io_error() || error.is_connection_dropped() => {}
        Err(error) => {
            kill_and_reap(child);
            return Err(error.into());
        }
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) => {
                kill_and_reap(child);
                return Err(TestkitError::ShutdownTimeout {
                    port,
                    timeout: READY_TIMEOUT,
                });
            }
            Err(error) => {
                kill_and_reap(child);
                return Err(TestkitError::Io {
                    action: "waiting for redis-server to exit",
                    source: error,
                });
            }
        }
    }
}

/// SIGCONT, in case the child was paused. An error means it has already exited: nothing to do.
fn resume_child(child: &Child) {
    let _ = kill_process(Pid::from_child(child), Signal::CONT);
}

/// SIGKILL and reap. Errors mean the child has already exited and been reaped: nothing to do.
fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last lines of the server's log, for error messages.
fn log_tail(dir: &Path) -> String {
    const LINES: usize = 10;
    let log = fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// How long [`eventually`] waits for a condition to become true.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` every 10 ms until it returns `Some`, and panics naming `what` after
/// [`DEADLINE`]: how a test waits for an outcome instead of sleeping.
///
/// # Panics
/// When `check` has not returned `Some` within [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `ScoreGained` event of `player` in `tier`, as a shard would append it.
#[must_use]
pub fn score(tier: u32, player: &str, points: i64) -> leaderboard_proto::v1::HuntEvent {
    leaderboard_proto::v1::HuntEvent {
        tier,
        kind: Some(leaderboard_proto::v1::hunt_event::Kind::ScoreGained(
            leaderboard_proto::v1::ScoreGained {
                player_id: player.to_owned(),
                points,
            },
        )),
        ..leaderboard_proto::v1::HuntEvent::default()
    }
}

/// Reads the `<name> <address>` lines a server binary prints on start (`grpc 127.0.0.1:4100`),
/// one per name, in order: how a test learns where a child it started on port 0 listens.
///
/// # Panics
/// When a line cannot be read or is not `<name> <address>` for the name expected.
pub fn printed_addresses(
    stdout: &mut impl io::BufRead,
    names: &[&str],
) -> Vec<std::net::SocketAddr> {
    names
        .iter()
        .map(|name| {
            let mut line = String::new();
            let read = stdout.read_line(&mut line);
            line.trim()
                .strip_prefix(&format!("{name} "))
                .and_then(|addr| addr.parse().ok())
                .unwrap_or_else(|| panic!("expected `{name} <addr>`, got {line:?} ({read:?})"))
        })
        .collect()
}

/// `GET path` from `addr` over plain HTTP/1.1: the status code and the body. For tests of the
/// router's and the sidecar's HTTP ports.
///
/// # Panics
/// When the connection fails or the reply is not HTTP.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap_or_else(|err| panic!("send to {addr}: {err}"));
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .await
        .unwrap_or_else(|err| panic!("read from {addr}: {err}"));
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply:?}"));
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A gRPC channel to a server a test started on `addr` (plain HTTP/2), connected.
///
/// # Panics
/// When the server cannot be reached.
pub async fn grpc_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap_or_else(|err| panic!("endpoint {addr}: {err}"))
        .connect()
        .await
        .unwrap_or_else(|err| panic!("gRPC connect to {addr}: {err}"))
}
