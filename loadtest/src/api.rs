//! The HTTP API calls the harness needs: register, log in, create rooms,
//! read history. Only the public contract (`parley-protocol` types).

use std::time::Duration;

use parley_protocol::http::{
    CreateRoomRequest, Credentials, MessagePage, RoomInfo, TokenResponse, UserInfo, UsernameRequest,
};
use parley_protocol::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request did not get an answer (connection refused, timeout...).
    #[error("{url}: {source}")]
    Transport {
        /// The URL called.
        url: String,
        /// The underlying error.
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("{url}: HTTP {status} {code}: {message}")]
    Status {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The contract's error code (or `unknown`).
        code: String,
        /// The server's message.
        message: String,
    },
    /// The answer was not the JSON the contract promises.
    #[error("{url}: unexpected answer: {detail}")]
    Body {
        /// The URL called.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

impl ApiError {
    /// The contract's error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How many times a request refused with `Retry-After` is sent again.
const RETRIES: u32 = 10;

/// A client of one node's HTTP API.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Result<Self, ApiError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            // Below the node's idle keep-alive limit (--http-header-timeout-secs,
            // 30 s by default): never reuse a connection the node is closing.
            .pool_idle_timeout(Duration::from_secs(20))
            .build()
            .map_err(|source| ApiError::Transport {
                url: base.to_string(),
                source,
            })?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// Sends a request; a read refused with `Retry-After` (429 or 503: the
    /// node holds too much its clients have not read yet, for one) is sent
    /// again after the time it asks, at most [`RETRIES`] times. Writes are
    /// not: a refused registration is the node's limit, reported as such.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<T, ApiError> {
        let url = format!("{}{}", self.base, path);
        let mut attempt = 0;
        let resp = loop {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|source| ApiError::Transport {
                url: url.clone(),
                source,
            })?;
            let status = resp.status().as_u16();
            let again = (status == 429 || status == 503) && method == reqwest::Method::GET;
            let wait = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            match wait {
                Some(secs) if again && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(secs.clamp(1, 5))).await;
                }
                _ => break resp,
            }
        };
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|source| ApiError::Transport {
            url: url.clone(),
            source,
        })?;
        if status >= 400 {
            let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
                Ok(e) => (e.error.code.as_str().to_string(), e.error.message),
                Err(_) => ("unknown".to_string(), text.chars().take(200).collect()),
            };
            return Err(ApiError::Status {
                url,
                status,
                code,
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| ApiError::Body {
            url,
            detail: e.to_string(),
        })
    }

    /// `GET /ready`: whether the node answers 200.
    pub async fn ready(&self) -> bool {
        let url = format!("{}/ready", self.base);
        matches!(self.http.get(url).timeout(Duration::from_secs(2)).send().await,
            Ok(r) if r.status().is_success())
    }

    /// `GET /metrics`: the node's Prometheus text. A node that does not
    /// answer within 5 s (stopped, or gone) is given up: the run is over
    /// and this is only a record of it.
    pub async fn metrics_text(&self) -> Result<String, ApiError> {
        let url = format!("{}/metrics", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|source| ApiError::Transport {
                url: url.clone(),
                source,
            })?;
        resp.text()
            .await
            .map_err(|source| ApiError::Transport { url, source })
    }

    /// `POST /auth/register`.
    pub async fn register(&self, username: &str, password: &str) -> Result<UserInfo, ApiError> {
        let body = Credentials {
            username: username.into(),
            password: password.into(),
        };
        self.call(
            reqwest::Method::POST,
            "/api/v1/auth/register",
            None,
            Some(&body),
        )
        .await
    }

    /// `POST /auth/login`.
    pub async fn login(&self, username: &str, password: &str) -> Result<TokenResponse, ApiError> {
        let body = Credentials {
            username: username.into(),
            password: password.into(),
        };
        self.call(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(&body),
        )
        .await
    }

    /// `POST /rooms` with these members besides the caller.
    pub async fn create_room(
        &self,
        token: &str,
        name: &str,
        members: Vec<String>,
    ) -> Result<RoomInfo, ApiError> {
        let body = CreateRoomRequest {
            name: name.into(),
            members,
        };
        self.call(
            reqwest::Method::POST,
            "/api/v1/rooms",
            Some(token),
            Some(&body),
        )
        .await
    }

    /// `POST /rooms/{room_id}/members`.
    pub async fn add_member(
        &self,
        token: &str,
        room_id: &str,
        username: &str,
    ) -> Result<RoomInfo, ApiError> {
        let body = UsernameRequest {
            username: username.into(),
        };
        self.call(
            reqwest::Method::POST,
            &format!("/api/v1/rooms/{room_id}/members"),
            Some(token),
            Some(&body),
        )
        .await
    }

    /// `POST /rooms/direct`.
    pub async fn direct_room(&self, token: &str, username: &str) -> Result<RoomInfo, ApiError> {
        let body = UsernameRequest {
            username: username.into(),
        };
        self.call(
            reqwest::Method::POST,
            "/api/v1/rooms/direct",
            Some(token),
            Some(&body),
        )
        .await
    }

    /// `GET /rooms/{room_id}/messages?after_seq=&limit=`.
    pub async fn messages_after(
        &self,
        token: &str,
        room_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<MessagePage, ApiError> {
        self.call::<(), _>(
            reqwest::Method::GET,
            &format!("/api/v1/rooms/{room_id}/messages?after_seq={after_seq}&limit={limit}"),
            Some(token),
            None,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers its first `refusals` requests with `status`
    /// and `Retry-After: 1`, then an empty history page; counts requests.
    async fn server(status: &'static str, refusals: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let (head, body) = if n < refusals {
                    (
                        status,
                        r#"{"error":{"code":"rate_limited","message":"later"}}"#,
                    )
                } else {
                    ("200 OK", r#"{"messages":[],"has_more":false}"#)
                };
                let answer = format!(
                    "HTTP/1.1 {head}\r\nretry-after: 1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            }
        });
        (base, seen)
    }

    #[tokio::test]
    async fn a_read_refused_with_retry_after_is_asked_again() {
        for status in ["429 Too Many Requests", "503 Service Unavailable"] {
            let (base, seen) = server(status, 2).await;
            let api = Api::new(&base).unwrap();
            let page = api.messages_after("t", "r", 0, 200).await.unwrap();
            assert!(page.messages.is_empty());
            assert_eq!(seen.load(Ordering::SeqCst), 3, "{status}");
        }
    }

    #[tokio::test]
    async fn a_write_refused_is_reported_not_repeated() {
        let (base, seen) = server("429 Too Many Requests", 1).await;
        let api = Api::new(&base).unwrap();
        let err = api.register("someone", "a password").await.unwrap_err();
        assert_eq!(err.code(), Some("rate_limited"));
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }
}
