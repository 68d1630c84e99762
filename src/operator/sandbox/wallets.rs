//! Sandbox wallets and the rules money movements obey (`operator-api.md`, `fail_code`s).
//!
//! Tier 4 is the anonymous wallet: it holds at most 10,000.00, pays at most 2,000.00 per
//! payment and 5,000.00 per business day (outgoing payments and transfers). Other tiers
//! have no limits in the sandbox.

use std::collections::BTreeSet;

use crate::operator::types::codes;

pub const ANONYMOUS_TIER: u8 = 4;
pub const ANONYMOUS_MAX_BALANCE_FEN: i64 = 1_000_000;
pub const ANONYMOUS_MAX_PER_PAYMENT_FEN: i64 = 200_000;
pub const ANONYMOUS_MAX_PER_DAY_FEN: i64 = 500_000;

#[derive(Clone, Debug)]
pub struct Wallet {
    pub id: String,
    pub holder_name: String,
    /// 1 (strongest identity) to 4 (anonymous).
    pub tier: u8,
    pub balance_fen: i64,
    pub frozen: bool,
    /// Funds restricted to these merchants (e.g. a meal subsidy for designated canteens).
    pub allowed_merchants: Option<BTreeSet<String>>,
    /// (business day as days since epoch, fen paid out that day), for the tier-4 limit.
    pub paid_today: (i64, i64),
}

impl Wallet {
    pub fn new(id: &str, holder_name: &str, tier: u8, balance_fen: i64) -> Wallet {
        Wallet {
            id: id.to_owned(),
            holder_name: holder_name.to_owned(),
            tier,
            balance_fen,
            frozen: false,
            allowed_merchants: None,
            paid_today: (0, 0),
        }
    }

    fn paid_on(&self, day: i64) -> i64 {
        if self.paid_today.0 == day { self.paid_today.1 } else { 0 }
    }

    /// May this wallet pay `amount_fen` to `merchant` (None for a transfer) on `day`?
    pub fn check_debit(&self, amount_fen: i64, merchant: Option<&str>, day: i64) -> Result<(), &'static str> {
        if self.frozen {
            return Err(codes::WALLET_FROZEN);
        }
        if let (Some(allowed), Some(merchant)) = (&self.allowed_merchants, merchant)
            && !allowed.contains(merchant)
        {
            return Err(codes::MERCHANT_NOT_ALLOWED);
        }
        if self.tier == ANONYMOUS_TIER
            && (amount_fen > ANONYMOUS_MAX_PER_PAYMENT_FEN
                || self.paid_on(day) + amount_fen > ANONYMOUS_MAX_PER_DAY_FEN)
        {
            return Err(codes::WALLET_LIMIT_EXCEEDED);
        }
        if self.balance_fen < amount_fen {
            return Err(codes::INSUFFICIENT_BALANCE);
        }
        Ok(())
    }

    /// May this wallet receive `amount_fen`?
    pub fn check_credit(&self, amount_fen: i64) -> Result<(), &'static str> {
        if self.frozen {
            return Err(codes::WALLET_FROZEN);
        }
        if self.tier == ANONYMOUS_TIER && self.balance_fen + amount_fen > ANONYMOUS_MAX_BALANCE_FEN {
            return Err(codes::WALLET_LIMIT_EXCEEDED);
        }
        Ok(())
    }

    /// Pays out after [`Wallet::check_debit`] said yes.
    pub fn debit(&mut self, amount_fen: i64, day: i64) {
        debug_assert!(self.balance_fen >= amount_fen);
        self.balance_fen -= amount_fen;
        self.paid_today = (day, self.paid_on(day) + amount_fen);
    }

    /// Money coming back (a reversal or refund) also gives back the day's allowance.
    pub fn credit_back(&mut self, amount_fen: i64, day: i64) {
        self.balance_fen += amount_fen;
        if self.paid_today.0 == day {
            self.paid_today.1 = (self.paid_today.1 - amount_fen).max(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anonymous_wallet_is_limited_per_payment_per_day_and_in_balance() {
        let mut wallet = Wallet::new("0031000000000001", "匿名", ANONYMOUS_TIER, 900_000);
        assert_eq!(wallet.check_debit(200_001, Some("m"), 1), Err(codes::WALLET_LIMIT_EXCEEDED));
        for _ in 0..2 {
            assert_eq!(wallet.check_debit(200_000, Some("m"), 1), Ok(()));
            wallet.debit(200_000, 1);
        }
        assert_eq!(wallet.check_debit(100_001, Some("m"), 1), Err(codes::WALLET_LIMIT_EXCEEDED));
        assert_eq!(wallet.check_debit(100_000, Some("m"), 1), Ok(()));
        // A new day brings a new allowance.
        assert_eq!(wallet.check_debit(200_000, Some("m"), 2), Ok(()));
        assert_eq!(wallet.check_credit(500_000), Ok(()));
        assert_eq!(wallet.check_credit(500_001), Err(codes::WALLET_LIMIT_EXCEEDED));
    }

    #[test]
    fn frozen_restricted_and_empty_wallets_are_refused_with_their_code() {
        let mut wallet = Wallet::new("0031000000000001", "张三", 2, 100);
        assert_eq!(wallet.check_debit(101, Some("m"), 1), Err(codes::INSUFFICIENT_BALANCE));
        wallet.allowed_merchants = Some(BTreeSet::from([String::from("canteen")]));
        assert_eq!(wallet.check_debit(1, Some("m"), 1), Err(codes::MERCHANT_NOT_ALLOWED));
        assert_eq!(wallet.check_debit(1, Some("canteen"), 1), Ok(()));
        wallet.frozen = true;
        assert_eq!(wallet.check_debit(1, Some("canteen"), 1), Err(codes::WALLET_FROZEN));
        assert_eq!(wallet.check_credit(1), Err(codes::WALLET_FROZEN));
    }
}
