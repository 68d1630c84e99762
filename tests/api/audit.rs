//! The audit trail: every directory and token change is recorded with who, when and which
//! request; auditors see their scope; any edit of a stored record is found and named.

use reqwest::{Method, StatusCode};
use serde_json::json;

use carepay::domain::audit::{AuditKeys, AuditRecord, GENESIS_HASH};

use crate::backend_tests;
use crate::helpers::{TEST_SECRET_KEYS, TestApp, terminal_key_pair};

backend_tests!(
    every_change_is_recorded_with_who_and_which_request,
    editing_or_removing_a_record_is_detected_and_named,
    auditors_see_only_their_scope_and_other_roles_see_nothing,
    an_export_holds_every_record_in_scope_with_its_hashes,
    every_kind_of_tampering_is_detected,
    checkpoints_are_signed_and_a_forged_or_malformed_one_is_refused,
    records_written_before_the_chain_was_keyed_count_once_sealed,
    the_service_logs_signed_checkpoints_that_find_a_cut_tail,
);

/// `carepay audit ...` against the test's database, with the test server's keys.
fn carepay_audit(app: &TestApp, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
        .arg("audit")
        .args(args)
        .args(["--database-url", &app.db.url])
        .env_remove("DATABASE_URL")
        .env("CAREPAY_SECRET_KEY", TEST_SECRET_KEYS)
        .output()
        .unwrap()
}

async fn actions(app: &TestApp, token: &str) -> Vec<String> {
    let reply = app.get("/v1/audit?limit=200", token).await.expect(StatusCode::OK);
    reply.body["items"].as_array().unwrap().iter().map(|item| item["action"].as_str().unwrap().to_owned()).collect()
}

async fn every_change_is_recorded_with_who_and_which_request(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let facility = app.create_facility(root, &district, "敬老院", "0021000000000001").await;
    let (_, key) = terminal_key_pair();
    let terminal = app.register_terminal(root, &facility, &key).await;
    let response = app
        .client
        .post(format!("{}/v1/terminals/{terminal}/suspend", app.address))
        .bearer_auth(root)
        .header("x-request-id", "req-suspend-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, new_key) = terminal_key_pair();
    app.post(&format!("/v1/terminals/{terminal}/rotate-key"), root, json!({"public_key": new_key}))
        .await
        .expect(StatusCode::OK);
    let issued = app
        .post("/v1/tokens", root, json!({"role": "auditor", "region_id": district, "label": "审计"}))
        .await
        .expect(StatusCode::CREATED);
    let token_id = issued.body["token"]["id"].as_str().unwrap().to_owned();
    app.call(Method::DELETE, &format!("/v1/tokens/{token_id}"), root, None).await.expect(StatusCode::OK);
    // A refused request records nothing.
    app.post("/v1/regions", root, json!({"level": "town", "name": "无父镇"}))
        .await
        .expect(StatusCode::UNPROCESSABLE_ENTITY);

    let listed = app.get("/v1/audit?limit=200", root).await.expect(StatusCode::OK);
    let items = listed.body["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|item| item["action"].as_str().unwrap()).collect();
    // The first record is the test's own root token, issued from the command line path.
    assert_eq!(
        actions,
        vec![
            "token.issued",
            "region.created",
            "facility.created",
            "terminal.registered",
            "terminal.suspended",
            "terminal.key_rotated",
            "token.issued",
            "token.revoked"
        ]
    );
    assert_eq!(items[0]["actor"], "command-line");
    let suspended = &items[4];
    assert_eq!(suspended["object_id"], terminal.as_str());
    assert_eq!(suspended["request_id"], "req-suspend-1");
    assert_eq!(suspended["actor_role"], "admin");
    assert!(suspended["actor"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(suspended["summary"], json!({"before": "active", "after": "suspended"}));
    assert!(suspended["at"].as_str().unwrap().ends_with("+08:00"));
    for pair in items.windows(2) {
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "each record carries its predecessor's hash");
    }
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], true);
}

async fn editing_or_removing_a_record_is_detected_and_named(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    for n in 0..3 {
        app.create_facility(root, &district, &format!("助餐点{n}"), &format!("002100000000000{n}")).await;
    }
    let pool = app.db.raw_pool().await;
    let original: String =
        sqlx::query_scalar("SELECT summary FROM audit_log WHERE seq = 3").fetch_one(&pool).await.unwrap();
    sqlx::query("UPDATE audit_log SET summary = '{\"name\":\"改过\"}' WHERE seq = 3").execute(&pool).await.unwrap();
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], false);
    assert_eq!(verdict.body["broken_at_seq"], 3);

    let output = carepay_audit(&app, &["verify"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("broken at record 3"), "{output:?}");

    // Put it back: intact again. Then remove the newest record instead: detected too.
    sqlx::query("UPDATE audit_log SET summary = $1 WHERE seq = 3").bind(original).execute(&pool).await.unwrap();
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], true, "{}", verdict.text);
    sqlx::query("DELETE FROM audit_log WHERE seq = 5").execute(&pool).await.unwrap();
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK);
    assert_eq!(verdict.body["intact"], false, "{}", verdict.text);
    assert_eq!(verdict.body["reason"], "the newest records were removed");
}

async fn auditors_see_only_their_scope_and_other_roles_see_nothing(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    app.create_facility(root, &town_a, "甲", "0021000000000001").await;
    app.create_facility(root, &town_b, "乙", "0021000000000002").await;
    let auditor_a = app.issue_token(root, "auditor", Some(&town_a)).await;
    let seen = actions(&app, &auditor_a).await;
    assert_eq!(seen, vec!["region.created", "facility.created", "token.issued"], "only town A's records");
    for role in ["facility_manager", "subsidy_clerk", "subsidy_approver", "accountant"] {
        let token = app.issue_token(root, role, Some(&town_a)).await;
        app.get("/v1/audit", &token).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
        app.get("/v1/audit/verify", &token).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
        app.get("/v1/audit/export", &token).await.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
    }
}

/// More records than one page, exported as CSV and as JSON lines: the same records as the
/// listing, in order, each with the hash of its predecessor, and only those in scope.
async fn an_export_holds_every_record_in_scope_with_its_hashes(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    app.create_facility(root, &town_b, "乙, \"平望\"", "0021000000000002").await;
    for n in 0..230 {
        app.create_facility(root, &town_a, &format!("甲{n}"), &format!("0022000000{n:06}")).await;
    }
    let auditor_a = app.issue_token(root, "auditor", Some(&town_a)).await;

    let csv = app.raw(Method::GET, "/v1/audit/export", Some(&auditor_a), None).await;
    assert_eq!(csv.status, StatusCode::OK);
    assert!(csv.content_type.starts_with("text/csv"), "{}", csv.content_type);
    let mut reader = csv::Reader::from_reader(csv.text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "seq");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // town A: the region, 230 facilities, the token; nothing of town B.
    assert_eq!(rows.len(), 232, "every record in scope, across pages");
    assert!(rows.iter().all(|row| !row[7].is_empty()));
    assert!(!csv.text.contains("平望"), "nothing outside the scope");
    let seqs: Vec<i64> = rows.iter().map(|row| row[0].parse().unwrap()).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "in sequence order");

    let ndjson = app.raw(Method::GET, "/v1/audit/export?format=ndjson", Some(&auditor_a), None).await;
    assert_eq!(ndjson.status, StatusCode::OK);
    assert_eq!(ndjson.content_type, "application/x-ndjson");
    let records: Vec<serde_json::Value> = ndjson.text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    assert_eq!(records.len(), rows.len());
    let listed = app.get("/v1/audit?limit=200", &auditor_a).await.expect(StatusCode::OK);
    for (listed, exported) in listed.body["items"].as_array().unwrap().iter().zip(&records) {
        assert_eq!(listed, exported, "an exported record is the listed one");
    }
    for (row, record) in rows.iter().zip(&records) {
        assert_eq!(row[11], record["hash"], "the CSV carries the same hash");
        assert_eq!(row[10], record["prev_hash"]);
    }

    // Continue after a record, and a format that does not exist.
    let after = seqs[100];
    let rest = app
        .raw(Method::GET, &format!("/v1/audit/export?format=ndjson&after_seq={after}"), Some(&auditor_a), None)
        .await;
    assert_eq!(rest.text.lines().count(), 131);
    app.get("/v1/audit/export?format=xml", &auditor_a).await.expect_problem(StatusCode::BAD_REQUEST, "INVALID_QUERY");
}

/// The audit log as an attacker with database access sees it: every row and the head.
#[derive(Clone, Debug)]
struct Stored {
    records: Vec<AuditRecord>,
    head: (i64, String),
}

async fn read_stored(pool: &sqlx::AnyPool) -> Stored {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT seq, at_ms, actor, actor_role, actor_region_id, action, object_kind, object_id, region_path, \
         summary, request_id, prev_hash, hash, recipe FROM audit_log ORDER BY seq",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let records = rows
        .iter()
        .map(|row| AuditRecord {
            seq: row.get(0),
            at_ms: row.get(1),
            actor: row.get(2),
            actor_role: row.get(3),
            actor_region_id: row.get(4),
            action: row.get(5),
            object_kind: row.get(6),
            object_id: row.get(7),
            region_path: row.get(8),
            summary: row.get(9),
            request_id: row.get(10),
            prev_hash: row.get(11),
            hash: row.get(12),
            recipe: row.get(13),
        })
        .collect();
    let head = sqlx::query("SELECT last_seq, last_hash FROM audit_head").fetch_one(pool).await.unwrap();
    Stored { records, head: (head.get(0), head.get(1)) }
}

/// Replace the whole log and head by `stored`, as someone writing the database directly would.
async fn write_stored(pool: &sqlx::AnyPool, stored: &Stored) {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("DELETE FROM audit_log").execute(&mut *tx).await.unwrap();
    for r in &stored.records {
        sqlx::query(
            "INSERT INTO audit_log (seq, at_ms, actor, actor_role, actor_region_id, action, object_kind, object_id, \
             region_path, summary, request_id, prev_hash, hash, recipe) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(r.seq)
        .bind(r.at_ms)
        .bind(&r.actor)
        .bind(&r.actor_role)
        .bind(&r.actor_region_id)
        .bind(&r.action)
        .bind(&r.object_kind)
        .bind(&r.object_id)
        .bind(&r.region_path)
        .bind(&r.summary)
        .bind(&r.request_id)
        .bind(&r.prev_hash)
        .bind(&r.hash)
        .bind(r.recipe)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE audit_head SET last_seq = $1, last_hash = $2")
        .bind(stored.head.0)
        .bind(&stored.head.1)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

/// The recipe carepay published before the chain was keyed (SHA-256 of length-prefixed
/// fields), written out again here from its description, as an attacker would.
fn public_recipe_hash(r: &AuditRecord) -> String {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    for field in [
        r.prev_hash.as_str(),
        &r.seq.to_string(),
        &r.at_ms.to_string(),
        &r.actor,
        &r.actor_role,
        r.actor_region_id.as_deref().unwrap_or(""),
        &r.action,
        &r.object_kind,
        &r.object_id,
        &r.summary,
        r.request_id.as_deref().unwrap_or(""),
    ] {
        hasher.update(&(field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finish())
}

/// Recompute every hash from `from_seq` on, re-linking the chain and moving the head: with the
/// public recipe (`None`), or with the keyed recipe under a key the attacker guessed.
fn rehash(stored: &mut Stored, from_seq: i64, guessed_key: Option<&AuditKeys>) {
    let mut prev = GENESIS_HASH.to_owned();
    for r in stored.records.iter_mut() {
        if r.seq >= from_seq {
            r.prev_hash = prev.clone();
            r.hash = match guessed_key {
                None => {
                    r.recipe = 1;
                    public_recipe_hash(r)
                }
                Some(keys) => keys.record_hash(r, carepay::domain::audit::Recipe::Keyed),
            };
        }
        prev = r.hash.clone();
    }
    if let Some(last) = stored.records.last() {
        stored.head = (last.seq, last.hash.clone());
    }
}

async fn export_checkpoint(app: &TestApp, token: &str) -> String {
    let response = app.client.get(format!("{}/v1/audit/export", app.address)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let checkpoint = response.headers()["audit-checkpoint"].to_str().unwrap().to_owned();
    response.text().await.unwrap();
    checkpoint
}

async fn verify_against(app: &TestApp, checkpoint: &str) -> serde_json::Value {
    let query = format!("/v1/audit/verify?checkpoint={}", checkpoint);
    app.get(&query, &app.root_token).await.expect(StatusCode::OK).body
}

/// Each way someone with write access to the database (but not the key file) might change
/// the record of what was done: every column of a record, records removed, reordered,
/// inserted, the tail cut off with the head moved back, the chain re-hashed by the public
/// recipe or by the keyed one under a guessed key. Each is found, checked against the
/// checkpoint an export handed out before, and named by the first record it breaks.
async fn every_kind_of_tampering_is_detected(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    app.create_facility(root, &town_a, "甲", "0021000000000001").await; // seq 5
    let town_admin = app.issue_token(root, "admin", Some(&town_a)).await; // seq 6
    app.create_facility(&town_admin, &town_a, "乙", "0021000000000002").await; // seq 7: a scoped actor
    app.create_facility(root, &town_a, "丙", "0021000000000003").await; // seq 8
    let checkpoint = export_checkpoint(&app, root).await;
    assert!(checkpoint.starts_with("8:"), "{checkpoint}");

    let pool = app.db.raw_pool().await;
    let original = read_stored(&pool).await;
    assert_eq!(original.records.len(), 8);
    let five = &original.records[4];
    assert_eq!(five.action, "facility.created");
    assert!(five.region_path.as_deref().unwrap().contains(&town_a));
    assert!(five.actor_region_id.is_none() && five.request_id.is_some());
    assert_eq!(original.records[6].actor_region_id.as_deref(), Some(town_a.as_str()));
    let town_b_path = original.records[3].region_path.clone().unwrap();
    assert!(town_b_path.contains(&town_b));
    let guessed = AuditKeys::derive(|_| [0u8; 32]);

    type Tamper = Box<dyn Fn(&mut Stored)>;
    let record = |seq: i64, edit: fn(&mut AuditRecord)| -> Tamper {
        Box::new(move |s: &mut Stored| edit(&mut s.records[usize::try_from(seq - 1).unwrap()]))
    };
    let town_b_for_five = town_b_path.clone();
    let town_b_for_rehash = town_b_path.clone();
    let cases: Vec<(&str, Tamper, i64, &str)> = vec![
        ("at_ms", record(5, |r| r.at_ms -= 86_400_000), 5, "content does not match its hash"),
        ("actor", record(5, |r| r.actor = "tok_someone_else".into()), 5, "content does not match its hash"),
        ("actor_role", record(5, |r| r.actor_role = "auditor".into()), 5, "content does not match its hash"),
        (
            "actor_region_id added",
            record(5, |r| r.actor_region_id = Some("reg_x".into())),
            5,
            "content does not match its hash",
        ),
        ("actor_region_id removed", record(7, |r| r.actor_region_id = None), 7, "content does not match its hash"),
        ("action", record(5, |r| r.action = "facility.updated".into()), 5, "content does not match its hash"),
        ("object_kind", record(5, |r| r.object_kind = "terminal".into()), 5, "content does not match its hash"),
        ("object_id", record(5, |r| r.object_id = "fac_other".into()), 5, "content does not match its hash"),
        (
            "region_path moved to another auditor's scope",
            Box::new(move |s: &mut Stored| s.records[4].region_path = Some(town_b_for_five.clone())),
            5,
            "content does not match its hash",
        ),
        ("region_path removed", record(5, |r| r.region_path = None), 5, "content does not match its hash"),
        ("summary", record(5, |r| r.summary = r#"{"name":"改过"}"#.into()), 5, "content does not match its hash"),
        ("request_id", record(5, |r| r.request_id = None), 5, "content does not match its hash"),
        ("prev_hash", record(5, |r| r.prev_hash = "1".repeat(64)), 5, "does not follow the previous record"),
        ("hash", record(5, |r| r.hash = "2".repeat(64)), 5, "content does not match its hash"),
        (
            "one record downgraded to the public recipe",
            record(5, |r| {
                r.recipe = 1;
                r.hash = public_recipe_hash(r);
            }),
            5,
            "an unkeyed record after keyed ones",
        ),
        ("recipe unknown", record(5, |r| r.recipe = 3), 5, "hashed by an unknown recipe"),
        (
            "a middle record deleted",
            Box::new(|s: &mut Stored| {
                s.records.remove(4);
            }),
            5,
            "record missing",
        ),
        (
            "two records swapped",
            Box::new(|s: &mut Stored| {
                s.records.swap(4, 5);
                let (a, b) = (s.records[4].seq, s.records[5].seq);
                (s.records[4].seq, s.records[5].seq) = (b, a);
            }),
            5,
            "does not follow the previous record",
        ),
        (
            "the tail deleted and the head moved back",
            Box::new(|s: &mut Stored| {
                s.records.truncate(6);
                s.head = (6, s.records[5].hash.clone());
            }),
            8,
            "records up to a checkpoint were removed",
        ),
        (
            "everything deleted and the head reset",
            Box::new(|s: &mut Stored| {
                s.records.clear();
                s.head = (0, GENESIS_HASH.into());
            }),
            8,
            "records up to a checkpoint were removed",
        ),
        (
            "the tail deleted, the head left",
            Box::new(|s: &mut Stored| {
                s.records.truncate(7);
            }),
            8,
            "records up to a checkpoint were removed",
        ),
        (
            "the head moved back alone",
            Box::new(|s: &mut Stored| s.head = (7, s.records[6].hash.clone())),
            7,
            "the head does not name the newest record",
        ),
        (
            "a region_path edit re-hashed by the public recipe from there on",
            Box::new(move |s: &mut Stored| {
                s.records[4].region_path = Some(town_b_for_rehash.clone());
                rehash(s, 5, None);
            }),
            5,
            "an unkeyed record after keyed ones",
        ),
        (
            "the whole chain re-hashed by the public recipe",
            Box::new(|s: &mut Stored| {
                s.records[4].summary = r#"{"name":"改过"}"#.into();
                rehash(s, 1, None);
            }),
            8,
            "differs from a checkpoint",
        ),
        (
            "the whole chain re-hashed by the keyed recipe under a guessed key",
            Box::new(move |s: &mut Stored| rehash(s, 1, Some(&guessed))),
            1,
            "content does not match its hash",
        ),
        (
            "a forged record inserted in the middle",
            Box::new(|s: &mut Stored| {
                let mut forged = s.records[4].clone();
                forged.object_id = "fac_forged".into();
                s.records.insert(5, forged);
                for (n, r) in s.records.iter_mut().enumerate() {
                    r.seq = i64::try_from(n).unwrap() + 1;
                }
                let last = s.records.last().unwrap();
                s.head = (last.seq, last.hash.clone());
            }),
            6,
            "does not follow the previous record",
        ),
        (
            "a forged record appended by the public recipe",
            Box::new(|s: &mut Stored| {
                let mut forged = s.records[7].clone();
                forged.seq = 9;
                forged.prev_hash = s.records[7].hash.clone();
                forged.recipe = 1;
                forged.hash = public_recipe_hash(&forged);
                s.head = (9, forged.hash.clone());
                s.records.push(forged);
            }),
            9,
            "an unkeyed record after keyed ones",
        ),
        (
            "a record numbered before the first",
            Box::new(|s: &mut Stored| {
                let mut forged = s.records[0].clone();
                forged.seq = 0;
                s.records.insert(0, forged);
            }),
            0,
            "records numbered before the first one",
        ),
    ];
    assert!(cases.len() >= 20);
    for (what, tamper, seq, reason) in &cases {
        let mut stored = original.clone();
        tamper(&mut stored);
        write_stored(&pool, &stored).await;
        let verdict = verify_against(&app, &checkpoint).await;
        assert_eq!(verdict["intact"], false, "{what}: {verdict}");
        assert_eq!(verdict["reason"], *reason, "{what}: {verdict}");
        assert_eq!(verdict["broken_at_seq"], *seq, "{what}: {verdict}");
        write_stored(&pool, &original).await;
        let verdict = verify_against(&app, &checkpoint).await;
        assert_eq!(verdict["intact"], true, "{what}, put back: {verdict}");
    }

    // Without the checkpoint a clean cut of the tail looks like a shorter trail: the reason
    // to keep checkpoints. The command line finds it with one.
    let mut cut = original.clone();
    cut.records.truncate(6);
    cut.head = (6, cut.records[5].hash.clone());
    write_stored(&pool, &cut).await;
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK).body;
    assert_eq!(verdict["intact"], true, "{verdict}");
    let output = carepay_audit(&app, &["verify", "--checkpoint", &checkpoint]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("broken at record 8: records up to a checkpoint were removed"),
        "{output:?}"
    );
    write_stored(&pool, &original).await;
    let output = carepay_audit(&app, &["verify", "--checkpoint", &checkpoint]);
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("intact up to record 8"), "{output:?}");
}

async fn checkpoints_are_signed_and_a_forged_or_malformed_one_is_refused(app: TestApp) {
    let root = &app.root_token;
    app.create_region(root, None, "district", "吴江区").await;
    let exported = export_checkpoint(&app, root).await;
    let (seq, rest) = exported.split_once(':').unwrap();
    assert_eq!(seq, "2");
    let (hash, _signature) = rest.split_once(':').unwrap();
    // The verdict hands out the head it verified, signed the same way.
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK).body;
    assert_eq!(verdict["checkpoint"], exported.as_str());
    // Plain SEQ:HASH is accepted (someone noted it down); a signature from another key is not.
    assert_eq!(verify_against(&app, &format!("{seq}:{hash}")).await["intact"], true);
    let other = AuditKeys::derive(|_| [3u8; 32]);
    let forged = other.sign(carepay::domain::audit::Checkpoint { seq: 2, hash: hash.to_owned() });
    app.get(&format!("/v1/audit/verify?checkpoint={forged}"), root)
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "CHECKPOINT_NOT_SIGNED_HERE");
    for bad in ["2", "x:y", &format!("2:{}", hash.to_uppercase()), &format!("{exported}:more")] {
        let reply = app.get(&format!("/v1/audit/verify?checkpoint={bad}"), root).await;
        let reply = reply.expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_CHECKPOINT");
        assert_eq!(reply.body["field"], "checkpoint", "{bad}");
    }
    // A checkpoint whose record has another hash: that record was changed (or re-hashed).
    let verdict = verify_against(&app, &format!("2:{}", "0".repeat(64))).await;
    assert_eq!(verdict["intact"], false);
    assert_eq!(verdict["reason"], "differs from a checkpoint");

    // The command line prints the signed head and the key that checks it.
    let output = carepay_audit(&app, &["checkpoint"]);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains(&format!("checkpoint: {exported}")), "{printed}");
    assert!(printed.contains("checkpoint key (ed25519, base64url): "), "{printed}");
    // The export's records carry every hashed field.
    let ndjson = app.raw(Method::GET, "/v1/audit/export?format=ndjson", Some(root), None).await;
    let last: serde_json::Value = serde_json::from_str(ndjson.text.lines().last().unwrap()).unwrap();
    assert_eq!(last["recipe"], 2);
    assert!(last["region_path"].as_str().unwrap().ends_with('/'), "{last}");
}

/// A trail from before the chain was keyed: its records (recipe 1) verify only once an
/// operator, having checked them against a head kept from then, seals them with a keyed
/// record; after that, editing one of them is found like any other edit.
async fn records_written_before_the_chain_was_keyed_count_once_sealed(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    app.create_facility(root, &district, "甲", "0021000000000001").await;
    let pool = app.db.raw_pool().await;
    // What an older release left: the same records, hashed by the public recipe.
    let mut legacy = read_stored(&pool).await;
    rehash(&mut legacy, 1, None);
    write_stored(&pool, &legacy).await;
    let legacy_head = format!("{}:{}", legacy.head.0, legacy.head.1);
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK).body;
    assert_eq!(verdict["intact"], false);
    assert_eq!(verdict["reason"], "records written before the chain was keyed are not sealed");
    assert_eq!(verdict["broken_at_seq"], 3);

    // New records chain on as keyed ones meanwhile.
    app.create_facility(root, &district, "乙", "0021000000000002").await;
    // Sealing refuses a head kept from then that the trail no longer matches.
    let wrong = carepay_audit(&app, &["seal-legacy", "--checkpoint", &format!("3:{}", "5".repeat(64))]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("differs from a checkpoint"), "{wrong:?}");
    let sealed = carepay_audit(&app, &["seal-legacy", "--checkpoint", &legacy_head]);
    assert!(sealed.status.success(), "{sealed:?}");
    assert!(String::from_utf8_lossy(&sealed.stdout).contains("records 1 to 3 sealed by record 5"), "{sealed:?}");
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK).body;
    assert_eq!(verdict["intact"], true, "{verdict}");
    let again = carepay_audit(&app, &["seal-legacy"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("no unkeyed records"), "{again:?}");

    // An edit of a sealed record, re-hashed by the public recipe, no longer links to the seal.
    let before = read_stored(&pool).await;
    let mut edited = before.clone();
    edited.records[1].summary = r#"{"name":"改过"}"#.into();
    let mut prev = GENESIS_HASH.to_owned();
    for r in edited.records.iter_mut().take(3) {
        r.prev_hash = prev.clone();
        r.hash = public_recipe_hash(r);
        prev = r.hash.clone();
    }
    write_stored(&pool, &edited).await;
    let verdict = app.get("/v1/audit/verify", root).await.expect(StatusCode::OK).body;
    assert_eq!(verdict["intact"], false);
    assert_eq!(verdict["broken_at_seq"], 4);
    assert_eq!(verdict["reason"], "does not follow the previous record");
    write_stored(&pool, &before).await;
    assert_eq!(app.get("/v1/audit/verify", root).await.expect(StatusCode::OK).body["intact"], true);
}

/// `carepay serve` logs the head, signed, when it starts (and then periodically): a checkpoint
/// kept from the log finds records cut off later, which the trail alone no longer shows.
async fn the_service_logs_signed_checkpoints_that_find_a_cut_tail(app: TestApp) {
    use std::io::BufRead as _;
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    app.create_region(root, Some(&district), "town", "松陵街道").await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &app.db.url])
        .env_remove("DATABASE_URL")
        .env("CAREPAY_SECRET_KEY", TEST_SECRET_KEYS)
        .env("CAREPAY_LOG_FORMAT", "json")
        .env("CAREPAY_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let logged = loop {
        let line = lines.next().expect("serve exited before logging a checkpoint").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "audit checkpoint" {
            assert_eq!(event["level"], "INFO", "{event}");
            break event["checkpoint"].as_str().unwrap().to_owned();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(logged.starts_with("3:") && logged.split(':').count() == 3, "{logged}");

    let pool = app.db.raw_pool().await;
    sqlx::query("DELETE FROM audit_log WHERE seq = 3").execute(&pool).await.unwrap();
    sqlx::query("UPDATE audit_head SET last_seq = 2, last_hash = (SELECT hash FROM audit_log WHERE seq = 2)")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(app.get("/v1/audit/verify", root).await.expect(StatusCode::OK).body["intact"], true);
    let output = carepay_audit(&app, &["verify", "--checkpoint", &logged]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("broken at record 3: records up to a checkpoint were removed"),
        "{output:?}"
    );
}
