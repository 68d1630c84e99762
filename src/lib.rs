//! carepay: digital-RMB (e-CNY) settlement for elder-care facilities.
//!
//! See ARCHITECTURE.md for the map: `domain` holds pure types and rules, `store` the only
//! SQL, the use-case modules (`directory`, `access`) orchestrate them, and `http` is
//! transport only.

pub mod access;
pub mod app;
pub mod audit;
pub mod callbacks;
pub mod cli;
pub mod cli_batch;
pub mod config;
pub mod console;
pub mod demo;
pub mod directory;
pub mod disbursement;
pub mod domain;
pub mod error;
pub mod fuzzing;
pub mod grpc;
pub mod http;
pub mod keys;
pub mod listings;
pub mod nonces;
pub mod operator;
pub mod payments;
pub mod rate_limit;
pub mod reconciliation;
pub mod server;
pub mod sessions;
pub mod store;
pub mod telemetry;
pub mod terminal_cache;
pub mod tls;
