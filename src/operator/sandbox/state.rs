//! The sandbox's books: wallets, trades, refunds, transfers and the statement entries they
//! leave. Plain data behind one mutex (held by `Sandbox`), no I/O and no clock of its own:
//! every operation gets `now_ms`, and returns what should happen afterwards (notifications,
//! timers, a misbehaving answer) for the caller to carry out once the lock is released.

use std::collections::HashMap;

use serde::Serialize;
use time::OffsetDateTime;
use time::macros::format_description;

use super::payer_codes::{self, CodeOutcome};
use super::statement::{EntryKind, EntryStatus, StatementLine, mask_wallet_id};
use super::wallets::Wallet;
use crate::domain::money::Amount;
use crate::domain::time::{SHANGHAI, UnixMs};
use crate::operator::types::{
    CodePaymentRequest, CodePaymentResponse, NotificationType, OrderRequest, OrderResponse, RefundQueryResponse,
    RefundRequest, RefundResponse, RefundStatus, TradeQueryResponse, TradeStatus, TransferQueryResponse,
    TransferRequest, TransferResponse, TransferStatus, codes,
};

const MS_PER_DAY: i64 = 86_400_000;
const SHANGHAI_OFFSET_MS: i64 = 8 * 3_600_000;
const MAX_OUT_NO_CHARS: usize = 64;
const MAX_TEXT_CHARS: usize = 256;
/// QR orders live at most a day.
const MAX_ORDER_EXPIRY_S: u32 = 86_400;

/// A refusal: the spec's `{code, message}` with its HTTP status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub http_status: u16,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(http_status: u16, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal { http_status, code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(400, "INVALID_REQUEST", message)
    }

    fn duplicate() -> Refusal {
        Refusal::new(409, codes::DUPLICATE_OUT_NO, "this out_*_no was already used with a different request")
    }
}

/// A notification to send once the lock is released.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_type: NotificationType,
    pub resource: serde_json::Value,
}

/// Work to schedule once the lock is released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Timer {
    ConfirmTrade { merchant_wallet_id: String, out_trade_no: String },
    SettleRefund { merchant_wallet_id: String, out_refund_no: String },
    SettleTransfer { payer_wallet_id: String, out_transfer_no: String },
    CloseOrder { merchant_wallet_id: String, out_trade_no: String, after_ms: u64 },
}

/// How the answer to an applied request misbehaves (payer codes `6666`, `7777`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AfterApply {
    #[default]
    Answer,
    Hang,
    Error,
}

/// The result of an operation plus its after-effects.
#[derive(Debug)]
pub struct Applied<T> {
    pub answer: T,
    pub events: Vec<Event>,
    pub timers: Vec<Timer>,
    pub after: AfterApply,
}

impl<T> Applied<T> {
    fn plain(answer: T) -> Applied<T> {
        Applied { answer, events: Vec::new(), timers: Vec::new(), after: AfterApply::Answer }
    }
}

/// Settings the books need.
#[derive(Clone, Debug)]
pub struct Rules {
    /// Fee withheld from each payment, parts per million of its amount (rounded half up).
    pub fee_rate_ppm: u32,
    /// Balance a payer wallet derived from a payer code starts with.
    pub payer_auto_balance_fen: i64,
    /// Refunds and transfers settle inside the request when their delay is zero.
    pub refund_delay_ms: u64,
    pub transfer_delay_ms: u64,
    /// Trades, refunds and transfers kept at once; past it new ones are refused (503), so a
    /// runaway test cannot eat the machine.
    pub max_records: usize,
}

#[derive(Clone, Debug)]
enum Origin {
    Code { request: CodePaymentRequest, answer: CodePaymentResponse },
    Order { request: OrderRequest, answer: OrderResponse, expires_at_ms: i64 },
}

#[derive(Clone, Debug)]
struct Trade {
    trade_no: String,
    out_trade_no: String,
    merchant_wallet_id: String,
    amount_fen: i64,
    status: TradeStatus,
    /// Refunds accepted so far (processing or succeeded); never above `amount_fen`.
    refunded_fen: i64,
    paid_at_ms: Option<i64>,
    payer_wallet_id: Option<String>,
    fee_fen: i64,
    fail_code: Option<&'static str>,
    description: String,
    entry_index: Option<usize>,
    origin: Origin,
}

#[derive(Clone, Debug)]
struct Refund {
    refund_no: String,
    request: RefundRequest,
    answer: RefundResponse,
    status: RefundStatus,
    succeeded_at_ms: Option<i64>,
}

#[derive(Clone, Debug)]
struct Transfer {
    transfer_no: String,
    request: TransferRequest,
    answer: TransferResponse,
    status: TransferStatus,
    fail_code: Option<&'static str>,
    succeeded_at_ms: Option<i64>,
    returned: bool,
}

/// One settled movement on one wallet, as its statement will show it.
#[derive(Clone, Debug)]
struct Entry {
    wallet_id: String,
    settled_at_ms: i64,
    operator_ref: String,
    out_no: String,
    kind: EntryKind,
    status: EntryStatus,
    amount_fen: i64,
    fee_fen: i64,
    counterparty_wallet_id: String,
    memo: String,
}

type Key = (String, String);

#[derive(Debug)]
pub struct Books {
    rules: Rules,
    wallets: HashMap<String, Wallet>,
    trades: HashMap<Key, Trade>,
    refunds: HashMap<Key, Refund>,
    transfers: HashMap<Key, Transfer>,
    entries: Vec<Entry>,
    sequence: u64,
}

/// Wallet view for the admin API and tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WalletView {
    pub wallet_id: String,
    pub holder_name: String,
    pub tier: u8,
    pub balance: Amount,
    pub frozen: bool,
}

impl Books {
    pub fn new(rules: Rules) -> Books {
        Books {
            rules,
            wallets: HashMap::new(),
            trades: HashMap::new(),
            refunds: HashMap::new(),
            transfers: HashMap::new(),
            entries: Vec::new(),
            sequence: 0,
        }
    }

    fn next_no(&mut self, prefix: &str, now_ms: i64) -> String {
        self.sequence += 1;
        format!("{prefix}{}{:010}", compact_date(now_ms), self.sequence)
    }

    fn ensure_room(&self) -> Result<(), Refusal> {
        if self.trades.len() + self.refunds.len() + self.transfers.len() >= self.rules.max_records {
            return Err(Refusal::new(503, "SANDBOX_FULL", "the sandbox holds its maximum number of records"));
        }
        Ok(())
    }

    // ---- wallets -------------------------------------------------------------------------

    pub fn open_wallet(&mut self, id: &str, holder_name: &str, tier: u8, balance: Amount) -> Result<(), Refusal> {
        check_wallet_id("wallet_id", id)?;
        check_text("holder_name", holder_name)?;
        if !(1..=4).contains(&tier) {
            return Err(Refusal::invalid("tier must be 1-4"));
        }
        if self.wallets.contains_key(id) {
            return Err(Refusal::new(409, "WALLET_EXISTS", "wallet already open"));
        }
        self.wallets.insert(id.to_owned(), Wallet::new(id, holder_name, tier, balance.fen()));
        Ok(())
    }

    fn wallet_mut(&mut self, id: &str) -> Result<&mut Wallet, Refusal> {
        self.wallets.get_mut(id).ok_or_else(|| Refusal::new(404, codes::WALLET_NOT_FOUND, "no such wallet"))
    }

    pub fn fund(&mut self, id: &str, amount: Amount) -> Result<(), Refusal> {
        let wallet = self.wallet_mut(id)?;
        wallet.balance_fen = wallet
            .balance_fen
            .checked_add(amount.fen())
            .filter(|fen| *fen <= Amount::MAX_FEN)
            .ok_or_else(|| Refusal::invalid("balance would overflow"))?;
        Ok(())
    }

    pub fn set_frozen(&mut self, id: &str, frozen: bool) -> Result<(), Refusal> {
        self.wallet_mut(id)?.frozen = frozen;
        Ok(())
    }

    pub fn restrict_to_merchants(&mut self, id: &str, merchants: Vec<String>) -> Result<(), Refusal> {
        self.wallet_mut(id)?.allowed_merchants = Some(merchants.into_iter().collect());
        Ok(())
    }

    pub fn wallet(&self, id: &str) -> Option<WalletView> {
        self.wallets.get(id).map(|wallet| WalletView {
            wallet_id: wallet.id.clone(),
            holder_name: wallet.holder_name.clone(),
            tier: wallet.tier,
            balance: Amount::from_fen(wallet.balance_fen).unwrap_or(Amount::MAX),
            frozen: wallet.frozen,
        })
    }

    /// Merchant wallets open themselves on first use.
    fn ensure_merchant(&mut self, id: &str) {
        self.wallets.entry(id.to_owned()).or_insert_with(|| Wallet::new(id, &format!("商户{id}"), 1, 0));
    }

    // ---- code payments -------------------------------------------------------------------

    pub fn pay_by_code(
        &mut self,
        request: &CodePaymentRequest,
        now_ms: i64,
    ) -> Result<Applied<CodePaymentResponse>, Refusal> {
        check_wallet_id("merchant_wallet_id", &request.merchant_wallet_id)?;
        check_out_no("out_trade_no", &request.out_trade_no)?;
        check_amount(request.amount)?;
        check_text("description", &request.description)?;
        check_text("terminal_id", &request.terminal_id)?;
        if !payer_codes::valid_code(&request.payer_code) {
            return Err(Refusal::new(400, "INVALID_PAYER_CODE", "payer_code must be 18-19 digits"));
        }
        let key = (request.merchant_wallet_id.clone(), request.out_trade_no.clone());
        if let Some(trade) = self.trades.get(&key) {
            return match &trade.origin {
                Origin::Code { request: first, answer } if first == request => Ok(Applied::plain(answer.clone())),
                _ => Err(Refusal::duplicate()),
            };
        }
        let outcome = payer_codes::outcome(&request.payer_code);
        if outcome == CodeOutcome::ErrorBeforeApply {
            return Err(Refusal::new(500, "SYSTEM_ERROR", "sandbox payer code 6000: failing before applying"));
        }
        self.ensure_room()?;
        self.ensure_merchant(&request.merchant_wallet_id);
        let payer_wallet_id = payer_codes::payer_wallet_id(&request.payer_code);
        if !matches!(outcome, CodeOutcome::Fail(codes::WALLET_NOT_FOUND)) {
            let balance_fen = self.rules.payer_auto_balance_fen;
            self.wallets.entry(payer_wallet_id.clone()).or_insert_with(|| {
                Wallet::new(&payer_wallet_id, &format!("付款人{}", &payer_wallet_id[12..]), 2, balance_fen)
            });
        }
        let trade_no = self.next_no("T", now_ms);
        let mut trade = Trade {
            trade_no: trade_no.clone(),
            out_trade_no: request.out_trade_no.clone(),
            merchant_wallet_id: request.merchant_wallet_id.clone(),
            amount_fen: request.amount.fen(),
            status: TradeStatus::Userpaying,
            refunded_fen: 0,
            paid_at_ms: None,
            payer_wallet_id: Some(payer_wallet_id),
            fee_fen: 0,
            fail_code: None,
            description: request.description.clone(),
            entry_index: None,
            origin: Origin::Code {
                request: request.clone(),
                answer: CodePaymentResponse {
                    trade_no,
                    status: TradeStatus::Userpaying,
                    paid_at: None,
                    fail_code: None,
                },
            },
        };
        let mut applied = Applied::plain(());
        match outcome {
            CodeOutcome::Succeed | CodeOutcome::SucceedThenHang | CodeOutcome::SucceedThenError => {
                applied.events.extend(self.settle_trade(&mut trade, now_ms));
                applied.after = match outcome {
                    CodeOutcome::SucceedThenHang => AfterApply::Hang,
                    CodeOutcome::SucceedThenError => AfterApply::Error,
                    _ => AfterApply::Answer,
                };
            }
            CodeOutcome::ConfirmLater => applied
                .timers
                .push(Timer::ConfirmTrade { merchant_wallet_id: key.0.clone(), out_trade_no: key.1.clone() }),
            CodeOutcome::NeverConfirm => {}
            CodeOutcome::Fail(code) => fail_trade(&mut trade, code),
            CodeOutcome::ErrorBeforeApply => unreachable!("handled above"),
        }
        let answer = CodePaymentResponse {
            trade_no: trade.trade_no.clone(),
            status: trade.status,
            paid_at: trade.paid_at_ms.map(rfc3339),
            fail_code: fail_code_of(&trade),
        };
        if let Origin::Code { answer: stored, .. } = &mut trade.origin {
            *stored = answer.clone();
        }
        self.trades.insert(key, trade);
        Ok(Applied { answer, events: applied.events, timers: applied.timers, after: applied.after })
    }

    /// Charges the payer of a `USERPAYING` trade under the wallet rules: `SUCCESS` (with a
    /// statement entry and a `TRADE.SUCCESS` event) or `FAILED` with the rule's code.
    fn settle_trade(&mut self, trade: &mut Trade, now_ms: i64) -> Vec<Event> {
        let day = business_day(now_ms);
        let Some(payer_id) = trade.payer_wallet_id.clone() else {
            fail_trade(trade, codes::WALLET_NOT_FOUND);
            return Vec::new();
        };
        let merchant_id = trade.merchant_wallet_id.clone();
        let check = match (self.wallets.get(&payer_id), self.wallets.get(&merchant_id)) {
            (None, _) | (_, None) => Err(codes::WALLET_NOT_FOUND),
            (Some(payer), Some(merchant)) => payer
                .check_debit(trade.amount_fen, Some(&merchant_id), day)
                .and_then(|()| merchant.check_credit(trade.amount_fen)),
        };
        if let Err(code) = check {
            fail_trade(trade, code);
            return Vec::new();
        }
        let fee_fen = fee_for(trade.amount_fen, self.rules.fee_rate_ppm);
        if let Some(payer) = self.wallets.get_mut(&payer_id) {
            payer.debit(trade.amount_fen, day);
        }
        if let Some(merchant) = self.wallets.get_mut(&merchant_id) {
            merchant.balance_fen += trade.amount_fen - fee_fen;
        }
        trade.status = TradeStatus::Success;
        trade.paid_at_ms = Some(now_ms);
        trade.fee_fen = fee_fen;
        let operator_ref = self.next_no("OP", now_ms);
        trade.entry_index = Some(self.entries.len());
        self.entries.push(Entry {
            wallet_id: merchant_id,
            settled_at_ms: now_ms,
            operator_ref,
            out_no: trade.out_trade_no.clone(),
            kind: EntryKind::Payment,
            status: EntryStatus::Success,
            amount_fen: trade.amount_fen,
            fee_fen,
            counterparty_wallet_id: payer_id,
            memo: trade.description.clone(),
        });
        vec![Event { event_type: NotificationType::TradeSuccess, resource: json(&trade_view(trade)) }]
    }

    /// Confirms a `USERPAYING` trade (the payer said yes on the wallet). A trade in any other
    /// state is left alone and its current state returned.
    pub fn confirm_trade(
        &mut self,
        merchant_wallet_id: &str,
        out_trade_no: &str,
        now_ms: i64,
    ) -> Result<Applied<TradeQueryResponse>, Refusal> {
        let mut applied = Applied::plain(());
        applied.events.extend(self.close_if_expired(merchant_wallet_id, out_trade_no, now_ms));
        let key = (merchant_wallet_id.to_owned(), out_trade_no.to_owned());
        let mut trade = self.trades.get(&key).cloned().ok_or_else(trade_not_found)?;
        if trade.status == TradeStatus::Userpaying && trade.payer_wallet_id.is_some() {
            applied.events.extend(self.settle_trade(&mut trade, now_ms));
            self.trades.insert(key, trade.clone());
        }
        Ok(Applied {
            answer: trade_view(&trade),
            events: applied.events,
            timers: Vec::new(),
            after: AfterApply::Answer,
        })
    }

    pub fn query_trade(
        &mut self,
        merchant_wallet_id: &str,
        out_trade_no: &str,
        now_ms: i64,
    ) -> Result<Applied<TradeQueryResponse>, Refusal> {
        check_wallet_id("merchant_wallet_id", merchant_wallet_id)?;
        let events = self.close_if_expired(merchant_wallet_id, out_trade_no, now_ms);
        let trade =
            self.trades.get(&(merchant_wallet_id.to_owned(), out_trade_no.to_owned())).ok_or_else(trade_not_found)?;
        Ok(Applied { answer: trade_view(trade), events, timers: Vec::new(), after: AfterApply::Answer })
    }

    // ---- dynamic QR orders ---------------------------------------------------------------

    pub fn create_order(&mut self, request: &OrderRequest, now_ms: i64) -> Result<Applied<OrderResponse>, Refusal> {
        check_wallet_id("merchant_wallet_id", &request.merchant_wallet_id)?;
        check_out_no("out_trade_no", &request.out_trade_no)?;
        check_amount(request.amount)?;
        check_text("description", &request.description)?;
        if !(1..=MAX_ORDER_EXPIRY_S).contains(&request.expires_in_s) {
            return Err(Refusal::invalid(format!("expires_in_s must be 1-{MAX_ORDER_EXPIRY_S}")));
        }
        let key = (request.merchant_wallet_id.clone(), request.out_trade_no.clone());
        if let Some(trade) = self.trades.get(&key) {
            return match &trade.origin {
                Origin::Order { request: first, answer, .. } if first == request => Ok(Applied::plain(answer.clone())),
                _ => Err(Refusal::duplicate()),
            };
        }
        self.ensure_room()?;
        self.ensure_merchant(&request.merchant_wallet_id);
        let trade_no = self.next_no("T", now_ms);
        let expires_at_ms = now_ms + i64::from(request.expires_in_s) * 1_000;
        let answer = OrderResponse {
            trade_no: trade_no.clone(),
            qr_payload: format!(
                "ecny://pay?merchant={}&trade_no={trade_no}&amount={}",
                request.merchant_wallet_id, request.amount
            ),
            expires_at: rfc3339(expires_at_ms),
        };
        self.trades.insert(
            key.clone(),
            Trade {
                trade_no,
                out_trade_no: request.out_trade_no.clone(),
                merchant_wallet_id: request.merchant_wallet_id.clone(),
                amount_fen: request.amount.fen(),
                status: TradeStatus::Userpaying,
                refunded_fen: 0,
                paid_at_ms: None,
                payer_wallet_id: None,
                fee_fen: 0,
                fail_code: None,
                description: request.description.clone(),
                entry_index: None,
                origin: Origin::Order { request: request.clone(), answer: answer.clone(), expires_at_ms },
            },
        );
        let mut applied = Applied::plain(answer);
        applied.timers.push(Timer::CloseOrder {
            merchant_wallet_id: key.0,
            out_trade_no: key.1,
            after_ms: u64::from(request.expires_in_s) * 1_000,
        });
        Ok(applied)
    }

    /// The resident scans the QR and pays with `payer_code` (sandbox admin route). A code
    /// that fails leaves the order open, as a real QR stays payable after a declined scan.
    pub fn pay_order(
        &mut self,
        merchant_wallet_id: &str,
        out_trade_no: &str,
        payer_code: &str,
        now_ms: i64,
    ) -> Result<Applied<CodePaymentResponse>, Refusal> {
        if !payer_codes::valid_code(payer_code) {
            return Err(Refusal::new(400, "INVALID_PAYER_CODE", "payer_code must be 18-19 digits"));
        }
        let mut events = self.close_if_expired(merchant_wallet_id, out_trade_no, now_ms);
        let key = (merchant_wallet_id.to_owned(), out_trade_no.to_owned());
        let mut trade = self.trades.get(&key).cloned().ok_or_else(trade_not_found)?;
        if !matches!(trade.origin, Origin::Order { .. }) || trade.status != TradeStatus::Userpaying {
            return Err(Refusal::new(409, "ORDER_NOT_PAYABLE", format!("order is {:?}", trade.status)));
        }
        let payer_wallet_id = payer_codes::payer_wallet_id(payer_code);
        let outcome = payer_codes::outcome(payer_code);
        if let CodeOutcome::Fail(code) = outcome {
            let answer = CodePaymentResponse {
                trade_no: trade.trade_no.clone(),
                status: TradeStatus::Failed,
                paid_at: None,
                fail_code: Some(code.to_owned()),
            };
            return Ok(Applied { answer, events, timers: Vec::new(), after: AfterApply::Answer });
        }
        let balance_fen = self.rules.payer_auto_balance_fen;
        self.wallets.entry(payer_wallet_id.clone()).or_insert_with(|| {
            Wallet::new(&payer_wallet_id, &format!("付款人{}", &payer_wallet_id[12..]), 2, balance_fen)
        });
        trade.payer_wallet_id = Some(payer_wallet_id);
        let mut timers = Vec::new();
        match outcome {
            CodeOutcome::ConfirmLater => {
                timers.push(Timer::ConfirmTrade { merchant_wallet_id: key.0.clone(), out_trade_no: key.1.clone() })
            }
            CodeOutcome::NeverConfirm => {}
            _ => events.extend(self.settle_trade(&mut trade, now_ms)),
        }
        let answer = CodePaymentResponse {
            trade_no: trade.trade_no.clone(),
            status: trade.status,
            paid_at: trade.paid_at_ms.map(rfc3339),
            fail_code: fail_code_of(&trade),
        };
        self.trades.insert(key, trade);
        Ok(Applied { answer, events, timers, after: AfterApply::Answer })
    }

    /// An unpaid QR order past its expiry becomes `CLOSED` (with a `TRADE.CLOSED` event).
    pub fn close_if_expired(&mut self, merchant_wallet_id: &str, out_trade_no: &str, now_ms: i64) -> Vec<Event> {
        let key = (merchant_wallet_id.to_owned(), out_trade_no.to_owned());
        let Some(trade) = self.trades.get_mut(&key) else {
            return Vec::new();
        };
        match trade.origin {
            Origin::Order { expires_at_ms, .. }
                if trade.status == TradeStatus::Userpaying && now_ms >= expires_at_ms =>
            {
                trade.status = TradeStatus::Closed;
                vec![Event { event_type: NotificationType::TradeClosed, resource: json(&trade_view(trade)) }]
            }
            _ => Vec::new(),
        }
    }

    // ---- reverse -------------------------------------------------------------------------

    /// Undoes a payment: `USERPAYING` simply ends; `SUCCESS` is refunded in full, but only
    /// on the business day it was paid and only while it has no refunds (as WeChat Pay,
    /// which refuses to reverse a partly refunded trade: refund the rest instead).
    pub fn reverse(
        &mut self,
        merchant_wallet_id: &str,
        out_trade_no: &str,
        now_ms: i64,
    ) -> Result<Applied<TradeStatus>, Refusal> {
        check_wallet_id("merchant_wallet_id", merchant_wallet_id)?;
        let events = self.close_if_expired(merchant_wallet_id, out_trade_no, now_ms);
        let key = (merchant_wallet_id.to_owned(), out_trade_no.to_owned());
        let trade = self.trades.get(&key).ok_or_else(trade_not_found)?;
        match trade.status {
            TradeStatus::Reversed => {}
            TradeStatus::Userpaying => {
                if let Some(trade) = self.trades.get_mut(&key) {
                    trade.status = TradeStatus::Reversed;
                }
            }
            TradeStatus::Success => {
                let paid_at_ms = trade.paid_at_ms.unwrap_or(now_ms);
                if business_day(paid_at_ms) != business_day(now_ms) {
                    return Err(Refusal::new(
                        400,
                        "REVERSE_NOT_ALLOWED",
                        "a successful payment can only be reversed on the business day it was paid; refund it",
                    ));
                }
                if trade.refunded_fen > 0 {
                    return Err(Refusal::new(
                        409,
                        "TRADE_HAS_REFUNDS",
                        "a payment with refunds cannot be reversed; refund the rest instead",
                    ));
                }
                let (amount_fen, fee_fen) = (trade.amount_fen, trade.fee_fen);
                let payer_id = trade.payer_wallet_id.clone();
                let entry_index = trade.entry_index;
                let day = business_day(now_ms);
                if let Some(payer) = payer_id.as_deref().and_then(|id| self.wallets.get_mut(id)) {
                    payer.credit_back(amount_fen, day);
                }
                if let Some(merchant) = self.wallets.get_mut(merchant_wallet_id) {
                    merchant.balance_fen -= amount_fen - fee_fen;
                }
                if let Some(entry) = entry_index.and_then(|index| self.entries.get_mut(index)) {
                    // Same day, so the entry is still on the open day's statement: it stays
                    // listed, marked REVERSED, with its fee given back.
                    entry.status = EntryStatus::Reversed;
                    entry.fee_fen = 0;
                }
                if let Some(trade) = self.trades.get_mut(&key) {
                    trade.status = TradeStatus::Reversed;
                    trade.fee_fen = 0;
                }
            }
            TradeStatus::Failed | TradeStatus::Closed => {
                return Err(Refusal::new(
                    409,
                    "TRADE_NOT_REVERSIBLE",
                    format!("the trade is {:?}; nothing was charged", trade.status),
                ));
            }
        }
        Ok(Applied { answer: TradeStatus::Reversed, events, timers: Vec::new(), after: AfterApply::Answer })
    }

    // ---- refunds -------------------------------------------------------------------------

    pub fn refund(&mut self, request: &RefundRequest, now_ms: i64) -> Result<Applied<RefundResponse>, Refusal> {
        check_wallet_id("merchant_wallet_id", &request.merchant_wallet_id)?;
        check_out_no("out_trade_no", &request.out_trade_no)?;
        check_out_no("out_refund_no", &request.out_refund_no)?;
        check_amount(request.amount)?;
        check_text("reason", &request.reason)?;
        let refund_key = (request.merchant_wallet_id.clone(), request.out_refund_no.clone());
        if let Some(refund) = self.refunds.get(&refund_key) {
            return if &refund.request == request {
                Ok(Applied::plain(refund.answer.clone()))
            } else {
                Err(Refusal::duplicate())
            };
        }
        let trade_key = (request.merchant_wallet_id.clone(), request.out_trade_no.clone());
        let trade = self.trades.get_mut(&trade_key).ok_or_else(trade_not_found)?;
        if trade.status != TradeStatus::Success {
            return Err(Refusal::new(409, "TRADE_NOT_REFUNDABLE", format!("the trade is {:?}", trade.status)));
        }
        // The guard that keeps refunds of one trade within its amount: checked and reserved
        // in one step under the lock, so concurrent refunds cannot both pass it.
        let remaining_fen = trade.amount_fen - trade.refunded_fen;
        if request.amount.fen() > remaining_fen {
            return Err(Refusal::new(
                400,
                "REFUND_AMOUNT_EXCEEDED",
                format!("only {} of the trade is left to refund", Amount::from_fen(remaining_fen).unwrap_or_default()),
            ));
        }
        self.ensure_room()?;
        if let Some(trade) = self.trades.get_mut(&trade_key) {
            trade.refunded_fen += request.amount.fen();
        }
        let refund_no = self.next_no("R", now_ms);
        let answer = RefundResponse { refund_no: refund_no.clone(), status: RefundStatus::Processing };
        self.refunds.insert(
            refund_key.clone(),
            Refund {
                refund_no,
                request: request.clone(),
                answer,
                status: RefundStatus::Processing,
                succeeded_at_ms: None,
            },
        );
        let mut applied = Applied::plain(());
        if self.rules.refund_delay_ms == 0 {
            applied.events = self.settle_refund(&refund_key.0, &refund_key.1, now_ms);
        } else {
            applied.timers.push(Timer::SettleRefund {
                merchant_wallet_id: refund_key.0.clone(),
                out_refund_no: refund_key.1.clone(),
            });
        }
        let refund = &self.refunds[&refund_key];
        let answer = RefundResponse { refund_no: refund.refund_no.clone(), status: refund.status };
        if let Some(refund) = self.refunds.get_mut(&refund_key) {
            refund.answer = answer.clone();
        }
        Ok(Applied { answer, events: applied.events, timers: applied.timers, after: AfterApply::Answer })
    }

    /// Moves a `PROCESSING` refund to `SUCCESS` (money back to the payer, a REFUND entry) or
    /// `FAILED` (the merchant wallet cannot pay it; the reservation is released).
    pub fn settle_refund(&mut self, merchant_wallet_id: &str, out_refund_no: &str, now_ms: i64) -> Vec<Event> {
        let key = (merchant_wallet_id.to_owned(), out_refund_no.to_owned());
        let Some(refund) = self.refunds.get(&key).cloned() else {
            return Vec::new();
        };
        if refund.status != RefundStatus::Processing {
            return Vec::new();
        }
        let trade_key = (merchant_wallet_id.to_owned(), refund.request.out_trade_no.clone());
        let amount_fen = refund.request.amount.fen();
        let payer_id = self.trades.get(&trade_key).and_then(|trade| trade.payer_wallet_id.clone()).unwrap_or_default();
        let merchant_ok =
            self.wallets.get(merchant_wallet_id).is_some_and(|m| !m.frozen && m.balance_fen >= amount_fen);
        let status = if merchant_ok {
            if let Some(merchant) = self.wallets.get_mut(merchant_wallet_id) {
                merchant.balance_fen -= amount_fen;
            }
            if let Some(payer) = self.wallets.get_mut(&payer_id) {
                payer.balance_fen += amount_fen;
            }
            let operator_ref = self.next_no("OP", now_ms);
            self.entries.push(Entry {
                wallet_id: merchant_wallet_id.to_owned(),
                settled_at_ms: now_ms,
                operator_ref,
                out_no: out_refund_no.to_owned(),
                kind: EntryKind::Refund,
                status: EntryStatus::Success,
                amount_fen,
                fee_fen: 0,
                counterparty_wallet_id: payer_id,
                memo: refund.request.reason.clone(),
            });
            RefundStatus::Success
        } else {
            if let Some(trade) = self.trades.get_mut(&trade_key) {
                trade.refunded_fen -= amount_fen;
            }
            RefundStatus::Failed
        };
        let Some(refund) = self.refunds.get_mut(&key) else {
            return Vec::new();
        };
        refund.status = status;
        if status == RefundStatus::Success {
            refund.succeeded_at_ms = Some(now_ms);
        }
        let mut view = refund_view(refund);
        view.out_refund_no = Some(out_refund_no.to_owned());
        let event_type = if status == RefundStatus::Success {
            NotificationType::RefundSuccess
        } else {
            NotificationType::RefundFailed
        };
        vec![Event { event_type, resource: json(&view) }]
    }

    pub fn query_refund(&self, merchant_wallet_id: &str, out_refund_no: &str) -> Result<RefundQueryResponse, Refusal> {
        check_wallet_id("merchant_wallet_id", merchant_wallet_id)?;
        self.refunds
            .get(&(merchant_wallet_id.to_owned(), out_refund_no.to_owned()))
            .map(refund_view)
            .ok_or_else(|| Refusal::new(404, "REFUND_NOT_FOUND", "no such refund"))
    }

    // ---- transfers -----------------------------------------------------------------------

    pub fn transfer(&mut self, request: &TransferRequest, now_ms: i64) -> Result<Applied<TransferResponse>, Refusal> {
        check_wallet_id("payer_wallet_id", &request.payer_wallet_id)?;
        check_wallet_id("payee_wallet_id", &request.payee_wallet_id)?;
        check_out_no("out_transfer_no", &request.out_transfer_no)?;
        check_amount(request.amount)?;
        check_text("payee_name", &request.payee_name)?;
        check_text("memo", &request.memo)?;
        let key = (request.payer_wallet_id.clone(), request.out_transfer_no.clone());
        if let Some(transfer) = self.transfers.get(&key) {
            return if &transfer.request == request {
                // A repeat answers with where the transfer stands now.
                Ok(Applied::plain(TransferResponse { status: transfer.status, ..transfer.answer.clone() }))
            } else {
                Err(Refusal::duplicate())
            };
        }
        if !self.wallets.contains_key(&request.payer_wallet_id) {
            return Err(Refusal::new(404, codes::WALLET_NOT_FOUND, "no such funding wallet"));
        }
        self.ensure_room()?;
        let transfer_no = self.next_no("X", now_ms);
        let answer = TransferResponse { transfer_no: transfer_no.clone(), status: TransferStatus::Accepted };
        self.transfers.insert(
            key.clone(),
            Transfer {
                transfer_no,
                request: request.clone(),
                answer: answer.clone(),
                status: TransferStatus::Accepted,
                fail_code: None,
                succeeded_at_ms: None,
                returned: false,
            },
        );
        let mut applied = Applied::plain(answer);
        if self.rules.transfer_delay_ms == 0 {
            // Settled inside the request: the answer says so, as the spec's status allows.
            applied.events = self.settle_transfer(&key.0, &key.1, now_ms);
            if let Some(settled) = self.transfers.get(&key) {
                applied.answer.status = settled.status;
            }
        } else {
            applied.timers.push(Timer::SettleTransfer { payer_wallet_id: key.0, out_transfer_no: key.1 });
        }
        Ok(applied)
    }

    /// Moves an `ACCEPTED` transfer to `SUCCESS` or `FAILED` under the wallet rules.
    pub fn settle_transfer(&mut self, payer_wallet_id: &str, out_transfer_no: &str, now_ms: i64) -> Vec<Event> {
        let key = (payer_wallet_id.to_owned(), out_transfer_no.to_owned());
        let Some(transfer) = self.transfers.get(&key).cloned() else {
            return Vec::new();
        };
        if transfer.status != TransferStatus::Accepted {
            return Vec::new();
        }
        let request = &transfer.request;
        let amount_fen = request.amount.fen();
        let day = business_day(now_ms);
        let check = match (self.wallets.get(payer_wallet_id), self.wallets.get(&request.payee_wallet_id)) {
            (None, _) | (_, None) => Err(codes::WALLET_NOT_FOUND),
            (Some(payer), Some(payee)) => payer.check_debit(amount_fen, None, day).and_then(|()| {
                payee.check_credit(amount_fen)?;
                if payee.holder_name != request.payee_name { Err(codes::NAME_MISMATCH) } else { Ok(()) }
            }),
        };
        let (status, fail_code) = match check {
            Ok(()) => {
                if let Some(payer) = self.wallets.get_mut(payer_wallet_id) {
                    payer.debit(amount_fen, day);
                }
                if let Some(payee) = self.wallets.get_mut(&request.payee_wallet_id) {
                    payee.balance_fen += amount_fen;
                }
                let operator_ref = self.next_no("OP", now_ms);
                self.entries.push(Entry {
                    wallet_id: payer_wallet_id.to_owned(),
                    settled_at_ms: now_ms,
                    operator_ref,
                    out_no: out_transfer_no.to_owned(),
                    kind: EntryKind::Transfer,
                    status: EntryStatus::Success,
                    amount_fen,
                    fee_fen: 0,
                    counterparty_wallet_id: request.payee_wallet_id.clone(),
                    memo: request.memo.clone(),
                });
                (TransferStatus::Success, None)
            }
            Err(code) => (TransferStatus::Failed, Some(code)),
        };
        let Some(transfer) = self.transfers.get_mut(&key) else {
            return Vec::new();
        };
        transfer.status = status;
        transfer.fail_code = fail_code;
        if status == TransferStatus::Success {
            transfer.succeeded_at_ms = Some(now_ms);
        }
        let mut view = transfer_view(transfer);
        view.out_transfer_no = Some(out_transfer_no.to_owned());
        let event_type = if status == TransferStatus::Success {
            NotificationType::TransferSuccess
        } else {
            NotificationType::TransferFailed
        };
        vec![Event { event_type, resource: json(&view) }]
    }

    /// A successful transfer bounces back (e.g. the payee's wallet was closed): the money
    /// returns to the funding wallet with a `TRANSFER_RETURN` entry. The transfer itself
    /// stays `SUCCESS`, as the operator reported it.
    pub fn return_transfer(
        &mut self,
        payer_wallet_id: &str,
        out_transfer_no: &str,
        now_ms: i64,
    ) -> Result<(), Refusal> {
        let key = (payer_wallet_id.to_owned(), out_transfer_no.to_owned());
        let transfer = self.transfers.get(&key).cloned().ok_or_else(transfer_not_found)?;
        if transfer.status != TransferStatus::Success || transfer.returned {
            return Err(Refusal::new(
                409,
                "TRANSFER_NOT_RETURNABLE",
                "only an unreturned successful transfer can bounce",
            ));
        }
        let amount_fen = transfer.request.amount.fen();
        let payee_id = transfer.request.payee_wallet_id.clone();
        if let Some(payee) = self.wallets.get_mut(&payee_id) {
            payee.balance_fen -= amount_fen.min(payee.balance_fen);
        }
        if let Some(payer) = self.wallets.get_mut(payer_wallet_id) {
            payer.credit_back(amount_fen, business_day(now_ms));
        }
        let operator_ref = self.next_no("OP", now_ms);
        self.entries.push(Entry {
            wallet_id: payer_wallet_id.to_owned(),
            settled_at_ms: now_ms,
            operator_ref,
            out_no: out_transfer_no.to_owned(),
            kind: EntryKind::TransferReturn,
            status: EntryStatus::Success,
            amount_fen,
            fee_fen: 0,
            counterparty_wallet_id: payee_id,
            memo: String::from("转账退回"),
        });
        if let Some(transfer) = self.transfers.get_mut(&key) {
            transfer.returned = true;
        }
        Ok(())
    }

    pub fn query_transfer(
        &self,
        payer_wallet_id: &str,
        out_transfer_no: &str,
    ) -> Result<TransferQueryResponse, Refusal> {
        check_wallet_id("payer_wallet_id", payer_wallet_id)?;
        self.transfers
            .get(&(payer_wallet_id.to_owned(), out_transfer_no.to_owned()))
            .map(transfer_view)
            .ok_or_else(transfer_not_found)
    }

    // ---- statements ----------------------------------------------------------------------

    /// The statement lines of `wallet_id` for business day `date` (`YYYY-MM-DD`), in the
    /// order they settled. Refused until the day has ended in Asia/Shanghai.
    pub fn statement_lines(&self, wallet_id: &str, date: &str, now_ms: i64) -> Result<Vec<StatementLine>, Refusal> {
        check_wallet_id("wallet_id", wallet_id)?;
        let day = parse_day(date).ok_or_else(|| Refusal::invalid("date must be YYYY-MM-DD"))?;
        if day >= business_day(now_ms) {
            return Err(Refusal::new(
                404,
                "STATEMENT_NOT_READY",
                "the statement is written once the business day has ended",
            ));
        }
        if !self.wallets.contains_key(wallet_id) {
            return Err(Refusal::new(404, codes::WALLET_NOT_FOUND, "no such wallet"));
        }
        // Entries are pushed in settlement order, so filtering keeps them ordered.
        Ok(self
            .entries
            .iter()
            .filter(|entry| entry.wallet_id == wallet_id && business_day(entry.settled_at_ms) == day)
            .map(|entry| StatementLine {
                settled_at: settled_at(entry.settled_at_ms),
                operator_ref: entry.operator_ref.clone(),
                out_no: entry.out_no.clone(),
                kind: entry.kind,
                status: entry.status,
                amount_fen: entry.amount_fen,
                fee_fen: entry.fee_fen,
                counterparty: if entry.counterparty_wallet_id.is_empty() {
                    String::new()
                } else {
                    mask_wallet_id(&entry.counterparty_wallet_id)
                },
                memo: entry.memo.clone(),
            })
            .collect())
    }
}

fn trade_not_found() -> Refusal {
    Refusal::new(404, "TRADE_NOT_FOUND", "no such trade")
}

fn transfer_not_found() -> Refusal {
    Refusal::new(404, "TRANSFER_NOT_FOUND", "no such transfer")
}

fn fail_trade(trade: &mut Trade, code: &'static str) {
    trade.status = TradeStatus::Failed;
    trade.fail_code = Some(code);
}

fn fail_code_of(trade: &Trade) -> Option<String> {
    trade.fail_code.map(str::to_owned)
}

fn trade_view(trade: &Trade) -> TradeQueryResponse {
    TradeQueryResponse {
        trade_no: trade.trade_no.clone(),
        out_trade_no: trade.out_trade_no.clone(),
        status: trade.status,
        amount: Amount::from_fen(trade.amount_fen).unwrap_or_default(),
        refunded_amount: Amount::from_fen(trade.refunded_fen).unwrap_or_default(),
        paid_at: trade.paid_at_ms.map(rfc3339),
    }
}

fn refund_view(refund: &Refund) -> RefundQueryResponse {
    RefundQueryResponse {
        refund_no: refund.refund_no.clone(),
        status: refund.status,
        amount: refund.request.amount,
        succeeded_at: refund.succeeded_at_ms.map(rfc3339),
        out_refund_no: None,
    }
}

fn transfer_view(transfer: &Transfer) -> TransferQueryResponse {
    TransferQueryResponse {
        transfer_no: transfer.transfer_no.clone(),
        status: transfer.status,
        fail_code: transfer.fail_code.map(str::to_owned),
        succeeded_at: transfer.succeeded_at_ms.map(rfc3339),
        out_transfer_no: None,
    }
}

fn json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Fee in fen for `amount_fen` at `rate_ppm`, rounded half up, in i128 so it cannot wrap.
pub fn fee_for(amount_fen: i64, rate_ppm: u32) -> i64 {
    let fee = (i128::from(amount_fen) * i128::from(rate_ppm) + 500_000) / 1_000_000;
    i64::try_from(fee).unwrap_or(amount_fen).min(amount_fen)
}

// ---- checks ------------------------------------------------------------------------------

fn check_wallet_id(field: &str, id: &str) -> Result<(), Refusal> {
    if id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Refusal::invalid(format!("{field} must be a 16-digit wallet id")))
    }
}

fn check_out_no(field: &str, out_no: &str) -> Result<(), Refusal> {
    let ok = (1..=MAX_OUT_NO_CHARS).contains(&out_no.len())
        && out_no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(()) } else { Err(Refusal::invalid(format!("{field} must be 1-{MAX_OUT_NO_CHARS} of [A-Za-z0-9_-]"))) }
}

fn check_amount(amount: Amount) -> Result<(), Refusal> {
    if amount.is_zero() { Err(Refusal::invalid("amount must be greater than zero")) } else { Ok(()) }
}

fn check_text(field: &str, text: &str) -> Result<(), Refusal> {
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Refusal::invalid(format!("{field} is longer than {MAX_TEXT_CHARS} characters")));
    }
    Ok(())
}

// ---- time --------------------------------------------------------------------------------

/// The business day (Asia/Shanghai) of an instant, as days since 1970-01-01.
pub fn business_day(now_ms: i64) -> i64 {
    (now_ms + SHANGHAI_OFFSET_MS).div_euclid(MS_PER_DAY)
}

fn shanghai(now_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .to_offset(SHANGHAI)
}

pub fn rfc3339(now_ms: i64) -> String {
    UnixMs(now_ms).to_rfc3339_shanghai()
}

fn settled_at(now_ms: i64) -> String {
    shanghai(now_ms).format(format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")).unwrap_or_default()
}

fn compact_date(now_ms: i64) -> String {
    shanghai(now_ms).format(format_description!("[year][month][day]")).unwrap_or_default()
}

/// `YYYY-MM-DD` as days since 1970-01-01, or None when it is not a real date.
pub fn parse_day(date: &str) -> Option<i64> {
    if date.len() != 10 {
        return None;
    }
    let date = time::Date::parse(date, format_description!("[year]-[month]-[day]")).ok()?;
    Some(i64::from(
        date.to_julian_day() - time::Date::from_calendar_date(1970, time::Month::January, 1).ok()?.to_julian_day(),
    ))
}
