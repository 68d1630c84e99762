//! `carepay sandbox-operator`: the sandbox as its own process, for running carepay against
//! it on one machine. Prints its key id, algorithm and public key so carepay can be told to
//! trust it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Args;

use super::notify::NotifySettings;
use super::{Sandbox, SandboxConfig};
use crate::config::LogConfig;
use crate::operator::signing::{PublicKey, SignatureAlgorithm};

#[derive(Args, Clone, Debug)]
pub struct SandboxOperatorArgs {
    /// Where to listen.
    #[arg(long, env = "CAREPAY_SANDBOX_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Where notifications are POSTed (carepay's operator notification endpoint).
    #[arg(long, env = "CAREPAY_SANDBOX_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// A carepay signing key to trust, as KEY_ID=BASE64 of the raw 32-byte Ed25519 public
    /// key, or KEY_ID=sm2-sm3:BASE64 of a 65-byte uncompressed SM2 one; repeat for rotation
    /// (keys of both algorithms may be trusted at once).
    #[arg(long = "client-public-key", value_name = "KEY_ID=[ALG:]BASE64",
          value_parser = crate::operator::signing::parse_key_entry)]
    pub client_public_keys: Vec<(String, PublicKey)>,
    /// What the sandbox signs its answers and notifications with: `ed25519` or `sm2-sm3`.
    #[arg(long, default_value = "ed25519")]
    pub signing_algorithm: SignatureAlgorithm,
    /// File holding the base64 of the sandbox's 32-byte secret: the Ed25519 seed, or the SM2
    /// private key big-endian (default: a new random key per start).
    #[arg(long)]
    pub signing_key_file: Option<PathBuf>,
    /// The sandbox's signing key id.
    #[arg(long, default_value = "sandbox-1")]
    pub key_id: String,
    /// Multiplies the notification retry schedule (1 = the spec's 15 s, 15 s, 30 s, ...).
    #[arg(long, default_value_t = 1.0)]
    pub notify_time_scale: f64,
    /// Fee withheld from each payment, in parts per million.
    #[arg(long, default_value_t = 0)]
    pub fee_rate_ppm: u32,
    /// How long a payer code ending 1111 waits before it is confirmed.
    #[arg(long, default_value_t = 5_000)]
    pub confirm_delay_ms: u64,
    #[command(flatten)]
    pub log: LogConfig,
}

pub async fn run(args: SandboxOperatorArgs) -> anyhow::Result<()> {
    crate::telemetry::init_logging(args.log.log_format, &args.log.log_filter);
    let signing_secret = match &args.signing_key_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --signing-key-file {}", path.display()))?;
            let secret = BASE64.decode(text.trim()).context("--signing-key-file must hold base64")?;
            let secret: [u8; 32] =
                secret.try_into().map_err(|_| anyhow::anyhow!("--signing-key-file must hold a 32-byte secret"))?;
            Some(secret)
        }
    };
    if !(args.notify_time_scale.is_finite() && args.notify_time_scale > 0.0) {
        anyhow::bail!("--notify-time-scale must be a positive number");
    }
    let config = SandboxConfig {
        signing_key_id: args.key_id.clone(),
        signing_algorithm: args.signing_algorithm,
        signing_secret,
        notify_url: args.notify_url.clone(),
        notify: NotifySettings { time_scale: args.notify_time_scale, ..NotifySettings::default() },
        fee_rate_ppm: args.fee_rate_ppm,
        confirm_delay_ms: args.confirm_delay_ms,
        ..SandboxConfig::default()
    };
    let sandbox =
        Sandbox::try_new(config).map_err(|error| anyhow::anyhow!("--key-id / --signing-key-file: {error}"))?;
    for (key_id, key) in &args.client_public_keys {
        sandbox
            .register_client_key(key_id, key.clone())
            .map_err(|error| anyhow::anyhow!("--client-public-key {key_id}: {error}"))?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", args.listen))?;
    println!("sandbox operator listening on http://{}", listener.local_addr()?);
    println!("operator key id: {}", sandbox.key_id());
    let signing_key = sandbox.verifying_key();
    println!("operator public key ({}, base64): {}", signing_key.algorithm(), signing_key.to_base64());
    tracing::info!(address = %listener.local_addr()?, "sandbox operator listening (in-memory: state lasts as long as the process)");
    tokio::select! {
        result = super::serve(listener, sandbox) => result.context("sandbox operator stopped")?,
        () = crate::server::shutdown_signal() => tracing::info!("sandbox operator stopped"),
    }
    Ok(())
}
