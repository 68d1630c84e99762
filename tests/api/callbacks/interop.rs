//! Every callback verifies with an independent Standard Webhooks implementation: the
//! `standardwebhooks` package from PyPI for `v1`, `cryptography`'s Ed25519 for `v1a`.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carepay::callbacks::EventType;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{create_endpoint, fast_settings, publish, start_worker, wait_for_items, world};
use crate::backend_tests;
use crate::helpers::TestApp;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/receiver/standardwebhooks_receiver.py");

/// The Python receiver, its printed verdicts, and the keys file it reads.
struct PythonReceiver {
    child: Child,
    port: u16,
    verdicts: Arc<Mutex<Vec<Value>>>,
    keys_file: tempfile::NamedTempFile,
}

impl PythonReceiver {
    fn start() -> PythonReceiver {
        let check = Command::new("python3").args(["-c", "import standardwebhooks, cryptography"]).output();
        match check {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "the interop test needs the Python packages `standardwebhooks` and `cryptography` \
                 (`pip install standardwebhooks cryptography`; .ci/run installs them): {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) => panic!("the interop test needs python3 on PATH: {error}"),
        }
        let keys_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(keys_file.path(), r#"{"secrets": [], "public_key": null}"#).unwrap();
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg(keys_file.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("the receiver prints its port").unwrap();
        let port = first.strip_prefix("listening ").expect("listening <port>").parse().unwrap();
        let verdicts = Arc::new(Mutex::new(Vec::new()));
        let sink = verdicts.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(serde_json::from_str(&line).expect("a JSON verdict"));
            }
        });
        PythonReceiver { child, port, verdicts, keys_file }
    }

    fn use_keys(&self, secrets: &[&str], public_key: &str) {
        let keys = json!({"secrets": secrets, "public_key": public_key});
        std::fs::write(self.keys_file.path(), keys.to_string()).unwrap();
    }

    async fn wait_for(&self, count: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let verdicts = self.verdicts.lock().unwrap().clone();
            if verdicts.len() >= count {
                return verdicts;
            }
            assert!(std::time::Instant::now() < deadline, "the Python receiver saw {} of {count}", verdicts.len());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn an_independent_standard_webhooks_receiver_accepts_every_callback(app: TestApp) {
    let receiver = PythonReceiver::start();
    let w = world(&app).await;
    let root = &app.root_token;
    let (endpoint, secret, created) = create_endpoint(
        &app,
        root,
        json!({"facility_id": w.facility, "url": format!("http://127.0.0.1:{}/carepay", receiver.port),
               "event_types": ["payment.succeeded", "refund.succeeded", "reconciliation.discrepancy_found"],
               "ed25519": true}),
    )
    .await;
    let public_key = created["endpoint"]["public_key"].as_str().unwrap().to_owned();
    receiver.use_keys(&[&secret], &public_key);
    let worker = start_worker(&app, fast_settings());
    for (n, event_type) in [
        EventType::PaymentSucceeded,
        EventType::RefundSucceeded,
        EventType::ReconciliationDiscrepancyFound,
        EventType::PaymentSucceeded,
    ]
    .into_iter()
    .enumerate()
    {
        publish(&app, &w.facility, event_type, &format!("obj_{n}"), 1).await;
    }
    let verdicts = receiver.wait_for(4).await;
    for verdict in &verdicts {
        assert_eq!(verdict["ok"], true, "{verdict}");
        assert_eq!(verdict["v1a"], true, "{verdict}");
        assert_eq!(verdict["tampered_refused"], true, "{verdict}");
        assert_eq!(verdict["old_timestamp_refused"], true, "{verdict}");
        assert_eq!(verdict["stale_refused"], true, "{verdict}");
    }
    wait_for_items(&app, &format!("/v1/callback-endpoints/{endpoint}/deliveries"), "4 accepted at once", |items| {
        items.len() == 4 && items.iter().all(|d| d["status"] == "succeeded" && d["attempts"] == 1)
    })
    .await;

    // Rotation: a receiver still holding the old secret verifies during the overlap...
    let rotated = app
        .post(&format!("/v1/callback-endpoints/{endpoint}/rotate-secret"), root, json!({"overlap_seconds": 3600}))
        .await
        .expect(StatusCode::OK);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    publish(&app, &w.facility, EventType::RefundSucceeded, "obj_old_key", 1).await;
    let verdicts = receiver.wait_for(5).await;
    assert_eq!(verdicts[4]["ok"], true, "old secret during the overlap: {}", verdicts[4]);
    // ...and one that switched to the new secret verifies too.
    receiver.use_keys(&[&new_secret], &public_key);
    publish(&app, &w.facility, EventType::RefundSucceeded, "obj_new_key", 1).await;
    let verdicts = receiver.wait_for(6).await;
    assert_eq!(verdicts[5]["ok"], true, "new secret: {}", verdicts[5]);
    assert_eq!(verdicts.len(), 6, "every callback accepted at the first attempt");
    worker.stop().await;
}

backend_tests!(an_independent_standard_webhooks_receiver_accepts_every_callback);
