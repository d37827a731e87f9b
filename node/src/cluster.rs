//! Cluster bootstrap: the ractor_cluster node server and joining the seeds.
//!
//! Each clustered node runs a `NodeServer` on `--cluster-listen`, which
//! authenticates peers with the shared cookie (`--cluster-secret`) and, in
//! transitive mode, connects to every node its peers know. Joining means
//! connecting to any reachable seed; a background task keeps retrying seeds
//! that are not connected, so a node that starts before its seeds, or loses
//! them, joins as soon as they are back. With `--cluster-tls-*` every
//! connection is mutual TLS (see `cluster_tls`), and the same task dials
//! the nodes the peers announce in their heartbeats, which ractor_cluster's
//! transitive mode would dial unencrypted. Membership, failure detection and
//! placement are built on top of these connections in `parley_actors::cluster`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use tokio::net::TcpListener;

use parley_actors::cluster::Cluster;

use crate::cluster_tls::ClusterTls;
use crate::config::Config;

/// Development cookie used only with `--cluster-insecure-dev`.
const DEV_COOKIE: &str = "parley-insecure-dev-cookie";

/// Starts the node server when `--cluster-listen` is set and keeps joining
/// the seeds (and, with cluster TLS, every node the peers know).
pub async fn start(
    config: &Config,
    cluster: &Cluster,
) -> anyhow::Result<Option<ActorRef<NodeServerMessage>>> {
    let tls = ClusterTls::from_config(config)?;
    let Some(listen) = config.cluster_listen else {
        if !config.seeds.is_empty() {
            tracing::warn!("--seeds given without --cluster-listen; running single-node");
        }
        return Ok(None);
    };
    let cookie = cookie(config)?;
    // ractor_cluster's transitive mode dials the peers' peers over plain
    // TCP, so with TLS the node dials them itself (see `join`).
    let (incoming, mode, dialer) = match tls {
        Some(tls) => (
            IncomingEncryptionMode::Tls(tls.acceptor.clone()),
            NodeConnectionMode::Isolated,
            Dialer::Tls(tls),
        ),
        None => (
            IncomingEncryptionMode::Raw,
            NodeConnectionMode::Transitive,
            Dialer::Plain,
        ),
    };
    let encrypted = matches!(dialer, Dialer::Tls(_));
    let handshake_timeout = Duration::from_millis(config.cluster_handshake_timeout_ms.max(100));
    // With TLS, Parley serves the cluster port itself (see
    // `cluster_tls::accept_loop`); the node server's own listener gets a
    // free loopback port that no peer is told of.
    let own_listener = match &dialer {
        Dialer::Tls(_) => Some(
            TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding the cluster address {listen}"))?,
        ),
        Dialer::Plain => None,
    };
    let (port, bind_ip) = match own_listener {
        Some(_) => (0, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        None => (listen.port(), listen.ip()),
    };
    let server = NodeServer::new(
        port,
        cookie,
        config.node_name(),
        listen.ip().to_string(),
        Some(incoming),
        Some(mode),
    )
    .with_listen_addr(bind_ip);
    let (server, _) = Actor::spawn(Some("parley.node_server".into()), server, ())
        .await
        .context("starting the cluster node server")?;
    crate::cluster_guard::install(&server, handshake_timeout)?;
    if let (Some(own), Dialer::Tls(tls)) = (own_listener, &dialer) {
        // The node server took its listener's port as this node's address;
        // peers must be told the cluster port (this follows the listener's
        // notice in the node server's mailbox).
        server
            .cast(NodeServerMessage::PortChanged {
                port: listen.port(),
            })
            .context("setting the cluster port")?;
        tokio::spawn(crate::cluster_tls::accept_loop(
            own,
            tls.acceptor.clone(),
            server.clone(),
            handshake_timeout,
        ));
    }
    tracing::info!(addr = %listen, tls = encrypted, "cluster node server listening");
    let seeds: Vec<String> = config
        .seeds
        .iter()
        .filter(|s| s.parse::<SocketAddr>().ok() != Some(listen))
        .cloned()
        .collect();
    tokio::spawn(join(server.clone(), seeds, dialer, cluster.clone()));
    Ok(Some(server))
}

/// The shared cookie peers authenticate with: `--cluster-secret`, or the
/// development cookie with `--cluster-insecure-dev`.
fn cookie(config: &Config) -> anyhow::Result<String> {
    match config.cluster_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(s) if s.len() >= 16 => Ok(s.to_string()),
        Some(_) => anyhow::bail!("--cluster-secret must be at least 16 characters"),
        None if config.cluster_insecure_dev => {
            tracing::warn!("clustering with the insecure development cookie (--cluster-insecure-dev)");
            Ok(DEV_COOKIE.to_string())
        }
        None => anyhow::bail!(
            "--cluster-listen needs --cluster-secret (or --cluster-insecure-dev for local development)"
        ),
    }
}

/// How this node opens connections to peers.
enum Dialer {
    /// Plain TCP; ractor_cluster connects to the peers' peers itself.
    Plain,
    /// Mutual TLS; the node also dials the addresses its peers announce.
    Tls(ClusterTls),
}

impl Dialer {
    async fn dial(
        &self,
        server: &ActorRef<NodeServerMessage>,
        addr: &str,
    ) -> Result<(), ractor_cluster::ClientConnectErr> {
        match self {
            Dialer::Plain => ractor_cluster::client_connect(server, addr).await,
            Dialer::Tls(tls) => {
                ractor_cluster::client_connect_enc(
                    server,
                    addr,
                    tls.connector.clone(),
                    tls.name.clone(),
                )
                .await
            }
        }
    }
}

/// Every second, dials the seeds that have no open session, and with TLS
/// also the nodes the peers announce that have none.
async fn join(
    server: ActorRef<NodeServerMessage>,
    seeds: Vec<String>,
    dialer: Dialer,
    cluster: Cluster,
) {
    let discover = matches!(dialer, Dialer::Tls(_));
    if seeds.is_empty() && !discover {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let sessions = match ractor::call_t!(server, NodeServerMessage::GetSessions, 2000) {
            Ok(s) => s,
            Err(_) => return, // node server stopped: shutting down
        };
        let mut targets = seeds.clone();
        if discover {
            for addr in cluster.addresses().await {
                if !targets.contains(&addr) {
                    targets.push(addr);
                }
            }
        }
        let mut dials = Vec::new();
        for target in &targets {
            // Connected in either direction (we dialled it, or it dialled us)?
            // Seeds may be names (e.g. Kubernetes DNS): compare their addresses.
            let resolved: Vec<String> = match tokio::net::lookup_host(target.as_str()).await {
                Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
                Err(_) => Vec::new(),
            };
            if connected_to(&sessions, target)
                || resolved.iter().any(|a| connected_to(&sessions, a))
            {
                continue;
            }
            dials.push(dial(&server, &dialer, target));
        }
        futures_util::future::join_all(dials).await;
    }
}

/// One connection attempt, for at most 2 s.
async fn dial(server: &ActorRef<NodeServerMessage>, dialer: &Dialer, target: &str) {
    match tokio::time::timeout(Duration::from_secs(2), dialer.dial(server, target)).await {
        Ok(Ok(())) => tracing::info!(peer = %target, "connected to cluster peer"),
        Ok(Err(e)) => tracing::debug!(peer = %target, error = %e, "cluster peer not reachable yet"),
        Err(_) => tracing::debug!(peer = %target, "cluster peer connection timed out"),
    }
}

fn connected_to(
    sessions: &std::collections::HashMap<u64, ractor_cluster::node::NodeServerSessionInformation>,
    addr: &str,
) -> bool {
    sessions.values().any(|s| {
        s.peer_addr == addr
            || s.peer_name
                .as_ref()
                .is_some_and(|n| n.connection_string == addr)
    })
}
