//! A worker that does not start: why, and the error its module's calls get at once while no
//! worker can serve them, rather than waiting for one that is not coming and failing at their
//! timeout.

use std::time::Instant;

use common::error::RemoteError;

use super::{failed, STABLE_AFTER};

/// Quick exits in a row that make a crash loop. One alone may be a fluke (the OOM killer, a
/// signal from outside): calls wait for the restart then.
pub(super) const CRASH_LOOP: u32 = 2;

/// Why a supervisor's last process did not start serving. While no worker of its module is
/// serving or starting, calls fail with it (see `phase`).
#[derive(Clone)]
pub(super) enum NotStarted {
    /// It could not be spawned, failed to import the module, or ended while importing it.
    Failed(RemoteError),
    /// It exited by itself, running no call, within `STABLE_AFTER` of starting: `times` in a
    /// row, the last time with `status`.
    Crashing { status: String, times: u32 },
}

impl NotStarted {
    /// The error for a call that comes now, the next process due at `next`.
    pub(super) fn error(&self, module: &str, next: Instant) -> RemoteError {
        let (status, times) = match self {
            NotStarted::Failed(error) => return error.clone(),
            NotStarted::Crashing { status, times } => (status, times),
        };
        // In tenths of a second, rounded up: "0.0 s" would say it is under way.
        let tenths = next
            .saturating_duration_since(Instant::now())
            .as_millis()
            .div_ceil(100);
        let within = STABLE_AFTER.as_secs();
        failed(format!(
            "module '{module}' is not running: its worker keeps crashing ({status}; it exited by \
             itself within {within} s of starting, {times} times in a row); next restart in {}.{} s",
            tenths / 10,
            tenths % 10
        ))
    }

    /// What went wrong, in short, for a call that waits for the next start.
    pub(super) fn reason(&self) -> String {
        match self {
            NotStarted::Failed(error) => error.to_string(),
            NotStarted::Crashing { status, .. } => format!("its worker keeps crashing ({status})"),
        }
    }

    /// Whether the owner has been told of this already: the same failure as `before`.
    pub(super) fn same_as(&self, before: Option<&NotStarted>) -> bool {
        match (self, before) {
            (NotStarted::Failed(now), Some(NotStarted::Failed(then))) => {
                now.message == then.message
            }
            (NotStarted::Crashing { .. }, Some(NotStarted::Crashing { .. })) => true,
            _ => false,
        }
    }
}
