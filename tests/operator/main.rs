//! The operator client against the sandbox operator, over real HTTP, a fresh sandbox per
//! test: signatures, every payer code, idempotency, refunds, transfers, faults,
//! notifications and statements.

mod helpers;

mod faults;
mod idempotency;
mod notifications;
mod payments;
mod refunds;
mod signatures;
mod sm2_interop;
mod sm2_vectors;
mod statements;
mod transfers;
