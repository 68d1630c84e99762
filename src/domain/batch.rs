//! Subsidy batches and their lines as state machines, the payment period, and the
//! classification of the operator's transfer failures.
//!
//! A batch moves draft -> approved -> running -> completed (running <-> paused on the way), or is
//! cancelled before it runs. A line moves pending -> sending -> succeeded | failed and never back:
//! once `sending` its `out_transfer_no` may have reached the operator, so only a definite answer
//! (directly or by query) settles it. A succeeded line becomes `returned` when the funding
//! wallet's statement shows its money came back (a closed or frozen wallet); like a failed one
//! it may then be re-issued.

use crate::domain::directory::{RegionPath, WalletId};
use crate::domain::ids::{BatchId, ProgrammeId, RegionId, TokenId};
use crate::domain::money::Amount;
use crate::domain::time::UnixMs;

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            pub fn parse(raw: &str) -> Option<$name> {
                Self::ALL.iter().copied().find(|status| status.as_str() == raw)
            }
        }
    };
}

status_enum!(
    /// Where a batch is in its life.
    BatchStatus {
        Draft => "draft",
        Approved => "approved",
        Running => "running",
        Paused => "paused",
        Completed => "completed",
        Cancelled => "cancelled",
    }
);

status_enum!(
    /// Where one beneficiary's payment is.
    LineStatus {
        Pending => "pending",
        Sending => "sending",
        Succeeded => "succeeded",
        Failed => "failed",
        Returned => "returned",
    }
);

impl BatchStatus {
    /// The states a batch may be in just before entering `self`; the store's compare-and-set
    /// updates use exactly these, so a batch can never move backwards.
    pub fn predecessors(self) -> &'static [BatchStatus] {
        match self {
            BatchStatus::Draft => &[],
            BatchStatus::Approved => &[BatchStatus::Draft],
            BatchStatus::Running => &[BatchStatus::Approved, BatchStatus::Paused],
            BatchStatus::Paused => &[BatchStatus::Running],
            BatchStatus::Completed => &[BatchStatus::Running],
            // Once running, money may have moved: a batch is stopped by pausing, never undone.
            BatchStatus::Cancelled => &[BatchStatus::Draft, BatchStatus::Approved],
        }
    }

    pub fn may_become(self, next: BatchStatus) -> bool {
        next.predecessors().contains(&self)
    }

    /// Open batches hold their people for the period: nobody may be in two at once.
    pub fn is_open(self) -> bool {
        !matches!(self, BatchStatus::Completed | BatchStatus::Cancelled)
    }
}

impl LineStatus {
    pub fn predecessors(self) -> &'static [LineStatus] {
        match self {
            LineStatus::Pending => &[],
            LineStatus::Sending => &[LineStatus::Pending],
            LineStatus::Succeeded | LineStatus::Failed => &[LineStatus::Pending, LineStatus::Sending],
            LineStatus::Returned => &[LineStatus::Succeeded],
        }
    }

    pub fn may_become(self, next: LineStatus) -> bool {
        next.predecessors().contains(&self)
    }

    /// Whether the operator has answered: the worker never touches it again.
    pub fn is_final(self) -> bool {
        matches!(self, LineStatus::Succeeded | LineStatus::Failed | LineStatus::Returned)
    }

    /// A line whose money did not reach the person: the office may re-issue it.
    pub fn may_be_reissued(self) -> bool {
        matches!(self, LineStatus::Failed | LineStatus::Returned)
    }
}

/// The period a payment belongs to, `YYYY-MM` (per-period caps and "one open batch per person"
/// are per programme and period).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a period is a month written YYYY-MM, such as 2026-11")]
pub struct PeriodError;

impl Period {
    /// What [`Period::parse`] accepts, as a regular expression (for the OpenAPI document).
    pub const PATTERN: &'static str = "^20[0-9]{2}-(0[1-9]|1[0-2])$";

    pub fn parse(raw: &str) -> Result<Period, PeriodError> {
        let bytes = raw.as_bytes();
        let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
        if bytes.len() != 7 || bytes[4] != b'-' || !digits(0..4) || !digits(5..7) {
            return Err(PeriodError);
        }
        let month: u32 = raw[5..7].parse().map_err(|_| PeriodError)?;
        let year: u32 = raw[0..4].parse().map_err(|_| PeriodError)?;
        if !(1..=12).contains(&month) || !(2000..=2099).contains(&year) {
            return Err(PeriodError);
        }
        Ok(Period(raw.to_owned()))
    }

    pub fn from_trusted(raw: String) -> Period {
        Period(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The operator's idempotency key for one line, fixed when the line is stored: `D` + the
/// batch id's 32 hex digits + `-` + the line's sequence number. At most 1 + 32 + 1 + 19 = 53
/// characters of `[A-Za-z0-9-]`, within the spec's 64.
pub fn out_transfer_no(batch: &BatchId, seq: u64) -> String {
    let hex = batch.as_str().rsplit('_').next().unwrap_or_default();
    format!("D{hex}-{seq}")
}

/// What the sealed list of a chunk's ID numbers is bound to: the batch and the chunk's first
/// line, so a sealed list copied into another chunk or batch does not open.
pub fn chunk_seal_context(batch: &BatchId, first_seq: u64) -> String {
    format!("{}/lines/{first_seq}/citizen_ids", batch.as_str())
}

/// What a definite transfer failure means for the office, from the operator's `fail_code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferFailure {
    /// The wallet id names no wallet: correct the wallet id and re-issue.
    WalletNotFound,
    /// The name differs from the wallet holder's: correct the name and re-issue.
    NameMismatch,
    /// The beneficiary's wallet is frozen: resolve with the operator, then re-issue.
    WalletFrozen,
    /// The wallet's tier limits refuse the amount: upgrade the wallet or split the payment.
    WalletLimitExceeded,
    /// The funding wallet is short: top it up, then re-issue.
    InsufficientBalance,
    /// Any other code the operator may add; kept verbatim in the line's `fail_code`.
    Other,
}

impl TransferFailure {
    pub fn classify(fail_code: &str) -> TransferFailure {
        match fail_code {
            "WALLET_NOT_FOUND" => TransferFailure::WalletNotFound,
            "NAME_MISMATCH" => TransferFailure::NameMismatch,
            "WALLET_FROZEN" => TransferFailure::WalletFrozen,
            "WALLET_LIMIT_EXCEEDED" => TransferFailure::WalletLimitExceeded,
            "INSUFFICIENT_BALANCE" => TransferFailure::InsufficientBalance,
            _ => TransferFailure::Other,
        }
    }

    /// [`TransferFailure::advice_zh`] in English, for the console's second language.
    pub fn advice_en(self) -> &'static str {
        match self {
            TransferFailure::WalletNotFound => "no such wallet: check the wallet id, then re-issue",
            TransferFailure::NameMismatch => "the name differs from the wallet holder's: correct it, then re-issue",
            TransferFailure::WalletFrozen => "the wallet is frozen: contact the operator",
            TransferFailure::WalletLimitExceeded => "over the wallet's limits: upgrade the wallet or pay in parts",
            TransferFailure::InsufficientBalance => "the funding wallet is short: top it up, then re-issue",
            TransferFailure::Other => "not paid: contact the operator",
        }
    }

    /// Advice for the office's result file.
    pub fn advice_zh(self) -> &'static str {
        match self {
            TransferFailure::WalletNotFound => "钱包不存在，请核对钱包编号后重新发放",
            TransferFailure::NameMismatch => "姓名与钱包户名不符，请核对姓名后重新发放",
            TransferFailure::WalletFrozen => "钱包已冻结，请联系运营机构",
            TransferFailure::WalletLimitExceeded => "超出钱包限额，请升级钱包或分次发放",
            TransferFailure::InsufficientBalance => "资金钱包余额不足，请充值后重新发放",
            TransferFailure::Other => "发放失败，请联系运营机构",
        }
    }
}

/// A subsidy programme as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programme {
    pub id: ProgrammeId,
    pub region_id: RegionId,
    pub region_path: RegionPath,
    pub name: String,
    pub funding_wallet_id: WalletId,
    pub budget: Amount,
    /// Reserved by approved batches, less what definitely failed.
    pub committed: Amount,
    pub per_payment_cap: Amount,
    pub per_period_cap: Amount,
    /// Where the money may be spent (e.g. designated canteens); empty for anywhere.
    pub designated_merchants: Vec<WalletId>,
    /// First and last day payments may be made, `YYYY-MM-DD` (Asia/Shanghai).
    pub starts_on: String,
    pub ends_on: String,
    pub created_by: TokenId,
    pub created_at: UnixMs,
}

/// A batch as stored, with the region of its programme for scope checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: BatchId,
    pub programme_id: ProgrammeId,
    pub region_path: RegionPath,
    pub period: Period,
    pub idempotency_key: String,
    pub upload_sha256: String,
    pub uploaded_by: TokenId,
    pub encoding: crate::domain::disbursement::BatchEncoding,
    pub chinese_headers: bool,
    pub status: BatchStatus,
    pub line_count: u64,
    pub total: Amount,
    pub version: i64,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

/// One recorded state change of a batch: who moved it and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchStep {
    pub from: Option<BatchStatus>,
    pub to: BatchStatus,
    pub actor: TokenId,
    pub actor_label: String,
    pub at: UnixMs,
}

/// Lines and amounts per line state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateTally {
    pub lines: u64,
    pub amount_fen: i64,
}

/// How far a batch has got: a tally per line state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub pending: StateTally,
    pub sending: StateTally,
    pub succeeded: StateTally,
    pub failed: StateTally,
    pub returned: StateTally,
}

impl Progress {
    pub fn tally_mut(&mut self, status: LineStatus) -> &mut StateTally {
        match status {
            LineStatus::Pending => &mut self.pending,
            LineStatus::Sending => &mut self.sending,
            LineStatus::Succeeded => &mut self.succeeded,
            LineStatus::Failed => &mut self.failed,
            LineStatus::Returned => &mut self.returned,
        }
    }

    /// Lines still needing the operator.
    pub fn open_lines(&self) -> u64 {
        self.pending.lines + self.sending.lines
    }
}

/// One beneficiary line as the worker and the result file see it. The clear name is here for
/// the operator's `payee_name`; the ID number only as its masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct Line {
    pub batch_id: BatchId,
    pub seq: u64,
    pub file_line: u64,
    pub generation: u64,
    pub reissue_of_seq: Option<u64>,
    pub reissued_as_seq: Option<u64>,
    pub payee_name: String,
    pub name_masked: String,
    pub citizen_id_masked: String,
    pub wallet_id: WalletId,
    pub amount: Amount,
    pub memo: String,
    pub out_transfer_no: String,
    pub status: LineStatus,
    pub fail_code: Option<String>,
    pub transfer_no: Option<String>,
    pub succeeded_at: Option<UnixMs>,
    pub attempts: u32,
    /// Set once the line is `returned`.
    pub returned: Option<LineReturn>,
}

/// How a paid line's money came back, as the funding wallet's statement said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineReturn {
    pub at: UnixMs,
    /// The statement line's memo (e.g. 钱包已冻结，退回).
    pub reason: String,
    /// The operator's reference of the return line.
    pub operator_ref: String,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("batch_id", &self.batch_id)
            .field("seq", &self.seq)
            .field("name", &self.name_masked)
            .field("citizen_id", &self.citizen_id_masked)
            .field("amount", &self.amount)
            .field("status", &self.status)
            .field("fail_code", &self.fail_code)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn batches_follow_the_four_eyes_path() {
        use BatchStatus::*;
        assert!(Draft.may_become(Approved));
        assert!(Approved.may_become(Running));
        assert!(Running.may_become(Paused) && Paused.may_become(Running));
        assert!(Running.may_become(Completed));
        assert!(Draft.may_become(Cancelled) && Approved.may_become(Cancelled));
        assert!(!Running.may_become(Cancelled));
        assert!(!Draft.may_become(Running));
        assert!(!Completed.is_open() && !Cancelled.is_open() && Paused.is_open());
    }

    proptest! {
        #[test]
        fn no_state_is_reachable_from_itself_or_from_a_final_one(a in 0usize..6, b in 0usize..6) {
            let (from, to) = (BatchStatus::ALL[a], BatchStatus::ALL[b]);
            if from == to || matches!(from, BatchStatus::Completed | BatchStatus::Cancelled) {
                prop_assert!(!from.may_become(to));
            }
            let (from, to) = (LineStatus::ALL[a % 5], LineStatus::ALL[b % 5]);
            // After the operator's answer only its statement moves a line: a paid one back.
            let returned = (from, to) == (LineStatus::Succeeded, LineStatus::Returned);
            if (from.is_final() && !returned) || from == to {
                prop_assert!(!from.may_become(to));
            }
        }
    }

    #[test]
    fn out_transfer_numbers_fit_the_operator_spec() {
        let batch = BatchId::generate();
        let no = out_transfer_no(&batch, u64::MAX);
        assert!(no.len() <= 64);
        assert!(no.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(out_transfer_no(&batch, 1), out_transfer_no(&batch, 2));
    }

    #[test]
    fn periods_are_months() {
        assert!(Period::parse("2026-11").is_ok());
        for bad in ["2026-13", "2026-1", "26-11", "2026/11", "1999-01", "２026-11"] {
            assert_eq!(Period::parse(bad), Err(PeriodError), "{bad}");
        }
    }

    #[test]
    fn fail_codes_are_classified() {
        assert_eq!(TransferFailure::classify("NAME_MISMATCH"), TransferFailure::NameMismatch);
        assert_eq!(TransferFailure::classify("SOMETHING_NEW"), TransferFailure::Other);
    }
}
