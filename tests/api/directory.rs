use reqwest::StatusCode;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{TestApp, terminal_key_pair};

backend_tests!(
    a_district_tree_with_facilities_and_terminals_can_be_built_and_read_back,
    region_levels_must_follow_the_tree,
    a_merchant_wallet_belongs_to_one_facility_only,
    suspending_and_resuming_a_terminal_is_recorded_and_repeatable,
    rotating_a_key_replaces_it_and_the_old_key_cannot_come_back,
    a_facility_can_be_renamed_and_its_version_increases,
    listings_page_through_everything_in_id_order,
);

async fn a_district_tree_with_facilities_and_terminals_can_be_built_and_read_back(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let village = app.create_region(root, Some(&town), "village", "流虹社区").await;
    let organisation = app.create_organisation(root, &district, "颐家养老服务有限公司").await;

    let facility = app
        .post(
            "/v1/facilities",
            root,
            json!({"region_id": village, "organisation_id": organisation, "name": " 流虹社区助餐点 ",
                   "kind": "meal_canteen", "merchant_wallet_id": "0021000000000001"}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(facility.body["name"], "流虹社区助餐点", "names are trimmed");
    assert_eq!(facility.body["kind"], "meal_canteen");
    assert_eq!(facility.body["region_id"], village.as_str());
    assert_eq!(facility.body["organisation_id"], organisation.as_str());
    assert_eq!(facility.body["merchant_wallet_id"], "0021000000000001");
    assert_eq!(facility.body["version"], 1);
    assert!(facility.body["created_at"].as_str().unwrap().ends_with("+08:00"));
    let facility_id = facility.id();

    let (_, public_key) = terminal_key_pair();
    let terminal = app
        .post(
            "/v1/terminals",
            root,
            json!({"facility_id": facility_id, "label": "1号收银台", "public_key": public_key}),
        )
        .await
        .expect(StatusCode::CREATED);
    assert_eq!(terminal.body["status"], "active");
    assert_eq!(terminal.body["public_key"], public_key.as_str());
    assert_eq!(terminal.body["facility_id"], facility_id.as_str());

    let read = app.get(&format!("/v1/facilities/{facility_id}"), root).await.expect(StatusCode::OK);
    assert_eq!(read.body, facility.body);
    let read = app.get(&format!("/v1/terminals/{}", terminal.id()), root).await.expect(StatusCode::OK);
    assert_eq!(read.body, terminal.body);
    let region = app.get(&format!("/v1/regions/{village}"), root).await.expect(StatusCode::OK);
    assert_eq!(region.body["parent_id"], town.as_str());
    assert_eq!(region.body["level"], "village");

    let terminals = app.get(&format!("/v1/terminals?facility_id={facility_id}"), root).await.expect(StatusCode::OK);
    assert_eq!(terminals.body["items"].as_array().unwrap().len(), 1);
    let regions = app.get("/v1/regions", root).await.expect(StatusCode::OK);
    assert_eq!(regions.body["items"].as_array().unwrap().len(), 3);
}

async fn region_levels_must_follow_the_tree(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town = app.create_region(root, Some(&district), "town", "平望镇").await;
    let village = app.create_region(root, Some(&town), "village", "梅堰村").await;

    let cases = [
        (json!({"level": "town", "name": "无父镇"}), "level"),
        (json!({"parent_id": district, "level": "village", "name": "越级村"}), "level"),
        (json!({"parent_id": town, "level": "district", "name": "倒挂区"}), "level"),
        (json!({"parent_id": village, "level": "village", "name": "村下村"}), "parent_id"),
    ];
    for (body, field) in cases {
        let reply = app.post("/v1/regions", root, body.clone()).await.expect(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(reply.body["field"], field, "for {body}");
    }
    app.post("/v1/regions", root, json!({"parent_id": district, "level": "town", "name": "平望镇"}))
        .await
        .expect_problem(StatusCode::CONFLICT, "REGION_NAME_TAKEN");
    let regions = app.get("/v1/regions", root).await.expect(StatusCode::OK);
    assert_eq!(regions.body["items"].as_array().unwrap().len(), 3, "refused requests created nothing");
}

async fn a_merchant_wallet_belongs_to_one_facility_only(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    app.create_facility(root, &district, "敬老院", "0021000000000001").await;
    app.post(
        "/v1/facilities",
        root,
        json!({"region_id": district, "name": "另一家", "kind": "nursing_home", "merchant_wallet_id": "0021000000000001"}),
    )
    .await
    .expect_problem(StatusCode::CONFLICT, "WALLET_ALREADY_REGISTERED");
    let facilities = app.get("/v1/facilities", root).await.expect(StatusCode::OK);
    assert_eq!(facilities.body["items"].as_array().unwrap().len(), 1);
}

async fn suspending_and_resuming_a_terminal_is_recorded_and_repeatable(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let facility = app.create_facility(root, &district, "敬老院", "0021000000000001").await;
    let (_, key) = terminal_key_pair();
    let terminal = app.register_terminal(root, &facility, &key).await;

    let suspended = app.post(&format!("/v1/terminals/{terminal}/suspend"), root, json!(null)).await;
    let suspended = suspended.expect(StatusCode::OK);
    assert_eq!(suspended.body["status"], "suspended");
    assert_eq!(suspended.body["version"], 2);
    let again = app.post(&format!("/v1/terminals/{terminal}/suspend"), root, json!(null)).await.expect(StatusCode::OK);
    assert_eq!(again.body["version"], 2, "suspending a suspended terminal changes nothing");
    let resumed = app.post(&format!("/v1/terminals/{terminal}/resume"), root, json!(null)).await.expect(StatusCode::OK);
    assert_eq!(resumed.body["status"], "active");
    assert_eq!(resumed.body["version"], 3);
}

async fn rotating_a_key_replaces_it_and_the_old_key_cannot_come_back(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let facility = app.create_facility(root, &district, "敬老院", "0021000000000001").await;
    let (_, old_key) = terminal_key_pair();
    let (_, new_key) = terminal_key_pair();
    let terminal = app.register_terminal(root, &facility, &old_key).await;
    let before = app.get(&format!("/v1/terminals/{terminal}"), root).await.expect(StatusCode::OK);

    let rotated = app
        .post(&format!("/v1/terminals/{terminal}/rotate-key"), root, json!({"public_key": new_key}))
        .await
        .expect(StatusCode::OK);
    assert_eq!(rotated.body["public_key"], new_key.as_str());
    assert_ne!(rotated.body["key_id"], before.body["key_id"]);

    app.post(&format!("/v1/terminals/{terminal}/rotate-key"), root, json!({"public_key": old_key}))
        .await
        .expect_problem(StatusCode::CONFLICT, "PUBLIC_KEY_IN_USE");
    app.post(&format!("/v1/terminals/{terminal}/rotate-key"), root, json!({"public_key": new_key}))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "KEY_UNCHANGED");
    let after = app.get(&format!("/v1/terminals/{terminal}"), root).await.expect(StatusCode::OK);
    assert_eq!(after.body["public_key"], new_key.as_str(), "refused rotations changed nothing");
}

async fn a_facility_can_be_renamed_and_its_version_increases(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let organisation = app.create_organisation(root, &district, "颐家").await;
    let facility = app.create_facility(root, &district, "旧名", "0021000000000001").await;
    let path = format!("/v1/facilities/{facility}");

    let changed = app
        .call(reqwest::Method::PATCH, &path, root, Some(json!({"name": "新名", "organisation_id": organisation})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(changed.body["name"], "新名");
    assert_eq!(changed.body["organisation_id"], organisation.as_str());
    assert_eq!(changed.body["version"], 2);

    let detached = app
        .call(reqwest::Method::PATCH, &path, root, Some(json!({"organisation_id": null})))
        .await
        .expect(StatusCode::OK);
    assert_eq!(detached.body["organisation_id"], serde_json::Value::Null);
    assert_eq!(detached.body["name"], "新名", "absent fields stay as they are");
    assert_eq!(detached.body["version"], 3);
}

async fn listings_page_through_everything_in_id_order(app: TestApp) {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let mut created = Vec::new();
    for n in 0..7 {
        created
            .push(app.create_facility(root, &district, &format!("助餐点{n}"), &format!("00210000000000{n:02}")).await);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let path = if after.is_empty() {
            String::from("/v1/facilities?limit=3")
        } else {
            format!("/v1/facilities?limit=3&after={after}")
        };
        let page = app.get(&path, root).await.expect(StatusCode::OK);
        for item in page.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page.body["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, created);
}
