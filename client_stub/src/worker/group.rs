//! A worker's process group: the worker and every process a module starts from it (a
//! `subprocess`, a `multiprocessing` pool) end together, so nothing a module started goes on
//! holding a device, a port or a file once its worker is gone: when the worker ends or is
//! restarted, and when the stub ends, however it ends.
//!
//! Each worker leads a group of its own (its pid is the group's id), held by a [`Group`]; so
//! does the interpreter that describes an installed module (`owned::run_describe`). The
//! groups alive are also kept here, so that a stub that stops ends them all ([`end_all`]). A
//! stub killed outright (SIGKILL, a crash) ends nothing itself: each group is given the stub's
//! [`lifeline`], and a process of the group that waits on it kills the group when it ends.

use std::collections::BTreeSet;
use std::io::{self, PipeReader, PipeWriter};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use rustix::io::{fcntl_setfd, FdFlags};
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
    /// Kills what is left of the group: dropped once the worker (or the describing
    /// interpreter, `owned::run_describe`) was waited for (`Conn::end`), or with a `Conn` never
    /// ended, whose worker is being killed. A group with a member left
    /// keeps its id; an empty one frees it, but pids are handed out in turn, so the id comes
    /// back only after every other one has: it names no one else here.
    fn drop(&mut self) {
        if groups().remove(&self.0) {
            kill(self.0);
        }
    }
}

/// Kills every worker of this process and what each started: for a stub that stops. (A stub
/// killed outright cannot: see [`lifeline`].)
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

/// Makes `command` (a Python about to run `worker.py`) lead a process group of its own, and
/// passes it the stub's [`lifeline`] as its next argument: `worker.py` forks a watcher that
/// waits on it and kills the group once the stub has ended.
pub(super) fn tie_to_stub(command: &mut Command) -> io::Result<()> {
    let fd = lifeline()?.as_raw_fd();
    command.arg(fd.to_string()).process_group(0);
    // SAFETY: `inherit` makes one system call on the child's copy of a descriptor of the
    // parent that lives as long as the parent, and touches no memory of the parent.
    unsafe { command.pre_exec(move || inherit(fd)) };
    Ok(())
}

/// The read end of a pipe, never written, whose write end only this process holds (both ends
/// close on exec): it reads end of file once this process has ended, however it ended. Chosen
/// over `PR_SET_PDEATHSIG`, which fires when the *thread* that forked the child ends (a
/// short-lived thread would kill its workers), and whose signal the module could catch, block
/// or be deaf to (stuck in C code): the watcher waiting on it runs no module code.
fn lifeline() -> io::Result<BorrowedFd<'static>> {
    static LIFELINE: OnceLock<(PipeReader, PipeWriter)> = OnceLock::new();
    if let Some((read, _)) = LIFELINE.get() {
        return Ok(read.as_fd());
    }
    let pipe = io::pipe()?; // two threads may race here: one pipe is kept
    Ok(LIFELINE.get_or_init(|| pipe).0.as_fd())
}

/// Runs in the forked child before `exec`: keeps its copy of the lifeline open across it.
fn inherit(fd: RawFd) -> io::Result<()> {
    // SAFETY: `fd` is the lifeline's read end, open for the life of the process (see above).
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(fcntl_setfd(fd, FdFlags::empty())?)
}
