//! The OpenAPI document against the router it describes: every routed path and method is in it
//! (and nothing else), every operation lists the problems it can answer as problem+json, the
//! protocol headers are described, and the problem catalog names every problem core can write.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
use support::{request, spawn_app, TestApp};

use std::collections::{BTreeMap, BTreeSet};

use ackflow_core::JobId;
use ackflow_http::{openapi, routed_paths};
use axum::http::{Method, StatusCode};
use serde_json::Value;

fn document() -> Value {
    serde_json::to_value(openapi()).expect("the document serializes")
}

/// A concrete address for a routed path: parameters get a value of the kind they take.
fn concrete(path: &str) -> String {
    path.replace("{id}", &JobId::random().to_string())
        .replace("{file}", "app.js")
}

/// Whether the router takes `method` at `path` (anything but its 405 problem).
async fn takes(t: &TestApp, method: &Method, path: &str) -> bool {
    let answer = t.send(request(method.clone(), &concrete(path))).await;
    let problem: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    assert_ne!(
        problem["type"], "urn:ackflow:problem:route-not-found",
        "{method} {path} is not routed at all"
    );
    answer.status != StatusCode::METHOD_NOT_ALLOWED
}

/// `(path, method) → operation` for every operation in the document.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut all = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("a path item") {
            all.insert((path.clone(), method.clone()), operation.clone());
        }
    }
    all
}

#[tokio::test]
async fn every_routed_path_and_method_is_in_the_document_and_nothing_else() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let routed: BTreeSet<String> = routed_paths().into_iter().map(str::to_owned).collect();
    assert_eq!(documented, routed);

    let t = spawn_app();
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for path in &routed {
        for method in &methods {
            let in_document = doc["paths"][path][method.as_str().to_lowercase()].is_object();
            assert_eq!(
                takes(&t, method, path).await,
                in_document,
                "{method} {path}: routed and documented disagree"
            );
        }
    }
}

/// The problem statuses each operation can answer; the spec's error table plus what every
/// authenticated call can meet (401, 500, 503).
fn problems_of(operation_id: &str) -> &'static [u16] {
    match operation_id {
        "submitJob" => &[400, 401, 413, 415, 422, 500, 503],
        "getJob" => &[400, 401, 404, 500, 503],
        "cancelJob" => &[401, 404, 409, 500, 503],
        "listJobs" => &[400, 401, 500, 503],
        "getReport" => &[401, 500, 503],
        "pageAsset" => &[404],
        "openapi" => &[500],
        "statusPage" => &[],
        other => panic!("operation {other} has no expected problems: add it here"),
    }
}

#[test]
fn every_operation_lists_each_problem_it_can_answer_as_problem_json() {
    let doc = document();
    for ((path, method), operation) in operations(&doc) {
        let id = operation["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        let responses = operation["responses"].as_object().expect("responses");
        let problem_statuses: BTreeSet<u16> = responses
            .keys()
            .map(|s| s.parse::<u16>().expect("numeric statuses"))
            .filter(|s| *s >= 400)
            .collect();
        let expected: BTreeSet<u16> = problems_of(id).iter().copied().collect();
        assert_eq!(problem_statuses, expected, "{id} ({method} {path})");
        for status in problem_statuses {
            let response = &responses[&status.to_string()];
            let content = response["content"].as_object().expect("content");
            assert_eq!(
                content.keys().collect::<Vec<_>>(),
                ["application/problem+json"],
                "{id} {status}"
            );
            assert_eq!(
                content["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{id} {status}"
            );
            if status == 503 {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{id} 503 lacks Retry-After"
                );
            }
        }
        for (status, response) in responses {
            assert!(
                response["headers"]["X-Correlation-Id"].is_object(),
                "{id} {status} lacks X-Correlation-Id"
            );
        }
    }
}

#[test]
fn the_protocol_headers_are_described_where_they_are_used() {
    let doc = document();
    let parameter = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{method} {path} lacks parameter {name}"))
    };
    let submit_key = parameter("/v1/jobs", "post", "Idempotency-Key");
    assert_eq!(submit_key["in"], "header");
    assert_eq!(submit_key["schema"]["maxLength"], 255);
    assert_eq!(
        parameter("/v1/jobs/{id}", "get", "If-None-Match")["in"],
        "header"
    );
    let wait = parameter("/v1/jobs/{id}", "get", "wait");
    let [number, empty] = wait["schema"]["anyOf"]
        .as_array()
        .expect("anyOf")
        .as_slice()
    else {
        panic!("wait is a number or empty: {wait}");
    };
    assert_eq!(number["type"], "integer");
    // The server reads any run of digits (longer waits are shortened), so no machine format.
    assert!(number.get("format").is_none(), "{wait}");
    // `?wait=` counts as absent, like every optional query parameter sent empty.
    assert_eq!(empty["maxLength"], 0);

    let accepted = &doc["paths"]["/v1/jobs"]["post"]["responses"]["202"];
    for header in ["Location", "Retry-After", "ETag", "Idempotent-Replayed"] {
        assert!(
            accepted["headers"][header].is_object(),
            "202 lacks {header}"
        );
    }
    assert_eq!(
        accepted["links"]["getJob"]["operationId"], "getJob",
        "a submission links to its job"
    );
    let read = &doc["paths"]["/v1/jobs/{id}"]["get"]["responses"];
    for header in ["ETag", "Retry-After", "Cache-Control"] {
        assert!(
            read["200"]["headers"][header].is_object(),
            "200 lacks {header}"
        );
    }
    assert!(read["304"]["headers"]["ETag"].is_object());
    assert!(doc["paths"]["/v1/jobs"]["get"]["responses"]["200"]["headers"]["Link"].is_object());
}

/// The slugs of every `Self::new("slug", ...)` in core's problem module: the problems core can
/// write. Read from the source so that a problem added there and not here fails this test.
fn core_problem_slugs() -> BTreeSet<String> {
    let source = include_str!("../../core/src/problem.rs");
    let code = source.split("#[cfg(test)]").next().expect("the module");
    code.split("Self::new(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

#[test]
fn the_problem_catalog_names_every_problem_core_can_write() {
    let doc = document();
    let catalog = doc["components"]["schemas"]["Problem"]["description"]
        .as_str()
        .expect("the Problem schema has a description");
    let slugs = core_problem_slugs();
    assert!(slugs.len() >= 20, "{slugs:?}");
    for slug in slugs {
        assert!(
            catalog.contains(&format!("`urn:ackflow:problem:{slug}`")),
            "the catalog lacks {slug}"
        );
    }
}
