//! Reserving bytes in a [`ByteBudget`] for a request, or refusing it the
//! contract's way: over the holder's share at once with 429
//! `rate_limited`; over the node's limit after waiting up to [`NODE_WAIT`]
//! for room (what holds it is usually let go within moments) with 503
//! `unavailable`; both with `Retry-After`. Shared by the unsent-answer
//! budget (per user) and the incoming-body budget (per client address).

use std::sync::Arc;
use std::time::Duration;

use parley_actors::budget::{ByteBudget, OverBudget, Reservation};
use parley_protocol::ErrorCode;

use crate::api::error::ApiError;

/// The longest a request waits for the node's limit to have room.
const NODE_WAIT: Duration = Duration::from_secs(5);

/// Seconds a refused client is asked to wait before asking again.
const RETRY_AFTER_SECS: u64 = 1;

/// What a refused client is told, for each limit.
#[derive(Debug, Clone, Copy)]
pub struct Refusals {
    /// Over the holder's share.
    pub share: &'static str,
    /// Over the node's limit.
    pub node: &'static str,
}

/// Reserves `bytes` for `holder` in `budget`, or the refusal (see the
/// module docs).
pub async fn reserve(
    budget: &Arc<ByteBudget>,
    holder: &Arc<str>,
    bytes: u64,
    say: Refusals,
) -> Result<Reservation, ApiError> {
    match budget.try_reserve(holder, bytes) {
        Ok(r) => Ok(r),
        Err(OverBudget::Share) => Err(refusal(OverBudget::Share, say)),
        Err(OverBudget::Node) => tokio::time::timeout(NODE_WAIT, budget.reserve(holder, bytes))
            .await
            .map_err(|_| refusal(OverBudget::Node, say)),
    }
}

/// The contract's error for a request over `over`.
pub fn refusal(over: OverBudget, say: Refusals) -> ApiError {
    let (code, message) = match over {
        OverBudget::Share => (ErrorCode::RateLimited, say.share),
        OverBudget::Node => (ErrorCode::Unavailable, say.node),
    };
    ApiError {
        code,
        message: message.to_string(),
        retry_after: Some(RETRY_AFTER_SECS),
    }
}
