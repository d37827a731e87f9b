//! Accepting and serving HTTP connections.
//!
//! This is `axum::serve` with three protections it lacks:
//! - **a cap on open connections** (`--max-connections`). Every connection
//!   holds a file descriptor; a flood of them (or clients that never leave)
//!   would otherwise take the descriptors the node needs for its store, its
//!   cluster links and its logs. At the cap the node stops accepting: new
//!   connections wait in the listen backlog until one closes. The permit of
//!   a connection lives in its socket, so a WebSocket keeps its place after
//!   the upgrade and frees it when the socket is closed.
//! - **a cap per client address** (`--max-connections-per-ip`, see
//!   [`crate::ip_cap`]): one address cannot take every place under the
//!   first cap. A connection over it is answered 429 and closed at once.
//! - **a request-head timeout** (`--http-header-timeout-secs`). A
//!   connection that has not sent a complete request head within it is
//!   closed: slow-header (slowloris) clients, and keep-alive connections
//!   left idle. Upgraded WebSockets are no longer HTTP and are not subject
//!   to it. The body then has as long again ([`BodyDeadline`]).
//!
//! hyper's own answers to requests it cannot parse get the contract's JSON
//! error body on the way out ([`JsonParseErrors`]), and a closed socket
//! lingers a moment so its last frames reach a client that is still
//! sending ([`linger::close`]; it no longer counts under the cap then).
//!
//! It also turns on TCP keepalive (`--tcp-keepalive-secs`): a client that
//! vanished without closing (a laptop lid shut, a phone out of coverage)
//! leaves a socket that never reads EOF, and its user would show online
//! forever. The kernel probes a silent connection and fails it when the
//! probes go unanswered; the session then ends like any other.
//!
//! Shutdown works as with axum: once `shutdown` completes, the node stops
//! accepting, asks every connection to finish its request in flight and
//! close, and waits for them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::ip_cap::{Full, IpSlot, PerIpCap};
use crate::linger;
use crate::metrics::{inc, Metrics};
use crate::parse_errors::JsonParseErrors;

/// Descriptors kept back from client connections when the cap is derived
/// from the open-file limit: the store's files, cluster and ScyllaDB
/// connections, logs and exporters.
pub const FD_RESERVE: u64 = 512;

/// The fewest connections a derived cap allows.
const MIN_DERIVED_CAP: u64 = 64;

/// How long a request's body may take to arrive once its head has: the
/// request-head timeout again. Put in every request's extensions for the
/// body extractors (`api::extract`), which answer `invalid_request` past it.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Duration);

/// The most of a request head a connection buffers (hyper's default is
/// about 400 KiB). Every connection still sending its head holds this
/// much until the head timeout: at 400 KiB, a few thousand unfinished
/// heads held gigabytes. Real heads are a few KiB (a bearer token is well
/// under 1 KiB); a larger one is answered 431.
pub const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Unanswered keepalive probes after which a client connection fails.
const KEEPALIVE_PROBES: u32 = 3;

/// How the listener protects the node.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections one client address holds open at once.
    pub per_ip: Arc<PerIpCap>,
    /// Longest wait for a complete request head (also the keep-alive idle limit).
    pub header_timeout: Duration,
    /// Silence after which a client connection is probed (TCP keepalive).
    pub keepalive: Duration,
}

/// TCP keepalive for a client socket: probed after `idle` of silence, then
/// every `idle / 6` (at least 1 s); failed after [`KEEPALIVE_PROBES`]
/// unanswered probes, or when sent data stays unacknowledged as long (TCP
/// user timeout; keepalive only probes connections with nothing in flight).
fn set_keepalive(stream: &TcpStream, idle: Duration) -> io::Result<()> {
    let interval = (idle / 6).max(Duration::from_secs(1));
    let params = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(interval)
        .with_retries(KEEPALIVE_PROBES);
    let socket = socket2::SockRef::from(stream);
    socket.set_tcp_keepalive(&params)?;
    socket.set_tcp_user_timeout(Some(idle + interval * KEEPALIVE_PROBES))
}

/// The connection cap: `configured` when non-zero, otherwise the open-file
/// limit less [`FD_RESERVE`] (at least [`MIN_DERIVED_CAP`]).
pub fn connection_cap(configured: usize, open_file_limit: u64) -> usize {
    if configured > 0 {
        return configured;
    }
    let derived = open_file_limit
        .saturating_sub(FD_RESERVE)
        .max(MIN_DERIVED_CAP);
    usize::try_from(derived).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard one (as servers commonly do:
/// the soft default of 1,024 would cap a chat node at a few hundred
/// clients) and returns the limit in force.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Serves `router` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    // Connections watch `stop_rx` for the shutdown and hold `open_rx`
    // clones until they end, so `open_tx.closed()` is "all have ended".
    let (stop_tx, stop_rx) = watch::channel(false);
    let (open_tx, open_rx) = watch::channel(());
    let mut last_warning = None;
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => break,
            next = accept(&listener, &permits, &metrics, &mut last_warning) => next,
        };
        let (stream, permit, remote) = next;
        let slot = match options.per_ip.take(remote.ip()) {
            Ok(slot) => slot,
            Err(Full) => {
                inc(&metrics.connections_refused_per_ip);
                drop(permit);
                tokio::spawn(refuse(stream));
                continue;
            }
        };
        // Chat frames are small and must leave at once: without TCP_NODELAY a
        // frame written while the previous one is unacknowledged waits for the
        // peer's delayed ACK (up to 40 ms on Linux), which is what a sender's
        // `sent` ack hit whenever a `message` had just gone out on its socket.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        if let Err(e) = set_keepalive(&stream, options.keepalive) {
            tracing::debug!(error = %e, "could not set TCP keepalive");
        }
        let io = Permitted::new(stream, permit, slot, metrics.clone());
        tokio::spawn(connection(
            io,
            remote,
            router.clone(),
            options.header_timeout,
            stop_rx.clone(),
            open_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_rx);
    // Bounded: a client that stopped halfway through a request head or body
    // would otherwise hold the exit for the whole header timeout, past the
    // grace period of container runtimes (10-15 s).
    if tokio::time::timeout(SHUTDOWN_GRACE, open_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            open = open_tx.receiver_count(),
            "connections still open {SHUTDOWN_GRACE:?} after the shutdown began; closing them"
        );
    }
}

/// Answers a connection over its address's cap with 429 and closes it.
async fn refuse(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    let answer = crate::ip_cap::refusal();
    // A client that reads nothing does not keep this task: the answer fits
    // the socket's buffer, and the write is given a moment at most.
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
    linger::close(stream);
}

/// Longest a shutdown waits for open HTTP connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often reaching the cap is logged at most.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Waits for a free place, then for a connection.
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    metrics: &Metrics,
    last_warning: &mut Option<tokio::time::Instant>,
) -> (TcpStream, OwnedSemaphorePermit, SocketAddr) {
    let permit = match permits.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            inc(&metrics.connections_limited);
            if last_warning.is_none_or(|t| t.elapsed() >= CAP_WARNING_EVERY) {
                *last_warning = Some(tokio::time::Instant::now());
                tracing::warn!(
                    "connection limit reached (--max-connections); new connections wait until one closes"
                );
            }
            match permits.clone().acquire_owned().await {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_) => std::future::pending().await,
            }
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => return (stream, permit, remote),
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Errors that concern one connection only (the peer gave up), not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection with HTTP/1.1 (upgrades included).
async fn connection(
    io: Permitted,
    remote: SocketAddr,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(remote));
        req.extensions_mut().insert(BodyDeadline(header_timeout));
        let mut router = router.clone();
        async move { router.call(req).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(JsonParseErrors::new(io)), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A client socket that holds its place under the connection cap until it
/// is dropped (after the upgrade, that is when the WebSocket closes).
struct Permitted {
    /// `Some` until dropped, when it goes to [`linger::close`].
    stream: Option<TcpStream>,
    _permit: OwnedSemaphorePermit,
    /// Its place under its address's cap, when capped.
    _slot: Option<IpSlot>,
    metrics: Arc<Metrics>,
}

impl Permitted {
    fn new(
        stream: TcpStream,
        permit: OwnedSemaphorePermit,
        slot: Option<IpSlot>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.connections_open.fetch_add(1, Ordering::Relaxed);
        Permitted {
            stream: Some(stream),
            _permit: permit,
            _slot: slot,
            metrics,
        }
    }
}

impl Permitted {
    fn stream(&mut self) -> io::Result<Pin<&mut TcpStream>> {
        self.stream
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))
    }
}

impl Drop for Permitted {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(stream) = self.stream.take() {
            linger::close(stream);
        }
    }
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_cap_is_kept() {
        assert_eq!(connection_cap(10, 20_000), 10);
    }

    #[test]
    fn a_derived_cap_leaves_descriptors_for_the_node() {
        assert_eq!(connection_cap(0, 20_000), 19_488);
        assert_eq!(connection_cap(0, 1_024), 512);
        // A tiny limit still lets some clients in.
        assert_eq!(connection_cap(0, 100), 64);
    }
}
