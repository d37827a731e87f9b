//! hyper's own answers to requests it cannot parse, given the contract's
//! JSON error body.
//!
//! hyper answers some requests itself, before the router sees them: a
//! request head it cannot parse (400), a head over its size limit (431) and a
//! URI over 64 KiB (414). Those answers have an empty body, and the contract
//! wants every 4xx to carry `{"error":{"code","message"}}`. hyper has no hook
//! for them, so [`JsonParseErrors`] sits between hyper and the socket and
//! recognises the exact head hyper writes for them: one of those three
//! statuses, `connection: close`, `content-length: 0`, and nothing after the
//! head. It writes the same answer with a JSON body instead. hyper closes
//! the connection right after such an answer, so nothing follows it.
//!
//! The router's own answers always have a body (every 4xx is built with
//! one), so they never match; neither can a WebSocket frame, which never
//! starts with `HTTP/`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use parley_protocol::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The statuses hyper answers parse errors with, and what the body says.
const ANSWERS: [(&[u8], ErrorCode, &str); 3] = [
    (
        b"HTTP/1.1 400 ",
        ErrorCode::InvalidRequest,
        "malformed HTTP request",
    ),
    (
        b"HTTP/1.1 414 ",
        ErrorCode::TooLarge,
        "request URI too long (at most 65534 bytes)",
    ),
    (
        b"HTTP/1.1 431 ",
        ErrorCode::TooLarge,
        "request head too large (at most 100 header fields and 16 KiB)",
    ),
];

/// The header lines that mark one of hyper's own parse-error answers.
const BARE: [&[u8]; 2] = [b"\r\nconnection: close\r\n", b"\r\ncontent-length: 0\r\n"];

/// The same answer as `head` with the contract's JSON body, if `head` is
/// exactly one of hyper's bodiless parse-error answers; `None` otherwise.
pub fn with_json_body(head: &[u8]) -> Option<Vec<u8>> {
    let (status, code, message) = ANSWERS.iter().find(|(s, _, _)| head.starts_with(s))?;
    if !head.ends_with(b"\r\n\r\n") || !BARE.iter().all(|line| contains(head, line)) {
        return None;
    }
    let body = serde_json::to_vec(&ErrorBody::new(*code, *message)).ok()?;
    // Keep hyper's status line and its other lines (the date), swap the
    // length for the body's and add the content type.
    let rest = &head[status.len()..head.len() - 2];
    let rest = replace(
        rest,
        BARE[1],
        format!("\r\ncontent-length: {}\r\n", body.len()).as_bytes(),
    );
    let mut out = Vec::with_capacity(head.len() + body.len() + 40);
    out.extend_from_slice(status);
    out.extend_from_slice(&rest);
    out.extend_from_slice(b"content-type: application/json\r\n\r\n");
    out.extend_from_slice(&body);
    Some(out)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    match haystack.windows(from.len()).position(|w| w == from) {
        Some(at) => [&haystack[..at], to, &haystack[at + from.len()..]].concat(),
        None => haystack.to_vec(),
    }
}

/// A connection's socket that puts the JSON body into hyper's own
/// parse-error answers (see the module docs); everything else passes through.
#[derive(Debug)]
pub struct JsonParseErrors<S> {
    inner: S,
    /// A rewritten answer not yet fully written, and how much of it was.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonParseErrors<S> {
    /// Wraps a connection's socket.
    pub fn new(inner: S) -> Self {
        JsonParseErrors {
            inner,
            pending: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, done)) = &mut self.pending {
            if *done == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *done += n;
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` as a rewritten answer if it is one of hyper's bare ones.
    fn poll_rewrite(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        let answer = with_json_body(buf)?;
        self.pending = Some((answer, 0));
        // hyper counts its head as written; the rest goes out on the next
        // write, flush or shutdown.
        Some(match self.poll_pending(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(done) = this.poll_rewrite(cx, buf) {
            return done;
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        // hyper writes a bodiless answer as one slice (empty ones aside).
        let mut full = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (full.next(), full.next()) {
            if let Some(done) = this.poll_rewrite(cx, only) {
                return done;
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 23:40:31 GMT\r\n\r\n";

    fn split(answer: &[u8]) -> (String, ErrorBody) {
        let text = String::from_utf8(answer.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn a_bare_parse_error_answer_gets_the_json_body() {
        let answer = with_json_body(HYPER_431).unwrap();
        let (head, body) = split(&answer);
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nconnection: close\r\n"));
        assert!(head.contains("\r\ndate: Mon, 23 Nov 2026 23:40:31 GMT"));
        assert!(head.contains("\r\ncontent-type: application/json"));
        let json = serde_json::to_vec(&body).unwrap();
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", json.len())));
        assert!(!head.contains("content-length: 0"));
        assert_eq!(body.error.code, ErrorCode::TooLarge);
    }

    #[test]
    fn each_status_gets_its_code() {
        for (status, code) in [
            ("400 Bad Request", ErrorCode::InvalidRequest),
            ("414 URI Too Long", ErrorCode::TooLarge),
        ] {
            let head = format!(
                "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n"
            );
            let (_, body) = split(&with_json_body(head.as_bytes()).unwrap());
            assert_eq!(body.error.code, code, "{status}");
        }
    }

    #[test]
    fn other_answers_pass_unchanged() {
        let cases: [&[u8]; 5] = [
            // The router's own 400: it has a body.
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a\":\"b\"}",
            // A bodiless answer that keeps the connection.
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            // A WebSocket text frame.
            b"\x81\x05hello",
        ];
        for case in cases {
            assert!(
                with_json_body(case).is_none(),
                "{:?}",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[tokio::test]
    async fn the_socket_gets_the_rewritten_answer_and_other_bytes_as_they_are() {
        let (mut near, mut far) = tokio::io::duplex(16);
        let writer = tokio::spawn(async move {
            let mut w = JsonParseErrors::new(&mut near);
            w.write_all(b"\x81\x02hi").await.unwrap();
            // hyper counts its whole head as written at once.
            assert_eq!(w.write(HYPER_431).await.unwrap(), HYPER_431.len());
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut far, &mut got)
            .await
            .unwrap();
        writer.await.unwrap();
        let expected = [
            b"\x81\x02hi".as_slice(),
            &with_json_body(HYPER_431).unwrap(),
        ]
        .concat();
        assert_eq!(got, expected);
    }
}
