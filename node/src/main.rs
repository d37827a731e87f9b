//! `parley-node`: one Parley chat node.
//!
//! Serves the HTTP API, the WebSocket gateway, the web client and the
//! operations endpoints on one address, on top of the actor system and the
//! configured storage. See `docs/operations.md` for every flag.

mod api;
mod auth;
mod cluster;
mod config;
mod gateway;
mod metrics;
mod ratelimit;
mod server;
mod state;
mod telemetry;
mod web;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config::Config::load()?;
    telemetry::init(config.log_format);
    server::run(config).await
}
