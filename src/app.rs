//! The application core handed to every transport: the store plus the limits that bound
//! what one request may do. Use cases are `impl App` blocks in their own modules
//! (`directory`, `access`, ...).

use crate::callbacks::secrets::SecretBox;
use crate::domain::access::Principal;
use crate::domain::directory::RegionPath;
use crate::domain::money::Amount;
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::nonces::{DEFAULT_NONCE_CAPACITY, NonceCache};
use crate::operator::client::OperatorClient;
use crate::operator::clock::Clock;
use crate::operator::signing::Verifier;
use crate::payments::PaymentSettings;
use crate::rate_limit::{Rate, RateLimiter, WindowQuota};
use crate::reconciliation::ReconciliationSettings;
use crate::store::Store;
use crate::terminal_cache::{DEFAULT_TERMINAL_CACHE_CAPACITY, TerminalCache};
use std::sync::Arc;

const MS_PER_HOUR: i64 = 3_600_000;

/// Bounds that apply to every use case, from config.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest amount a single payment, refund or transfer may move.
    pub max_transaction_amount: Amount,
    /// Largest page a listing returns.
    pub max_page_size: u32,
    /// Requests one back-office token may make.
    pub token_rate: Rate,
    /// Requests one terminal may make.
    pub terminal_rate: Rate,
    /// Citizen ID numbers one token may reveal per hour.
    pub max_reveals_per_hour: u32,
    /// Failed sign-ins (bearer tokens, console) one client may make per minute, sustained.
    pub sign_in_failures_per_minute: u32,
    /// ... and in a burst.
    pub sign_in_failure_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_transaction_amount: Amount::from_fen(5_000_000).expect("50,000.00 yuan is a valid amount"),
            max_page_size: 200,
            token_rate: Rate { per_second: 50, burst: 100 },
            terminal_rate: Rate { per_second: 50, burst: 100 },
            max_reveals_per_hour: 100,
            sign_in_failures_per_minute: 30,
            sign_in_failure_burst: 20,
        }
    }
}

/// How carepay reaches the wallet operator: the client for calls out, and the verifier of
/// the operator's signed notifications in.
#[derive(Clone, Debug)]
pub struct OperatorLink {
    pub client: OperatorClient,
    pub verifier: Arc<Verifier>,
}

#[derive(Clone, Debug)]
pub struct App {
    pub store: Store,
    pub limits: Limits,
    /// Absent only for offline commands (migrate, token create).
    pub operator: Option<OperatorLink>,
    pub payments: PaymentSettings,
    /// Terminal nonces this instance has accepted (replay protection).
    pub nonces: Arc<NonceCache>,
    /// Terminals as last read (PostgreSQL: checked again by each request's nonce insert).
    pub terminals: Arc<TerminalCache>,
    /// Requests per back-office token.
    pub token_rate: Arc<RateLimiter>,
    /// Requests per terminal.
    pub terminal_rate: Arc<RateLimiter>,
    /// ID-number reveals per token and hour.
    pub reveal_quota: Arc<WindowQuota>,
    /// Failed sign-ins per client; counted only on failure.
    pub sign_in_failures: Arc<RateLimiter>,
    /// Seals secrets kept at rest (callback signing secrets). `App::new` starts with a key
    /// that lives as long as the process; `serve` installs the configured one.
    pub secrets: SecretBox,
    pub reconciliation: ReconciliationSettings,
    /// Bounds of subsidy disbursement (batch size, error list, concurrency and rate).
    pub disbursement: crate::disbursement::DisbursementSettings,
    /// What the payment use cases take as now: the system clock, except where the demo
    /// puts the district's last week in (the operator's clock then moves with it).
    pub clock: Clock,
    /// Where callbacks may be sent: public addresses, the networks the operator allowed, never
    /// carepay's own listening addresses. `App::new` allows public addresses only.
    pub callback_egress: Arc<crate::domain::network::EgressPolicy>,
}

impl App {
    pub fn new(store: Store, limits: Limits) -> App {
        let (token_rate, terminal_rate) = (limits.token_rate, limits.terminal_rate);
        let sign_in_failures =
            RateLimiter::per_minute(limits.sign_in_failures_per_minute, limits.sign_in_failure_burst);
        let reveal_quota = WindowQuota::new(limits.max_reveals_per_hour, MS_PER_HOUR);
        App {
            store,
            limits,
            operator: None,
            payments: PaymentSettings::default(),
            nonces: Arc::new(NonceCache::new(DEFAULT_NONCE_CAPACITY)),
            terminals: Arc::new(TerminalCache::new(DEFAULT_TERMINAL_CACHE_CAPACITY)),
            token_rate: Arc::new(RateLimiter::new(token_rate)),
            terminal_rate: Arc::new(RateLimiter::new(terminal_rate)),
            reveal_quota: Arc::new(reveal_quota),
            sign_in_failures: Arc::new(sign_in_failures),
            secrets: SecretBox::ephemeral(),
            reconciliation: ReconciliationSettings::default(),
            disbursement: crate::disbursement::DisbursementSettings::default(),
            clock: Clock::system(),
            callback_egress: Arc::default(),
        }
    }

    pub fn with_clock(self, clock: Clock) -> App {
        App { clock, ..self }
    }

    /// Now, by [`App::clock`].
    pub(crate) fn now(&self) -> UnixMs {
        UnixMs(self.clock.now_ms())
    }

    pub fn with_operator(mut self, operator: OperatorLink) -> App {
        self.operator = Some(operator);
        self
    }

    /// The configured keys; the store's audit chain is keyed by them from now on.
    pub fn with_secrets(self, secrets: SecretBox) -> App {
        self.store.set_audit_keys(crate::audit::audit_keys(&secrets));
        App { secrets, ..self }
    }
}

/// Refuse a principal whose role may not do `action` at all (checked before any lookup,
/// so it reveals nothing about objects).
pub(crate) fn require(principal: &Principal, action: Action) -> Result<()> {
    if principal.may(action) { Ok(()) } else { Err(Error::RoleNotAllowed { role: principal.role }) }
}

/// Hand an object to the caller only when it lies within their scope. A missing object and
/// one outside the scope give the same answer to a scoped caller, so ids cannot be probed.
pub(crate) fn within_scope<T>(
    principal: &Principal,
    found: Option<T>,
    what: &'static str,
    path: impl Fn(&T) -> &RegionPath,
) -> Result<T> {
    match found {
        Some(object) if principal.sees(path(&object)) => Ok(object),
        None if principal.scope == crate::domain::directory::Scope::All => Err(Error::NotFound { what }),
        _ => Err(Error::OutOfScope),
    }
}
