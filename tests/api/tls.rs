//! https end to end: a test CA made in the test, servers with certificates it signed, and
//! carepay trusting it through its extra roots. The wallet operator answers over https, and
//! one whose certificate comes from a CA carepay does not trust is an unknown outcome naming
//! the TLS failure. (Callbacks over https are in `callbacks::egress`.)

use std::net::SocketAddr;
use std::sync::Arc;

use carepay::operator::client::OperatorSettings;
use carepay::operator::clock::Clock;
use carepay::operator::sandbox::Sandbox;
use carepay::operator::setup::{OperatorSetup, OperatorTarget};
use carepay::operator::signing::Signer;
use carepay::tls::ExtraRoots;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::test_sandbox_config;

const MERCHANT: &str = "0021000000000001";

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA certificate");
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// carepay trusting this CA, as `--extra-ca-file` with its certificate would make it.
    pub fn extra_roots(&self) -> ExtraRoots {
        ExtraRoots::from_pem(self.pem().as_bytes()).expect("the test CA is a valid trust anchor")
    }

    /// A server configuration with a certificate for `names` (DNS names or IP addresses)
    /// signed by this CA.
    pub fn server_config(&self, names: &[&str]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(names.iter().map(|name| name.to_string()).collect::<Vec<_>>())
            .expect("server certificate parameters");
        let certificate = params.signed_by(&key, &self.issuer).expect("server certificate");
        let chain = vec![certificate.der().clone(), self.issuer.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate and key");
        Arc::new(config)
    }
}

/// A TCP listener that completes a TLS handshake before handing a connection to axum; a
/// client that gives up on the handshake (an untrusted certificate) is simply dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl TlsListener {
    pub async fn bind(config: Arc<rustls::ServerConfig>) -> TlsListener {
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind TLS listener");
        TlsListener { tcp, acceptor: tokio_rustls::TlsAcceptor::from(config) }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, address)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, address);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// Serve `router` over https with `config`; returns the port.
pub async fn serve_tls(router: axum::Router, config: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TlsListener::bind(config).await;
    let port = axum::serve::Listener::local_addr(&listener).expect("local addr").port();
    tokio::spawn(async move { axum::serve(listener, router).await });
    port
}

/// The sandbox operator behind https with a certificate for `localhost` from `ca`, and
/// carepay connected to it as to a remote operator at `https://localhost:PORT`.
async fn operator_over_https(ca: &TestCa, trusted: ExtraRoots) -> (Sandbox, OperatorSetup) {
    let sandbox = Sandbox::new(test_sandbox_config());
    let port = serve_tls(sandbox.router(), ca.server_config(&["localhost"])).await;
    let clock = Clock::system();
    let signer = Signer::generate("carepay-tls", clock.clone()).unwrap();
    sandbox.register_client_key(signer.key_id(), signer.verifying_key()).unwrap();
    let sandbox_key = sandbox.verifying_key();
    let setup = carepay::operator::setup::connect(
        OperatorTarget::Remote {
            base_url: format!("https://localhost:{port}/"),
            public_keys: vec![(sandbox.key_id(), sandbox_key)],
            allow_plain_http: false,
        },
        signer,
        OperatorSettings { timeout_ms: 5_000, extra_roots: trusted, ..OperatorSettings::default() },
        None,
        clock,
    )
    .await
    .expect("connected to the https operator");
    (sandbox, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_answers_over_https_with_a_certificate_from_a_trusted_ca() {
    let ca = TestCa::new("carepay test operator CA");
    let (_sandbox, setup) = operator_over_https(&ca, ca.extra_roots()).await;
    // A signed, verified, definite answer came back through TLS.
    let error = setup.link.client.query_trade(MERCHANT, "P-over-tls").await.unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(error.code(), Some("TRADE_NOT_FOUND"), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_certificate_from_an_untrusted_ca_is_an_unknown_outcome_naming_tls() {
    let ca = TestCa::new("carepay test operator CA");
    let stranger = TestCa::new("someone else's CA");
    let (_sandbox, setup) = operator_over_https(&ca, stranger.extra_roots()).await;
    let error = setup.link.client.query_trade(MERCHANT, "P-over-tls").await.unwrap_err();
    assert!(error.is_unknown(), "{error:?}");
    assert!(error.to_string().contains("TLS failure: invalid peer certificate: UnknownIssuer"), "{error}");
}
