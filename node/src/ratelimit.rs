//! Rate limits (governor): keyed limits for logins, registrations and each
//! user's API requests, and a per-connection limit for WebSocket frames. A
//! configured rate of 0 turns a limit off (for load tests).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// `rate` events per second with a bucket of `burst` (raised to `rate` if
/// lower); `None` when `rate` is 0 (no limit).
fn per_second_quota(rate: u32, burst: u32) -> Option<Quota> {
    let rate_nz = NonZeroU32::new(rate)?;
    let burst = NonZeroU32::new(burst.max(rate)).unwrap_or(rate_nz);
    Some(Quota::per_second(rate_nz).allow_burst(burst))
}

/// A per-key limit of events per minute or per second.
pub struct KeyedLimit {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl KeyedLimit {
    /// `per_minute` events per key per minute (burst of the same size); 0 = unlimited.
    pub fn per_minute(per_minute: u32) -> Self {
        KeyedLimit {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
        }
    }

    /// `per_second` events per key per second with a bucket of `burst`
    /// (raised to `per_second` if lower); 0 = unlimited.
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        KeyedLimit {
            limiter: per_second_quota(per_second, burst).map(RateLimiter::keyed),
        }
    }

    /// Counts one event for `key`; `Err(seconds to wait)` when over the limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(l) = &self.limiter else {
            return Ok(());
        };
        l.check_key(&key.to_string()).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + 1
        })
    }

    /// Forgets keys that are back to a full allowance (bounds memory).
    pub fn prune(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// A per-connection frame rate, and the flood it ends in.
pub struct ConnectionLimit {
    limiter: Option<DefaultDirectRateLimiter>,
    /// Frames refused, less one for each admitted since (never below 0).
    refused: u32,
    /// The count of refusals that makes a flood.
    flood_after: u32,
}

/// What the limit makes of one more frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Within the rate.
    Yes,
    /// Over the rate: refuse it.
    Refused,
    /// Over the rate, with refusals outnumbering admissions by
    /// `flood_after`: end the connection.
    Flood,
}

impl ConnectionLimit {
    /// `per_second` frames per second with `burst` extra (0 = unlimited);
    /// a flood once refusals outnumber admissions by `flood_after` (at
    /// least 1). Each admitted frame takes back one refusal, not all: a
    /// client that keeps sending far over the rate, spread out so that a
    /// frame gets through now and then, is a flood too.
    pub fn new(per_second: u32, burst: u32, flood_after: u32) -> Self {
        ConnectionLimit {
            limiter: per_second_quota(per_second, burst).map(RateLimiter::direct),
            refused: 0,
            flood_after: flood_after.max(1),
        }
    }

    /// Counts one frame.
    pub fn admit(&mut self) -> Admit {
        if self.limiter.as_ref().is_none_or(|l| l.check().is_ok()) {
            self.refused = self.refused.saturating_sub(1);
            return Admit::Yes;
        }
        self.refused += 1;
        if self.refused >= self.flood_after {
            Admit::Flood
        } else {
            Admit::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_limits_per_key() {
        let l = KeyedLimit::per_minute(2);
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_ok());
        assert!(l.check("a").unwrap_err() >= 1);
        assert!(l.check("b").is_ok());
        let off = KeyedLimit::per_minute(0);
        for _ in 0..1000 {
            assert!(off.check("a").is_ok());
        }
    }

    /// Keys the limiter tracks.
    fn tracked(l: &KeyedLimit) -> usize {
        l.limiter.as_ref().map_or(0, |l| l.len())
    }

    #[test]
    fn prune_forgets_only_keys_back_at_a_full_allowance() {
        // Two a minute: a key used now is short of its allowance for 30 s.
        let slow = KeyedLimit::per_minute(2);
        assert!(slow.check("a").is_ok());
        slow.prune();
        assert_eq!(tracked(&slow), 1, "still counting a");
        // A thousand a second: a used key is full again within a millisecond.
        let fast = KeyedLimit::per_second(1000, 1);
        assert!(fast.check("a").is_ok());
        assert!(fast.check("b").is_ok());
        assert_eq!(tracked(&fast), 2);
        std::thread::sleep(Duration::from_millis(20));
        fast.prune();
        assert_eq!(tracked(&fast), 0);
        assert!(fast.check("a").is_ok(), "a forgotten key starts afresh");
    }

    #[test]
    fn per_second_limits_allow_the_burst_then_refuse() {
        let l = KeyedLimit::per_second(1, 3);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        assert!(l.check("a").unwrap_err() >= 1);
        assert!(l.check("b").is_ok());
        let off = KeyedLimit::per_second(0, 0);
        for _ in 0..1000 {
            assert!(off.check("a").is_ok());
        }
    }

    #[test]
    fn connection_limit_bursts_then_refuses_then_calls_it_a_flood() {
        let mut l = ConnectionLimit::new(1, 3, 2);
        for _ in 0..3 {
            assert_eq!(l.admit(), Admit::Yes);
        }
        assert_eq!(l.admit(), Admit::Refused);
        assert_eq!(l.admit(), Admit::Flood);
        let mut off = ConnectionLimit::new(0, 0, 1);
        for _ in 0..1000 {
            assert_eq!(off.admit(), Admit::Yes);
        }
    }
}
