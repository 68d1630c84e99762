//! The terminal gRPC transport (tonic), served on the same port as the REST API.

/// Code generated from `proto/carepay/terminal/v1/terminal.proto`.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("carepay.terminal.v1");

    /// The encoded descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/terminal_descriptor.bin"));
}
