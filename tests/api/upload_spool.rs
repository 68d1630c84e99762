//! A batch file sent slowly over a real TCP connection is spooled before the upload's write
//! transaction begins: on SQLite (one writer) other writes go on while it trickles in, and the
//! upload then completes whole. A body cut off midway stores nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::backend_tests;
use crate::disbursement::{citizen_id, office};
use crate::helpers::TestApp;

backend_tests!(other_writes_go_on_while_a_batch_file_trickles_in, a_batch_file_cut_off_midway_stores_nothing,);

/// Lines of the first piece: more than the reader sniffs the encoding from, so that without
/// spooling the upload's transaction would already be open when the trickle starts.
const FIRST_LINES: usize = 1_500;
/// Lines sent one by one after it, a pause apart.
const TRICKLED_LINES: usize = 10;
const PAUSE_MS: u64 = 100;
/// Longest the last piece waits for the other write (it never does once the upload is spooled).
const OTHER_WRITE_BOUND: Duration = Duration::from_secs(20);

/// The file in pieces: the header with the first `first` lines, then one line a piece.
fn batch_pieces(first: usize, then: usize) -> Vec<String> {
    let line = |n: usize| {
        let id = citizen_id(&format!("320584{}0315{:03}", 1940 + n / 1_000, n % 1_000));
        format!("老人{n},{id},00210000{n:08},1.00,十一月\n")
    };
    let mut pieces = vec![String::from("name,citizen_id,wallet_id,amount,memo\n")];
    pieces[0].extend((0..first).map(line));
    pieces.extend((first..first + then).map(line));
    pieces
}

/// The request head of a chunked upload of the office's programme.
fn head(app: &TestApp, programme: &str, clerk: &str, key: &str, lines: usize) -> String {
    let host = app.address.trim_start_matches("http://");
    format!(
        "POST /v1/subsidy-programmes/{programme}/batches?period=2026-11&line_count={lines}&total={}.00 HTTP/1.1\r\n\
         Host: {host}\r\nAuthorization: Bearer {clerk}\r\nIdempotency-Key: {key}\r\nContent-Type: text/csv\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        lines
    )
}

fn chunk(piece: &str) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", piece.len()).into_bytes();
    out.extend_from_slice(piece.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

async fn response_of(mut stream: tokio::net::TcpStream) -> (u16, Value) {
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or("");
    // The answer is chunked too: its JSON is the one line that starts with a brace.
    let json = body.lines().find(|line| line.starts_with('{')).unwrap_or("null");
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

async fn other_writes_go_on_while_a_batch_file_trickles_in(app: TestApp) {
    let office = office(&app).await;
    let lines = FIRST_LINES + TRICKLED_LINES;
    let pieces = batch_pieces(FIRST_LINES, TRICKLED_LINES);
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head(&app, &office.programme, &office.clerk, "slow-1", lines).as_bytes()).await.unwrap();
    // The header and many lines first: without spooling, the upload's transaction is open now.
    for piece in &pieces[..3] {
        stream.write_all(&chunk(piece)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(PAUSE_MS)).await;
    }

    let body_finished = Arc::new(AtomicBool::new(false));
    let other_write = tokio::spawn({
        let (client, address, root, region) =
            (app.client.clone(), app.address.clone(), app.root_token.clone(), office.region.clone());
        let body_finished = Arc::clone(&body_finished);
        async move {
            let created = client
                .post(format!("{address}/v1/facilities"))
                .bearer_auth(root)
                .json(&serde_json::json!({"region_id": region, "name": "敬老院", "kind": "nursing_home",
                    "merchant_wallet_id": "0021000000000077"}))
                .send()
                .await
                .unwrap();
            (created.status(), body_finished.load(Ordering::SeqCst))
        }
    });
    for piece in &pieces[3..pieces.len() - 1] {
        stream.write_all(&chunk(piece)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(PAUSE_MS)).await;
    }
    // The last piece only once the other write has its answer (bounded, so a held lock shows
    // up as a failed assertion rather than a hung test).
    let waited = tokio::time::timeout(OTHER_WRITE_BOUND, async {
        while !other_write.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stream.write_all(&chunk(&pieces[pieces.len() - 1])).await.unwrap();
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    body_finished.store(true, Ordering::SeqCst);
    let (status, batch) = response_of(stream).await;
    let (other_status, other_after_body) = other_write.await.unwrap();

    assert!(waited.is_ok(), "the other write waited for the whole upload");
    assert_eq!(other_status, StatusCode::CREATED);
    assert!(!other_after_body, "the other write was answered before the file had arrived");
    assert_eq!(status, 201, "{batch}");
    assert_eq!(batch["line_count"], lines as u64);
    assert_eq!(batch["total"], format!("{lines}.00"));
    assert_eq!(batch["status"], "draft");
    let path = format!("/v1/subsidy-batches/{}/lines?after={}", batch["id"].as_str().unwrap(), lines - 1);
    let last = app.get(&path, &office.clerk).await.expect(StatusCode::OK);
    assert_eq!(last.body[0]["seq"], lines as u64, "the last line trickled in is stored: {}", last.text);
}

async fn a_batch_file_cut_off_midway_stores_nothing(app: TestApp) {
    let office = office(&app).await;
    let pieces = batch_pieces(1, 3);
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head(&app, &office.programme, &office.clerk, "cut-1", 4).as_bytes()).await.unwrap();
    for piece in &pieces[..3] {
        stream.write_all(&chunk(piece)).await.unwrap();
    }
    stream.flush().await.unwrap();
    drop(stream);
    // The same key with the whole file afterwards makes the batch: the cut-off one left nothing.
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://")).await.unwrap();
    stream.write_all(head(&app, &office.programme, &office.clerk, "cut-1", 4).as_bytes()).await.unwrap();
    for piece in &pieces {
        stream.write_all(&chunk(piece)).await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let (status, batch) = response_of(stream).await;
    assert_eq!(status, 201, "{batch}");
    // Had the cut-off file left a batch under this key, this file would be refused as another.
    assert_eq!(batch["line_count"], 4);
}
