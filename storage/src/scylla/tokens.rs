//! Refresh tokens (hashed), with a TTL.
//!
//! Both writes are lightweight transactions so that they are ordered by
//! Paxos: `put` is `INSERT ... IF NOT EXISTS USING TTL`, `take` reads the
//! row and deletes it with `IF user_id = ? AND expires_at = ?`. Of several
//! concurrent takes exactly one sees `[applied]`, and only that one returns
//! the token: rotation cannot hand one token out twice. Cost: one read and
//! one LWT per refresh.

use std::time::{SystemTime, UNIX_EPOCH};

use super::binds;
use super::exec::Executor;
use crate::error::{StorageError, StorageResult};
use crate::model::RefreshTokenRecord;

/// How long a token row outlives its expiry, so that an expired token is
/// still reported as such (the caller checks expiry) rather than unknown.
pub const EXPIRED_GRACE_SECS: i64 = 24 * 3600;
/// The largest TTL CQL accepts (20 years).
pub const MAX_TTL_SECS: i64 = 630_720_000;

/// The TTL in seconds of a token expiring at `expires_at_ms`, at `now_ms`:
/// time left plus the grace, at least 1 s and at most [`MAX_TTL_SECS`].
pub fn token_ttl_secs(expires_at_ms: i64, now_ms: i64) -> i32 {
    let left_ms = expires_at_ms.saturating_sub(now_ms).max(0);
    let secs = (left_ms / 1000)
        .saturating_add(i64::from(left_ms % 1000 != 0))
        .saturating_add(EXPIRED_GRACE_SECS)
        .clamp(1, MAX_TTL_SECS);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// A `refresh_tokens` row as read.
pub type TokenRow = (String, Option<String>, Option<i64>);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Stores a refresh token hash.
pub async fn put_refresh_token(x: &Executor, t: &RefreshTokenRecord) -> StorageResult<()> {
    let ttl = token_ttl_secs(t.expires_at, now_ms());
    let res = x.lwt(&binds::token_put(t, ttl)).await?;
    let same = res.text("user_id") == Some(t.user_id.as_str())
        && res.bigint("expires_at") == Some(t.expires_at);
    if res.applied || same {
        Ok(())
    } else {
        // A different token with the same SHA-256: never in practice.
        Err(StorageError::AlreadyExists)
    }
}

/// Removes and returns a refresh token; `None` when unknown or already
/// taken (by this or a concurrent call).
pub async fn take_refresh_token(
    x: &Executor,
    token_hash: &str,
) -> StorageResult<Option<RefreshTokenRecord>> {
    let row: Option<TokenRow> = x.one(&binds::token_get(token_hash)).await?;
    let Some((token_hash, Some(user_id), Some(expires_at))) = row else {
        return Ok(None);
    };
    let t = RefreshTokenRecord {
        token_hash,
        user_id,
        expires_at,
    };
    let res = x.lwt(&binds::token_take(&t)).await?;
    Ok(res.applied.then_some(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_covers_the_life_and_the_grace() {
        let now = 1_700_000_000_000;
        assert_eq!(token_ttl_secs(now + 3_600_000, now), 3_600 + 86_400);
        assert_eq!(token_ttl_secs(now + 1, now), 1 + 86_400, "rounds up");
        assert_eq!(
            token_ttl_secs(now - 1_000, now),
            86_400,
            "expired: grace only"
        );
        assert_eq!(token_ttl_secs(i64::MIN, now), 86_400);
        assert_eq!(token_ttl_secs(i64::MAX, now), 630_720_000, "capped");
    }
}
