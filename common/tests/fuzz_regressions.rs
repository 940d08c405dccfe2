//! Replays every input the fuzz targets ever crashed on, with the same invariant checks, so
//! `cargo test` guards against their return on stable, without `cargo fuzz`.
//!
//! Inputs are the files under `tests/fuzz_regressions/TARGET/`, raw as libFuzzer saved them;
//! `chunks/` holds JSON arrays of chunks (its fuzz input is structured, see
//! `fuzz/fuzz_targets/chunks.rs`). The checks are `tests/fuzz_regressions/checks.rs`.

#[path = "fuzz_regressions/checks.rs"]
mod checks;

use std::path::{Path, PathBuf};

// The frame decoder's checks bound the heap one read holds, so count it.
#[global_allocator]
static ALLOC: checks::Counting = checks::Counting;

/// The saved inputs of `target`, sorted (none if it never crashed).
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.expect("dir entry").path()).collect(),
        Err(_) => return Vec::new(),
    };
    files.sort();
    files
}

/// Runs `check` on each input, and fails naming every input whose check panicked.
fn replay(target: &str, check: impl Fn(&[u8])) {
    let failed: Vec<String> = inputs(target)
        .into_iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("readable input");
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "failed: {}", failed.join(", "));
}

#[test]
fn frame_decoder() {
    replay("frame_decoder", checks::check_frame_decoder);
}

#[test]
fn pyparse() {
    replay("pyparse", checks::check_pyparse);
}

#[test]
fn chunks() {
    replay("chunks", |data| {
        let chunks: Vec<common::proto::Chunk> =
            serde_json::from_slice(data).expect("a JSON array of chunks");
        checks::check_chunks(&chunks);
    });
}
