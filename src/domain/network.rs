//! Where carepay may send requests that someone else chose the address of (callbacks), as
//! pure rules: which IP addresses are internal to a network rather than on the public
//! internet, the operator's allow-list of networks that may be reached anyway, and the
//! addresses carepay itself serves on, which are never a callback target.
//!
//! A callback URL is chosen by a facility or office user. Without these rules such a user
//! could point carepay at its own loopback services, the cloud metadata address or the
//! private network behind it and read the answers back from the attempts listing. The same
//! rules apply at registration (to the URL's literal address) and at connect time (to every
//! address a name resolves to), so a name that resolves to 127.0.0.1 is refused too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What kind of address an IP is, for deciding whether a callback may go there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable unicast: callbacks go here.
    Public,
    /// `0.0.0.0/8` ("this network"; `0.0.0.0` connects to the local host) and `::`.
    Unspecified,
    /// `127.0.0.0/8` and `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), IPv6 unique-local `fc00::/7`,
    /// deprecated site-local `fec0::/10`, local-use NAT64 `64:ff9b:1::/48`.
    Private,
    /// Carrier-grade NAT, `100.64.0.0/10` (RFC 6598).
    SharedAddressSpace,
    /// `169.254.0.0/16` (cloud metadata lives at 169.254.169.254) and `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4` and `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15` and `2001:2::/48` (RFC 2544 / 5180 benchmarking).
    Benchmarking,
    /// Everything else that is not public unicast: `192.0.0.0/24` (IETF protocol
    /// assignments), `192.88.99.0/24` (6to4 relay), `240.0.0.0/4`, IPv4-compatible IPv6
    /// `::/96`, discard `100::/64`, `2001::/23` (Teredo, ORCHID, ...), and IPv6 outside
    /// global unicast `2000::/3`.
    Reserved,
}

impl AddressClass {
    pub fn is_public(self) -> bool {
        self == AddressClass::Public
    }

    /// How a refusal names the class.
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Public => "a public address",
            AddressClass::Unspecified => "an unspecified (this-host) address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private-network address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT (shared) address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Documentation => "a documentation-range address",
            AddressClass::Benchmarking => "a benchmarking-range address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

/// The IPv4 address an IPv6 address stands for, when it is IPv4-mapped (`::ffff:a.b.c.d`):
/// a connection to it reaches that IPv4 address.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Classify an address. IPv4-mapped IPv6 and the IPv6 forms that carry an IPv4 address to a
/// translator (NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are classified by that IPv4 address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match unmapped(ip) {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, base: [u8; 4], prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(base)) & mask
}

fn in_v6(ip: Ipv6Addr, base: [u16; 8], prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(base)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    const TABLE: &[([u8; 4], u8, AddressClass)] = &[
        ([0, 0, 0, 0], 8, AddressClass::Unspecified),
        ([10, 0, 0, 0], 8, AddressClass::Private),
        ([100, 64, 0, 0], 10, AddressClass::SharedAddressSpace),
        ([127, 0, 0, 0], 8, AddressClass::Loopback),
        ([169, 254, 0, 0], 16, AddressClass::LinkLocal),
        ([172, 16, 0, 0], 12, AddressClass::Private),
        ([192, 0, 0, 0], 24, AddressClass::Reserved),
        ([192, 0, 2, 0], 24, AddressClass::Documentation),
        ([192, 88, 99, 0], 24, AddressClass::Reserved),
        ([192, 168, 0, 0], 16, AddressClass::Private),
        ([198, 18, 0, 0], 15, AddressClass::Benchmarking),
        ([198, 51, 100, 0], 24, AddressClass::Documentation),
        ([203, 0, 113, 0], 24, AddressClass::Documentation),
        ([224, 0, 0, 0], 4, AddressClass::Multicast),
        ([255, 255, 255, 255], 32, AddressClass::Broadcast),
        ([240, 0, 0, 0], 4, AddressClass::Reserved),
    ];
    TABLE
        .iter()
        .find(|(base, prefix, _)| in_v4(ip, *base, *prefix))
        .map_or(AddressClass::Public, |(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    let bits = u128::from(ip);
    // The IPv4 address a translator would forward to.
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return classify_v4(Ipv4Addr::from(bits as u32));
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return classify_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    const TABLE: &[([u16; 8], u8, AddressClass)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, AddressClass::Reserved),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, AddressClass::Private),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, AddressClass::Reserved),
        ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, AddressClass::Benchmarking),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, AddressClass::Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, AddressClass::Reserved),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, AddressClass::Documentation),
        ([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, AddressClass::Public),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddressClass::Private),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddressClass::Private),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddressClass::Multicast),
    ];
    TABLE
        .iter()
        .find(|(base, prefix, _)| in_v6(ip, *base, *prefix))
        .map_or(AddressClass::Reserved, |(_, _, class)| *class)
}

/// A network in CIDR notation (`10.20.0.0/16`, `fd00::/8`), or one address (`10.20.0.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(raw: &str) -> Result<Network, String> {
        let raw = raw.trim();
        let (address, prefix) = match raw.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (raw, None),
        };
        let base: IpAddr = address.parse().map_err(|_| format!("{raw:?} is not an IP address or network (CIDR)"))?;
        let base = unmapped(base);
        let width = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= width)
                .ok_or_else(|| format!("{raw:?}: the prefix length must be 0 to {width}"))?,
        };
        let network = Network { base, prefix };
        if network.masked() != base {
            return Err(format!("{raw:?} has address bits set past /{prefix}; write the network's first address"));
        }
        Ok(network)
    }

    fn masked(&self) -> IpAddr {
        match self.base {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        }
    }

    /// Whether `ip` lies in the network; an IPv4-mapped IPv6 address counts as its IPv4 one.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, unmapped(ip)) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => in_v4(ip, base.octets(), self.prefix),
            (IpAddr::V6(base), IpAddr::V6(ip)) => in_v6(ip, base.segments(), self.prefix),
            _ => false,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Why carepay will not send a callback to an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a public address, and not in a network the operator allowed.
    Internal { ip: IpAddr, class: AddressClass },
    /// carepay's own listening address, or the in-process sandbox operator's.
    Own { address: SocketAddr },
    /// The URL has no host and port a request could go to.
    Unusable,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Internal { ip, class } => write!(
                f,
                "{ip} is {}; callbacks go to public addresses only, unless the operator allows the network",
                class.describe()
            ),
            Refusal::Own { address } => write!(f, "{address} is carepay's own address"),
            Refusal::Unusable => f.write_str("the URL names no host a request could go to"),
        }
    }
}

/// The rules for one running instance: the networks the operator allowed (for tests and
/// on-premises receivers) and the socket addresses carepay itself serves on. The default
/// allows public addresses only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    allowed: Vec<Network>,
    own: Vec<SocketAddr>,
}

impl EgressPolicy {
    pub fn new(allowed: Vec<Network>, own: Vec<SocketAddr>) -> EgressPolicy {
        EgressPolicy { allowed, own }
    }

    pub fn allowed(&self) -> &[Network] {
        &self.allowed
    }

    /// The ports carepay serves on: a name's addresses on these ports are also checked
    /// against [`EgressPolicy::check_socket`].
    pub fn own_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.own.iter().map(SocketAddr::port).collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// May a callback connect to `ip` (on a port carepay does not serve on)?
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let class = classify(ip);
        if class.is_public() || self.allowed.iter().any(|network| network.contains(ip)) {
            Ok(())
        } else {
            Err(Refusal::Internal { ip: unmapped(ip), class })
        }
    }

    /// May a callback connect to `address`? Never to carepay's own listening socket, whatever
    /// the allow-list says: a wildcard listening address (`0.0.0.0`, `::`) counts as its
    /// port on every loopback and unspecified address.
    pub fn check_socket(&self, address: SocketAddr) -> Result<(), Refusal> {
        let ip = unmapped(address.ip());
        let own = self.own.iter().any(|own| {
            own.port() == address.port()
                && (unmapped(own.ip()) == ip
                    || own.ip().is_unspecified()
                        && matches!(classify(ip), AddressClass::Loopback | AddressClass::Unspecified))
        });
        if own {
            return Err(Refusal::Own { address: SocketAddr::new(ip, address.port()) });
        }
        self.check_ip(ip)
    }

    /// The check at registration, on a parsed URL's host and port: a literal address is
    /// checked as it is; `localhost` and names under `.localhost` are loopback by definition
    /// (RFC 6761), so they are checked as 127.0.0.1 and ::1. Other names are checked at
    /// connect time, on every address they resolve to.
    pub fn check_host<S: AsRef<str>>(&self, host: &url::Host<S>, port: u16) -> Result<(), Refusal> {
        match host {
            url::Host::Ipv4(v4) => self.check_socket(SocketAddr::new(IpAddr::V4(*v4), port)),
            url::Host::Ipv6(v6) => self.check_socket(SocketAddr::new(IpAddr::V6(*v6), port)),
            url::Host::Domain(name) if is_localhost_name(name.as_ref()) => {
                self.check_socket(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))?;
                self.check_socket(SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port))
            }
            url::Host::Domain(_) => Ok(()),
        }
    }
}

/// `localhost`, `localhost.` and every name under them, in any case.
pub fn is_localhost_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn ip(raw: &str) -> IpAddr {
        raw.parse().unwrap()
    }

    #[test]
    fn every_range_is_classified() {
        let table: &[(&str, AddressClass)] = &[
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("::", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("::1", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fec0::1", Private),
            ("64:ff9b:1::1", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("169.254.169.254", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("ff02::1", Multicast),
            ("255.255.255.255", Broadcast),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("2001:2::1", Benchmarking),
            ("192.0.0.8", Reserved),
            ("192.88.99.1", Reserved),
            ("240.0.0.1", Reserved),
            ("255.255.255.254", Reserved),
            ("::7f00:1", Reserved),
            ("100::1", Reserved),
            ("2001::1", Reserved),
            ("4000::1", Reserved),
            // IPv4-mapped and the translator forms go by the IPv4 address they carry.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:0.0.0.0", Unspecified),
            ("64:ff9b::7f00:1", Loopback),
            ("64:ff9b::a00:1", Private),
            ("2002:7f00:1::", Loopback),
            ("2002:a9fe:a9fe::1", LinkLocal),
            // Public neighbours of the ranges above.
            ("1.1.1.1", Public),
            ("8.8.8.8", Public),
            ("9.255.255.255", Public),
            ("11.0.0.1", Public),
            ("100.63.255.255", Public),
            ("100.128.0.1", Public),
            ("126.255.255.255", Public),
            ("128.0.0.1", Public),
            ("169.253.255.255", Public),
            ("172.15.255.255", Public),
            ("172.32.0.1", Public),
            ("192.0.1.1", Public),
            ("192.167.255.255", Public),
            ("198.17.255.255", Public),
            ("198.20.0.1", Public),
            ("223.255.255.255", Public),
            ("::ffff:8.8.8.8", Public),
            ("64:ff9b::808:808", Public),
            ("2002:808:808::1", Public),
            ("2400:3200::1", Public),
            ("2001:4860::8888", Public),
        ];
        for (raw, class) in table {
            assert_eq!(classify(ip(raw)), *class, "{raw}");
        }
    }

    /// The spellings of the issue, as the `url` crate reads them (WHATWG host parsing).
    #[test]
    fn every_spelling_of_an_internal_host_is_refused_without_an_allow_list() {
        let policy = EgressPolicy::default();
        for raw in [
            "http://127.0.0.1/",
            "http://localhost/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://[::1]/",
            "http://0/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://%31%32%37.0.0.1/",
            "http://１２７.０.０.１/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://0.0.0.0:8080/",
            "http://[::]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://100.64.0.1/",
            "http://192.0.0.1/",
            "http://198.18.0.1/",
            "http://255.255.255.255/",
            "http://224.0.0.1/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[fec0::1]/",
            "http://[ff02::1]/",
            "http://192.0.2.1/",
            "http://[2001:db8::1]/",
        ] {
            let url = url::Url::parse(raw).unwrap();
            let port = url.port_or_known_default().unwrap();
            let host = url.host().unwrap();
            assert!(policy.check_host(&host, port).is_err(), "{raw} ({host}) accepted");
        }
        for raw in ["https://billing.example.cn/", "http://8.8.8.8/", "http://[2400:3200::1]/", "http://localhost.cn/"]
        {
            let url = url::Url::parse(raw).unwrap();
            assert_eq!(policy.check_host(&url.host().unwrap(), 80), Ok(()), "{raw}");
        }
    }

    #[test]
    fn the_allow_list_opens_its_networks_and_nothing_else() {
        let policy = EgressPolicy::new(
            vec![Network::parse("127.0.0.0/8").unwrap(), Network::parse("fd00::/8").unwrap()],
            Vec::new(),
        );
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:127.0.0.1")), Ok(()), "mapped counts as IPv4");
        assert_eq!(policy.check_ip(ip("fd00::5")), Ok(()));
        assert_eq!(
            policy.check_ip(ip("::1")),
            Err(Refusal::Internal { ip: ip("::1"), class: Loopback }),
            "::1 is not in 127.0.0.0/8"
        );
        assert!(policy.check_ip(ip("10.0.0.1")).is_err());
        assert!(policy.check_ip(ip("169.254.169.254")).is_err());
        let refusal = policy.check_ip(ip("::ffff:10.0.0.1")).unwrap_err();
        assert_eq!(refusal, Refusal::Internal { ip: ip("10.0.0.1"), class: Private });
        assert!(refusal.to_string().starts_with("10.0.0.1 is a private-network address"), "{refusal}");
    }

    #[test]
    fn carepay_own_addresses_are_refused_whatever_the_allow_list() {
        let everything = vec![Network::parse("0.0.0.0/0").unwrap(), Network::parse("::/0").unwrap()];
        let policy = EgressPolicy::new(
            everything.clone(),
            vec!["127.0.0.1:8080".parse().unwrap(), "127.0.0.1:39001".parse().unwrap()],
        );
        let own = |raw: &str| policy.check_socket(raw.parse().unwrap());
        assert_eq!(own("127.0.0.1:8080"), Err(Refusal::Own { address: "127.0.0.1:8080".parse().unwrap() }));
        assert!(own("[::ffff:127.0.0.1]:39001").is_err());
        assert_eq!(own("127.0.0.1:8081"), Ok(()));
        assert_eq!(own("10.0.0.1:8080"), Ok(()), "another host on the same port");
        assert_eq!(policy.own_ports(), vec![8080, 39001]);

        let wildcard = EgressPolicy::new(everything, vec!["0.0.0.0:8080".parse().unwrap()]);
        for raw in ["127.0.0.1:8080", "127.0.0.2:8080", "[::1]:8080", "0.0.0.0:8080", "[::]:8080"] {
            assert!(wildcard.check_socket(raw.parse().unwrap()).is_err(), "{raw}");
        }
        let host = url::Host::Domain("localhost");
        assert!(wildcard.check_host(&host, 8080).is_err());
        assert_eq!(wildcard.check_host(&host, 9000), Ok(()));
    }

    #[test]
    fn networks_parse_strictly() {
        assert_eq!(Network::parse("10.20.0.0/16").unwrap().to_string(), "10.20.0.0/16");
        assert_eq!(Network::parse(" 10.20.0.7 ").unwrap().to_string(), "10.20.0.7/32");
        assert_eq!(Network::parse("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert_eq!(Network::parse("::ffff:10.0.0.0/104").ok(), None, "a mapped base is IPv4: /104 is too long");
        assert!(Network::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "10.0.0.1/8", "fd00::1/8", "10.0.0.0/x", "example.cn", "10.0.0.0/-1"] {
            assert!(Network::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn localhost_names_are_recognised_in_every_spelling() {
        for name in ["localhost", "LocalHost", "localhost.", "a.b.localhost", "x.localhost."] {
            assert!(is_localhost_name(name), "{name}");
        }
        for name in ["localhost.cn", "notlocalhost", "localhost-1", "local"] {
            assert!(!is_localhost_name(name), "{name}");
        }
    }
}
