//! Cutting short a call that runs past its caller's timeout, so that one stuck call does not
//! hold its worker (and every call queued behind it) for good.
//!
//! Deadlines are milliseconds of `CLOCK_MONOTONIC`, the clock `time.monotonic()` reads in
//! `worker.py` too: the worker is told each call's deadline and does not start a call whose
//! deadline has passed. The stub's tick calls [`Watch::check`]: a worker still in a call past
//! its deadline is sent `SIGUSR1`, on which `worker.py` raises `CallTimedOut` inside the call
//! (only if that call is past its own deadline, so a signal that lands as the next call starts
//! does nothing). A worker still in the call [`KILL_AFTER_MS`] later (stuck in C code, or
//! swallowing the exception) is killed with what it started, and its supervisor restarts it.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use rustix::process::{kill_process, Pid, Signal};
use rustix::time::{clock_gettime, ClockId};

/// How long past its deadline a call may go on after the interrupt before its worker is
/// killed.
pub const KILL_AFTER_MS: u64 = 5_000;

/// Now, in milliseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_ms() -> u64 {
    let now = clock_gettime(ClockId::Monotonic);
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

/// One supervisor's worker, as the tick sees it.
#[derive(Default)]
pub(super) struct Watch {
    /// The worker process; 0 while there is none (cleared before it is reaped, so that its
    /// pid is never signalled once it could belong to another process).
    pid: AtomicI32,
    /// The deadline of the call the worker is running; 0 while it runs none.
    deadline_ms: AtomicU64,
    /// The tick killed the worker for overrunning a call.
    killed: AtomicBool,
}

impl Watch {
    pub(super) fn started(&self, pid: u32) {
        self.killed.store(false, Ordering::Relaxed);
        self.pid.store(pid as i32, Ordering::Relaxed);
    }

    pub(super) fn ended(&self) {
        self.idle();
        self.pid.store(0, Ordering::Relaxed);
    }

    /// The worker is now running a call with this deadline.
    pub(super) fn running(&self, deadline_ms: u64) {
        self.deadline_ms.store(deadline_ms, Ordering::Relaxed);
    }

    pub(super) fn idle(&self) {
        self.deadline_ms.store(0, Ordering::Relaxed);
    }

    /// Whether the last process was killed for overrunning a call (asked once).
    pub(super) fn take_killed(&self) -> bool {
        self.killed.swap(false, Ordering::Relaxed)
    }

    /// Interrupts, then kills, a worker whose call is past its deadline at `now_ms`. Sent again
    /// at every tick while it lasts: the worker raises at most once per call.
    pub(super) fn check(&self, now_ms: u64) {
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        if deadline == 0 || now_ms < deadline {
            return;
        }
        let raw = self.pid.load(Ordering::Relaxed);
        let Some(pid) = Pid::from_raw(raw) else {
            return;
        };
        if now_ms >= deadline.saturating_add(KILL_AFTER_MS) {
            self.killed.store(true, Ordering::Relaxed);
            // What the stuck call started dies with it (see `group`).
            return super::group::kill(raw);
        }
        let _ = kill_process(pid, Signal::USR1); // fails only if it has exited already
    }
}
