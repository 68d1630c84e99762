//! Back-office roles and what each may do. The matrix lives here, in one place, so the
//! HTTP layer, the console and the tests all read the same rules.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the region tree, facilities, terminals and tokens within its scope.
    Admin,
    /// Runs a facility's counter: terminals and the facility's own records.
    FacilityManager,
    /// Uploads subsidy batches.
    SubsidyClerk,
    /// Approves subsidy batches uploaded by someone else.
    SubsidyApprover,
    /// Reconciles statements and closes business days.
    Accountant,
    /// Reads everything within its scope, changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::FacilityManager,
        Role::SubsidyClerk,
        Role::SubsidyApprover,
        Role::Accountant,
        Role::Auditor,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::FacilityManager => "facility_manager",
            Role::SubsidyClerk => "subsidy_clerk",
            Role::SubsidyApprover => "subsidy_approver",
            Role::Accountant => "accountant",
            Role::Auditor => "auditor",
        }
    }

    pub fn parse(raw: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == raw)
    }

    pub fn may(self, action: Action) -> bool {
        use Action::*;
        match action {
            ReadDirectory => true,
            ManageRegions | ManageFacilities | ManageTokens => self == Role::Admin,
            ManageTerminals => matches!(self, Role::Admin | Role::FacilityManager),
            ManageFacilityCallbacks => matches!(self, Role::Admin | Role::FacilityManager),
            ManageOfficeCallbacks => matches!(self, Role::Admin | Role::SubsidyClerk | Role::SubsidyApprover),
            ReadFacilityCallbacks => matches!(self, Role::Admin | Role::FacilityManager | Role::Auditor),
            Reconcile => matches!(self, Role::Admin | Role::Accountant),
            ReadReconciliation => matches!(self, Role::Admin | Role::Accountant | Role::Auditor),
            ReadOfficeCallbacks => {
                matches!(self, Role::Admin | Role::SubsidyClerk | Role::SubsidyApprover | Role::Auditor)
            }
            ReadAudit => matches!(self, Role::Admin | Role::Auditor),
            ReadPayments => matches!(self, Role::Admin | Role::FacilityManager | Role::Accountant | Role::Auditor),
            ManageProgrammes => self == Role::Admin,
            UploadBatches => self == Role::SubsidyClerk,
            // Four-eyes: only an approver approves, and never the batch's uploader.
            ApproveBatches => self == Role::SubsidyApprover,
            OperateBatches => matches!(self, Role::Admin | Role::SubsidyClerk | Role::SubsidyApprover),
            ReadBatches => {
                matches!(self, Role::Admin | Role::SubsidyClerk | Role::SubsidyApprover | Role::Auditor)
            }
            // Only the office that owns the people's data; an admin or auditor sees it masked.
            RevealCitizenIds => matches!(self, Role::SubsidyClerk | Role::SubsidyApprover),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request wants to do, independent of which object it touches (scope is checked
/// separately, against the object's region).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// See regions, organisations, facilities and terminals.
    ReadDirectory,
    /// Read and verify the audit trail.
    ReadAudit,
    /// Create regions and organisations.
    ManageRegions,
    /// Register and change facilities.
    ManageFacilities,
    /// Register, suspend, resume terminals and rotate their keys.
    ManageTerminals,
    /// Issue, list and revoke back-office tokens.
    ManageTokens,
    /// Register and change a facility's callback endpoints, replay its events.
    ManageFacilityCallbacks,
    /// Register and change a subsidy office's callback endpoints, replay its events.
    ManageOfficeCallbacks,
    /// See a facility's callback endpoints, deliveries and attempts.
    ReadFacilityCallbacks,
    /// See a subsidy office's callback endpoints, deliveries and attempts.
    ReadOfficeCallbacks,
    /// Import statements, run reconciliation, resolve discrepancies, close days.
    Reconcile,
    /// See reconciliation runs, results and discrepancies.
    ReadReconciliation,
    /// See a facility's payments and refunds.
    ReadPayments,
    /// Create subsidy programmes (funding wallet, budget, caps).
    ManageProgrammes,
    /// Upload subsidy batch files.
    UploadBatches,
    /// Approve a batch someone else uploaded.
    ApproveBatches,
    /// Cancel, pause, resume batches and re-issue failed lines.
    OperateBatches,
    /// See programmes, batches, progress and results.
    ReadBatches,
    /// See a beneficiary's citizen ID number in clear (each time recorded in the audit trail).
    RevealCitizenIds,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_through_its_name() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn auditors_only_read() {
        for action in [
            Action::ManageRegions,
            Action::ManageFacilities,
            Action::ManageTerminals,
            Action::ManageTokens,
            Action::ManageFacilityCallbacks,
            Action::ManageOfficeCallbacks,
            Action::Reconcile,
            Action::RevealCitizenIds,
        ] {
            assert!(!Role::Auditor.may(action));
        }
        assert!(Role::Auditor.may(Action::ReadDirectory));
    }
}
