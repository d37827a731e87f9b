//! Cluster bootstrap: the ractor_cluster node server and joining the seeds.
//!
//! Each clustered node runs a `NodeServer` on `--cluster-listen`, which
//! authenticates peers with the shared cookie (`--cluster-secret`) and, in
//! transitive mode, connects to every node its peers know. Joining means
//! connecting to any reachable seed; a background task keeps retrying seeds
//! that are not connected, so a node that starts before its seeds, or loses
//! them, joins as soon as they are back. Membership, failure detection and
//! placement are built on top of these connections in `parley_actors::cluster`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};

use crate::config::Config;

/// Development cookie used only with `--cluster-insecure-dev`.
const DEV_COOKIE: &str = "parley-insecure-dev-cookie";

/// Starts the node server when `--cluster-listen` is set and keeps joining the seeds.
pub async fn start(config: &Config) -> anyhow::Result<Option<ActorRef<NodeServerMessage>>> {
    let Some(listen) = config.cluster_listen else {
        if !config.seeds.is_empty() {
            tracing::warn!("--seeds given without --cluster-listen; running single-node");
        }
        return Ok(None);
    };
    let cookie = match config.cluster_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(s) if s.len() >= 16 => s.to_string(),
        Some(_) => anyhow::bail!("--cluster-secret must be at least 16 characters"),
        None if config.cluster_insecure_dev => {
            tracing::warn!("clustering with the insecure development cookie (--cluster-insecure-dev)");
            DEV_COOKIE.to_string()
        }
        None => anyhow::bail!(
            "--cluster-listen needs --cluster-secret (or --cluster-insecure-dev for local development)"
        ),
    };
    let server = NodeServer::new(
        listen.port(),
        cookie,
        config.node_name(),
        listen.ip().to_string(),
        Some(IncomingEncryptionMode::Raw),
        Some(NodeConnectionMode::Transitive),
    )
    .with_listen_addr(listen.ip());
    let (server, _) = Actor::spawn(Some("parley.node_server".into()), server, ())
        .await
        .context("starting the cluster node server")?;
    tracing::info!(addr = %listen, "cluster node server listening");
    let seeds: Vec<String> = config
        .seeds
        .iter()
        .filter(|s| s.parse::<SocketAddr>().ok() != Some(listen))
        .cloned()
        .collect();
    tokio::spawn(join_seeds(server.clone(), seeds));
    Ok(Some(server))
}

/// Keeps connecting to seeds that have no open session.
async fn join_seeds(server: ActorRef<NodeServerMessage>, seeds: Vec<String>) {
    if seeds.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let sessions = match ractor::call_t!(server, NodeServerMessage::GetSessions, 2000) {
            Ok(s) => s,
            Err(_) => return, // node server stopped: shutting down
        };
        for seed in &seeds {
            // Connected in either direction (we dialled it, or it dialled us)?
            // Seeds may be names (e.g. Kubernetes DNS): compare their addresses.
            let resolved: Vec<String> = match tokio::net::lookup_host(seed.as_str()).await {
                Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
                Err(_) => Vec::new(),
            };
            if connected_to_seed(&sessions, seed)
                || resolved.iter().any(|a| connected_to_seed(&sessions, a))
            {
                continue;
            }
            match tokio::time::timeout(
                Duration::from_secs(2),
                ractor_cluster::client_connect(&server, seed.as_str()),
            )
            .await
            {
                Ok(Ok(())) => tracing::info!(seed = %seed, "connected to cluster seed"),
                Ok(Err(e)) => tracing::debug!(seed = %seed, error = %e, "seed not reachable yet"),
                Err(_) => tracing::debug!(seed = %seed, "seed connection timed out"),
            }
        }
    }
}

fn connected_to_seed(
    sessions: &std::collections::HashMap<u64, ractor_cluster::node::NodeServerSessionInformation>,
    seed: &str,
) -> bool {
    sessions.values().any(|s| {
        s.peer_addr == seed
            || s.peer_name
                .as_ref()
                .is_some_and(|n| n.connection_string == seed)
    })
}
