//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/*`) through the same
//! check the `cargo fuzz` target runs (`call_outcome::fuzzing`), on stable Rust, so the
//! corpus and every past finding stay green in CI without nightly or libFuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

#[test]
fn every_corpus_input_keeps_its_targets_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for (target, check) in call_outcome::fuzzing::TARGETS {
        let dir = root.join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        files.sort();
        // An empty or missing corpus would make this test pass without checking anything.
        assert!(
            files.len() >= 10,
            "{}: only {} inputs",
            dir.display(),
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
                failures.push(file.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "inputs breaking an invariant:\n{}",
        failures.join("\n")
    );
}
