//! The client's address, for the per-IP limits.
//!
//! It is the TCP peer's address, unless the peer is one of the operator's
//! trusted reverse proxies (`--trusted-proxies`). Then the client is the
//! address that proxy put in `X-Forwarded-For`: read from the right, the
//! first entry that is not itself a trusted proxy. Entries to the left of
//! it were written by the client and prove nothing, so a client cannot pick
//! its own address by sending the header; and from a peer that is not
//! trusted the header is ignored altogether.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::api::error::ApiError;
use crate::state::AppState;

/// A `--trusted-proxies` entry that is not an address or `address/bits`.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an IP address or a range like 10.0.0.0/8 or fd00::/8")]
pub struct BadRange(String);

/// One `--trusted-proxies` entry: a range, or one address.
fn parse_range(s: &str) -> Result<IpNet, BadRange> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(|a| IpNet::from(a.to_canonical())))
        .map_err(|_| BadRange(s.to_string()))
}

/// A list of address ranges: the operator's trusted reverse proxies (none
/// by default), or the addresses the per-address connection cap leaves out.
#[derive(Debug, Clone, Default)]
pub struct IpRanges(Vec<IpNet>);

impl FromStr for IpRanges {
    type Err = BadRange;

    /// A comma-separated list; empty means none.
    fn from_str(s: &str) -> Result<Self, BadRange> {
        s.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(parse_range)
            .collect::<Result<_, _>>()
            .map(IpRanges)
    }
}

impl IpRanges {
    /// Whether `ip` is in one of the ranges (compared canonical: a
    /// v4-mapped v6 address is v4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|r| r.contains(&ip))
    }

    /// The client address for a request from `peer` with `headers`, these
    /// being the trusted proxies (see the module docs).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let is_trusted = |ip: IpAddr| self.contains(ip);
        let peer = peer.to_canonical();
        if !is_trusted(peer) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            // Anything unreadable was not written by a proxy we trust: stop at
            // the last hop we could read.
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                break;
            };
            client = ip.to_canonical();
            if !is_trusted(client) {
                break;
            }
        }
        client
    }
}

/// Extracts the client's address (see the module docs).
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .ok_or_else(|| ApiError::internal("no peer address on the request"))?;
        Ok(ClientIp(
            state.config.trusted_proxies.client_ip(peer, &parts.headers),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted(list: &str) -> IpRanges {
        list.parse().unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Whether a peer at `peer` is trusted by `list` (its forwarded address is believed).
    fn trusts(list: &str, peer: &str) -> bool {
        let h = forwarded(&["203.0.113.1"]);
        trusted(list).client_ip(ip(peer), &h) == ip("203.0.113.1")
    }

    #[test]
    fn ranges_parse_and_match() {
        assert!(trusts("10.1.0.0/16", "10.1.200.3"));
        assert!(!trusts("10.1.0.0/16", "10.2.0.1"));
        assert!(
            trusts("10.1.0.0/16", "::ffff:10.1.0.9"),
            "a v4-mapped address is v4"
        );
        assert!(trusts("::ffff:127.0.0.1", "127.0.0.1"));
        assert!(trusts("127.0.0.1", "127.0.0.1") && !trusts("127.0.0.1", "127.0.0.2"));
        assert!(trusts("0.0.0.0/0", "8.8.8.8") && !trusts("0.0.0.0/0", "::1"));
        assert!(trusts("fd00::/8", "fd12::1") && !trusts("fd00::/8", "fe80::1"));
        let list: IpRanges = " 10.0.0.0/8, ::1 ,".parse().unwrap();
        assert_eq!(list.0.len(), 2);
        assert!("".parse::<IpRanges>().unwrap().0.is_empty());
        assert!("10.0.0.0/8,nope".parse::<IpRanges>().is_err());
        for bad in [
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/x",
        ] {
            assert!(parse_range(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = trusted("10.0.0.0/8");
        let h = forwarded(&["203.0.113.7"]);
        assert_eq!(
            trusted.client_ip(ip("198.51.100.1"), &h),
            ip("198.51.100.1")
        );
        assert_eq!(
            IpRanges::default().client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let trusted = trusted("10.0.0.0/8,127.0.0.1");
        let peer = ip("127.0.0.1");
        assert_eq!(
            trusted.client_ip(peer, &forwarded(&["203.0.113.7"])),
            ip("203.0.113.7")
        );
        // The client wrote the first entry itself; the proxies appended.
        let h = forwarded(&["1.2.3.4, 203.0.113.7, 10.0.0.5"]);
        assert_eq!(trusted.client_ip(peer, &h), ip("203.0.113.7"));
        // The same list split over two header lines.
        let h = forwarded(&["1.2.3.4", "203.0.113.7, 10.0.0.5"]);
        assert_eq!(trusted.client_ip(peer, &h), ip("203.0.113.7"));
        // No header: the proxy itself.
        assert_eq!(trusted.client_ip(peer, &HeaderMap::new()), peer);
        // Only proxies: the farthest one.
        let h = forwarded(&["10.0.0.9, 10.0.0.5"]);
        assert_eq!(trusted.client_ip(peer, &h), ip("10.0.0.9"));
        // Garbage stops the walk at the last readable hop.
        let h = forwarded(&["203.0.113.9, nonsense, 10.0.0.5"]);
        assert_eq!(trusted.client_ip(peer, &h), ip("10.0.0.5"));
    }
}
