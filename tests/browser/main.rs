//! The web console in a real headless Chromium, driven over WebDriver (chromedriver on a free
//! port): an accountant uploads a statement with a discrepancy, resolves it and closes the
//! day; a clerk uploads a batch with errors and sees them by line, then a good one; an
//! approver approves it and watches it complete live. Screenshots of the main pages are
//! saved under `target/console-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them when missing);
//! without them the test fails and says so, it never passes silently.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/terminal_client.rs"]
mod terminal_client;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carepay::domain::money::Amount;
use carepay::domain::reconciliation::business_day;
use carepay::domain::time::UnixMs;
use carepay::operator::sandbox::faults::StatementTamper;
use carepay::store::Backend;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::json;

use helpers::{TestApp, spawn_app};
use terminal_client::terminal;

const WALLET: &str = "0021000000000001";
const FUNDING_WALLET: &str = "0031000000000001";
const MS_PER_DAY: i64 = 86_400_000;
/// Longest wait for a page element or a batch to finish.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// chromedriver, stopped when the test ends however it ends.
struct Driver {
    process: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .find_map(|name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file()))
}

async fn start_driver() -> Driver {
    let chromedriver = find_program(&["chromedriver"])
        .expect("chromedriver is not installed: install Debian's chromium and chromium-driver (bash .ci/run does it)");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let process = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let driver = Driver { process, url };
    let started = Instant::now();
    loop {
        if let Ok(reply) = reqwest::get(format!("{}/status", driver.url)).await
            && reply.status().is_success()
        {
            return driver;
        }
        assert!(started.elapsed() < WAIT_LIMIT, "chromedriver did not answer on port {port}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn open_browser(driver: &Driver) -> Client {
    let mut chrome_options = json!({
        "args": ["--headless", "--no-sandbox", "--disable-background-networking", "--disable-dev-shm-usage",
                 "--disable-gpu", "--window-size=1280,1400", "--lang=zh-CN"]
    });
    if let Some(chromium) = find_program(&["chromium", "chromium-browser"]) {
        chrome_options["binary"] = json!(chromium.to_string_lossy());
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(String::from("browserName"), json!("chrome"));
    capabilities.insert(String::from("goog:chromeOptions"), chrome_options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session through chromedriver")
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("save screenshot");
}

/// Click a link or a form's button and wait until the page it loads has loaded. The page it
/// leaves is marked first, so a page read too soon is never taken for the new one; an element
/// that went stale before the click (the page still replacing itself) is looked up again, and a
/// stale element is never clicked, so nothing is submitted twice.
async fn click(browser: &Client, css: &str) {
    browser.execute("window.carepayLeaving = true; return true;", vec![]).await.unwrap();
    let started = Instant::now();
    loop {
        let element = browser
            .wait()
            .at_most(WAIT_LIMIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"));
        match element.click().await {
            Ok(_) => break,
            Err(error) if is_stale(&error) && started.elapsed() < WAIT_LIMIT => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("click {css}: {error}"),
        }
    }
    loop {
        let arrived = browser
            .execute("return window.carepayLeaving !== true && document.readyState === 'complete';", vec![])
            .await;
        if matches!(arrived, Ok(serde_json::Value::Bool(true))) {
            return;
        }
        assert!(started.elapsed() < WAIT_LIMIT, "{css}: no new page loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_stale(error: &fantoccini::error::CmdError) -> bool {
    matches!(error, fantoccini::error::CmdError::Standard(e) if e.error == fantoccini::error::ErrorStatus::StaleElementReference)
}

/// The text of `css` once `accept` holds for it: after a form posts, the page read may still
/// be the one it left, and a live page replaces what it shows.
async fn text_when(browser: &Client, css: &str, accept: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    let mut last = None;
    loop {
        if let Ok(element) = browser.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if accept(&text) {
                return text;
            }
            last = Some(text);
        }
        assert!(started.elapsed() < WAIT_LIMIT, "{css}: still {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(browser: &Client, css: &str, text: &str) {
    let field = browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Css(css)).await.unwrap();
    field.clear().await.ok();
    field.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn sign_in(browser: &Client, app: &TestApp, token: &str) {
    browser.goto(&format!("{}/console/sign-in", app.address)).await.unwrap();
    fill(browser, "#token", token).await;
    click(browser, "#sign-in").await;
    browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("role")).await.expect("signed in to the home page");
}

async fn sign_out(browser: &Client) {
    click(browser, "#sign-out").await;
    browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("token")).await.expect("back at sign-in");
}

fn citizen_id(first17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accountant_and_a_subsidy_office_work_through_the_console_in_chromium() {
    let driver = start_driver().await;
    let app = spawn_app(Backend::Sqlite).await;
    let browser = open_browser(&driver).await;
    reconcile_a_day(&app, &browser).await;
    pay_a_batch(&app, &browser).await;
    browser.close().await.expect("close the browser session");
}

async fn reconcile_a_day(app: &TestApp, browser: &Client) {
    let root = &app.root_token;
    let till = terminal(app, WALLET).await;
    for (request, amount) in [("r-1", "12.50"), ("r-2", "30.00"), ("r-3", "8.00")] {
        till.pay(request, amount, "013412345678900000").await.unwrap();
    }
    let district = app.get("/v1/regions", root).await.body["items"][0]["id"].as_str().unwrap().to_owned();
    let accountant = app.issue_token(root, "accountant", Some(&district)).await;
    let today = business_day(UnixMs::now());
    app.sandbox.faults().tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    let statement = app.sandbox.statement_file_as_of(&today, WALLET, UnixMs::now().0 + MS_PER_DAY).unwrap().0;
    let files = tempfile::tempdir().unwrap();
    let statement_path = files.path().join(format!("statement-{WALLET}-{today}.csv"));
    std::fs::write(&statement_path, statement).unwrap();

    sign_in(browser, app, &accountant).await;
    screenshot(browser, "01-home-accountant").await;
    click(browser, "a[href='/console/reconciliation']").await;
    click(browser, &format!("a[href='/console/reconciliation/wallets/{WALLET}']")).await;
    let upload = browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("statement-file")).await.unwrap();
    upload.send_keys(&statement_path.to_string_lossy()).await.unwrap();
    click(browser, "#upload-statement").await;

    // The day's page: one discrepancy, the amount differs.
    text_when(browser, "#discrepancies tr.discrepancy", |row| row.contains("金额不符") && row.contains("amount")).await;
    text_when(browser, "#net-settlement", |net| net == "¥50.51").await;
    screenshot(browser, "02-reconciliation-day-with-discrepancy").await;

    fill(browser, "#discrepancies form.resolve input[name=note]", "运营机构录入错误，工单 4711").await;
    browser
        .find(Locator::Css("#discrepancies form.resolve select[name=resolution]"))
        .await
        .unwrap()
        .select_by_value("operator_error")
        .await
        .unwrap();
    click(browser, "#discrepancies form.resolve button").await;
    browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("no-discrepancies")).await.expect("resolved");
    click(browser, "#close-day").await;
    text_when(browser, "#day-status", |status| status == "已关账").await;
    screenshot(browser, "03-reconciliation-day-closed").await;

    browser.goto(&format!("{}/console/reconciliation/wallets/{WALLET}", app.address)).await.unwrap();
    text_when(browser, "table.calendar", |calendar| calendar.contains(&today) && calendar.contains("已关账")).await;
    screenshot(browser, "04-reconciliation-business-days").await;
    sign_out(browser).await;

    let manager = app.issue_token(root, "facility_manager", Some(&district)).await;
    sign_in(browser, app, &manager).await;
    browser.goto(&format!("{}/console/facilities/{}", app.address, till.facility_id)).await.unwrap();
    text_when(browser, "#payments-total", |total| total == "3 · ¥50.50").await;
    screenshot(browser, "05-facility-today").await;
    sign_out(browser).await;
}

async fn pay_a_batch(app: &TestApp, browser: &Client) {
    let root = &app.root_token;
    let district = app.get("/v1/regions", root).await.body["items"][0]["id"].as_str().unwrap().to_owned();
    let clerk = app.issue_token(root, "subsidy_clerk", Some(&district)).await;
    let approver = app.issue_token(root, "subsidy_approver", Some(&district)).await;
    app.sandbox.open_wallet(FUNDING_WALLET, "吴江区民政局", 1, Amount::parse("100000.00").unwrap()).unwrap();
    app.sandbox.open_wallet("0021000000000101", "张三", 2, Amount::ZERO).unwrap();
    app.sandbox.open_wallet("0021000000000102", "李四", 2, Amount::ZERO).unwrap();
    let programme = app
        .post(
            "/v1/subsidy-programmes",
            root,
            json!({
                "region_id": district, "name": "高龄津贴", "funding_wallet_id": FUNDING_WALLET,
                "budget": "10000.00", "per_payment_cap": "500.00", "per_period_cap": "500.00",
                "starts_on": "2026-01-01", "ends_on": "2026-12-31"
            }),
        )
        .await
        .expect(StatusCode::CREATED)
        .id();
    let mut worker_app = app.app.clone();
    worker_app.disbursement.query_delay_ms = 50;
    tokio::spawn(carepay::disbursement::worker::run(worker_app, std::future::pending()));

    let (first, second, third) =
        (citizen_id("32058419450315002"), citizen_id("32058419520708008"), citizen_id("32058419600101003"));
    let files = tempfile::tempdir().unwrap();
    let bad_path = files.path().join("batch-with-errors.csv");
    let wrong_check = format!("{}{}", &first[..17], if first.ends_with('0') { '1' } else { '0' });
    std::fs::write(
        &bad_path,
        format!(
            "姓名,身份证号,钱包编号,金额,备注\r\n张三,{wrong_check},0021000000000101,300.00,十一月\r\n李四,{second},00210000000001,200.00,十一月\r\n"
        ),
    )
    .unwrap();
    let good_path = files.path().join("batch.csv");
    std::fs::write(
        &good_path,
        format!(
            "姓名,身份证号,钱包编号,金额,备注\r\n张三,{first},0021000000000101,300.00,十一月\r\n李四,{second},0021000000000102,200.00,十一月\r\n王五,{third},0021000000000404,50.00,十一月\r\n"
        ),
    )
    .unwrap();

    sign_in(browser, app, &clerk).await;
    click(browser, "a[href='/console/subsidies']").await;
    browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("programmes")).await.unwrap();
    screenshot(browser, "06-subsidy-programmes").await;
    click(browser, &format!("a[href='/console/subsidies/programmes/{programme}']")).await;

    let upload_batch = |path: PathBuf, lines: &'static str, total: &'static str| async move {
        let file = browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("batch-file")).await.unwrap();
        file.send_keys(&path.to_string_lossy()).await.unwrap();
        fill(browser, "#period", "2026-11").await;
        fill(browser, "#line-count", lines).await;
        fill(browser, "#total", total).await;
        click(browser, "#upload-batch").await;
    };
    upload_batch(bad_path, "2", "500.00").await;
    text_when(browser, "#file-errors", |errors| errors.contains("CITIZEN_ID_CHECK_DIGIT")).await;
    let rows = browser.find_all(Locator::Css("#file-errors tr.file-error")).await.unwrap();
    let mut lines = Vec::new();
    for row in rows {
        lines.push(row.find(Locator::Css("td")).await.unwrap().text().await.unwrap());
    }
    assert!(lines.contains(&String::from("2")) && lines.contains(&String::from("3")), "errors by line: {lines:?}");
    assert!(!browser.source().await.unwrap().contains(&wrong_check), "the refused ID number is shown");
    screenshot(browser, "07-batch-errors-by-line").await;

    upload_batch(good_path, "3", "550.00").await;
    let status = browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("batch-status")).await.unwrap();
    assert_eq!(status.attr("data-status").await.unwrap().as_deref(), Some("draft"));
    let batch_url = browser.current_url().await.unwrap();
    assert!(browser.find(Locator::Id("approve-batch")).await.is_err(), "the uploader is offered approval");
    screenshot(browser, "08-batch-draft").await;
    sign_out(browser).await;

    sign_in(browser, app, &approver).await;
    browser.goto(batch_url.as_str()).await.unwrap();
    click(browser, "#approve-batch").await;
    click(browser, "#run-batch").await;
    browser.wait().at_most(WAIT_LIMIT).for_element(Locator::Id("live-progress")).await.unwrap();
    // Mark this page; if it reloaded the mark would be gone.
    browser.execute("window.carepayNoReload = true; return true;", vec![]).await.unwrap();
    let started = Instant::now();
    loop {
        // The live script replaces the status in place: a stale read is read again.
        let status = match browser.find(Locator::Id("batch-status")).await {
            Ok(element) => element.attr("data-status").await.ok().flatten(),
            Err(_) => None,
        };
        if status.as_deref() == Some("completed") {
            break;
        }
        assert!(started.elapsed() < WAIT_LIMIT, "the batch did not complete on the page; status {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kept = browser.execute("return window.carepayNoReload === true;", vec![]).await.unwrap();
    assert_eq!(kept, json!(true), "the page reloaded instead of updating in place");
    text_when(browser, "[data-progress='succeeded-lines']", |lines| lines == "2").await;
    text_when(browser, "[data-progress='succeeded-amount']", |amount| amount == "¥500.00").await;
    text_when(browser, "#batch-status", |status| status == "已完成").await;
    // The line that failed while the page was open is announced, not hidden behind the
    // "no failed line" of the page's load.
    text_when(browser, "[data-progress='failed-lines']", |lines| lines == "1").await;
    // (Listed already when it failed before the page was drawn.)
    let listed = browser.find(Locator::Css("#failed-lines tbody tr")).await.is_ok();
    let stale = browser.find(Locator::Id("failed-lines-stale")).await.unwrap();
    assert!(listed || stale.is_displayed().await.unwrap(), "the page does not say that a line failed");
    if let Ok(none) = browser.find(Locator::Id("no-failed-lines")).await {
        assert!(!none.is_displayed().await.unwrap(), "the page still says no line failed");
    }
    screenshot(browser, "09-batch-completed-live").await;

    let reply = app
        .raw(
            Method::GET,
            &format!("/v1/subsidy-batches/{}", batch_url.path().rsplit('/').next().unwrap()),
            Some(root),
            None,
        )
        .await
        .expect(StatusCode::OK);
    assert_eq!(reply.body["progress"]["succeeded"]["lines"], 2, "{}", reply.text);
    browser.goto(&format!("{}/console/subsidies/programmes/{programme}?lang=en", app.address)).await.unwrap();
    text_when(browser, "#remaining", |remaining| remaining == "¥9,500.00").await;
    screenshot(browser, "10-programme-budget-english").await;
}
