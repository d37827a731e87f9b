//! The conformance suite against ScyllaDB, through `ScyllaStore::connect`
//! (the constructor the node uses).
//!
//! Runs when `PARLEY_SCYLLA_NODES` is set (`host:port,...`; keyspace from
//! `PARLEY_SCYLLA_KEYSPACE`, default `parley_test`; optional
//! `PARLEY_SCYLLA_USERNAME`/`PARLEY_SCYLLA_PASSWORD`; set
//! `PARLEY_SCYLLA_LIGHT=1` to skip the 16,500-message bucket test).
//! Without it, the live tests print that they were skipped and pass. The
//! tests at the end need no server: they check that the constructor
//! refuses bad settings and fails cleanly when nothing listens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parley_storage::conformance;
use parley_storage::scylla::{ScyllaConfig, ScyllaStore, TlsOptions, SCHEMA_VERSION};
use parley_storage::{StorageError, Store};

/// The cluster's settings from the environment, or `None` (skip).
fn live_config() -> Option<ScyllaConfig> {
    let nodes = std::env::var("PARLEY_SCYLLA_NODES").ok()?;
    let nodes: Vec<String> = nodes
        .split(',')
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() {
        return None;
    }
    let mut config = ScyllaConfig::new(nodes);
    config.keyspace =
        std::env::var("PARLEY_SCYLLA_KEYSPACE").unwrap_or_else(|_| "parley_test".into());
    config.username = std::env::var("PARLEY_SCYLLA_USERNAME").ok();
    config.password = std::env::var("PARLEY_SCYLLA_PASSWORD").ok();
    config.request_timeout = Duration::from_secs(15);
    Some(config)
}

/// Says loudly that a live test did not run. Written straight to stderr,
/// past the test harness's output capture, so it shows in every run.
fn skipped(test: &str) {
    use std::io::Write as _;
    let msg = format!(
        "SKIPPED {test}: PARLEY_SCYLLA_NODES is not set, so no ScyllaDB cluster is reachable; \
         set it (e.g. PARLEY_SCYLLA_NODES=127.0.0.1:9042) to run the conformance suite against \
         ScyllaDB\n"
    );
    let _ = std::io::stderr().write_all(msg.as_bytes());
}

async fn connect(config: &ScyllaConfig) -> Arc<dyn Store> {
    let store = ScyllaStore::connect(config.clone())
        .await
        .unwrap_or_else(|e| panic!("connecting to ScyllaDB at {:?}: {e}", config.nodes));
    Arc::new(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_passes_the_conformance_suite() {
    let Some(config) = live_config() else {
        skipped("scylla_store_passes_the_conformance_suite");
        return;
    };
    let heavy = std::env::var("PARLEY_SCYLLA_LIGHT").is_err();
    let store = connect(&config).await;
    let started = Instant::now();
    conformance::run_all_with(Arc::clone(&store), heavy).await;
    eprintln!(
        "ScyllaDB conformance suite (heavy: {heavy}) took {:?}",
        started.elapsed()
    );
    // Everything uses fresh ids: a second run on the same keyspace passes.
    conformance::run_all_with(store, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_act_as_one_store() {
    let Some(config) = live_config() else {
        skipped("two_sessions_act_as_one_store");
        return;
    };
    // Two connections are two nodes: the split-owner rule and uniqueness
    // must hold between them.
    let a = connect(&config).await;
    let b = connect(&config).await;
    let both = [Arc::clone(&a), Arc::clone(&b)];
    conformance::concurrent_registration_across(&both).await;
    conformance::concurrent_direct_room_across(&both).await;
    conformance::split_owner_across(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_version_is_refused() {
    let Some(mut config) = live_config() else {
        skipped("a_newer_schema_version_is_refused");
        return;
    };
    // A keyspace of its own, so the bump does not disturb other runs.
    config.keyspace = format!("{}_newer", config.keyspace);
    drop(connect(&config).await);
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(&config.nodes)
        .user(
            config.username.clone().unwrap_or_default(),
            config.password.clone().unwrap_or_default(),
        )
        .build()
        .await
        .expect("raw session");
    let bump = format!(
        "UPDATE {}.schema_version SET version = ? WHERE id = 0 IF EXISTS",
        config.keyspace
    );
    let prepared = session.prepare(bump).await.expect("prepare the bump");
    session
        .execute_unpaged(&prepared, (SCHEMA_VERSION + 1,))
        .await
        .expect("bump the version");
    match ScyllaStore::connect(config.clone()).await {
        Err(StorageError::Schema(m)) => assert!(m.contains("newer"), "{m}"),
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
    session
        .execute_unpaged(&prepared, (SCHEMA_VERSION,))
        .await
        .expect("restore the version");
}

// ---- without a server ----

#[tokio::test]
async fn bad_settings_are_refused_before_connecting() {
    let mut c = ScyllaConfig::new(vec!["127.0.0.1:9".into()]);
    c.keyspace = "Bad-Name".into();
    match ScyllaStore::connect(c).await {
        Err(StorageError::Internal(m)) => assert!(m.contains("keyspace"), "{m}"),
        other => panic!("an invalid keyspace must be refused, got {other:?}"),
    }
    let c = ScyllaConfig::new(vec![]);
    match ScyllaStore::connect(c).await {
        Err(StorageError::Internal(m)) => assert!(m.contains("contact points"), "{m}"),
        other => panic!("no contact points must be refused, got {other:?}"),
    }
}

#[cfg(not(feature = "scylla-tls"))]
#[tokio::test]
async fn tls_without_the_feature_is_refused_clearly() {
    let mut c = ScyllaConfig::new(vec!["127.0.0.1:9".into()]);
    c.tls = Some(TlsOptions {
        ca_file: "/nonexistent/ca.pem".into(),
    });
    match ScyllaStore::connect(c).await {
        Err(StorageError::Internal(m)) => assert!(m.contains("scylla-tls"), "{m}"),
        other => panic!("TLS without the feature must be refused, got {other:?}"),
    }
}

#[cfg(feature = "scylla-tls")]
#[tokio::test]
async fn tls_with_a_missing_ca_file_is_refused_clearly() {
    let mut c = ScyllaConfig::new(vec!["127.0.0.1:9".into()]);
    c.tls = Some(TlsOptions {
        ca_file: "/nonexistent/ca.pem".into(),
    });
    match ScyllaStore::connect(c).await {
        Err(StorageError::Internal(m)) => assert!(m.contains("ca.pem"), "{m}"),
        other => panic!("a missing CA file must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_to_nothing_fails_cleanly() {
    // Port 9 on loopback: nothing listens, the connection is refused.
    let mut c = ScyllaConfig::new(vec!["127.0.0.1:9".into()]);
    c.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let res = tokio::time::timeout(Duration::from_secs(60), ScyllaStore::connect(c)).await;
    match res {
        Ok(Err(StorageError::Unavailable(m))) => {
            assert!(m.contains("127.0.0.1:9"), "{m}")
        }
        Ok(other) => panic!("no cluster must be Unavailable, got {other:?}"),
        Err(_) => panic!("connect did not give up within 60 s"),
    }
    eprintln!("refused after {:?}", started.elapsed());
}
