//! Use cases for the audit trail: auditors list the records within their scope and check
//! that the chain is unbroken.

use crate::app::{App, require};
use crate::directory::scope_filter;
use crate::domain::access::Principal;
use crate::domain::role::Action;
use crate::error::Result;
use crate::store::audit::{AuditRecord, BrokenLink};

impl App {
    /// Records after `after_seq`, within the caller's scope, at most `limit` (bounded by the
    /// page size).
    pub async fn audit_records(&self, principal: &Principal, after_seq: i64, limit: u32) -> Result<Vec<AuditRecord>> {
        require(principal, Action::ReadAudit)?;
        let limit = limit.clamp(1, self.limits.max_page_size);
        Ok(self.store.audit_records(scope_filter(principal), after_seq, limit).await?)
    }

    /// Recompute the whole chain; `None` when it is intact.
    pub async fn verify_audit(&self, principal: &Principal) -> Result<Option<BrokenLink>> {
        require(principal, Action::ReadAudit)?;
        Ok(self.store.verify_audit_chain().await?)
    }
}
