//! Settings that cannot work stop `carepay serve` at start, with a message naming the
//! setting and the limit.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
