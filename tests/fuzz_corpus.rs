//! Replays the committed seed corpus of every cargo-fuzz target through the target's body in
//! `carepay::fuzzing`, so the ordinary test run (stable Rust, no fuzzer) keeps every target
//! compiling and its invariants checked. A new target is one more line in `TARGETS`.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// The body of a fuzz target: takes one input, panics only on a broken invariant.
type FuzzBody = fn(&[u8]);

/// (target name, as in `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`; its body).
const TARGETS: &[(&str, FuzzBody)] = &[
    ("amount", carepay::fuzzing::amount),
    ("terminal_envelope", carepay::fuzzing::terminal_envelope),
    ("operator_notification", carepay::fuzzing::operator_notification),
    ("statement", carepay::fuzzing::statement),
    ("batch_file", carepay::fuzzing::batch_file),
];

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target);
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|err| panic!("cannot read the corpus of {target} at {dir:?}: {err}"));
    let mut files: Vec<PathBuf> =
        entries.map(|entry| entry.expect("readable corpus entry").path()).filter(|path| path.is_file()).collect();
    // A stable order makes a failure point at the same file every run.
    files.sort();
    files
}

#[test]
fn every_fuzz_target_replays_its_seed_corpus_without_panicking() {
    let mut failures = Vec::new();
    for &(target, body) in TARGETS {
        let files = corpus_files(target);
        assert!(!files.is_empty(), "the corpus of {target} is empty; commit seed inputs");
        for path in files {
            let data = fs::read(&path).expect("readable corpus file");
            if panic::catch_unwind(|| body(&data)).is_err() {
                failures.push(path);
            }
        }
    }
    assert!(failures.is_empty(), "fuzz bodies panicked on: {failures:#?}");
}
