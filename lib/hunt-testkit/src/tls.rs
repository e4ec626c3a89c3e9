//! A private `redis-server` that also speaks TLS, with certificates made for the test, and an
//! ACL user: how managed Redis services are reached (`rediss://user:password@host:port/`).
//!
//! Design constraints:
//! - A certificate authority and a server certificate for `127.0.0.1` and `localhost` are
//!   generated at start (rcgen), kept in a temporary directory that goes with the value.
//! - The server keeps its plain port for the harness's own probes and stop; clients under test
//!   use the TLS port. Clients need no certificate of their own (`tls-auth-clients no`).
//! - The ACL user [`USER`] may run every command on every key; the default user stays as it is.
//! - [`TlsCluster`]: the same for a Redis Cluster, its bus over TLS too; a client on a TLS port
//!   is told the other nodes' TLS ports.

use std::fs;
use std::path::PathBuf;

use tempfile::TempDir;

use crate::{RedisCluster, RedisServer, TestkitError, free_port};

/// The ACL user the server knows.
pub const USER: &str = "hunt";
/// [`USER`]'s password.
pub const PASSWORD: &str = "hunt-acl-pass";

/// A `redis-server` with a TLS port and an ACL user.
#[derive(Debug)]
pub struct TlsRedis {
    /// The server (its plain port is the harness's).
    pub server: RedisServer,
    tls_port: u16,
    certs: TempDir,
}

impl TlsRedis {
    /// Generates the certificates and starts the server.
    ///
    /// # Errors
    /// Any start error of [`RedisServer::start_with`]; [`TestkitError::Io`] when the
    /// certificates cannot be made or written.
    pub fn start() -> Result<Self, TestkitError> {
        let certs = certificate_dir()?;
        let tls_port = free_port()?;
        let mut args = vec!["--tls-port".to_owned(), tls_port.to_string()];
        args.extend(server_args(certs.path()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = RedisServer::start_with(&args)?;
        Ok(Self {
            server,
            tls_port,
            certs,
        })
    }

    /// The TLS port.
    #[must_use]
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// The PEM file of the authority that signed the server's certificate.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    /// `rediss://hunt:…@127.0.0.1:<tls port>/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{}/", self.tls_port)
    }
}

/// The service a [`TlsSentinel`] watches.
pub const SENTINEL_SERVICE: &str = "hunt";

/// A sentinel watching a [`TlsRedis`] over TLS (as [`USER`]), with a TLS port of its own where
/// it knows [`USER`] too, and a plain port for the harness.
#[derive(Debug)]
pub struct TlsSentinel {
    /// The sentinel (its plain port is the harness's).
    pub server: RedisServer,
    tls_port: u16,
    _conf: TempDir,
}

impl TlsSentinel {
    /// `rediss+sentinel://hunt:…@127.0.0.1:<tls port>/hunt`.
    #[must_use]
    pub fn url(&self) -> String {
        format!(
            "rediss+sentinel://{USER}:{PASSWORD}@127.0.0.1:{}/{SENTINEL_SERVICE}",
            self.tls_port
        )
    }
}

impl TlsRedis {
    /// Starts a sentinel that watches this server through its TLS port, signed by the same
    /// authority.
    ///
    /// # Errors
    /// Any start error of [`RedisServer::start_with`]; [`TestkitError::Io`] when its config
    /// cannot be written.
    pub fn start_sentinel(&self) -> Result<TlsSentinel, TestkitError> {
        let conf_dir = tempfile::Builder::new()
            .prefix("hunt-sentinel-tls-")
            .tempdir()
            .map_err(TestkitError::io("creating the sentinel's config directory"))?;
        let tls_port = free_port()?;
        let certs = self.certs.path();
        let conf = conf_dir.path().join("sentinel.conf");
        fs::write(
            &conf,
            format!(
                "tls-port {tls_port}\n\
                 tls-cert-file {cert}\n\
                 tls-key-file {key}\n\
                 tls-ca-cert-file {ca}\n\
                 tls-auth-clients no\n\
                 tls-replication yes\n\
                 user {USER} on >{PASSWORD} ~* &* +@all\n\
                 sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary} 1\n\
                 sentinel auth-user {SENTINEL_SERVICE} {USER}\n\
                 sentinel auth-pass {SENTINEL_SERVICE} {PASSWORD}\n",
                cert = certs.join("server.pem").display(),
                key = certs.join("server.key").display(),
                ca = certs.join("ca.pem").display(),
                primary = self.tls_port,
            ),
        )
        .map_err(TestkitError::io("writing the sentinel's config"))?;
        let conf_arg = conf.to_string_lossy().into_owned();
        let server = RedisServer::start_with(&[&conf_arg, "--sentinel"])?;
        Ok(TlsSentinel {
            server,
            tls_port,
            _conf: conf_dir,
        })
    }
}

/// A Redis Cluster whose nodes also speak TLS (the cluster bus too), signed by an authority
/// made for the test, knowing the ACL user [`USER`]: a TLS client is told the TLS ports.
#[derive(Debug)]
pub struct TlsCluster {
    /// The cluster (its plain ports are the harness's).
    pub cluster: RedisCluster,
    certs: TempDir,
}

impl TlsCluster {
    /// Generates the certificates and starts the cluster.
    ///
    /// # Errors
    /// Any start error of [`RedisCluster::start_with_tls`]; [`TestkitError::Io`] when the
    /// certificates cannot be made or written.
    pub fn start() -> Result<Self, TestkitError> {
        let certs = certificate_dir()?;
        let cluster = RedisCluster::start_with_tls(Some(server_args(certs.path())))?;
        Ok(Self { cluster, certs })
    }

    /// The PEM file of the authority that signed the nodes' certificates.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.certs.path().join("ca.pem")
    }

    /// Every node's `rediss://hunt:…@127.0.0.1:<tls port>/`, comma-separated (a seed list).
    #[must_use]
    pub fn urls(&self) -> String {
        self.cluster
            .tls_ports()
            .iter()
            .map(|port| format!("rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A temporary directory holding `ca.pem`, `server.pem` and `server.key`: an authority made
/// for the test and a certificate for `127.0.0.1` and `localhost` it signed.
fn certificate_dir() -> Result<TempDir, TestkitError> {
    let certs = tempfile::Builder::new()
        .prefix("hunt-redis-tls-")
        .tempdir()
        .map_err(TestkitError::io("creating the certificates' directory"))?;
    let (ca, cert, key) = certificates().map_err(|err| TestkitError::Io {
        action: "generating test certificates",
        source: std::io::Error::other(err),
    })?;
    for (name, pem) in [("ca.pem", ca), ("server.pem", cert), ("server.key", key)] {
        fs::write(certs.path().join(name), pem)
            .map_err(TestkitError::io("writing a test certificate"))?;
    }
    Ok(certs)
}

/// The `redis-server` arguments for TLS with the certificates in `certs` (clients need none of
/// their own) and the ACL user [`USER`].
fn server_args(certs: &std::path::Path) -> Vec<String> {
    let file = |name: &str| certs.join(name).display().to_string();
    [
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "no",
        "--user",
        USER,
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect()
}

/// A certificate authority, and a server certificate and key it signed, in PEM.
fn certificates() -> Result<(String, String, String), rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut authority = CertificateParams::new(Vec::<String>::new())?;
    authority.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    authority
        .distinguished_name
        .push(DnType::CommonName, "hunt-pipeline test authority");
    let issuer = CertifiedIssuer::self_signed(authority, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &issuer)?;
    Ok((issuer.pem(), server.pem(), key.serialize_pem()))
}
