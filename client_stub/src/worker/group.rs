//! A worker's process group: the worker and every process a module starts from it (a
//! `subprocess`, a `multiprocessing` pool) end together, so nothing a module started goes on
//! holding a device, a port or a file once its worker is gone: when the worker ends or is
//! restarted, and when the stub stops.
//!
//! Each worker leads a group of its own (its pid is the group's id), held by a [`Group`]; so
//! does the interpreter that describes an installed module (`owned::run_describe`). The
//! groups alive are also kept here, so that a stub that stops ends them all ([`end_all`]).

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard, PoisonError};

use rustix::process::{kill_process_group, Pid, Signal};

/// The groups of the workers alive in this process.
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The group a worker leads. Dropping it kills the group (the worker too, if it still runs).
pub(crate) struct Group(i32);

impl Group {
    /// The group of the worker `pid`, spawned as the leader of a group of its own.
    pub(crate) fn led_by(pid: u32) -> Group {
        groups().insert(pid as i32);
        Group(pid as i32)
    }

    /// Kills the worker and every process in its group.
    pub(super) fn kill(&self) {
        kill(self.0);
    }
}

impl Drop for Group {
    /// Kills what is left of the group: dropped once the worker was waited for (`Conn::end`),
    /// or with a `Conn` never ended, whose worker is being killed. A group with a member left
    /// keeps its id; an empty one frees it, but pids are handed out in turn, so the id comes
    /// back only after every other one has: it names no one else here.
    fn drop(&mut self) {
        if groups().remove(&self.0) {
            kill(self.0);
        }
    }
}

/// Kills every worker of this process and what each started: for a stub that stops. (A stub
/// killed outright cannot: its workers die with it, see `process::die_with_stub`, but what
/// they started does not.)
pub fn end_all() {
    for group in std::mem::take(&mut *groups()) {
        kill(group);
    }
}

/// Kills `group`: a worker and what it started.
pub(super) fn kill(group: i32) {
    if let Some(group) = Pid::from_raw(group) {
        let _ = kill_process_group(group, Signal::KILL); // fails only if none is left
    }
}

fn groups() -> MutexGuard<'static, BTreeSet<i32>> {
    GROUPS.lock().unwrap_or_else(PoisonError::into_inner)
}
