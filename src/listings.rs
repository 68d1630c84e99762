//! Read-only listings the web console shows and the REST API has no route for yet: subsidy
//! programmes and their batches, the wallets and business days an accountant works on, a
//! facility's payments and refunds of a day. Each checks role and scope exactly as the
//! single-object use cases do.

use crate::app::{App, require};
use crate::directory::{PageRequest, scope_filter};
use crate::domain::access::Principal;
use crate::domain::batch::{Batch, Programme};
use crate::domain::directory::Facility;
use crate::domain::ids::{FacilityId, ProgrammeId};
use crate::domain::payment::{Payment, Refund};
use crate::domain::reconciliation::day_start_ms;
use crate::domain::role::Action;
use crate::domain::time::UnixMs;
use crate::error::{Error, Result};
use crate::store::console::WalletDay;

/// Most batches listed for one programme.
pub const MAX_LISTED_BATCHES: u32 = 100;
/// Most payments (and, separately, refunds) listed for one facility's day.
pub const MAX_LISTED_DAY_RECORDS: u32 = 500;
/// Most business days asked for at once.
pub const MAX_LISTED_DAYS: i64 = 62;

const MS_PER_DAY: i64 = 86_400_000;

/// A facility's payments and refunds of one business day.
#[derive(Debug)]
pub struct FacilityDay {
    pub facility: Facility,
    pub payments: Vec<Payment>,
    pub refunds: Vec<Refund>,
}

impl App {
    pub async fn programmes(&self, principal: &Principal, page: &PageRequest) -> Result<Vec<Programme>> {
        require(principal, Action::ReadBatches)?;
        Ok(self.store.list_programmes(scope_filter(principal), self.page(page)).await?)
    }

    pub async fn programme_batches(&self, principal: &Principal, id: &ProgrammeId) -> Result<Vec<Batch>> {
        let programme = self.programme(principal, id).await?;
        Ok(self.store.batches_of_programme(&programme.id, MAX_LISTED_BATCHES).await?)
    }

    /// The facilities whose wallets the principal reconciles (or reads the reconciliation of).
    pub async fn reconciliation_wallets(&self, principal: &Principal, page: &PageRequest) -> Result<Vec<Facility>> {
        require(principal, Action::ReadReconciliation)?;
        Ok(self.store.list_facilities(scope_filter(principal), self.page(page)).await?)
    }

    /// The facilities whose payments the principal may see.
    pub async fn payment_facilities(&self, principal: &Principal, page: &PageRequest) -> Result<Vec<Facility>> {
        require(principal, Action::ReadPayments)?;
        Ok(self.store.list_facilities(scope_filter(principal), self.page(page)).await?)
    }

    /// A wallet's business days from `first_day` to `last_day` (inclusive) that
    /// reconciliation has seen.
    pub async fn wallet_days(
        &self,
        principal: &Principal,
        wallet_id: &str,
        first_day: &str,
        last_day: &str,
    ) -> Result<Vec<WalletDay>> {
        require(principal, Action::ReadReconciliation)?;
        let (Some(first_ms), Some(last_ms)) = (day_start_ms(first_day), day_start_ms(last_day)) else {
            return Err(Error::invalid("date", "INVALID_DATE", "must be a date YYYY-MM-DD"));
        };
        if last_ms < first_ms || (last_ms - first_ms) / MS_PER_DAY >= MAX_LISTED_DAYS {
            return Err(Error::invalid("date", "INVALID_RANGE", format!("at most {MAX_LISTED_DAYS} days, in order")));
        }
        self.reconciled_wallet(principal, wallet_id).await?;
        Ok(self.store.wallet_days(wallet_id, first_day, last_day).await?)
    }

    /// A facility's payments and refunds created on `business_day` (Asia/Shanghai).
    pub async fn facility_day(
        &self,
        principal: &Principal,
        id: &FacilityId,
        business_day: &str,
    ) -> Result<FacilityDay> {
        require(principal, Action::ReadPayments)?;
        let facility = self.facility(principal, id).await?;
        let from_ms = day_start_ms(business_day)
            .ok_or_else(|| Error::invalid("date", "INVALID_DATE", "must be a date YYYY-MM-DD"))?;
        let (from, to) = (UnixMs(from_ms), UnixMs(from_ms + MS_PER_DAY));
        let payments = self.store.payments_of_facility(&facility.id, from, to, MAX_LISTED_DAY_RECORDS).await?;
        let refunds = self.store.refunds_of_facility(&facility.id, from, to, MAX_LISTED_DAY_RECORDS).await?;
        Ok(FacilityDay { facility, payments, refunds })
    }
}
