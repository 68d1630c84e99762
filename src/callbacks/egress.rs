//! The callback worker's HTTP clients, which connect only where the egress rules
//! ([`crate::domain::network`]) allow.
//!
//! A URL with a literal address is checked before its request is made. A name is resolved by
//! the clients' own resolver, which checks every address the name resolves to and hands the
//! connector only checked addresses, so nothing can change between the check and the
//! connection (a name that answers a public address to a first lookup and 127.0.0.1 to a
//! second one gains nothing). The clients follow no redirect and use no proxy (a proxy would
//! resolve the name itself, past the check); they trust the built-in roots plus the
//! operator's extra CAs.
//!
//! Carepay's own listening socket is refused on its port only, and a resolver does not know
//! the port, so each port carepay serves on gets a client of its own whose resolver also
//! refuses carepay's addresses.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::callbacks::EndpointUrl;
use crate::domain::network::{EgressPolicy, Refusal};
use crate::tls::ExtraRoots;

/// Most addresses of one name that are checked and tried; a name with more is refused.
pub const MAX_ADDRESSES_PER_NAME: usize = 32;

type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// How names are turned into addresses: the system resolver, or (in tests) a fixed table.
#[derive(Clone)]
pub struct NameLookup(Arc<dyn Fn(&str) -> LookupFuture + Send + Sync>);

impl NameLookup {
    /// `getaddrinfo`, through tokio's blocking pool. Names under `.invalid` never resolve
    /// and are not looked up (RFC 6761).
    pub fn system() -> NameLookup {
        NameLookup(Arc::new(|name: &str| {
            let name = name.to_owned();
            Box::pin(async move {
                let bare = name.strip_suffix('.').unwrap_or(&name).to_ascii_lowercase();
                if bare == "invalid" || bare.ends_with(".invalid") {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such name"));
                }
                let addresses = tokio::net::lookup_host((name.as_str(), 0)).await?;
                Ok(addresses.map(|address| address.ip()).collect())
            })
        }))
    }

    /// Names answered from `table`; any other name does not resolve.
    pub fn fixed(table: Vec<(String, Vec<IpAddr>)>) -> NameLookup {
        let table = Arc::new(table);
        NameLookup(Arc::new(move |name: &str| {
            let found = table.iter().find(|(known, _)| known.eq_ignore_ascii_case(name)).map(|(_, ips)| ips.clone());
            Box::pin(async move { found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name")) })
        }))
    }

    fn lookup(&self, name: &str) -> LookupFuture {
        (self.0)(name)
    }
}

impl Default for NameLookup {
    fn default() -> Self {
        NameLookup::system()
    }
}

impl fmt::Debug for NameLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NameLookup")
    }
}

/// A connection the egress rules refused; found again in the request error's chain.
#[derive(Debug)]
pub struct Refused(pub Refusal);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// The refusal in a request error's chain, if the egress rules caused it.
pub fn refusal_in<'e>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e Refused> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        next = error.source();
    }
    None
}

struct GuardedResolver {
    policy: Arc<EgressPolicy>,
    /// The port this resolver's client connects to, when it is one carepay serves on.
    own_port: Option<u16>,
    lookup: NameLookup,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let own_port = self.own_port;
        let lookup = self.lookup.lookup(name.as_str());
        Box::pin(async move {
            let ips = lookup.await?;
            if ips.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "the name has no address").into());
            }
            if ips.len() > MAX_ADDRESSES_PER_NAME {
                return Err(io::Error::other("the name has too many addresses").into());
            }
            // Every address must pass: a name that mixes public and internal addresses is
            // refused whole rather than tried on the public ones.
            for ip in &ips {
                match own_port {
                    Some(port) => policy.check_socket(SocketAddr::new(*ip, port)),
                    None => policy.check_ip(*ip),
                }
                .map_err(Refused)?;
            }
            // Port 0 is replaced by the URL's port.
            let addresses: reqwest::dns::Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addresses)
        })
    }
}

/// What the clients need besides the rules.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    pub request_timeout_ms: u64,
    pub max_idle_per_host: usize,
    pub extra_roots: ExtraRoots,
    pub lookup: NameLookup,
}

/// The worker's clients: one for every port carepay does not serve on, one per port it does.
pub struct EgressClients {
    policy: Arc<EgressPolicy>,
    any_port: reqwest::Client,
    own_ports: Vec<(u16, reqwest::Client)>,
}

impl EgressClients {
    pub fn build(policy: Arc<EgressPolicy>, settings: &ClientSettings) -> anyhow::Result<EgressClients> {
        let client = |own_port: Option<u16>| {
            let resolver = GuardedResolver { policy: policy.clone(), own_port, lookup: settings.lookup.clone() };
            settings
                .extra_roots
                .apply(reqwest::Client::builder())
                .timeout(Duration::from_millis(settings.request_timeout_ms))
                .connect_timeout(Duration::from_millis(settings.request_timeout_ms.min(5_000)))
                // A redirect is a failure: the signed request was for this URL, and following
                // it could carry the callback somewhere its owner never registered (or past
                // the egress rules).
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .dns_resolver(Arc::new(resolver))
                .pool_max_idle_per_host(settings.max_idle_per_host)
                .user_agent(concat!("carepay-callbacks/", env!("CARGO_PKG_VERSION")))
                .build()
        };
        let own_ports = policy
            .own_ports()
            .into_iter()
            .map(|port| Ok((port, client(Some(port))?)))
            .collect::<anyhow::Result<_>>()?;
        Ok(EgressClients { any_port: client(None)?, own_ports, policy })
    }

    /// The client to send to `url` with, or why nothing may be sent there. A literal address
    /// is checked here; a name is checked by the client's resolver when it connects.
    pub fn client_for(&self, url: &EndpointUrl) -> Result<&reqwest::Client, Refused> {
        let Some((host, port)) = url.host_and_port() else { return Err(Refused(Refusal::Unusable)) };
        if let url::Host::Ipv4(_) | url::Host::Ipv6(_) = host {
            self.policy.check_host(&host, port).map_err(Refused)?;
        }
        Ok(self.own_ports.iter().find(|(own, _)| *own == port).map_or(&self.any_port, |(_, client)| client))
    }
}

#[cfg(test)]
mod tests {
    use reqwest::dns::Resolve as _;

    use super::*;
    use crate::domain::network::{AddressClass, Network};

    fn resolver(table: Vec<(&str, Vec<&str>)>, allowed: &[&str], own_port: Option<u16>) -> GuardedResolver {
        let table = table
            .into_iter()
            .map(|(name, ips)| (name.to_owned(), ips.iter().map(|ip| ip.parse().unwrap()).collect()))
            .collect();
        let allowed = allowed.iter().map(|network| Network::parse(network).unwrap()).collect();
        let own = vec!["127.0.0.1:8080".parse().unwrap()];
        GuardedResolver {
            policy: Arc::new(EgressPolicy::new(allowed, own)),
            own_port,
            lookup: NameLookup::fixed(table),
        }
    }

    async fn resolve(resolver: &GuardedResolver, name: &str) -> Result<Vec<SocketAddr>, String> {
        match resolver.resolve(name.parse().unwrap()).await {
            Ok(addresses) => Ok(addresses.collect()),
            Err(error) => Err(error.to_string()),
        }
    }

    #[tokio::test]
    async fn a_name_passes_only_when_every_address_it_resolves_to_does() {
        let table = vec![
            ("public.example", vec!["203.0.114.7", "2400:3200::1"]),
            ("rebinding.example", vec!["203.0.114.7", "127.0.0.1"]),
            ("metadata.example", vec!["::ffff:169.254.169.254"]),
            ("empty.example", vec![]),
        ];
        let guard = resolver(table.clone(), &[], None);
        assert_eq!(
            resolve(&guard, "public.example").await.unwrap(),
            vec!["203.0.114.7:0".parse::<SocketAddr>().unwrap(), "[2400:3200::1]:0".parse().unwrap()]
        );
        assert_eq!(
            resolve(&guard, "rebinding.example").await.unwrap_err(),
            "refused: 127.0.0.1 is a loopback address; callbacks go to public addresses only, unless the operator allows the network"
        );
        assert!(
            resolve(&guard, "metadata.example")
                .await
                .unwrap_err()
                .starts_with("refused: 169.254.169.254 is a link-local")
        );
        assert_eq!(resolve(&guard, "empty.example").await.unwrap_err(), "the name has no address");
        assert_eq!(resolve(&guard, "unknown.example").await.unwrap_err(), "no such name");

        // Allowed networks open, except carepay's own port.
        let allowing = resolver(table.clone(), &["127.0.0.0/8"], None);
        assert_eq!(resolve(&allowing, "rebinding.example").await.unwrap().len(), 2);
        let own_port = resolver(table, &["127.0.0.0/8"], Some(8080));
        assert_eq!(
            resolve(&own_port, "rebinding.example").await.unwrap_err(),
            "refused: 127.0.0.1:8080 is carepay's own address"
        );
    }

    #[tokio::test]
    async fn invalid_names_are_never_looked_up() {
        let error = NameLookup::system().lookup("carepay-demo.INVALID.").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_literal_address_is_checked_before_any_client_is_chosen() {
        let policy = Arc::new(EgressPolicy::new(Vec::new(), vec!["127.0.0.1:8080".parse().unwrap()]));
        let settings = ClientSettings {
            request_timeout_ms: 1_000,
            max_idle_per_host: 1,
            extra_roots: ExtraRoots::default(),
            lookup: NameLookup::fixed(Vec::new()),
        };
        let clients = EgressClients::build(policy, &settings).unwrap();
        let url = |raw: &str| EndpointUrl::parse(raw).unwrap();
        match clients.client_for(&url("http://[::ffff:a9fe:a9fe]/")) {
            Err(Refused(Refusal::Internal { class, .. })) => assert_eq!(class, AddressClass::LinkLocal),
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(clients.client_for(&url("https://billing.example.cn/")).is_ok());
    }
}
