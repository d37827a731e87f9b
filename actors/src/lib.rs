//! Parley's actors.
//!
//! - [`session::SessionActor`]: one per WebSocket connection; routes client
//!   requests and runs `sync` replays.
//! - [`room::RoomActor`]: one per active room; assigns seqs, group-commits,
//!   acks, fans out, tracks watermarks and typing, retires when idle.
//! - [`dispatcher::Dispatcher`]: hands events to this node's sessions of given users.
//! - [`presence::Presence`]: online/offline and last-seen.
//! - [`directory::Directory`]: finds or starts the local actor of a room.
//!
//! [`ChatSystem`] starts them and is the handle the node uses. The crate has
//! no HTTP and no SQL: it talks to clients through [`outbound`] queues and to
//! storage through [`parley_storage::Store`].

pub mod budget;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod directory;
pub mod dispatcher;
pub mod error;
pub mod metrics;
pub mod ordering;
pub mod outbound;
pub mod presence;
pub mod presence_queue;
pub mod replay_queue;
pub mod room;
pub mod room_cache;
pub mod session;
pub mod system;
pub mod trace;
pub mod typing_watch;

pub use config::ActorConfig;
pub use error::ChatError;
pub use system::{ChatSystem, Stats};
