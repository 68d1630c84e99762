//! `carepay batch ...`: the subsidy office's command line against a running carepay over its
//! REST API (upload, approve, run, pause, cancel, status with a progress bar, result file).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

/// How often `status --watch` asks for progress.
const WATCH_INTERVAL_MS: u64 = 1_000;
/// The longest `Retry-After` `status --watch` waits out before asking again.
const MAX_RETRY_AFTER_S: u64 = 60;
/// Answers of "busy, come back later" `status --watch` sits out before giving up.
const MAX_BUSY_ANSWERS: u32 = 30;
/// Characters of the progress bar.
const BAR_WIDTH: usize = 40;

#[derive(Args, Debug)]
pub struct BatchArgs {
    /// carepay's base URL (before or after the batch command).
    #[arg(long, global = true, env = "CAREPAY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A back-office token (subsidy_clerk to upload, subsidy_approver to approve), before or
    /// after the batch command.
    #[arg(long, global = true, env = "CAREPAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: BatchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BatchCommand {
    /// Upload a batch file; prints the batch, or every problem of a refused file.
    Upload {
        /// The programme (`prg_...`).
        #[arg(long)]
        programme: String,
        /// The month paid for, YYYY-MM.
        #[arg(long)]
        period: String,
        /// Control total: lines in the file.
        #[arg(long)]
        line_count: u64,
        /// Control total: the sum in yuan, e.g. 750.50.
        #[arg(long)]
        total: String,
        /// Makes a repeated upload return the same batch. Default: a digest of the programme,
        /// the period and the file's content, so the same file sent again is the same batch,
        /// and next month's file of the same name is a new one.
        #[arg(long)]
        idempotency_key: Option<String>,
        file: PathBuf,
    },
    /// Approve a batch (another person than the uploader).
    Approve { batch: String },
    /// Start or resume a batch.
    Run { batch: String },
    /// Pause a running batch.
    Pause { batch: String },
    /// Cancel a draft or approved batch.
    Cancel { batch: String },
    /// Show progress as a bar; with --watch, until the batch is completed.
    Status {
        batch: String,
        #[arg(long)]
        watch: bool,
    },
    /// Save the result file (CSV in the uploaded encoding, ID numbers masked).
    Result { batch: String, output: PathBuf },
}

pub async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let base = args.url.trim_end_matches('/').to_owned();
    let token = args.token.context("no token: give --token or set CAREPAY_TOKEN")?;
    let action = |batch: &str, verb: &str| format!("{base}/v1/subsidy-batches/{batch}/{verb}");
    match args.command {
        BatchCommand::Upload { programme, period, line_count, total, idempotency_key, file } => {
            let bytes = tokio::fs::read(&file).await.with_context(|| format!("cannot read {}", file.display()))?;
            let key = idempotency_key.unwrap_or_else(|| default_upload_key(&programme, &period, &bytes));
            let url = format!(
                "{base}/v1/subsidy-programmes/{programme}/batches?period={period}&line_count={line_count}&total={total}"
            );
            let response = client
                .post(url)
                .bearer_auth(&token)
                .header("idempotency-key", key)
                .header("content-type", "text/csv")
                .body(bytes)
                .send()
                .await?;
            print_answer(response).await
        }
        BatchCommand::Approve { batch } => post(&client, &token, &action(&batch, "approve")).await,
        BatchCommand::Run { batch } => post(&client, &token, &action(&batch, "run")).await,
        BatchCommand::Pause { batch } => post(&client, &token, &action(&batch, "pause")).await,
        BatchCommand::Cancel { batch } => post(&client, &token, &action(&batch, "cancel")).await,
        BatchCommand::Status { batch, watch } => {
            let mut busy_answers = 0u32;
            loop {
                let response =
                    client.get(format!("{base}/v1/subsidy-batches/{batch}")).bearer_auth(&token).send().await?;
                if watch
                    && busy_answers < MAX_BUSY_ANSWERS
                    && let Some(wait) = busy_wait(&response)
                {
                    // Asked to come back later (rate limited, overloaded): do as told.
                    busy_answers += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                if !response.status().is_success() {
                    return print_answer(response).await;
                }
                let body: Value = response.json().await?;
                let mut err = std::io::stderr();
                write!(err, "\r{}", progress_line(&body))?;
                err.flush()?;
                let finished = matches!(body["status"].as_str(), Some("completed" | "cancelled"));
                if !watch || finished {
                    writeln!(err)?;
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(WATCH_INTERVAL_MS)).await;
            }
        }
        BatchCommand::Result { batch, output } => {
            let response = client.get(action(&batch, "result")).bearer_auth(&token).send().await?;
            if !response.status().is_success() {
                return print_answer(response).await;
            }
            let bytes = response.bytes().await?;
            tokio::fs::write(&output, &bytes).await.with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!("saved {} bytes to {}", bytes.len(), output.display());
            Ok(())
        }
    }
}

/// The upload key when none is given: what is uploaded, where and for which month.
fn default_upload_key(programme: &str, period: &str, file: &[u8]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [programme.as_bytes(), period.as_bytes()] {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part);
    }
    context.update(file);
    format!("sha256:{}", hex::encode(context.finish()))
}

/// How long to wait when the answer is 429 or 503 with a `Retry-After` of seconds (capped).
fn busy_wait(response: &reqwest::Response) -> Option<Duration> {
    let status = response.status();
    if status != reqwest::StatusCode::TOO_MANY_REQUESTS && status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let seconds: u64 = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds.clamp(1, MAX_RETRY_AFTER_S)))
}

async fn post(client: &reqwest::Client, token: &str, url: &str) -> anyhow::Result<()> {
    print_answer(client.post(url).bearer_auth(token).json(&serde_json::json!({})).send().await?).await
}

/// Prints the JSON answer; a problem answer makes the command fail.
async fn print_answer(response: reqwest::Response) -> anyhow::Result<()> {
    let status = response.status();
    let text = response.text().await?;
    let pretty =
        serde_json::from_str::<Value>(&text).ok().and_then(|v| serde_json::to_string_pretty(&v).ok()).unwrap_or(text);
    println!("{pretty}");
    if status.is_success() { Ok(()) } else { anyhow::bail!("carepay answered {status}") }
}

/// `[#########...] 45% 4500/10000 lines  ok 4400 (44000.00)  failed 100 (1000.00)  running`
pub fn progress_line(batch: &Value) -> String {
    let lines = |state: &str| batch["progress"][state]["lines"].as_u64().unwrap_or(0);
    let amount = |state: &str| batch["progress"][state]["amount"].as_str().unwrap_or("0.00").to_owned();
    let done = lines("succeeded") + lines("failed");
    let all = done + lines("pending") + lines("sending");
    let filled = (done * BAR_WIDTH as u64).checked_div(all).and_then(|f| usize::try_from(f).ok()).unwrap_or(0);
    let percent = (done * 100).checked_div(all).unwrap_or(0);
    format!(
        "[{}{}] {percent:>3}% {done}/{all} lines  ok {} ({})  failed {} ({})  {}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled.min(BAR_WIDTH)),
        lines("succeeded"),
        amount("succeeded"),
        lines("failed"),
        amount("failed"),
        batch["status"].as_str().unwrap_or("?"),
    )
}

#[cfg(test)]
mod tests {
    use super::{busy_wait, default_upload_key, progress_line};

    fn answer(status: u16, retry_after: Option<&str>) -> reqwest::Response {
        let mut builder = http::Response::builder().status(status);
        if let Some(seconds) = retry_after {
            builder = builder.header("retry-after", seconds);
        }
        reqwest::Response::from(builder.body(String::new()).unwrap())
    }

    #[test]
    fn watching_waits_out_a_busy_answer_for_its_retry_after_within_a_bound() {
        use std::time::Duration;
        assert_eq!(busy_wait(&answer(429, Some("3"))), Some(Duration::from_secs(3)));
        assert_eq!(busy_wait(&answer(503, Some(" 0 "))), Some(Duration::from_secs(1)));
        assert_eq!(busy_wait(&answer(503, Some("86400"))), Some(Duration::from_secs(super::MAX_RETRY_AFTER_S)));
        // Not busy, or no usable time: not waited out (the answer is shown and the command fails).
        assert_eq!(busy_wait(&answer(429, None)), None);
        assert_eq!(busy_wait(&answer(429, Some("Wed, 21 Oct 2026 07:28:00 GMT"))), None);
        assert_eq!(busy_wait(&answer(500, Some("3"))), None);
        assert_eq!(busy_wait(&answer(200, Some("3"))), None);
    }

    #[test]
    fn the_default_upload_key_is_the_content_for_a_programme_and_month() {
        let key = default_upload_key("prg_1", "2026-11", "姓名\n".as_bytes());
        assert!(key.starts_with("sha256:") && key.len() == 71 && key.is_ascii(), "{key}");
        assert_eq!(key, default_upload_key("prg_1", "2026-11", "姓名\n".as_bytes()));
        assert_ne!(key, default_upload_key("prg_1", "2026-12", "姓名\n".as_bytes()));
        assert_ne!(key, default_upload_key("prg_2", "2026-11", "姓名\n".as_bytes()));
        assert_ne!(key, default_upload_key("prg_1", "2026-11", "姓名\r\n".as_bytes()));
        // The boundary between the parts is part of the digest.
        assert_ne!(default_upload_key("prg_1", "2026-1", b"1x"), default_upload_key("prg_1", "2026-11", b"x"));
    }

    #[test]
    fn the_progress_bar_counts_settled_lines() {
        let batch = serde_json::json!({"status": "running", "progress": {
            "pending": {"lines": 4, "amount": "40.00"}, "sending": {"lines": 1, "amount": "10.00"},
            "succeeded": {"lines": 4, "amount": "40.00"}, "failed": {"lines": 1, "amount": "10.00"}}});
        let line = progress_line(&batch);
        assert!(line.starts_with("[####################....................]  50% 5/10 lines"), "{line}");
        assert!(line.ends_with("running"));
    }
}
