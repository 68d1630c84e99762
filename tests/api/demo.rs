//! `carepay demo` seeds a district through the real use cases, on SQLite and PostgreSQL; run
//! again (in the same process, and from the command line in a new one) it adds nothing but
//! fresh tokens.

use reqwest::StatusCode;

use crate::backend_tests;
use crate::helpers::{TEST_SECRET_KEYS, TestApp};

backend_tests!(
    the_demo_seeds_a_district_once_however_often_it_runs,
    the_readmes_example_batch_files_pay_everyone_through_the_demos_sandbox,
);

async fn count(pool: &sqlx::AnyPool, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT CAST(COUNT(*) AS BIGINT) FROM {sql}")))
        .fetch_one(pool)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
}

async fn counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let pool = app.db.raw_pool().await;
    let mut counts = Vec::new();
    for (what, sql) in [
        ("regions", "regions"),
        ("facilities", "facilities"),
        ("terminals", "terminals"),
        ("succeeded payments", "payments WHERE status = 'succeeded'"),
        ("failed payments", "payments WHERE status = 'failed'"),
        ("refunds", "refunds WHERE status = 'succeeded'"),
        ("callback endpoints", "callback_endpoints"),
        ("programmes", "subsidy_programmes"),
        ("completed batches", "subsidy_batches WHERE status = 'completed'"),
        ("paid lines", "subsidy_lines WHERE status = 'succeeded'"),
        ("failed lines", "subsidy_lines WHERE status = 'failed'"),
        ("statement files", "statement_files"),
        ("resolved discrepancies", "discrepancies WHERE status = 'resolved'"),
        ("open discrepancies", "discrepancies WHERE status = 'open'"),
        ("closed days", "reconciliation_days WHERE status = 'closed'"),
        ("live demo tokens", "api_tokens WHERE revoked_at_ms IS NULL AND label LIKE '演示 %'"),
    ] {
        counts.push((what, count(&pool, sql).await));
    }
    counts
}

async fn the_demo_seeds_a_district_once_however_often_it_runs(app: TestApp) {
    let notify_url = app.sandbox.notify_url();
    assert!(notify_url.is_some(), "the test sandbox notifies the test server");
    let report = carepay::demo::seed(&app.app, &app.sandbox).await.expect("demo");
    assert_eq!(report.tokens.len(), 6);
    // Paused while the week was taken with a moving clock, and told again afterwards.
    assert_eq!(app.sandbox.notify_url(), notify_url);
    let expected = vec![
        ("regions", 10),
        ("facilities", 12),
        ("terminals", 12),
        // Twelve facilities, six payments a day (one refused) for seven days; a refund at
        // every third facility each day.
        ("succeeded payments", 420),
        ("failed payments", 84),
        ("refunds", 28),
        ("callback endpoints", 4),
        ("programmes", 1),
        ("completed batches", 1),
        ("paid lines", 7),
        ("failed lines", 3),
        // Three facilities' six ended days; yesterday's two discrepancies open, yesterday
        // not closed.
        ("statement files", 18),
        ("resolved discrepancies", 1),
        ("open discrepancies", 2),
        ("closed days", 15),
        ("live demo tokens", 6),
    ];
    assert_eq!(counts(&app).await, expected);
    // The payments are spread over the week, the oldest six days back.
    let pool = app.db.raw_pool().await;
    let (oldest, newest): (i64, i64) =
        sqlx::query_as("SELECT MIN(created_at_ms), MAX(created_at_ms) FROM payments").fetch_one(&pool).await.unwrap();
    assert!(newest - oldest >= 5 * 86_400_000 && newest - oldest < 7 * 86_400_000, "{oldest}..{newest}");
    let refunded_ms: i64 =
        sqlx::query_scalar("SELECT MIN(succeeded_at_ms) FROM refunds").fetch_one(&pool).await.unwrap();
    assert!(refunded_ms - oldest < 86_400_000, "refunds settle on their payment's day");

    // Each printed token signs in, with its role.
    for (role, _, secret) in &report.tokens {
        let reply = app.get("/v1/regions", secret.expose()).await.expect(StatusCode::OK);
        assert!(!reply.body["items"].as_array().unwrap().is_empty(), "{role} sees its region");
    }

    // Again in this process, then from the command line (a new sandbox): nothing new.
    let again = carepay::demo::seed(&app.app, &app.sandbox).await.expect("demo again");
    assert_eq!(again.batch_id, report.batch_id);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["demo", "--database-url", &app.db.url, "--secret-key", TEST_SECRET_KEYS])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("subsidy_approver"));
    assert_eq!(counts(&app).await, expected);
    // The earlier tokens were revoked.
    app.get("/v1/regions", report.tokens[0].2.expose()).await.expect(StatusCode::UNAUTHORIZED);
    let verdict = app.get("/v1/audit/verify", &app.root_token).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], true);
}

/// The README's steps with the README's files: a programme funded from the demo's funding
/// wallet pays every line of `examples/subsidy_batch.csv` and `examples/subsidy_batch_en.csv`.
async fn the_readmes_example_batch_files_pay_everyone_through_the_demos_sandbox(app: TestApp) {
    use serde_json::json;
    let report = carepay::demo::seed(&app.app, &app.sandbox).await.expect("demo");
    let district = report.district_id.as_str();
    let root = &app.root_token;
    let programme = app
        .post(
            "/v1/subsidy-programmes",
            root,
            json!({"region_id": district, "name": "高龄津贴", "funding_wallet_id": "0051000000000001",
                   "budget": "1000000.00", "per_payment_cap": "500.00", "per_period_cap": "500.00",
                   "designated_merchants": [], "starts_on": "2026-01-01", "ends_on": "2026-12-31"}),
        )
        .await
        .expect(StatusCode::CREATED)
        .id();
    let clerk = app.issue_token(root, "subsidy_clerk", Some(district)).await;
    let approver = app.issue_token(root, "subsidy_approver", Some(district)).await;
    crate::disbursement::start_worker(&app);
    let examples = [
        (include_bytes!("../../examples/subsidy_batch.csv").as_slice(), 3, "750.50"),
        (include_bytes!("../../examples/subsidy_batch_en.csv").as_slice(), 2, "600.00"),
    ];
    for (file, lines, total) in examples {
        let url = format!(
            "{}/v1/subsidy-programmes/{programme}/batches?period=2026-11&line_count={lines}&total={total}",
            app.address
        );
        let uploaded = app
            .client
            .post(url)
            .bearer_auth(&clerk)
            .header("content-type", "text/csv")
            .header("idempotency-key", format!("example-{lines}"))
            .body(file.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(uploaded.status(), StatusCode::CREATED);
        let batch = uploaded.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
        let path = format!("/v1/subsidy-batches/{batch}");
        app.post(&format!("{path}/approve"), &approver, json!({})).await.expect(StatusCode::OK);
        app.post(&format!("{path}/run"), &clerk, json!({})).await.expect(StatusCode::OK);
        let done = crate::disbursement::wait_for_status(&app, &clerk, &batch, "completed").await;
        assert_eq!(done["progress"]["succeeded"]["lines"], lines, "{done}");
        assert_eq!(done["progress"]["succeeded"]["amount"], total, "{done}");
    }
}
