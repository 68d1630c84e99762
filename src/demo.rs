//! `carepay demo` and `carepay serve --demo`: a realistic district for newcomers, seeded through
//! the same use cases the API and the terminals call, against the in-process sandbox operator.
//!
//! Every step finds what an earlier run made before making it (by name, by idempotency key or
//! by terminal request id), so running it again adds nothing; only the role tokens are
//! issued anew (their secrets are never stored, so the old ones cannot be shown again) and the
//! earlier ones revoked. The sandbox's side (wallets) lives in memory and is opened again on
//! every run.
//!
//! The district has a week behind it: the demo moves the app's clock (and so the operator's,
//! which shares it) back to each of the last days in turn and takes that day's payments,
//! then reconciles the days that have ended. A clock that cannot be moved (the system clock)
//! gets today's payments only.

use std::time::Duration;

use anyhow::Context as _;

use base64::Engine as _;
use ring::signature::KeyPair as _;

use crate::access::{NewToken, Secret};
use crate::app::App;
use crate::callbacks::endpoints::NewEndpoint;
use crate::directory::{NewFacility, NewRegion, NewTerminal, PageRequest};
use crate::disbursement::{NewProgramme, Upload, UploadRequest};
use crate::domain::access::Principal;
use crate::domain::batch::{BatchStatus, Period};
use crate::domain::callbacks::{EndpointUrl, EventOwner, EventTypes};
use crate::domain::directory::{FacilityKind, Name, PublicKey, Region, RegionLevel, Terminal, WalletId};
use crate::domain::disbursement::ControlTotals;
use crate::domain::ids::{Cursor, RegionId};
use crate::domain::money::Amount;
use crate::domain::payment::{PaymentMethod, PaymentStatus, RequestId};
use crate::domain::reconciliation::{business_day, day_start_ms};
use crate::domain::role::Role;
use crate::domain::text::{FreeText, NOTE};
use crate::domain::time::UnixMs;
use crate::operator::sandbox::Sandbox;
use crate::operator::sandbox::faults::StatementTamper;
use crate::payments::{PayCommand, RefundCommand};
use crate::reconciliation::Source;

const DISTRICT: &str = "吴江区";
/// Streets and towns, each with its villages and communities.
const TOWNS: [(&str, [&str; 2]); 3] =
    [("松陵街道", ["流虹社区", "江陵社区"]), ("平望镇", ["庙头村", "溪港村"]), ("盛泽镇", ["黄家溪村", "南麻社区"])];
/// Two facilities per village: (name, kind).
const FACILITIES: [(&str, FacilityKind); 12] = [
    ("流虹社区助餐点", FacilityKind::MealCanteen),
    ("流虹日间照料中心", FacilityKind::CommunityCareCentre),
    ("江陵敬老院", FacilityKind::NursingHome),
    ("江陵居家养老服务站", FacilityKind::HomeCareProvider),
    ("庙头村老年食堂", FacilityKind::MealCanteen),
    ("庙头村颐养院", FacilityKind::NursingHome),
    ("溪港村助餐点", FacilityKind::MealCanteen),
    ("溪港村居家服务社", FacilityKind::HomeCareProvider),
    ("黄家溪村幸福院", FacilityKind::CommunityCareCentre),
    ("黄家溪村老年食堂", FacilityKind::MealCanteen),
    ("南麻社区养老院", FacilityKind::NursingHome),
    ("南麻社区助餐点", FacilityKind::MealCanteen),
];
/// Payments per facility, and the payer codes they use in turn (the sandbox derives a payer
/// wallet from a code; the last four digits choose the outcome, `2222` an insufficient balance).
const PAYMENTS_PER_FACILITY: usize = 6;
const PAYER_CODES: [&str; 6] = [
    "013400000000010000",
    "013400000000020000",
    "013400000000030000",
    "013400000000040000",
    "013400000000052222",
    "013400000000060000",
];
/// Every third facility refunds its first payment of the day in part.
const REFUND_EVERY: usize = 3;
/// Days of payments, today included.
const DAYS: i64 = 7;
/// Lunch, when the canteens' payments are taken on the days behind (ms after midnight).
const LUNCH_MS: i64 = 11 * 3_600_000 + 30 * 60_000;
/// Facilities whose ended days are reconciled (the first few).
const RECONCILED_FACILITIES: usize = 3;
/// What the operator's statement gets wrong, by (days ago, facility): everything else matches.
/// Yesterday's discrepancies are left open for the accountant; earlier days are resolved and
/// closed, and yesterday is not closed yet.
const TAMPERED: [(i64, usize, StatementTamper); 3] =
    [(1, 0, StatementTamper::ChangeAmount), (1, 1, StatementTamper::AddLine), (4, 0, StatementTamper::AddLine)];
const PROGRAMME: &str = "高龄津贴（演示）";
const FUNDING_WALLET: &str = "0051000000000001";
/// Beneficiaries: name, first 17 ID digits, wallet, what the sandbox does with the wallet.
const BENEFICIARIES: [(&str, &str, &str, Beneficiary); 10] = [
    ("张秀英", "32058419400101002", "0061000000000101", Beneficiary::Pays),
    ("李桂兰", "32058419410202004", "0061000000000102", Beneficiary::Pays),
    ("王建国", "32058419420303001", "0061000000000103", Beneficiary::Pays),
    ("刘淑珍", "32058419430404006", "0061000000000104", Beneficiary::Pays),
    ("陈志强", "32058419440505003", "0061000000000105", Beneficiary::Pays),
    ("杨玉兰", "32058419450606008", "0061000000000106", Beneficiary::Pays),
    ("赵国华", "32058419460707005", "0061000000000107", Beneficiary::Pays),
    ("黄凤英", "32058419470808000", "0061000000000108", Beneficiary::Frozen),
    ("周德明", "32058419480909007", "0061000000000109", Beneficiary::NoWallet),
    ("吴美华", "32058419491010004", "0061000000000110", Beneficiary::OtherHolder),
];
const BENEFIT_FEN: i64 = 30_000;
const ROLES: [(Role, &str); 6] = [
    (Role::Admin, "演示 区管理员"),
    (Role::Accountant, "演示 会计"),
    (Role::SubsidyClerk, "演示 民政经办"),
    (Role::SubsidyApprover, "演示 民政复核"),
    (Role::FacilityManager, "演示 助餐点负责人"),
    (Role::Auditor, "演示 审计"),
];
/// Labels of demo tokens start with this; a new run revokes the live ones.
const TOKEN_LABEL_PREFIX: &str = "演示 ";
const MS_PER_DAY: i64 = 86_400_000;
/// Longest wait for the subsidy batch to be paid by the worker.
const BATCH_TIMEOUT_MS: u64 = 60_000;

#[derive(Clone, Copy)]
enum Beneficiary {
    Pays,
    Frozen,
    NoWallet,
    /// The wallet belongs to someone else: the operator answers NAME_MISMATCH.
    OtherHolder,
}

/// What the demo made, and the tokens to sign in with (shown once).
#[derive(Debug)]
pub struct DemoReport {
    pub district_id: RegionId,
    pub facilities: usize,
    pub payments: usize,
    pub refunds: usize,
    pub batch_id: String,
    pub reconciled_days: usize,
    pub tokens: Vec<(Role, String, Secret)>,
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "demo district {} ({DISTRICT}): {} facilities with terminals, {} payments and {} refunds over the last \
             {DAYS} days, subsidy batch {} paid, {} facility days reconciled",
            self.district_id, self.facilities, self.payments, self.refunds, self.batch_id, self.reconciled_days
        )?;
        writeln!(f, "tokens (shown once; a new `carepay demo` run issues new ones):")?;
        for (role, label, secret) in &self.tokens {
            writeln!(f, "  {:<17} {label}  {}", role.as_str(), secret.expose())?;
        }
        Ok(())
    }
}

fn demo_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}

fn name(raw: &str) -> anyhow::Result<Name> {
    Name::parse(raw).map_err(demo_error)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

fn citizen_id(first17: &str) -> String {
    let digits: [u8; 17] = first17.as_bytes().try_into().expect("17 digits");
    format!("{first17}{}", crate::domain::citizen_id::check_char(&digits) as char)
}

/// Seed the demo district (see the module comment). `sandbox` is the in-process operator
/// `app` talks to.
pub async fn seed(app: &App, sandbox: &Sandbox) -> anyhow::Result<DemoReport> {
    // A short-lived admin token acts for the seeding, so every step is an audited action of
    // a person-like actor; it is revoked at the end.
    let seeder_token = app
        .issue_token_unchecked(
            NewToken {
                role: Role::Admin, scope_region_id: None, label: name("演示数据导入")?, lifetime_days: Some(1)
            },
            None,
        )
        .await
        .map_err(demo_error)?;
    let seeder = app.authenticate(seeder_token.secret.expose(), None).await.map_err(demo_error)?;

    let regions = all_regions(app, &seeder).await?;
    let district = find_or_create_region(app, &seeder, &regions, None, RegionLevel::District, DISTRICT).await?;
    let mut villages = Vec::new();
    for (town, town_villages) in TOWNS {
        let town = find_or_create_region(app, &seeder, &regions, Some(&district), RegionLevel::Town, town).await?;
        for village in town_villages {
            villages
                .push(find_or_create_region(app, &seeder, &regions, Some(&town), RegionLevel::Village, village).await?);
        }
    }

    let tokens = issue_role_tokens(app, &seeder, &district, &villages[0]).await?;
    let principal = |role: Role| -> anyhow::Result<Principal> {
        let (_, _, principal) = tokens.iter().find(|(r, _, _)| *r == role).expect("a token per role");
        Ok(principal.clone())
    };

    // Facilities, each with a terminal, a merchant wallet at the operator and a week's takings.
    let existing = app.facilities(&seeder, &PageRequest { after: None, limit: Some(200) }).await.map_err(demo_error)?;
    let mut facilities = Vec::new();
    let mut terminals_by_facility = Vec::new();
    for (n, (facility_name, kind)) in FACILITIES.into_iter().enumerate() {
        let wallet = format!("00210000000030{:02}", n + 1);
        sandbox.open_wallet(&wallet, facility_name, 1, Amount::ZERO).or_else(already_open)?;
        let village = &villages[n / 2];
        let facility = match existing.iter().find(|f| f.merchant_wallet_id.as_str() == wallet) {
            Some(facility) => facility.clone(),
            None => app
                .create_facility(
                    &seeder,
                    NewFacility {
                        region_id: village.id.clone(),
                        organisation_id: None,
                        name: name(facility_name)?,
                        kind,
                        merchant_wallet_id: WalletId::parse(&wallet).map_err(demo_error)?,
                    },
                )
                .await
                .map_err(demo_error)?,
        };
        let terminals =
            app.terminals(&seeder, Some(&facility.id), &PageRequest::default()).await.map_err(demo_error)?;
        let terminal = match terminals.into_iter().next() {
            Some(terminal) => terminal,
            None => app
                .register_terminal(
                    &seeder,
                    NewTerminal {
                        facility_id: facility.id.clone(),
                        label: name("一号收银台")?,
                        public_key: new_public_key()?,
                    },
                )
                .await
                .map_err(demo_error)?,
        };
        terminals_by_facility.push(terminal);
        facilities.push(facility);
    }

    // Callback endpoints: three facilities' billing systems and the civil-affairs office.
    // The week is taken with the clock moved a day at a time: a notification signed on one
    // day would reach carepay after the clock has moved on and be refused as stale (and
    // retried, and logged). Every demo payment settles in its request, so nothing is missed.
    let notify_url = sandbox.notify_url();
    sandbox.set_notify_url(None);
    let taken = take_payments(app, &terminals_by_facility).await;
    sandbox.set_notify_url(notify_url);
    let (payments, refunds) = taken?;

    let mut owners: Vec<(EventOwner, &[&str])> = facilities
        .iter()
        .take(3)
        .map(|f| (EventOwner::Facility(f.id.clone()), &["payment.succeeded", "refund.succeeded"][..]))
        .collect();
    owners.push((EventOwner::Office(district.id.clone()), &["transfer.failed", "batch.completed"][..]));
    for (n, (owner, event_types)) in owners.into_iter().enumerate() {
        let url = format!("https://carepay-demo.invalid/{n}");
        let known = app.endpoints(&seeder, Some(&owner), &PageRequest::default()).await.map_err(demo_error)?;
        if known.iter().any(|endpoint| endpoint.url.as_str() == url) {
            continue;
        }
        let new = NewEndpoint {
            owner,
            url: EndpointUrl::parse(&url).map_err(demo_error)?,
            event_types: EventTypes::parse(event_types).map_err(demo_error)?,
            ed25519: n == 0,
        };
        app.create_endpoint(&seeder, new).await.map_err(demo_error)?;
    }

    let batch_id = pay_subsidies(
        app,
        sandbox,
        &seeder,
        &district,
        &principal(Role::SubsidyClerk)?,
        &principal(Role::SubsidyApprover)?,
    )
    .await?;
    let reconciled = reconcile(app, sandbox, &principal(Role::Accountant)?, &facilities).await?;

    app.revoke_token(&seeder, &seeder.token_id).await.map_err(demo_error)?;
    Ok(DemoReport {
        district_id: district.id,
        facilities: facilities.len(),
        payments,
        refunds,
        batch_id,
        reconciled_days: reconciled,
        tokens: tokens
            .into_iter()
            .map(|(role, issued, _)| (role, issued.token.label.as_str().to_owned(), issued.secret))
            .collect(),
    })
}

/// Each facility's payments (and a refund at every third) on each of the last [`DAYS`] days,
/// each day's at lunch on that day by the app's clock, today's now. Leaves the clock at the
/// wall-clock time.
async fn take_payments(app: &App, terminals: &[Terminal]) -> anyhow::Result<(usize, usize)> {
    let (mut payments, mut refunds) = (0, 0);
    let today = business_day(UnixMs::now());
    let today_start_ms = day_start_ms(&today).context("today's start")?;
    for days_ago in (0..DAYS).rev() {
        let day_start = today_start_ms - days_ago * MS_PER_DAY;
        let at_ms = if days_ago == 0 { UnixMs::now().0 } else { day_start + LUNCH_MS };
        // A clock that cannot be moved takes today's payments only.
        if !app.clock.set_ms(at_ms) && days_ago > 0 {
            continue;
        }
        let day = business_day(UnixMs(day_start));
        for (n, terminal) in terminals.iter().enumerate() {
            for k in 0..PAYMENTS_PER_FACILITY {
                let code = PAYER_CODES[(n + k) % PAYER_CODES.len()];
                let fen = 800 + i64::try_from((n * 7 + k * 13 + days_ago as usize * 5) % 40).unwrap_or(0) * 50;
                let amount = Amount::from_fen(fen).map_err(demo_error)?;
                let request_id = format!("demo-{day}-{:02}-{k}", n + 1);
                let command = PayCommand {
                    request_id: RequestId::parse(&request_id).map_err(demo_error)?,
                    request_sha256: sha256_hex(&format!("{request_id}|{amount}|{code}")),
                    amount,
                    method: PaymentMethod::PayerCode,
                    payer_code: code.to_owned(),
                    description: String::from("午餐"),
                };
                let payment = app.pay(terminal, command).await.map_err(demo_error)?;
                payments += 1;
                if k == 0 && n % REFUND_EVERY == 0 && payment.status == PaymentStatus::Succeeded {
                    let request_id = format!("demo-{day}-{:02}-refund", n + 1);
                    let refund = Amount::from_fen(payment.amount.fen() / 2).map_err(demo_error)?;
                    let command = RefundCommand {
                        request_id: RequestId::parse(&request_id).map_err(demo_error)?,
                        request_sha256: sha256_hex(&format!("{request_id}|{}|{refund}", payment.id)),
                        payment_id: payment.id.clone(),
                        amount: refund,
                        reason: String::from("少打一份菜"),
                    };
                    app.refund(terminal, command).await.map_err(demo_error)?;
                    refunds += 1;
                }
                // A few seconds between payments at the counter.
                app.clock.advance_ms(20_000);
            }
        }
    }
    app.clock.set_ms(UnixMs::now().0);
    Ok((payments, refunds))
}

fn already_open(refusal: crate::operator::sandbox::state::Refusal) -> anyhow::Result<()> {
    // A second run in the same process finds the wallet there.
    if refusal.code == "WALLET_EXISTS" { Ok(()) } else { Err(anyhow::anyhow!("{refusal:?}")) }
}

fn new_public_key() -> anyhow::Result<PublicKey> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("key generation"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| anyhow::anyhow!("key"))?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair.public_key().as_ref());
    PublicKey::parse(&encoded).map_err(demo_error)
}

async fn all_regions(app: &App, principal: &Principal) -> anyhow::Result<Vec<Region>> {
    let mut regions = Vec::new();
    loop {
        let after = regions.last().map(|r: &Region| Cursor::after(&r.id));
        let page = app.regions(principal, &PageRequest { after, limit: Some(200) }).await.map_err(demo_error)?;
        if page.is_empty() {
            return Ok(regions);
        }
        regions.extend(page);
    }
}

async fn find_or_create_region(
    app: &App,
    principal: &Principal,
    known: &[Region],
    parent: Option<&Region>,
    level: RegionLevel,
    region_name: &str,
) -> anyhow::Result<Region> {
    let parent_id = parent.map(|p| p.id.clone());
    if let Some(region) = known.iter().find(|r| r.name.as_str() == region_name && r.parent_id == parent_id) {
        return Ok(region.clone());
    }
    let new = NewRegion { parent_id, level, name: name(region_name)? };
    app.create_region(principal, new).await.map_err(demo_error)
}

/// Revokes the live demo tokens of an earlier run and issues one per role.
async fn issue_role_tokens(
    app: &App,
    seeder: &Principal,
    district: &Region,
    village: &Region,
) -> anyhow::Result<Vec<(Role, crate::access::IssuedToken, Principal)>> {
    let mut after: Option<Cursor> = None;
    loop {
        let page =
            app.tokens(seeder, &PageRequest { after: after.clone(), limit: Some(200) }).await.map_err(demo_error)?;
        let Some(last) = page.last() else { break };
        after = Some(Cursor::after(&last.id));
        for token in &page {
            if token.label.as_str().starts_with(TOKEN_LABEL_PREFIX) && token.revoked_at.is_none() {
                app.revoke_token(seeder, &token.id).await.map_err(demo_error)?;
            }
        }
    }
    let mut tokens = Vec::new();
    for (role, label) in ROLES {
        // The facility manager runs the first village's canteen; everyone else works district-wide.
        let region = if role == Role::FacilityManager { village } else { district };
        let new = NewToken { role, scope_region_id: Some(region.id.clone()), label: name(label)?, lifetime_days: None };
        let issued = app.issue_token(seeder, new).await.map_err(demo_error)?;
        let principal = app.authenticate(issued.secret.expose(), None).await.map_err(demo_error)?;
        tokens.push((role, issued, principal));
    }
    Ok(tokens)
}

/// The office's programme and this month's batch: uploaded by the clerk, approved by the
/// approver, paid by the disbursement worker; three beneficiaries' transfers fail.
async fn pay_subsidies(
    app: &App,
    sandbox: &Sandbox,
    admin: &Principal,
    district: &Region,
    clerk: &Principal,
    approver: &Principal,
) -> anyhow::Result<String> {
    let today = business_day(UnixMs::now());
    let (year, month) = (&today[..4], &today[..7]);
    sandbox
        .open_wallet(FUNDING_WALLET, "吴江区民政局", 1, Amount::from_fen(100_000_000).map_err(demo_error)?)
        .or_else(already_open)?;
    for (holder, _, wallet, outcome) in BENEFICIARIES {
        let holder = match outcome {
            Beneficiary::NoWallet => continue,
            Beneficiary::OtherHolder => "吴美",
            _ => holder,
        };
        sandbox.open_wallet(wallet, holder, 2, Amount::ZERO).or_else(already_open)?;
        if matches!(outcome, Beneficiary::Frozen) {
            sandbox.freeze(wallet).map_err(|refusal| anyhow::anyhow!("{refusal:?}"))?;
        }
    }
    let programme_id = match app.store.programme_id_by_name(&district.id, PROGRAMME).await? {
        Some(id) => id,
        None => {
            let new = NewProgramme {
                region_id: district.id.clone(),
                name: name(PROGRAMME)?,
                funding_wallet_id: WalletId::parse(FUNDING_WALLET).map_err(demo_error)?,
                budget: Amount::from_fen(50_000_000).map_err(demo_error)?,
                per_payment_cap: Amount::from_fen(50_000).map_err(demo_error)?,
                per_period_cap: Amount::from_fen(50_000).map_err(demo_error)?,
                designated_merchants: Vec::new(),
                starts_on: format!("{year}-01-01"),
                ends_on: format!("{year}-12-31"),
            };
            app.create_programme(admin, new).await.map_err(demo_error)?.id
        }
    };
    let mut file = String::from("姓名,身份证号,钱包编号,金额,备注\n");
    for (holder, id17, wallet, _) in BENEFICIARIES {
        file.push_str(&format!("{holder},{},{wallet},300.00,{month} 高龄津贴\n", citizen_id(id17)));
    }
    let lines = u64::try_from(BENEFICIARIES.len()).unwrap_or(u64::MAX);
    let request = UploadRequest {
        programme_id,
        period: Period::parse(month).map_err(demo_error)?,
        idempotency_key: format!("demo-{month}"),
        stated: ControlTotals {
            line_count: lines,
            total: Amount::from_fen(BENEFIT_FEN * i64::try_from(lines).unwrap_or(0)).map_err(demo_error)?,
        },
    };
    let earlier = app.store.batch_id_by_key(&request.programme_id, &request.idempotency_key).await?;
    let batch = match earlier {
        Some(id) => app.batch(clerk, &id).await.map_err(demo_error)?,
        None => {
            match app.upload_batch(clerk, request, std::io::Cursor::new(file.into_bytes())).await.map_err(demo_error)? {
                Upload::Accepted(batch) => batch,
                Upload::Rejected(rejection) => anyhow::bail!("the demo batch file was refused: {:?}", rejection.errors),
            }
        }
    };
    if batch.status == BatchStatus::Draft {
        app.approve_batch(approver, &batch.id).await.map_err(demo_error)?;
        app.run_batch(clerk, &batch.id).await.map_err(demo_error)?;
    }
    if batch.status != BatchStatus::Completed {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let worker = tokio::spawn(crate::disbursement::worker::run(app.clone(), async move {
            let _ = stop_rx.await;
        }));
        let started = std::time::Instant::now();
        loop {
            let now = app.store.batch(&batch.id).await?.map(|b| b.status);
            if now == Some(BatchStatus::Completed) {
                break;
            }
            if started.elapsed() > Duration::from_millis(BATCH_TIMEOUT_MS) {
                anyhow::bail!("the demo batch {} was not paid within {BATCH_TIMEOUT_MS} ms", batch.id);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = stop_tx.send(());
        let _ = worker.await;
    }
    Ok(batch.id.to_string())
}

/// Today's statements of the first facilities, with the operator's mistakes, imported, run,
/// resolved and the days closed. A day already run is left as it is.
/// The ended days of the last week, for the first facilities: the operator's statement of
/// each (as published after midnight), imported and run; discrepancies resolved and the day
/// closed, except yesterday's, which are this morning's work. Returns the days reconciled.
async fn reconcile(
    app: &App,
    sandbox: &Sandbox,
    accountant: &Principal,
    facilities: &[crate::domain::directory::Facility],
) -> anyhow::Result<usize> {
    let today_start_ms = day_start_ms(&business_day(UnixMs::now())).context("today's start")?;
    let mut reconciled = 0;
    for days_ago in (1..DAYS).rev() {
        // Without a movable clock there are no ended days with payments.
        if !app.clock.can_move() {
            break;
        }
        let day_start = today_start_ms - days_ago * MS_PER_DAY;
        let day = business_day(UnixMs(day_start));
        let published_ms = day_start + MS_PER_DAY + 30 * 60_000;
        for (n, facility) in facilities.iter().take(RECONCILED_FACILITIES).enumerate() {
            let wallet = facility.merchant_wallet_id.as_str();
            if app.store.latest_run(wallet, &day).await?.is_none() {
                let tamper = TAMPERED.iter().find(|(ago, at, _)| *ago == days_ago && *at == n).map(|(_, _, t)| *t);
                if let Some(tamper) = tamper {
                    sandbox.faults().tamper_statements(tamper, 1).map_err(|error| anyhow::anyhow!("{error:?}"))?;
                }
                let (statement, _) =
                    sandbox.statement_file_as_of(&day, wallet, published_ms).map_err(|r| anyhow::anyhow!("{r:?}"))?;
                app.import_statement(accountant, statement.into(), Source::Upload, None).await.map_err(demo_error)?;
                app.run_reconciliation(accountant, wallet, &day).await.map_err(demo_error)?;
            }
            reconciled += 1;
            if days_ago == 1 {
                continue;
            }
            for discrepancy in app.discrepancies(accountant, wallet, &day, true).await.map_err(demo_error)? {
                let note = FreeText::parse("演示：已与运营方核对，以运营方对账单为准", NOTE).map_err(demo_error)?;
                app.resolve_discrepancy(accountant, &discrepancy.id, "operator_error", &note, None)
                    .await
                    .map_err(demo_error)?;
            }
            let (_, status) = app.reconciliation_day(accountant, wallet, &day).await.map_err(demo_error)?;
            if status != "closed" {
                app.close_reconciliation_day(accountant, wallet, &day).await.map_err(demo_error)?;
            }
        }
    }
    Ok(reconciled)
}
