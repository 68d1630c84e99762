//! The wallet operator: the client carepay uses to move money (`client`), the signature
//! scheme both directions share (`signing`), and the sandbox operator that implements the
//! same contract in-process or as its own process (`sandbox`).

pub mod client;
pub mod clock;
pub mod sandbox;
pub mod setup;
pub mod signing;
pub mod types;
