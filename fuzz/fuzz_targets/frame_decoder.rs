//! Fuzzes the frame decoder (`common::conn::FrameReader`) with every message type; the input
//! format and the invariants are in `check_frame_decoder`.

#![no_main]

#[path = "../../common/tests/fuzz_regressions/checks.rs"]
mod checks;

// Counts heap so a read holding memory out of proportion to the frame cap is a crash.
#[global_allocator]
static ALLOC: checks::Counting = checks::Counting;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check_frame_decoder(data));
