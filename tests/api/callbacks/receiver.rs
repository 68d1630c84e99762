//! A receiver on port 0 that records every callback and answers as a test scripts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub webhook_id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// How many requests with this webhook-id (on this path) came before, plus one.
    pub nth: usize,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("callback body is JSON")
    }
}

/// What to answer: status and an optional Retry-After, given the request.
pub type Script = Arc<dyn Fn(&Received) -> (StatusCode, Option<&'static str>) + Send + Sync>;

#[derive(Clone)]
struct Shared {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
    /// While set, requests are recorded but not answered (a receiver hanging mid-request).
    stalled: Arc<std::sync::atomic::AtomicBool>,
}

pub struct Receiver {
    pub base_url: String,
    shared: Shared,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: Script) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        Receiver::serve(listener, base_url, script)
    }

    /// Over https on a loopback port, with `config`'s certificate, at `https://{host}:PORT`.
    pub async fn start_tls(script: Script, config: Arc<rustls::ServerConfig>, host: &str) -> Receiver {
        let listener = crate::tls::TlsListener::bind(config).await;
        let port = axum::serve::Listener::local_addr(&listener).unwrap().port();
        Receiver::serve(listener, format!("https://{host}:{port}"), script)
    }

    fn serve<L: axum::serve::Listener>(listener: L, base_url: String, script: Script) -> Receiver
    where
        L::Addr: std::fmt::Debug,
    {
        let shared = Shared { received: Arc::default(), script: Arc::new(Mutex::new(script)), stalled: Arc::default() };
        let router = axum::Router::new().fallback(receive).with_state(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("receiver runs");
        });
        Receiver { base_url, shared, _server: server }
    }

    /// Always 204.
    pub async fn accepting() -> Receiver {
        Receiver::start(Arc::new(|_| (StatusCode::NO_CONTENT, None))).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn set_script(&self, script: Script) {
        *self.shared.script.lock().unwrap() = script;
    }

    pub fn stall(&self, stalled: bool) {
        self.shared.stalled.store(stalled, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    pub fn received_on(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// Wait (up to a generous deadline) until `done` holds for what was received.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}; received {}", received.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn receive(State(shared): State<Shared>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let path = uri.path().to_owned();
    let webhook_id = header("webhook-id");
    let request = {
        let mut received = shared.received.lock().unwrap();
        let nth = received.iter().filter(|r| r.webhook_id == webhook_id && r.path == path).count() + 1;
        let request = Received {
            path,
            webhook_id,
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: String::from_utf8(body.to_vec()).expect("UTF-8 body"),
            nth,
        };
        received.push(request.clone());
        request
    };
    while shared.stalled.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let script = shared.script.lock().unwrap().clone();
    let (status, retry_after) = script(&request);
    let mut response = (status, "receiver says hello").into_response();
    if let Some(retry_after) = retry_after {
        response.headers_mut().insert("retry-after", retry_after.parse().unwrap());
    }
    response
}

/// Group requests by webhook-id.
pub fn by_id(received: &[Received]) -> HashMap<String, Vec<Received>> {
    let mut groups: HashMap<String, Vec<Received>> = HashMap::new();
    for request in received {
        groups.entry(request.webhook_id.clone()).or_default().push(request.clone());
    }
    groups
}
