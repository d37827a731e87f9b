//! A bound on the request bodies a node holds while they arrive.
//!
//! A body is read whole before it is parsed, and a client can send most of
//! one and stall: the node keeps what came (up to `--max-body-bytes`) until
//! the body deadline. With no account needed (a login body), thousands of
//! such connections held over a gigabyte. So a body larger than
//! [`FREE_BODY_BYTES`] reserves its size (its `Content-Length`, or
//! `--max-body-bytes` when it does not say) before any of it is read,
//! under a share per client address (`--max-incoming-body-bytes-per-ip`)
//! and a limit for the node (`--max-incoming-body-bytes`), and gives it
//! back once it is read: a stalled connection past them holds only its
//! socket's read buffer.
//!
//! Over the address's share the request is 429 `rate_limited`; over the
//! node's, it waits up to 5 s for room (real bodies arrive in
//! moments) and is then 503 `unavailable`; both with `Retry-After`.
//!
//! Bodies up to [`FREE_BODY_BYTES`] (logins, registrations, tokens, most
//! room changes: well under a kilobyte) reserve nothing. What they can
//! hold is bounded by the connection cap like an unfinished request head,
//! and so clients holding the whole budget with stalled large bodies, from
//! many addresses, can delay only other large bodies, never a login.

use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::SizeHint;
use parley_actors::budget::Reservation;

use crate::api::error::ApiError;
use crate::api::reserve::{self, Refusals};
use crate::state::AppState;

/// The largest body that reserves nothing (see the module docs).
pub const FREE_BODY_BYTES: u64 = 4 * 1024;

/// What a client over the body budget is told.
const BODIES: Refusals = Refusals {
    share: "too many request bodies arriving from your address at once",
    node: "the node is receiving too many request bodies, try again",
};

/// The bytes a body may take: what its head says (`Content-Length`, or
/// none at all), or the most a body may be when it is chunked (a stated
/// length over it is refused before this is asked).
pub fn expected_len(hint: &SizeHint, max_body: usize) -> u64 {
    let max = max_body as u64;
    hint.upper().map_or(max, |len| len.min(max))
}

/// Reserves `bytes` for a body arriving from `ip`; `None` when there is
/// nothing to reserve (a body of at most [`FREE_BODY_BYTES`]).
pub async fn reserve(
    state: &AppState,
    ip: IpAddr,
    bytes: u64,
) -> Result<Option<Reservation>, ApiError> {
    if bytes <= FREE_BODY_BYTES {
        return Ok(None);
    }
    let holder: Arc<str> = Arc::from(ip.to_string());
    reserve::reserve(&state.bodies, &holder, bytes, BODIES)
        .await
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reserves_its_stated_length_or_the_most_allowed() {
        assert_eq!(expected_len(&SizeHint::with_exact(120), 1000), 120);
        assert_eq!(expected_len(&SizeHint::with_exact(0), 1000), 0);
        assert_eq!(expected_len(&SizeHint::with_exact(5000), 1000), 1000);
        assert_eq!(expected_len(&SizeHint::new(), 1000), 1000, "chunked");
    }
}
