//! The `submit_request` fuzz target's seed corpus (`fuzz/corpus/submit_request/seed-*`),
//! replayed on the stable toolchain through the same check as the fuzzer
//! (`fuzz/shared/submit_request.rs`), so CI notices when the target no longer builds against
//! the API or a seed finds a regression. The fuzzing itself needs nightly: docs/FUZZING.md.

#[path = "../../../fuzz/shared/submit_request.rs"]
mod check;

use std::path::PathBuf;

fn seeds() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/submit_request");
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    // Only the committed seeds: a local fuzzing run adds its own files beside them.
    seeds.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("seed-"))
    });
    seeds.sort();
    seeds
}

#[test]
fn every_seed_of_the_corpus_passes_the_fuzz_check() {
    let seeds = seeds();
    assert!(seeds.len() >= 20, "the seed corpus lost files: {seeds:?}");
    let harness = check::Harness::new();
    for seed in &seeds {
        let data = std::fs::read(seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        eprintln!("{}", seed.display());
        harness.check(&data);
    }
}

#[test]
fn header_lines_that_no_client_could_send_are_dropped_and_the_rest_is_the_body() {
    let (headers, body) =
        check::split(b"@idempotency-key:k\n@bad name:x\n@content-type:a\x00b\n@no colon\n{}");
    assert_eq!(body, b"{}");
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["idempotency-key"]);
    let (headers, body) = check::split(b"{\"kind\":\"demo\"}\n@x:y");
    assert!(headers.is_empty());
    assert_eq!(body, b"{\"kind\":\"demo\"}\n@x:y");
}

#[test]
fn the_seeds_reach_acceptance_and_each_kind_of_refusal() {
    // The corpus is only a good start for the fuzzer if it reaches every branch of the
    // submission path: replayed in one harness, it must meet each of these answers.
    let harness = check::Harness::new();
    let mut statuses = std::collections::BTreeSet::new();
    for seed in seeds() {
        let data = std::fs::read(&seed).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        statuses.insert(harness.check(&data));
    }
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        [202, 400, 413, 415, 422],
        "the statuses the seeds reach"
    );
}
