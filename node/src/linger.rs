//! A lingering close for client sockets.
//!
//! When a node closes a WebSocket on its own (a flood, an oversized frame,
//! an expired token) the client has often sent more that the node never
//! read, or goes on sending for a moment. A TCP socket closed with input
//! unread, or that receives input after it was closed, is answered with a
//! reset; the client's next write then fails, and most client libraries
//! stop there without reading the close frame that was waiting for them
//! (they report 1006, no code). So, as HTTP servers do, a client socket is
//! not simply dropped: [`close`] hands it to a task that sends
//! FIN after everything written, then reads and drops input until the
//! client closes its side, for at most [`LINGER_FOR`] and [`LINGER_BYTES`].
//! At most [`LINGERING_AT_ONCE`] sockets linger at a time; past that a
//! socket is closed at once, as before.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a closed socket is read from at most.
pub const LINGER_FOR: Duration = Duration::from_secs(2);

/// How much input a closed socket is read and dropped at most: the rest
/// of a frame far over the size limit, or a flood's backlog.
pub const LINGER_BYTES: usize = 8 * 1024 * 1024;

/// How many sockets linger at once at most. Each holds a descriptor outside
/// `--max-connections`, so this stays well inside the 512 the default cap
/// keeps back for the node itself.
pub const LINGERING_AT_ONCE: usize = 256;

/// Sockets lingering now.
static LINGERING: AtomicUsize = AtomicUsize::new(0);

/// Closes a client socket the node is done with: hands it to a lingering
/// task (see the module doc), or closes it at once when
/// [`LINGERING_AT_ONCE`] sockets already linger or no runtime is running.
pub fn close(stream: TcpStream) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if LINGERING.fetch_add(1, Ordering::Relaxed) >= LINGERING_AT_ONCE {
        LINGERING.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    runtime.spawn(async move {
        let _ = tokio::time::timeout(LINGER_FOR, linger(stream)).await;
        LINGERING.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Sends FIN, then reads and drops input until the peer closes its side,
/// fails, or has sent [`LINGER_BYTES`]. Returns how much it dropped.
async fn linger(mut stream: TcpStream) -> usize {
    // Already shut down for writing after a WebSocket close: that error
    // changes nothing here.
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 16 * 1024];
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n,
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (client.unwrap(), accepted.unwrap().0)
    }

    /// What the server wrote before dropping its socket reaches a client
    /// that had sent input the server never read and goes on writing
    /// after the drop; the client then sees a clean end of stream.
    #[tokio::test]
    async fn a_dropped_socket_with_unread_input_still_delivers_what_it_wrote() {
        let (mut client, mut server) = pair().await;
        client.write_all(&[b'x'; 64 * 1024]).await.unwrap();
        server.write_all(b"goodbye").await.unwrap();
        close(server);
        for _ in 0..20 {
            client.write_all(&[b'y'; 4096]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"goodbye");
    }

    /// Lingering ends when the peer closes its side, and stops reading
    /// after [`LINGER_BYTES`] from a peer that never stops.
    #[tokio::test]
    async fn lingering_ends_at_the_peers_close_or_the_byte_budget() {
        let (mut client, server) = pair().await;
        client.write_all(b"late input").await.unwrap();
        client.shutdown().await.unwrap();
        assert_eq!(linger(server).await, b"late input".len());

        let (mut client, server) = pair().await;
        let writer = tokio::spawn(async move {
            let chunk = vec![b'z'; 64 * 1024];
            while client.write_all(&chunk).await.is_ok() {}
        });
        let dropped = linger(server).await;
        assert!(dropped >= LINGER_BYTES, "{dropped}");
        assert!(dropped < LINGER_BYTES + 16 * 1024, "{dropped}");
        writer.await.unwrap();
    }
}
