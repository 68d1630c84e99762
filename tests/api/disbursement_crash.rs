//! `kill -9` of carepay at random points while it runs a 10,000-line batch, against the sandbox
//! operator running as its own process (so its books survive carepay's restarts): every payable
//! beneficiary is paid exactly once, and the ledger and the batch agree with the operator.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use carepay::store::Backend;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::TestDatabase;

const LINES: usize = 10_000;
const FUNDING_WALLET: &str = "0031000000000001";
/// Every 50th beneficiary has no wallet: definitely failed, never paid.
const UNPAYABLE_EVERY: usize = 50;
/// Longest the whole batch may take on a slow machine before the test gives up.
const DEADLINE: Duration = Duration::from_secs(600);

fn wallet(n: usize) -> String {
    format!("00210000{:08}", n)
}

/// Pseudo-random milliseconds in `range`, from fresh UUID bytes (no extra dependency).
fn random_ms(range: std::ops::Range<u64>) -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let value = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    range.start + value % (range.end - range.start)
}

fn read_line_with(lines: &mut impl Iterator<Item = std::io::Result<String>>, prefix: &str) -> String {
    loop {
        let line = lines.next().expect("process output").unwrap();
        if let Some(rest) = line.strip_prefix(prefix) {
            return rest.trim().to_owned();
        }
    }
}

struct Sandbox {
    child: Child,
    url: String,
    public_key: String,
}

fn sandbox(client_public_key: &str) -> Sandbox {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["sandbox-operator", "--listen", "127.0.0.1:0", "--client-public-key"])
        .arg(format!("carepay-1={client_public_key}"))
        .env("CAREPAY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sandbox operator");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = read_line_with(&mut lines, "sandbox operator listening on ");
    let key_id = read_line_with(&mut lines, "operator key id: ");
    let key = read_line_with(&mut lines, "operator public key (ed25519, base64): ");
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    Sandbox { child, url, public_key: format!("{key_id}={key}") }
}

fn serve(db_url: &str, secret_key: &str, signing_key_file: &std::path::Path, sandbox: &Sandbox) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", db_url])
        .env("CAREPAY_SECRET_KEY", secret_key)
        .env("CAREPAY_LOG_FORMAT", "json")
        .env("CAREPAY_OPERATOR_URL", &sandbox.url)
        .env("CAREPAY_OPERATOR_PUBLIC_KEYS", &sandbox.public_key)
        .env("CAREPAY_OPERATOR_SIGNING_KEY_FILE", signing_key_file)
        .env("CAREPAY_TRANSFER_LEASE_MS", "1000")
        .env("CAREPAY_TRANSFER_QUERY_DELAY_MS", "100")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start carepay");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("carepay printed its address").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if event["message"] == "carepay listening" {
            break event["address"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (child, format!("http://{address}"))
}

async fn a_batch_survives_kill_9_at_random_points_and_pays_everyone_once(backend: Backend) {
    let db = TestDatabase::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_key = BASE64.encode([9u8; 32]);
    let seed = [5u8; 32];
    let signing_key_file = dir.path().join("operator-signing.key");
    std::fs::write(&signing_key_file, BASE64.encode(seed)).unwrap();
    let key_pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    let public_key = BASE64.encode(ring::signature::KeyPair::public_key(&key_pair).as_ref());
    let mut operator = sandbox(&public_key);

    let http = reqwest::Client::new();
    let admin = |path: String, body: Value| http.post(format!("{}{path}", operator.url)).json(&body).send();
    let opened = admin(
        "/sandbox/wallets".into(),
        json!({"wallet_id": FUNDING_WALLET, "holder_name": "吴江区民政局", "tier": 1, "balance": "1000000.00"}),
    )
    .await
    .unwrap();
    assert!(opened.status().is_success());
    let mut file = String::from("姓名,身份证号,钱包编号,金额\n");
    for n in 0..LINES {
        let name = format!("老人{n}");
        if n % UNPAYABLE_EVERY != 0 {
            let body = json!({"wallet_id": wallet(n), "holder_name": name, "tier": 2, "balance": "0.00"});
            assert!(admin("/sandbox/wallets".into(), body).await.unwrap().status().is_success());
        }
        file.push_str(&format!("{name},{},{},10.00\n", citizen_id_unique(n), wallet(n)));
    }

    let output = Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["token", "create", "--role", "admin", "--database-url", &db.url])
        .env("CAREPAY_SECRET_KEY", &secret_key)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let root = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let (mut carepay, mut address) = serve(&db.url, &secret_key, &signing_key_file, &operator);
    let post = |address: &str, token: &str, path: &str, body: Value| {
        http.post(format!("{address}{path}")).bearer_auth(token).json(&body).send()
    };
    let region: Value = post(&address, &root, "/v1/regions", json!({"level": "district", "name": "吴江区"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let region = region["id"].as_str().unwrap().to_owned();
    let mut tokens = Vec::new();
    for role in ["subsidy_clerk", "subsidy_approver"] {
        let reply: Value =
            post(&address, &root, "/v1/tokens", json!({"role": role, "region_id": region, "label": role}))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        tokens.push(reply["secret"].as_str().unwrap().to_owned());
    }
    let (clerk, approver) = (tokens[0].clone(), tokens[1].clone());
    let programme: Value = post(
        &address,
        &root,
        "/v1/subsidy-programmes",
        json!({"region_id": region, "name": "高龄津贴", "funding_wallet_id": FUNDING_WALLET, "budget": "200000.00",
               "per_payment_cap": "500.00", "per_period_cap": "500.00", "starts_on": "2026-01-01", "ends_on": "2026-12-31"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let programme = programme["id"].as_str().unwrap().to_owned();
    let total = format!("{}.00", LINES * 10);
    let uploaded = http
        .post(format!(
            "{address}/v1/subsidy-programmes/{programme}/batches?period=2026-11&line_count={LINES}&total={total}"
        ))
        .bearer_auth(&clerk)
        .header("idempotency-key", "crash-1")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::CREATED);
    let batch: Value = uploaded.json().await.unwrap();
    let batch = batch["id"].as_str().unwrap().to_owned();
    let approved = post(&address, &approver, &format!("/v1/subsidy-batches/{batch}/approve"), json!({})).await.unwrap();
    assert_eq!(approved.status(), StatusCode::OK);
    let ran = post(&address, &clerk, &format!("/v1/subsidy-batches/{batch}/run"), json!({})).await.unwrap();
    assert_eq!(ran.status(), StatusCode::OK);

    // Kill it at random points while it pays, restart, repeat.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(random_ms(200..1_500))).await;
        carepay.kill().expect("SIGKILL carepay");
        carepay.wait().unwrap();
        (carepay, address) = serve(&db.url, &secret_key, &signing_key_file, &operator);
    }

    let started = Instant::now();
    let finished = loop {
        let reply: Value = http
            .get(format!("{address}/v1/subsidy-batches/{batch}"))
            .bearer_auth(&approver)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if reply["status"] == "completed" {
            break reply;
        }
        assert!(started.elapsed() < DEADLINE, "the batch did not finish: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let unpayable = LINES.div_ceil(UNPAYABLE_EVERY);
    assert_eq!(finished["progress"]["succeeded"]["lines"], (LINES - unpayable) as u64, "{finished}");
    assert_eq!(finished["progress"]["failed"]["lines"], unpayable as u64, "{finished}");

    // The operator paid each payable beneficiary exactly once, and took exactly that from the
    // funding wallet.
    for n in 0..LINES {
        if n % UNPAYABLE_EVERY == 0 {
            continue;
        }
        let view: Value = http
            .get(format!("{}/sandbox/wallets/{}", operator.url, wallet(n)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["balance"], "10.00", "wallet {n}: {view}");
    }
    let funding: Value = http
        .get(format!("{}/sandbox/wallets/{FUNDING_WALLET}", operator.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paid_fen = ((LINES - unpayable) * 1_000) as i64;
    let expected = carepay::domain::money::Amount::from_fen(100_000_000 - paid_fen).unwrap().to_string();
    assert_eq!(funding["balance"], expected.as_str());

    // The ledger agrees with the operator and with the batch.
    let store = db.store().await;
    assert!(store.verify_ledger().await.unwrap().is_empty());
    let programme_id = carepay::domain::ids::ProgrammeId::parse(&programme).unwrap();
    let budget =
        store.account_totals(&carepay::store::disbursement::budget_account(&programme_id)).await.unwrap().unwrap();
    assert_eq!(budget.debits_fen, paid_fen);

    let _ = Command::new("kill").args(["-TERM", &carepay.id().to_string()]).status();
    carepay.wait().unwrap();
    operator.child.kill().unwrap();
    operator.child.wait().unwrap();
}

/// Distinct valid ID numbers for up to 10,000 people: the sequence and birth day vary.
fn citizen_id_unique(n: usize) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let day = 1 + (n / 1000) % 28;
    let first17 = format!("3205841950{:02}{:02}{:03}", 1 + (n / 28_000) % 12, day, n % 1000);
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_kill_9_on_sqlite() {
    a_batch_survives_kill_9_at_random_points_and_pays_everyone_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_survives_kill_9_on_postgres() {
    a_batch_survives_kill_9_at_random_points_and_pays_everyone_once(Backend::Postgres).await;
}
