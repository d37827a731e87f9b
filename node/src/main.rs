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

fn main() -> anyhow::Result<()> {
    let config = config::Config::load()?;
    // Telemetry's exporters run on their own threads, so they are set up
    // (and flushed at the end) outside the async runtime.
    let telemetry = telemetry::init(config.log_format, &config.node_name());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(server::run(config));
    drop(runtime);
    telemetry.shutdown();
    result
}
