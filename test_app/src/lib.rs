//! test_app's library side: process helpers shared by the demo and the integration tests.

pub mod procs;

/// Prints a line of the demo's output. A reader that has gone away (`test_app demo | head`)
/// does not stop the demo: it runs on unheard, then stops its processes and cleans up, rather
/// than panicking with them still running.
pub fn show(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
