//! Payments and refunds at the counter: their states, the only moves between them, and the
//! refund ceiling. The store enforces the same rules with compare-and-set SQL; this module is
//! the reference the property tests hold it to.

use super::directory::text_enum;
use super::money::Amount;

text_enum!(
    /// Where a payment stands. States only move forward (see [`PaymentStatus::may_become`]).
    PaymentStatus {
        /// Sent to the operator; outcome not known yet.
        Processing => "processing",
        /// The payer must confirm on their wallet.
        Userpaying => "userpaying",
        /// A dynamic QR waiting to be scanned.
        AwaitingScan => "awaiting_scan",
        Succeeded => "succeeded",
        Failed => "failed",
        /// A dynamic QR that expired unpaid.
        Closed => "closed",
        Reversed => "reversed",
    }
);

impl PaymentStatus {
    /// The forward-only state machine. Anything not listed is refused, so a late or
    /// duplicated notification can never move SUCCEEDED back to pending.
    pub fn may_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        match self {
            Processing => matches!(next, Userpaying | Succeeded | Failed | Closed | Reversed),
            AwaitingScan => matches!(next, Processing | Userpaying | Succeeded | Failed | Closed | Reversed),
            Userpaying => matches!(next, Succeeded | Failed | Closed | Reversed),
            // A same-day reversal refunds a succeeded payment in full.
            Succeeded => next == Reversed,
            Failed | Closed | Reversed => false,
        }
    }

    /// The states that may move to `next`: the `WHERE status IN (...)` of a transition.
    pub fn predecessors(next: PaymentStatus) -> Vec<PaymentStatus> {
        PaymentStatus::ALL.iter().copied().filter(|from| from.may_become(next)).collect()
    }

    /// No operator answer can change it any more.
    pub fn is_final(self) -> bool {
        matches!(self, PaymentStatus::Failed | PaymentStatus::Closed | PaymentStatus::Reversed)
    }

    /// Still waiting on the operator or the payer.
    pub fn is_pending(self) -> bool {
        matches!(self, PaymentStatus::Processing | PaymentStatus::Userpaying | PaymentStatus::AwaitingScan)
    }
}

text_enum!(
    /// How the payer paid.
    PaymentMethod {
        PayerCode => "payer_code",
        Card => "card",
        DynamicQr => "dynamic_qr",
    }
);

text_enum!(
    /// Where a refund stands: processing, then succeeded or failed, never back.
    RefundStatus {
        Processing => "processing",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

impl RefundStatus {
    pub fn may_become(self, next: RefundStatus) -> bool {
        self == RefundStatus::Processing && next != RefundStatus::Processing
    }
}

/// Why a refund cannot be reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefundRefusal {
    #[error("only a succeeded payment can be refunded")]
    NotSucceeded,
    #[error("refunds would exceed the payment")]
    ExceedsPayment,
}

/// The money side of a payment: what was paid, what is reserved by refunds in flight or
/// done, and what was refunded. Invariant: refunded <= reserved <= amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefundLedger {
    pub status: PaymentStatus,
    pub amount: Amount,
    pub reserved: Amount,
    pub refunded: Amount,
}

impl RefundLedger {
    pub fn new(amount: Amount) -> RefundLedger {
        RefundLedger { status: PaymentStatus::Processing, amount, reserved: Amount::ZERO, refunded: Amount::ZERO }
    }

    /// Hold `amount` for a refund about to be sent to the operator.
    pub fn reserve(self, amount: Amount) -> Result<RefundLedger, RefundRefusal> {
        if self.status != PaymentStatus::Succeeded {
            return Err(RefundRefusal::NotSucceeded);
        }
        let reserved = self.reserved.checked_add(amount).map_err(|_| RefundRefusal::ExceedsPayment)?;
        if reserved > self.amount {
            return Err(RefundRefusal::ExceedsPayment);
        }
        Ok(RefundLedger { reserved, ..self })
    }

    /// A reserved refund succeeded.
    pub fn settle(self, amount: Amount) -> RefundLedger {
        let refunded = self.refunded.checked_add(amount).expect("refund within its reservation");
        assert!(refunded <= self.reserved, "settled more than was reserved");
        RefundLedger { refunded, ..self }
    }

    /// A reserved refund failed: give its amount back.
    pub fn release(self, amount: Amount) -> RefundLedger {
        let reserved = self.reserved.checked_sub(amount).expect("release within the reservation");
        assert!(self.refunded <= reserved, "released money already refunded");
        RefundLedger { reserved, ..self }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rank(status: PaymentStatus) -> u8 {
        match status {
            PaymentStatus::AwaitingScan => 0,
            PaymentStatus::Processing => 1,
            PaymentStatus::Userpaying => 2,
            PaymentStatus::Succeeded => 3,
            PaymentStatus::Failed | PaymentStatus::Closed | PaymentStatus::Reversed => 4,
        }
    }

    #[test]
    fn final_states_have_no_way_out() {
        for from in PaymentStatus::ALL {
            for to in PaymentStatus::ALL {
                if from.is_final() {
                    assert!(!from.may_become(*to), "{from} -> {to}");
                }
            }
        }
    }

    #[test]
    fn a_succeeded_payment_can_only_be_reversed() {
        assert!(PaymentStatus::predecessors(PaymentStatus::Reversed).contains(&PaymentStatus::Succeeded));
        for to in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::Succeeded.may_become(*to), *to == PaymentStatus::Reversed);
        }
    }

    #[derive(Clone, Debug)]
    enum Event {
        Operator(PaymentStatus),
        Reserve(i64),
        Settle(usize),
        Release(usize),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            proptest::sample::select(PaymentStatus::ALL.to_vec()).prop_map(Event::Operator),
            (1i64..2_000).prop_map(Event::Reserve),
            (0usize..8).prop_map(Event::Settle),
            (0usize..8).prop_map(Event::Release),
        ]
    }

    proptest! {
        #[test]
        fn no_sequence_of_events_moves_a_payment_backwards_or_over_refunds_it(
            amount_fen in 1i64..5_000,
            events in proptest::collection::vec(event(), 0..60),
        ) {
            let mut state = RefundLedger::new(Amount::from_fen(amount_fen).unwrap());
            let mut open: Vec<Amount> = Vec::new();
            for event in events {
                let before = state;
                match event {
                    Event::Operator(next) => {
                        if state.status.may_become(next) {
                            prop_assert!(rank(next) >= rank(state.status) || state.status == PaymentStatus::AwaitingScan);
                            state.status = next;
                        }
                    }
                    Event::Reserve(fen) => {
                        match state.reserve(Amount::from_fen(fen).unwrap()) {
                            Ok(next) => { state = next; open.push(Amount::from_fen(fen).unwrap()); }
                            Err(_) => prop_assert_eq!(state, before, "a refused reservation changes nothing"),
                        }
                    }
                    Event::Settle(n) if !open.is_empty() => {
                        let amount = open.remove(n % open.len());
                        state = state.settle(amount);
                    }
                    Event::Release(n) if !open.is_empty() => {
                        let amount = open.remove(n % open.len());
                        state = state.release(amount);
                    }
                    Event::Settle(_) | Event::Release(_) => {}
                }
                prop_assert!(state.refunded <= state.reserved && state.reserved <= state.amount);
                prop_assert!(rank(state.status) >= rank(before.status) || before.status == PaymentStatus::AwaitingScan);
                if before.status.is_final() {
                    prop_assert_eq!(state.status, before.status);
                }
            }
        }
    }
}

/// A payment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub id: super::ids::PaymentId,
    pub facility_id: super::ids::FacilityId,
    pub terminal_id: super::ids::TerminalId,
    pub request_id: String,
    pub merchant_wallet_id: super::directory::WalletId,
    pub out_trade_no: String,
    pub method: PaymentMethod,
    pub status: PaymentStatus,
    pub amount: Amount,
    pub refund_reserved: Amount,
    pub refunded: Amount,
    pub description: String,
    pub trade_no: Option<String>,
    pub fail_code: Option<String>,
    pub qr_payload: Option<String>,
    pub expires_at: Option<super::time::UnixMs>,
    pub paid_at: Option<super::time::UnixMs>,
    pub version: i64,
    pub created_at: super::time::UnixMs,
    pub updated_at: super::time::UnixMs,
    pub next_check_at: Option<super::time::UnixMs>,
    pub check_attempts: i64,
}

/// A refund as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    pub id: super::ids::RefundId,
    pub payment_id: super::ids::PaymentId,
    pub terminal_id: super::ids::TerminalId,
    pub request_id: String,
    pub out_refund_no: String,
    pub status: RefundStatus,
    pub amount: Amount,
    pub reason: String,
    pub refund_no: Option<String>,
    pub fail_code: Option<String>,
    pub succeeded_at: Option<super::time::UnixMs>,
    pub version: i64,
    pub created_at: super::time::UnixMs,
    pub updated_at: super::time::UnixMs,
    pub next_check_at: Option<super::time::UnixMs>,
    pub check_attempts: i64,
}

/// A terminal's request id: the idempotency key of a money-moving call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn parse(raw: &str) -> Result<RequestId, &'static str> {
        let valid =
            (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid { Ok(RequestId(raw.to_owned())) } else { Err("must be 1 to 64 characters of [A-Za-z0-9_-]") }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}
