//! Start-up and graceful shutdown of a node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use parley_actors::budget::ByteBudget;
use parley_actors::ChatSystem;
use parley_protocol::ws::CLOSE_GOING_AWAY;
use parley_storage::embedded::EmbeddedStore;
use parley_storage::scylla::ScyllaStore;
use parley_storage::Store;

use crate::auth::password::PasswordHasher;
use crate::auth::{secret, tokens::TokenKeys};
use crate::config::{Config, StorageKind};
use crate::message_watch::MessageRules;
use crate::metrics::Metrics;
use crate::ratelimit::KeyedLimit;
use crate::state::{AppState, Limits};

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    match config.storage {
        StorageKind::Embedded => {
            parley_actors::metrics::METRICS
                .storage_txn_reported
                .store(true, std::sync::atomic::Ordering::Relaxed);
            parley_storage::embedded::observe_transactions(|batches, took| {
                let m = &parley_actors::metrics::METRICS;
                m.storage_txn_seconds.observe_duration(took);
                m.storage_txn_batches.observe(batches as f64);
            });
            let store = EmbeddedStore::open(&config.data_dir).with_context(|| {
                format!(
                    "opening the embedded store in {}",
                    config.data_dir.display()
                )
            })?;
            Ok(Arc::new(store))
        }
        StorageKind::Scylla => {
            let scylla = config.scylla_config()?;
            let nodes = scylla.nodes.join(",");
            let store = ScyllaStore::connect(scylla)
                .await
                .with_context(|| format!("opening the ScyllaDB store at {nodes}"))?;
            Ok(Arc::new(store))
        }
    }
}

/// Runs a node until SIGTERM or SIGINT, then drains it. Socket writers
/// run on `writers` (see `gateway`).
pub async fn run(config: Config, writers: tokio::runtime::Handle) -> anyhow::Result<()> {
    let cluster_plan = crate::cluster::ClusterPlan::from_config(&config)?;
    // Held until the node exits.
    let _data_dir = crate::data_dir_lock::lock(&config.data_dir, cluster_plan.is_some())?;
    let store = open_store(&config).await?;
    let secret = secret::load_or_generate(config.jwt_secret.as_deref(), &config.data_dir)?;
    let node_name: Arc<str> = Arc::from(config.node_name());
    let system = ChatSystem::start(
        store.clone(),
        config.actor_config(),
        config.cluster_config(),
    )
    .await
    .context("starting the actor system")?;
    let node_server = match cluster_plan {
        Some(plan) => Some(crate::cluster::start(plan, system.cluster()).await?),
        None => None,
    };
    let limits = Arc::new(Limits {
        login_ip: KeyedLimit::per_minute(config.login_rate_per_ip),
        login_user: KeyedLimit::per_minute(config.login_rate_per_user),
        register_ip: KeyedLimit::per_minute(config.register_rate_per_ip),
        refresh_ip: KeyedLimit::per_minute(config.refresh_rate_per_ip),
        api_user: KeyedLimit::per_second(config.api_rate_per_user, config.api_burst_per_user),
    });
    let state = AppState {
        system: system.clone(),
        store,
        tokens: Arc::new(TokenKeys::new(&secret, config.access_token_ttl_secs)),
        passwords: PasswordHasher::per_cpu(config.argon2_memory_kib, config.argon2_iterations),
        config: Arc::new(config.clone()),
        metrics: Arc::new(Metrics::default()),
        limits: limits.clone(),
        draining: Arc::new(AtomicBool::new(false)),
        node_name: node_name.clone(),
        sessions: crate::session_cap::SessionCap::new(config.max_sessions_per_user),
        writers,
        bodies: ByteBudget::new(
            config.max_incoming_body_bytes,
            config.max_incoming_body_bytes_per_ip,
        ),
        message_rules: Arc::new(MessageRules {
            // At most a year: deadlines are added to the clock, which must not overflow.
            timeout: Duration::from_secs(config.ws_message_timeout_secs.clamp(1, 365 * 86_400)),
            budget: ByteBudget::new(
                config.max_unfinished_message_bytes,
                config.max_unfinished_message_bytes_per_user,
            ),
            max_message: config.max_frame_bytes as u64,
        }),
    };
    // Keyed rate limiters keep an entry per key; prune them now and then.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limits.prune();
        }
    });

    let open_files = crate::listener::raise_open_file_limit();
    let options = crate::listener::ServeOptions {
        max_connections: crate::listener::connection_cap(config.max_connections, open_files),
        per_ip: crate::ip_cap::PerIpCap::new(
            config.max_connections_per_ip,
            config.connection_cap_exempt.clone(),
            config.trusted_proxies.clone(),
        ),
        header_timeout: Duration::from_secs(config.http_header_timeout_secs),
        keepalive: Duration::from_secs(config.tcp_keepalive_secs),
    };
    let listener = listen(config.listen, config.listen_backlog)
        .with_context(|| format!("binding {}", config.listen))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, node = %node_name, data_dir = %config.data_dir.display(),
        max_connections = options.max_connections, open_files, "parley node listening");

    let draining = state.draining.clone();
    let metrics = state.metrics.clone();
    let app = crate::api::router(state);
    crate::listener::serve(listener, app, options, metrics, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: draining rooms and closing sessions with 1012");
        draining.store(true, Ordering::SeqCst);
        system.shutdown(CLOSE_GOING_AWAY).await;
        // Give writers a moment to send their close frames.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(server) = node_server {
            server.stop(None);
        }
    })
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds the HTTP listener with a backlog sized for connection storms
/// (the default of 128 drops SYNs when thousands of clients reconnect at once).
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
