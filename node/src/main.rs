//! `parley-node`: one Parley chat node.
//!
//! Serves the HTTP API, the WebSocket gateway, the web client and the
//! operations endpoints on one address, on top of the actor system and the
//! configured storage. See `docs/operations.md` for every flag.

mod allocator;
mod api;
mod auth;
mod client_ip;
mod cluster;
mod cluster_guard;
mod cluster_tls;
mod config;
mod data_dir_lock;
mod gateway;
mod ip_cap;
mod linger;
mod listener;
mod message_watch;
mod metrics;
mod parse_errors;
mod ratelimit;
mod server;
mod session_cap;
mod state;
mod telemetry;
mod web;
mod ws_frames;
mod ws_handshake;

use std::time::Duration;

fn main() -> anyhow::Result<()> {
    allocator::return_large_blocks();
    let config = config::Config::load()?;
    allocator::trim_every(Duration::from_secs(config.memory_trim_secs))?;
    // Telemetry's exporters run on their own threads, so they are set up
    // (and flushed at the end) outside the async runtime.
    let telemetry = telemetry::init(config.log_format, &config.node_name());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads())
        .build()?;
    let writers = writer_runtime(config.writer_threads)?;
    let result = runtime.block_on(server::run(config, writers.handle().clone()));
    drop(runtime);
    drop(writers);
    telemetry.shutdown();
    result
}

/// The most threads of the blocking pool (tokio's default is 512). Blocking
/// work is the embedded store's calls (a few at a time, see
/// `parley_storage::embedded`) and password hashes (one per CPU at a time);
/// each thread keeps its stack and, past a few, memory of its own in the
/// allocator, and a burst of requests once started hundreds.
fn blocking_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cpus + 16).max(32)
}

/// The runtime of the socket writers, apart from the one that runs the
/// actors and the readers: a message to a big room wakes one writer per
/// member, and on a shared runtime the actors' next steps (the next commit's
/// answer, the sender's ack) would queue behind all of those writes.
/// `threads` 0 means one per CPU.
fn writer_runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("parley-writer");
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder.build()
}
