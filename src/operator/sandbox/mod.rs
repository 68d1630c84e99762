//! The sandbox operator: a faithful, in-memory implementation of `operator-api.md` with
//! fault injection, so carepay runs and is tested on one machine.
//!
//! **It is a sandbox.** State (wallets, trades, refunds, transfers, statements) lives in
//! memory for as long as the process does; nothing is persisted. The `/sandbox/...` admin
//! routes are not part of the spec, are not signed, and must only be reachable by tests
//! and developers.
//!
//! # Payer codes
//! A payer code is 18 or 19 digits. Its **last four digits** choose the outcome; the 12
//! digits before them choose the payer's wallet (`0031` + those 12 digits), which opens on
//! first use with a tier-2 identity and `payer_auto_balance` (default 1,000,000.00). A
//! wallet seeded beforehand (`open_wallet`) keeps its own balance, tier, freeze and merchant
//! restriction, and the default outcome charges it under the real rules.
//!
//! | last 4 | outcome |
//! |---|---|
//! | `0000` (and any ending not below) | `SUCCESS` at once, under the wallet's real rules |
//! | `1111` | `USERPAYING`; confirmed after `confirm_delay_ms` (or `POST /sandbox/trades/{out_trade_no}/confirm`) |
//! | `5555` | `USERPAYING`, never confirmed (the client must reverse it after 30 s) |
//! | `2222` | `FAILED`, `INSUFFICIENT_BALANCE` |
//! | `3333` | `FAILED`, `PAYER_CODE_EXPIRED` |
//! | `4444` | `FAILED`, `WALLET_FROZEN` |
//! | `4040` | `FAILED`, `WALLET_NOT_FOUND` |
//! | `8888` | `FAILED`, `WALLET_LIMIT_EXCEEDED` |
//! | `9999` | `FAILED`, `MERCHANT_NOT_ALLOWED` |
//! | `6666` | charged (`SUCCESS`), then no answer for `hang_ms` (the client times out) |
//! | `7777` | charged (`SUCCESS`), then HTTP 500 |
//! | `6000` | HTTP 500, nothing charged |
//!
//! # Other behaviour
//! - Idempotency per `(wallet, out_*_no)`: the same body returns the first answer verbatim
//!   (a `1111` payment repeated later still answers `USERPAYING`; query for the current
//!   state); a different body is `409 DUPLICATE_OUT_NO`.
//! - Reverse: `USERPAYING` -> `REVERSED`; `SUCCESS` -> `REVERSED` on the same business day
//!   only (else `400 REVERSE_NOT_ALLOWED`) and only without refunds (else
//!   `409 TRADE_HAS_REFUNDS`, as WeChat Pay refuses to reverse a partly refunded trade);
//!   `FAILED`/`CLOSED` -> `409 TRADE_NOT_REVERSIBLE`; reversing twice answers `REVERSED`.
//! - Refunds reserve their amount under the lock; their sum never exceeds the trade
//!   (`400 REFUND_AMOUNT_EXCEEDED`). They settle in the request (`SUCCESS`) or after
//!   `refund_delay_ms` (`PROCESSING` first).
//! - Transfers answer `ACCEPTED` and settle in the request or after `transfer_delay_ms`,
//!   failing with the wallet rules' codes (`INSUFFICIENT_BALANCE`, `WALLET_NOT_FOUND`,
//!   `WALLET_FROZEN`, `NAME_MISMATCH`, `WALLET_LIMIT_EXCEEDED`). An unknown funding wallet is
//!   `404 WALLET_NOT_FOUND` at once.
//! - Statements are refused with `404 STATEMENT_NOT_READY` until the day has ended in
//!   Asia/Shanghai. Fees are `fee_rate_ppm` of each payment (default 0).
//! - Every `/v1` response and every notification is signed with the sandbox's key (Ed25519 by
//!   default, or SM2/SM3; `rotate_signing_key` or `POST /sandbox/signing-key` switches it while
//!   it runs, as an operator migrating to another key or algorithm would); every `/v1` request
//!   must be signed by a registered client key of either algorithm (else `401
//!   INVALID_SIGNATURE`, signed too).

pub mod faults;
pub mod notify;
pub mod payer_codes;
mod routes;
pub mod run;
pub mod state;
pub mod statement;
pub mod wallets;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use ring::digest;

use self::faults::{Faults, StatementTamper};
use self::notify::{Notifier, NotifySettings, Outgoing};
use self::state::{Applied, Books, Event, Refusal, Rules, Timer, WalletView};
use self::statement::{
    EntryKind, EntryStatus, StatementHeader, StatementLine, write_statement, write_statement_with_totals,
};
use super::clock::Clock;
use super::signing::{KeyError, PublicKey, RotatingSigner, SignatureAlgorithm, Signer, Verifier};
use super::types::{CodePaymentResponse, Notification, TradeQueryResponse};
use crate::domain::money::Amount;

/// Everything the sandbox can be told at start.
#[derive(Clone)]
pub struct SandboxConfig {
    pub signing_key_id: String,
    pub signing_algorithm: SignatureAlgorithm,
    /// The signing key's 32-byte secret (Ed25519 seed, or SM2 private key big-endian); a random
    /// key when None.
    pub signing_secret: Option<[u8; 32]>,
    pub clock: Clock,
    pub notify_url: Option<String>,
    pub notify: NotifySettings,
    /// How long a `1111` payment waits before the payer "confirms".
    pub confirm_delay_ms: u64,
    /// 0: refunds and transfers settle inside the request.
    pub refund_delay_ms: u64,
    pub transfer_delay_ms: u64,
    /// How long a "time out after applying" answer is held back.
    pub hang_ms: u64,
    pub fee_rate_ppm: u32,
    pub payer_auto_balance: Amount,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Largest answer signed (statements included).
    pub max_response_bytes: usize,
    pub max_records: usize,
    pub replay_cache_capacity: usize,
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("signing_key_id", &self.signing_key_id)
            .field("signing_algorithm", &self.signing_algorithm)
            .field("signing_secret", &self.signing_secret.map(|_| "[redacted]"))
            .field("clock", &self.clock)
            .field("notify_url", &self.notify_url)
            .field("notify", &self.notify)
            .field("confirm_delay_ms", &self.confirm_delay_ms)
            .field("refund_delay_ms", &self.refund_delay_ms)
            .field("transfer_delay_ms", &self.transfer_delay_ms)
            .field("hang_ms", &self.hang_ms)
            .field("fee_rate_ppm", &self.fee_rate_ppm)
            .field("max_records", &self.max_records)
            .finish_non_exhaustive()
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            signing_key_id: String::from("sandbox-1"),
            signing_algorithm: SignatureAlgorithm::Ed25519,
            signing_secret: None,
            clock: Clock::system(),
            notify_url: None,
            notify: NotifySettings::default(),
            confirm_delay_ms: 5_000,
            refund_delay_ms: 0,
            transfer_delay_ms: 0,
            hang_ms: 60_000,
            fee_rate_ppm: 0,
            payer_auto_balance: Amount::from_fen(100_000_000).unwrap_or(Amount::ZERO),
            max_body_bytes: 64 * 1024,
            max_response_bytes: 512 * 1024 * 1024,
            max_records: 1_000_000,
            replay_cache_capacity: super::signing::DEFAULT_REPLAY_CACHE_CAPACITY,
        }
    }
}

/// A handle on one sandbox operator; clones share it.
#[derive(Clone, Debug)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SandboxConfig,
    signer: RotatingSigner,
    verifier: Verifier,
    books: Mutex<Books>,
    faults: Arc<Faults>,
    notifier: Arc<Notifier>,
    event_sequence: AtomicU64,
}

impl Sandbox {
    /// # Panics
    /// When `signing_key_id` is not 1-128 printable ASCII characters; see [`Sandbox::try_new`].
    pub fn new(config: SandboxConfig) -> Sandbox {
        Sandbox::try_new(config).expect("sandbox signing key id must be 1-128 printable ASCII characters")
    }

    pub fn try_new(config: SandboxConfig) -> Result<Sandbox, KeyError> {
        let clock = config.clock.clone();
        let algorithm = config.signing_algorithm;
        let signer = RotatingSigner::new(match config.signing_secret {
            Some(secret) => Signer::from_secret(algorithm, &config.signing_key_id, &secret, clock.clone())?,
            None => Signer::generate_with(algorithm, &config.signing_key_id, clock.clone())?,
        });
        let faults = Arc::new(Faults::default());
        let notifier = Arc::new(Notifier::new(
            config.notify.clone(),
            config.notify_url.clone(),
            signer.clone(),
            Arc::clone(&faults),
        ));
        let books = Books::new(Rules {
            fee_rate_ppm: config.fee_rate_ppm,
            payer_auto_balance_fen: config.payer_auto_balance.fen(),
            refund_delay_ms: config.refund_delay_ms,
            transfer_delay_ms: config.transfer_delay_ms,
            max_records: config.max_records,
        });
        let verifier = Verifier::with_replay_capacity(clock, config.replay_cache_capacity);
        Ok(Sandbox {
            inner: Arc::new(Inner {
                config,
                signer,
                verifier,
                books: Mutex::new(books),
                faults,
                notifier,
                event_sequence: AtomicU64::new(0),
            }),
        })
    }

    /// The spec's endpoints under `/v1` and the admin routes under `/sandbox`.
    pub fn router(&self) -> Router {
        routes::router(self.clone())
    }

    /// The id of the key the sandbox signs with now.
    pub fn key_id(&self) -> String {
        self.inner.signer.current().key_id().to_owned()
    }

    /// The raw public key carepay must trust (32 bytes Ed25519, 65 bytes SM2).
    pub fn public_key(&self) -> Vec<u8> {
        self.inner.signer.current().public_key().to_vec()
    }

    pub fn public_key_base64(&self) -> String {
        self.inner.signer.current().public_key_base64()
    }

    /// The key the sandbox signs with now, bound to its algorithm.
    pub fn verifying_key(&self) -> PublicKey {
        self.inner.signer.current().verifying_key()
    }

    /// Signs every answer and notification with `signer` from now on (those being signed
    /// finish with the previous key), as an operator rotating or changing its algorithm does.
    pub fn rotate_signing_key(&self, signer: Signer) {
        tracing::info!(key_id = signer.key_id(), algorithm = %signer.algorithm(), "sandbox signing key replaced");
        self.inner.signer.replace(signer);
    }

    /// Trusts a carepay signing key (several may be registered, for rotation).
    pub fn register_client_key(&self, key_id: &str, public_key: PublicKey) -> Result<(), KeyError> {
        self.inner.verifier.add_key(key_id, public_key)
    }

    pub fn set_notify_url(&self, url: Option<String>) {
        self.inner.notifier.set_url(url);
    }

    /// Where notifications go now, if anywhere.
    pub fn notify_url(&self) -> Option<String> {
        self.inner.notifier.url()
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn clock(&self) -> &Clock {
        &self.inner.config.clock
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    pub fn notifier(&self) -> &Notifier {
        &self.inner.notifier
    }

    pub(crate) fn signer(&self) -> Arc<Signer> {
        self.inner.signer.current()
    }

    pub(crate) fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    fn now_ms(&self) -> i64 {
        self.inner.config.clock.now_ms()
    }

    pub(crate) fn books(&self) -> MutexGuard<'_, Books> {
        self.inner.books.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ---- seeding -------------------------------------------------------------------------

    pub fn open_wallet(&self, wallet_id: &str, holder_name: &str, tier: u8, balance: Amount) -> Result<(), Refusal> {
        self.books().open_wallet(wallet_id, holder_name, tier, balance)
    }

    pub fn fund(&self, wallet_id: &str, amount: Amount) -> Result<(), Refusal> {
        self.books().fund(wallet_id, amount)
    }

    pub fn freeze(&self, wallet_id: &str) -> Result<(), Refusal> {
        self.books().set_frozen(wallet_id, true)
    }

    pub fn unfreeze(&self, wallet_id: &str) -> Result<(), Refusal> {
        self.books().set_frozen(wallet_id, false)
    }

    /// The wallet may only pay these merchants (`MERCHANT_NOT_ALLOWED` elsewhere).
    pub fn restrict_to_merchants(&self, wallet_id: &str, merchant_wallet_ids: Vec<String>) -> Result<(), Refusal> {
        self.books().restrict_to_merchants(wallet_id, merchant_wallet_ids)
    }

    pub fn wallet(&self, wallet_id: &str) -> Option<WalletView> {
        self.books().wallet(wallet_id)
    }

    // ---- simulated payers ----------------------------------------------------------------

    /// The payer confirms a `USERPAYING` payment on their wallet.
    pub fn confirm_trade(&self, merchant_wallet_id: &str, out_trade_no: &str) -> Result<TradeQueryResponse, Refusal> {
        let now_ms = self.now_ms();
        let applied = self.books().confirm_trade(merchant_wallet_id, out_trade_no, now_ms);
        self.finish(applied)
    }

    /// A resident scans a dynamic QR order and pays with `payer_code`.
    pub fn pay_order(
        &self,
        merchant_wallet_id: &str,
        out_trade_no: &str,
        payer_code: &str,
    ) -> Result<CodePaymentResponse, Refusal> {
        let now_ms = self.now_ms();
        let applied = self.books().pay_order(merchant_wallet_id, out_trade_no, payer_code, now_ms);
        self.finish(applied)
    }

    /// A successful transfer bounces back to the funding wallet.
    pub fn return_transfer(&self, payer_wallet_id: &str, out_transfer_no: &str) -> Result<(), Refusal> {
        let now_ms = self.now_ms();
        self.books().return_transfer(payer_wallet_id, out_transfer_no, now_ms)
    }

    // ---- plumbing ------------------------------------------------------------------------

    /// Carries out what an operation left to do once the lock is released: notifications
    /// and timers. The answer (and how it misbehaves) goes back to the caller.
    pub(crate) fn finish_applied<T>(&self, applied: Applied<T>) -> Applied<T> {
        for event in &applied.events {
            self.notify(event);
        }
        for timer in &applied.timers {
            self.schedule(timer.clone());
        }
        applied
    }

    fn finish<T>(&self, applied: Result<Applied<T>, Refusal>) -> Result<T, Refusal> {
        applied.map(|applied| self.finish_applied(applied).answer)
    }

    fn notify(&self, event: &Event) {
        let sequence = self.inner.event_sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let notification = Notification {
            id: format!("evt_{sequence:012}"),
            event_type: event.event_type,
            created_at: state::rfc3339(self.now_ms()),
            resource: event.resource.clone(),
        };
        match serde_json::to_vec(&notification) {
            Ok(body) => self.inner.notifier.send(Outgoing { id: notification.id, body }),
            Err(error) => tracing::error!(%error, "sandbox notification not serialisable"),
        }
    }

    fn schedule(&self, timer: Timer) {
        let sandbox = self.clone();
        let delay_ms = match &timer {
            Timer::ConfirmTrade { .. } => self.inner.config.confirm_delay_ms,
            Timer::SettleRefund { .. } => self.inner.config.refund_delay_ms,
            Timer::SettleTransfer { .. } => self.inner.config.transfer_delay_ms,
            Timer::CloseOrder { after_ms, .. } => *after_ms,
        };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let now_ms = sandbox.now_ms();
            let events = {
                let mut books = sandbox.books();
                match &timer {
                    Timer::ConfirmTrade { merchant_wallet_id, out_trade_no } => books
                        .confirm_trade(merchant_wallet_id, out_trade_no, now_ms)
                        .map(|applied| applied.events)
                        .unwrap_or_default(),
                    Timer::SettleRefund { merchant_wallet_id, out_refund_no } => {
                        books.settle_refund(merchant_wallet_id, out_refund_no, now_ms)
                    }
                    Timer::SettleTransfer { payer_wallet_id, out_transfer_no } => {
                        books.settle_transfer(payer_wallet_id, out_transfer_no, now_ms)
                    }
                    Timer::CloseOrder { merchant_wallet_id, out_trade_no, .. } => {
                        books.close_if_expired(merchant_wallet_id, out_trade_no, now_ms)
                    }
                }
            };
            for event in &events {
                sandbox.notify(event);
            }
        });
    }

    /// The statement file and its hex SHA-256, with any statement tamper fault applied.
    pub(crate) fn statement_file(&self, date: &str, wallet_id: &str) -> Result<(Vec<u8>, String), Refusal> {
        self.statement_file_as_of(date, wallet_id, self.now_ms())
    }

    /// The statement file as it would be served at `now_ms` (tests of reconciliation need a
    /// day's statement without waiting for the day to end; the signing clock stays real).
    pub fn statement_file_as_of(&self, date: &str, wallet_id: &str, now_ms: i64) -> Result<(Vec<u8>, String), Refusal> {
        let mut lines = self.books().statement_lines(wallet_id, date, now_ms)?;
        let header = StatementHeader {
            wallet_id: wallet_id.to_owned(),
            date: date.to_owned(),
            generated_at: state::rfc3339(now_ms),
        };
        let refuse = |error: statement::StatementError| Refusal::new(500, "SYSTEM_ERROR", error.to_string());
        let file = match self.inner.faults.take_statement() {
            None => write_statement(&header, &lines).map_err(refuse)?,
            Some(StatementTamper::CorruptTrailer) => {
                let mut totals = statement::totals(&lines).map_err(refuse)?;
                totals.credit_fen += 1;
                write_statement_with_totals(&header, &lines, &totals)
            }
            Some(tamper) => {
                tamper_lines(&mut lines, tamper, date);
                write_statement(&header, &lines).map_err(refuse)?
            }
        };
        let digest_hex = hex::encode(digest::digest(&digest::SHA256, &file));
        Ok((file, digest_hex))
    }
}

fn tamper_lines(lines: &mut Vec<StatementLine>, tamper: StatementTamper, date: &str) {
    match tamper {
        StatementTamper::DropLine => {
            if !lines.is_empty() {
                lines.remove(0);
            }
        }
        StatementTamper::AddLine => lines.push(StatementLine {
            settled_at: format!("{date} 23:59:59"),
            operator_ref: String::from("OP99999999999999999"),
            out_no: String::from("P-not-from-carepay"),
            kind: EntryKind::Payment,
            status: EntryStatus::Success,
            amount_fen: 100,
            fee_fen: 0,
            counterparty: String::from("0031****0000"),
            memo: String::from("sandbox: injected line"),
        }),
        StatementTamper::ChangeAmount => {
            if let Some(line) = lines.iter_mut().find(|line| line.status == EntryStatus::Success) {
                line.amount_fen += 1;
            }
        }
        StatementTamper::CorruptTrailer => {}
    }
}

/// Serves the sandbox on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, sandbox: Sandbox) -> std::io::Result<()> {
    axum::serve(crate::server::without_nagle(listener), sandbox.router()).await
}
