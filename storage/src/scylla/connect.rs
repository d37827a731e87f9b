//! Opening a session: driver settings, TLS, the schema, and preparing
//! every statement.
//!
//! Driver settings: the default load-balancing policy (token-aware and
//! shard-aware: each request goes to a replica of its partition, on the
//! right shard), preferring the configured local datacenter; the
//! configured consistency and serial consistency as the defaults of one
//! execution profile; a client-side request timeout; and
//! [`ParleyRetryPolicy`]. Each prepared statement then gets its own
//! consistency, serial consistency and idempotency from [`Stmt::flags`].

use std::sync::Arc;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::prepared::PreparedStatement;

use super::binds;
use super::config::ScyllaConfig;
use super::cqlerr::{map_execution, map_other, FailureClass};
use super::exec::{Executor, Prepared};
use super::retry::ParleyRetryPolicy;
use super::schema::{self, VersionAction, SCHEMA_CQL, SCHEMA_VERSION};
use super::statements::Stmt;
use crate::error::{StorageError, StorageResult};

/// Connects, applies the schema and prepares every statement.
pub async fn open(config: &ScyllaConfig) -> StorageResult<Executor> {
    let nodes = config
        .validate()
        .map_err(|e| StorageError::Internal(format!("invalid ScyllaDB configuration: {e}")))?;
    let session = Arc::new(build_session(config, &nodes).await?);
    let action = apply_schema(&session, config).await?;
    let prepared = prepare_all(&session, config).await?;
    let x = Executor::new(session, prepared);
    record_version(&x, config, action).await?;
    tracing::info!(
        nodes = ?nodes,
        keyspace = %config.keyspace,
        consistency = ?config.consistency,
        serial_consistency = ?config.serial_consistency,
        schema_version = SCHEMA_VERSION,
        "connected to ScyllaDB"
    );
    Ok(x)
}

async fn build_session(config: &ScyllaConfig, nodes: &[String]) -> StorageResult<Session> {
    let mut lb = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.local_datacenter {
        // Stay in the local datacenter: LOCAL_* levels mean nothing if the
        // coordinator is elsewhere.
        lb = lb.prefer_datacenter(dc.clone()).permit_dc_failover(false);
    }
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency)
        .serial_consistency(Some(config.serial_consistency))
        .request_timeout(Some(config.request_timeout))
        .load_balancing_policy(lb.build())
        .retry_policy(Arc::new(ParleyRetryPolicy))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(nodes)
        .connection_timeout(config.connect_timeout)
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&config.username, &config.password) {
        builder = builder.user(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        builder = tls::apply(builder, tls)?;
    }
    builder.build().await.map_err(|e| {
        StorageError::Unavailable(format!("cannot connect to ScyllaDB at {nodes:?}: {e}"))
    })
}

/// Creates what is missing; refuses a keyspace of a newer schema version
/// (before creating any table). Returns what to do about the version row.
async fn apply_schema(session: &Session, config: &ScyllaConfig) -> StorageResult<VersionAction> {
    let plan = schema::plan(
        SCHEMA_CQL,
        &config.keyspace,
        &config.replication,
        config.tablets,
    )?;
    ddl(session, &plan.keyspace).await?;
    session
        .use_keyspace(config.keyspace.clone(), false)
        .await
        .map_err(|e| {
            StorageError::Schema(format!("cannot use keyspace {}: {e}", config.keyspace))
        })?;
    ddl(session, &plan.version_table).await?;

    let version_get = prepare(session, Stmt::VersionGet, config).await?;
    let found: Option<binds::VersionRow> = session
        .execute_unpaged(&version_get, binds::version_get().values)
        .await
        .map_err(|e| map_execution("VersionGet", &e))?
        .into_rows_result()
        .map_err(|e| map_other("VersionGet", FailureClass::Internal, e))?
        .maybe_first_row()
        .map_err(|e| map_other("VersionGet", FailureClass::Internal, e))?;
    let action = schema::version_action(found.and_then(|(v,)| v), &config.keyspace)?;

    for stmt in &plan.tables {
        ddl(session, stmt).await?;
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|e| StorageError::Unavailable(format!("schema agreement not reached: {e}")))?;
    Ok(action)
}

/// Records [`SCHEMA_VERSION`] (a lightweight transaction, so concurrent
/// start-ups agree); if another node recorded a version first, that one is
/// judged again (a newer one is refused).
async fn record_version(
    x: &Executor,
    config: &ScyllaConfig,
    action: VersionAction,
) -> StorageResult<()> {
    let res = match action {
        VersionAction::UpToDate => return Ok(()),
        VersionAction::Record => x.lwt(&binds::version_insert(SCHEMA_VERSION)).await?,
        VersionAction::Upgrade { from } => {
            x.lwt(&binds::version_update(SCHEMA_VERSION, from)).await?
        }
    };
    if !res.applied {
        schema::version_action(res.int("version"), &config.keyspace)?;
    }
    tracing::info!(keyspace = %config.keyspace, ?action, to = SCHEMA_VERSION,
        "ScyllaDB schema version recorded");
    Ok(())
}

async fn ddl(session: &Session, stmt: &str) -> StorageResult<()> {
    session
        .query_unpaged(stmt.to_owned(), &[])
        .await
        .map(|_| ())
        .map_err(|e| StorageError::Schema(format!("applying schema ({stmt}): {e}")))
}

async fn prepare(
    session: &Session,
    s: Stmt,
    config: &ScyllaConfig,
) -> StorageResult<PreparedStatement> {
    let mut p = session
        .prepare(s.cql())
        .await
        .map_err(|e| StorageError::Schema(format!("preparing {s:?} ({}): {e}", s.cql())))?;
    let flags = s.flags(config.consistency, config.serial_consistency);
    p.set_consistency(flags.consistency);
    p.set_serial_consistency(flags.serial_consistency);
    p.set_is_idempotent(flags.idempotent);
    Ok(p)
}

async fn prepare_all(session: &Session, config: &ScyllaConfig) -> StorageResult<Prepared> {
    let mut out = Vec::with_capacity(Stmt::ALL.len());
    for s in Stmt::ALL {
        out.push(prepare(session, *s, config).await?);
    }
    Prepared::new(out)
}

#[cfg(feature = "scylla-tls")]
mod tls {
    //! TLS with rustls 0.23, trusting only the configured CA file.

    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use scylla::client::session_builder::SessionBuilder;

    use crate::error::{StorageError, StorageResult};
    use crate::scylla::config::TlsOptions;

    /// Adds a rustls client configuration trusting `opts.ca_file`.
    pub fn apply(builder: SessionBuilder, opts: &TlsOptions) -> StorageResult<SessionBuilder> {
        let bad = |e: String| {
            StorageError::Internal(format!("ScyllaDB TLS ({}): {e}", opts.ca_file.display()))
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(&opts.ca_file).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in the CA file".into()));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(builder.tls_context(Some(Arc::new(config))))
    }
}

#[cfg(not(feature = "scylla-tls"))]
mod tls {
    //! Without the `scylla-tls` feature, TLS is refused clearly.

    use scylla::client::session_builder::SessionBuilder;

    use crate::error::{StorageError, StorageResult};
    use crate::scylla::config::TlsOptions;

    /// Always an error: this build has no TLS support.
    pub fn apply(_builder: SessionBuilder, _opts: &TlsOptions) -> StorageResult<SessionBuilder> {
        Err(StorageError::Internal(
            "ScyllaDB TLS was requested but this build has no TLS support; \
             rebuild with `--features parley-storage/scylla-tls`"
                .into(),
        ))
    }
}
