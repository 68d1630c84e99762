use carepay::store::Backend;
use reqwest::StatusCode;

use crate::helpers::{TestDatabase, spawn_app, spawn_app_with};

async fn data_survives_a_restart_and_migrations_run_again_harmlessly(backend: Backend) {
    let app = spawn_app(backend).await;
    let root = app.root_token.clone();
    let district = app.create_region(&root, None, "district", "吴江区").await;
    let facility = app.create_facility(&root, &district, "敬老院", "0021000000000001").await;
    let before = app.get(&format!("/v1/facilities/{facility}"), &root).await.expect(StatusCode::OK);
    let db: TestDatabase = app.stop().await;

    // Starting again runs the migrations again over the existing schema.
    let app = spawn_app_with(db, Default::default()).await;
    let after = app.get(&format!("/v1/facilities/{facility}"), &root).await.expect(StatusCode::OK);
    assert_eq!(after.body, before.body);
    let pool = app.db.raw_pool().await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
    let files =
        std::fs::read_dir(format!("{}/migrations/{}", env!("CARGO_MANIFEST_DIR"), backend.as_str())).unwrap().count();
    assert_eq!(applied as usize, files, "each migration recorded once");
    app.db.store().await.migrate().await.expect("migrating a migrated database is a no-op");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_on_sqlite() {
    data_survives_a_restart_and_migrations_run_again_harmlessly(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_a_restart_on_postgres() {
    data_survives_a_restart_and_migrations_run_again_harmlessly(Backend::Postgres).await;
}
