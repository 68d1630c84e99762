//! Secrets stay out of logs: a real `carepay serve` at debug level, driven through requests
//! that carry and return secrets and a citizen ID number, never writes one of them to its log.

use std::io::{BufRead as _, BufReader, Read as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

async fn no_token_or_signing_secret_reaches_the_log(backend: carepay::store::Backend) {
    let db = crate::helpers::TestDatabase::new(backend).await;
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("carepay.key");
    let carepay = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_carepay"));
        command
            .env_remove("DATABASE_URL")
            .env_remove("CAREPAY_LISTEN")
            .env_remove("CAREPAY_SECRET_KEY")
            .env("CAREPAY_SECRET_KEY_FILE", &key_file);
        command
    };
    let created = carepay().args(["token", "create", "--role", "admin", "--database-url", &db.url]).output().unwrap();
    assert!(created.status.success());
    let root = String::from_utf8(created.stdout).unwrap().trim().to_owned();

    let mut child = carepay()
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db.url])
        .env("CAREPAY_LOG_FORMAT", "json")
        .env("CAREPAY_LOG", "debug")
        .env("CAREPAY_CALLBACK_ALLOWED_NETWORKS", "127.0.0.0/8")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut log = String::new();
    let address = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "serve exited early");
        log.push_str(&line);
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
            && event["message"] == "carepay listening"
        {
            break event["address"].as_str().unwrap().to_owned();
        }
    };
    // Drain the log while the requests run: a full pipe would stall the server's logging.
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        rest
    });
    let base = format!("http://{address}");
    let http = reqwest::Client::new();
    let post = |path: &str, token: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}")).bearer_auth(token).json(&body).send()
    };
    let region: serde_json::Value =
        post("/v1/regions", &root, json!({"level": "district", "name": "吴江区"})).await.unwrap().json().await.unwrap();
    let region_id = region["id"].as_str().unwrap();
    let facility: serde_json::Value = post(
        "/v1/facilities",
        &root,
        json!({"region_id": region_id, "name": "助餐点", "kind": "meal_canteen", "merchant_wallet_id": "0021000000000001"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let issued: serde_json::Value =
        post("/v1/tokens", &root, json!({"role": "auditor", "label": "x"})).await.unwrap().json().await.unwrap();
    let auditor = issued["secret"].as_str().unwrap().to_owned();
    let endpoint: serde_json::Value = post(
        "/v1/callback-endpoints",
        &root,
        json!({"facility_id": facility["id"], "url": "http://127.0.0.1:9/hook", "event_types": ["payment.succeeded"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let whsec = endpoint["secret"].as_str().expect("whsec secret").to_owned();
    // Refused credentials, a near-miss of a real one included.
    let near_miss = format!("{}x", &auditor[..auditor.len() - 1]);
    for token in [near_miss.as_str(), "cpt_wrong"] {
        let refused = http.get(format!("{base}/v1/regions")).bearer_auth(token).send().await.unwrap();
        assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    }
    http.get(format!("{base}/v1/regions")).bearer_auth(&auditor).send().await.unwrap();

    // A citizen ID number uploaded in a batch file and revealed in clear.
    let citizen_id = crate::disbursement::citizen_id("32058419450315002");
    let programme: serde_json::Value = post(
        "/v1/subsidy-programmes",
        &root,
        json!({"region_id": region_id, "name": "高龄津贴", "funding_wallet_id": "0031000000000001", "budget": "100.00",
               "per_payment_cap": "10.00", "per_period_cap": "10.00", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let clerk: serde_json::Value =
        post("/v1/tokens", &root, json!({"role": "subsidy_clerk", "region_id": region_id, "label": "clerk"}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let clerk = clerk["secret"].as_str().unwrap().to_owned();
    let batch: serde_json::Value = http
        .post(format!(
            "{base}/v1/subsidy-programmes/{}/batches?period=2026-11&line_count=1&total=10.00",
            programme["id"].as_str().unwrap()
        ))
        .bearer_auth(&clerk)
        .header("idempotency-key", "log-1")
        .body(format!("姓名,身份证号,钱包编号,金额\n张三,{citizen_id},0021000000000101,10.00\n"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let revealed: serde_json::Value =
        post(&format!("/v1/subsidy-batches/{}/lines/1/reveal", batch["id"].as_str().unwrap()), &clerk, json!({}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(revealed["citizen_id"], citizen_id.as_str());

    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    for _ in 0..200 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log.push_str(&reader.join().unwrap());
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("carepay listening") && log.len() > 1_000, "the log was captured");
    for (what, secret) in [
        ("root token", root.as_str()),
        ("issued token", &auditor),
        ("refused token", &near_miss),
        ("whsec", &whsec),
        ("citizen ID number", &citizen_id),
    ] {
        assert!(!log.contains(secret), "the {what} appears in the log");
    }
    let whsec_body = whsec.trim_start_matches("whsec_");
    assert!(!log.contains(whsec_body), "the whsec key material appears in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_signing_secret_reaches_the_log_on_sqlite() {
    no_token_or_signing_secret_reaches_the_log(carepay::store::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_signing_secret_reaches_the_log_on_postgres() {
    no_token_or_signing_secret_reaches_the_log(carepay::store::Backend::Postgres).await;
}
