//! Fuzzes the Python header parser (`common::pyparse::parse_module`) with arbitrary source; the
//! invariants are in `check_pyparse`.

#![no_main]

#[path = "../../common/tests/fuzz_regressions/checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_pyparse(data));
