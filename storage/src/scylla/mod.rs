//! ScyllaDB backend: [`ScyllaStore`], through the `scylla` driver (1.x).
//!
//! The tables of `storage/schema.cql` (created at connect when missing)
//! follow the storage trait's partition-shaped calls one to one: every
//! statement addresses one partition by its full key, so requests are
//! routed token-aware (and shard-aware) straight to a replica.
//!
//! - Prepared statements only ([`statements`]): values are always bound
//!   to markers, never formatted into CQL. The only text built at runtime
//!   is the `CREATE KEYSPACE` statement, from a validated name and
//!   replication map ([`config`], [`schema`]).
//! - Consistency: QUORUM reads and writes by default, SERIAL for Paxos
//!   (their `LOCAL_*` forms on request, for nodes in one datacenter); idempotency per statement (lightweight transactions are
//!   not idempotent, plain upserts are), which decides what the driver may
//!   retry ([`retry`]).
//! - Uniqueness (usernames, direct-room pairs, room ids) with
//!   `IF NOT EXISTS` ([`users`], [`rooms`]).
//! - Messages in `(room, seq >> 14)` buckets; history walks buckets
//!   ([`buckets`]); the group commit is one LWT head claim plus one
//!   single-partition batch per bucket, and it enforces the split-owner
//!   rule ([`commit`] explains the protocol and its cost; [`messages`]
//!   holds its CQL).
//! - Watermarks never fall thanks to write timestamps ([`read_states`]).
//!
//! Modules: `config` (settings), `schema` (the schema file), `statements`
//! and `binds` (statement texts and their values), `exec` (running them),
//! `cqlerr` (error mapping), `retry` (retry policy), `connect` (session
//! and start-up), one module per data area, `commit` (the commit
//! protocol), `buckets` and `commit_plan` (pure planning), `heads` (a
//! small cache), `store_impl` (the trait).

pub mod binds;
pub mod buckets;
pub mod commit;
pub mod commit_plan;
pub mod config;
mod connect;
pub mod cqlerr;
pub mod exec;
pub mod heads;
pub mod messages;
pub mod read_states;
pub mod retry;
pub mod rooms;
pub mod schema;
pub mod statements;
mod store_impl;
pub mod tokens;
pub mod users;

#[cfg(test)]
mod commit_sim;
#[cfg(test)]
mod lint;

use std::fmt;
use std::sync::Arc;

pub use config::{
    parse_consistency, parse_serial_consistency, ConfigError, Replication, ScyllaConfig, Tablets,
    TlsOptions,
};
pub use schema::SCHEMA_VERSION;
pub use scylla::statement::{Consistency, SerialConsistency};

use crate::error::StorageResult;
use exec::Executor;
use heads::HeadCache;

/// How many independent requests one caller keeps in flight: a room's
/// receipt flush raises this many users at a time, and callers that read
/// many partitions get it as `read_parallelism`.
pub(crate) const REQUESTS_IN_FLIGHT: usize = 32;

/// The ScyllaDB store. Cheap to clone (clones share the session).
#[derive(Clone)]
pub struct ScyllaStore {
    x: Executor,
    heads: Arc<HeadCache>,
    keyspace: Arc<str>,
}

impl fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("keyspace", &self.keyspace)
            .finish_non_exhaustive()
    }
}

impl ScyllaStore {
    /// Connects to the cluster, creates the keyspace and tables that are
    /// missing (refusing a keyspace whose schema version is newer than this
    /// build's, with [`StorageError::Schema`]), and prepares every
    /// statement. This is the one constructor, used by the node and by the
    /// conformance test alike.
    ///
    /// [`StorageError::Schema`]: crate::StorageError::Schema
    pub async fn connect(config: ScyllaConfig) -> StorageResult<Self> {
        let x = connect::open(&config).await?;
        Ok(ScyllaStore {
            x,
            heads: Arc::new(HeadCache::default()),
            keyspace: Arc::from(config.keyspace.as_str()),
        })
    }

    /// The keyspace in use.
    pub fn keyspace(&self) -> &str {
        &self.keyspace
    }
}
