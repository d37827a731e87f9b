//! Parley's storage layer.
//!
//! [`Store`] is the one trait the rest of the system uses. It is shaped for
//! ScyllaDB's data model (every call touches one partition) and implemented
//! by the embedded SQLite backend ([`embedded::EmbeddedStore`], the default)
//! and the ScyllaDB backend ([`scylla::ScyllaStore`]).
//! [`conformance`] holds the test suite every backend must pass.

pub mod conformance;
pub mod embedded;
pub mod error;
pub mod model;
pub mod private_files;
pub mod scylla;
pub mod store;

pub use error::{StorageError, StorageResult};
pub use model::*;
pub use store::Store;
