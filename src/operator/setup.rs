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
    Remote { base_url: String, public_keys: Vec<(String, PublicKey)> },
}

/// A connected operator, and the in-process sandbox when there is one (tests steer it).
pub struct OperatorSetup {
    pub link: OperatorLink,
    pub sandbox: Option<Sandbox>,
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
            settings.base_url = format!("http://{}", listener.local_addr()?);
            tracing::info!(url = %settings.base_url, "sandbox operator running in-process");
            tokio::spawn(super::sandbox::serve(listener, sandbox.clone()));
            Some(sandbox)
        }
        OperatorTarget::Remote { base_url, public_keys } => {
            anyhow::ensure!(!public_keys.is_empty(), "--operator-public-key is required with --operator-url");
            for (key_id, key) in public_keys {
                verifier.add_key(&key_id, key).map_err(|error| anyhow::anyhow!("operator key {key_id}: {error:?}"))?;
            }
            settings.base_url = base_url;
            None
        }
    };
    let client = OperatorClient::new(settings, Arc::new(signer), Arc::clone(&verifier));
    Ok(OperatorSetup { link: OperatorLink { client, verifier }, sandbox })
}
