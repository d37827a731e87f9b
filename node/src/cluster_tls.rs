//! Mutual TLS for cluster connections (`--cluster-tls-*`).
//!
//! Every node holds a certificate signed by the cluster's own CA and trusts
//! only that CA, both ways: a node accepts a connection only from a peer
//! that presents such a certificate, and dials a peer only if it presents
//! one for the cluster name (`--cluster-tls-name`; peers are dialled by
//! address, which names no host). The shared cookie is still checked inside
//! the encrypted stream. `deploy/cluster-tls-certs.sh` makes a CA and node
//! certificates with openssl. On SIGHUP the node reads the three files
//! again (`ReloadableTls`), so renewed certificates take effect for new
//! connections without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use ractor::{ActorRef, ActorStatus};
use ractor_cluster::{NetworkStream, NodeServerMessage};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::Config;

/// Why the cluster TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterTlsError {
    /// Only some of the three files were given.
    #[error("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together: give all three or none")]
    Incomplete,
    /// TLS settings without `--cluster-listen`.
    #[error("--cluster-tls-* needs --cluster-listen")]
    NotClustered,
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `--cluster-tls-name` is not a valid DNS name.
    #[error("--cluster-tls-name {0:?} is not a valid DNS name")]
    BadName(String),
    /// rustls refused the certificates or key.
    #[error("cluster TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA could not verify client certificates.
    #[error("cluster TLS CA: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// What a node needs to accept and dial encrypted cluster connections.
#[derive(Clone)]
pub struct ClusterTls {
    /// Wraps accepted connections (the peer must present a certificate).
    pub acceptor: TlsAcceptor,
    /// Wraps dialled connections (this node presents its certificate).
    pub connector: TlsConnector,
    /// The name a peer's certificate must carry.
    pub name: ServerName<'static>,
}

/// The cluster TLS files and what was last loaded from them. Handshakes
/// and dials take [`ReloadableTls::current`]; [`ReloadableTls::reload`]
/// (on SIGHUP) replaces it only when every file loads, so a half-written
/// renewal leaves the node with its working certificates.
pub struct ReloadableTls {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    name: String,
    current: RwLock<ClusterTls>,
}

impl ReloadableTls {
    /// The TLS settings of `config`, loaded: `None` when no
    /// `--cluster-tls-*` file is given.
    pub fn from_config(config: &Config) -> Result<Option<ReloadableTls>, ClusterTlsError> {
        let (cert, key, ca) = match (
            &config.cluster_tls_cert,
            &config.cluster_tls_key,
            &config.cluster_tls_ca,
        ) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), Some(ca)) => (cert, key, ca),
            _ => return Err(ClusterTlsError::Incomplete),
        };
        if config.cluster_listen.is_none() {
            return Err(ClusterTlsError::NotClustered);
        }
        let name = config.cluster_tls_name.clone();
        let loaded = ClusterTls::load(cert, key, ca, &name)?;
        Ok(Some(ReloadableTls {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            name,
            current: RwLock::new(loaded),
        }))
    }

    /// The settings new connections use.
    pub fn current(&self) -> ClusterTls {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again; on success new connections use them, on
    /// failure the current settings stay.
    pub fn reload(&self) -> Result<(), ClusterTlsError> {
        let loaded = ClusterTls::load(&self.cert, &self.key, &self.ca, &self.name)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(())
    }

    /// Reloads the files on every SIGHUP, for as long as the node runs.
    pub fn reload_on_hangup(self: Arc<Self>) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                match self.reload() {
                    Ok(()) => tracing::info!(
                        cert = %self.cert.display(),
                        "cluster TLS files reloaded; new connections use them"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "cluster TLS files not reloaded; keeping the current ones"
                    ),
                }
            }
        });
        Ok(())
    }
}

impl ClusterTls {
    /// Loads a node's certificate chain and key and the cluster CA.
    pub fn load(cert: &Path, key: &Path, ca: &Path, name: &str) -> Result<Self, ClusterTlsError> {
        let chain = certificates(cert)?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read_error(key, e))?;
        let mut roots = RootCertStore::empty();
        for c in certificates(ca)? {
            roots.add(c)?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build()?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        let name = ServerName::try_from(name.to_string())
            .map_err(|_| ClusterTlsError::BadName(name.to_string()))?;
        Ok(ClusterTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            name,
        })
    }
}

/// How many handshakes may be under way at once; connections beyond are
/// closed at once (a peer dials again within a second).
const MAX_HANDSHAKES: usize = 64;

/// Accepts cluster connections on `listener`, completes each TLS handshake
/// in a task of its own (at most `handshake_timeout`) and hands the
/// encrypted stream to the node server, until the node server stops.
///
/// ractor_cluster's own TLS listener runs the handshake inline, without a
/// timeout, so one connection that never sends its hello would stop the
/// node from accepting any other peer; the node server's listener is
/// therefore bound to an unused loopback port (see `cluster::start`) and
/// this loop serves the cluster port.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ReloadableTls>,
    server: ActorRef<NodeServerMessage>,
    handshake_timeout: Duration,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!(error = %e, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if server.get_status() != ActorStatus::Running {
            return;
        }
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer_addr, "cluster listener: too many handshakes under way; connection closed");
            continue;
        };
        let (acceptor, server) = (tls.current().acceptor, server.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let Ok(local_addr) = stream.local_addr() else {
                return;
            };
            let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer_addr, error = %e, "cluster TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %peer_addr, "cluster TLS handshake timed out");
                    return;
                }
            };
            let _ = server.cast(NodeServerMessage::ConnectionOpened {
                stream: Box::new(NetworkStream::TlsServer {
                    peer_addr,
                    local_addr,
                    stream,
                }),
                is_server: true,
            });
        });
    }
}

/// Every certificate in a PEM file (at least one).
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClusterTlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(path, e))?;
    if certs.is_empty() {
        return Err(ClusterTlsError::Read {
            path: path.to_path_buf(),
            reason: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> ClusterTlsError {
    ClusterTlsError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let err = ClusterTls::load(
            Path::new("/nonexistent/node.pem"),
            Path::new("/nonexistent/node.key"),
            Path::new("/nonexistent/ca.pem"),
            "parley-cluster",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains("/nonexistent/node.pem"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = certificates(&empty)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
