//! The server's side of the WebSocket opening handshake (RFC 6455, 4.2).
//!
//! axum's `WebSocketUpgrade` does the same, but hands its callback the
//! upgraded connection already inside the WebSocket library. Doing it here
//! lets the gateway put [`crate::message_watch::MessageWatch`] between the
//! socket and the library, where it sees every byte the client sends after
//! the handshake (hyper gives back what it read ahead first).

use axum::extract::FromRequestParts;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;

use crate::api::error::ApiError;

/// Why a request cannot become a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAWebSocket {
    /// Not a GET (axum routes HEAD to GET handlers too).
    #[error("a WebSocket upgrade must be a GET request")]
    Method,
    /// `Connection` does not list `upgrade`.
    #[error("Connection header did not include 'upgrade'")]
    Connection,
    /// `Upgrade` is not `websocket`.
    #[error("`Upgrade` header did not include 'websocket'")]
    Upgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    Version,
    /// No `Sec-WebSocket-Key`.
    #[error("`Sec-WebSocket-Key` header missing")]
    Key,
    /// The connection cannot be taken over (not HTTP/1.1 with upgrades).
    #[error("request is not upgradable")]
    NotUpgradable,
}

/// A request asking to become a WebSocket, checked and ready to accept.
pub struct Handshake {
    /// `Sec-WebSocket-Accept` for the client's key.
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// The upgraded connection, as a tokio socket.
pub type UpgradedIo = TokioIo<Upgraded>;

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = NotAWebSocket;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if parts.method != Method::GET {
            return Err(NotAWebSocket::Method);
        }
        let headers = &parts.headers;
        if !lists(headers, CONNECTION, "upgrade") {
            return Err(NotAWebSocket::Connection);
        }
        if !is(headers, UPGRADE, "websocket") {
            return Err(NotAWebSocket::Upgrade);
        }
        if !is(headers, SEC_WEBSOCKET_VERSION, "13") {
            return Err(NotAWebSocket::Version);
        }
        let key = headers.get(SEC_WEBSOCKET_KEY).ok_or(NotAWebSocket::Key)?;
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let accept = HeaderValue::from_str(&accept).map_err(|_| NotAWebSocket::Key)?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(NotAWebSocket::NotUpgradable)?;
        Ok(Handshake { accept, on_upgrade })
    }
}

impl IntoResponse for NotAWebSocket {
    fn into_response(self) -> Response {
        ApiError::invalid(self.to_string()).into_response()
    }
}

impl Handshake {
    /// Answers 101 Switching Protocols; once the client has it, runs
    /// `serve` with the upgraded connection (never, if the upgrade fails).
    pub fn accept<F, Fut>(self, serve: F) -> Response
    where
        F: FnOnce(UpgradedIo) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => serve(TokioIo::new(upgraded)).await,
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

/// Whether header `name` is `value` (ignoring ASCII case).
fn is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether header `name` lists `token` among its comma-separated values
/// (ignoring ASCII case), as `Connection: keep-alive, Upgrade` does.
fn lists(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn connection_may_list_upgrade_among_others_in_any_case() {
        for v in ["Upgrade", "keep-alive, Upgrade", "UPGRADE ,x"] {
            assert!(
                lists(&headers(&[(CONNECTION, v)]), CONNECTION, "upgrade"),
                "{v}"
            );
        }
        let two = headers(&[(CONNECTION, "keep-alive"), (CONNECTION, "upgrade")]);
        assert!(lists(&two, CONNECTION, "upgrade"));
        for v in ["keep-alive", "upgrades", ""] {
            assert!(
                !lists(&headers(&[(CONNECTION, v)]), CONNECTION, "upgrade"),
                "{v}"
            );
        }
    }

    #[test]
    fn upgrade_must_be_websocket() {
        assert!(is(
            &headers(&[(UPGRADE, "WebSocket")]),
            UPGRADE,
            "websocket"
        ));
        assert!(!is(&headers(&[(UPGRADE, "h2c")]), UPGRADE, "websocket"));
        assert!(!is(&HeaderMap::new(), UPGRADE, "websocket"));
    }
}
