//! A worker's lane: while its supervisor waits for calls, with the worker ready and nothing in
//! flight, [`Lane::hand`] writes a call straight into the worker's pipe, and the supervisor
//! only reads the answer. A call on its way in then goes from the task that read it to the
//! worker, with no hop through the job queue to the supervisor's task.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use common::conn::put_line;
use smol::Async;

use super::Job;

/// The longest request written straight to a pipe: up to `PIPE_BUF` bytes, POSIX makes a
/// write all or nothing, so a request is never left half written.
const ATOMIC_WRITE: usize = 4096;

/// One supervisor's lane, shared with [`super::Pool::submit`].
#[derive(Default)]
pub(super) struct Lane {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The worker's stdin, while calls may be written to it directly.
    open: Option<Arc<Async<File>>>,
    /// The generation has stopped: the lane never opens again.
    shut: bool,
    /// Calls written directly, for the supervisor to read the answers of.
    handed: Vec<(u64, Job)>,
    /// The last request id given out.
    last_id: u64,
    /// The request being written, kept for its capacity.
    line: Vec<u8>,
    /// The supervisor, while it waits for a call.
    supervisor: Option<Waker>,
}

impl Lane {
    /// An id for the next request the supervisor writes itself.
    pub(super) fn next_id(&self) -> u64 {
        let mut state = self.lock();
        state.last_id += 1;
        state.last_id
    }

    /// Writes `job` straight to the worker if the lane is open, and closes it (one call in
    /// flight, as in a batch); gives `job` back otherwise, or if the pipe would not take it
    /// at once.
    // A job given back is moved, as it came: boxing it would cost an allocation per call.
    #[allow(clippy::result_large_err)]
    pub(super) fn hand(&self, job: Job) -> Result<(), Job> {
        let mut state = self.lock();
        let State {
            open,
            handed,
            last_id,
            line,
            supervisor,
            ..
        } = &mut *state;
        let Some(stdin) = open else {
            return Err(job);
        };
        line.clear();
        let id = *last_id + 1;
        if request_line(line, id, &job).is_err() || line.len() > ATOMIC_WRITE {
            return Err(job);
        }
        // Non-blocking: a full pipe (or a broken one) says so at once.
        let mut pipe: &File = stdin.get_ref();
        if !matches!(pipe.write(line), Ok(n) if n == line.len()) {
            return Err(job);
        }
        *last_id = id;
        handed.push((id, job));
        *open = None;
        if let Some(supervisor) = supervisor.take() {
            supervisor.wake();
        }
        Ok(())
    }

    /// Opens the lane: the supervisor waits for calls, its worker ready and idle.
    pub(super) fn open(&self, stdin: &Arc<Async<File>>) {
        let mut state = self.lock();
        if !state.shut {
            state.open = Some(stdin.clone());
        }
    }

    /// Completes once a call was handed over.
    pub(super) fn handed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let mut state = self.lock();
            if state.handed.is_empty() {
                state.supervisor = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(())
        })
    }

    /// Closes the lane; returns the calls written to the worker meanwhile, oldest first.
    pub(super) fn close(&self) -> Vec<(u64, Job)> {
        let mut state = self.lock();
        state.open = None;
        state.supervisor = None;
        std::mem::take(&mut state.handed)
    }

    /// Closes the lane for good (its generation is ending); the calls written to the worker
    /// meanwhile stay for the supervisor to answer.
    pub(super) fn shut(&self) {
        let mut state = self.lock();
        state.shut = true;
        state.open = None;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Appends `job`'s request line as `worker.py` reads it: an array, the cheapest line for the
/// worker to decode, `[id, function, args, deadline_ms]`, with keyword arguments after only
/// when given.
pub(super) fn request_line(out: &mut Vec<u8>, id: u64, job: &Job) -> serde_json::Result<()> {
    let (function, args, deadline) = (&job.function, &job.args, job.deadline_ms);
    match job.kwargs.is_empty() {
        true => put_line(out, &(id, function, args, deadline)),
        false => put_line(out, &(id, function, args, deadline, &job.kwargs)),
    }
}
