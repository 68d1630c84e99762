//! Money: a non-negative whole number of fen.
//!
//! Arithmetic and storage use integer fen; every wire carries a string of yuan with at most
//! two decimals (`"12.50"`). Floating point never appears: a binary float cannot hold 0.10
//! exactly, and a settlement service must be right to the fen.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Fen in one yuan.
const FEN_PER_YUAN: i64 = 100;

/// An amount of money in fen (1/100 yuan), never negative and never above [`Amount::MAX_FEN`].
///
/// The field is private so that every `Amount` in the program has passed the checks in
/// [`Amount::from_fen`] or [`Amount::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// Hard ceiling on any single amount or sum of amounts: 10^15 fen (ten trillion yuan).
    ///
    /// Far above any real payment or batch, yet low enough that adding a few thousand
    /// maximal amounts in `i64` cannot wrap, and low enough that every value survives a
    /// round trip through a JSON number in other people's tooling (2^53 > 10^15).
    pub const MAX_FEN: i64 = 1_000_000_000_000_000;

    /// The largest representable amount, [`Amount::MAX_FEN`] fen.
    pub const MAX: Amount = Amount(Self::MAX_FEN);

    /// Exactly the strings [`Amount::parse`] accepts, as a regular expression (for the
    /// OpenAPI document): up to 13 integer digits, or the ceiling itself.
    pub const PATTERN: &'static str = r"^((0|[1-9][0-9]{0,12})(\.[0-9]{1,2})?|10000000000000(\.00?)?)$";

    /// [`Amount::PATTERN`] without the zeros that [`Amount::ensure_nonzero`] refuses.
    pub const NONZERO_PATTERN: &'static str =
        r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,12}(\.[0-9]{1,2})?|10000000000000(\.00?)?)$";

    /// What [`Amount::parse_signed_nonzero_fen`] accepts.
    pub const SIGNED_NONZERO_PATTERN: &'static str =
        r"^-?(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,12}(\.[0-9]{1,2})?|10000000000000(\.00?)?)$";

    /// An amount of `fen`; refuses negative values and values above the ceiling.
    pub fn from_fen(fen: i64) -> Result<Amount, AmountError> {
        if fen < 0 {
            Err(AmountError::Negative)
        } else if fen > Self::MAX_FEN {
            Err(AmountError::TooLarge)
        } else {
            Ok(Amount(fen))
        }
    }

    pub fn fen(self) -> i64 {
        self.0
    }

    /// Parses the strict wire form of yuan: `^(0|[1-9][0-9]*)(\.[0-9]{1,2})?$`.
    ///
    /// Anything looser (whitespace, signs, exponents, leading zeros, a dangling point) is
    /// refused rather than guessed at, so that two systems reading the same string can never
    /// disagree about how much money it means.
    pub fn parse(s: &str) -> Result<Amount, AmountError> {
        if s.is_empty() {
            return Err(AmountError::Empty);
        }
        if s.starts_with('-') {
            return Err(AmountError::Negative);
        }
        if looks_like_exponent(s) {
            return Err(AmountError::Exponent);
        }

        let (int_digits, frac_digits) = match s.split_once('.') {
            Some((int_digits, frac_digits)) => (int_digits, Some(frac_digits)),
            None => (s, None),
        };
        if !is_digits(int_digits) {
            return Err(AmountError::Invalid);
        }
        if int_digits.len() > 1 && int_digits.starts_with('0') {
            return Err(AmountError::Invalid);
        }
        if let Some(frac_digits) = frac_digits {
            if !is_digits(frac_digits) {
                return Err(AmountError::Invalid);
            }
            if frac_digits.len() > 2 {
                return Err(AmountError::TooManyDecimals);
            }
        }

        // The ceiling has 14 integer digits; anything longer is too large whatever its
        // digits, and refusing it here keeps `Decimal` (28 digits) from ever overflowing.
        let ceiling_int_digits = (Self::MAX_FEN / FEN_PER_YUAN).ilog10() as usize + 1;
        if int_digits.len() > ceiling_int_digits {
            return Err(AmountError::TooLarge);
        }

        // The grammar was checked above, so `Decimal` only does the exact conversion.
        let mut yuan = Decimal::from_str_exact(s).map_err(|_| AmountError::Invalid)?;
        yuan.rescale(2);
        let fen = yuan.mantissa();
        match i64::try_from(fen) {
            Ok(fen) if fen <= Self::MAX_FEN => Ok(Amount(fen)),
            _ => Err(AmountError::TooLarge),
        }
    }

    /// A signed amount in fen from the wire form of yuan with an optional leading `-` (a
    /// ledger adjustment: `"-1.50"` takes money out). Zero is refused: an adjustment of
    /// nothing is no adjustment.
    pub fn parse_signed_nonzero_fen(s: &str) -> Result<i64, AmountError> {
        let (negative, magnitude) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let amount = Amount::parse(magnitude)?.ensure_nonzero()?;
        Ok(if negative { -amount.fen() } else { amount.fen() })
    }

    /// `self + other`, refusing sums above the ceiling.
    pub fn checked_add(self, other: Amount) -> Result<Amount, AmountError> {
        // Both operands are at most MAX_FEN, so the i64 sum cannot wrap.
        let sum_fen = self.0 + other.0;
        if sum_fen > Self::MAX_FEN { Err(AmountError::Overflow) } else { Ok(Amount(sum_fen)) }
    }

    /// `self - other`, or `None` when that would be negative.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        if other.0 > self.0 { None } else { Some(Amount(self.0 - other.0)) }
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Refuses zero where moving no money makes no sense (a payment, a refund, a subsidy).
    pub fn ensure_nonzero(self) -> Result<Amount, AmountError> {
        if self.is_zero() { Err(AmountError::Zero) } else { Ok(self) }
    }

    /// Refuses amounts above a configured limit (per payment, per batch line, ...).
    pub fn ensure_at_most(self, max: Amount) -> Result<Amount, AmountError> {
        if self > max { Err(AmountError::OverLimit { max }) } else { Ok(self) }
    }

    /// Sum of all amounts, refusing totals above the ceiling.
    pub fn sum<I: IntoIterator<Item = Amount>>(iter: I) -> Result<Amount, AmountError> {
        iter.into_iter().try_fold(Amount::ZERO, |total, amount| total.checked_add(amount))
    }
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// True for `1e3`, `1.5E-2`, `2e+10`: numbers a client wrote in scientific notation, which
/// deserve a clearer refusal than "invalid".
fn looks_like_exponent(s: &str) -> bool {
    let Some((mantissa, exponent)) = s.split_once(['e', 'E']) else {
        return false;
    };
    let mantissa_ok = mantissa.bytes().any(|b| b.is_ascii_digit())
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|&b| b == b'.').count() <= 1;
    let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    mantissa_ok && is_digits(exponent)
}

impl fmt::Display for Amount {
    /// Yuan with exactly two decimals: `1250` fen is `12.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / FEN_PER_YUAN, self.0 % FEN_PER_YUAN)
    }
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Amount, AmountError> {
        Amount::parse(s)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Amount, D::Error> {
        deserializer.deserialize_str(AmountVisitor)
    }
}

/// Accepts only strings: a JSON number may already have been rounded through a float by the
/// sender, so it is refused instead of being trusted.
struct AmountVisitor;

impl Visitor<'_> for AmountVisitor {
    type Value = Amount;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an amount as a JSON string of yuan such as "12.50" (amounts are strings of yuan, not numbers)"#)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Amount, E> {
        Amount::parse(v).map_err(E::custom)
    }
}

/// Why an amount was refused. `Display` is written for the client; [`AmountError::code`] is
/// the stable machine-readable code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error(r#"amount is empty; write it as a string of yuan such as "12.50""#)]
    Empty,
    #[error(
        r#"amount must be a plain decimal number of yuan such as "12.50": digits, no leading zeros, no spaces or signs, and digits on both sides of any decimal point"#
    )]
    Invalid,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount has more than two decimal places; the smallest unit is one fen (0.01 yuan)")]
    TooManyDecimals,
    #[error(r#"amount must not use exponent notation; write the digits out, such as "1000.00""#)]
    Exponent,
    #[error("amount is larger than the maximum of {max} yuan", max = Amount::MAX)]
    TooLarge,
    #[error("total amount would exceed the maximum of {max} yuan", max = Amount::MAX)]
    Overflow,
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount exceeds the limit of {max} yuan")]
    OverLimit { max: Amount },
}

impl AmountError {
    /// Stable code for API error bodies; never change an existing one.
    pub fn code(&self) -> &'static str {
        match self {
            AmountError::Empty => "AMOUNT_EMPTY",
            AmountError::Invalid => "AMOUNT_INVALID",
            AmountError::Negative => "AMOUNT_NEGATIVE",
            AmountError::TooManyDecimals => "AMOUNT_TOO_MANY_DECIMALS",
            AmountError::Exponent => "AMOUNT_EXPONENT",
            AmountError::TooLarge => "AMOUNT_TOO_LARGE",
            AmountError::Overflow => "AMOUNT_OVERFLOW",
            AmountError::Zero => "AMOUNT_ZERO",
            AmountError::OverLimit { .. } => "AMOUNT_OVER_LIMIT",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fen(n: i64) -> Amount {
        Amount::from_fen(n).unwrap()
    }

    #[test]
    fn valid_wire_strings_parse_to_the_right_number_of_fen() {
        let cases = [
            ("0", 0),
            ("0.0", 0),
            ("0.00", 0),
            ("0.01", 1),
            ("0.1", 10),
            ("0.5", 50),
            ("1", 100),
            ("12.5", 1250),
            ("12.50", 1250),
            ("2000.00", 200_000),
            ("10000000000000", Amount::MAX_FEN),
            ("10000000000000.00", Amount::MAX_FEN),
            ("9999999999999.99", Amount::MAX_FEN - 1),
        ];
        for (wire, expected_fen) in cases {
            assert_eq!(Amount::parse(wire), Ok(fen(expected_fen)), "{wire:?}");
        }
    }

    #[test]
    fn malformed_wire_strings_are_refused_with_the_matching_error() {
        use AmountError::*;
        let cases = [
            ("", Empty),
            (" 1", Invalid),
            ("1 ", Invalid),
            ("\t1", Invalid),
            ("1\n", Invalid),
            ("+1", Invalid),
            ("-1", Negative),
            ("-0.01", Negative),
            ("1e3", Exponent),
            ("1E3", Exponent),
            ("1.5e-2", Exponent),
            ("2e+10", Exponent),
            ("e3", Invalid),
            ("1e", Invalid),
            ("012.5", Invalid),
            ("00", Invalid),
            ("00.5", Invalid),
            ("12.", Invalid),
            (".5", Invalid),
            (".", Invalid),
            ("1.2.3", Invalid),
            ("1,000.00", Invalid),
            ("1_000", Invalid),
            ("１２", Invalid),
            ("NaN", Invalid),
            ("inf", Invalid),
            ("0x10", Invalid),
            ("\u{0}", Invalid),
            ("1.234", TooManyDecimals),
            ("0.001", TooManyDecimals),
            ("1.000", TooManyDecimals),
            ("10000000000000.01", TooLarge),
            ("10000000000001", TooLarge),
            ("99999999999999999999999999999999999999", TooLarge),
            ("99999999999999999999999999999999999999.99", TooLarge),
        ];
        for (wire, expected) in cases {
            assert_eq!(Amount::parse(wire), Err(expected), "{wire:?}");
        }
    }

    #[test]
    fn display_always_shows_yuan_with_two_decimals() {
        assert_eq!(fen(0).to_string(), "0.00");
        assert_eq!(fen(1).to_string(), "0.01");
        assert_eq!(fen(10).to_string(), "0.10");
        assert_eq!(fen(1250).to_string(), "12.50");
        assert_eq!(fen(200_000).to_string(), "2000.00");
        assert_eq!(Amount::MAX.to_string(), "10000000000000.00");
    }

    #[test]
    fn from_fen_refuses_negative_and_above_ceiling() {
        assert_eq!(Amount::from_fen(-1), Err(AmountError::Negative));
        assert_eq!(Amount::from_fen(i64::MIN), Err(AmountError::Negative));
        assert_eq!(Amount::from_fen(Amount::MAX_FEN + 1), Err(AmountError::TooLarge));
        assert_eq!(Amount::from_fen(i64::MAX), Err(AmountError::TooLarge));
        assert_eq!(Amount::from_fen(Amount::MAX_FEN), Ok(Amount::MAX));
        assert_eq!(Amount::from_fen(0), Ok(Amount::ZERO));
    }

    #[test]
    fn arithmetic_helpers_refuse_what_makes_no_sense() {
        assert_eq!(fen(1).checked_add(fen(2)), Ok(fen(3)));
        assert_eq!(Amount::MAX.checked_add(Amount::ZERO), Ok(Amount::MAX));
        assert_eq!(Amount::MAX.checked_add(fen(1)), Err(AmountError::Overflow));
        assert_eq!(fen(5).checked_sub(fen(3)), Some(fen(2)));
        assert_eq!(fen(5).checked_sub(fen(5)), Some(Amount::ZERO));
        assert_eq!(fen(3).checked_sub(fen(5)), None);
        assert!(Amount::ZERO.is_zero());
        assert!(!fen(1).is_zero());
        assert_eq!(Amount::ZERO.ensure_nonzero(), Err(AmountError::Zero));
        assert_eq!(fen(1).ensure_nonzero(), Ok(fen(1)));
        assert_eq!(fen(500).ensure_at_most(fen(500)), Ok(fen(500)));
        assert_eq!(fen(501).ensure_at_most(fen(500)), Err(AmountError::OverLimit { max: fen(500) }));
        assert_eq!(Amount::sum([]), Ok(Amount::ZERO));
        assert_eq!(Amount::sum([fen(1), fen(2), fen(3)]), Ok(fen(6)));
        assert_eq!(Amount::sum([Amount::MAX, fen(1)]), Err(AmountError::Overflow));
    }

    #[test]
    fn over_limit_message_names_the_limit_in_yuan() {
        let err = fen(501).ensure_at_most(fen(500)).unwrap_err();
        assert_eq!(err.to_string(), "amount exceeds the limit of 5.00 yuan");
        assert_eq!(err.code(), "AMOUNT_OVER_LIMIT");
    }

    #[test]
    fn every_error_has_a_distinct_upper_snake_code_and_a_message() {
        let all = [
            AmountError::Empty,
            AmountError::Invalid,
            AmountError::Negative,
            AmountError::TooManyDecimals,
            AmountError::Exponent,
            AmountError::TooLarge,
            AmountError::Overflow,
            AmountError::Zero,
            AmountError::OverLimit { max: fen(1) },
        ];
        let mut codes: Vec<_> = all.iter().map(AmountError::code).collect();
        for code in &codes {
            assert!(code.starts_with("AMOUNT_"), "{code}");
            assert!(code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{code}");
        }
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
        for err in &all {
            assert!(!err.to_string().is_empty());
        }
        assert!(AmountError::TooLarge.to_string().contains("10000000000000.00"));
    }

    #[test]
    fn serde_writes_a_yuan_string_and_reads_it_back() {
        let json = serde_json::to_string(&fen(1250)).unwrap();
        assert_eq!(json, r#""12.50""#);
        let back: Amount = serde_json::from_str(&json).unwrap();
        assert_eq!(back, fen(1250));
        let short: Amount = serde_json::from_str(r#""12.5""#).unwrap();
        assert_eq!(short, fen(1250));
    }

    #[test]
    fn serde_refuses_json_numbers_and_says_amounts_are_strings() {
        for json in ["12", "12.5", "-1", "1e3", "true", "null", "[]"] {
            let err = serde_json::from_str::<Amount>(json).unwrap_err();
            assert!(err.to_string().contains(r#"string of yuan such as "12.50""#), "{json}: {err}");
        }
    }

    #[test]
    fn serde_surfaces_the_parse_error_message() {
        let err = serde_json::from_str::<Amount>(r#""1.234""#).unwrap_err();
        assert!(err.to_string().contains(&AmountError::TooManyDecimals.to_string()), "{err}");
        let err = serde_json::from_str::<Amount>(r#""-5""#).unwrap_err();
        assert!(err.to_string().contains(&AmountError::Negative.to_string()), "{err}");
    }

    /// Valid wire strings whose value is at most the ceiling (at most 13 integer digits).
    fn valid_wire() -> impl Strategy<Value = String> {
        "(0|[1-9][0-9]{0,12})(\\.[0-9]{1,2})?"
    }

    /// Reference conversion of a grammatical wire string to fen, in i128 so it cannot wrap.
    fn reference_fen(wire: &str) -> i128 {
        let (int_digits, frac_digits) = wire.split_once('.').unwrap_or((wire, ""));
        let frac = format!("{frac_digits:0<2}");
        int_digits.parse::<i128>().unwrap() * 100 + frac.parse::<i128>().unwrap()
    }

    #[test]
    fn the_patterns_accept_exactly_what_parse_accepts() {
        let any = regex::Regex::new(Amount::PATTERN).unwrap();
        let nonzero = regex::Regex::new(Amount::NONZERO_PATTERN).unwrap();
        for raw in [
            "0",
            "0.0",
            "0.00",
            "0.01",
            "0.1",
            "0.10",
            "00",
            "01",
            "1",
            "1.",
            ".5",
            "1.5",
            "1.50",
            "1.505",
            "-1",
            "+1",
            "1e3",
            " 1",
            "9999999999999.99",
            "10000000000000",
            "10000000000000.0",
            "10000000000000.00",
            "10000000000000.01",
            "10000000000001",
            "99999999999999",
            "100000000000000",
            "",
        ] {
            let parsed = Amount::parse(raw);
            assert_eq!(any.is_match(raw), parsed.is_ok(), "{raw:?}");
            assert_eq!(nonzero.is_match(raw), parsed.is_ok_and(|a| !a.is_zero()), "{raw:?}");
        }
        let signed = regex::Regex::new(Amount::SIGNED_NONZERO_PATTERN).unwrap();
        for (raw, fen) in [
            ("-1.50", Some(-150)),
            ("1.5", Some(150)),
            ("-0.01", Some(-1)),
            ("-0", None),
            ("0.00", None),
            ("--1", None),
            ("-", None),
            ("+1", None),
            ("-1.505", None),
            ("-01", None),
        ] {
            assert_eq!(Amount::parse_signed_nonzero_fen(raw).ok(), fen, "{raw:?}");
            assert_eq!(signed.is_match(raw), fen.is_some(), "{raw:?}");
        }
    }

    proptest! {
        #[test]
        fn the_pattern_and_parse_agree_on_any_digits_and_points(raw in "[0-9.]{0,17}") {
            let any = regex::Regex::new(Amount::PATTERN).unwrap();
            prop_assert_eq!(any.is_match(&raw), Amount::parse(&raw).is_ok(), "{:?}", raw);
        }

        #[test]
        fn every_amount_survives_format_then_parse(n in 0..=Amount::MAX_FEN) {
            let amount = Amount::from_fen(n).unwrap();
            prop_assert_eq!(Amount::parse(&amount.to_string()).map(Amount::fen), Ok(n));
        }

        #[test]
        fn every_valid_wire_string_parses_and_round_trips(wire in valid_wire()) {
            let amount = Amount::parse(&wire).unwrap();
            prop_assert_eq!(i128::from(amount.fen()), reference_fen(&wire));
            prop_assert_eq!(Amount::parse(&amount.to_string()), Ok(amount));
            let has_two_decimals = wire.split_once('.').is_some_and(|(_, frac)| frac.len() == 2);
            if has_two_decimals {
                prop_assert_eq!(amount.to_string(), wire);
            }
        }

        #[test]
        fn long_digit_strings_are_accepted_exactly_up_to_the_ceiling(
            wire in "[1-9][0-9]{10,30}(\\.[0-9]{1,2})?"
        ) {
            let expected_fen = reference_fen(&wire);
            match Amount::parse(&wire) {
                Ok(amount) => prop_assert_eq!(i128::from(amount.fen()), expected_fen),
                Err(err) => {
                    prop_assert_eq!(err, AmountError::TooLarge);
                    prop_assert!(expected_fen > i128::from(Amount::MAX_FEN));
                }
            }
        }

        #[test]
        fn more_than_two_decimals_is_always_refused(wire in "(0|[1-9][0-9]{0,12})\\.[0-9]{3,10}") {
            prop_assert_eq!(Amount::parse(&wire), Err(AmountError::TooManyDecimals));
        }

        #[test]
        fn surrounding_whitespace_is_always_refused(
            wire in valid_wire(),
            pad in "[ \t\r\n\u{a0}\u{3000}]{1,3}",
            before in any::<bool>(),
        ) {
            let padded = if before { format!("{pad}{wire}") } else { format!("{wire}{pad}") };
            prop_assert_eq!(Amount::parse(&padded), Err(AmountError::Invalid));
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            if let Ok(amount) = Amount::parse(&s) {
                prop_assert!(amount.fen() <= Amount::MAX_FEN);
                prop_assert_eq!(Amount::parse(&amount.to_string()), Ok(amount));
            }
        }

        #[test]
        fn number_like_strings_never_panic_and_accepted_ones_are_grammatical(
            s in "[-+0-9.eE _,]{0,24}"
        ) {
            if let Ok(amount) = Amount::parse(&s) {
                prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                prop_assert_eq!(i128::from(amount.fen()), reference_fen(&s));
            }
        }

        #[test]
        fn sums_never_wrap_silently(fens in prop::collection::vec(0..=Amount::MAX_FEN, 0..20)) {
            let expected: i128 = fens.iter().map(|&n| i128::from(n)).sum();
            let result = Amount::sum(fens.iter().map(|&n| Amount::from_fen(n).unwrap()));
            if expected <= i128::from(Amount::MAX_FEN) {
                prop_assert_eq!(result.map(|a| i128::from(a.fen())), Ok(expected));
            } else {
                prop_assert_eq!(result, Err(AmountError::Overflow));
            }
        }

        #[test]
        fn checked_add_and_sub_agree_with_wide_arithmetic(
            a in 0..=Amount::MAX_FEN,
            b in 0..=Amount::MAX_FEN,
        ) {
            let (x, y) = (fen(a), fen(b));
            let sum = i128::from(a) + i128::from(b);
            match x.checked_add(y) {
                Ok(total) => prop_assert_eq!(i128::from(total.fen()), sum),
                Err(err) => {
                    prop_assert_eq!(err, AmountError::Overflow);
                    prop_assert!(sum > i128::from(Amount::MAX_FEN));
                }
            }
            let difference = i128::from(a) - i128::from(b);
            match x.checked_sub(y) {
                Some(rest) => prop_assert_eq!(i128::from(rest.fen()), difference),
                None => prop_assert!(difference < 0),
            }
        }

        #[test]
        fn serde_round_trips_every_amount(n in 0..=Amount::MAX_FEN) {
            let amount = fen(n);
            let json = serde_json::to_string(&amount).unwrap();
            prop_assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), amount);
        }
    }
}
