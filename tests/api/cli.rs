//! The binary itself: the first admin token from the command line, and a graceful stop on
//! SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use carepay::store::Backend;
use reqwest::StatusCode;

use crate::helpers::{TEST_SECRET_KEYS, TestDatabase, spawn_app_with};

fn carepay() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_carepay"));
    // The test servers' keys: what the command line writes into the audit trail is keyed alike.
    command.env_remove("DATABASE_URL").env_remove("CAREPAY_LISTEN").env("CAREPAY_SECRET_KEY", TEST_SECRET_KEYS);
    command
}

async fn the_first_admin_token_comes_from_the_command_line(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let output = carepay()
        .args(["token", "create", "--role", "admin", "--label", "首个管理员", "--database-url", &db.url])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(token.starts_with("cpt_"));
    assert!(!String::from_utf8_lossy(&output.stderr).contains(&token), "the secret goes to stdout only");

    let app = spawn_app_with(db, Default::default()).await;
    let district = app.create_region(&token, None, "district", "吴江区").await;
    app.get(&format!("/v1/regions/{district}"), &token).await.expect(StatusCode::OK);

    let refused =
        carepay().args(["token", "create", "--role", "superuser", "--database-url", &app.db.url]).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown role"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_token_comes_from_the_command_line_on_sqlite() {
    the_first_admin_token_comes_from_the_command_line(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_admin_token_comes_from_the_command_line_on_postgres() {
    the_first_admin_token_comes_from_the_command_line(Backend::Postgres).await;
}

/// `carepay serve` on a free port with its SQLite file at `db_path`, and the address it
/// logged once listening.
fn serve_on(db_path: &std::path::Path) -> (std::process::Child, String) {
    let mut child = carepay()
        .args(["serve", "--listen", "127.0.0.1:0", "--sqlite-path"])
        .arg(db_path)
        .env("CAREPAY_LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["message"] == "carepay listening" {
            break event["address"].as_str().unwrap().to_owned();
        }
    };
    (child, address)
}

#[test]
fn serve_stops_cleanly_on_sigterm_and_bad_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("carepay.db");
    let (mut child, address) = serve_on(&db_path);
    let health = reqwest::blocking_get(&format!("http://{address}/healthz"));
    assert_eq!(health, "ok\n");
    assert!(db_path.exists(), "the SQLite file is where it was told to be");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit status {exit:?}");

    let bad =
        carepay().args(["serve", "--sqlite-path"]).arg(&db_path).env("CAREPAY_MAX_BODY_BYTES", "12").output().unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("max-body-bytes"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

mod reqwest {
    pub use ::reqwest::*;

    /// A tiny blocking GET for the one synchronous test, without reqwest's blocking feature.
    pub fn blocking_get(url: &str) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async { ::reqwest::get(url).await.unwrap().text().await.unwrap() })
    }
}

#[test]
fn the_openapi_document_can_be_cut_short_by_its_reader() {
    use std::io::Read as _;
    let mut child = carepay().arg("openapi").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe is closed here, as `| head` closes it, with most of the document unread.
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}: {}", output.status, String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&first).contains("openapi"), "{}", String::from_utf8_lossy(&first));
}

#[test]
fn each_subcommands_help_lists_only_what_it_uses() {
    let help = |args: &[&str]| {
        let output = carepay().args(args).arg("--help").output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    // The service's own settings (how payments share transactions, where it listens) are
    // serve's alone.
    let serve = help(&["serve"]);
    for flag in ["--group-commit-max-batch", "--listen", "--max-body-bytes"] {
        assert!(serve.contains(flag), "serve --help lacks {flag}");
    }
    for command in [&["migrate"][..], &["token", "create"], &["audit", "verify"], &["keys", "reseal"], &["demo"]] {
        let text = help(command);
        assert!(text.contains("--database-url"), "{command:?} --help lacks the database");
        for flag in ["--group-commit", "--listen", "--max-body-bytes"] {
            assert!(!text.contains(flag), "{command:?} --help lists {flag}:\n{text}");
        }
    }
}

/// The README's "First steps" block, run by bash as a newcomer pastes it (with this build's
/// binary for `cargo run --release --` and the test server's address for localhost:8080):
/// every step succeeds and the directory it describes exists.
#[test]
fn the_readmes_first_steps_run_as_pasted() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## First steps").expect("a First steps section")..];
    let start = section.find("```sh\n").expect("a shell block") + "```sh\n".len();
    let block = &section[start..start + section[start..].find("```").unwrap()];

    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("carepay.db");
    let (mut child, address) = serve_on(&db_path);
    let script = format!(
        "set -euo pipefail\n{}\nprintf '\\n%s %s %s\\n' \"$DISTRICT\" \"$TOWN\" \"$FACILITY\"\n",
        block.replace("cargo run --release --", env!("CARGO_BIN_EXE_carepay")).replace("localhost:8080", &address)
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("CAREPAY_SQLITE_PATH", &db_path)
        .env("CAREPAY_SECRET_KEY", TEST_SECRET_KEYS)
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let ids: Vec<&str> = stdout.lines().last().unwrap_or_default().split(' ').collect();
    assert!(ids.len() == 3 && ids[0].starts_with("reg_") && ids[1].starts_with("reg_"), "{stdout}");
    assert!(ids[2].starts_with("fac_"), "{stdout}");
    assert!(stdout.contains("\"label\":\"一号收银台\",\"status\":\"active\""), "the terminal: {stdout}");
    assert!(stdout.contains("\"role\":\"accountant\""), "the accountant's token: {stdout}");
}
