//! Settings that cannot work stop `carepay serve` at start, with a message naming the
//! setting and the limit: a retry schedule past its limits, a malformed allowed network, an
//! extra CA file that is missing or holds no certificate, an operator URL with a scheme that
//! cannot work or plain http to another host. A good extra CA file starts.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use carepay::store::Backend;

use crate::helpers::TestDatabase;
use crate::tls::TestCa;

/// Run `carepay serve` with `args` on a scratch SQLite file; it must exit unsuccessfully.
/// Returns what it wrote to stderr.
fn serve_refuses(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--sqlite-path"])
        .arg(dir.path().join("carepay.db"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CAREPAY_OPERATOR_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A server that started anyway is stopped, so the test fails instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("carepay serve {args:?} started although its settings cannot work");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    String::from_utf8(output.stderr).unwrap()
}

#[track_caller]
fn assert_says(stderr: &str, expected: &str) {
    assert!(stderr.contains(expected), "stderr does not say {expected:?}:\n{stderr}");
}

#[test]
fn a_retry_schedule_over_its_limits_is_refused_naming_the_limit() {
    let fifty_one = vec!["1000"; 51].join(",");
    let stderr = serve_refuses(&["--callback-retry-schedule-ms", &fifty_one]);
    assert_says(&stderr, "--callback-retry-schedule-ms");
    assert_says(&stderr, "at most 50 retries (51 attempts in all) are allowed; 51 given");
    let stderr = serve_refuses(&["--callback-retry-schedule-ms", "1000,604800001"]);
    assert_says(&stderr, "each delay must be at least 1 ms and at most 604800000 ms (7 days); 604800001 given");
    let stderr = serve_refuses(&["--callback-retry-schedule-ms", "1000,soon"]);
    assert_says(&stderr, "\"soon\" is not a number of milliseconds");
}

#[test]
fn an_allowed_network_that_is_not_a_network_is_refused() {
    let stderr = serve_refuses(&["--callback-allowed-network", "127.0.0.0/8,10.0.0.1/8"]);
    assert_says(&stderr, "--callback-allowed-network");
    assert_says(&stderr, "\"10.0.0.1/8\" has address bits set past /8");
    let stderr = serve_refuses(&["--callback-allowed-network", "intranet.example.cn"]);
    assert_says(&stderr, "\"intranet.example.cn\" is not an IP address or network (CIDR)");
}

#[test]
fn an_extra_ca_file_that_is_missing_or_holds_no_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let stderr = serve_refuses(&["--extra-ca-file", missing.to_str().unwrap()]);
    assert_says(&stderr, &format!("--extra-ca-file (CAREPAY_EXTRA_CA_FILE): cannot read {}", missing.display()));
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    let stderr = serve_refuses(&["--extra-ca-file", not_pem.to_str().unwrap()]);
    assert_says(&stderr, &format!("{} holds no PEM certificate", not_pem.display()));
}

#[test]
fn an_operator_url_that_cannot_work_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("operator.seed");
    std::fs::write(&seed, base64::engine::general_purpose::STANDARD.encode([5u8; 32])).unwrap();
    let key = format!("op-1={}", base64::engine::general_purpose::STANDARD.encode([6u8; 32]));
    let remote = |url: &str| {
        serve_refuses(&[
            "--operator-url",
            url,
            "--operator-public-key",
            &key,
            "--operator-signing-key-file",
            seed.to_str().unwrap(),
        ])
    };
    // `.invalid` never resolves: were the URL accepted, nothing would be reached.
    let stderr = remote("http://operator.invalid:8090");
    assert_says(&stderr, "--operator-url (CAREPAY_OPERATOR_URL)");
    assert_says(&stderr, "is plain http to another host: use https, or set --operator-allow-plain-http");
    let stderr = remote("ftp://operator.invalid/");
    assert_says(&stderr, "the scheme must be https or http, not ftp");
    let stderr = remote("https://user:secret@operator.invalid/");
    assert_says(&stderr, "must not carry a user name, password, query or fragment");
}

/// A CA file that holds a certificate is accepted: the server starts and serves.
async fn a_good_extra_ca_file_starts(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, TestCa::new("on-premises CA").pem()).unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([8u8; 32]);
    let (mut child, address) =
        super::crash::serve_with(&db.url, &key, &[("CAREPAY_EXTRA_CA_FILE", ca_file.to_str().unwrap())]);
    let health = reqwest::get(format!("{address}/healthz")).await.unwrap().text().await.unwrap();
    assert_eq!(health, "ok\n");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_extra_ca_file_starts_on_sqlite() {
    a_good_extra_ca_file_starts(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_extra_ca_file_starts_on_postgres() {
    a_good_extra_ca_file_starts(Backend::Postgres).await;
}
