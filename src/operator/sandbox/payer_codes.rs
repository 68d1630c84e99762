//! Deterministic payer codes: the last four digits of an 18-19 digit code choose what the
//! sandbox does with a payment (the table is in the `sandbox` module docs and README), and
//! the payer's wallet id is derived from the code so repeated codes hit the same wallet.

use crate::operator::types::codes;

/// What a payer code makes the sandbox do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeOutcome {
    /// Charge now under the wallet's real rules (the default for endings not in the table).
    Succeed,
    /// `USERPAYING`, confirmed automatically after `confirm_delay_ms` (or by the admin route).
    ConfirmLater,
    /// `USERPAYING`, never confirmed unless the admin route says so.
    NeverConfirm,
    /// `FAILED` with this `fail_code`, nothing charged.
    Fail(&'static str),
    /// Charge, then never answer (the client's timeout fires).
    SucceedThenHang,
    /// Charge, then answer 500.
    SucceedThenError,
    /// Answer 500 without doing anything.
    ErrorBeforeApply,
}

pub const MIN_CODE_DIGITS: usize = 18;
pub const MAX_CODE_DIGITS: usize = 19;

/// Wallet ids of derived payers start with this, so they never collide with seeded ones
/// that follow the `0021...` merchant pattern.
const DERIVED_WALLET_PREFIX: &str = "0031";

pub fn valid_code(code: &str) -> bool {
    (MIN_CODE_DIGITS..=MAX_CODE_DIGITS).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit())
}

/// The outcome for a code already checked with [`valid_code`].
pub fn outcome(code: &str) -> CodeOutcome {
    match &code[code.len().saturating_sub(4)..] {
        "1111" => CodeOutcome::ConfirmLater,
        "5555" => CodeOutcome::NeverConfirm,
        "2222" => CodeOutcome::Fail(codes::INSUFFICIENT_BALANCE),
        "3333" => CodeOutcome::Fail(codes::PAYER_CODE_EXPIRED),
        "4444" => CodeOutcome::Fail(codes::WALLET_FROZEN),
        "4040" => CodeOutcome::Fail(codes::WALLET_NOT_FOUND),
        "8888" => CodeOutcome::Fail(codes::WALLET_LIMIT_EXCEEDED),
        "9999" => CodeOutcome::Fail(codes::MERCHANT_NOT_ALLOWED),
        "6666" => CodeOutcome::SucceedThenHang,
        "7777" => CodeOutcome::SucceedThenError,
        "6000" => CodeOutcome::ErrorBeforeApply,
        _ => CodeOutcome::Succeed,
    }
}

/// The payer's wallet: `0031` followed by the 12 digits before the last four. Codes that
/// differ only in their last four digits therefore pay from the same wallet.
pub fn payer_wallet_id(code: &str) -> String {
    let end = code.len() - 4;
    format!("{DERIVED_WALLET_PREFIX}{}", &code[end - 12..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_four_digits_choose_the_outcome() {
        assert_eq!(outcome("013456789012340000"), CodeOutcome::Succeed);
        assert_eq!(outcome("0134567890123451111"), CodeOutcome::ConfirmLater);
        assert_eq!(outcome("013456789012342222"), CodeOutcome::Fail(codes::INSUFFICIENT_BALANCE));
        assert_eq!(outcome("013456789012346666"), CodeOutcome::SucceedThenHang);
        assert_eq!(outcome("013456789012341234"), CodeOutcome::Succeed);
    }

    #[test]
    fn codes_must_be_18_or_19_digits() {
        assert!(valid_code("013456789012340000"));
        assert!(valid_code("0134567890123450000"));
        assert!(!valid_code("01345678901234000"));
        assert!(!valid_code("01345678901234500000"));
        assert!(!valid_code("01345678901234000x"));
    }

    #[test]
    fn the_payer_wallet_ignores_the_outcome_digits() {
        assert_eq!(payer_wallet_id("013456789012340000"), "0031345678901234");
        assert_eq!(payer_wallet_id("013456789012342222"), "0031345678901234");
        assert_eq!(payer_wallet_id("0134567890123450000").len(), 16);
    }
}
