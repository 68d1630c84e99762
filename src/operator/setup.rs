//! Connecting carepay to a wallet operator: a remote one at a URL with its public keys, or
//! the sandbox operator started in-process on a loopback port (the default, so `carepay
//! serve` runs with nothing else installed).

use std::sync::Arc;

use anyhow::Context as _;

use super::client::{OperatorClient, OperatorSettings};
use super::clock::Clock;
use super::sandbox::{Sandbox, SandboxConfig};
use super::signing::{PublicKey, Signer, Verifier};
use crate::app::OperatorLink;

/// Which operator to talk to.
pub enum OperatorTarget {
    /// Start the sandbox operator inside this process.
    InProcess(SandboxConfig),
    /// A real (or separately run) operator: its URL and the keys it signs with.
    /// `allow_plain_http` accepts an `http://` URL to a host other than loopback.
    Remote { base_url: String, public_keys: Vec<(String, PublicKey)>, allow_plain_http: bool },
}

/// A connected operator, and the in-process sandbox when there is one (tests steer it).
pub struct OperatorSetup {
    pub link: OperatorLink,
    pub sandbox: Option<Sandbox>,
    /// Where the in-process sandbox listens: never a callback target (its admin routes
    /// would obey a callback).
    pub sandbox_address: Option<std::net::SocketAddr>,
}

/// An operator base URL that can work, or why not: `https://`, or `http://` to a loopback
/// address (`localhost`, `127.0.0.0/8`, `::1`) or when plain http is allowed; a host, and
/// no user name, password, query or fragment. Answers the URL without a trailing slash.
pub fn remote_base_url(raw: &str, allow_plain_http: bool) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|error| format!("{raw:?} is not an absolute URL ({error})"))?;
    let host = url.host().ok_or_else(|| format!("{raw:?} names no host"))?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        // The URL itself is not repeated: it may hold a password.
        return Err(String::from("must not carry a user name, password, query or fragment"));
    }
    let loopback = match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        url::Host::Domain(name) => crate::domain::network::is_localhost_name(name),
    };
    match url.scheme() {
        "https" => {}
        "http" if loopback || allow_plain_http => {}
        "http" => {
            return Err(format!(
                "{raw:?} is plain http to another host: use https, or set --operator-allow-plain-http \
                 (CAREPAY_OPERATOR_ALLOW_PLAIN_HTTP) for a private link"
            ));
        }
        other => return Err(format!("{raw:?}: the scheme must be https or http, not {other}")),
    }
    Ok(String::from(url).trim_end_matches('/').to_owned())
}

/// Connect. `signer` signs carepay's requests; `notify_url` is where an in-process sandbox
/// sends its notifications (a remote operator is configured on its own side).
pub async fn connect(
    target: OperatorTarget,
    signer: Signer,
    mut settings: OperatorSettings,
    notify_url: Option<String>,
    clock: Clock,
) -> anyhow::Result<OperatorSetup> {
    let verifier = Arc::new(Verifier::new(clock));
    let sandbox = match target {
        OperatorTarget::InProcess(config) => {
            let sandbox = Sandbox::try_new(config).map_err(|error| anyhow::anyhow!("sandbox key: {error:?}"))?;
            sandbox
                .register_client_key(signer.key_id(), signer.verifying_key())
                .map_err(|error| anyhow::anyhow!("registering carepay's key with the sandbox: {error:?}"))?;
            sandbox.set_notify_url(notify_url);
            verifier
                .add_key(&sandbox.key_id(), sandbox.verifying_key())
                .map_err(|error| anyhow::anyhow!("{error:?}"))?;
            let listener =
                tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the sandbox operator")?;
            let address = listener.local_addr()?;
            settings.base_url = format!("http://{address}");
            tracing::info!(url = %settings.base_url, "sandbox operator running in-process");
            tokio::spawn(super::sandbox::serve(listener, sandbox.clone()));
            (Some(sandbox), Some(address))
        }
        OperatorTarget::Remote { base_url, public_keys, allow_plain_http } => {
            settings.base_url = remote_base_url(&base_url, allow_plain_http)
                .map_err(|reason| anyhow::anyhow!("--operator-url (CAREPAY_OPERATOR_URL): {reason}"))?;
            anyhow::ensure!(!public_keys.is_empty(), "--operator-public-key is required with --operator-url");
            for (key_id, key) in public_keys {
                verifier.add_key(&key_id, key).map_err(|error| anyhow::anyhow!("operator key {key_id}: {error:?}"))?;
            }
            (None, None)
        }
    };
    let (sandbox, sandbox_address) = sandbox;
    let client = OperatorClient::new(settings, Arc::new(signer), Arc::clone(&verifier))
        .context("cannot build the operator's HTTP client")?;
    Ok(OperatorSetup { link: OperatorLink { client, verifier }, sandbox, sandbox_address })
}

#[cfg(test)]
mod tests {
    use super::remote_base_url;

    #[test]
    fn only_operator_urls_that_can_work_are_accepted() {
        assert_eq!(remote_base_url("https://ecny.bank.example/api/", false).unwrap(), "https://ecny.bank.example/api");
        assert_eq!(remote_base_url("http://127.0.0.1:8090", false).unwrap(), "http://127.0.0.1:8090");
        assert_eq!(remote_base_url("http://localhost:8090/", false).unwrap(), "http://localhost:8090");
        assert_eq!(remote_base_url("http://[::1]:8090", false).unwrap(), "http://[::1]:8090");
        assert!(remote_base_url("http://10.1.2.3:8090", false).unwrap_err().contains("--operator-allow-plain-http"));
        assert_eq!(remote_base_url("http://10.1.2.3:8090", true).unwrap(), "http://10.1.2.3:8090");
        for bad in [
            "ftp://bank.example",
            "bank.example:443",
            "https://user:pw@bank.example",
            "https://bank.example/?a=1",
            "https://bank.example/#x",
            "unix:/run/operator.sock",
            "",
        ] {
            assert!(remote_base_url(bad, true).is_err(), "{bad:?} accepted");
        }
    }
}
