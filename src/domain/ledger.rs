//! Double-entry ledger: pure types and rules, no I/O.
//!
//! Every movement of money is a [`JournalEntry`] whose debits equal its credits, so money is
//! never created or destroyed, only moved between accounts. Balances are derived from the
//! postings (`balance = credits - debits`), never edited. [`Ledger`] is the in-memory model:
//! tests drive it directly, and the SQL store is checked against it.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::directory::WalletId;
use crate::domain::money::Amount;

/// Upper bound on postings in one entry: a disbursement that needs more is split into several
/// entries, so no single entry makes a transaction or a proof of balance arbitrarily large.
pub const MAX_POSTINGS_PER_ENTRY: usize = 64;

/// Upper bound on the length of an account code, in bytes (codes are ASCII).
pub const MAX_ACCOUNT_CODE_LEN: usize = 128;

/// Name of a ledger account, e.g. `facility:f_123:wallet` or `operator.settlement`.
///
/// Restricted to `[a-z0-9_:.-]`, 1..=128 characters, so codes are safe in logs, URLs and SQL
/// text columns, and two codes that look alike are equal.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountCode(String);

impl AccountCode {
    pub fn parse(s: &str) -> Result<AccountCode, LedgerError> {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b':' | b'.' | b'-');
        if s.is_empty() || s.len() > MAX_ACCOUNT_CODE_LEN || !s.bytes().all(allowed) {
            return Err(LedgerError::InvalidAccountCode);
        }
        Ok(AccountCode(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for AccountCode {
    type Error = LedgerError;

    fn try_from(s: String) -> Result<AccountCode, LedgerError> {
        AccountCode::parse(&s)
    }
}

impl From<AccountCode> for String {
    fn from(code: AccountCode) -> String {
        code.0
    }
}

/// Which side of an account a posting lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Debit => "debit",
            Side::Credit => "credit",
        }
    }

    pub fn parse(s: &str) -> Result<Side, LedgerError> {
        match s {
            "debit" => Ok(Side::Debit),
            "credit" => Ok(Side::Credit),
            _ => Err(LedgerError::InvalidSide),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an account's balance (credits - debits) may go below zero.
///
/// Accounts that hold someone's money (a facility's wallet, a subsidy budget) are `Forbidden`;
/// accounts that mirror money outside carepay (the operator's settlement account) are
/// `Allowed`, since their negative balance just means "owed to us".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverdraftPolicy {
    Allowed,
    Forbidden,
}

impl OverdraftPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverdraftPolicy::Allowed => "allowed",
            OverdraftPolicy::Forbidden => "forbidden",
        }
    }

    pub fn parse(s: &str) -> Result<OverdraftPolicy, LedgerError> {
        match s {
            "allowed" => Ok(OverdraftPolicy::Allowed),
            "forbidden" => Ok(OverdraftPolicy::Forbidden),
            _ => Err(LedgerError::InvalidOverdraftPolicy),
        }
    }
}

/// The chart of accounts for a facility's money: every such account carepay books to, with its
/// code and its overdraft policy, so the policy of an account is decided here and nowhere
/// else.
///
/// A facility's merchant wallet lives at the operator; carepay mirrors it as two accounts
/// whose sum is the wallet:
/// - [`Account::Wallet`], what carepay itself moved (payments in, refunds and reversals out).
///   It never goes negative, since no refund exceeds the payment it returns; the guard holds
///   that invariant.
/// - [`Account::WalletOperatorSide`], what the operator moved on its own, as its statements
///   say (fees it charges or withholds, its adjustments, and the corrections an accountant
///   books to follow it). The statement is the operator's truth and must always book, whatever
///   carepay has seen arrive: a fee on a day without payments, a large negative adjustment. So
///   this side may go negative, meaning the operator took more from the wallet than the
///   statements gave it, out of money carepay never saw (an opening balance, a top-up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Account<'a> {
    /// Money of e-CNY payers outside carepay: payments come from it, refunds go back to it.
    Payers,
    /// A facility's merchant wallet as carepay's own payments and refunds move it.
    Wallet(&'a WalletId),
    /// The same wallet as the operator moves it itself (statement-driven).
    WalletOperatorSide(&'a WalletId),
    /// Fees the operator charged or withheld.
    OperatorFees,
    /// Adjustments the operator booked itself.
    OperatorAdjustments,
    /// Corrections an accountant booked to resolve a discrepancy.
    ReconciliationAdjustments,
}

impl Account<'_> {
    pub fn code(&self) -> AccountCode {
        let code = match self {
            Account::Payers => String::from("ecny:payers"),
            Account::Wallet(wallet) => format!("wallet:{}", wallet.as_str()),
            Account::WalletOperatorSide(wallet) => format!("wallet:{}:operator", wallet.as_str()),
            Account::OperatorFees => String::from("operator:fees"),
            Account::OperatorAdjustments => String::from("operator:adjustments"),
            Account::ReconciliationAdjustments => String::from("reconciliation:adjustments"),
        };
        // Wallet ids are 16 digits, so every code here is in the alphabet.
        AccountCode(code)
    }

    pub fn policy(&self) -> OverdraftPolicy {
        match self {
            Account::Wallet(_) => OverdraftPolicy::Forbidden,
            Account::Payers
            | Account::WalletOperatorSide(_)
            | Account::OperatorFees
            | Account::OperatorAdjustments
            | Account::ReconciliationAdjustments => OverdraftPolicy::Allowed,
        }
    }

    /// The account's code with its policy, as an account is opened.
    pub fn opening(&self) -> (AccountCode, OverdraftPolicy) {
        (self.code(), self.policy())
    }
}

/// One line of a journal entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Posting {
    pub account: AccountCode,
    pub side: Side,
    pub amount: Amount,
}

impl Posting {
    pub fn debit(account: AccountCode, amount: Amount) -> Posting {
        Posting { account, side: Side::Debit, amount }
    }

    pub fn credit(account: AccountCode, amount: Amount) -> Posting {
        Posting { account, side: Side::Credit, amount }
    }
}

/// A balanced set of postings. The only way to build one is [`JournalEntry::new`], so holding
/// a `JournalEntry` proves it is balanced, bounded and has no zero postings.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct JournalEntry {
    postings: Vec<Posting>,
}

impl JournalEntry {
    pub fn new(postings: Vec<Posting>) -> Result<JournalEntry, LedgerError> {
        if postings.len() < 2 {
            return Err(LedgerError::TooFewPostings);
        }
        if postings.len() > MAX_POSTINGS_PER_ENTRY {
            return Err(LedgerError::TooManyPostings);
        }
        if postings.iter().any(|p| p.amount.is_zero()) {
            return Err(LedgerError::ZeroPosting);
        }
        let side_total = |side: Side| {
            Amount::sum(postings.iter().filter(|p| p.side == side).map(|p| p.amount)).map_err(|_| LedgerError::Overflow)
        };
        if side_total(Side::Debit)? != side_total(Side::Credit)? {
            return Err(LedgerError::UnbalancedEntry);
        }
        Ok(JournalEntry { postings })
    }

    /// Moves `amount` from `debit` to `credit`: the debited account's balance goes down, the
    /// credited account's goes up.
    pub fn transfer(debit: AccountCode, credit: AccountCode, amount: Amount) -> Result<JournalEntry, LedgerError> {
        JournalEntry::new(vec![Posting::debit(debit, amount), Posting::credit(credit, amount)])
    }

    pub fn postings(&self) -> &[Posting] {
        &self.postings
    }
}

/// True when moving an account from (`credits_fen`, `debits_fen`) by (`delta_credit_fen`,
/// `delta_debit_fen`) would leave a negative balance that `policy` does not allow.
///
/// Shared with the SQL store so both decide overdrafts identically. Computed in `i128` so that
/// no input can make the check itself wrap.
pub fn would_overdraw(
    policy: OverdraftPolicy,
    credits_fen: i64,
    debits_fen: i64,
    delta_credit_fen: i64,
    delta_debit_fen: i64,
) -> bool {
    match policy {
        OverdraftPolicy::Allowed => false,
        OverdraftPolicy::Forbidden => {
            let balance_fen = i128::from(credits_fen) + i128::from(delta_credit_fen)
                - i128::from(debits_fen)
                - i128::from(delta_debit_fen);
            balance_fen < 0
        }
    }
}

/// Running totals of one account. Both totals only grow; the balance is derived from them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AccountTotals {
    policy: OverdraftPolicy,
    debits_fen: i64,
    credits_fen: i64,
}

impl AccountTotals {
    fn balance_fen(&self) -> i64 {
        // Both totals are non-negative i64, so their difference cannot wrap.
        self.credits_fen - self.debits_fen
    }
}

/// In-memory double-entry ledger.
///
/// `Clone` and `PartialEq` exist so tests can prove a refused operation left the ledger
/// exactly as it was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ledger {
    accounts: BTreeMap<AccountCode, AccountTotals>,
    entries: Vec<JournalEntry>,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger::default()
    }

    pub fn open_account(&mut self, code: AccountCode, policy: OverdraftPolicy) -> Result<(), LedgerError> {
        if self.accounts.contains_key(&code) {
            return Err(LedgerError::DuplicateAccount);
        }
        self.accounts.insert(code, AccountTotals { policy, debits_fen: 0, credits_fen: 0 });
        Ok(())
    }

    /// Applies `entry` completely or not at all: every check runs before anything changes.
    pub fn apply(&mut self, entry: &JournalEntry) -> Result<(), LedgerError> {
        // Net effect per account first, so an account posted to several times in one entry is
        // judged on where it ends up.
        let mut updated: BTreeMap<&AccountCode, AccountTotals> = BTreeMap::new();
        for posting in entry.postings() {
            let totals = match updated.entry(&posting.account) {
                Entry::Occupied(totals) => totals.into_mut(),
                Entry::Vacant(slot) => {
                    let current = self
                        .accounts
                        .get(&posting.account)
                        .ok_or_else(|| LedgerError::UnknownAccount(posting.account.clone()))?;
                    slot.insert(*current)
                }
            };
            let total_fen = match posting.side {
                Side::Debit => &mut totals.debits_fen,
                Side::Credit => &mut totals.credits_fen,
            };
            *total_fen = total_fen.checked_add(posting.amount.fen()).ok_or(LedgerError::Overflow)?;
        }

        for (&account, new_totals) in &updated {
            let old_totals = &self.accounts[account];
            if would_overdraw(
                old_totals.policy,
                old_totals.credits_fen,
                old_totals.debits_fen,
                new_totals.credits_fen - old_totals.credits_fen,
                new_totals.debits_fen - old_totals.debits_fen,
            ) {
                return Err(LedgerError::Overdraft { account: account.clone() });
            }
        }

        for (account, new_totals) in updated {
            self.accounts.insert(account.clone(), new_totals);
        }
        self.entries.push(entry.clone());
        Ok(())
    }

    /// Credits minus debits, in fen; `None` for an account never opened.
    pub fn balance(&self, code: &AccountCode) -> Option<i64> {
        self.accounts.get(code).map(AccountTotals::balance_fen)
    }

    /// Sum of all debits ever posted to the account, in fen.
    pub fn debits(&self, code: &AccountCode) -> Option<i64> {
        self.accounts.get(code).map(|t| t.debits_fen)
    }

    /// Sum of all credits ever posted to the account, in fen.
    pub fn credits(&self, code: &AccountCode) -> Option<i64> {
        self.accounts.get(code).map(|t| t.credits_fen)
    }

    pub fn policy(&self, code: &AccountCode) -> Option<OverdraftPolicy> {
        self.accounts.get(code).map(|t| t.policy)
    }

    /// Open accounts, in code order.
    pub fn accounts(&self) -> impl Iterator<Item = &AccountCode> {
        self.accounts.keys()
    }

    /// Every applied entry, oldest first.
    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }
}

/// Why a ledger operation was refused. `Display` is written for the client;
/// [`LedgerError::code`] is the stable machine-readable code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("journal entry is unbalanced: total debits differ from total credits")]
    UnbalancedEntry,
    #[error("journal entry needs at least two postings")]
    TooFewPostings,
    #[error("journal entry has more than {MAX_POSTINGS_PER_ENTRY} postings")]
    TooManyPostings,
    #[error("journal entry has a posting of zero")]
    ZeroPosting,
    #[error("account {0} does not exist")]
    UnknownAccount(AccountCode),
    #[error("account already exists")]
    DuplicateAccount,
    #[error("entry would overdraw account {account}, which does not allow a negative balance")]
    Overdraft { account: AccountCode },
    #[error("amount total would overflow")]
    Overflow,
    #[error(
        "account code must be 1 to {MAX_ACCOUNT_CODE_LEN} characters of lowercase letters, digits, '_', ':', '.' or '-'"
    )]
    InvalidAccountCode,
    #[error(r#"posting side must be "debit" or "credit""#)]
    InvalidSide,
    #[error(r#"overdraft policy must be "allowed" or "forbidden""#)]
    InvalidOverdraftPolicy,
}

impl LedgerError {
    /// Stable code for API error bodies; never change an existing one.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::UnbalancedEntry => "LEDGER_UNBALANCED_ENTRY",
            LedgerError::TooFewPostings => "LEDGER_TOO_FEW_POSTINGS",
            LedgerError::TooManyPostings => "LEDGER_TOO_MANY_POSTINGS",
            LedgerError::ZeroPosting => "LEDGER_ZERO_POSTING",
            LedgerError::UnknownAccount(_) => "LEDGER_UNKNOWN_ACCOUNT",
            LedgerError::DuplicateAccount => "LEDGER_DUPLICATE_ACCOUNT",
            LedgerError::Overdraft { .. } => "LEDGER_OVERDRAFT",
            LedgerError::Overflow => "LEDGER_OVERFLOW",
            LedgerError::InvalidAccountCode => "LEDGER_INVALID_ACCOUNT_CODE",
            LedgerError::InvalidSide => "LEDGER_INVALID_SIDE",
            LedgerError::InvalidOverdraftPolicy => "LEDGER_INVALID_OVERDRAFT_POLICY",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code(s: &str) -> AccountCode {
        AccountCode::parse(s).unwrap()
    }

    fn fen(n: i64) -> Amount {
        Amount::from_fen(n).unwrap()
    }

    fn ledger_with(accounts: &[(&str, OverdraftPolicy)]) -> Ledger {
        let mut ledger = Ledger::new();
        for &(name, policy) in accounts {
            ledger.open_account(code(name), policy).unwrap();
        }
        ledger
    }

    #[test]
    fn account_codes_accept_only_the_documented_alphabet_and_length() {
        for ok in ["a", "facility:f_1:wallet", "operator.settlement", "x-y", "0"] {
            assert_eq!(AccountCode::parse(ok).unwrap().as_str(), ok);
        }
        let longest = "a".repeat(MAX_ACCOUNT_CODE_LEN);
        assert!(AccountCode::parse(&longest).is_ok());
        let too_long = "a".repeat(MAX_ACCOUNT_CODE_LEN + 1);
        for bad in ["", "A", "a b", "a/b", "账户", "a\n", too_long.as_str()] {
            assert_eq!(AccountCode::parse(bad), Err(LedgerError::InvalidAccountCode), "{bad:?}");
        }
    }

    #[test]
    fn account_codes_are_validated_when_deserialized() {
        let ok: AccountCode = serde_json::from_str(r#""cash""#).unwrap();
        assert_eq!(ok, code("cash"));
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#""cash""#);
        assert!(serde_json::from_str::<AccountCode>(r#""Cash!""#).is_err());
    }

    #[test]
    fn sides_and_policies_round_trip_through_their_names() {
        for side in [Side::Debit, Side::Credit] {
            assert_eq!(Side::parse(side.as_str()), Ok(side));
        }
        assert_eq!(Side::parse("Debit"), Err(LedgerError::InvalidSide));
        for policy in [OverdraftPolicy::Allowed, OverdraftPolicy::Forbidden] {
            assert_eq!(OverdraftPolicy::parse(policy.as_str()), Ok(policy));
        }
        assert_eq!(OverdraftPolicy::parse(""), Err(LedgerError::InvalidOverdraftPolicy));
    }

    #[test]
    fn journal_entries_must_be_balanced_bounded_and_nonzero() {
        let (a, b) = (code("a"), code("b"));
        assert_eq!(JournalEntry::new(vec![]), Err(LedgerError::TooFewPostings));
        assert_eq!(JournalEntry::new(vec![Posting::debit(a.clone(), fen(1))]), Err(LedgerError::TooFewPostings));
        assert_eq!(JournalEntry::transfer(a.clone(), b.clone(), Amount::ZERO), Err(LedgerError::ZeroPosting));
        assert_eq!(
            JournalEntry::new(vec![Posting::debit(a.clone(), fen(2)), Posting::credit(b.clone(), fen(1)),]),
            Err(LedgerError::UnbalancedEntry)
        );
        assert_eq!(
            JournalEntry::new(vec![Posting::debit(a.clone(), fen(1)), Posting::debit(b.clone(), fen(1)),]),
            Err(LedgerError::UnbalancedEntry)
        );
        assert_eq!(
            JournalEntry::new(vec![
                Posting::debit(a.clone(), Amount::MAX),
                Posting::debit(a.clone(), fen(1)),
                Posting::credit(b.clone(), Amount::MAX),
                Posting::credit(b.clone(), fen(1)),
            ]),
            Err(LedgerError::Overflow)
        );

        let split = |n: usize| {
            let mut postings = vec![Posting::debit(a.clone(), fen(n as i64 - 1))];
            postings.extend((1..n).map(|_| Posting::credit(b.clone(), fen(1))));
            JournalEntry::new(postings)
        };
        assert!(split(MAX_POSTINGS_PER_ENTRY).is_ok());
        assert_eq!(split(MAX_POSTINGS_PER_ENTRY + 1), Err(LedgerError::TooManyPostings));

        let entry = JournalEntry::transfer(a.clone(), b.clone(), fen(150)).unwrap();
        assert_eq!(entry.postings(), [Posting::debit(a, fen(150)), Posting::credit(b, fen(150))]);
    }

    #[test]
    fn a_transfer_moves_money_from_the_debited_to_the_credited_account() {
        use OverdraftPolicy::*;
        let mut ledger = ledger_with(&[("operator", Allowed), ("wallet", Forbidden)]);
        let (operator, wallet) = (code("operator"), code("wallet"));
        let top_up = JournalEntry::transfer(operator.clone(), wallet.clone(), fen(1000)).unwrap();
        ledger.apply(&top_up).unwrap();
        assert_eq!(ledger.balance(&operator), Some(-1000));
        assert_eq!(ledger.balance(&wallet), Some(1000));
        assert_eq!(ledger.debits(&operator), Some(1000));
        assert_eq!(ledger.credits(&wallet), Some(1000));
        assert_eq!(ledger.entries(), [top_up]);
        assert_eq!(ledger.balance(&code("nobody")), None);
    }

    #[test]
    fn a_forbidden_account_cannot_be_overdrawn_and_nothing_changes() {
        use OverdraftPolicy::*;
        let mut ledger = ledger_with(&[("operator", Allowed), ("wallet", Forbidden)]);
        let (operator, wallet) = (code("operator"), code("wallet"));
        ledger.apply(&JournalEntry::transfer(operator.clone(), wallet.clone(), fen(500)).unwrap()).unwrap();
        let before = ledger.clone();
        let too_much = JournalEntry::transfer(wallet.clone(), operator.clone(), fen(501)).unwrap();
        assert_eq!(ledger.apply(&too_much), Err(LedgerError::Overdraft { account: wallet.clone() }));
        assert_eq!(ledger, before);
        let exactly_all = JournalEntry::transfer(wallet.clone(), operator, fen(500)).unwrap();
        ledger.apply(&exactly_all).unwrap();
        assert_eq!(ledger.balance(&wallet), Some(0));
    }

    #[test]
    fn an_entry_touching_an_unknown_account_changes_nothing() {
        use OverdraftPolicy::*;
        let mut ledger = ledger_with(&[("a", Allowed)]);
        let before = ledger.clone();
        let entry = JournalEntry::transfer(code("a"), code("ghost"), fen(1)).unwrap();
        assert_eq!(ledger.apply(&entry), Err(LedgerError::UnknownAccount(code("ghost"))));
        assert_eq!(ledger, before);
    }

    #[test]
    fn an_account_can_be_opened_only_once() {
        let mut ledger = ledger_with(&[("a", OverdraftPolicy::Allowed)]);
        let before = ledger.clone();
        assert_eq!(ledger.open_account(code("a"), OverdraftPolicy::Forbidden), Err(LedgerError::DuplicateAccount));
        assert_eq!(ledger, before);
    }

    #[test]
    fn an_overdraft_is_judged_on_the_net_effect_of_the_whole_entry() {
        use OverdraftPolicy::*;
        let mut ledger = ledger_with(&[("src", Allowed), ("mid", Forbidden), ("dst", Allowed)]);
        // `mid` is debited before it is credited, but ends the entry at zero.
        let through = JournalEntry::new(vec![
            Posting::debit(code("mid"), fen(7)),
            Posting::credit(code("dst"), fen(7)),
            Posting::debit(code("src"), fen(7)),
            Posting::credit(code("mid"), fen(7)),
        ])
        .unwrap();
        ledger.apply(&through).unwrap();
        assert_eq!(ledger.balance(&code("mid")), Some(0));
    }

    #[test]
    fn totals_that_would_overflow_i64_are_refused_and_change_nothing() {
        use OverdraftPolicy::*;
        let mut ledger = ledger_with(&[("a", Allowed), ("b", Allowed)]);
        let max = JournalEntry::transfer(code("a"), code("b"), Amount::MAX).unwrap();
        let mut applied = 0;
        let err = loop {
            match ledger.apply(&max) {
                Ok(()) => applied += 1,
                Err(err) => break err,
            }
        };
        assert_eq!(err, LedgerError::Overflow);
        assert_eq!(applied, i64::MAX / Amount::MAX_FEN);
        let before = ledger.clone();
        assert_eq!(ledger.apply(&max), Err(LedgerError::Overflow));
        assert_eq!(ledger, before);
    }

    #[test]
    fn would_overdraw_only_refuses_forbidden_accounts_going_negative() {
        use OverdraftPolicy::*;
        assert!(!would_overdraw(Allowed, 0, 0, 0, 100));
        assert!(would_overdraw(Forbidden, 0, 0, 0, 100));
        assert!(!would_overdraw(Forbidden, 100, 0, 0, 100));
        assert!(!would_overdraw(Forbidden, 100, 50, 10, 60));
        assert!(would_overdraw(Forbidden, 100, 50, 10, 61));
        assert!(!would_overdraw(Forbidden, i64::MAX, 0, i64::MAX, i64::MAX));
    }

    #[test]
    fn the_chart_names_each_account_once_and_guards_only_carepays_side_of_a_wallet() {
        let wallet = WalletId::parse("0021000000000001").unwrap();
        let chart = [
            Account::Payers,
            Account::Wallet(&wallet),
            Account::WalletOperatorSide(&wallet),
            Account::OperatorFees,
            Account::OperatorAdjustments,
            Account::ReconciliationAdjustments,
        ];
        let mut codes = Vec::new();
        for account in chart {
            let code = account.code();
            assert_eq!(AccountCode::parse(code.as_str()), Ok(code.clone()), "{account:?}");
            let expected =
                if account == Account::Wallet(&wallet) { OverdraftPolicy::Forbidden } else { OverdraftPolicy::Allowed };
            assert_eq!(account.policy(), expected, "{account:?}");
            codes.push(code);
        }
        assert_eq!(Account::Wallet(&wallet).code().as_str(), "wallet:0021000000000001");
        assert_eq!(Account::WalletOperatorSide(&wallet).code().as_str(), "wallet:0021000000000001:operator");
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), chart.len());
    }

    #[test]
    fn the_operators_entries_always_book_on_a_wallet_carepay_never_credited() {
        let wallet = WalletId::parse("0021000000000001").unwrap();
        let mut ledger = Ledger::new();
        for account in [Account::Wallet(&wallet), Account::WalletOperatorSide(&wallet), Account::OperatorFees] {
            let (code, policy) = account.opening();
            ledger.open_account(code, policy).unwrap();
        }
        let (wallet_code, side, fees) = (
            Account::Wallet(&wallet).code(),
            Account::WalletOperatorSide(&wallet).code(),
            Account::OperatorFees.code(),
        );
        let fee = |debit: &AccountCode| JournalEntry::transfer(debit.clone(), fees.clone(), fen(61)).unwrap();
        assert_eq!(ledger.apply(&fee(&wallet_code)), Err(LedgerError::Overdraft { account: wallet_code.clone() }));
        ledger.apply(&fee(&side)).unwrap();
        assert_eq!(
            (ledger.balance(&side), ledger.balance(&fees), ledger.balance(&wallet_code)),
            (Some(-61), Some(61), Some(0))
        );
    }

    #[test]
    fn every_error_has_a_distinct_upper_snake_code() {
        let all = [
            LedgerError::UnbalancedEntry,
            LedgerError::TooFewPostings,
            LedgerError::TooManyPostings,
            LedgerError::ZeroPosting,
            LedgerError::UnknownAccount(code("a")),
            LedgerError::DuplicateAccount,
            LedgerError::Overdraft { account: code("a") },
            LedgerError::Overflow,
            LedgerError::InvalidAccountCode,
            LedgerError::InvalidSide,
            LedgerError::InvalidOverdraftPolicy,
        ];
        let mut codes: Vec<_> = all.iter().map(LedgerError::code).collect();
        for code in &codes {
            assert!(code.starts_with("LEDGER_"), "{code}");
            assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{code}");
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    // ---- model-based property test -------------------------------------------------------

    /// A small pool of names, so random operations collide on the same accounts; names past
    /// the ones a test opens stay unknown.
    const NAMES: [&str; 6] = ["cash", "operator", "wallet:a", "wallet:b", "subsidy", "ghost"];

    #[derive(Clone, Debug)]
    enum Op {
        Open(usize, OverdraftPolicy),
        Transfer(usize, usize, i64),
        /// Debits split into several postings, credits into several others, same total.
        Split(Vec<(usize, i64)>, Vec<(usize, i64)>),
        /// Arbitrary postings, usually refused by `JournalEntry::new`.
        Raw(Vec<(usize, Side, i64)>),
    }

    fn policy() -> impl Strategy<Value = OverdraftPolicy> {
        prop_oneof![Just(OverdraftPolicy::Allowed), Just(OverdraftPolicy::Forbidden)]
    }

    fn side() -> impl Strategy<Value = Side> {
        prop_oneof![Just(Side::Debit), Just(Side::Credit)]
    }

    /// Mostly small amounts (so overdrafts are sometimes avoided), sometimes zero or huge.
    fn amount_fen() -> impl Strategy<Value = i64> {
        prop_oneof![
            6 => 1..1_000i64,
            1 => Just(0i64),
            1 => (Amount::MAX_FEN - 10)..=Amount::MAX_FEN,
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        let name = 0..NAMES.len();
        let legs = || prop::collection::vec((0..NAMES.len(), 1..1_000i64), 1..4);
        prop_oneof![
            2 => (name.clone(), policy()).prop_map(|(n, p)| Op::Open(n, p)),
            4 => (name.clone(), name.clone(), amount_fen())
                .prop_map(|(d, c, a)| Op::Transfer(d, c, a)),
            // Each debit leg is matched by a credit leg of the same amount to a random account.
            2 => legs()
                .prop_flat_map(|debits| {
                    let credit_names = prop::collection::vec(0..NAMES.len(), debits.len());
                    (Just(debits), credit_names)
                })
                .prop_map(|(debits, credit_names)| {
                    let credits = credit_names.iter().zip(&debits).map(|(&n, &(_, a))| (n, a)).collect();
                    Op::Split(debits, credits)
                }),
            1 => prop::collection::vec((name, side(), amount_fen()), 0..6).prop_map(Op::Raw),
        ]
    }

    /// What `JournalEntry::new` should decide, computed independently in i128.
    fn expected_entry_ok(postings: &[(usize, Side, i64)]) -> bool {
        let total = |side: Side| -> i128 { postings.iter().filter(|p| p.1 == side).map(|p| i128::from(p.2)).sum() };
        let ceiling = i128::from(Amount::MAX_FEN);
        (2..=MAX_POSTINGS_PER_ENTRY).contains(&postings.len())
            && postings.iter().all(|p| p.2 > 0)
            && total(Side::Debit) <= ceiling
            && total(Side::Debit) == total(Side::Credit)
    }

    fn build(postings: &[(usize, Side, i64)]) -> Result<JournalEntry, LedgerError> {
        let postings = postings
            .iter()
            .map(|&(n, side, amount_fen)| Posting { account: code(NAMES[n]), side, amount: fen(amount_fen) })
            .collect();
        JournalEntry::new(postings)
    }

    fn check_invariants(ledger: &Ledger) -> Result<(), TestCaseError> {
        let mut recomputed: BTreeMap<&AccountCode, (i128, i128)> = BTreeMap::new();
        for entry in ledger.entries() {
            let mut side_totals = (0i128, 0i128);
            for posting in entry.postings() {
                prop_assert!(!posting.amount.is_zero());
                let account = recomputed.entry(&posting.account).or_default();
                let amount = i128::from(posting.amount.fen());
                match posting.side {
                    Side::Debit => {
                        side_totals.0 += amount;
                        account.0 += amount;
                    }
                    Side::Credit => {
                        side_totals.1 += amount;
                        account.1 += amount;
                    }
                }
            }
            prop_assert_eq!(side_totals.0, side_totals.1, "unbalanced entry {:?}", entry);
        }
        let mut sum_of_balances = 0i128;
        for account in ledger.accounts() {
            let debits = ledger.debits(account).unwrap();
            let credits = ledger.credits(account).unwrap();
            let balance = ledger.balance(account).unwrap();
            prop_assert_eq!(balance, credits - debits);
            let (history_debits, history_credits) = recomputed.get(account).copied().unwrap_or_default();
            prop_assert_eq!(i128::from(debits), history_debits);
            prop_assert_eq!(i128::from(credits), history_credits);
            if ledger.policy(account) == Some(OverdraftPolicy::Forbidden) {
                prop_assert!(balance >= 0, "{} went negative: {}", account, balance);
            }
            sum_of_balances += i128::from(balance);
        }
        for account in recomputed.keys() {
            prop_assert!(ledger.balance(account).is_some(), "posting to unopened {}", account);
        }
        // Money is only ever moved, so across all accounts it sums to zero.
        prop_assert_eq!(sum_of_balances, 0);
        Ok(())
    }

    proptest! {
        #[test]
        fn ledger_invariants_hold_after_any_sequence_of_operations(
            ops in prop::collection::vec(op(), 1..60)
        ) {
            let mut ledger = Ledger::new();
            let mut applied_entries = 0usize;
            for op in ops {
                let before = ledger.clone();
                let result = match &op {
                    Op::Open(n, policy) => ledger.open_account(code(NAMES[*n]), *policy),
                    Op::Transfer(d, c, a) => {
                        let postings = [(*d, Side::Debit, *a), (*c, Side::Credit, *a)];
                        build(&postings).and_then(|entry| ledger.apply(&entry))
                    }
                    Op::Split(debits, credits) => {
                        let postings: Vec<_> = debits
                            .iter()
                            .map(|&(n, a)| (n, Side::Debit, a))
                            .chain(credits.iter().map(|&(n, a)| (n, Side::Credit, a)))
                            .collect();
                        build(&postings).and_then(|entry| ledger.apply(&entry))
                    }
                    Op::Raw(postings) => {
                        let built = build(postings);
                        prop_assert_eq!(built.is_ok(), expected_entry_ok(postings), "{:?}", postings);
                        built.and_then(|entry| ledger.apply(&entry))
                    }
                };
                match result {
                    Ok(()) => {
                        if !matches!(op, Op::Open(..)) {
                            applied_entries += 1;
                        }
                    }
                    Err(err) => {
                        prop_assert_eq!(&ledger, &before, "{:?} refused with {} but changed the ledger", op, err);
                    }
                }
                prop_assert_eq!(ledger.entries().len(), applied_entries);
                check_invariants(&ledger)?;
            }
        }
    }
}
