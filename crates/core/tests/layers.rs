//! The layers point one way (ARCHITECTURE.md, "Invariants"), read off the workspace's own
//! manifests through `cargo metadata`, so that a dependency added against the grain fails here
//! rather than in a review.

// Test code: a manifest that cannot be read is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

/// Each package's normal (not dev, not build) dependencies, optional ones included.
fn normal_dependencies() -> BTreeMap<String, Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .expect("dependencies")
                .iter()
                .filter(|dep| dep["kind"].is_null())
                .map(|dep| dep["name"].as_str().expect("name").to_owned())
                .collect();
            (package["name"].as_str().expect("name").to_owned(), deps)
        })
        .collect()
}

fn deps_of<'a>(all: &'a BTreeMap<String, Vec<String>>, package: &str) -> &'a [String] {
    all.get(package)
        .unwrap_or_else(|| panic!("{package} is not in the workspace"))
}

#[test]
fn the_core_depends_on_no_adapter_framework_or_storage_crate() {
    let all = normal_dependencies();
    let banned = |dep: &str| {
        dep.starts_with("ackflow-")
            || dep.starts_with("aws-")
            || dep.starts_with("lambda")
            || ["rusqlite", "axum", "hyper", "tower", "reqwest"].contains(&dep)
    };
    let wrong: Vec<_> = deps_of(&all, "ackflow-core")
        .iter()
        .filter(|dep| banned(dep))
        .collect();
    assert!(wrong.is_empty(), "ackflow-core depends on {wrong:?}");
}

#[test]
fn the_storage_adapters_depend_on_the_core_alone_among_ackflow_crates() {
    let all = normal_dependencies();
    for adapter in ["ackflow-sqlite", "ackflow-aws"] {
        let ours: Vec<_> = deps_of(&all, adapter)
            .iter()
            .filter(|dep| dep.starts_with("ackflow-"))
            .collect();
        assert_eq!(ours, ["ackflow-core"], "{adapter}'s ackflow dependencies");
    }
    let lambda: Vec<_> = deps_of(&all, "ackflow-aws")
        .iter()
        .filter(|dep| dep.starts_with("lambda") || dep.starts_with("aws_lambda"))
        .collect();
    assert!(
        lambda.is_empty(),
        "ackflow-aws holds Lambda code: {lambda:?}"
    );
}

#[test]
fn the_http_layer_holds_no_storage() {
    let all = normal_dependencies();
    let storage: Vec<_> = deps_of(&all, "ackflow-http")
        .iter()
        .filter(|dep| {
            dep.starts_with("aws-")
                || ["rusqlite", "ackflow-sqlite", "ackflow-aws"].contains(&dep.as_str())
        })
        .collect();
    assert!(storage.is_empty(), "ackflow-http depends on {storage:?}");
}
