//! Who is asking: the client's address, for the limits that apply per address (logins,
//! registrations). Behind a reverse proxy the TCP peer is the proxy, so `X-Forwarded-For`
//! is read, but only when the peer is one of `TRUSTED_PROXIES`: anyone else could write
//! any address there and slip past every limit.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::dev::Payload;
use actix_web::http::header::HeaderMap;
use actix_web::{FromRequest, HttpRequest, web};
use ipnet::IpNet;

use crate::state::AppState;

/// The address a request is limited by: IPv4 as is, IPv6 by its /64 (one host is given a
/// whole /64 and could otherwise change address at every attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The client behind `peer`: the peer itself unless it is a trusted proxy; then the
    /// nearest `X-Forwarded-For` entry that is not a trusted proxy (each proxy appends the
    /// address it saw, so the entries further left were written by whoever asked).
    pub fn resolve(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<Self> {
        let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
        let mut client = peer?;
        if is_trusted(&client) {
            let forwarded = headers
                .get_all("x-forwarded-for")
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .collect::<Vec<_>>();
            for entry in forwarded.iter().rev() {
                // A malformed entry ends the chain: what is left of it cannot be trusted.
                let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                    break;
                };
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
        }
        Some(ClientAddr(limit_key(client)))
    }
}

/// Whether the TCP peer is one of `TRUSTED_PROXIES`: only then are its forwarding headers
/// (`X-Forwarded-For` here, `Forwarded` and `X-Forwarded-Proto`/`-Host` for links) believed.
pub fn peer_is_trusted(peer: Option<IpAddr>, trusted: &[IpNet]) -> bool {
    peer.is_some_and(|ip| trusted.iter().any(|net| net.contains(&ip)))
}

fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
        v4 => v4,
    }
}

/// `TRUSTED_PROXIES`: comma-separated addresses or CIDR networks.
pub fn parse_trusted_proxies(raw: &str) -> Result<Vec<IpNet>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR network"))
        })
        .collect()
}

impl FromRequest for ClientAddr {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let trusted = req
            .app_data::<web::Data<AppState>>()
            .map(|state| state.settings.server.trusted_proxies.as_slice())
            .unwrap_or_default();
        // A request always has a TCP peer here; the unspecified address stands in for one
        // that somehow has none, so such requests share one (strict) limit.
        let addr = ClientAddr::resolve(req.peer_addr().map(|a| a.ip()), req.headers(), trusted)
            .unwrap_or(ClientAddr(IpAddr::from([0, 0, 0, 0])));
        std::future::ready(Ok(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in xff {
            map.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let h = headers(&["203.0.113.9"]);
        let got = ClientAddr::resolve(Some(ip("198.51.100.1")), &h, &[]).unwrap();
        assert_eq!(got.0, ip("198.51.100.1"));
    }

    #[test]
    fn the_nearest_untrusted_entry_is_the_client() {
        let trusted = parse_trusted_proxies("10.0.0.0/8, 127.0.0.1").unwrap();
        // The client wrote a fake first entry; the proxies appended what they saw.
        let h = headers(&["1.2.3.4, 203.0.113.9", "10.1.1.1"]);
        let got = ClientAddr::resolve(Some(ip("127.0.0.1")), &h, &trusted).unwrap();
        assert_eq!(got.0, ip("203.0.113.9"));
    }

    #[test]
    fn a_malformed_entry_stops_the_walk() {
        let trusted = parse_trusted_proxies("127.0.0.1").unwrap();
        let h = headers(&["203.0.113.9, garbage"]);
        let got = ClientAddr::resolve(Some(ip("127.0.0.1")), &h, &trusted).unwrap();
        assert_eq!(got.0, ip("127.0.0.1"));
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        let a = ClientAddr::resolve(Some(ip("2001:db8:1:2:aaaa::1")), &headers(&[]), &[]);
        let b = ClientAddr::resolve(Some(ip("2001:db8:1:2:bbbb::2")), &headers(&[]), &[]);
        assert_eq!(a, b);
        let mapped = ClientAddr::resolve(Some(ip("::ffff:192.0.2.7")), &headers(&[]), &[]);
        assert_eq!(mapped.unwrap().0, ip("192.0.2.7"));
    }

    #[test]
    fn bad_proxy_lists_are_refused() {
        assert!(parse_trusted_proxies("10.0.0.0/33").is_err());
        assert!(parse_trusted_proxies("proxy.local").is_err());
        assert_eq!(parse_trusted_proxies(" ").unwrap(), vec![]);
    }
}
