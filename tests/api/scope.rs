//! Every route, called by a token confined to one town about objects in another town, is
//! refused with 403, and the answer is the same as for an id that does not exist at all,
//! so a scoped token cannot even learn what exists outside its scope.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{TestApp, terminal_key_pair};

backend_tests!(
    every_route_refuses_objects_outside_the_scope_without_revealing_them,
    listings_show_only_what_is_in_scope,
    roles_may_do_only_what_their_role_allows,
    a_scoped_admin_cannot_issue_a_wider_token,
);

struct World {
    district: String,
    town_a: String,
    town_b: String,
    org_b: String,
    facility_b: String,
    terminal_b: String,
    token_b: String,
    admin_a: String,
}

async fn world(app: &TestApp) -> World {
    let root = &app.root_token;
    let district = app.create_region(root, None, "district", "吴江区").await;
    let town_a = app.create_region(root, Some(&district), "town", "松陵街道").await;
    let town_b = app.create_region(root, Some(&district), "town", "平望镇").await;
    app.create_organisation(root, &town_a, "甲组织").await;
    let org_b = app.create_organisation(root, &town_b, "乙组织").await;
    let facility_a = app.create_facility(root, &town_a, "甲助餐点", "0021000000000001").await;
    let facility_b = app.create_facility(root, &town_b, "乙助餐点", "0021000000000002").await;
    let (_, key_a) = terminal_key_pair();
    let (_, key_b) = terminal_key_pair();
    app.register_terminal(root, &facility_a, &key_a).await;
    let terminal_b = app.register_terminal(root, &facility_b, &key_b).await;
    let token_b_secret = app.issue_token(root, "accountant", Some(&town_b)).await;
    let _ = token_b_secret;
    let tokens = app.get("/v1/tokens", root).await.expect(StatusCode::OK);
    let token_b = tokens.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|token| token["region_id"] == town_b.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin_a = app.issue_token(root, "admin", Some(&town_a)).await;
    World { district, town_a, town_b, org_b, facility_b, terminal_b, token_b, admin_a }
}

/// Swap every id in a request for a well-formed id of the same kind that does not exist.
fn with_missing_ids(text: &str, world: &World) -> String {
    let mut out = text.to_owned();
    for id in [&world.town_b, &world.org_b, &world.facility_b, &world.terminal_b, &world.token_b, &world.district] {
        let prefix = id.split('_').next().unwrap();
        out = out.replace(id.as_str(), &format!("{prefix}_{}", "0".repeat(32)));
    }
    out
}

async fn every_route_refuses_objects_outside_the_scope_without_revealing_them(app: TestApp) {
    let w = world(&app).await;
    let (_, fresh_key) = terminal_key_pair();
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/regions/{}", w.town_b), None),
        (Method::POST, "/v1/regions".into(), Some(json!({"parent_id": w.town_b, "level": "village", "name": "村"}))),
        (Method::GET, format!("/v1/organisations/{}", w.org_b), None),
        (Method::POST, "/v1/organisations".into(), Some(json!({"region_id": w.town_b, "name": "组织"}))),
        (Method::GET, format!("/v1/facilities/{}", w.facility_b), None),
        (
            Method::POST,
            "/v1/facilities".into(),
            Some(
                json!({"region_id": w.town_b, "name": "点", "kind": "meal_canteen", "merchant_wallet_id": "0021000000000009"}),
            ),
        ),
        (Method::PATCH, format!("/v1/facilities/{}", w.facility_b), Some(json!({"name": "改名"}))),
        (Method::GET, format!("/v1/terminals?facility_id={}", w.facility_b), None),
        (Method::GET, format!("/v1/terminals/{}", w.terminal_b), None),
        (
            Method::POST,
            "/v1/terminals".into(),
            Some(json!({"facility_id": w.facility_b, "label": "台", "public_key": fresh_key})),
        ),
        (Method::POST, format!("/v1/terminals/{}/suspend", w.terminal_b), None),
        (Method::POST, format!("/v1/terminals/{}/resume", w.terminal_b), None),
        (Method::POST, format!("/v1/terminals/{}/rotate-key", w.terminal_b), Some(json!({"public_key": fresh_key}))),
        (Method::GET, format!("/v1/tokens/{}", w.token_b), None),
        (Method::DELETE, format!("/v1/tokens/{}", w.token_b), None),
        (Method::POST, "/v1/tokens".into(), Some(json!({"role": "auditor", "region_id": w.town_b, "label": "越权"}))),
    ];
    for (method, path, body) in routes {
        let out_of_scope = app.call(method.clone(), &path, &w.admin_a, body.clone()).await;
        assert_eq!(out_of_scope.status, StatusCode::FORBIDDEN, "{method} {path}: {}", out_of_scope.text);
        assert_eq!(out_of_scope.code(), "OUT_OF_SCOPE", "{method} {path}");

        let missing_path = with_missing_ids(&path, &w);
        let missing_body = body.map(|body| serde_json::from_str(&with_missing_ids(&body.to_string(), &w)).unwrap());
        let missing = app.call(method.clone(), &missing_path, &w.admin_a, missing_body).await;
        assert_eq!(missing.status, out_of_scope.status, "{method} {missing_path}: {}", missing.text);
        assert_eq!(missing.body, out_of_scope.body, "{method} {path}: missing and out-of-scope answers differ");
    }

    // Nothing outside the scope was changed by any of those requests.
    let root = &app.root_token;
    let terminal = app.get(&format!("/v1/terminals/{}", w.terminal_b), root).await.expect(StatusCode::OK);
    assert_eq!(terminal.body["status"], "active");
    assert_eq!(terminal.body["version"], 1);
    let token = app.get(&format!("/v1/tokens/{}", w.token_b), root).await.expect(StatusCode::OK);
    assert_eq!(token.body["status"], "live");
    let facility = app.get(&format!("/v1/facilities/{}", w.facility_b), root).await.expect(StatusCode::OK);
    assert_eq!(facility.body["name"], "乙助餐点");
    let facilities = app.get("/v1/facilities", root).await.expect(StatusCode::OK);
    assert_eq!(facilities.body["items"].as_array().unwrap().len(), 2);
}

async fn listings_show_only_what_is_in_scope(app: TestApp) {
    let w = world(&app).await;
    let ids = |reply: &crate::helpers::Reply, key: &str| -> Vec<String> {
        reply.body["items"].as_array().unwrap().iter().map(|item| item[key].as_str().unwrap_or("").to_owned()).collect()
    };
    let regions = app.get("/v1/regions", &w.admin_a).await.expect(StatusCode::OK);
    assert_eq!(ids(&regions, "id"), vec![w.town_a.clone()]);
    for (path, key) in [("/v1/organisations", "region_id"), ("/v1/facilities", "region_id")] {
        let reply = app.get(path, &w.admin_a).await.expect(StatusCode::OK);
        assert_eq!(ids(&reply, key), vec![w.town_a.clone()], "{path}");
    }
    let terminals = app.get("/v1/terminals", &w.admin_a).await.expect(StatusCode::OK);
    assert_eq!(terminals.body["items"].as_array().unwrap().len(), 1);
    assert_ne!(terminals.body["items"][0]["id"], w.terminal_b.as_str());
    let tokens = app.get("/v1/tokens", &w.admin_a).await.expect(StatusCode::OK);
    assert!(tokens.body["items"].as_array().unwrap().iter().all(|token| token["region_id"] == w.town_a.as_str()));
}

async fn roles_may_do_only_what_their_role_allows(app: TestApp) {
    let w = world(&app).await;
    let root = &app.root_token;
    let facility_a = app.create_facility(root, &w.town_a, "丙助餐点", "0021000000000003").await;
    // (role, may manage terminals, may manage facilities/regions/tokens)
    let roles = [
        ("admin", true, true),
        ("facility_manager", true, false),
        ("subsidy_clerk", false, false),
        ("subsidy_approver", false, false),
        ("accountant", false, false),
        ("auditor", false, false),
    ];
    for (n, (role, terminals, manage)) in roles.into_iter().enumerate() {
        let token = app.issue_token(root, role, Some(&w.town_a)).await;
        app.get("/v1/facilities", &token).await.expect(StatusCode::OK);
        app.get(&format!("/v1/facilities/{facility_a}"), &token).await.expect(StatusCode::OK);

        let (_, key) = terminal_key_pair();
        let reply = app
            .post("/v1/terminals", &token, json!({"facility_id": facility_a, "label": "台", "public_key": key}))
            .await;
        if terminals {
            reply.expect(StatusCode::CREATED);
        } else {
            reply.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
        }

        let writes = [
            ("/v1/regions", json!({"parent_id": w.town_a, "level": "village", "name": format!("村{n}")})),
            ("/v1/organisations", json!({"region_id": w.town_a, "name": format!("组织{n}")})),
            (
                "/v1/facilities",
                json!({"region_id": w.town_a, "name": format!("点{n}"), "kind": "nursing_home",
                       "merchant_wallet_id": format!("00210000000001{n:02}")}),
            ),
            ("/v1/tokens", json!({"role": "auditor", "region_id": w.town_a, "label": "x"})),
        ];
        for (path, body) in writes {
            let reply = app.post(path, &token, body).await;
            if manage {
                assert!(reply.status.is_success(), "{role} {path}: {}", reply.text);
            } else {
                reply.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
            }
        }
        let listing = app.get("/v1/tokens", &token).await;
        if manage {
            listing.expect(StatusCode::OK);
        } else {
            listing.expect_problem(StatusCode::FORBIDDEN, "ROLE_NOT_ALLOWED");
        }
    }
}

async fn a_scoped_admin_cannot_issue_a_wider_token(app: TestApp) {
    let w = world(&app).await;
    app.post("/v1/tokens", &w.admin_a, json!({"role": "admin", "label": "全区"}))
        .await
        .expect_problem(StatusCode::UNPROCESSABLE_ENTITY, "SCOPE_REQUIRED");
    app.post("/v1/tokens", &w.admin_a, json!({"role": "admin", "region_id": w.district, "label": "全区"}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "OUT_OF_SCOPE");
    app.post("/v1/regions", &w.admin_a, json!({"level": "district", "name": "新区"}))
        .await
        .expect_problem(StatusCode::FORBIDDEN, "OUT_OF_SCOPE");
    let village = app.create_region(&w.admin_a, Some(&w.town_a), "village", "甲村").await;
    let narrower = app.issue_token(&w.admin_a, "auditor", Some(&village)).await;
    app.get(&format!("/v1/regions/{village}"), &narrower).await.expect(StatusCode::OK);
    app.get(&format!("/v1/regions/{}", w.town_a), &narrower)
        .await
        .expect_problem(StatusCode::FORBIDDEN, "OUT_OF_SCOPE");
}
