//! Admission under abuse, through real TCP on both backends: one token's slow request
//! bodies use up only that token's share, a full back-office lane refuses nobody else
//! (health checks, operator notifications, terminal payments, the console), clients that
//! trickle headers are disconnected, slow bodies are answered 408, and failed sign-ins are
//! throttled per client.

use std::time::Duration;

use carepay::app::Limits;
use carepay::http::HttpSettings;
use carepay::http::body_rate::BodyRate;
use carepay::http::client_addr::{ProxyNet, TrustedProxies};
use carepay::http::lanes::LaneSettings;
use carepay::operator::clock::Clock;
use carepay::operator::signing::Signer;
use carepay::store::Backend;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::helpers::{TEST_SANDBOX_SEED, TestApp, TestDatabase, spawn_app_with, spawn_app_with_limits, test_limits};
use crate::terminal_client::terminal;

/// Run `async fn name(backend: Backend)` once on each backend.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$name(carepay::store::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    super::$name(carepay::store::Backend::Postgres).await;
                }
            }
        )+
    };
}

on_both_backends!(
    one_tokens_slow_bodies_use_up_only_that_tokens_share,
    one_terminals_slow_requests_use_up_only_that_terminals_share,
    notifications_payments_and_health_go_on_while_the_back_office_lane_is_full,
    a_client_sending_headers_a_byte_at_a_time_is_disconnected,
    slow_bodies_are_answered_408_and_change_nothing,
    failed_sign_ins_are_throttled_per_client_and_successes_never_count,
);

/// The bound on anything a test waits for; never asserted as a duration.
const PATIENCE: Duration = Duration::from_secs(30);

/// Slow bodies that nothing cuts off while a test runs.
fn patient_settings(back_office: usize, per_token: u32) -> HttpSettings {
    HttpSettings {
        max_in_flight_requests: back_office,
        request_timeout_ms: 600_000,
        lanes: LaneSettings { per_token_max_in_flight: per_token, lane_wait_ms: 50, ..LaneSettings::default() },
        body_rate: BodyRate { min_bytes_per_s: 1, window_ms: 600_000 },
        ..HttpSettings::default()
    }
}

fn host(app: &TestApp) -> &str {
    app.address.strip_prefix("http://").expect("http address")
}

/// A response read off a raw connection.
#[derive(Debug)]
struct RawReply {
    status: u16,
    head: String,
    body: String,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    fn problem(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{self:?}");
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

/// Read one HTTP/1.1 response (Content-Length or chunked body), however long it takes.
async fn read_reply(stream: &mut TcpStream) -> std::io::Result<RawReply> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4_096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before a reply"));
        }
        bytes.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let mut reply = RawReply { status, head, body: String::new() };
    let mut body = bytes[head_end + 4..].to_vec();
    let complete = |body: &[u8], reply: &RawReply| match reply.header("content-length") {
        Some(length) => body.len() >= length.parse::<usize>().expect("a length"),
        None if reply.header("transfer-encoding") == Some("chunked") => body.ends_with(b"0\r\n\r\n"),
        None => true,
    };
    while !complete(&body, &reply) {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    reply.body = String::from_utf8_lossy(&body).into_owned();
    Ok(reply)
}

/// A back-office request whose headers arrive whole and whose body starts and then stalls.
async fn start_slow_post(app: &TestApp, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(host(app)).await.expect("connect");
    stream.write_all(back_office_head(app, token).as_bytes()).await.expect("send headers");
    stream.write_all(b"{").await.expect("send a byte");
    stream
}

/// The head of a back-office request for `token` with a body of 1,000 bytes.
fn back_office_head(app: &TestApp, token: &str) -> String {
    format!(
        "POST /v1/regions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 1000\r\n\r\n",
        host(app)
    )
}

/// Start `count` requests that send `head` and one body byte, then stall; each reports its
/// reply (if it ever gets one) on `replies`. The connections stay open until the test ends.
fn stall(app: &TestApp, head: &str, count: usize, replies: &mpsc::Sender<RawReply>) {
    for _ in 0..count {
        let (host, head, replies) = (host(app).to_owned(), head.to_owned(), replies.clone());
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(&host).await.expect("connect");
            stream.write_all(head.as_bytes()).await.expect("send headers");
            stream.write_all(b"{").await.expect("send a byte");
            if let Ok(reply) = read_reply(&mut stream).await {
                let _ = replies.send(reply).await;
            }
            // Held open: the request is in flight for as long as the test runs.
            std::future::pending::<()>().await;
        });
    }
}

async fn next_reply(replies: &mut mpsc::Receiver<RawReply>) -> RawReply {
    tokio::time::timeout(PATIENCE, replies.recv()).await.expect("a reply in time").expect("reply channel open")
}

/// A notification signed with the sandbox operator's key, as the operator sends them.
async fn post_notification(app: &TestApp) -> StatusCode {
    let signer = Signer::from_seed(&app.sandbox.key_id(), &TEST_SANDBOX_SEED, Clock::system()).expect("sandbox key");
    let body = serde_json::to_vec(&json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "type": "TRADE.SUCCESS",
        "created_at": "2026-01-05T10:00:00+08:00",
        "resource": {
            "trade_no": "T-unknown",
            "out_trade_no": format!("cp-unknown-{}", uuid::Uuid::new_v4().simple()),
            "status": "SUCCESS",
            "amount": "1.00",
            "refunded_amount": "0.00"
        }
    }))
    .unwrap();
    let mut request = app
        .client
        .post(format!("{}{}", app.address, carepay::http::notifications::NOTIFICATIONS_PATH))
        .header("content-type", "application/json")
        .body(body.clone());
    for (name, value) in signer.sign_response(&body).pairs() {
        request = request.header(name, value);
    }
    request.send().await.expect("notification sent").status()
}

async fn one_tokens_slow_bodies_use_up_only_that_tokens_share(backend: Backend) {
    // The whole back-office lane holds 4; one token may hold 2 of them.
    let app = spawn_app_with(TestDatabase::new(backend).await, patient_settings(4, 2)).await;
    let hostile = app.issue_token(&app.root_token, "admin", None).await;
    let colleague = app.issue_token(&app.root_token, "admin", None).await;
    let till = terminal(&app, "0021000000000071").await;

    // More stalled requests than the whole lane holds.
    let (replies_tx, mut replies) = mpsc::channel(16);
    stall(&app, &back_office_head(&app, &hostile), 6, &replies_tx);
    for _ in 0..4 {
        let reply = next_reply(&mut replies).await;
        assert_eq!(reply.status, 429, "{reply:?}");
        assert_eq!(reply.problem()["code"], "TOO_MANY_IN_FLIGHT");
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    assert!(replies.try_recv().is_err(), "two of the token's requests are still in flight, unanswered");

    // Everyone else is served: health, another token, the operator, a terminal.
    app.raw(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
    app.raw(Method::GET, "/readyz", None, None).await.expect(StatusCode::OK);
    let regions = app.get("/v1/regions", &colleague).await.expect(StatusCode::OK);
    assert_eq!(regions.body["items"].as_array().unwrap().len(), 1, "the terminal's district, nothing stalled");
    app.post("/v1/regions", &colleague, json!({"level": "district", "name": "苏州工业园区"}))
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(post_notification(&app).await, StatusCode::NO_CONTENT);
    let payment = till.pay("lane-1", "12.50", "013412345678900000").await.expect("terminal payment");
    assert_eq!(payment.status, carepay::grpc::proto::PaymentStatus::Succeeded as i32);
    assert_eq!(payment.amount, "12.50");

    // The hostile token itself gets nothing more while its share is in use.
    app.get("/v1/regions", &hostile).await.expect_problem(StatusCode::TOO_MANY_REQUESTS, "TOO_MANY_IN_FLIGHT");
    let metrics = app.raw(Method::GET, "/metrics", None, None).await.expect(StatusCode::OK);
    assert!(
        metrics.text.lines().any(|line| line.starts_with("http_admission_refused_total")
            && line.contains("lane=\"back_office\"")
            && line.contains("code=\"TOO_MANY_IN_FLIGHT\"")),
        "refusals are counted by lane and code:\n{}",
        metrics.text
    );
}

async fn one_terminals_slow_requests_use_up_only_that_terminals_share(backend: Backend) {
    let mut settings = patient_settings(512, 32);
    settings.lanes.per_terminal_max_in_flight = 2;
    let app = spawn_app_with(TestDatabase::new(backend).await, settings).await;
    let (stuck, other) = (terminal(&app, "0021000000000073").await, terminal(&app, "0021000000000074").await);
    // gRPC requests naming the stuck terminal whose message never finishes arriving.
    let head = format!(
        "POST /carepay.terminal.v1.TerminalService/Pay HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc\r\n\
         x-carepay-terminal-id: {}\r\ncontent-length: 200\r\n\r\n",
        host(&app),
        stuck.id
    );
    let (replies_tx, mut replies) = mpsc::channel(16);
    stall(&app, &head, 4, &replies_tx);
    for _ in 0..2 {
        let reply = next_reply(&mut replies).await;
        assert_eq!(reply.header("grpc-status"), Some("8"), "RESOURCE_EXHAUSTED: {reply:?}");
        assert!(reply.header("grpc-message").unwrap().starts_with("TOO_MANY_IN_FLIGHT"), "{reply:?}");
    }
    assert!(replies.try_recv().is_err(), "two are still in flight, unanswered");

    // Another terminal pays; the stuck one is refused until its requests end.
    let paid = other.pay("share-1", "6.00", "013412345678900000").await.expect("the other terminal pays");
    assert_eq!(paid.status, carepay::grpc::proto::PaymentStatus::Succeeded as i32);
    let refused = stuck.pay("share-2", "6.00", "013412345678900000").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    // Nothing was recorded for the refused payment.
    let pool = app.db.raw_pool().await;
    let payments: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payments").fetch_one(&pool).await.unwrap();
    assert_eq!(payments, 1);
}

async fn notifications_payments_and_health_go_on_while_the_back_office_lane_is_full(backend: Backend) {
    let app = spawn_app_with(TestDatabase::new(backend).await, patient_settings(4, 2)).await;
    let till = terminal(&app, "0021000000000072").await;
    let (first, second, third) = (
        app.issue_token(&app.root_token, "admin", None).await,
        app.issue_token(&app.root_token, "admin", None).await,
        app.issue_token(&app.root_token, "admin", None).await,
    );
    // Two tokens, each within its share, fill the whole lane.
    let (replies_tx, mut replies) = mpsc::channel(16);
    stall(&app, &back_office_head(&app, &first), 2, &replies_tx);
    stall(&app, &back_office_head(&app, &second), 2, &replies_tx);
    let mut full = None;
    for _ in 0..300 {
        let reply = app.get("/v1/regions", &third).await;
        if reply.status == StatusCode::SERVICE_UNAVAILABLE {
            full = Some(reply);
            break;
        }
        reply.expect(StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full = full.expect("the lane fills up").expect_problem(StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED");
    assert_eq!(full.body["status"], 503);
    assert!(replies.try_recv().is_err(), "the stalled requests are in flight, unanswered");

    // A burst of operator notifications, larger than the back-office lane, all received.
    let notifications = futures_util::future::join_all((0..12).map(|_| post_notification(&app))).await;
    assert!(notifications.iter().all(|status| *status == StatusCode::NO_CONTENT), "{notifications:?}");
    app.raw(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
    app.raw(Method::GET, "/metrics", None, None).await.expect(StatusCode::OK);
    let sign_in = app.client.get(format!("{}/console/sign-in", app.address)).send().await.unwrap();
    assert_eq!(sign_in.status(), StatusCode::OK, "the console has a lane of its own");
    let payment = till.pay("lane-2", "8.80", "013412345678900000").await.expect("terminal payment");
    assert_eq!(payment.status, carepay::grpc::proto::PaymentStatus::Succeeded as i32);
}

async fn a_client_sending_headers_a_byte_at_a_time_is_disconnected(backend: Backend) {
    let settings = HttpSettings { header_read_timeout_ms: 500, ..HttpSettings::default() };
    let app = spawn_app_with(TestDatabase::new(backend).await, settings).await;
    let stream = TcpStream::connect(host(&app)).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let request = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\nx-padding: {}\r\n\r\n", host(&app), "a".repeat(60));
    tokio::spawn(async move {
        for byte in request.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut received = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 1_024];
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&chunk[..read]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closes the connection");
    assert!(received.is_empty(), "no request was ever served: {}", String::from_utf8_lossy(&received));

    // A connection that sends nothing at all (not even enough to tell HTTP/1.1 from HTTP/2)
    // is closed too.
    let mut silent = TcpStream::connect(host(&app)).await.expect("connect");
    let mut chunk = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut chunk)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // A client that sends its request at once is served as always.
    app.raw(Method::GET, "/healthz", None, None).await.expect(StatusCode::OK);
}

async fn slow_bodies_are_answered_408_and_change_nothing(backend: Backend) {
    // The floor: 1,000 bytes a second, measured over each second of waiting.
    let settings =
        HttpSettings { body_rate: BodyRate { min_bytes_per_s: 1_000, window_ms: 1_000 }, ..HttpSettings::default() };
    let app = spawn_app_with(TestDatabase::new(backend).await, settings).await;
    let mut stream = start_slow_post(&app, &app.root_token).await;
    // A few bytes, far below the floor, then nothing: the client has stopped writing long
    // before the server answers, so its answer is not lost to a reset.
    for _ in 0..3 {
        stream.write_all(b" ").await.expect("a byte");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = tokio::time::timeout(PATIENCE, read_reply(&mut stream)).await.expect("a reply in time").unwrap();
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(reply.problem()["code"], "REQUEST_TIMEOUT");
    assert_eq!(reply.header("connection"), Some("close"));
    let regions = app.get("/v1/regions", &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(regions.body["items"], json!([]), "nothing was created");
    // A body sent at once is well above the floor.
    app.post("/v1/regions", &app.root_token, json!({"level": "district", "name": "吴江区"}))
        .await
        .expect(StatusCode::CREATED);
    app.stop().await;

    // A body that keeps above the floor but outlasts the request timeout: 408 as well.
    let settings = HttpSettings {
        request_timeout_ms: 500,
        body_rate: BodyRate { min_bytes_per_s: 1, window_ms: 600_000 },
        ..HttpSettings::default()
    };
    let app = spawn_app_with(TestDatabase::new(backend).await, settings).await;
    let mut stream = start_slow_post(&app, &app.root_token).await;
    let reply = tokio::time::timeout(PATIENCE, read_reply(&mut stream)).await.expect("a reply in time").unwrap();
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(reply.problem()["code"], "REQUEST_TIMEOUT");
    let regions = app.get("/v1/regions", &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(regions.body["items"], json!([]));
}

async fn failed_sign_ins_are_throttled_per_client_and_successes_never_count(backend: Backend) {
    // Requests come through a trusted proxy on loopback, which names each client.
    let settings = HttpSettings {
        trusted_proxies: TrustedProxies(vec![ProxyNet::parse("127.0.0.1").unwrap()]),
        ..HttpSettings::default()
    };
    // Three failures in a burst, then one a minute: nothing refills while the test runs.
    let limits = Limits { sign_in_failures_per_minute: 1, sign_in_failure_burst: 3, ..test_limits() };
    let app = spawn_app_with_limits(TestDatabase::new(backend).await, settings, limits).await;
    let wrong = format!("cpt_{}", "A".repeat(43));
    let from = |client: &str, token: &str| {
        app.client
            .get(format!("{}/v1/regions", app.address))
            .bearer_auth(token)
            .header("x-forwarded-for", client)
            .send()
    };

    // Successes are never counted: many of them, then a failure is still only a failure.
    for _ in 0..10 {
        assert_eq!(from("203.0.113.1", &app.root_token).await.unwrap().status(), StatusCode::OK);
    }
    for _ in 0..3 {
        assert_eq!(from("203.0.113.1", &wrong).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    // The client's failures are used up: refused before any token is looked up.
    let throttled = from("203.0.113.1", &wrong).await.unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u32 = throttled.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem: Value = throttled.json().await.unwrap();
    assert_eq!(problem["code"], "SIGN_IN_THROTTLED");
    let valid = from("203.0.113.1", &app.root_token).await.unwrap();
    assert_eq!(valid.status(), StatusCode::TOO_MANY_REQUESTS, "the throttled client is refused whatever it sends");
    // Another client behind the same proxy is not affected.
    assert_eq!(from("203.0.113.2", &app.root_token).await.unwrap().status(), StatusCode::OK);
    assert_eq!(from("203.0.113.2", &wrong).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Console sign-ins count against the same throttle, per client.
    let console = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let sign_in = |client: &'static str, token: String| {
        let (console, address) = (console.clone(), app.address.clone());
        async move {
            let form = console.get(format!("{address}/console/sign-in")).send().await.unwrap();
            let cookie = form
                .headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|value| value.to_str().ok())
                .find_map(|value| value.strip_prefix("carepay_console_sign_in="))
                .map(|rest| rest.split(';').next().unwrap().to_owned())
                .expect("sign-in cookie");
            console
                .post(format!("{address}/console/sign-in"))
                .header("cookie", format!("carepay_console_sign_in={cookie}"))
                .header("x-forwarded-for", client)
                .form(&[("csrf", cookie.as_str()), ("token", token.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(sign_in("198.51.100.7", wrong.clone()).await.status(), StatusCode::UNAUTHORIZED);
    }
    let refused = sign_in("198.51.100.7", app.root_token.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused.headers().get("set-cookie").is_none(), "no session for a throttled client");
    assert_eq!(sign_in("198.51.100.8", app.root_token.clone()).await.status(), StatusCode::SEE_OTHER);
    // The API client throttled above is throttled in the console too.
    assert_eq!(sign_in("203.0.113.1", app.root_token.clone()).await.status(), StatusCode::TOO_MANY_REQUESTS);
}
