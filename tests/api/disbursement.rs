//! Subsidy disbursement through HTTP against the in-process sandbox operator: upload (GB18030
//! and UTF-8), idempotent re-upload, all-or-nothing validation, four-eyes approval, execution
//! with classified failures, re-issue, ledger and result file.

use carepay::domain::money::Amount;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::TestApp;

pub(crate) const FUNDING_WALLET: &str = "0031000000000001";

/// A valid citizen ID number from its first 17 digits.
pub(crate) fn citizen_id(first17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

fn yuan(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

pub(crate) struct Office {
    pub(crate) region: String,
    pub(crate) clerk: String,
    pub(crate) approver: String,
    pub(crate) programme: String,
}

/// A district with a clerk, an approver and a programme paying from a funded wallet.
pub(crate) async fn office(app: &TestApp) -> Office {
    let root = &app.root_token;
    let region = app.create_region(root, None, "district", "吴江区").await;
    let clerk = app.issue_token(root, "subsidy_clerk", Some(&region)).await;
    let approver = app.issue_token(root, "subsidy_approver", Some(&region)).await;
    app.sandbox.open_wallet(FUNDING_WALLET, "吴江区民政局", 1, yuan("100000.00")).unwrap();
    let programme = app
        .post(
            "/v1/subsidy-programmes",
            root,
            json!({
                "region_id": region, "name": "高龄津贴", "funding_wallet_id": FUNDING_WALLET,
                "budget": "10000.00", "per_payment_cap": "500.00", "per_period_cap": "500.00",
                "designated_merchants": ["0021000000009999"], "starts_on": "2026-01-01", "ends_on": "2026-12-31"
            }),
        )
        .await
        .expect(StatusCode::CREATED)
        .id();
    Office { region, clerk, approver, programme }
}

pub(crate) async fn upload(
    app: &TestApp,
    office: &Office,
    key: &str,
    file: Vec<u8>,
    lines: u64,
    total: &str,
) -> (StatusCode, Value) {
    let url = format!(
        "{}/v1/subsidy-programmes/{}/batches?period=2026-11&line_count={lines}&total={total}",
        app.address, office.programme
    );
    let response = app
        .client
        .request(Method::POST, url)
        .bearer_auth(&office.clerk)
        .header("idempotency-key", key)
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
}

pub(crate) async fn wait_for_status(app: &TestApp, token: &str, batch: &str, status: &str) -> Value {
    // Ends a test whose batch never gets there (a worker failing every round) instead of
    // hanging it; never a measure of speed.
    const MAX_POLLS: usize = 2_400;
    for _ in 0..MAX_POLLS {
        let reply = app.get(&format!("/v1/subsidy-batches/{batch}"), token).await.expect(StatusCode::OK);
        if reply.body["status"] == status {
            return reply.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("batch {batch} did not become {status}");
}

pub(crate) fn start_worker(app: &TestApp) {
    let mut worker_app = app.app.clone();
    worker_app.disbursement.query_delay_ms = 50;
    tokio::spawn(carepay::disbursement::worker::run(worker_app, std::future::pending()));
}

async fn a_gb18030_batch_is_paid_once_per_person_with_failures_classified_and_reissued(app: TestApp) {
    let office = office(&app).await;
    start_worker(&app);
    let receiver = crate::callbacks::receiver::Receiver::accepting().await;
    crate::callbacks::create_endpoint(
        &app,
        &app.root_token,
        json!({"office_region_id": office.region, "url": receiver.url("/subsidy"),
               "event_types": ["transfer.succeeded", "transfer.failed"]}),
    )
    .await;
    let _callbacks = crate::callbacks::start_worker(&app, crate::callbacks::fast_settings());
    let ids = [
        citizen_id("32058419450315002"),
        citizen_id("32058419520708008"),
        citizen_id("32058419600101003"),
        citizen_id("32058419381122004"),
    ];
    app.sandbox.open_wallet("0021000000000101", "张三", 2, Amount::ZERO).unwrap();
    app.sandbox.open_wallet("0021000000000102", "李四", 2, Amount::ZERO).unwrap();
    app.sandbox.open_wallet("0021000000000103", "王秀英", 2, Amount::ZERO).unwrap();
    app.sandbox.freeze("0021000000000103").unwrap();
    let text = format!(
        "姓名,身份证号,钱包编号,金额,备注\r\n\
         张三,{},0021000000000101,300.00,十一月\r\n\
         李四四,{},0021000000000102,200.00,十一月\r\n\
         王秀英,{},0021000000000103,100.00,十一月\r\n\
         赵六,{},0021000000000404,50.50,十一月\r\n",
        ids[0], ids[1], ids[2], ids[3]
    );
    let file = encoding_rs::GB18030.encode(&text).0.into_owned();
    let (status, batch) = upload(&app, &office, "nov-1", file.clone(), 4, "650.50").await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    assert_eq!(batch["encoding"], "gb18030");

    // The same file under the same key is the same batch.
    let (status, again) = upload(&app, &office, "nov-1", file, 4, "650.50").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["id"], batch["id"]);

    // Four eyes: the uploader's role cannot approve.
    app.post(&format!("/v1/subsidy-batches/{batch_id}/approve"), &office.clerk, json!({}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    app.post(&format!("/v1/subsidy-batches/{batch_id}/approve"), &office.approver, json!({}))
        .await
        .expect(StatusCode::OK);
    app.post(&format!("/v1/subsidy-batches/{batch_id}/run"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    let done = wait_for_status(&app, &office.approver, &batch_id, "completed").await;
    assert_eq!(done["progress"]["succeeded"]["lines"], 1, "{done}");
    assert_eq!(done["progress"]["failed"]["lines"], 3, "{done}");

    let lines =
        app.get(&format!("/v1/subsidy-batches/{batch_id}/lines"), &office.approver).await.expect(StatusCode::OK);
    let codes: Vec<Value> = lines.body.as_array().unwrap().iter().map(|l| l["fail_code"].clone()).collect();
    assert_eq!(codes, [Value::Null, json!("NAME_MISMATCH"), json!("WALLET_FROZEN"), json!("WALLET_NOT_FOUND")]);
    assert_eq!(lines.body[0]["name"], "张*");
    assert_eq!(lines.body[0]["citizen_id"], format!("{}***********{}", &ids[0][..3], &ids[0][14..]));

    // Re-issue the name mismatch with the wallet holder's name.
    let reissued = app
        .post(
            &format!("/v1/subsidy-batches/{batch_id}/lines/2/reissue"),
            &office.clerk,
            json!({"payee_name": "李四", "wallet_id": "0021000000000102"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(reissued.body["reissue_of_seq"], 2);
    let new_seq = reissued.body["seq"].as_u64().unwrap();
    loop {
        let lines = app
            .get(&format!("/v1/subsidy-batches/{batch_id}/lines?after={}", new_seq - 1), &office.approver)
            .await
            .expect(StatusCode::OK);
        if lines.body[0]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // The office's own system heard of every outcome, each once, the re-issue included.
    let received = receiver.wait_until("five transfer callbacks", |received| received.len() >= 5).await;
    let mut outcomes: Vec<(String, u64, String, u64, Value)> = received
        .iter()
        .map(|callback| {
            let body = callback.json();
            let data = &body["data"];
            assert_eq!(data["batch_id"], batch_id.as_str(), "{body}");
            assert_eq!(data["object_id"], data["out_transfer_no"], "{body}");
            for id in &ids {
                assert!(!callback.body.contains(id.as_str()), "an ID number in a callback: {body}");
            }
            (
                body["type"].as_str().unwrap().to_owned(),
                data["seq"].as_u64().unwrap(),
                data["amount"].as_str().unwrap().to_owned(),
                data["file_line"].as_u64().unwrap(),
                data["fail_code"].clone(),
            )
        })
        .collect();
    outcomes.sort_by_key(|outcome| outcome.1);
    let failed = |seq, amount: &str, file_line, code: &str| {
        (String::from("transfer.failed"), seq, amount.to_owned(), file_line, json!(code))
    };
    assert_eq!(
        outcomes,
        [
            (String::from("transfer.succeeded"), 1, "300.00".to_owned(), 2, Value::Null),
            failed(2, "200.00", 3, "NAME_MISMATCH"),
            failed(3, "100.00", 4, "WALLET_FROZEN"),
            failed(4, "50.50", 5, "WALLET_NOT_FOUND"),
            // The re-issue keeps the line of the file it corrects.
            (String::from("transfer.succeeded"), new_seq, "200.00".to_owned(), 3, Value::Null),
        ]
    );
    let frozen = received.iter().map(|c| c.json()).find(|body| body["data"]["seq"] == 3).unwrap();
    assert_eq!(frozen["data"]["advice_zh"], "钱包已冻结，请联系运营机构");
    let paid = received.iter().map(|c| c.json()).find(|body| body["data"]["seq"] == 1).unwrap();
    assert!(paid["data"]["succeeded_at"].as_str().unwrap().ends_with("+08:00"), "{paid}");

    // The operator paid each payable person exactly once.
    assert_eq!(app.sandbox.wallet("0021000000000101").unwrap().balance.fen(), 30_000);
    assert_eq!(app.sandbox.wallet("0021000000000102").unwrap().balance.fen(), 20_000);
    assert_eq!(app.sandbox.wallet(FUNDING_WALLET).unwrap().balance.fen(), 10_000_000 - 50_000);
    assert!(app.app.store.verify_ledger().await.unwrap().is_empty());
    let budget = carepay::store::disbursement::budget_account(
        &carepay::domain::ids::ProgrammeId::parse(&office.programme).unwrap(),
    );
    let totals = app.app.store.account_totals(&budget).await.unwrap().unwrap();
    assert_eq!(totals.balance_fen(), 1_000_000 - 50_000);
    let programme = app.get(&format!("/v1/subsidy-programmes/{}", office.programme), &office.approver).await;
    assert_eq!(programme.body["committed"], "500.00", "{}", programme.text);

    // The result file answers in GB18030 with ID numbers masked.
    let result = app
        .client
        .get(format!("{}/v1/subsidy-batches/{batch_id}/result", app.address))
        .bearer_auth(&office.approver)
        .send()
        .await
        .unwrap();
    assert_eq!(result.headers()["content-type"], "text/csv; charset=GB18030");
    let bytes = result.bytes().await.unwrap();
    let (text, _, bad) = encoding_rs::GB18030.decode(&bytes);
    assert!(!bad);
    assert!(text.starts_with("序号,原行号,姓名,身份证号"), "{text}");
    assert!(text.contains("钱包已冻结"), "{text}");
    assert!(text.contains("已重新发放"), "{text}");
    for id in &ids {
        assert!(!text.contains(id.as_str()), "an ID number in clear in the result file");
    }

    // History: who uploaded, approved, ran, and the service completing it.
    let history = app.get(&format!("/v1/subsidy-batches/{batch_id}/history"), &office.approver).await;
    let steps: Vec<&str> = history.body.as_array().unwrap().iter().map(|s| s["to"].as_str().unwrap()).collect();
    assert_eq!(steps, ["draft", "approved", "running", "completed"]);
    let _ = office.region;
}

async fn a_file_with_errors_is_refused_whole_with_every_problem_listed_and_leaves_no_rows(app: TestApp) {
    let office = office(&app).await;
    let good = citizen_id("32058419450315002");
    let mut text = String::from("name,citizen_id,wallet_id,amount\n");
    text.push_str(&format!("Zhang San,{good},0021000000000101,300.00\n"));
    text.push_str(&format!("Zhang San again,{good},0021000000000102,100.00\n"));
    text.push_str("Li Si,320584194503150020,12345,600.00\n");
    for _ in 0..3 {
        text.push_str("x,1,2,3\n");
    }
    let (status, body) = upload(&app, &office, "bad-1", text.into_bytes(), 6, "1000.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["code"], "BATCH_FILE_INVALID");
    assert_eq!(body["errors_listed_limit"], 1000);
    let found: Vec<(u64, String)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap_or(0), e["code"].as_str().unwrap().to_owned()))
        .collect();
    assert!(found.contains(&(4, "CITIZEN_ID_CHECK_DIGIT".to_owned())), "{body}");
    assert!(found.contains(&(4, "INVALID_WALLET_ID".to_owned())), "{body}");
    assert!(found.contains(&(4, "OVER_PAYMENT_CAP".to_owned())), "{body}");
    assert!(found.contains(&(3, "DUPLICATE_IN_BATCH".to_owned())), "{body}");
    // "x,1,2,3": a bad ID number and a bad wallet id each (3 is a valid amount).
    assert_eq!(found.iter().filter(|(line, _)| *line >= 5).count(), 6, "{body}");
    assert_eq!(body["errors_total"], 10, "{body}");
    assert!(!body.to_string().contains(&good[3..14]));

    // Only the duplicate left: found by the store, still refused whole.
    let text = format!(
        "name,citizen_id,wallet_id,amount\nZhang San,{good},0021000000000101,300.00\nZhang,{good},0021000000000102,100.00\n"
    );
    let (status, body) = upload(&app, &office, "bad-2", text.into_bytes(), 2, "400.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["code"], "DUPLICATE_IN_BATCH", "{body}");
    assert_eq!(body["errors"][0]["line"], 3);

    // A month outside the programme's active dates is refused before the file is read.
    let url = format!(
        "{}/v1/subsidy-programmes/{}/batches?period=2027-01&line_count=1&total=1.00",
        app.address, office.programme
    );
    let outside = app
        .client
        .post(url)
        .bearer_auth(&office.clerk)
        .header("idempotency-key", "late")
        .body("name,citizen_id,wallet_id,amount\n")
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(outside.text().await.unwrap().contains("PERIOD_OUTSIDE_PROGRAMME"));

    let pool = app.db.raw_pool().await;
    for table in [
        "subsidy_batches",
        "subsidy_lines",
        "subsidy_batch_steps",
        "subsidy_line_chunks",
        "subsidy_batch_people",
        "subsidy_period_gates",
    ] {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(count, 0, "{table} has rows after refused files");
    }

    // A correct file for the same person: accepted; the person cannot be in a second open batch.
    let text = format!("name,citizen_id,wallet_id,amount\nZhang San,{good},0021000000000101,300.00\n");
    let (status, accepted) = upload(&app, &office, "ok-1", text.clone().into_bytes(), 1, "300.00").await;
    assert_eq!(status, StatusCode::CREATED);
    // The office's command line shows it with a progress bar.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["batch", "--url", &app.address, "--token", &office.clerk, "status"])
        .arg(accepted["id"].as_str().unwrap())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let bar = String::from_utf8_lossy(&output.stderr);
    assert!(bar.contains("0/1 lines") && bar.trim_end().ends_with("draft"), "{bar}");
    let (status, body) = upload(&app, &office, "ok-2", text.into_bytes(), 1, "300.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["code"], "IN_OTHER_OPEN_BATCH", "{body}");
    // The stored ID number is a keyed digest and a sealed copy, never the number: not in the
    // chunk's lines, its sealed list, or the batch's people.
    let chunks: Vec<(Vec<u8>, String)> =
        sqlx::query_as("SELECT lines, citizen_ids_sealed FROM subsidy_line_chunks").fetch_all(&pool).await.unwrap();
    assert_eq!(chunks.len(), 1);
    let people: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT entries FROM subsidy_batch_people").fetch_all(&pool).await.unwrap();
    assert_eq!(people.len(), 1);
    let middle = &good.as_bytes()[3..14];
    for bytes in chunks
        .iter()
        .flat_map(|(lines, sealed)| [lines.as_slice(), sealed.as_bytes()])
        .chain(people.iter().map(Vec::as_slice))
    {
        assert!(!bytes.windows(middle.len()).any(|w| w == middle), "an ID number in clear in storage");
    }
}

/// Distinct valid ID numbers for up to 100,000 people.
fn person(n: usize) -> String {
    citizen_id(&format!("3205841950{:02}{:02}{:03}", 1 + (n / 28_000) % 12, 1 + (n / 1000) % 28, n % 1000))
}

fn file_of(people: impl IntoIterator<Item = (usize, &'static str)>) -> Vec<u8> {
    let mut text = String::from("name,citizen_id,wallet_id,amount\n");
    for (n, amount) in people {
        text.push_str(&format!("老人{n},{},{},{amount}\n", person(n), wallet(n)));
    }
    text.into_bytes()
}

fn wallet(n: usize) -> String {
    format!("00210000{n:08}")
}

/// A batch of more lines than one chunk holds reads as one sequence: pending lines have no row
/// of their own until a worker claims them, pages run across the chunk boundary, a number in
/// the second chunk is revealed, and the result file lists every line.
async fn a_batch_of_several_chunks_lists_counts_and_reveals_lines_across_chunk_boundaries(app: TestApp) {
    const LINES: usize = 4_100;
    let office = office(&app).await;
    let mut text = String::from("name,citizen_id,wallet_id,amount\n");
    for n in 0..LINES {
        text.push_str(&format!("老人{n},{},{},1.00\n", person(n), wallet(n)));
        if n == 10 {
            // Excel's empty rows are not lines, but they count in the file's line numbers.
            text.push_str(",,,\n");
        }
    }
    let (status, batch) = upload(&app, &office, "big", text.into_bytes(), LINES as u64, "4100.00").await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/subsidy-batches/{batch_id}");

    let pool = app.db.raw_pool().await;
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subsidy_lines").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 0, "no line has a row before a worker claims it");
    let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subsidy_line_chunks").fetch_one(&pool).await.unwrap();
    assert_eq!(chunks, 2);
    let progress = app.get(&path, &office.clerk).await.expect(StatusCode::OK);
    assert_eq!(progress.body["progress"]["pending"]["lines"], LINES, "{}", progress.text);
    assert_eq!(progress.body["progress"]["pending"]["amount"], "4100.00", "{}", progress.text);

    let page = app.get(&format!("{path}/lines?after=4090&limit=20"), &office.clerk).await.expect(StatusCode::OK);
    let lines = page.body.as_array().unwrap();
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (4091..=4100).collect::<Vec<_>>());
    let line = &lines[6];
    assert_eq!(line["seq"], 4097);
    // Line 1 is the header and one empty row came after the eleventh person.
    assert_eq!(line["file_line"], 4097 + 2);
    assert_eq!(line["name"], "老*****");
    assert_eq!(line["wallet_id"], wallet(4096));
    assert_eq!(line["status"], "pending");
    assert_eq!(line["out_transfer_no"], format!("D{}-4097", &batch_id[4..]));
    let id = person(4096);
    assert_eq!(line["citizen_id"], format!("{}***********{}", &id[..3], &id[14..]));
    let first = app.get(&format!("{path}/lines?limit=12"), &office.clerk).await.expect(StatusCode::OK);
    assert_eq!(first.body[11]["file_line"], 14, "{}", first.text);

    let revealed =
        app.post(&format!("{path}/lines/4097/reveal"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    assert_eq!(revealed.body["citizen_id"], id.as_str());
    app.post(&format!("{path}/lines/4101/reveal"), &office.clerk, json!({}))
        .await
        .expect_problem(StatusCode::NOT_FOUND, "NOT_FOUND");

    let result = app
        .client
        .get(format!("{}{path}/result", app.address))
        .bearer_auth(&office.clerk)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(result.lines().count(), LINES + 1);
    assert!(
        result
            .lines()
            .nth(4097)
            .unwrap()
            .starts_with(&format!("4097,4099,老人4096,{}", line["citizen_id"].as_str().unwrap())),
        "{}",
        result.lines().nth(4097).unwrap()
    );
}

/// Two uploads naming the same people at the same time: one batch holds them, the other is
/// refused with every line named, however the two interleave (they serialise on the
/// programme and period).
async fn two_concurrent_uploads_naming_the_same_people_make_one_batch(app: TestApp) {
    const LINES: usize = 3_000;
    let office = office(&app).await;
    let file = file_of((0..LINES).map(|n| (n, "1.00")));
    let total = "3000.00";
    let (a, b) = tokio::join!(
        upload(&app, &office, "same-a", file.clone(), LINES as u64, total),
        upload(&app, &office, "same-b", file, LINES as u64, total),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY], "{} / {}", a.1, b.1);
    let refused = if a.0 == StatusCode::CREATED { b.1 } else { a.1 };
    assert_eq!(refused["errors_total"], LINES, "{refused}");
    assert_eq!(refused["errors"][0]["code"], "IN_OTHER_OPEN_BATCH", "{refused}");
    assert_eq!(refused["errors"][0]["line"], 2, "{refused}");
}

/// Other batches of the programme and period hold their people: an open batch at all, a
/// completed one up to the period cap, a line that definitely failed not at all, and a
/// re-issued line again.
async fn people_of_other_batches_count_until_their_line_fails_and_again_once_reissued(app: TestApp) {
    let office = office(&app).await;
    start_worker(&app);
    // Person 0 is paid; person 1 has no wallet, so that line fails.
    app.sandbox.open_wallet(&wallet(0), "老人0", 2, Amount::ZERO).unwrap();
    app.sandbox.open_wallet(&wallet(2), "老人2", 2, Amount::ZERO).unwrap();
    let (status, first) = upload(&app, &office, "p-1", file_of([(0, "300.00"), (1, "300.00")]), 2, "600.00").await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let first = first["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/subsidy-batches/{first}");
    app.post(&format!("{path}/approve"), &office.approver, json!({})).await.expect(StatusCode::OK);
    app.post(&format!("{path}/run"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    let done = wait_for_status(&app, &office.clerk, &first, "completed").await;
    assert_eq!(done["progress"]["failed"]["lines"], 1, "{done}");

    // 300 + 300 is over the cap of 500 for the paid person; the failed one is free again.
    let (status, body) =
        upload(&app, &office, "p-2", file_of([(0, "300.00"), (1, "300.00"), (2, "50.00")]), 3, "650.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors_total"], 1, "{body}");
    assert_eq!(
        (body["errors"][0]["line"].as_u64(), body["errors"][0]["code"].as_str()),
        (Some(2), Some("OVER_PERIOD_CAP"))
    );
    let (status, second) =
        upload(&app, &office, "p-3", file_of([(0, "200.00"), (1, "300.00"), (2, "50.00")]), 3, "550.00").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second = second["id"].as_str().unwrap().to_owned();

    // An open batch holds its people whatever the amounts.
    let (status, body) = upload(&app, &office, "p-4", file_of([(3, "1.00"), (2, "1.00")]), 2, "2.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors_total"], 1, "{body}");
    assert_eq!(
        (body["errors"][0]["line"].as_u64(), body["errors"][0]["code"].as_str()),
        (Some(3), Some("IN_OTHER_OPEN_BATCH"))
    );

    // Cancelled, the second batch holds nobody; the failed line, re-issued, holds its person.
    app.post(&format!("/v1/subsidy-batches/{second}/cancel"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    app.sandbox.open_wallet(&wallet(1), "老人1", 2, Amount::ZERO).unwrap();
    app.post(&format!("{path}/lines/2/reissue"), &office.clerk, json!({"payee_name": "老人1", "wallet_id": wallet(1)}))
        .await
        .expect(StatusCode::CREATED);
    let (status, body) = upload(&app, &office, "p-5", file_of([(1, "300.00"), (2, "500.00")]), 2, "800.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors_total"], 1, "{body}");
    assert_eq!(
        (body["errors"][0]["line"].as_u64(), body["errors"][0]["code"].as_str()),
        (Some(2), Some("OVER_PERIOD_CAP"))
    );
    loop {
        let lines = app.get(&format!("{path}/lines?after=2"), &office.clerk).await.expect(StatusCode::OK);
        if lines.body[0]["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(app.sandbox.wallet(&wallet(1)).unwrap().balance.fen(), 30_000);
    assert!(app.app.store.verify_ledger().await.unwrap().is_empty());
}

async fn batches_outside_the_callers_region_look_missing(app: TestApp) {
    let office = office(&app).await;
    let root = &app.root_token;
    let other = app.create_region(root, None, "district", "昆山市").await;
    let other_approver = app.issue_token(root, "subsidy_approver", Some(&other)).await;
    let good = citizen_id("32058419450315002");
    let text = format!("name,citizen_id,wallet_id,amount\nZhang San,{good},0021000000000101,300.00\n");
    let (_, batch) = upload(&app, &office, "k", text.into_bytes(), 1, "300.00").await;
    let id = batch["id"].as_str().unwrap();
    let outside = app.post(&format!("/v1/subsidy-batches/{id}/approve"), &other_approver, json!({})).await;
    let missing =
        app.post("/v1/subsidy-batches/bat_0192f1ab0192f1ab0192f1ab0192f1ab/approve", &other_approver, json!({})).await;
    assert_eq!((outside.status, outside.code().to_owned()), (missing.status, missing.code().to_owned()));
    assert_eq!(outside.code(), "OUT_OF_SCOPE");
}

/// Two workers (as two instances would) share a batch; the office pauses it part way, nothing
/// more is sent while it is paused, it resumes, and when it completes the office's endpoint
/// gets one signed `batch.completed` with the totals. Everyone is paid exactly once.
async fn a_paused_batch_sends_nothing_until_resumed_and_its_completion_reaches_the_office(app: TestApp) {
    const LINES: usize = 60;
    let office = office(&app).await;
    let receiver = crate::callbacks::receiver::Receiver::accepting().await;
    let (_, _, _) = crate::callbacks::create_endpoint(
        &app,
        &app.root_token,
        json!({"office_region_id": office.region, "url": receiver.url("/subsidy"), "event_types": ["batch.completed"]}),
    )
    .await;
    let _callbacks = crate::callbacks::start_worker(&app, crate::callbacks::fast_settings());
    for _ in 0..2 {
        let mut worker_app = app.app.clone();
        worker_app.disbursement.query_delay_ms = 20;
        worker_app.disbursement.rate_per_s = 40;
        worker_app.disbursement.claim_batch = 4;
        worker_app.disbursement.concurrency = 2;
        tokio::spawn(carepay::disbursement::worker::run(worker_app, std::future::pending()));
    }
    let mut text = String::from("name,citizen_id,wallet_id,amount,memo\n");
    for n in 0..LINES {
        let wallet = format!("00210000000{n:05}");
        app.sandbox.open_wallet(&wallet, &format!("老人{n}"), 2, Amount::ZERO).unwrap();
        text.push_str(&format!("老人{n},{},{wallet},10.00,十一月\n", citizen_id(&format!("32058419450315{n:03}"))));
    }
    let (status, batch) = upload(&app, &office, "paused", text.into_bytes(), LINES as u64, "600.00").await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch_id = batch["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/subsidy-batches/{batch_id}");
    app.post(&format!("{path}/approve"), &office.approver, json!({})).await.expect(StatusCode::OK);
    app.post(&format!("{path}/run"), &office.clerk, json!({})).await.expect(StatusCode::OK);

    loop {
        let now = app.get(&path, &office.clerk).await.expect(StatusCode::OK);
        if now.body["progress"]["succeeded"]["lines"].as_u64().unwrap() >= 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.post(&format!("{path}/pause"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    // Lines already sent are still settled; then nothing moves.
    let settled = loop {
        let now = app.get(&path, &office.clerk).await.expect(StatusCode::OK);
        if now.body["progress"]["sending"]["lines"] == 0 {
            break now.body["progress"]["succeeded"]["lines"].as_u64().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let paused = app.get(&path, &office.clerk).await.expect(StatusCode::OK);
    assert_eq!(paused.body["status"], "paused");
    assert_eq!(paused.body["progress"]["succeeded"]["lines"].as_u64().unwrap(), settled, "{}", paused.text);
    assert!(settled < LINES as u64, "the batch finished before it could be paused");
    let paid_while_paused = (0..LINES)
        .filter(|n| app.sandbox.wallet(&format!("00210000000{n:05}")).unwrap().balance.fen() > 0)
        .count() as u64;
    assert_eq!(paid_while_paused, settled);

    app.post(&format!("{path}/run"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    let done = wait_for_status(&app, &office.clerk, &batch_id, "completed").await;
    assert_eq!(done["progress"]["succeeded"]["lines"], LINES, "{done}");
    assert_eq!(done["progress"]["succeeded"]["amount"], "600.00", "{done}");
    for n in 0..LINES {
        let balance = app.sandbox.wallet(&format!("00210000000{n:05}")).unwrap().balance.fen();
        assert_eq!(balance, 1_000, "wallet {n} paid {balance} fen");
    }
    assert_eq!(app.sandbox.wallet(FUNDING_WALLET).unwrap().balance.fen(), 10_000_000 - 60_000);
    assert!(app.app.store.verify_ledger().await.unwrap().is_empty());

    // A late or repeated answer for lines already final (a worker whose lease lapsed, a
    // TRANSFER.* notification) moves nothing and books nothing, in bulk or alone.
    let lines = app.get(&format!("{path}/lines"), &office.clerk).await.expect(StatusCode::OK);
    let out_nos: Vec<String> =
        lines.body.as_array().unwrap().iter().map(|l| l["out_transfer_no"].as_str().unwrap().to_owned()).collect();
    let now = carepay::domain::time::UnixMs::now();
    let again: Vec<(String, carepay::store::disbursement::LineOutcome)> = out_nos
        .iter()
        .map(|no| (no.clone(), carepay::store::disbursement::LineOutcome::Succeeded { transfer_no: None, at: now }))
        .collect();
    assert_eq!(app.app.store.finish_lines(&again, now).await.unwrap(), 0);
    let failed = carepay::store::disbursement::LineOutcome::Failed {
        transfer_no: None,
        fail_code: String::from("WALLET_FROZEN"),
    };
    assert!(!app.app.store.finish_line(&out_nos[0], &failed, now).await.unwrap());
    let budget = carepay::store::disbursement::budget_account(
        &carepay::domain::ids::ProgrammeId::parse(&office.programme).unwrap(),
    );
    assert_eq!(app.app.store.account_totals(&budget).await.unwrap().unwrap().balance_fen(), 1_000_000 - 60_000);
    let programme = app.get(&format!("/v1/subsidy-programmes/{}", office.programme), &office.clerk).await;
    assert_eq!(programme.body["committed"], "600.00", "{}", programme.text);
    assert!(app.app.store.verify_ledger().await.unwrap().is_empty());

    let received = receiver.wait_until("batch.completed", |r| !r.is_empty()).await;
    assert_eq!(received.len(), 1);
    let event = received[0].json();
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(event["data"]["batch_id"], batch_id.as_str());
    assert_eq!(event["data"]["succeeded_lines"], LINES);
    assert_eq!(event["data"]["succeeded_amount"], "600.00");
    assert_eq!(event["data"]["failed_lines"], 0);
    let history = app.get(&format!("{path}/history"), &office.approver).await;
    let steps: Vec<&str> = history.body.as_array().unwrap().iter().map(|s| s["to"].as_str().unwrap()).collect();
    assert_eq!(steps, ["draft", "approved", "running", "paused", "running", "completed"]);
}

/// A batch stored line by line, as uploads did before chunks (migration 0010), still reads,
/// runs, reveals and holds its people: every line a full row, no chunk.
async fn a_batch_stored_line_by_line_before_chunks_still_runs_and_holds_its_people(app: TestApp) {
    let office = office(&app).await;
    start_worker(&app);
    let secrets = crate::helpers::test_secrets();
    let batch = carepay::domain::ids::BatchId::generate();
    let pool = app.db.raw_pool().await;
    let now = carepay::domain::time::UnixMs::now().0;
    sqlx::query(
        "INSERT INTO subsidy_batches (id, programme_id, period, idempotency_key, upload_sha256, uploaded_by, encoding, \
         chinese_headers, status, line_count, total_fen, version, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, '2026-11', 'before-chunks', '', 'tok_00000000000000000000000000000001', 'utf8', 0, 'draft', \
         2, 60000, 1, $3, $3)",
    )
    .bind(batch.as_str())
    .bind(office.programme.as_str())
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    for n in 0..2usize {
        let seq = n as u64 + 1;
        let id = person(n);
        let out_no = carepay::domain::batch::out_transfer_no(&batch, seq);
        app.sandbox.open_wallet(&wallet(n), &format!("老人{n}"), 2, Amount::ZERO).unwrap();
        sqlx::query(
            "INSERT INTO subsidy_lines (batch_id, seq, file_line, generation, payee_name, name_masked, citizen_id_hmac, \
             citizen_id_sealed, citizen_id_masked, wallet_id, amount_fen, memo, out_transfer_no, status, attempts, \
             updated_at_ms) VALUES ($1, $2, $3, 0, $4, $5, $6, $7, $8, $9, 30000, '十一月', $10, 'pending', 0, $11)",
        )
        .bind(batch.as_str())
        .bind(seq as i64)
        .bind(seq as i64 + 1)
        .bind(format!("老人{n}"))
        .bind(carepay::domain::citizen_id::mask_name(&format!("老人{n}")))
        .bind(secrets.keyed_digest("citizen_id", id.as_bytes()))
        .bind(secrets.seal(id.as_bytes(), &format!("{out_no}/citizen_id")).unwrap())
        .bind(carepay::domain::citizen_id::mask_citizen_id(&id))
        .bind(wallet(n))
        .bind(out_no.as_str())
        .bind(now)
        .execute(&pool)
        .await
        .unwrap();
    }
    let path = format!("/v1/subsidy-batches/{batch}");
    let before = app.get(&path, &office.clerk).await.expect(StatusCode::OK);
    assert_eq!(before.body["progress"]["pending"]["lines"], 2, "{}", before.text);
    assert_eq!(before.body["progress"]["pending"]["amount"], "600.00", "{}", before.text);
    app.post(&format!("{path}/approve"), &office.approver, json!({})).await.expect(StatusCode::OK);
    app.post(&format!("{path}/run"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    let done = wait_for_status(&app, &office.clerk, batch.as_str(), "completed").await;
    assert_eq!(done["progress"]["succeeded"]["lines"], 2, "{done}");
    assert_eq!(done["progress"]["pending"]["lines"], 0, "{done}");
    assert_eq!(app.sandbox.wallet(&wallet(1)).unwrap().balance.fen(), 30_000);
    let lines = app.get(&format!("{path}/lines"), &office.clerk).await.expect(StatusCode::OK);
    assert_eq!(lines.body.as_array().unwrap().len(), 2);
    assert_eq!(lines.body[1]["name"], "老**");
    let revealed = app.post(&format!("{path}/lines/2/reveal"), &office.clerk, json!({})).await.expect(StatusCode::OK);
    assert_eq!(revealed.body["citizen_id"], person(1).as_str());

    // A new upload for the period sees what the old batch paid.
    let (status, body) =
        upload(&app, &office, "after-chunks", file_of([(1, "300.00"), (5, "1.00")]), 2, "301.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors_total"], 1, "{body}");
    assert_eq!(
        (body["errors"][0]["line"].as_u64(), body["errors"][0]["code"].as_str()),
        (Some(2), Some("OVER_PERIOD_CAP"))
    );
    assert!(app.app.store.verify_ledger().await.unwrap().is_empty());
}

/// The codes found on each line of a refused upload's report, in report order.
fn problems_by_line(body: &Value) -> Vec<(u64, String)> {
    body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("a report: {body}"))
        .iter()
        .map(|e| (e["line"].as_u64().unwrap_or(0), e["code"].as_str().unwrap().to_owned()))
        .collect()
}

async fn a_person_repeated_after_a_refused_line_is_reported_in_the_same_report(app: TestApp) {
    let office = office(&app).await;
    let (first, second) = (person(1), person(2));
    let mut text = String::from("name,citizen_id,wallet_id,amount\n");
    // Line 2: a good ID number, no wallet. Line 5 names the same person.
    text.push_str(&format!("老人1,{first},,100.00\n"));
    text.push_str(&format!("老人3,{},{},100.00\n", person(3), wallet(3)));
    // Line 4: over the programme's cap for the period; line 6 names the same person.
    text.push_str(&format!("老人2,{second},{},600.00\n", wallet(2)));
    text.push_str(&format!("老人1,{first},{},100.00\n", wallet(1)));
    text.push_str(&format!("老人2,{second},{},50.00\n", wallet(2)));
    let (status, body) = upload(&app, &office, "dup-of-bad", text.into_bytes(), 5, "950.00").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let found = problems_by_line(&body);
    assert_eq!(
        found,
        [
            (2, "EMPTY_FIELD".to_owned()),
            (4, "OVER_PAYMENT_CAP".to_owned()),
            (5, "DUPLICATE_IN_BATCH".to_owned()),
            (6, "DUPLICATE_IN_BATCH".to_owned()),
        ],
        "{body}"
    );
    assert_eq!(body["errors"][2]["message"], "the same person is already on line 2 of this file", "{body}");
    assert_eq!(body["errors"][3]["message"], "the same person is already on line 4 of this file", "{body}");
    assert_eq!(body["errors_total"], 4);
    // Nothing was stored, the key included: the corrected file goes in under the same key.
    let (status, body) =
        upload(&app, &office, "dup-of-bad", file_of([(1, "100.00"), (3, "100.00"), (2, "50.00")]), 3, "250.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["line_count"], 3, "{body}");
}

/// A server whose limit on any one transaction is 200.00 yuan, below the programme's cap.
async fn spawn_with_a_200_yuan_transaction_limit(backend: carepay::store::Backend) -> TestApp {
    let limits = carepay::app::Limits {
        max_transaction_amount: Amount::parse("200.00").unwrap(),
        ..crate::helpers::test_limits()
    };
    let db = crate::helpers::TestDatabase::new(backend).await;
    crate::helpers::spawn_app_with_limits(db, crate::helpers::test_http_settings(), limits).await
}

async fn a_line_over_the_services_transaction_limit_is_refused_at_upload_with_its_line(app: TestApp) {
    let office = office(&app).await;
    let (status, body) =
        upload(&app, &office, "over-limit", file_of([(1, "150.00"), (2, "200.01"), (3, "200.00")]), 3, "550.01").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(problems_by_line(&body), [(3, "OVER_TRANSACTION_LIMIT".to_owned())], "{body}");
    assert_eq!(body["errors"][0]["column"], "amount", "{body}");
    assert_eq!(
        body["errors"][0]["message"], "the amount is over the service's limit of 200.00 yuan per transaction",
        "{body}"
    );
    // Nothing reached the operator, nothing was committed.
    assert_eq!(app.sandbox.wallet(FUNDING_WALLET).unwrap().balance, yuan("100000.00"));
    let programme = app.get(&format!("/v1/subsidy-programmes/{}", office.programme), &office.clerk).await;
    assert_eq!(programme.body["committed"], "0.00", "{}", programme.text);
    // At the limit is allowed.
    let (status, body) = upload(&app, &office, "at-limit", file_of([(1, "150.00"), (3, "200.00")]), 2, "350.00").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn programme_in(app: &TestApp, token: &str, region: &str, wallet: &str) -> crate::helpers::Reply {
    app.post(
        "/v1/subsidy-programmes",
        token,
        json!({
            "region_id": region, "name": "护理补贴", "funding_wallet_id": wallet,
            "budget": "1000.00", "per_payment_cap": "100.00", "per_period_cap": "100.00",
            "designated_merchants": [], "starts_on": "2026-01-01", "ends_on": "2026-12-31"
        }),
    )
    .await
}

async fn a_town_cannot_fund_a_programme_from_another_regions_wallet(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵镇").await;
    let town_b = app.create_region(root, Some(&district), "town", "同里镇").await;
    let admin_a = app.issue_token(root, "admin", Some(&town_a)).await;
    let admin_district = app.issue_token(root, "admin", Some(&district)).await;
    let (wallet_b, wallet_district, merchant_b, merchant_a) =
        ("0031000000000201", "0031000000000200", "0021000000000201", "0021000000000101");
    programme_in(&app, root, &town_b, wallet_b).await.expect(StatusCode::CREATED);
    programme_in(&app, root, &district, wallet_district).await.expect(StatusCode::CREATED);
    app.create_facility(root, &town_b, "同里食堂", merchant_b).await;
    app.create_facility(root, &town_a, "松陵食堂", merchant_a).await;

    // Another town's funding wallet, the district's, another town's facility: all outside.
    for wallet in [wallet_b, wallet_district, merchant_b] {
        let refused = programme_in(&app, &admin_a, &town_a, wallet)
            .await
            .expect_problem(StatusCode::FORBIDDEN, "FUNDING_WALLET_OUT_OF_SCOPE");
        assert_eq!(refused.body["field"], "funding_wallet_id", "{}", refused.text);
    }
    // A facility's merchant wallet funds nothing, even one's own.
    programme_in(&app, &admin_a, &town_a, merchant_a)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "FUNDING_WALLET_IS_MERCHANT");
    // None of the refusals created anything: town A still has no programme, and the wallets
    // keep their places.
    let fresh = "0031000000000101";
    let created = programme_in(&app, &admin_a, &town_a, fresh).await.expect(StatusCode::CREATED);
    assert_eq!(created.body["funding_wallet_id"], fresh);
    // The town's own wallet again, and the district (which sees both towns) funding a town
    // programme from its own wallet.
    programme_in(&app, &admin_a, &town_a, fresh).await.expect(StatusCode::CREATED);
    programme_in(&app, &admin_district, &town_a, wallet_district).await.expect(StatusCode::CREATED);
    programme_in(&app, &admin_district, &district, wallet_b).await.expect(StatusCode::CREATED);
}

/// `carepay batch upload` as a clerk types it: a file named in Chinese, the token after the
/// subcommand, no key. The same content again is the same batch; the same file name with
/// other content is a new upload, not refused as a repeat.
async fn the_command_line_uploads_a_file_named_in_chinese_and_keys_it_by_content(app: TestApp) {
    let office = office(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("名单.csv");
    let upload_with_cli = |lines: &str, total: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
            .args(["batch", "upload", "--programme", &office.programme, "--period", "2026-11"])
            .args(["--line-count", lines, "--total", total, "--url", &app.address, "--token", &office.clerk])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    std::fs::write(&file, file_of([(1, "100.00")])).unwrap();
    let first = upload_with_cli("1", "100.00");
    assert_eq!(first["status"], "draft", "{first}");
    assert_eq!(upload_with_cli("1", "100.00")["id"], first["id"], "the same file is the same batch");
    std::fs::write(&file, file_of([(2, "50.00"), (3, "60.00")])).unwrap();
    let second = upload_with_cli("2", "110.00");
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["line_count"], 2, "{second}");
}

backend_tests!(spawn = crate::disbursement::spawn_with_a_200_yuan_transaction_limit; a_line_over_the_services_transaction_limit_is_refused_at_upload_with_its_line);

backend_tests!(
    the_command_line_uploads_a_file_named_in_chinese_and_keys_it_by_content,
    a_town_cannot_fund_a_programme_from_another_regions_wallet,
    a_person_repeated_after_a_refused_line_is_reported_in_the_same_report,
    a_batch_stored_line_by_line_before_chunks_still_runs_and_holds_its_people,
    a_batch_of_several_chunks_lists_counts_and_reveals_lines_across_chunk_boundaries,
    two_concurrent_uploads_naming_the_same_people_make_one_batch,
    people_of_other_batches_count_until_their_line_fails_and_again_once_reissued,
    a_paused_batch_sends_nothing_until_resumed_and_its_completion_reaches_the_office,
    a_gb18030_batch_is_paid_once_per_person_with_failures_classified_and_reissued,
    a_file_with_errors_is_refused_whole_with_every_problem_listed_and_leaves_no_rows,
    batches_outside_the_callers_region_look_missing,
);
