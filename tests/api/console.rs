//! The web console through plain HTTP: every page answers each role and scope exactly as
//! the API does, forms without a valid CSRF token (or from another origin) change nothing,
//! signing out and revoking the token end a session at once, and no page shows personal
//! data unmasked.

use carepay::domain::money::Amount;
use carepay::domain::reconciliation::business_day;
use carepay::domain::time::UnixMs;
use carepay::operator::sandbox::faults::StatementTamper;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::TestApp;
use crate::terminal_client::terminal;

backend_tests!(
    the_service_address_leads_to_the_console_and_unknown_console_pages_are_pages,
    every_console_page_answers_each_role_and_scope_as_the_api_does,
    forms_without_a_valid_csrf_token_or_from_another_origin_change_nothing,
    signing_out_and_revoking_the_token_end_the_session_at_once,
    pages_show_personal_data_only_masked,
    forms_act_only_for_roles_and_scopes_the_api_allows,
    a_wallet_pages_statement_upload_takes_only_that_wallets_file,
);

const WALLET: &str = "0021000000000001";
const FUNDING_WALLET: &str = "0031000000000001";
const MS_PER_DAY: i64 = 86_400_000;

/// A browser as far as the console cares: a session cookie and the form token of its pages.
struct Console {
    address: String,
    client: reqwest::Client,
    session_cookie: String,
    csrf: String,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(SET_COOKIE).iter().filter_map(|value| value.to_str().ok()).find_map(|value| {
        value.strip_prefix(&format!("{name}=")).map(|rest| rest.split(';').next().unwrap().to_owned())
    })
}

fn set_cookie_line(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
        .to_owned()
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let start = html.find(r#"name="csrf" value=""#).expect("a form with a csrf field") + r#"name="csrf" value=""#.len();
    html[start..].split('"').next().unwrap().to_owned()
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn read(response: reqwest::Response) -> Page {
    let status = response.status();
    let headers = response.headers().clone();
    Page { status, headers, text: response.text().await.unwrap() }
}

impl Console {
    /// Sign in with `token` as a browser would: fetch the form, post it back with its cookie.
    async fn sign_in(app: &TestApp, token: &str) -> Console {
        let client = plain_client();
        let (status, headers, sign_in_cookie) = Console::post_sign_in(app, &client, token).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "sign-in refused");
        let _ = sign_in_cookie;
        let session_cookie = cookie_value(&headers, "carepay_console_session").expect("session cookie");
        let mut console = Console { address: app.address.clone(), client, session_cookie, csrf: String::new() };
        let home = console.get("/console").await;
        assert_eq!(home.status, StatusCode::OK, "{}", home.text);
        console.csrf = csrf_of(&home.text);
        console
    }

    async fn post_sign_in(app: &TestApp, client: &reqwest::Client, token: &str) -> (StatusCode, HeaderMap, String) {
        let form = read(client.get(format!("{}/console/sign-in", app.address)).send().await.unwrap()).await;
        assert_eq!(form.status, StatusCode::OK);
        let cookie = cookie_value(&form.headers, "carepay_console_sign_in").expect("sign-in cookie");
        let reply = client
            .post(format!("{}/console/sign-in", app.address))
            .header("cookie", format!("carepay_console_sign_in={cookie}"))
            .form(&[("csrf", csrf_of(&form.text)), ("token", token.to_owned())])
            .send()
            .await
            .unwrap();
        let page = read(reply).await;
        (page.status, page.headers, page.text)
    }

    async fn get(&self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.address));
        read(request.header("cookie", format!("carepay_console_session={}", self.session_cookie)).send().await.unwrap())
            .await
    }

    /// Post a form with this session's cookie and the given fields (add `csrf` yourself).
    async fn post(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self
            .client
            .request(Method::POST, format!("{}{path}", self.address))
            .header("cookie", format!("carepay_console_session={}", self.session_cookie))
            .form(fields);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        read(request.send().await.unwrap()).await
    }
}

fn today() -> String {
    business_day(UnixMs::now())
}

/// A district A with a facility that took three payments (today's statement run with one
/// tampered amount), a subsidy programme with a draft batch; and an empty district B.
struct World {
    district_a: String,
    district_b: String,
    facility: String,
    terminal: String,
    programme: String,
    batch: String,
    clerk_a: String,
    ids: Vec<String>,
}

fn citizen_id(first17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17.bytes().zip(WEIGHTS).map(|(d, w)| u32::from(d - b'0') * w).sum();
    format!("{first17}{}", b"10X98765432"[(sum % 11) as usize] as char)
}

async fn world(app: &TestApp) -> World {
    let root = &app.root_token;
    let till = terminal(app, WALLET).await;
    for (request, amount) in [("r-1", "12.50"), ("r-2", "30.00"), ("r-3", "8.00")] {
        till.pay(request, amount, "013412345678900000").await.unwrap();
    }
    let district_a = app.get("/v1/regions", root).await.body["items"][0]["id"].as_str().unwrap().to_owned();
    let district_b = app.create_region(root, None, "district", "震泽区").await;

    app.sandbox.faults().tamper_statements(StatementTamper::ChangeAmount, 1).unwrap();
    let statement = app.sandbox.statement_file_as_of(&today(), WALLET, UnixMs::now().0 + MS_PER_DAY).unwrap().0;
    app.raw(Method::POST, "/v1/reconciliation/statements", Some(root), Some(("text/csv", statement)))
        .await
        .expect(StatusCode::CREATED);
    app.post(&format!("/v1/reconciliation/days/{WALLET}/{}/run", today()), root, json!({}))
        .await
        .expect(StatusCode::OK);

    app.sandbox.open_wallet(FUNDING_WALLET, "吴江区民政局", 1, Amount::parse("100000.00").unwrap()).unwrap();
    let programme = app
        .post(
            "/v1/subsidy-programmes",
            root,
            json!({
                "region_id": district_a, "name": "高龄津贴", "funding_wallet_id": FUNDING_WALLET,
                "budget": "10000.00", "per_payment_cap": "500.00", "per_period_cap": "500.00",
                "starts_on": "2026-01-01", "ends_on": "2026-12-31"
            }),
        )
        .await
        .expect(StatusCode::CREATED)
        .id();
    let clerk_a = app.issue_token(root, "subsidy_clerk", Some(&district_a)).await;
    let ids = vec![citizen_id("32058419450315002"), citizen_id("32058419520708008")];
    let file = format!(
        "姓名,身份证号,钱包编号,金额,备注\r\n欧阳明华,{},0021000000000101,300.00,十一月\r\n李秀英,{},0021000000000102,200.00,十一月\r\n",
        ids[0], ids[1]
    );
    let response = app
        .client
        .post(format!(
            "{}/v1/subsidy-programmes/{programme}/batches?period=2026-11&line_count=2&total=500.00",
            app.address
        ))
        .bearer_auth(&clerk_a)
        .header("idempotency-key", "world-1")
        .header("content-type", "text/csv")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let batch: serde_json::Value = response.json().await.unwrap();
    World {
        district_a,
        district_b,
        facility: till.facility_id.clone(),
        terminal: till.id.clone(),
        programme,
        batch: batch["id"].as_str().unwrap().to_owned(),
        clerk_a,
        ids,
    }
}

const ALL_ROLES: [&str; 6] =
    ["admin", "facility_manager", "subsidy_clerk", "subsidy_approver", "accountant", "auditor"];
const RECONCILIATION_READERS: &[&str] = &["admin", "accountant", "auditor"];
const BATCH_READERS: &[&str] = &["admin", "subsidy_clerk", "subsidy_approver", "auditor"];
const PAYMENT_READERS: &[&str] = &["admin", "facility_manager", "accountant", "auditor"];

/// Every console page, the roles that may see it, and whether it names one object (and so
/// is refused outside the scope) or lists what is in scope.
fn pages(world: &World) -> Vec<(String, &'static [&'static str], bool)> {
    let day = format!("/console/reconciliation/wallets/{WALLET}/days/{}", today());
    let batch = format!("/console/subsidies/batches/{}", world.batch);
    vec![
        (String::from("/console"), &ALL_ROLES[..], false),
        (String::from("/console/reconciliation"), RECONCILIATION_READERS, false),
        (format!("/console/reconciliation/wallets/{WALLET}"), RECONCILIATION_READERS, true),
        (day.clone(), RECONCILIATION_READERS, true),
        (format!("{day}?status=all&category=amount_mismatch"), RECONCILIATION_READERS, true),
        (format!("{day}/lines.csv"), RECONCILIATION_READERS, true),
        (format!("{day}/lines.json"), RECONCILIATION_READERS, true),
        (String::from("/console/subsidies"), BATCH_READERS, false),
        (format!("/console/subsidies/programmes/{}", world.programme), BATCH_READERS, true),
        (batch.clone(), BATCH_READERS, true),
        (format!("{batch}/progress.json"), BATCH_READERS, true),
        (format!("{batch}/result.csv"), BATCH_READERS, true),
        (String::from("/console/facilities"), PAYMENT_READERS, false),
        (format!("/console/facilities/{}", world.facility), PAYMENT_READERS, true),
    ]
}

async fn every_console_page_answers_each_role_and_scope_as_the_api_does(app: TestApp) {
    let world = world(&app).await;
    let pages = pages(&world);
    for role in ALL_ROLES {
        let inside =
            Console::sign_in(&app, &app.issue_token(&app.root_token, role, Some(&world.district_a)).await).await;
        let outside =
            Console::sign_in(&app, &app.issue_token(&app.root_token, role, Some(&world.district_b)).await).await;
        for (path, readers, names_an_object) in &pages {
            let allowed = readers.contains(&role);
            let page = inside.get(path).await;
            let expected = if allowed { StatusCode::OK } else { StatusCode::FORBIDDEN };
            assert_eq!(page.status, expected, "{role} in scope, {path}: {}", page.text);
            let page = outside.get(path).await;
            let expected = if allowed && !names_an_object { StatusCode::OK } else { StatusCode::FORBIDDEN };
            assert_eq!(page.status, expected, "{role} out of scope, {path}: {}", page.text);
            if page.status == StatusCode::OK {
                for name in ["助餐点", "高龄津贴", WALLET] {
                    assert!(!page.text.contains(name), "{role} out of scope sees {name} on {path}");
                }
            }
        }
    }
    // Without a session every page sends the browser to sign in.
    let anonymous = plain_client();
    for (path, _, _) in &pages {
        let reply = anonymous.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(reply.headers()[LOCATION], "/console/sign-in", "{path}");
    }
    // The pages hold what their role came for: amounts as ¥, the discrepancy's differing field.
    let accountant =
        Console::sign_in(&app, &app.issue_token(&app.root_token, "accountant", Some(&world.district_a)).await).await;
    let day = accountant.get(&format!("/console/reconciliation/wallets/{WALLET}/days/{}", today())).await;
    assert!(day.text.contains("金额不符"), "{}", day.text);
    assert!(day.text.contains(r#"<span class="field">amount</span>"#), "{}", day.text);
    assert!(day.text.contains("¥50.51"), "{}", day.text);
    assert!(day.text.contains("<svg"), "{}", day.text);
    let english = accountant.get(&format!("/console/reconciliation/wallets/{WALLET}/days/{}?lang=en", today())).await;
    assert!(english.text.contains("amount mismatch"), "{}", english.text);
    assert!(set_cookie_line(&english.headers, "carepay_console_lang").starts_with("carepay_console_lang=en"));
    assert!(english.headers["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    let manager =
        Console::sign_in(&app, &app.issue_token(&app.root_token, "facility_manager", Some(&world.district_a)).await)
            .await;
    let facility = manager.get(&format!("/console/facilities/{}", world.facility)).await;
    assert!(facility.text.contains("3 · ¥50.50"), "{}", facility.text);
    // Enum values are words of the page's language, not the API's codes.
    assert!(
        facility.text.contains("<td>付款码</td>") && !facility.text.contains("<td>payer_code</td>"),
        "{}",
        facility.text
    );
    // A terminal's public key is a code of its own, not the chart legend's 0.8 rem swatch.
    assert!(facility.text.contains(r#"<code class="public-key">"#), "{}", facility.text);
    assert!(!facility.text.contains(r#"<code class="key">"#), "{}", facility.text);
}

async fn forms_without_a_valid_csrf_token_or_from_another_origin_change_nothing(app: TestApp) {
    let world = world(&app).await;
    let accountant =
        Console::sign_in(&app, &app.issue_token(&app.root_token, "accountant", Some(&world.district_a)).await).await;
    let day = format!("/console/reconciliation/wallets/{WALLET}/days/{}", today());
    let discrepancies = app
        .get(&format!("/v1/reconciliation/days/{WALLET}/{}/discrepancies", today()), &app.root_token)
        .await
        .expect(StatusCode::OK);
    let discrepancy = discrepancies.body[0]["id"].as_str().unwrap().to_owned();
    let resolve = format!("/console/reconciliation/discrepancies/{discrepancy}/resolve");
    let fields = |csrf: &'static str| vec![("csrf", csrf), ("resolution", "operator_error"), ("note", "ticket 4711")];

    let refused = accountant.post(&resolve, &fields("")[1..], None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "no token: {}", refused.text);
    let refused = accountant.post(&resolve, &fields("not-the-token"), None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "wrong token: {}", refused.text);
    let csrf = accountant.csrf.clone();
    let with_token = [("csrf", csrf.as_str()), ("resolution", "operator_error"), ("note", "ticket 4711")];
    let refused = accountant.post(&resolve, &with_token, Some("https://evil.example")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "foreign origin: {}", refused.text);
    let refused = accountant.post(&format!("{day}/close"), &[], None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "close without a token");
    // A multipart upload without the token is refused before the file is looked at.
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(b"x".to_vec()));
    let refused = accountant
        .client
        .post(format!("{}/console/reconciliation/statements", app.address))
        .header("cookie", format!("carepay_console_session={}", accountant.session_cookie))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // A sign-in form posted without its cookie (from another site) is refused too.
    let refused = plain_client()
        .post(format!("{}/console/sign-in", app.address))
        .form(&[("csrf", "guess"), ("token", app.root_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // An adjustment beyond the money ceiling is refused by the API's money rule, with its code.
    let origin = app.address.clone();
    let too_large = [
        ("csrf", csrf.as_str()),
        ("resolution", "adjusted"),
        ("note", "ticket 4711"),
        ("adjustment", "-999999999999999.99"),
    ];
    let refused = accountant.post(&resolve, &too_large, Some(&origin)).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert!(refused.text.contains("AMOUNT_TOO_LARGE"), "{}", refused.text);

    let still_open = app
        .get(&format!("/v1/reconciliation/days/{WALLET}/{}/discrepancies", today()), &app.root_token)
        .await
        .expect(StatusCode::OK);
    assert_eq!(still_open.body.as_array().unwrap().len(), 1, "a refused form changed something");

    // With the session's token (and this origin) the same forms work.
    let done = accountant.post(&resolve, &with_token, Some(&origin)).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.text);
    assert_eq!(done.headers[LOCATION], day.as_str());
    let closed = accountant.post(&format!("{day}/close"), &[("csrf", csrf.as_str())], Some(&origin)).await;
    assert_eq!(closed.status, StatusCode::SEE_OTHER, "{}", closed.text);
    let run = app.get(&format!("/v1/reconciliation/days/{WALLET}/{}", today()), &app.root_token).await;
    assert_eq!(run.body["day_status"], "closed");
}

async fn signing_out_and_revoking_the_token_end_the_session_at_once(app: TestApp) {
    let root = app.root_token.clone();
    let district = app.create_region(&root, None, "district", "吴江区").await;
    let token = app.issue_token(&root, "accountant", Some(&district)).await;

    // A refused token is not echoed back, and no session is opened.
    let (status, headers, text) = Console::post_sign_in(&app, &plain_client(), "cpt_not-a-real-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&headers, "carepay_console_session").is_none());
    assert!(!text.contains("cpt_not-a-real-token"));

    let (_, headers, _) = Console::post_sign_in(&app, &plain_client(), &token).await;
    let cookie = set_cookie_line(&headers, "carepay_console_session");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain-http test server: {cookie}");
    let pool = app.db.raw_pool().await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT id_sha256 FROM console_sessions").fetch_all(&pool).await.unwrap();
    let session_id = cookie_value(&headers, "carepay_console_session").unwrap();
    assert!(!stored.contains(&session_id), "the session id itself is stored");

    let console = Console::sign_in(&app, &token).await;
    let other = Console::sign_in(&app, &token).await;
    assert_eq!(console.get("/console/reconciliation").await.status, StatusCode::OK);
    let signed_out = console.post("/console/sign-out", &[("csrf", console.csrf.as_str())], None).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);
    assert!(set_cookie_line(&signed_out.headers, "carepay_console_session").contains("Max-Age=0"));
    let after = console.get("/console/reconciliation").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "a signed-out session still works");
    assert_eq!(other.get("/console/reconciliation").await.status, StatusCode::OK, "sign-out ends only its session");

    // Revoking the token ends every session it opened, at the next request.
    let tokens = app.get("/v1/tokens", &root).await.expect(StatusCode::OK);
    let token_id = tokens.body["items"].as_array().unwrap().iter().find(|t| t["role"] == "accountant").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.call(Method::DELETE, &format!("/v1/tokens/{token_id}"), &root, None).await.expect(StatusCode::OK);
    let after = other.get("/console/reconciliation").await;
    assert_eq!(after.status, StatusCode::SEE_OTHER, "a revoked token's session still works");
    assert_eq!(after.headers[LOCATION], "/console/sign-in");
}

async fn pages_show_personal_data_only_masked(app: TestApp) {
    let world = world(&app).await;
    let batch = format!("/console/subsidies/batches/{}", world.batch);
    for role in ["subsidy_clerk", "subsidy_approver", "auditor", "admin"] {
        let console =
            Console::sign_in(&app, &app.issue_token(&app.root_token, role, Some(&world.district_a)).await).await;
        for path in [
            batch.clone(),
            format!("{batch}/progress.json"),
            format!("/console/subsidies/programmes/{}", world.programme),
        ] {
            let page = console.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{role} {path}");
            for id in &world.ids {
                assert!(!page.text.contains(id.as_str()), "{role} sees an ID number in clear on {path}");
            }
            for name in ["欧阳明华", "李秀英"] {
                assert!(!page.text.contains(name), "{role} sees a name in clear on {path}");
            }
        }
        let page = console.get(&batch).await;
        assert!(page.text.contains("欧***"), "{}", page.text);
        assert!(
            page.text.contains(&format!("{}***********{}", &world.ids[0][..3], &world.ids[0][14..])),
            "{}",
            page.text
        );
    }

    // A refused file lists every problem by line without echoing the number it refused.
    let clerk = Console::sign_in(&app, &world.clerk_a).await;
    let programme_page = clerk.get(&format!("/console/subsidies/programmes/{}", world.programme)).await;
    let bad_id = format!("{}0", &world.ids[0][..17]);
    let bad_id = if bad_id == world.ids[0] { format!("{}1", &world.ids[0][..17]) } else { bad_id };
    let file = format!(
        "姓名,身份证号,钱包编号,金额,备注\r\n张三,{bad_id},0021000000000101,300.00,\r\n李四,{},002100000000010,-5,\r\n",
        world.ids[1]
    );
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf_of(&programme_page.text))
        .text("idempotency_key", "bad-file")
        .text("period", "2026-12")
        .text("line_count", "2")
        .text("total", "295.00")
        .part("file", reqwest::multipart::Part::bytes(file.into_bytes()).file_name("batch.csv"));
    let reply = clerk
        .client
        .post(format!("{}/console/subsidies/programmes/{}/batches", app.address, world.programme))
        .header("cookie", format!("carepay_console_session={}", clerk.session_cookie))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let page = read(reply).await;
    assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", page.text);
    assert!(page.text.contains("CITIZEN_ID_CHECK_DIGIT"), "{}", page.text);
    assert!(page.text.matches(r#"<tr class="file-error">"#).count() >= 3, "{}", page.text);
    assert!(!page.text.contains(&bad_id), "the refused ID number is echoed: {}", page.text);

    // The file streams into the upload only after the token: a file sent before it is refused
    // as a forgery, and a good file sent after it is a batch.
    let good = format!("姓名,身份证号,钱包编号,金额,备注\r\n张三,{},0021000000000101,300.00,\r\n", world.ids[1]);
    let post = |form: reqwest::multipart::Form| {
        clerk
            .client
            .post(format!("{}/console/subsidies/programmes/{}/batches", app.address, world.programme))
            .header("cookie", format!("carepay_console_session={}", clerk.session_cookie))
            .multipart(form)
            .send()
    };
    let file_first = reqwest::multipart::Form::new()
        .part("file", reqwest::multipart::Part::bytes(good.clone().into_bytes()).file_name("batch.csv"))
        .text("csrf", csrf_of(&programme_page.text))
        .text("idempotency_key", "file-first")
        .text("period", "2026-12")
        .text("line_count", "1")
        .text("total", "300.00");
    let refused = read(post(file_first).await.unwrap()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let in_order = reqwest::multipart::Form::new()
        .text("csrf", csrf_of(&programme_page.text))
        .text("idempotency_key", "in-order")
        .text("period", "2026-12")
        .text("line_count", "1")
        .text("total", "300.00")
        .part("file", reqwest::multipart::Part::bytes(good.into_bytes()).file_name("batch.csv"));
    let reply = post(in_order).await.unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER, "an accepted file goes to its batch");
    let location = reply.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/console/subsidies/batches/bat_"), "{location}");
    let pool = app.db.raw_pool().await;
    let batches: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM subsidy_batches WHERE idempotency_key IN ('file-first', 'in-order')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(batches, 1, "only the file sent after the token made a batch");
}

async fn forms_act_only_for_roles_and_scopes_the_api_allows(app: TestApp) {
    let world = world(&app).await;
    let day = format!("/console/reconciliation/wallets/{WALLET}/days/{}", today());
    let batch = format!("/console/subsidies/batches/{}", world.batch);
    let terminal = format!("/console/facilities/{}/terminals/{}", world.facility, world.terminal);
    // (form, roles allowed to send it within the scope); every form is sent with a valid token.
    let forms: Vec<(String, &[&str])> = vec![
        (format!("{day}/run"), &["admin", "accountant"]),
        (format!("{terminal}/suspend"), &["admin", "facility_manager"]),
        (format!("{batch}/approve"), &["subsidy_approver"]),
    ];
    for role in ALL_ROLES {
        let inside =
            Console::sign_in(&app, &app.issue_token(&app.root_token, role, Some(&world.district_a)).await).await;
        let outside =
            Console::sign_in(&app, &app.issue_token(&app.root_token, role, Some(&world.district_b)).await).await;
        for (path, allowed) in &forms {
            let page = outside.post(path, &[("csrf", outside.csrf.as_str())], None).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{role} out of scope, {path}: {}", page.text);
            if !allowed.contains(&role) {
                let page = inside.post(path, &[("csrf", inside.csrf.as_str())], None).await;
                assert_eq!(page.status, StatusCode::FORBIDDEN, "{role} in scope, {path}: {}", page.text);
            }
        }
    }
    let batch_now = app.get(&format!("/v1/subsidy-batches/{}", world.batch), &app.root_token).await;
    assert_eq!(batch_now.body["status"], "draft", "a refused form moved the batch");
    let terminal_now = app.get(&format!("/v1/terminals/{}", world.terminal), &app.root_token).await;
    assert_eq!(terminal_now.body["status"], "active", "a refused form suspended the terminal");

    // The uploader may not approve their own batch, even with an approver's page open.
    let clerk = Console::sign_in(&app, &world.clerk_a).await;
    let page = clerk.post(&format!("{batch}/approve"), &[("csrf", clerk.csrf.as_str())], None).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.text);
    let manager =
        Console::sign_in(&app, &app.issue_token(&app.root_token, "facility_manager", Some(&world.district_a)).await)
            .await;
    let page = manager.post(&format!("{terminal}/suspend"), &[("csrf", manager.csrf.as_str())], None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.text);
    let terminal_now = app.get(&format!("/v1/terminals/{}", world.terminal), &app.root_token).await;
    assert_eq!(terminal_now.body["status"], "suspended");
}

async fn a_wallet_pages_statement_upload_takes_only_that_wallets_file(app: TestApp) {
    use crate::reconciliation::{operator_line, statement_of};
    use carepay::domain::statement::EntryKind;
    const OTHER_WALLET: &str = "0021000000000002";
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    app.create_facility(root, &district, "甲助餐点", WALLET).await;
    app.create_facility(root, &district, "乙助餐点", OTHER_WALLET).await;
    let accountant = app.issue_token(root, "accountant", Some(&district)).await;
    let console = Console::sign_in(&app, &accountant).await;
    let page = console.get(&format!("/console/reconciliation/wallets/{WALLET}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let action = format!("/console/reconciliation/statements?wallet_id={WALLET}");
    assert!(page.text.contains(&format!(r#"action="{action}""#)), "{}", page.text);

    let day = today();
    let fee = [operator_line(&format!("{day} 08:00:00"), "OPFEE1", EntryKind::Fee, 50)];
    let statement = |wallet: &str| statement_of(wallet, &day, &fee);
    let post = |bytes: Vec<u8>| {
        let form = reqwest::multipart::Form::new()
            .text("csrf", csrf_of(&page.text))
            .part("file", reqwest::multipart::Part::bytes(bytes).file_name("statement.csv"));
        console
            .client
            .post(format!("{}{action}", app.address))
            .header("cookie", format!("carepay_console_session={}", console.session_cookie))
            .multipart(form)
            .send()
    };
    // Another facility's statement, though the accountant may reach it too: refused by name.
    let refused = read(post(statement(OTHER_WALLET)).await.unwrap()).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text);
    assert!(refused.text.contains("STATEMENT_WRONG_WALLET"), "{}", refused.text);
    let pool = app.db.raw_pool().await;
    let files: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM statement_files").fetch_one(&pool).await.unwrap();
    assert_eq!(files, 0);

    let reply = post(statement(WALLET)).await.unwrap();
    assert_eq!(reply.status(), StatusCode::SEE_OTHER);
    assert_eq!(reply.headers()[LOCATION], format!("/console/reconciliation/wallets/{WALLET}/days/{day}").as_str());
}

async fn the_service_address_leads_to_the_console_and_unknown_console_pages_are_pages(app: TestApp) {
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let root = client.get(format!("{}/", app.address)).send().await.unwrap();
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(root.headers()[LOCATION], "/console");

    let unknown = client.get(format!("{}/console/no-such-page", app.address)).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    assert!(unknown.headers()["content-type"].to_str().unwrap().starts_with("text/html"), "{:?}", unknown.headers());
    assert!(unknown.headers().contains_key("content-security-policy"));
    let page = unknown.text().await.unwrap();
    assert!(
        page.contains("NO_SUCH_PAGE") && page.contains("没有这个页面") && page.contains("href=\"/console\""),
        "{page}"
    );

    // The API keeps its JSON answer.
    let api = client.get(format!("{}/v1/no-such-route", app.address)).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.json::<serde_json::Value>().await.unwrap()["code"], "NO_SUCH_ROUTE");
}
