//! The terminal gRPC transport (tonic), served on the same port as the REST API. Every RPC
//! passes the signature check in [`auth`] before it reaches [`terminal::TerminalGrpc`].

pub mod auth;
pub mod client;
pub mod envelope;
pub mod error;
pub mod terminal;

use std::convert::Infallible;

use axum::Router;
use tonic::server::NamedService;
use tower::ServiceExt as _;

use crate::app::App;

/// Code generated from `proto/carepay/terminal/v1/terminal.proto`.
#[allow(clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("carepay.terminal.v1");

    /// The encoded descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/terminal_descriptor.bin"));
}

fn route<S>(router: Router, service: S) -> Router
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    router.route_service(
        &format!("/{}/{{*rest}}", S::NAME),
        service.map_request(|request: http::Request<axum::body::Body>| request.map(tonic::body::Body::new)),
    )
}

/// The gRPC routes: the terminal service behind the signature check, plus the standard
/// health and reflection services (unsigned: they reveal nothing but the schema).
pub fn router(app: App) -> Router {
    let terminal =
        proto::terminal_service_server::TerminalServiceServer::new(terminal::TerminalGrpc { app: app.clone() });
    let signed = route(Router::new(), terminal).layer(axum::middleware::from_fn_with_state(app, auth::verify_terminal));

    let (reporter, health) = tonic_health::server::health_reporter();
    // Set before the router is returned, so the first health check already sees SERVING: the
    // reporter was just made, so nothing else holds its lock and one poll completes the write.
    let mut serving = Box::pin(async move {
        reporter.set_serving::<proto::terminal_service_server::TerminalServiceServer<terminal::TerminalGrpc>>().await;
    });
    if futures_util::FutureExt::now_or_never(&mut serving).is_none() {
        tokio::spawn(serving);
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the compiled descriptor set is valid");
    let open = route(route(Router::new(), health), reflection);
    signed.merge(open)
}
