//! Pure types and rules: no I/O, no async, no SQL, no HTTP. Everything here can be
//! unit- and property-tested in isolation, and everything outside parses into these types
//! at the edge so the core never re-validates.

pub mod access;
pub mod audit;
pub mod batch;
pub mod callbacks;
pub mod citizen_id;
pub mod directory;
pub mod disbursement;
pub mod fees;
pub mod ids;
pub mod ledger;
pub mod line_chunk;
pub mod money;
pub mod network;
pub mod payment;
pub mod reconciliation;
pub mod role;
pub mod statement;
pub mod text;
pub mod time;
