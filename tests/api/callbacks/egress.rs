//! Where callbacks may go, against a hostile endpoint owner: every spelling of an internal
//! address refused at registration, names that resolve inside refused at connect time with
//! nothing read back, carepay's own addresses refused even where loopback is allowed,
//! literal addresses checked again when sent, no redirect followed, no proxy taken from the
//! environment, short clean excerpts, https with a trusted CA and a TLS failure without one.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse as _;
use carepay::callbacks::EventType;
use carepay::callbacks::egress::NameLookup;
use carepay::callbacks::worker::{WorkerHandle, WorkerSettings};
use carepay::domain::network::EgressPolicy;
use carepay::http::HttpSettings;
use carepay::store::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::receiver::Receiver;
use super::{create_endpoint, fast_settings, publish, start_worker, wait_for_items, world};
use crate::backend_tests;
use crate::helpers::{TestApp, TestDatabase, spawn_app_allowing};
use crate::tls::TestCa;

/// A server whose callbacks may reach public addresses only (no allow-list).
pub async fn public_only_app(backend: Backend) -> TestApp {
    spawn_app_allowing(TestDatabase::new(backend).await, HttpSettings::default(), Vec::new()).await
}

/// The name the tests' resolver answers with 127.0.0.1.
const RECEIVER_NAME: &str = "receiver.carepay.test";

fn resolving_to_loopback(settings: WorkerSettings) -> WorkerSettings {
    let loopback = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    WorkerSettings { lookup: NameLookup::fixed(vec![(RECEIVER_NAME.to_owned(), loopback)]), ..settings }
}

/// Every spelling of an internal address in the abuse audit and its neighbours, with what the
/// refusal must say.
const INTERNAL_URLS: &[(&str, &str)] = &[
    ("http://127.0.0.1:9000/hook", "127.0.0.1 is a loopback address"),
    ("http://localhost:9000/hook", "127.0.0.1 is a loopback address"),
    ("http://LocalHost./hook", "127.0.0.1 is a loopback address"),
    ("http://admin.localhost/hook", "127.0.0.1 is a loopback address"),
    ("http://[::1]/hook", "::1 is a loopback address"),
    ("http://0/hook", "0.0.0.0 is an unspecified (this-host) address"),
    ("http://0.0.0.0:8080/hook", "0.0.0.0 is an unspecified (this-host) address"),
    ("http://[::]/hook", ":: is an unspecified (this-host) address"),
    ("http://2130706433/hook", "127.0.0.1 is a loopback address"),
    ("http://0x7f.1/hook", "127.0.0.1 is a loopback address"),
    ("http://0177.0.0.1/hook", "127.0.0.1 is a loopback address"),
    ("http://127.1/hook", "127.0.0.1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/hook", "127.0.0.1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://[fe80::1]/hook", "fe80::1 is a link-local address"),
    ("http://10.0.0.1/hook", "10.0.0.1 is a private-network address"),
    ("http://172.16.0.1/hook", "172.16.0.1 is a private-network address"),
    ("http://192.168.1.1/hook", "192.168.1.1 is a private-network address"),
    ("http://[fd00::1]/hook", "fd00::1 is a private-network address"),
    ("http://100.64.0.1/hook", "100.64.0.1 is a carrier-grade NAT (shared) address"),
    ("http://192.0.0.1/hook", "192.0.0.1 is a reserved address"),
    ("http://198.18.0.1/hook", "198.18.0.1 is a benchmarking-range address"),
    ("http://255.255.255.255/hook", "255.255.255.255 is the broadcast address"),
    ("http://224.0.0.1/hook", "224.0.0.1 is a multicast address"),
    ("http://[ff02::1]/hook", "ff02::1 is a multicast address"),
    ("http://192.0.2.10/hook", "192.0.2.10 is a documentation-range address"),
];

/// Registering an endpoint of `facility` at `url` is refused with `expected` as the reason.
async fn refused_registration(app: &TestApp, facility: &str, url: &str, expected: &str) {
    let body = json!({"facility_id": facility, "url": url, "event_types": ["payment.succeeded"]});
    refused(app.post("/v1/callback-endpoints", &app.root_token, body).await, expected);
}

fn refused(reply: crate::helpers::Reply, expected: &str) {
    let reply = reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "URL_NOT_ALLOWED");
    assert_eq!(reply.body["field"], "url", "{}", reply.text);
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with(&format!("url: {expected}")), "{detail:?} does not say {expected:?}");
}

async fn every_internal_address_is_refused_at_registration_without_an_allow_list(app: TestApp) {
    let w = world(&app).await;
    let root = &app.root_token;
    for (url, reason) in INTERNAL_URLS {
        refused_registration(&app, &w.facility, url, reason).await;
    }
    // carepay's own port and the in-process sandbox's admin routes.
    let (own, sandbox) = own_addresses(&app);
    for (url, address) in
        [(format!("http://{own}/v1/tokens"), &own), (format!("http://{sandbox}/sandbox/client-keys"), &sandbox)]
    {
        refused_registration(&app, &w.facility, &url, &format!("{address} is carepay's own address")).await;
    }

    // A change of URL is held to the same rules, and a refused change changes nothing.
    let (id, _, _) = create_endpoint(
        &app,
        root,
        json!({"facility_id": w.facility, "url": "https://billing.example.cn/hook", "event_types": ["payment.succeeded"]}),
    )
    .await;
    let path = format!("/v1/callback-endpoints/{id}");
    let reply = app.call(Method::PATCH, &path, root, Some(json!({"url": "http://0x7f.1:8080/hook"}))).await;
    refused(reply, "127.0.0.1 is a loopback address");
    let endpoint = app.get(&path, root).await.expect(StatusCode::OK);
    assert_eq!(endpoint.body["url"], "https://billing.example.cn/hook");
    assert_eq!(endpoint.body["version"], 1);
    let listed =
        app.get(&format!("/v1/callback-endpoints?facility_id={}", w.facility), root).await.expect(StatusCode::OK);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1, "only the public endpoint exists");
}

/// `127.0.0.1:PORT` of the test server and of its in-process sandbox operator.
fn own_addresses(app: &TestApp) -> (String, String) {
    let sandbox = app.app.operator.as_ref().unwrap().client.settings().base_url.clone();
    (app.address.trim_start_matches("http://").to_owned(), sandbox.trim_start_matches("http://").to_owned())
}

async fn carepay_own_addresses_are_refused_even_where_loopback_is_allowed(app: TestApp) {
    let w = world(&app).await;
    let root = &app.root_token;
    let (own, sandbox) = own_addresses(&app);
    let own_port = own.rsplit(':').next().unwrap();
    let sandbox_port = sandbox.rsplit(':').next().unwrap();
    for (url, address) in [
        (format!("http://{own}/v1/tokens"), &own),
        (format!("http://localhost:{own_port}/healthz"), &own),
        (format!("http://[::ffff:127.0.0.1]:{own_port}/"), &own),
        (format!("http://{sandbox}/sandbox/faults"), &sandbox),
        (format!("http://0x7f.1:{sandbox_port}/sandbox/client-keys"), &sandbox),
    ] {
        refused_registration(&app, &w.facility, &url, &format!("{address} is carepay's own address")).await;
    }
    // Other loopback ports are allowed here: the tests' receivers listen on them.
    let receiver = Receiver::accepting().await;
    create_endpoint(
        &app,
        root,
        json!({"facility_id": w.facility, "url": receiver.url("/hook"), "event_types": ["payment.succeeded"]}),
    )
    .await;
}

/// The attempts of an endpoint, once there are `count`.
async fn attempts(app: &TestApp, endpoint: &str, count: usize) -> Vec<Value> {
    wait_for_items(app, &format!("/v1/callback-endpoints/{endpoint}/attempts"), "attempts", |items| {
        items.len() >= count
    })
    .await
}

/// An attempt that never connected: no status, the reason, nothing read back.
fn assert_not_connected(attempt: &Value, error: &str) {
    assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
    assert_eq!(attempt["error"], error, "{attempt}");
    assert_eq!(attempt["response_excerpt"], "", "{attempt}");
}

const LOOPBACK_REFUSED: &str = "refused: 127.0.0.1 is a loopback address; callbacks go to public addresses only, \
                                unless the operator allows the network";

async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time_and_nothing_is_read_back(app: TestApp) {
    let w = world(&app).await;
    let receiver = Receiver::accepting().await;
    let port = receiver.base_url.rsplit(':').next().unwrap().to_owned();
    // A name passes registration: what it resolves to is checked when carepay connects.
    let (endpoint, _, _) = create_endpoint(
        &app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": format!("http://{RECEIVER_NAME}:{port}/hook"),
               "event_types": ["payment.succeeded"]}),
    )
    .await;
    let worker = start_worker(&app, resolving_to_loopback(fast_settings()));
    publish(&app, &w.facility, EventType::PaymentSucceeded, "pay_1", 1).await;
    for attempt in attempts(&app, &endpoint, 2).await {
        assert_not_connected(&attempt, LOOPBACK_REFUSED);
    }
    worker.stop().await;
    assert!(receiver.received().is_empty(), "nothing reached the loopback receiver");
    let deliveries = app.get(&format!("/v1/callback-endpoints/{endpoint}/deliveries"), &app.root_token).await;
    assert_eq!(deliveries.body["items"][0]["last_error"], LOOPBACK_REFUSED, "{}", deliveries.text);
}

async fn a_literal_address_is_checked_again_when_sent(app: TestApp) {
    let w = world(&app).await;
    let receiver = Receiver::accepting().await;
    // Registered while loopback was allowed...
    let (endpoint, _, _) = create_endpoint(
        &app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": receiver.url("/hook"), "event_types": ["payment.succeeded"]}),
    )
    .await;
    // ...and sent by an instance that no longer allows it.
    let mut strict = app.app.clone();
    strict.callback_egress = Arc::new(EgressPolicy::default());
    let worker = carepay::callbacks::worker::spawn(strict, fast_settings()).expect("worker starts");
    publish(&app, &w.facility, EventType::PaymentSucceeded, "pay_1", 1).await;
    for attempt in attempts(&app, &endpoint, 2).await {
        assert_not_connected(&attempt, LOOPBACK_REFUSED);
    }
    worker.stop().await;
    assert!(receiver.received().is_empty());
}

/// A server on a loopback port answering every request with `status`, `headers` and `body`.
async fn answering(status: AxumStatus, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> String {
    let router = axum::Router::new().fallback(move || {
        let (headers, body) = (headers.clone(), body.clone());
        async move {
            let mut response = (status, body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn a_redirect_is_not_followed(app: TestApp) {
    let w = world(&app).await;
    let target = Receiver::accepting().await;
    let redirecting =
        answering(AxumStatus::TEMPORARY_REDIRECT, vec![("location", target.url("/elsewhere"))], Vec::new()).await;
    let (endpoint, _, _) = create_endpoint(
        &app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": format!("{redirecting}/hook"), "event_types": ["payment.succeeded"]}),
    )
    .await;
    let worker = start_worker(&app, fast_settings());
    publish(&app, &w.facility, EventType::PaymentSucceeded, "pay_1", 1).await;
    let attempts = attempts(&app, &endpoint, 2).await;
    worker.stop().await;
    assert!(attempts.iter().all(|attempt| attempt["status_code"] == 307), "{attempts:?}");
    assert!(target.received().is_empty(), "the redirect's target was never called");
}

async fn an_excerpt_is_short_and_free_of_control_characters(app: TestApp) {
    let w = world(&app).await;
    let mut body = b"\x1b[2J\r\nforged log line\t".to_vec();
    body.extend(std::iter::repeat_n(b'x', 5_000));
    let noisy = answering(AxumStatus::INTERNAL_SERVER_ERROR, Vec::new(), body).await;
    let (endpoint, _, _) = create_endpoint(
        &app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": format!("{noisy}/hook"), "event_types": ["payment.succeeded"]}),
    )
    .await;
    let worker = start_worker(&app, fast_settings());
    publish(&app, &w.facility, EventType::PaymentSucceeded, "pay_1", 1).await;
    let attempt = attempts(&app, &endpoint, 1).await.remove(0);
    worker.stop().await;
    assert_eq!(attempt["status_code"], 500);
    let excerpt = attempt["response_excerpt"].as_str().unwrap();
    assert_eq!(excerpt.len(), 256, "{excerpt:?}");
    assert!(excerpt.starts_with(" [2J  forged log line x"), "{excerpt:?}");
    assert!(!excerpt.chars().any(char::is_control), "{excerpt:?}");
}

/// A receiver over https at `RECEIVER_NAME` with a certificate from `server_ca`, an endpoint
/// for it, and a worker that trusts `trusted` and resolves the name to loopback; one event
/// published. Returns the receiver, the endpoint, the event and the worker.
async fn over_https(app: &TestApp, server_ca: &TestCa, trusted: &TestCa) -> (Receiver, String, String, WorkerHandle) {
    let w = world(app).await;
    let script: super::receiver::Script = Arc::new(|_| (StatusCode::NO_CONTENT, None));
    let receiver = Receiver::start_tls(script, server_ca.server_config(&[RECEIVER_NAME]), RECEIVER_NAME).await;
    let (endpoint, _, _) = create_endpoint(
        app,
        &app.root_token,
        json!({"facility_id": w.facility, "url": receiver.url("/hook"), "event_types": ["payment.succeeded"]}),
    )
    .await;
    let settings = WorkerSettings { extra_roots: trusted.extra_roots(), ..resolving_to_loopback(fast_settings()) };
    let worker = start_worker(app, settings);
    let event = publish(app, &w.facility, EventType::PaymentSucceeded, "pay_1", 1).await;
    (receiver, endpoint, event.into_string(), worker)
}

async fn callbacks_go_over_https_to_a_receiver_whose_ca_is_trusted(app: TestApp) {
    let ca = TestCa::new("facility billing CA");
    let (receiver, endpoint, event, worker) = over_https(&app, &ca, &ca).await;
    let delivered = receiver.wait_until("the callback over https", |all| !all.is_empty()).await;
    assert_eq!(delivered[0].webhook_id, event);
    let attempt = attempts(&app, &endpoint, 1).await.remove(0);
    worker.stop().await;
    assert_eq!(attempt["status_code"], 204, "{attempt}");
}

async fn a_receiver_certificate_from_an_untrusted_ca_fails_the_attempt_as_tls(app: TestApp) {
    let trusted = TestCa::new("facility billing CA");
    let stranger = TestCa::new("someone else's CA");
    let (receiver, endpoint, _, worker) = over_https(&app, &stranger, &trusted).await;
    for attempt in attempts(&app, &endpoint, 2).await {
        assert_not_connected(&attempt, "TLS failure: invalid peer certificate: UnknownIssuer");
    }
    worker.stop().await;
    assert!(receiver.received().is_empty(), "no request was sent over the untrusted connection");
}

backend_tests!(
    spawn = crate::callbacks::egress::public_only_app;
    every_internal_address_is_refused_at_registration_without_an_allow_list,
    a_name_that_resolves_to_loopback_is_refused_at_connect_time_and_nothing_is_read_back,
);

backend_tests!(
    carepay_own_addresses_are_refused_even_where_loopback_is_allowed,
    a_literal_address_is_checked_again_when_sent,
    a_redirect_is_not_followed,
    an_excerpt_is_short_and_free_of_control_characters,
    callbacks_go_over_https_to_a_receiver_whose_ca_is_trusted,
    a_receiver_certificate_from_an_untrusted_ca_fails_the_attempt_as_tls,
);

/// `carepay serve` with proxy variables pointing at a recording "proxy": callbacks still go
/// straight to the receiver, so a proxy cannot resolve names past the egress check.
async fn proxy_variables_do_not_carry_callbacks_past_the_check(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let token = super::crash::command_line_token(&db.url, &key);
    let proxy = Receiver::accepting().await;
    let receiver = Receiver::accepting().await;
    let (mut child, address) = super::crash::serve_with(
        &db.url,
        &key,
        &[
            ("CAREPAY_CALLBACK_ALLOWED_NETWORKS", "127.0.0.0/8"),
            ("http_proxy", proxy.base_url.as_str()),
            ("HTTP_PROXY", proxy.base_url.as_str()),
            ("https_proxy", proxy.base_url.as_str()),
            ("all_proxy", proxy.base_url.as_str()),
            ("ALL_PROXY", proxy.base_url.as_str()),
            ("no_proxy", ""),
            ("NO_PROXY", ""),
        ],
    );
    let (facility, _) = super::crash::facility_with_endpoint(&address, &token, &receiver.url("/hook")).await;

    let publisher = crate::helpers::spawn_app_with(db, Default::default()).await;
    let event = publish(&publisher, &facility, EventType::PaymentSucceeded, "pay_1", 1).await;
    let delivered = receiver.wait_until("the callback, sent directly", |all| !all.is_empty()).await;
    assert_eq!(delivered[0].webhook_id, event.as_str());
    assert!(proxy.received().is_empty(), "nothing went through the proxy");
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    child.wait().unwrap();
    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_do_not_carry_callbacks_past_the_check_on_sqlite() {
    proxy_variables_do_not_carry_callbacks_past_the_check(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_do_not_carry_callbacks_past_the_check_on_postgres() {
    proxy_variables_do_not_carry_callbacks_past_the_check(Backend::Postgres).await;
}
