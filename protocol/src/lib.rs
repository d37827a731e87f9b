//! Parley's wire protocol.
//!
//! Everything a client, the web client, the load-test harness or another node
//! sees on the wire is defined here: the JSON bodies of the HTTP API, the
//! WebSocket frames in both directions, the error codes of the contract, the
//! validation rules for user input, and the binary codec used between nodes.
//! The crate has no I/O; it only describes and checks data.

pub mod codec;
pub mod error;
pub mod http;
pub mod ids;
pub mod time;
pub mod validate;
pub mod ws;

pub use error::{ErrorBody, ErrorCode, ErrorDetail};
