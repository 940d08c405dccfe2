//! A worker's process group: the worker and every process a module starts from it (a
//! `subprocess`, a `multiprocessing` pool) end together, so nothing a module started goes on
//! holding a device, a port or a file once its worker is gone: when the worker ends or is
//! restarted, and when the stub stops.
//!
//! Each worker leads a group of its own (its pid is the group's id). The groups of the workers
//! alive are kept here, so that a stub that stops ends them all ([`end_all`]).

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use rustix::process::{kill_process_group, Pid, Signal};

/// The groups of the workers alive in this process.
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The worker `pid`, spawned as the leader of a group of its own, is alive.
pub(super) fn started(pid: u32) {
    groups().insert(pid as i32);
}

/// Kills what is left of the group of the worker `pid` (which may have exited already, its
/// children not), and forgets it. Called once the worker has been waited for: a group that
/// still has a member keeps its id, so no other process can have taken it.
pub(super) fn end(pid: u32) {
    if groups().remove(&(pid as i32)) {
        kill(pid);
    }
}

/// Kills the worker `pid` and every process in its group.
pub(super) fn kill(pid: u32) {
    if let Some(group) = Pid::from_raw(pid as i32) {
        let _ = kill_process_group(group, Signal::KILL); // fails only if none is left
    }
}

/// Kills every worker of this process and what each started: for a stub that stops. (A stub
/// killed outright cannot: its workers die with it, see `process::die_with_stub`, but what
/// they started does not.)
pub fn end_all() {
    for group in std::mem::take(&mut *groups()) {
        kill(group as u32);
    }
}

fn groups() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    GROUPS.lock().unwrap_or_else(PoisonError::into_inner)
}
