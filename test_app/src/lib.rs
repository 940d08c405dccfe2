//! test_app's library side: process helpers shared by the demo and the integration tests.

pub mod procs;

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once the demo's last line is shown: nothing is shown after it.
static ENDED: AtomicBool = AtomicBool::new(false);

/// Prints a line of the demo's output. A reader that has gone away (`test_app demo | head`)
/// does not stop the demo: it runs on unheard, then stops its processes and cleans up, rather
/// than panicking with them still running.
pub fn show(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if !ENDED.load(Ordering::SeqCst) {
        let _ = writeln!(out, "{line}");
    }
}

/// Prints the demo's last line (Ctrl-C's notice): the steps under way, failing as their
/// processes are stopped, and what those processes still say are not shown after it.
pub fn show_last(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if !ENDED.swap(true, Ordering::SeqCst) {
        let _ = writeln!(out, "{line}");
    }
}
