//! Opening WebSocket connections to nodes, optionally from a chosen source
//! address, with small buffers sized for chat frames.
//!
//! One source IP can hold at most one connection per local port to a given
//! node (about 28,000 with Linux's default ephemeral range), so beyond a few
//! tens of thousands of connections the harness binds each socket to one of
//! 127.0.0.2, 127.0.0.3, ... before connecting (see [`SourceAddrs`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

/// A connected WebSocket.
pub type Ws = WebSocketStream<TcpStream>;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The node address is not `http://host:port` (or `ws://`).
    #[error("bad node address {0}: {1}")]
    BadAddress(String, &'static str),
    /// Socket creation, binding or TCP connect failed.
    #[error("tcp: {0}")]
    Tcp(#[from] std::io::Error),
    /// The WebSocket upgrade failed (e.g. HTTP 401 for a bad token).
    #[error("upgrade: {0}")]
    Upgrade(#[from] tokio_tungstenite::tungstenite::Error),
    /// The attempt took too long.
    #[error("timed out")]
    Timeout,
}

impl ConnectError {
    /// A short code for error counters.
    pub fn code(&self) -> String {
        match self {
            ConnectError::BadAddress(..) => "connect_bad_address".into(),
            ConnectError::Tcp(e) => format!("connect_tcp_{:?}", e.kind()).to_lowercase(),
            ConnectError::Upgrade(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                format!("connect_http_{}", r.status().as_u16())
            }
            ConnectError::Upgrade(_) => "connect_upgrade".into(),
            ConnectError::Timeout => "connect_timeout".into(),
        }
    }
}

/// A node the harness talks to.
#[derive(Debug, Clone)]
pub struct NodeAddr {
    /// `http://host:port` as given.
    pub http: String,
    /// `host:port`.
    pub authority: String,
    /// Resolved socket address.
    pub addr: SocketAddr,
}

impl NodeAddr {
    /// Parses and resolves `http://host:port`.
    pub async fn resolve(url: &str) -> Result<Self, ConnectError> {
        let trimmed = url.trim().trim_end_matches('/');
        let bad = |why| ConnectError::BadAddress(url.to_string(), why);
        // The scheme is case-insensitive (RFC 3986).
        let scheme_end = trimmed.find("://").map_or(0, |i| i + 3);
        let scheme = trimmed[..scheme_end].to_ascii_lowercase();
        if scheme != "http://" && scheme != "ws://" {
            return Err(bad(
                "give http://host:port (the harness speaks plain HTTP and WebSocket; no TLS)",
            ));
        }
        let authority = &trimmed[scheme_end..];
        if authority.is_empty() {
            return Err(bad("no host:port"));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(bad("give the node's base URL, without a path or query"));
        }
        if authority
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(bad("give a port: http://host:port"));
        }
        let addr = tokio::net::lookup_host(authority)
            .await?
            .next()
            .ok_or_else(|| bad("the host name has no address"))?;
        Ok(NodeAddr {
            http: format!("http://{authority}"),
            authority: authority.to_string(),
            addr,
        })
    }
}

/// Chooses the source address of each connection.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddrs {
    /// Connections per source address; 0 lets the kernel choose (no binding).
    pub per_addr: usize,
}

impl SourceAddrs {
    /// Spreads `total` connections when there are more than `threshold`.
    pub fn for_total(total: usize, threshold: usize, per_addr: usize) -> Self {
        SourceAddrs {
            per_addr: if total > threshold {
                per_addr.max(1)
            } else {
                0
            },
        }
    }

    /// The source address of connection number `i` toward `node`: 127.0.0.2,
    /// 127.0.0.3, ... in blocks of `per_addr` (loopback nodes only).
    pub fn source_for(&self, i: usize, node: &SocketAddr) -> Option<IpAddr> {
        if self.per_addr == 0 || !node.ip().is_loopback() || !node.is_ipv4() {
            return None;
        }
        let n = 2 + i / self.per_addr;
        // 127.0.0.2 .. 127.255.255.254
        let n = (n % 0x00ff_fffe).max(2) as u32;
        Some(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n)))
    }
}

/// Opens a WebSocket to `node`'s `/ws` with `token`, from `source` if given.
pub async fn connect(
    node: &NodeAddr,
    token: &str,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<Ws, ConnectError> {
    tokio::time::timeout(timeout, connect_inner(node, token, source))
        .await
        .map_err(|_| ConnectError::Timeout)?
}

async fn connect_inner(
    node: &NodeAddr,
    token: &str,
    source: Option<IpAddr>,
) -> Result<Ws, ConnectError> {
    let socket = if node.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(node.addr).await?;
    stream.set_nodelay(true)?;
    let request = format!("ws://{}/ws?token={token}", node.authority).into_client_request()?;
    // tungstenite zero-fills up to `read_buffer_size` bytes before every read
    // (would-block ones included): keep it small, chat frames are small.
    let config = WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(Some(1024 * 1024))
        .max_frame_size(Some(1024 * 1024));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_sources_in_blocks() {
        let node: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let s = SourceAddrs::for_total(100, 50, 20);
        assert_eq!(s.source_for(0, &node), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(s.source_for(19, &node), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(s.source_for(20, &node), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(
            s.source_for(300 * 20, &node),
            Some("127.0.1.46".parse().unwrap())
        );
        assert_eq!(
            SourceAddrs::for_total(10, 50, 20).source_for(0, &node),
            None
        );
        let remote: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(s.source_for(0, &remote), None);
    }

    #[tokio::test]
    async fn parses_node_addresses() {
        let n = NodeAddr::resolve("http://127.0.0.1:9/").await.unwrap();
        assert_eq!(n.authority, "127.0.0.1:9");
        assert!(NodeAddr::resolve("127.0.0.1:9").await.is_err());
        assert!(NodeAddr::resolve("http://127.0.0.1:9/x").await.is_err());
        let n = NodeAddr::resolve("HTTP://127.0.0.1:9").await.unwrap();
        assert_eq!(n.http, "http://127.0.0.1:9");
        for (url, why) in [
            ("http://127.0.0.1", "give a port"),
            ("http://127.0.0.1:9?x=1", "without a path or query"),
            ("https://127.0.0.1:9", "no TLS"),
        ] {
            let e = NodeAddr::resolve(url).await.unwrap_err().to_string();
            assert!(e.contains(why), "{url}: {e}");
        }
    }
}
