//! A cap on the connections one client address holds open at once.
//!
//! `--max-connections` keeps the node's descriptors for itself, but one
//! address could take every place under it (idle sockets need no account),
//! and everyone else would wait in the backlog. So each address may hold
//! `--max-connections-per-ip` at once; past it a new connection is answered
//! 429 `rate_limited` at once and closed. IPv6 clients are counted per /64,
//! the block one host usually gets.
//!
//! Trusted proxies (`--trusted-proxies`) are not capped: their connections
//! carry many clients, told apart by the per-request limits. Nor are the
//! ranges of `--connection-cap-exempt` (loopback by default: a proxy or a
//! load test on the node's own machine).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use parley_protocol::{ErrorBody, ErrorCode};

use crate::client_ip::IpRanges;

/// Seconds a refused client is asked to wait before connecting again.
const RETRY_AFTER_SECS: u64 = 10;

/// Open connections per client address, and their cap.
#[derive(Debug)]
pub struct PerIpCap {
    max: usize,
    exempt: IpRanges,
    trusted: IpRanges,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place under its address's cap; given back on drop.
#[derive(Debug)]
pub struct IpSlot {
    cap: Arc<PerIpCap>,
    key: IpAddr,
}

/// The address already holds as many connections as it may.
#[derive(Debug)]
pub struct Full;

impl PerIpCap {
    /// A cap of `max` connections per address (0: none), leaving out
    /// `exempt` and the `trusted` proxies.
    pub fn new(max: usize, exempt: IpRanges, trusted: IpRanges) -> Arc<Self> {
        Arc::new(PerIpCap {
            max,
            exempt,
            trusted,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a connection from `peer`: `None` when it is not capped.
    pub fn take(self: &Arc<Self>, peer: IpAddr) -> Result<Option<IpSlot>, Full> {
        if self.max == 0 || self.exempt.contains(peer) || self.trusted.contains(peer) {
            return Ok(None);
        }
        let key = key(peer);
        let mut open = self.lock();
        let held = open.entry(key).or_insert(0);
        if *held >= self.max {
            return Err(Full);
        }
        *held += 1;
        Ok(Some(IpSlot {
            cap: self.clone(),
            key,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every change is one add or subtract: a poisoned map is still right.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.cap.lock();
        if let Some(held) = open.get_mut(&self.key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What an address is counted as: itself (v4, canonical), or its /64 (v6).
fn key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The answer written to a connection over its address's cap.
pub fn refusal() -> Vec<u8> {
    let body = serde_json::to_vec(&ErrorBody::new(
        ErrorCode::RateLimited,
        "too many connections from your address",
    ))
    .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 429 Too Many Requests\r\nconnection: close\r\n\
         content-type: application/json\r\nretry-after: {RETRY_AFTER_SECS}\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ranges(s: &str) -> IpRanges {
        s.parse().unwrap()
    }

    #[test]
    fn each_address_holds_up_to_the_cap_and_gets_its_places_back() {
        let cap = PerIpCap::new(2, IpRanges::default(), IpRanges::default());
        let a = [cap.take(ip("10.0.0.1")), cap.take(ip("10.0.0.1"))];
        assert!(a.iter().all(|s| matches!(s, Ok(Some(_)))));
        assert!(cap.take(ip("10.0.0.1")).is_err());
        assert!(matches!(cap.take(ip("10.0.0.2")), Ok(Some(_))));
        drop(a);
        assert!(
            !cap.lock().contains_key(&ip("10.0.0.1")),
            "addresses holding nothing are forgotten"
        );
        assert!(matches!(cap.take(ip("10.0.0.1")), Ok(Some(_))));
    }

    #[test]
    fn v6_counts_per_64_and_v4_mapped_as_v4() {
        let cap = PerIpCap::new(1, IpRanges::default(), IpRanges::default());
        let _one = cap.take(ip("2001:db8:1:2::1")).unwrap();
        assert!(cap.take(ip("2001:db8:1:2:ffff::9")).is_err(), "same /64");
        assert!(matches!(cap.take(ip("2001:db8:1:3::1")), Ok(Some(_))));
        let _v4 = cap.take(ip("192.0.2.7")).unwrap();
        assert!(cap.take(ip("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn exempt_ranges_trusted_proxies_and_zero_are_not_capped() {
        let cap = PerIpCap::new(1, ranges("127.0.0.0/8,::1"), ranges("10.1.0.0/16"));
        for _ in 0..3 {
            assert!(matches!(cap.take(ip("127.0.0.5")), Ok(None)));
            assert!(matches!(cap.take(ip("::1")), Ok(None)));
            assert!(matches!(cap.take(ip("10.1.2.3")), Ok(None)));
        }
        let off = PerIpCap::new(0, IpRanges::default(), IpRanges::default());
        assert!(matches!(off.take(ip("10.0.0.1")), Ok(None)));
    }

    #[test]
    fn the_refusal_is_a_contract_error() {
        let text = String::from_utf8(refusal()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains("retry-after: 10"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "rate_limited");
    }
}
