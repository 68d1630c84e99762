//! A real server on port 0 over a fresh database per test, and a client with one method
//! per endpoint family.

use std::time::Duration;

use carepay::app::{App, Limits};
use carepay::domain::network::{EgressPolicy, Network};
use carepay::http::HttpSettings;
use carepay::operator::client::OperatorSettings;
use carepay::operator::clock::Clock;
use carepay::operator::sandbox::notify::NotifySettings;
use carepay::operator::sandbox::{Sandbox, SandboxConfig};
use carepay::operator::setup::OperatorTarget;
use carepay::operator::signing::{SignatureAlgorithm, Signer};
use carepay::payments::PaymentSettings;
use carepay::payments::worker::WorkerSettings;
use carepay::rate_limit::Rate;
use carepay::store::{Backend, PoolSettings, Store};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Where PostgreSQL tests create their databases; `.ci/run` sets it, and the default is the
/// local development server.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| String::from("postgres://postgres@127.0.0.1:5432/postgres"))
}

/// A fresh, empty database for one test. Dropping it removes a SQLite file; PostgreSQL
/// databases are named `carepay_test_*` and removed by `.ci/run` after the run.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub async fn new(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = Store::sqlite_url(&dir.path().join("carepay.db"));
                TestDatabase { url, _dir: Some(dir) }
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("carepay_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Store::connect(&admin_url, &PoolSettings { max_connections: 1, ..PoolSettings::default() })
                    .await
                    .unwrap_or_else(|error| panic!("PostgreSQL for tests at {admin_url}: {error}"));
                admin.execute_raw(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                admin.close().await;
                let base = admin_url.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin_url);
                TestDatabase { url: format!("{base}/{name}"), _dir: None }
            }
        }
    }

    /// A plain pool, for tests that inspect or tamper with what is stored.
    pub async fn raw_pool(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url).await.expect("connect to test database")
    }

    pub async fn store(&self) -> Store {
        let store = Store::connect(&self.url, &PoolSettings::default()).await.expect("connect to test database");
        store.migrate().await.expect("migrate test database");
        store
    }
}

pub struct TestApp {
    pub address: String,
    pub app: App,
    /// The in-process sandbox operator this app talks to.
    pub sandbox: Sandbox,
    pub db: TestDatabase,
    pub client: reqwest::Client,
    /// An admin token that sees every region.
    pub root_token: String,
    shutdown: Option<oneshot::Sender<()>>,
    worker_stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(TestDatabase::new(backend).await, test_http_settings()).await
}

/// HTTP bounds for tests: each caller's share of its lane as large as the lane, so that
/// tests of many concurrent requests from one terminal or token meet only the bounds they
/// test (the admission tests set their own).
pub fn test_http_settings() -> HttpSettings {
    let defaults = HttpSettings::default();
    let lanes = carepay::http::lanes::LaneSettings {
        per_token_max_in_flight: u32::try_from(defaults.max_in_flight_requests).unwrap_or(u32::MAX),
        per_terminal_max_in_flight: u32::try_from(defaults.lanes.terminal_max_in_flight).unwrap_or(u32::MAX),
        ..defaults.lanes.clone()
    };
    HttpSettings { lanes, ..defaults }
}

/// The key list every test server seals with (`id:BASE64`), so a test can hand it to the
/// command line (key rotation).
pub const TEST_SECRET_KEYS: &str = "test:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

pub fn test_secrets() -> carepay::callbacks::secrets::SecretBox {
    carepay::callbacks::secrets::SecretBox::from_key_list(TEST_SECRET_KEYS).expect("test key")
}

/// Payment timings scaled down so tests of timeouts and polling finish quickly.
pub fn test_payment_settings() -> PaymentSettings {
    PaymentSettings {
        userpaying_timeout_ms: 1_500,
        check_interval_ms: 100,
        max_check_interval_ms: 1_000,
        request_lease_ms: 2_000,
        duplicate_wait_ms: 5_000,
        not_found_grace_ms: 500,
        ..PaymentSettings::default()
    }
}

/// Limits for tests: rates high enough that only the rate-limit tests meet them.
pub fn test_limits() -> Limits {
    let generous = Rate { per_second: 100_000, burst: 100_000 };
    Limits {
        token_rate: generous,
        terminal_rate: generous,
        sign_in_failures_per_minute: 1_000_000,
        sign_in_failure_burst: 100_000,
        ..Limits::default()
    }
}

/// The sandbox operator's signing seed in tests, so a test can sign notifications as the
/// operator would.
pub const TEST_SANDBOX_SEED: [u8; 32] = [11; 32];

pub fn test_sandbox_config() -> SandboxConfig {
    SandboxConfig {
        signing_secret: Some(TEST_SANDBOX_SEED),
        confirm_delay_ms: 300,
        hang_ms: 3_000,
        notify: NotifySettings { time_scale: 0.01, ..NotifySettings::default() },
        ..SandboxConfig::default()
    }
}

/// The networks test servers let callbacks reach: this machine's loopback, where the tests'
/// receivers listen (carepay's own port and the sandbox's stay refused).
pub fn test_callback_networks() -> Vec<Network> {
    vec![Network::parse("127.0.0.0/8").unwrap(), Network::parse("::1").unwrap()]
}

pub async fn spawn_app_with(db: TestDatabase, settings: HttpSettings) -> TestApp {
    spawn_app_with_limits(db, settings, test_limits()).await
}

pub async fn spawn_app_with_limits(db: TestDatabase, settings: HttpSettings, limits: Limits) -> TestApp {
    spawn_app_configured(db, settings, limits, test_callback_networks(), ED25519_BOTH, |_| {}).await
}

/// A test server whose app settings `configure` changes before it serves (reconciliation's
/// tariffs, say).
pub async fn spawn_app_configured_by(backend: Backend, configure: impl FnOnce(&mut App)) -> TestApp {
    let db = TestDatabase::new(backend).await;
    spawn_app_configured(db, test_http_settings(), test_limits(), test_callback_networks(), ED25519_BOTH, configure)
        .await
}

/// A test server whose callbacks may reach only public addresses and `allowed`, as a
/// production server with `CAREPAY_CALLBACK_ALLOWED_NETWORKS` would.
pub async fn spawn_app_allowing(db: TestDatabase, settings: HttpSettings, allowed: Vec<Network>) -> TestApp {
    spawn_app_configured(db, settings, test_limits(), allowed, ED25519_BOTH, |_| {}).await
}

/// Both sides of the operator contract sign with Ed25519, as the spec has it.
const ED25519_BOTH: (SignatureAlgorithm, SignatureAlgorithm) =
    (SignatureAlgorithm::Ed25519, SignatureAlgorithm::Ed25519);

/// A test server whose operator requests are signed with `carepay_algorithm` and whose
/// in-process sandbox signs its answers and notifications with `operator_algorithm`.
pub async fn spawn_app_signing_with(
    db: TestDatabase,
    settings: HttpSettings,
    carepay_algorithm: SignatureAlgorithm,
    operator_algorithm: SignatureAlgorithm,
) -> TestApp {
    let algorithms = (carepay_algorithm, operator_algorithm);
    spawn_app_configured(db, settings, test_limits(), test_callback_networks(), algorithms, |_| {}).await
}

/// `algorithms`: what carepay signs its operator requests with, and what the in-process
/// sandbox signs its answers and notifications with.
async fn spawn_app_configured(
    db: TestDatabase,
    settings: HttpSettings,
    limits: Limits,
    allowed: Vec<Network>,
    (carepay_algorithm, operator_algorithm): (SignatureAlgorithm, SignatureAlgorithm),
    configure: impl FnOnce(&mut App),
) -> TestApp {
    let store = db.store().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let address = format!("http://{}", listener.local_addr().expect("local addr"));
    // The wall clock, which the demo may move to put in its past days (the app's and the
    // operator's time move together, as in `carepay demo`).
    let clock = Clock::adjustable();
    let signer = Signer::generate_with(carepay_algorithm, "carepay-test", clock.clone()).expect("signing key");
    let operator = OperatorSettings { timeout_ms: 1_000, ..OperatorSettings::default() };
    let notify_url = format!("{address}{}", carepay::http::notifications::NOTIFICATIONS_PATH);
    let setup = carepay::operator::setup::connect(
        OperatorTarget::InProcess(SandboxConfig {
            clock: clock.clone(),
            signing_algorithm: operator_algorithm,
            ..test_sandbox_config()
        }),
        signer,
        operator,
        Some(notify_url),
        clock.clone(),
    )
    .await
    .expect("sandbox operator");
    let sandbox = setup.sandbox.expect("in-process sandbox");
    let mut app = App::new(store, limits).with_operator(setup.link).with_secrets(test_secrets()).with_clock(clock);
    app.payments = test_payment_settings();
    let own = vec![listener.local_addr().expect("local addr"), setup.sandbox_address.expect("sandbox address")];
    app.callback_egress = std::sync::Arc::new(EgressPolicy::new(allowed, own));
    configure(&mut app);
    let worker_settings = WorkerSettings { poll_interval_ms: 50, ..WorkerSettings::default() };
    let (worker_stop, worker_stop_rx) = oneshot::channel::<()>();
    tokio::spawn(carepay::payments::worker::run(app.clone(), worker_settings, async move {
        let _ = worker_stop_rx.await;
    }));
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server_app = app.clone();
    let server = tokio::spawn(async move {
        carepay::server::serve(
            server_app,
            &settings,
            listener,
            async move {
                let _ = shutdown_rx.await;
            },
            Duration::from_secs(5),
        )
        .await
    });
    let root_token = issue_root_token(&app).await;
    TestApp {
        address,
        app,
        sandbox,
        worker_stop: Some(worker_stop),
        db,
        client: reqwest::Client::new(),
        root_token,
        shutdown: Some(shutdown_tx),
        server: Some(server),
    }
}

async fn issue_root_token(app: &App) -> String {
    // Issued as `carepay token create` would: from the command line, with no caller.
    let issued = app
        .issue_token_unchecked(
            carepay::access::NewToken {
                role: carepay::domain::role::Role::Admin,
                scope_region_id: None,
                label: carepay::domain::directory::Name::parse("test root").unwrap(),
                lifetime_days: None,
            },
            None,
        )
        .await
        .expect("issue root token");
    issued.secret.expose().to_owned()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_else(|| panic!("no id in {}", self.text)).to_owned()
    }

    #[track_caller]
    pub fn expect(self, status: StatusCode) -> Reply {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    #[track_caller]
    pub fn expect_problem(self, status: StatusCode, code: &str) -> Reply {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        assert_eq!(self.content_type, "application/problem+json", "body: {}", self.text);
        assert_eq!(self.code(), code, "body: {}", self.text);
        self
    }
}

impl TestApp {
    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let content_type =
            response.headers().get("content-type").and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned();
        let text = response.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, content_type, body, text }
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let body = body.map(|value| ("application/json", serde_json::to_vec(&value).unwrap()));
        self.raw(method, path, Some(token), body).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn create_region(&self, token: &str, parent: Option<&str>, level: &str, name: &str) -> String {
        self.post("/v1/regions", token, json!({"parent_id": parent, "level": level, "name": name}))
            .await
            .expect(StatusCode::CREATED)
            .id()
    }

    pub async fn create_organisation(&self, token: &str, region: &str, name: &str) -> String {
        self.post("/v1/organisations", token, json!({"region_id": region, "name": name}))
            .await
            .expect(StatusCode::CREATED)
            .id()
    }

    pub async fn create_facility(&self, token: &str, region: &str, name: &str, wallet: &str) -> String {
        self.post(
            "/v1/facilities",
            token,
            json!({"region_id": region, "name": name, "kind": "meal_canteen", "merchant_wallet_id": wallet}),
        )
        .await
        .expect(StatusCode::CREATED)
        .id()
    }

    pub async fn register_terminal(&self, token: &str, facility: &str, public_key: &str) -> String {
        self.post("/v1/terminals", token, json!({"facility_id": facility, "label": "收银台", "public_key": public_key}))
            .await
            .expect(StatusCode::CREATED)
            .id()
    }

    pub async fn issue_token(&self, token: &str, role: &str, region: Option<&str>) -> String {
        let reply = self
            .post("/v1/tokens", token, json!({"role": role, "region_id": region, "label": format!("{role} token")}))
            .await
            .expect(StatusCode::CREATED);
        reply.body["secret"].as_str().expect("secret").to_owned()
    }

    /// Stop the server gracefully and wait for it.
    pub async fn stop(mut self) -> TestDatabase {
        if let Some(stop) = self.worker_stop.take() {
            let _ = stop.send(());
        }
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
        self.app.store.close().await;
        self.db
    }
}

impl TestApp {
    /// Start a second carepay instance on the same database and the same wallet operator,
    /// with its own pool, nonce memory and port, as another replica behind a load balancer
    /// would be. Returns its base URL; it stops when the test's runtime ends.
    pub async fn spawn_replica(&self, limits: Limits) -> String {
        let store = self.db.store().await;
        let mut app = App::new(store, limits).with_operator(self.app.operator.clone().expect("operator"));
        app.payments = test_payment_settings();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let address = format!("http://{}", listener.local_addr().expect("local addr"));
        tokio::spawn(async move {
            let settings = test_http_settings();
            carepay::server::serve(app, &settings, listener, std::future::pending(), Duration::from_secs(1)).await
        });
        address
    }
}

/// A fresh Ed25519 key pair for a terminal: (pkcs8 document, base64 public key).
pub fn terminal_key_pair() -> (ring::signature::Ed25519KeyPair, String) {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("generate key");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("parse key");
    let public = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
    (pair, public)
}

/// Run a test body once on SQLite and once on PostgreSQL: `backend_tests!(name, ...)`
/// expects `async fn name(app: TestApp)` in scope.
/// `backend_tests!(spawn = path::to::spawner; name, ...)` starts each app with that
/// `async fn(Backend) -> TestApp` instead of `spawn_app`.
#[macro_export]
macro_rules! backend_tests {
    (spawn = $spawn:path; $($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$name($spawn(carepay::store::Backend::Sqlite).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    super::$name($spawn(carepay::store::Backend::Postgres).await).await;
                }
            }
        )+
    };
    ($($name:ident),+ $(,)?) => {
        $crate::backend_tests!(spawn = $crate::helpers::spawn_app; $($name),+);
    };
}
