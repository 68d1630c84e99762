//! End-to-end tests through the real HTTP transport, each on SQLite and on PostgreSQL.

mod helpers;
mod terminal_client;

mod audit;
mod audit_actions;
mod bad_input;
mod callbacks;
mod cli;
mod console;
mod demo;
mod directory;
mod disbursement;
mod disbursement_crash;
mod group_commit;
mod keys;
mod ledger;
mod log_hygiene;
mod operator_sm2;
mod ops;
mod payments;
mod qr_orders;
mod reconciliation;
mod restart;
mod route_table;
mod scope;
mod terminal_auth;
mod terminal_nonces;
mod terminal_protoc;
mod terminal_signing;
mod tokens;
mod upload_spool;
