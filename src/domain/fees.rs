//! The fee the operator is expected to withhold on each statement line, by wallet and by kind
//! of money movement: a rate in parts per million, rounded half up, kept between a minimum and
//! a maximum and never above the amount itself.
//!
//! The tariff is what the facility or office agreed with the operator; reconciliation holds
//! every line's fee to it (a fee mismatch otherwise). A wallet without its own tariff has the
//! default one.

use std::collections::HashMap;

use super::money::Amount;

/// What a line's fee depends on: how the money moved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeeMethod {
    /// A payment by the payer's payment code (付款码) at a terminal.
    PayerCode,
    /// A payment by a hard-wallet card tap.
    Card,
    /// A payment of a merchant-presented dynamic QR order.
    DynamicQr,
    /// A subsidy transfer out of a funding wallet.
    Transfer,
}

impl FeeMethod {
    pub const ALL: [FeeMethod; 4] = [FeeMethod::PayerCode, FeeMethod::Card, FeeMethod::DynamicQr, FeeMethod::Transfer];

    /// The name in the tariff file, and of a payment's `method`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeeMethod::PayerCode => "payer_code",
            FeeMethod::Card => "card",
            FeeMethod::DynamicQr => "dynamic_qr",
            FeeMethod::Transfer => "transfer",
        }
    }

    pub fn parse(raw: &str) -> Option<FeeMethod> {
        FeeMethod::ALL.into_iter().find(|method| method.as_str() == raw)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The fee of one kind of line: `amount × rate_ppm / 1,000,000` rounded half up, then at least
/// `min_fen` and at most `max_fen`, and never more than the amount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeeRule {
    pub rate_ppm: u32,
    pub min_fen: i64,
    pub max_fen: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeeRuleError {
    #[error("rate_ppm must be at most 1000000 (100%)")]
    RateTooHigh,
    #[error("min must not be above max")]
    MinAboveMax,
}

impl FeeRule {
    pub const FREE: FeeRule = FeeRule { rate_ppm: 0, min_fen: 0, max_fen: None };

    pub fn new(rate_ppm: u32, min: Amount, max: Option<Amount>) -> Result<FeeRule, FeeRuleError> {
        if rate_ppm > 1_000_000 {
            return Err(FeeRuleError::RateTooHigh);
        }
        if max.is_some_and(|max| max < min) {
            return Err(FeeRuleError::MinAboveMax);
        }
        Ok(FeeRule { rate_ppm, min_fen: min.fen(), max_fen: max.map(Amount::fen) })
    }

    pub fn fee_fen(&self, amount_fen: i64) -> i64 {
        let by_rate = (i128::from(amount_fen) * i128::from(self.rate_ppm) + 500_000) / 1_000_000;
        let mut fee = i64::try_from(by_rate).unwrap_or(amount_fen).max(self.min_fen);
        if let Some(max_fen) = self.max_fen {
            fee = fee.min(max_fen);
        }
        fee.clamp(0, amount_fen.max(0))
    }
}

/// One rule per [`FeeMethod`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tariff {
    rules: [FeeRule; 4],
}

impl Tariff {
    /// Every payment method at `rate_ppm`, transfers free: the tariff of the single global
    /// rate (`--fee-rate-ppm`).
    pub fn flat(rate_ppm: u32) -> Tariff {
        let rule = FeeRule { rate_ppm, min_fen: 0, max_fen: None };
        Tariff { rules: [rule, rule, rule, FeeRule::FREE] }
    }

    pub fn with(mut self, method: FeeMethod, rule: FeeRule) -> Tariff {
        self.rules[method.index()] = rule;
        self
    }

    pub fn rule(&self, method: FeeMethod) -> FeeRule {
        self.rules[method.index()]
    }

    pub fn fee_fen(&self, method: FeeMethod, amount_fen: i64) -> i64 {
        self.rule(method).fee_fen(amount_fen)
    }
}

/// The default tariff and the wallets that have their own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tariffs {
    pub default: Tariff,
    pub wallets: HashMap<String, Tariff>,
}

impl Tariffs {
    pub fn of(&self, wallet_id: &str) -> Tariff {
        self.wallets.get(wallet_id).copied().unwrap_or(self.default)
    }
}

/// The tariff file: the default tariff and each wallet's own, every rule optional (a method a
/// wallet's tariff leaves out has the default's rule; one the default leaves out, the flat
/// rate's). Amounts are yuan strings, as everywhere money is written.
///
/// ```json
/// {"default": {"payer_code": {"rate_ppm": 2500, "min": "0.01", "max": "5.00"}},
///  "wallets": {"0051000000000001": {"transfer": {"min": "0.10"}}}}
/// ```
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TariffFile {
    #[serde(default)]
    default: MethodRules,
    #[serde(default)]
    wallets: std::collections::BTreeMap<String, MethodRules>,
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MethodRules {
    payer_code: Option<RuleText>,
    card: Option<RuleText>,
    dynamic_qr: Option<RuleText>,
    transfer: Option<RuleText>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    #[serde(default)]
    rate_ppm: u32,
    min: Option<String>,
    max: Option<String>,
}

impl MethodRules {
    fn over(&self, base: Tariff, at: &str) -> Result<Tariff, String> {
        let mut tariff = base;
        let rules = [
            (FeeMethod::PayerCode, &self.payer_code),
            (FeeMethod::Card, &self.card),
            (FeeMethod::DynamicQr, &self.dynamic_qr),
            (FeeMethod::Transfer, &self.transfer),
        ];
        for (method, rule) in rules {
            let Some(rule) = rule else { continue };
            let at = format!("{at}.{}", method.as_str());
            let amount = |field: &str, text: &Option<String>| {
                text.as_deref()
                    .map(|text| Amount::parse(text).map_err(|error| format!("{at}.{field}: {error}")))
                    .transpose()
            };
            let min = amount("min", &rule.min)?.unwrap_or(Amount::ZERO);
            let max = amount("max", &rule.max)?;
            let rule = FeeRule::new(rule.rate_ppm, min, max).map_err(|error| format!("{at}: {error}"))?;
            tariff = tariff.with(method, rule);
        }
        Ok(tariff)
    }
}

impl Tariffs {
    /// The tariffs of a tariff file over the flat rate `base`. The error names the field.
    pub fn from_json(text: &str, base: Tariff) -> Result<Tariffs, String> {
        let file: TariffFile = serde_json::from_str(text).map_err(|error| error.to_string())?;
        let default = file.default.over(base, "default")?;
        let mut wallets = HashMap::new();
        for (wallet_id, rules) in &file.wallets {
            if wallet_id.is_empty() || wallet_id.len() > 64 || !wallet_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("wallets.{wallet_id}: not a wallet id"));
            }
            wallets.insert(wallet_id.clone(), rules.over(default, &format!("wallets.{wallet_id}"))?);
        }
        Ok(Tariffs { default, wallets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn yuan(text: &str) -> Amount {
        Amount::parse(text).unwrap()
    }

    #[test]
    fn a_rule_rounds_half_up_then_keeps_within_its_bounds() {
        let rule = FeeRule::new(2_500, yuan("0.01"), Some(yuan("5.00"))).unwrap();
        assert_eq!(rule.fee_fen(1_250), 3, "12.50 at 0.25% is 3.125 fen, rounded to 3");
        assert_eq!(rule.fee_fen(1_400), 4, "14.00 at 0.25% is 3.5 fen, half up to 4");
        assert_eq!(rule.fee_fen(100), 1, "the minimum");
        assert_eq!(rule.fee_fen(1_000_000), 500, "the maximum");
        let per_record = FeeRule::new(0, yuan("0.10"), None).unwrap();
        assert_eq!(per_record.fee_fen(30_000), 10);
        assert_eq!(per_record.fee_fen(5), 5, "never more than the amount");
        assert_eq!(FeeRule::new(1_000_001, Amount::ZERO, None), Err(FeeRuleError::RateTooHigh));
        assert_eq!(FeeRule::new(0, yuan("2.00"), Some(yuan("1.00"))), Err(FeeRuleError::MinAboveMax));
    }

    #[test]
    fn a_wallet_without_a_tariff_has_the_default() {
        let own = Tariff::flat(0).with(FeeMethod::Transfer, FeeRule::new(0, yuan("0.10"), None).unwrap());
        let tariffs = Tariffs { default: Tariff::flat(6_000), wallets: HashMap::from([("0051".to_owned(), own)]) };
        assert_eq!(tariffs.of("0051").fee_fen(FeeMethod::Transfer, 30_000), 10);
        assert_eq!(tariffs.of("0051").fee_fen(FeeMethod::Card, 30_000), 0);
        assert_eq!(tariffs.of("0021").fee_fen(FeeMethod::Card, 10_000), 60);
        assert_eq!(tariffs.of("0021").fee_fen(FeeMethod::Transfer, 10_000), 0);
    }

    #[test]
    fn a_tariff_file_names_what_it_refuses() {
        let text = r#"{"default": {"card": {"rate_ppm": 3000, "max": "5.00"}},
                      "wallets": {"0051000000000001": {"transfer": {"min": "0.10"}}}}"#;
        let tariffs = Tariffs::from_json(text, Tariff::flat(6_000)).unwrap();
        assert_eq!(tariffs.of("x").fee_fen(FeeMethod::Card, 1_000_000), 500);
        assert_eq!(tariffs.of("x").fee_fen(FeeMethod::PayerCode, 10_000), 60, "the flat rate under the file");
        let own = tariffs.of("0051000000000001");
        assert_eq!(own.fee_fen(FeeMethod::Transfer, 30_000), 10);
        assert_eq!(own.fee_fen(FeeMethod::Card, 1_000_000), 500, "the default's rule where its own has none");
        for (bad, says) in [
            (r#"{"default": {"card": {"min": "0.001"}}}"#, "default.card.min"),
            (r#"{"default": {"cash": {}}}"#, "unknown field `cash`"),
            (r#"{"wallets": {"00 51": {}}}"#, "wallets.00 51: not a wallet id"),
            (r#"{"default": {"transfer": {"min": "2.00", "max": "1.00"}}}"#, "default.transfer: min must not"),
        ] {
            let error = Tariffs::from_json(bad, Tariff::flat(0)).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    proptest! {
        #[test]
        fn a_fee_is_never_negative_nor_above_the_amount(
            amount_fen in 0i64..=100_000_000_000, rate_ppm in 0u32..=1_000_000,
            min_fen in 0i64..=10_000, extra_fen in proptest::option::of(0i64..=10_000),
        ) {
            let max = extra_fen.map(|extra| Amount::from_fen(min_fen + extra).unwrap());
            let rule = FeeRule::new(rate_ppm, Amount::from_fen(min_fen).unwrap(), max).unwrap();
            let fee = rule.fee_fen(amount_fen);
            prop_assert!((0..=amount_fen).contains(&fee));
            if let Some(max) = max {
                prop_assert!(fee <= max.fen());
            }
        }
    }
}
