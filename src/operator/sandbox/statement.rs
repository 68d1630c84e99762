//! The sandbox writes statements with the domain's pure writer, so the reconciliation parser
//! and the sandbox can never disagree about the bytes.

pub use crate::domain::statement::{
    COLUMNS, EntryKind, EntryStatus, StatementError, StatementHeader, StatementLine, StatementTotals, Yuan,
    mask_wallet_id, totals, write_statement, write_statement_with_totals,
};
