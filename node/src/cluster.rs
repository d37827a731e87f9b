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
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use tokio::net::TcpListener;

use parley_actors::cluster::Cluster;

use crate::cluster_tls::ReloadableTls;
use crate::config::Config;

/// Development cookie used only with `--cluster-insecure-dev`.
const DEV_COOKIE: &str = "parley-insecure-dev-cookie";

/// A node's cluster settings, checked before anything starts (a bad
/// secret or an unreadable certificate stops the node before it opens its
/// store).
pub struct ClusterPlan {
    listen: SocketAddr,
    /// The address peers are told to reach this node at.
    advertised: SocketAddr,
    cookie: String,
    node_name: String,
    /// Seeds as given (the join loop skips this node's own address).
    seeds: Vec<String>,
    dialer: Dialer,
    handshake_timeout: Duration,
}

impl ClusterPlan {
    /// The plan of `config`; `None` without `--cluster-listen`.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<ClusterPlan>> {
        let tls = ReloadableTls::from_config(config)?;
        let (Some(listen), Some(advertised)) = (config.cluster_listen, config.cluster_address())
        else {
            if config.cluster_advertise.is_some() {
                anyhow::bail!("--cluster-advertise needs --cluster-listen");
            }
            if !config.seeds.is_empty() {
                tracing::warn!("--seeds given without --cluster-listen; running single-node");
            }
            return Ok(None);
        };
        if advertised.ip().is_unspecified() {
            anyhow::bail!(
                "the cluster address {advertised} names no host: peers would dial \
                 themselves. --cluster-listen {listen} binds every interface, so give \
                 --cluster-advertise IP, the address peers reach this node at"
            );
        }
        Ok(Some(ClusterPlan {
            listen,
            advertised,
            cookie: cookie(config)?,
            node_name: config.node_name(),
            seeds: config.seeds.clone(),
            dialer: tls.map_or(Dialer::Plain, |t| Dialer::Tls(Arc::new(t))),
            handshake_timeout: Duration::from_millis(config.cluster_handshake_timeout_ms.max(100)),
        }))
    }
}

/// Starts the node server and keeps joining the seeds (and, with cluster
/// TLS, every node the peers know).
pub async fn start(
    plan: ClusterPlan,
    cluster: &Cluster,
) -> anyhow::Result<ActorRef<NodeServerMessage>> {
    let ClusterPlan {
        listen,
        advertised,
        cookie,
        node_name,
        seeds,
        dialer,
        handshake_timeout,
    } = plan;
    // ractor_cluster's transitive mode dials the peers' peers over plain
    // TCP, so with TLS the node dials them itself (see `join`). With TLS,
    // Parley also serves the cluster port itself (see
    // `cluster_tls::accept_loop`); the node server's own listener gets a
    // free loopback port that no peer is told of.
    let (incoming, mode, own_listener) = match &dialer {
        Dialer::Tls(tls) => (
            IncomingEncryptionMode::Tls(tls.current().acceptor),
            NodeConnectionMode::Isolated,
            Some(
                TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding the cluster address {listen}"))?,
            ),
        ),
        Dialer::Plain => (
            IncomingEncryptionMode::Raw,
            NodeConnectionMode::Transitive,
            None,
        ),
    };
    let (port, bind_ip) = match own_listener {
        Some(_) => (0, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        None => (listen.port(), listen.ip()),
    };
    let server = NodeServer::new(
        port,
        cookie,
        node_name,
        advertised.ip().to_string(),
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
            tls.clone(),
            server.clone(),
            handshake_timeout,
        ));
        tls.clone()
            .reload_on_hangup()
            .context("listening for SIGHUP (cluster TLS reload)")?;
    }
    tracing::info!(
        addr = %listen,
        advertised = %advertised,
        tls = dialer.is_tls(),
        "cluster node server listening"
    );
    tokio::spawn(join(
        server.clone(),
        advertised,
        seeds,
        dialer,
        cluster.clone(),
    ));
    Ok(server)
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
    Tls(Arc<ReloadableTls>),
}

impl Dialer {
    /// Whether connections are TLS. Such a node also dials the addresses
    /// its peers announce (ractor_cluster's transitive dialling is plain TCP).
    fn is_tls(&self) -> bool {
        matches!(self, Dialer::Tls(_))
    }

    /// One connection attempt to `target`, for at most 2 s; whether the
    /// peer took the connection (its session may still fail to authenticate).
    async fn dial(&self, server: &ActorRef<NodeServerMessage>, target: &str) -> bool {
        let attempt = async {
            match self {
                Dialer::Plain => ractor_cluster::client_connect(server, target).await,
                Dialer::Tls(tls) => {
                    let tls = tls.current();
                    ractor_cluster::client_connect_enc(
                        server,
                        target,
                        tls.connector.clone(),
                        tls.name.clone(),
                    )
                    .await
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(())) => {
                tracing::info!(peer = %target, "connected to cluster peer");
                true
            }
            Ok(Err(e)) => {
                tracing::debug!(peer = %target, error = %e, "cluster peer not reachable yet");
                false
            }
            Err(_) => {
                tracing::debug!(peer = %target, "cluster peer connection timed out");
                false
            }
        }
    }
}

/// Every second, dials the seeds that have no open session, and with TLS
/// also the nodes the peers announce that have none. A seed that names
/// this node itself (`own`, e.g. a StatefulSet's own DNS name) is skipped.
async fn join(
    server: ActorRef<NodeServerMessage>,
    own: SocketAddr,
    seeds: Vec<String>,
    dialer: Dialer,
    cluster: Cluster,
) {
    let discover = dialer.is_tls();
    if seeds.is_empty() && !discover {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Targets that took a connection at the last tick, and when each
    // refusal was last logged.
    let mut taken: Vec<String> = Vec::new();
    let mut logged: std::collections::HashMap<String, tokio::time::Instant> =
        std::collections::HashMap::new();
    loop {
        tick.tick().await;
        let sessions = match ractor::call_t!(server, NodeServerMessage::GetSessions, 2000) {
            Ok(s) => s,
            Err(_) => return, // node server stopped: shutting down
        };
        // A peer that took the connection at the last round and has no
        // session now ended it in the handshake: it refuses this node.
        refusals(&sessions, std::mem::take(&mut taken), &cluster, &mut logged);
        let mut names = seeds.clone();
        if discover {
            names.extend(cluster.addresses().await);
        }
        // Dial each target not connected in either direction (we dialled
        // it, or it dialled us).
        let targets: Vec<String> = resolve_targets(&names, own)
            .await
            .iter()
            .map(SocketAddr::to_string)
            .filter(|t| !connected_to(&sessions, t))
            .collect();
        let results =
            futures_util::future::join_all(targets.iter().map(|t| dialer.dial(&server, t))).await;
        taken = targets
            .into_iter()
            .zip(results)
            .filter_map(|(t, ok)| ok.then_some(t))
            .collect();
        if !taken.is_empty() {
            // A refusal on loopback or a LAN takes milliseconds: look again
            // soon, so that a short join grace cannot run out first (what is
            // still connecting is looked at again next round).
            tokio::time::sleep(Duration::from_millis(300)).await;
            if let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 2000) {
                taken = refusals(&sessions, taken, &cluster, &mut logged);
            }
        }
    }
}

/// Tells the cluster actor, and logs (at most once a minute per peer), each
/// of `taken` (peers that took this node's connection) that has no session
/// in `sessions` any more; returns the others (still connected, or still
/// in their handshake).
fn refusals(
    sessions: &std::collections::HashMap<u64, ractor_cluster::node::NodeServerSessionInformation>,
    taken: Vec<String>,
    cluster: &Cluster,
    logged: &mut std::collections::HashMap<String, tokio::time::Instant>,
) -> Vec<String> {
    let (connected, refused): (Vec<_>, Vec<_>) =
        taken.into_iter().partition(|t| connected_to(sessions, t));
    for target in refused {
        cluster.seed_refused();
        let due = logged
            .get(&target)
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY);
        if due {
            logged.insert(target.clone(), tokio::time::Instant::now());
            tracing::error!(
                peer = %target,
                "cluster peer ended the session before this node joined: check that \
                 --cluster-secret (and TLS, if used) matches the cluster's and that \
                 --node-name is not taken; this node will not serve alone meanwhile"
            );
        }
    }
    connected
}

/// How often one refusing peer is logged at most.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// The addresses `names` resolve to, each once, without `own` and in
/// `own`'s address family. A seed may be a DNS name of one node (a
/// StatefulSet pod, possibly this one) or of many (a headless Service): every
/// node it names is a target. Names that do not resolve yet are skipped.
async fn resolve_targets(names: &[String], own: SocketAddr) -> Vec<SocketAddr> {
    let mut targets = Vec::new();
    for name in names {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => {
                for addr in addrs {
                    if addr != own && addr.is_ipv4() == own.is_ipv4() && !targets.contains(&addr) {
                        targets.push(addr);
                    }
                }
            }
            Err(e) => tracing::debug!(seed = %name, error = %e, "cluster seed does not resolve"),
        }
    }
    targets
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
