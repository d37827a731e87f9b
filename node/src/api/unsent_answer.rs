//! Large JSON answers that count against the node's unsent budget.
//!
//! A history page can be megabytes, and it stays in the node's memory until
//! the client reads it (see `parley_actors::unsent`). [`answer`] serializes
//! the page, reserves its bytes for the user and hands it to the connection
//! in a body that gives them back once its last chunk is out (or the
//! connection is dropped). Over the user's share it answers 429
//! `rate_limited`, over the node's 503 `unavailable`, both with
//! `Retry-After`: the answer is dropped at once rather than kept.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;

use parley_actors::unsent::{OverBudget, Reservation};
use parley_protocol::ErrorCode;

use crate::api::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The most of an answer handed to the connection at once: the body keeps
/// its reservation until hyper has taken the last chunk, and hyper takes
/// chunks only as its write buffer drains.
const CHUNK: usize = 64 * 1024;

/// Seconds a refused client is asked to wait before asking again.
const RETRY_AFTER_SECS: u64 = 1;

/// `value` as a JSON answer whose bytes are reserved for `user_id` until
/// the connection has taken them.
pub fn answer<T: Serialize>(state: &AppState, user_id: &str, value: &T) -> ApiResult<Response> {
    let json = serde_json::to_vec(value).map_err(ApiError::internal)?;
    let user: Arc<str> = Arc::from(user_id);
    let reserved = state
        .system
        .unsent()
        .try_reserve(&user, json.len() as u64)
        .map_err(refusal)?;
    let body = ReservedBody {
        rest: Bytes::from(json),
        _reserved: reserved,
    };
    let mut resp = Body::new(body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The contract's error for an answer over the budget.
fn refusal(over: OverBudget) -> ApiError {
    let code = match over {
        OverBudget::User => ErrorCode::RateLimited,
        OverBudget::Node => ErrorCode::Unavailable,
    };
    ApiError {
        code,
        message: over.to_string(),
        retry_after: Some(RETRY_AFTER_SECS),
    }
}

/// A body that holds its bytes' reservation until they are all handed out.
struct ReservedBody {
    rest: Bytes,
    _reserved: Reservation,
}

impl hyper::body::Body for ReservedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.rest.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.rest.len().min(CHUNK);
        Poll::Ready(Some(Ok(Frame::data(self.rest.split_to(n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}
