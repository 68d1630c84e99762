//! Configuration: every setting has a default that runs with no setup, and is overridden
//! by an environment variable or a command-line flag (flag wins). Values are validated at
//! start; a bad one stops the process with a message naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::app::Limits;
use crate::callbacks::secrets::SecretBox;
use crate::callbacks::worker::WorkerSettings;
use crate::domain::callbacks::{DEFAULT_RETRY_SCHEDULE_MS, MAX_RESPONSE_EXCERPT_BYTES, RetrySchedule};
use crate::domain::money::Amount;
use crate::domain::network::{EgressPolicy, Network};
use crate::http::HttpSettings;
use crate::store::PoolSettings;
use crate::store::callbacks::HealthRules;
use crate::telemetry::LogFormat;
use crate::tls::ExtraRoots;

#[derive(Args, Clone, Debug)]
pub struct DatabaseConfig {
    /// PostgreSQL (`postgres://user@host/db`) or SQLite (`sqlite://path?mode=rwc`) url.
    /// When unset, carepay uses the SQLite file at --sqlite-path.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The embedded database file used when no database url is given.
    #[arg(long, env = "CAREPAY_SQLITE_PATH", default_value = "./carepay.db")]
    pub sqlite_path: PathBuf,

    /// Most database connections this instance holds open.
    #[arg(long, env = "CAREPAY_DB_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=500))]
    pub db_max_connections: u32,

    /// How long a request waits for a free database connection before failing.
    #[arg(long, env = "CAREPAY_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub db_acquire_timeout_ms: u64,

    /// PostgreSQL: native connections kept beside the pool for bulk copies (statement
    /// files, batch uploads), opened when first needed.
    #[arg(long, env = "CAREPAY_DB_BULK_CONNECTIONS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=32))]
    pub db_bulk_connections: u32,
}

impl DatabaseConfig {
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => crate::store::Store::sqlite_url(&self.sqlite_path),
        }
    }

    pub fn pool_settings(&self) -> PoolSettings {
        PoolSettings {
            max_connections: self.db_max_connections,
            acquire_timeout_ms: self.db_acquire_timeout_ms,
            bulk_max_connections: self.db_bulk_connections,
            ..PoolSettings::default()
        }
    }
}

/// How payment writes share transactions: only `serve` (and the demo) take payments.
#[derive(Args, Clone, Debug)]
pub struct GroupCommitConfig {
    /// Most payment writes (nonces, starts, outcomes) that share one transaction.
    #[arg(long, env = "CAREPAY_GROUP_COMMIT_MAX_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub group_commit_max_batch: u64,

    /// Payment writes that may wait for a transaction, per lane; beyond it callers wait.
    #[arg(long, env = "CAREPAY_GROUP_COMMIT_QUEUE", default_value_t = 4_096,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub group_commit_queue: u64,

    /// PostgreSQL: transactions starting payments written at once.
    #[arg(long, env = "CAREPAY_GROUP_COMMIT_BEGIN_WRITERS", default_value_t = 2,
          value_parser = clap::value_parser!(u64).range(1..=16))]
    pub group_commit_begin_writers: u64,
}

impl GroupCommitConfig {
    pub fn settings(&self) -> crate::store::group_commit::GroupCommitSettings {
        crate::store::group_commit::GroupCommitSettings {
            max_batch: self.group_commit_max_batch as usize,
            queue: self.group_commit_queue as usize,
            postgres_begin_writers: self.group_commit_begin_writers as usize,
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct ServeConfig {
    /// Address for the REST API (and, on the same port, terminal gRPC).
    #[arg(long, env = "CAREPAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "CAREPAY_MAX_BODY_BYTES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1_024..=268_435_456))]
    pub max_body_bytes: u64,

    /// Longest a request may take before it is abandoned: 408 while its body was still
    /// arriving, 503 otherwise.
    #[arg(long, env = "CAREPAY_REQUEST_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub request_timeout_ms: u64,

    /// Longest request target (path and query) accepted, in bytes; beyond: 414. Below
    /// hyper's own 64 KiB, which it answers with an empty body.
    #[arg(long, env = "CAREPAY_MAX_URI_BYTES", default_value_t = 8_192,
          value_parser = clap::value_parser!(u64).range(256..=65_000))]
    pub max_uri_bytes: u64,

    /// Most bytes of request headers accepted; beyond: 431. Below hyper's own 400 KiB head
    /// buffer, which it answers with an empty body.
    #[arg(long, env = "CAREPAY_MAX_HEADER_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1_024..=262_144))]
    pub max_header_bytes: u64,

    /// Back-office API requests (bearer tokens) served at once; beyond this, a short wait,
    /// then 503 with Retry-After. Terminals, operator notifications, the console and the ops
    /// routes have lanes of their own (see the `--*-max-in-flight` settings).
    #[arg(long, env = "CAREPAY_MAX_IN_FLIGHT_REQUESTS", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_in_flight_requests: u64,

    /// Largest amount one payment, refund or transfer may move, in yuan.
    #[arg(long, env = "CAREPAY_MAX_TRANSACTION_AMOUNT", default_value = "50000.00", value_parser = parse_amount)]
    pub max_transaction_amount: Amount,

    /// Requests per second one back-office token may make (sustained); beyond: 429.
    #[arg(long, env = "CAREPAY_TOKEN_RATE_PER_S", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub token_rate_per_s: u32,

    /// Requests one back-office token may make in a burst.
    #[arg(long, env = "CAREPAY_TOKEN_RATE_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub token_rate_burst: u32,

    /// Citizen ID numbers one token may reveal in clear per hour; beyond: 429 with `Retry-After`.
    #[arg(long, env = "CAREPAY_MAX_REVEALS_PER_HOUR", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_reveals_per_hour: u32,

    /// Requests per second one terminal may make (sustained); beyond: RESOURCE_EXHAUSTED.
    #[arg(long, env = "CAREPAY_TERMINAL_RATE_PER_S", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub terminal_rate_per_s: u32,

    /// Requests one terminal may make in a burst.
    #[arg(long, env = "CAREPAY_TERMINAL_RATE_BURST", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub terminal_rate_burst: u32,

    /// How long to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, env = "CAREPAY_SHUTDOWN_GRACE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub shutdown_grace_ms: u64,

    /// How often the audit chain's head is published as a signed checkpoint in the log (only
    /// when it moved), to keep outside the database; also published with every export.
    #[arg(long, env = "CAREPAY_AUDIT_CHECKPOINT_INTERVAL_S", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub audit_checkpoint_interval_s: u64,

    /// Mark the web console's cookies `Secure`: set this when /console is reached over https
    /// (directly or behind a TLS-terminating proxy).
    #[arg(long, env = "CAREPAY_CONSOLE_SECURE_COOKIE")]
    pub console_secure_cookie: bool,

    /// PEM file of CA certificates trusted for https (the wallet operator and callback
    /// receivers) besides the built-in Mozilla roots: for on-premises CAs. Refused at start
    /// when unreadable or without a certificate.
    #[arg(long, env = "CAREPAY_EXTRA_CA_FILE")]
    pub extra_ca_file: Option<PathBuf>,

    #[command(flatten)]
    pub admission: AdmissionConfig,

    #[command(flatten)]
    pub log: LogConfig,

    #[command(flatten)]
    pub callbacks: CallbackConfig,

    #[command(flatten)]
    pub disbursement: DisbursementConfig,

    #[command(flatten)]
    pub group_commit: GroupCommitConfig,
}

/// What one client, connection and request may hold: the lanes requests are admitted to,
/// each caller's share of its lane, connection timeouts, the body rate floor, and the
/// throttle on failed sign-ins.
#[derive(Args, Clone, Debug)]
pub struct AdmissionConfig {
    /// Back-office requests one token may have in flight; beyond: 429.
    #[arg(long, env = "CAREPAY_MAX_IN_FLIGHT_PER_TOKEN", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight_per_token: u32,

    /// Terminal (gRPC) requests served at once.
    #[arg(long, env = "CAREPAY_TERMINAL_MAX_IN_FLIGHT", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub terminal_max_in_flight: u64,

    /// Requests one terminal may have in flight; beyond: RESOURCE_EXHAUSTED.
    #[arg(long, env = "CAREPAY_MAX_IN_FLIGHT_PER_TERMINAL", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_in_flight_per_terminal: u32,

    /// Operator notifications received at once.
    #[arg(long, env = "CAREPAY_NOTIFICATIONS_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub notifications_max_in_flight: u64,

    /// Web console requests served at once.
    #[arg(long, env = "CAREPAY_CONSOLE_MAX_IN_FLIGHT", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub console_max_in_flight: u64,

    /// /healthz, /readyz and /metrics requests served at once.
    #[arg(long, env = "CAREPAY_OPS_MAX_IN_FLIGHT", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub ops_max_in_flight: u64,

    /// Requests without credentials (OpenAPI document, unknown routes, gRPC health and
    /// reflection) served at once.
    #[arg(long, env = "CAREPAY_UNAUTHENTICATED_MAX_IN_FLIGHT", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub unauthenticated_max_in_flight: u64,

    /// How long a request waits for a place in a full lane before 503.
    #[arg(long, env = "CAREPAY_LANE_WAIT_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub lane_wait_ms: u64,

    /// Longest a client may take to send a request's headers (and, once connected, its
    /// first request) before the connection is closed.
    #[arg(long, env = "CAREPAY_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub header_read_timeout_ms: u64,

    /// A connection with no request in flight for this long is closed (HTTP/2: GOAWAY).
    #[arg(long, env = "CAREPAY_IDLE_CONNECTION_TIMEOUT_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1_000..=86_400_000))]
    pub idle_connection_timeout_ms: u64,

    /// Connections open at once; further ones wait in the listen backlog.
    #[arg(long, env = "CAREPAY_MAX_CONNECTIONS", default_value_t = 4_096,
          value_parser = clap::value_parser!(u64).range(16..=1_000_000))]
    pub max_connections: u64,

    /// Slowest a request body may arrive, in bytes a second (measured over each window of
    /// waiting); slower: 408.
    #[arg(long, env = "CAREPAY_BODY_MIN_RATE_BYTES_PER_S", default_value_t = 1_024,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub body_min_rate_bytes_per_s: u64,

    /// The window over which the body rate is measured (and the grace a body starts with).
    #[arg(long, env = "CAREPAY_BODY_RATE_WINDOW_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub body_rate_window_ms: u64,

    /// Failed sign-ins (bearer tokens, console) one client may make per minute, sustained;
    /// beyond: 429 before the token is even looked up. Successful sign-ins are not counted.
    #[arg(long, env = "CAREPAY_SIGN_IN_FAILURES_PER_MINUTE", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub sign_in_failures_per_minute: u32,

    /// Failed sign-ins one client may make in a burst.
    #[arg(long, env = "CAREPAY_SIGN_IN_FAILURE_BURST", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub sign_in_failure_burst: u32,

    /// Proxies (addresses or networks, comma-separated: `10.0.0.0/8,192.0.2.7`) whose
    /// `X-Forwarded-For` names the client for per-client limits. Default: none; the peer
    /// address is the client.
    #[arg(long, env = "CAREPAY_TRUSTED_PROXIES", value_delimiter = ',',
          value_parser = crate::http::client_addr::ProxyNet::parse)]
    pub trusted_proxies: Vec<crate::http::client_addr::ProxyNet>,
}

/// Subsidy disbursement bounds.
#[derive(Args, Clone, Debug)]
pub struct DisbursementConfig {
    /// Most beneficiary lines in one batch file.
    #[arg(long, env = "CAREPAY_BATCH_MAX_LINES", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub batch_max_lines: u64,

    /// Largest batch file upload, in bytes (a 1,000,000-line file is about 80 MB).
    #[arg(long, env = "CAREPAY_BATCH_MAX_UPLOAD_BYTES", default_value_t = 200 * 1_048_576,
          value_parser = clap::value_parser!(u64).range(1_024..=4_294_967_296))]
    pub batch_max_upload_bytes: u64,

    /// Problems listed in full when a batch file is refused (all are counted).
    #[arg(long, env = "CAREPAY_BATCH_MAX_LISTED_ERRORS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub batch_max_listed_errors: u64,

    /// Transfers in flight towards the operator, per instance.
    #[arg(long, env = "CAREPAY_TRANSFER_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub transfer_concurrency: u64,

    /// Transfers started per second, per instance.
    #[arg(long, env = "CAREPAY_TRANSFER_RATE_PER_S", default_value_t = 2_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub transfer_rate_per_s: u32,

    /// How long a claimed batch line belongs to an instance before another may take it over.
    #[arg(long, env = "CAREPAY_TRANSFER_LEASE_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(i64).range(1_000..=3_600_000))]
    pub transfer_lease_ms: i64,

    /// Wait before asking the operator again about a transfer whose outcome is unknown.
    #[arg(long, env = "CAREPAY_TRANSFER_QUERY_DELAY_MS", default_value_t = 2_000,
          value_parser = clap::value_parser!(i64).range(10..=3_600_000))]
    pub transfer_query_delay_ms: i64,
}

impl DisbursementConfig {
    pub fn settings(&self) -> crate::disbursement::DisbursementSettings {
        crate::disbursement::DisbursementSettings {
            max_batch_lines: self.batch_max_lines,
            max_upload_bytes: self.batch_max_upload_bytes,
            max_listed_errors: usize::try_from(self.batch_max_listed_errors).unwrap_or(usize::MAX),
            concurrency: usize::try_from(self.transfer_concurrency).unwrap_or(1),
            rate_per_s: self.transfer_rate_per_s,
            lease_ms: self.transfer_lease_ms,
            query_delay_ms: self.transfer_query_delay_ms,
            ..crate::disbursement::DisbursementSettings::default()
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct LogConfig {
    /// Log line format.
    #[arg(long, env = "CAREPAY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Which events to log (tracing `EnvFilter` syntax).
    #[arg(long, env = "CAREPAY_LOG", default_value = "info,sqlx=warn")]
    pub log_filter: String,
}

fn parse_amount(raw: &str) -> Result<Amount, String> {
    Amount::parse(raw).and_then(Amount::ensure_nonzero).map_err(|error| error.to_string())
}

impl ServeConfig {
    /// The extra trusted CAs, read and checked now.
    pub fn extra_roots(&self) -> anyhow::Result<ExtraRoots> {
        match &self.extra_ca_file {
            Some(path) => ExtraRoots::load(path, "--extra-ca-file (CAREPAY_EXTRA_CA_FILE)"),
            None => Ok(ExtraRoots::default()),
        }
    }

    pub fn http_settings(&self) -> Result<HttpSettings, String> {
        let admission = &self.admission;
        let size = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        if u64::from(admission.max_in_flight_per_token) > self.max_in_flight_requests {
            return Err(String::from(
                "--max-in-flight-per-token (CAREPAY_MAX_IN_FLIGHT_PER_TOKEN) must not exceed --max-in-flight-requests",
            ));
        }
        if u64::from(admission.max_in_flight_per_terminal) > admission.terminal_max_in_flight {
            return Err(String::from(
                "--max-in-flight-per-terminal (CAREPAY_MAX_IN_FLIGHT_PER_TERMINAL) must not exceed --terminal-max-in-flight",
            ));
        }
        Ok(HttpSettings {
            max_body_bytes: size(self.max_body_bytes),
            request_timeout_ms: self.request_timeout_ms,
            max_in_flight_requests: size(self.max_in_flight_requests),
            lanes: crate::http::lanes::LaneSettings {
                per_token_max_in_flight: admission.max_in_flight_per_token,
                terminal_max_in_flight: size(admission.terminal_max_in_flight),
                per_terminal_max_in_flight: admission.max_in_flight_per_terminal,
                notifications_max_in_flight: size(admission.notifications_max_in_flight),
                console_max_in_flight: size(admission.console_max_in_flight),
                ops_max_in_flight: size(admission.ops_max_in_flight),
                unauthenticated_max_in_flight: size(admission.unauthenticated_max_in_flight),
                lane_wait_ms: admission.lane_wait_ms,
            },
            body_rate: crate::http::body_rate::BodyRate {
                min_bytes_per_s: admission.body_min_rate_bytes_per_s,
                window_ms: admission.body_rate_window_ms,
            },
            header_read_timeout_ms: admission.header_read_timeout_ms,
            idle_connection_timeout_ms: admission.idle_connection_timeout_ms,
            max_connections: size(admission.max_connections),
            trusted_proxies: crate::http::client_addr::TrustedProxies(admission.trusted_proxies.clone()),
            console: crate::console::ConsoleSettings { secure_cookie: self.console_secure_cookie },
            head: crate::http::head_limits::HeadLimits {
                max_uri_bytes: size(self.max_uri_bytes),
                max_header_bytes: size(self.max_header_bytes),
            },
        })
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_transaction_amount: self.max_transaction_amount,
            token_rate: crate::rate_limit::Rate { per_second: self.token_rate_per_s, burst: self.token_rate_burst },
            terminal_rate: crate::rate_limit::Rate {
                per_second: self.terminal_rate_per_s,
                burst: self.terminal_rate_burst,
            },
            max_reveals_per_hour: self.max_reveals_per_hour,
            sign_in_failures_per_minute: self.admission.sign_in_failures_per_minute,
            sign_in_failure_burst: self.admission.sign_in_failure_burst,
            ..Limits::default()
        }
    }
}

/// How to reach the wallet operator.
#[derive(Args, Clone, Debug)]
pub struct OperatorConfig {
    /// The operator's base URL. When unset, the sandbox operator runs in-process.
    /// `https://` (or `http://` to a loopback address, or with --operator-allow-plain-http).
    #[arg(long, env = "CAREPAY_OPERATOR_URL")]
    pub operator_url: Option<String>,

    /// Accept an `http://` operator URL on a non-loopback host (a private link, or a
    /// TLS-terminating sidecar): requests and answers are signed, but travel in clear.
    #[arg(long, env = "CAREPAY_OPERATOR_ALLOW_PLAIN_HTTP")]
    pub operator_allow_plain_http: bool,

    /// The operator's public signing key(s) as KEY_ID=BASE64 (Ed25519) or KEY_ID=sm2-sm3:BASE64
    /// (SM2, 65-byte uncompressed point); repeat or separate with commas. Each key id is bound
    /// to its algorithm; keys of both may be trusted at once. Required with --operator-url.
    #[arg(long = "operator-public-key", env = "CAREPAY_OPERATOR_PUBLIC_KEYS", value_delimiter = ',',
          value_parser = crate::operator::signing::parse_key_entry)]
    pub operator_public_keys: Vec<(String, crate::operator::signing::PublicKey)>,

    /// File holding the base64 32-byte secret carepay signs operator requests with: an Ed25519
    /// seed, or with `--operator-signing-algorithm sm2-sm3` the SM2 private key big-endian.
    /// When unset, a fresh key is generated at start (fine for the in-process sandbox).
    #[arg(long, env = "CAREPAY_OPERATOR_SIGNING_KEY_FILE")]
    pub operator_signing_key_file: Option<PathBuf>,

    /// What carepay signs operator requests with: `ed25519` (the spec's) or `sm2-sm3`.
    #[arg(long, env = "CAREPAY_OPERATOR_SIGNING_ALGORITHM", default_value = "ed25519",
          value_parser = parse_signing_algorithm)]
    pub operator_signing_algorithm: crate::operator::signing::SignatureAlgorithm,

    /// The key id the operator knows carepay's signing key by.
    #[arg(long, env = "CAREPAY_OPERATOR_KEY_ID", default_value = "carepay-1")]
    pub operator_key_id: String,

    /// Longest one operator call may take; past it the outcome is unknown and resolved by query.
    #[arg(long, env = "CAREPAY_OPERATOR_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub operator_timeout_ms: u64,

    /// Operator calls in flight at once from this instance.
    #[arg(long, env = "CAREPAY_OPERATOR_MAX_IN_FLIGHT", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub operator_max_in_flight: u64,

    /// How often the payments worker looks for outcomes to resolve.
    #[arg(long, env = "CAREPAY_PAYMENTS_POLL_INTERVAL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub payments_poll_interval_ms: u64,

    /// How many days terminal request ids are remembered for idempotency.
    #[arg(long, env = "CAREPAY_IDEMPOTENCY_RETENTION_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=365))]
    pub idempotency_retention_days: u64,

    /// PostgreSQL: how long a terminal read for one request serves the next (each request's
    /// nonce insert still checks the terminal's version, so changes apply at once).
    #[arg(long, env = "CAREPAY_TERMINAL_CACHE_TTL_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub terminal_cache_ttl_ms: u64,
}

/// An algorithm carepay can sign with (it verifies ECDSA P-256 but does not sign with it).
fn parse_signing_algorithm(raw: &str) -> Result<crate::operator::signing::SignatureAlgorithm, String> {
    use crate::operator::signing::SignatureAlgorithm;
    match raw.parse()? {
        SignatureAlgorithm::EcdsaP256Sha256 => Err(String::from("carepay signs with ed25519 or sm2-sm3")),
        algorithm => Ok(algorithm),
    }
}

impl OperatorConfig {
    pub fn client_settings(&self, extra_roots: &ExtraRoots) -> crate::operator::client::OperatorSettings {
        crate::operator::client::OperatorSettings {
            timeout_ms: self.operator_timeout_ms,
            max_in_flight: usize::try_from(self.operator_max_in_flight).unwrap_or(usize::MAX),
            extra_roots: extra_roots.clone(),
            ..Default::default()
        }
    }

    pub fn payment_settings(&self) -> crate::payments::PaymentSettings {
        let defaults = crate::payments::PaymentSettings::default();
        crate::payments::PaymentSettings {
            // The request owns its payment a little longer than one operator call can take.
            request_lease_ms: i64::try_from(self.operator_timeout_ms).unwrap_or(i64::MAX / 2) + 5_000,
            idempotency_retention_ms: i64::try_from(self.idempotency_retention_days).unwrap_or(365) * 86_400_000,
            terminal_cache_ttl_ms: i64::try_from(self.terminal_cache_ttl_ms).unwrap_or(i64::MAX),
            ..defaults
        }
    }

    pub fn worker_settings(&self) -> crate::payments::worker::WorkerSettings {
        crate::payments::worker::WorkerSettings {
            poll_interval_ms: self.payments_poll_interval_ms,
            ..Default::default()
        }
    }
}

/// Callback delivery (Standard Webhooks) and the key that seals secrets at rest.
#[derive(Args, Clone, Debug)]
pub struct CallbackConfig {
    /// Callback requests in flight at once, per instance.
    #[arg(long, env = "CAREPAY_CALLBACK_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=1_024))]
    pub callback_concurrency: u64,

    /// Longest one callback request may take (connect, send, response).
    #[arg(long, env = "CAREPAY_CALLBACK_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=120_000))]
    pub callback_request_timeout_ms: u64,

    /// How often an idle worker looks for due callbacks.
    #[arg(long, env = "CAREPAY_CALLBACK_POLL_INTERVAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub callback_poll_interval_ms: u64,

    /// How long a claimed callback stays with its instance; after a crash, how long until
    /// another instance (or the restarted one) takes it over. Must exceed the request timeout.
    #[arg(long, env = "CAREPAY_CALLBACK_LEASE_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(500..=3_600_000))]
    pub callback_lease_ms: u64,

    /// Most callbacks claimed per round and most outcomes recorded per transaction.
    #[arg(long, env = "CAREPAY_CALLBACK_BATCH_SIZE", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=5_000))]
    pub callback_batch_size: u64,

    /// Failed attempts in a row after which an endpoint is disabled (once the failure window
    /// has also passed).
    #[arg(long, env = "CAREPAY_CALLBACK_FAILURE_THRESHOLD", default_value_t = 20,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub callback_failure_threshold: u64,

    /// How long an endpoint must have been failing without a success before it is disabled.
    #[arg(long, env = "CAREPAY_CALLBACK_FAILURE_WINDOW_MS", default_value_t = 172_800_000,
          value_parser = clap::value_parser!(u64).range(0..=2_592_000_000))]
    pub callback_failure_window_ms: u64,

    /// Delays before each retry, comma-separated milliseconds (default: 5 s, 5 min, 30 min,
    /// 2 h, 5 h, then 10 h six times: about three days).
    #[arg(long, env = "CAREPAY_CALLBACK_RETRY_SCHEDULE_MS", default_value_t = default_schedule(),
          value_parser = parse_schedule)]
    pub callback_retry_schedule_ms: ScheduleArg,

    /// Networks callbacks may reach although they are not public (loopback, private,
    /// link-local, ...), for on-premises receivers and tests: comma-separated CIDRs or
    /// addresses (`10.20.0.0/16,fd00::/8`). Default: none, public addresses only. carepay's
    /// own listening address is refused whatever this says.
    #[arg(long = "callback-allowed-network", env = "CAREPAY_CALLBACK_ALLOWED_NETWORKS", value_delimiter = ',',
          value_parser = Network::parse)]
    pub callback_allowed_networks: Vec<Network>,

    /// Bytes of a receiver's answer kept with each attempt, for its owner to read.
    #[arg(long, env = "CAREPAY_CALLBACK_RESPONSE_EXCERPT_BYTES", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(0..=MAX_RESPONSE_EXCERPT_BYTES as u64))]
    pub callback_response_excerpt_bytes: u64,

    #[command(flatten)]
    pub keys: SecretKeyConfig,
}

/// The keys that seal secrets and personal data at rest.
#[derive(Args, Clone, Debug)]
pub struct SecretKeyConfig {
    /// Keys sealing secrets at rest (callback secrets, citizen ID numbers): base64 of 32 bytes,
    /// or several `id:BASE64` entries separated by commas, the current (sealing) key first and
    /// the ones it replaced after it. Every instance sharing a database needs the same keys.
    #[arg(long, env = "CAREPAY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Where the keys are kept when --secret-key is not given (one `id:BASE64` per line, the
    /// current key first); created (mode 0600) when missing. Default: next to the SQLite
    /// database (`carepay.key`).
    #[arg(long, env = "CAREPAY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,
}

impl SecretKeyConfig {
    /// The key sealing secrets at rest: given, or read from (or generated into) the key file.
    pub fn secret_box(&self, database: &DatabaseConfig) -> anyhow::Result<SecretBox> {
        if let Some(key) = &self.secret_key {
            return SecretBox::from_key_list(key)
                .map_err(|error| anyhow::anyhow!("--secret-key (CAREPAY_SECRET_KEY): {error}"));
        }
        let path = self.secret_key_file.clone().unwrap_or_else(|| database.sqlite_path.with_extension("key"));
        let (secrets, created) = SecretBox::from_key_file(&path)
            .map_err(|error| anyhow::anyhow!("--secret-key-file (CAREPAY_SECRET_KEY_FILE): {error}"))?;
        if created {
            tracing::warn!(path = %path.display(), "generated a new secret key file (keep it: without it stored callback secrets cannot be used)");
        } else {
            tracing::info!(path = %path.display(), "secret key read from its file");
        }
        if database.database_url.is_some() {
            tracing::warn!(
                "with a shared database, set CAREPAY_SECRET_KEY (the same on every instance) rather than a key file"
            );
        }
        Ok(secrets)
    }
}

/// The retry schedule as clap holds it (printable, for `--help`).
#[derive(Clone, Debug)]
pub struct ScheduleArg(pub RetrySchedule);

impl std::fmt::Display for ScheduleArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let delays: Vec<String> = self.0.delays_ms().iter().map(i64::to_string).collect();
        f.write_str(&delays.join(","))
    }
}

fn default_schedule() -> ScheduleArg {
    ScheduleArg(RetrySchedule::new(DEFAULT_RETRY_SCHEDULE_MS.to_vec()).expect("the default schedule is valid"))
}

fn parse_schedule(raw: &str) -> Result<ScheduleArg, String> {
    let delays = raw
        .split(',')
        .map(|part| part.trim().parse::<i64>().map_err(|_| format!("{part:?} is not a number of milliseconds")))
        .collect::<Result<Vec<_>, _>>()?;
    RetrySchedule::new(delays).map(ScheduleArg).map_err(|error| error.to_string())
}

impl CallbackConfig {
    /// The egress rules: the allowed networks, and `own`, the addresses this instance serves on.
    pub fn egress_policy(&self, own: Vec<SocketAddr>) -> EgressPolicy {
        EgressPolicy::new(self.callback_allowed_networks.clone(), own)
    }

    pub fn worker_settings(&self, extra_roots: &ExtraRoots) -> Result<WorkerSettings, String> {
        if self.callback_lease_ms <= self.callback_request_timeout_ms {
            return Err(String::from(
                "--callback-lease-ms (CAREPAY_CALLBACK_LEASE_MS) must exceed --callback-request-timeout-ms",
            ));
        }
        let as_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        Ok(WorkerSettings {
            concurrency: usize::try_from(self.callback_concurrency).unwrap_or(usize::MAX),
            request_timeout_ms: self.callback_request_timeout_ms,
            poll_interval_ms: self.callback_poll_interval_ms,
            lease_ms: as_i64(self.callback_lease_ms),
            batch_size: u32::try_from(self.callback_batch_size).unwrap_or(u32::MAX),
            health: HealthRules {
                failure_threshold: as_i64(self.callback_failure_threshold),
                failure_window_ms: as_i64(self.callback_failure_window_ms),
            },
            schedule: self.callback_retry_schedule_ms.0.clone(),
            response_excerpt_bytes: usize::try_from(self.callback_response_excerpt_bytes).unwrap_or(0),
            extra_roots: extra_roots.clone(),
            ..WorkerSettings::default()
        })
    }
}

/// Daily reconciliation against the operator's statements.
#[derive(Args, Clone, Debug)]
pub struct ReconciliationConfig {
    /// When the previous day's statements are fetched, `HH:MM` in Asia/Shanghai.
    #[arg(long, env = "CAREPAY_RECONCILE_FETCH_AT", default_value = "10:30", value_parser = parse_time_of_day)]
    pub reconcile_fetch_at: u32,

    /// Minutes before a statement the operator has not generated yet is asked for again.
    #[arg(long, env = "CAREPAY_RECONCILE_RETRY_MINUTES", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=1_440))]
    pub reconcile_retry_minutes: u64,

    /// Days after a business day ends that a record missing from the statement is still
    /// "expected" (T+2); after that it is a discrepancy.
    #[arg(long, env = "CAREPAY_RECONCILE_GRACE_DAYS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=30))]
    pub reconcile_grace_days: u32,

    /// The operator's fee on each payment, in millionths of the amount (its tariff).
    #[arg(long, env = "CAREPAY_RECONCILE_FEE_RATE_PPM", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub reconcile_fee_rate_ppm: u32,

    /// A JSON file of fee tariffs per wallet and method (rate in ppm, minimum, maximum; see
    /// the README's "Fees"), over the flat rate above. Read once at start; a bad file stops it.
    #[arg(long, env = "CAREPAY_FEE_TARIFF_FILE")]
    pub fee_tariff_file: Option<std::path::PathBuf>,
}

/// `HH:MM` as minutes after midnight.
fn parse_time_of_day(raw: &str) -> Result<u32, String> {
    let (hours, minutes) = raw.split_once(':').ok_or("expected HH:MM")?;
    let hours: u32 = hours.parse().map_err(|_| "expected HH:MM")?;
    let minutes: u32 = minutes.parse().map_err(|_| "expected HH:MM")?;
    if hours > 23 || minutes > 59 {
        return Err(String::from("expected a time of day, 00:00 to 23:59"));
    }
    Ok(hours * 60 + minutes)
}

impl ReconciliationConfig {
    pub fn settings(&self) -> anyhow::Result<crate::reconciliation::ReconciliationSettings> {
        use crate::domain::fees::{Tariff, Tariffs};
        let flat = Tariff::flat(self.reconcile_fee_rate_ppm);
        let tariffs = match &self.fee_tariff_file {
            None => Tariffs { default: flat, wallets: Default::default() },
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| anyhow::anyhow!("--fee-tariff-file {}: {error}", path.display()))?;
                Tariffs::from_json(&text, flat)
                    .map_err(|error| anyhow::anyhow!("--fee-tariff-file {}: {error}", path.display()))?
            }
        };
        Ok(crate::reconciliation::ReconciliationSettings {
            tariffs: std::sync::Arc::new(tariffs),
            grace_days: self.reconcile_grace_days,
            ..Default::default()
        })
    }

    pub fn fetch_settings(&self) -> crate::reconciliation::fetch::FetchSettings {
        crate::reconciliation::fetch::FetchSettings {
            at_minute_of_day: self.reconcile_fetch_at,
            retry_after_ms: i64::try_from(self.reconcile_retry_minutes).unwrap_or(30) * 60_000,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod operator_key_tests {
    use clap::Parser as _;

    use super::OperatorConfig;
    use crate::operator::signing::SignatureAlgorithm;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        operator: OperatorConfig,
    }

    const SM2_KEY: &str = "BAn53zEeVCGhUN19Fh5LxcZyF5+tGDP8B2uwj/NW81AgzOpJDOJndaUtxupxjMGqYArtBfvzXghKZjL2By2prRM=";
    const ED25519_KEY: &str = "AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw=";

    #[test]
    fn operator_keys_of_both_algorithms_are_named_and_bad_ones_stop_the_start() {
        let keys = format!("bank-ed={ED25519_KEY},bank-sm2=sm2-sm3:{SM2_KEY}");
        let cli =
            Cli::try_parse_from(["carepay", "--operator-public-key", &keys, "--operator-signing-algorithm", "sm2-sm3"])
                .unwrap();
        let algorithms: Vec<_> =
            cli.operator.operator_public_keys.iter().map(|(id, key)| (id.as_str(), key.algorithm())).collect();
        assert_eq!(algorithms, [("bank-ed", SignatureAlgorithm::Ed25519), ("bank-sm2", SignatureAlgorithm::Sm2Sm3)]);
        assert_eq!(cli.operator.operator_signing_algorithm, SignatureAlgorithm::Sm2Sm3);
        assert_eq!(
            Cli::try_parse_from(["carepay"]).unwrap().operator.operator_signing_algorithm,
            SignatureAlgorithm::Ed25519
        );

        let refused = |args: &[&str]| Cli::try_parse_from([&["carepay"], args].concat()).err().unwrap().to_string();
        let mismatched = refused(&["--operator-public-key", &format!("bank=sm2-sm3:{ED25519_KEY}")]);
        assert!(mismatched.contains("--operator-public-key") && mismatched.contains("wrong length"), "{mismatched}");
        let verify_only = refused(&["--operator-signing-algorithm", "ecdsa-p256-sha256"]);
        assert!(verify_only.contains("--operator-signing-algorithm"), "{verify_only}");
    }
}
