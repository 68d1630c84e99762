//! The OpenAPI document, read as a client generator or a fuzzer reads it: every reference
//! resolves, every parameter is where the route takes it, every schema has one name, request
//! bodies refuse unknown fields as the server does, and every value a client sends is as
//! bounded in the document as the server bounds it.

use std::collections::BTreeSet;

use carepay::domain::ids::Cursor;
use carepay::domain::money::Amount;
use carepay::http::directory::MAX_PAGE_SIZE;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::to_value(carepay::http::openapi()).expect("the document is JSON")
}

/// Every operation: (method, path template, operation object).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                found.push((method.to_owned(), path.clone(), operation.clone()));
            }
        }
    }
    found
}

/// `#/components/schemas/X` → the schema; anything else unchanged.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.strip_prefix("#/components/schemas/").expect("a local schema reference");
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => refs(inner, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| refs(item, out)),
        _ => {}
    }
}

#[test]
fn every_reference_in_the_document_resolves() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let name = reference.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{reference}"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "dangling reference {reference}");
    }
}

#[test]
fn every_path_parameter_is_in_its_template_and_every_template_parameter_is_declared() {
    let doc = document();
    for (method, path, operation) in operations(&doc) {
        let template: BTreeSet<String> = path
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_owned)
            .collect();
        let parameters = operation["parameters"].as_array().cloned().unwrap_or_default();
        let mut declared = BTreeSet::new();
        let mut seen = BTreeSet::new();
        for parameter in &parameters {
            let name = parameter["name"].as_str().unwrap().to_owned();
            let place = parameter["in"].as_str().unwrap().to_owned();
            assert!(seen.insert((name.clone(), place.clone())), "{method} {path}: {name} declared twice");
            if place == "path" {
                assert!(template.contains(&name), "{method} {path}: `{name}` is `in: path` but not in the path");
                assert_eq!(parameter["required"], true, "{method} {path}: path parameter {name} not required");
                declared.insert(name);
            }
        }
        assert_eq!(declared, template, "{method} {path}: path parameters declared");
    }
}

#[test]
fn the_two_kinds_of_line_are_two_schemas() {
    let doc = document();
    let batch_lines = &doc["paths"]["/v1/subsidy-batches/{id}/lines"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["items"];
    let batch_line = resolve(&doc, batch_lines);
    assert!(batch_line["properties"].get("file_line").is_some(), "{batch_line}");
    assert!(batch_line["properties"].get("citizen_id").is_some(), "{batch_line}");
    let day_lines = &doc["paths"]["/v1/reconciliation/days/{wallet_id}/{date}/lines"]["get"]["responses"]["200"]["content"]
        ["application/json"]["schema"];
    let page = resolve(&doc, day_lines);
    let result_line = resolve(&doc, &page["properties"]["items"]["items"]);
    assert!(result_line["properties"].get("statement_amount").is_some(), "{result_line}");
    assert!(result_line["properties"].get("file_line").is_none(), "{result_line}");
}

#[test]
fn downloads_are_documented_with_their_media_types() {
    let doc = document();
    let content = |path: &str| -> BTreeSet<String> {
        doc["paths"][path]["get"]["responses"]["200"]["content"].as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(
        content("/v1/reconciliation/days/{wallet_id}/{date}/lines"),
        BTreeSet::from(["application/json".to_owned(), "text/csv".to_owned()])
    );
    assert_eq!(content("/v1/audit/export"), BTreeSet::from(["application/x-ndjson".to_owned(), "text/csv".to_owned()]));
    assert_eq!(content("/v1/subsidy-batches/{id}/result"), BTreeSet::from(["text/csv".to_owned()]));
}

/// The object schemas a request body may be: the schema itself or each `oneOf` choice.
fn body_objects<'a>(doc: &'a Value, schema: &'a Value) -> Vec<&'a Value> {
    let schema = resolve(doc, schema);
    match schema.get("oneOf").and_then(Value::as_array) {
        Some(choices) => choices.iter().flat_map(|choice| body_objects(doc, choice)).collect(),
        None => vec![schema],
    }
}

#[test]
fn every_json_request_body_refuses_unknown_fields_as_the_server_does() {
    let doc = document();
    let mut bodies = 0;
    for (method, path, operation) in operations(&doc) {
        let Some(schema) = operation["requestBody"]["content"]["application/json"].get("schema") else { continue };
        for object in body_objects(&doc, schema) {
            assert_eq!(object["additionalProperties"], false, "{method} {path}: {object}");
            bodies += 1;
        }
    }
    assert!(bodies >= 15, "only {bodies} JSON request bodies found");
}

/// Every string a client sends, with where it is: (place, schema).
fn request_strings(doc: &Value, place: String, schema: &Value, out: &mut Vec<(String, Value)>) {
    let schema = resolve(doc, schema);
    for key in ["oneOf", "anyOf", "allOf"] {
        for (i, choice) in schema.get(key).and_then(Value::as_array).into_iter().flatten().enumerate() {
            request_strings(doc, format!("{place}/{key}[{i}]"), choice, out);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"string") {
        out.push((place.clone(), schema.clone()));
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            request_strings(doc, format!("{place}.{name}"), property, out);
        }
    }
    if let Some(items) = schema.get("items") {
        request_strings(doc, format!("{place}[]"), items, out);
    }
}

fn all_request_strings(doc: &Value) -> Vec<(String, Value)> {
    let mut strings = Vec::new();
    for (method, path, operation) in operations(doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let place = format!("{method} {path} {} {}", parameter["in"].as_str().unwrap(), parameter["name"]);
            request_strings(doc, place, &parameter["schema"], &mut strings);
        }
        if let Some(schema) = operation["requestBody"]["content"]["application/json"].get("schema") {
            request_strings(doc, format!("{method} {path} body"), schema, &mut strings);
        }
    }
    strings
}

#[test]
fn every_string_a_client_sends_is_bounded_in_the_document_as_the_server_bounds_it() {
    let doc = document();
    let strings = all_request_strings(&doc);
    assert!(strings.len() >= 40, "only {} request strings found", strings.len());
    for (place, schema) in strings {
        let bounded = schema.get("enum").is_some()
            || schema.get("pattern").is_some()
            || schema.get("maxLength").is_some()
            || matches!(schema["format"].as_str(), Some("date" | "date-time"));
        assert!(bounded, "{place}: {schema}");
    }
}

#[test]
fn amounts_cursors_ids_and_page_sizes_carry_the_servers_own_rules() {
    let doc = document();
    for (place, schema) in all_request_strings(&doc) {
        let name = place.rsplit(['.', ' ']).next().unwrap().trim_matches('"').to_owned();
        let pattern = schema["pattern"].as_str().unwrap_or_default();
        match name.as_str() {
            "budget" | "per_payment_cap" | "per_period_cap" => {
                assert_eq!(pattern, Amount::NONZERO_PATTERN, "{place}")
            }
            "total" => assert_eq!(pattern, Amount::PATTERN, "{place}"),
            "adjustment" => assert_eq!(pattern, Amount::SIGNED_NONZERO_PATTERN, "{place}"),
            "after" => assert_eq!(pattern, Cursor::PATTERN, "{place}"),
            id if id == "id" || id.ends_with("_id") && id != "wallet_id" && !id.ends_with("wallet_id") => {
                assert!(pattern.starts_with('^') && pattern.ends_with("_[0-9a-f]{32}$"), "{place}: {schema}")
            }
            wallet if wallet.ends_with("wallet_id") || place.contains("designated_merchants") => {
                assert_eq!(pattern, "^[0-9]{16}$", "{place}")
            }
            "name" | "label" | "note" | "payee_name" => {
                assert!(schema["minLength"] == 1 && schema["maxLength"].is_u64(), "{place}: {schema}");
                let regex = regex::Regex::new(pattern).unwrap();
                assert!(!regex.is_match("a\u{0}b") && !regex.is_match("   ") && regex.is_match("吴江区"), "{place}");
            }
            _ => {}
        }
    }
    let mut limits = 0;
    for (method, path, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["name"] == "limit" {
                limits += 1;
                let schema = &parameter["schema"];
                assert_eq!(parameter["in"], "query", "{method} {path}");
                assert_eq!(schema["minimum"], 1, "{method} {path}: {schema}");
                assert_eq!(schema["maximum"], MAX_PAGE_SIZE, "{method} {path}: {schema}");
            }
        }
    }
    assert!(limits >= 10, "{limits} `limit` parameters");
}
