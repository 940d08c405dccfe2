//! What each of a module's workers is doing, and what that means for a call that waits: it
//! waits while one serves or is being started, and fails at once only when none can serve.

use std::time::{Duration, Instant};

use common::error::{ErrorKind, RemoteError};

use super::not_started::NotStarted;

/// How long an import runs before calls about to time out waiting for it are told so. A usual
/// start (the interpreter, a small module) takes less: a call with a short timeout made
/// meanwhile waits for it rather than fail early, and is served if it ends in time.
const TELL_AFTER: Duration = Duration::from_secs(1);

/// One supervisor's worker, as its generation's calls see it.
pub(super) enum Phase {
    /// Not started yet: waiting for the previous generation to end, or to be restarted after
    /// a death that says nothing of the next start.
    Waiting,
    /// Its process has been importing the module since then; `after` is why the start before
    /// failed, if it did.
    Importing {
        since: Instant,
        after: Option<NotStarted>,
    },
    /// Serving calls.
    Ready,
    /// Not started, for this reason, and not trying again before `next`.
    Failed { why: NotStarted, next: Instant },
}

/// The error a call gets at once: every worker failed to start and waits to try again, so
/// none can serve it now.
pub(super) fn refusal(phases: &[Phase], module: &str) -> Option<RemoteError> {
    let all_failed = phases.iter().all(|p| matches!(p, Phase::Failed { .. }));
    match phases.first() {
        Some(Phase::Failed { why, next }) if all_failed => Some(why.error(module, *next)),
        _ => None,
    }
}

/// The error for a call about to time out while it waits for an import: no worker is serving,
/// and one has been importing for [`TELL_AFTER`] or more. `None` otherwise: a call waiting for
/// a busy worker, or for a start that is not slow, is not answered early.
pub(super) fn still_starting(phases: &[Phase], module: &str) -> Option<RemoteError> {
    if phases.iter().any(|p| matches!(p, Phase::Ready)) {
        return None;
    }
    let importing = phases.iter().filter_map(|p| match p {
        Phase::Importing { since, after } => Some((*since, after)),
        _ => None,
    });
    let (since, after) = importing.min_by_key(|(since, _)| *since)?;
    let importing_for = since.elapsed();
    if importing_for < TELL_AFTER {
        return None;
    }
    let secs = importing_for.as_secs_f64();
    let after = match after {
        Some(why) => format!(" (the start before failed: {})", why.reason()),
        None => String::new(),
    };
    Some(RemoteError::new(
        ErrorKind::Timeout,
        format!(
            "module '{module}' is still starting: its worker has been importing it for \
             {secs:.1} s{after}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_told_of_an_import_only_once_it_has_run_a_while() {
        let importing = |ago: Duration| Phase::Importing {
            since: Instant::now() - ago,
            after: None,
        };
        // A usual start: the call waits for it.
        assert!(still_starting(&[importing(Duration::ZERO)], "m").is_none());
        let slow = still_starting(&[importing(Duration::from_secs(2))], "m");
        let message = slow.expect("a slow import is told").message;
        assert!(
            message.starts_with("module 'm' is still starting"),
            "{message}"
        );
        // Nor when a worker serves: the call waits for it.
        let phases = [importing(Duration::from_secs(2)), Phase::Ready];
        assert!(still_starting(&phases, "m").is_none());
    }
}
