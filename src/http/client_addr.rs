//! Which client sent a request: the peer address of its connection, or, when that peer is a
//! proxy the operator named as trusted, the address that proxy put in `X-Forwarded-For`.
//! Anyone can write that header, so it is believed only from trusted proxies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};

/// An address or network (`10.0.0.0/8`, `fd00::/8`, `192.0.2.7`) whose connections are
/// proxies that may name the client in `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyNet {
    network: IpAddr,
    prefix_len: u8,
}

impl ProxyNet {
    pub fn parse(raw: &str) -> Result<ProxyNet, String> {
        let raw = raw.trim();
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let network: IpAddr = address.parse().map_err(|_| format!("{raw:?} is not an IP address or network"))?;
        let max_len = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            None => max_len,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|len| *len <= max_len)
                .ok_or_else(|| format!("{raw:?}: the prefix length must be 0 to {max_len}"))?,
        };
        Ok(ProxyNet { network, prefix_len })
    }

    fn contains(&self, address: IpAddr) -> bool {
        let (network, address, width) = match (self.network, canonical(address)) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                (u128::from(u32::from(network)), u128::from(u32::from(address)), 32)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => (u128::from(network), u128::from(address), 128),
            _ => return false,
        };
        let host_bits = width - u32::from(self.prefix_len);
        let mask = if host_bits >= 128 { 0 } else { u128::MAX << host_bits };
        network & mask == address & mask
    }
}

/// An IPv4 peer reached over an IPv6 socket is still that IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies allowed to name the client; empty (the default) believes no header.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(pub Vec<ProxyNet>);

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(address))
    }

    /// The client of `request`: the connection's peer, unless that peer is trusted, in
    /// which case the nearest `X-Forwarded-For` entry that is not itself a trusted proxy.
    /// `None` when the request came without a connection (in-process calls).
    pub fn client_of<B>(&self, request: &Request<B>) -> Option<IpAddr> {
        let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        self.client(peer, request.headers())
    }

    /// [`TrustedProxies::client_of`] from the connection's peer and the request's headers.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?.ip());
        if !self.trusts(peer) {
            return Some(peer);
        }
        // Each proxy appends the address it received from, so the list is read from the
        // right; the first untrusted entry is the one no trusted proxy can vouch beyond.
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = peer;
        for entry in forwarded.iter().rev() {
            match entry.parse::<IpAddr>() {
                Ok(address) => {
                    client = canonical(address);
                    if !self.trusts(client) {
                        break;
                    }
                }
                // A malformed entry ends what can be believed: the last proxy that wrote
                // a good one is the client as far as anyone knows.
                Err(_) => break,
            }
        }
        Some(client)
    }
}

/// The key a per-client limit counts a request under.
pub fn client_key(client: Option<IpAddr>) -> String {
    client.map_or_else(|| String::from("in-process"), |address| address.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(peer: &str, forwarded: Option<&str>) -> Request<()> {
        let mut request = Request::new(());
        request.extensions_mut().insert(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 40_000)));
        if let Some(forwarded) = forwarded {
            request.headers_mut().insert("x-forwarded-for", forwarded.parse().unwrap());
        }
        request
    }

    #[test]
    fn networks_parse_and_contain_their_addresses() {
        let net = ProxyNet::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(ProxyNet::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!(ProxyNet::parse("192.0.2.7").unwrap().contains("::ffff:192.0.2.7".parse().unwrap()));
        assert!(ProxyNet::parse("fd00::/8").unwrap().contains("fd12::1".parse().unwrap()));
        assert!(ProxyNet::parse("10.0.0.0/33").is_err());
        assert!(ProxyNet::parse("proxy.internal").is_err());
    }

    #[test]
    fn the_forwarded_header_counts_only_from_a_trusted_proxy() {
        let none = TrustedProxies::default();
        let client = none.client_of(&request("198.51.100.4", Some("203.0.113.9")));
        assert_eq!(client, Some("198.51.100.4".parse().unwrap()), "an untrusted peer cannot name another client");

        let proxies = TrustedProxies(vec![ProxyNet::parse("10.0.0.0/8").unwrap()]);
        let via = |forwarded| proxies.client_of(&request("10.0.0.2", forwarded));
        assert_eq!(via(Some("203.0.113.9")), Some("203.0.113.9".parse().unwrap()));
        // A client may send its own header; the proxy appends the real peer after it.
        assert_eq!(via(Some("1.2.3.4, 203.0.113.9, 10.0.0.3")), Some("203.0.113.9".parse().unwrap()));
        assert_eq!(via(Some("nonsense, 10.0.0.3")), Some("10.0.0.3".parse().unwrap()));
        assert_eq!(via(None), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(proxies.client_of(&Request::new(())), None);
    }
}
