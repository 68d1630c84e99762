//! Key rotation: with a new key put first, `carepay keys reseal` moves every sealed citizen ID
//! number and callback secret to it in bounded batches; it can stop and go on, and a second
//! run finds nothing to do. Afterwards the new key alone opens everything.

use carepay::app::{App, Limits};
use carepay::callbacks::secrets::SecretBox;
use carepay::domain::access::Principal;
use carepay::domain::directory::Scope;
use carepay::domain::ids::{BatchId, TokenId};
use carepay::domain::role::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::backend_tests;
use crate::disbursement::{citizen_id, office, upload};
use crate::helpers::{TEST_SECRET_KEYS, TestApp};

backend_tests!(resealing_moves_every_sealed_value_to_the_new_key_and_can_stop_and_go_on);

const NEW_KEY: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

fn reseal(app: &TestApp, extra: &[&str]) -> String {
    let keys = format!("{NEW_KEY},{TEST_SECRET_KEYS}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_carepay"))
        .args(["keys", "reseal", "--database-url", &app.db.url, "--secret-key", &keys])
        .args(extra)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

async fn sealed_values(app: &TestApp) -> Vec<String> {
    let pool = app.db.raw_pool().await;
    // Full rows (re-issues) seal their own number; a batch file's numbers are sealed per chunk.
    let mut values: Vec<String> =
        sqlx::query_scalar("SELECT citizen_id_sealed FROM subsidy_lines WHERE citizen_id_sealed IS NOT NULL")
            .fetch_all(&pool)
            .await
            .unwrap();
    values.extend(
        sqlx::query_scalar::<_, String>("SELECT citizen_ids_sealed FROM subsidy_line_chunks ORDER BY batch_id")
            .fetch_all(&pool)
            .await
            .unwrap(),
    );
    let endpoints: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT secret_sealed, signing_key_sealed FROM callback_endpoints")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (secret, key) in endpoints {
        values.push(secret);
        values.extend(key);
    }
    values
}

async fn resealing_moves_every_sealed_value_to_the_new_key_and_can_stop_and_go_on(app: TestApp) {
    let office = office(&app).await;
    let ids = [citizen_id("32058419450315002"), citizen_id("32058419520708008"), citizen_id("32058419600101003")];
    let file = format!(
        "姓名,身份证号,钱包编号,金额\n张三,{},0021000000000101,100.00\n李四,{},0021000000000102,100.00\n",
        ids[0], ids[1]
    );
    let (status, batch) = upload(&app, &office, "k-1", file.into_bytes(), 2, "200.00").await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let batch_id = BatchId::parse(batch["id"].as_str().unwrap()).unwrap();
    // A second batch: its numbers are a second sealed value.
    let file = format!("姓名,身份证号,钱包编号,金额\n王秀英,{},0021000000000103,100.00\n", ids[2]);
    let (status, second) = upload(&app, &office, "k-2", file.into_bytes(), 1, "100.00").await;
    assert_eq!(status, StatusCode::CREATED, "{second}");
    let second_id = BatchId::parse(second["id"].as_str().unwrap()).unwrap();
    let endpoint = app
        .post(
            "/v1/callback-endpoints",
            &office.clerk,
            json!({"office_region_id": office.region, "url": "http://127.0.0.1:9/hook", "event_types": ["batch.completed"], "ed25519": true}),
        )
        .await
        .expect(StatusCode::CREATED);
    let secret = endpoint.body["secret"].as_str().unwrap().to_owned();
    let endpoint_id = endpoint.body["endpoint"]["id"].as_str().unwrap().to_owned();
    let values = sealed_values(&app).await;
    assert_eq!(values.len(), 4);
    assert!(values.iter().all(|v| v.starts_with("gcm1:test:")), "{values:?}");

    // One transaction of one value (the first batch's chunk: two numbers), then the rest, then
    // nothing.
    let first = reseal(&app, &["--batch-size", "1", "--max-batches", "1"]);
    assert!(
        first.starts_with("re-sealed 2 citizen ID numbers and 0 callback secrets in 1 batches; stopped"),
        "{first}"
    );
    let rest = reseal(&app, &["--batch-size", "1"]);
    assert!(rest.starts_with("re-sealed 1 citizen ID numbers and 2 callback secrets"), "{rest}");
    let again = reseal(&app, &[]);
    assert!(again.starts_with("re-sealed 0 citizen ID numbers and 0 callback secrets"), "{again}");
    let values = sealed_values(&app).await;
    assert!(values.iter().all(|v| v.starts_with("gcm1:k2:")), "{values:?}");

    // The new key alone opens every value; the ID numbers are the uploaded ones.
    let only_new = SecretBox::from_key_list(NEW_KEY).unwrap();
    let rotated = App::new(app.db.store().await, Limits::default()).with_secrets(only_new.clone());
    let clerk =
        Principal { token_id: TokenId::generate(), role: Role::SubsidyClerk, scope: Scope::All, request_id: None };
    for (batch, seq, id) in [(&batch_id, 1, &ids[0]), (&batch_id, 2, &ids[1]), (&second_id, 1, &ids[2])] {
        let revealed = rotated.reveal_citizen_id(&clerk, batch, seq).await.unwrap();
        assert_eq!(&revealed, id);
    }
    let pool = app.db.raw_pool().await;
    let sealed: String = sqlx::query_scalar("SELECT secret_sealed FROM callback_endpoints WHERE id = $1")
        .bind(endpoint_id.as_str())
        .fetch_one(&pool)
        .await
        .unwrap();
    let opened = only_new.open(&sealed, &format!("{endpoint_id}/secret")).unwrap();
    use base64::Engine as _;
    assert_eq!(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(opened)), secret);

    // The rotation is in the audit trail, and the trail is intact.
    let audit = app.get("/v1/audit?limit=200", &app.root_token).await.expect(StatusCode::OK);
    let resealed = audit.body["items"].as_array().unwrap().iter().filter(|r| r["action"] == "keys.resealed").count();
    assert_eq!(resealed, 2);
    app.get("/v1/audit/verify", &app.root_token).await.expect(StatusCode::OK);
}
