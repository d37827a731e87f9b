//! Large JSON answers that count against the node's unsent budget.
//!
//! A history page or a room list can be megabytes, and it stays in the
//! node's memory until the client reads it (see `parley_actors::budget`).
//! Its bytes are reserved for the user before the answer is built (an
//! upper bound, settled to the real size once built), or as it is built
//! (a room list, room by room), and handed to the connection in a body
//! that gives them back once its last chunk is out (or the connection is
//! dropped). So a request refused for the budget has not built its answer
//! first. Over the user's share the answer is 429 `rate_limited`; over the
//! node's, a request waits up to 5 s for room (answers being
//! built settle within moments) and is then 503 `unavailable`; both with
//! `Retry-After`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;

use parley_actors::budget::Reservation;

use crate::api::error::{ApiError, ApiResult};
use crate::api::reserve::{self, Refusals};
use crate::state::AppState;

/// The most of an answer handed to the connection at once: the body keeps
/// its reservation until hyper has taken the last chunk, and hyper takes
/// chunks only as its write buffer drains.
const CHUNK: usize = 64 * 1024;

/// What a client over the unsent budget is told.
pub const UNREAD: Refusals = Refusals {
    share: "too much unread: read earlier answers first",
    node: "the node is holding too many unread answers, try again",
};

/// Reserves `bytes` for an answer to `user_id` that is about to be built.
pub async fn reserve(state: &AppState, user_id: &str, bytes: u64) -> ApiResult<Reservation> {
    reserve::reserve(state.system.unsent(), &Arc::from(user_id), bytes, UNREAD).await
}

/// `value` as a JSON answer whose bytes are reserved for `user_id` until
/// the connection has taken them (for answers small enough to build first).
pub async fn answer<T: Serialize>(
    state: &AppState,
    user_id: &str,
    value: &T,
) -> ApiResult<Response> {
    let json = serde_json::to_vec(value).map_err(ApiError::internal)?;
    let reserved = reserve(state, user_id, json.len() as u64).await?;
    Ok(reserved_answer(reserved, vec![Bytes::from(json)]))
}

/// A JSON answer of `parts` in order, holding `reserved` (settled to their
/// size) until the connection has taken them.
pub fn reserved_answer(mut reserved: Reservation, parts: Vec<Bytes>) -> Response {
    let len: usize = parts.iter().map(Bytes::len).sum();
    reserved.settle(len as u64);
    let body = ReservedBody {
        parts: parts.into(),
        len,
        _reserved: reserved,
    };
    let mut resp = Body::new(body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A body that holds its bytes' reservation until they are all handed out.
struct ReservedBody {
    parts: VecDeque<Bytes>,
    /// Bytes left in `parts`.
    len: usize,
    _reserved: Reservation,
}

impl hyper::body::Body for ReservedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(front) = self.parts.front_mut() else {
            return Poll::Ready(None);
        };
        let chunk = if front.len() > CHUNK {
            front.split_to(CHUNK)
        } else {
            let whole = std::mem::take(front);
            self.parts.pop_front();
            whole
        };
        self.len -= chunk.len();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.len == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len as u64)
    }
}
