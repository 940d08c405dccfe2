//! Supervised Python workers: the owner of a module runs it in `python3` processes (see
//! `worker.py` for the line protocol) that are restarted with backoff when they die.
//!
//! - `mod.rs`: the [`Pool`], a module's workers as the stub sees them, its generations (one per
//!   reload) and the calls (`Job`s) they share;
//! - `queue.rs`: the calls waiting for a worker, served by caller in turn;
//! - `supervisor.rs`: keeps one worker process running, restarting it with backoff, and feeds it
//!   calls in batches;
//! - `process.rs`: one worker process: spawning it, its pipes, writing requests, reading
//!   answers, ending it;
//! - `answer.rs`: parsing the worker's answer lines;
//! - `lane.rs`: writing a call straight into an idle worker's pipe;
//! - `phase.rs`: what each worker is doing, and whether a call waits for one or fails at once;
//! - `not_started.rs`: why a worker did not start, and the error its calls get meanwhile;
//! - `watch.rs`: interrupting, then killing, a worker still in a call past its deadline;
//! - `group.rs`: ending what a worker started along with it, and with the stub however it ends;
//! - `woken.rs`: a future polled only when it has asked to be.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use smol::channel::{self, Receiver, Sender};
use smol::Timer;

use common::error::{ErrorKind, RemoteError};
use common::module::ModuleDescriptor;
use common::outbox::flush_queued;
use common::proto::{Call, Json, Keywords};
use lane::Lane;
use phase::{refusal, still_starting, Phase};
use process::{spawn, Spawned};
use queue::FairQueue;
use supervisor::Supervisor;
use watch::{monotonic_ms, Watch};

mod answer;
mod group;
mod lane;
mod not_started;
mod phase;
mod process;
mod queue;
mod supervisor;
mod watch;
mod woken;

pub use group::end_all;
pub(crate) use group::Group;
pub use queue::Caller;

/// The worker program, run as `python -u -c SCRIPT ...`: never written to disk.
const SCRIPT: &str = include_str!("worker.py");
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest pause between two starts of a worker.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A worker up this long before it died is restarted after the first backoff again.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// How long a worker whose pipes closed may take to exit, or its stderr to drain, by itself.
const GRACE: Duration = Duration::from_secs(1);
/// An import still running this long is reported (once): its calls wait, and may time out.
const SLOW_IMPORT: Duration = Duration::from_secs(10);

/// How long before its deadline a call still waiting for its module's import is answered with
/// why (see `phase::still_starting`), rather than left to time out with no reason. Its caller
/// began to wait when it sent the call, hops away; the answer goes back through them, on
/// machines that may be busy, and the tick that finds the call comes every 0.1 s. A quarter of
/// its timeout, at most 1 s: a call whose worker is ready within that is lost to it.
fn tell_before_ms(timeout_ms: u64) -> u64 {
    (timeout_ms / 4).min(1_000)
}

/// A command that runs `worker.py` with the interpreter `python`, leading a process group of
/// its own that ends with the stub (see `group`); the caller adds the script's arguments.
pub fn python_command(python: &str) -> std::io::Result<std::process::Command> {
    let mut command = std::process::Command::new(python);
    command.args(["-u", "-c", SCRIPT]);
    group::tie_to_stub(&mut command)?;
    Ok(command)
}

/// How to start a module's workers.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The module's name, used in messages and log lines.
    pub module: String,
    /// The module's file.
    pub path: PathBuf,
    /// The file's contents as the stub last read them, which a worker runs (as the file, at
    /// its path) whenever it starts, rather than what is on disk then: an edit that does not
    /// parse leaves this version running, restarts included. `None`: the worker imports the
    /// file as it is when it starts (or the installed module `import:NAME` by name).
    pub source: Option<Arc<[u8]>>,
    /// The Python interpreter to run, e.g. `python3`.
    pub python: String,
    /// How many worker processes share the module's calls (at least 1).
    pub workers: usize,
    /// The frame limit: an answer over it is refused as too large, and never held whole.
    pub max_frame: usize,
    /// The headers of the version it runs, which calls were checked against: on a reload,
    /// the calls still queued are checked against the new ones (`None`: they are not).
    pub headers: Option<Arc<ModuleDescriptor>>,
}

/// A module's running workers. Cloneable handle; dropping the last handle stops the pool (see
/// [`Pool::stop`]), the calls still queued told that it "was stopped" before they ran.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    /// The module's name, shared by every job's message for a call cut short.
    module: Arc<str>,
    current: Mutex<Generation>,
}

/// One set of supervisor tasks and the job queue they share. The tasks hold no handle to the
/// pool: they end when `stop` is closed, which dropping the pool does too.
struct Generation {
    /// Closed when the generation drains, or stops.
    jobs: Arc<FairQueue<Job>>,
    /// One per supervisor: an idle worker takes a call straight into its pipe.
    lanes: Vec<Arc<Lane>>,
    /// One per supervisor: what the tick checks for calls past their deadline.
    watches: Vec<Arc<Watch>>,
    /// One per supervisor: whether calls wait, fail at once, or are told why they waited.
    phases: Phases,
    stop: Sender<()>,
    /// Closed, never written, when the generation must end once its calls running are done.
    drain: Sender<()>,
    /// Closed once every supervisor of the generation has ended, its process gone.
    ended: Receiver<()>,
    /// The generation this one replaced by a reload, until it has ended: its calls running
    /// are still watched, and a stop ends them too.
    older: Option<Box<Generation>>,
}

type Answer = Result<Json, RemoteError>;

/// What each supervisor's worker is doing. Taken, after the pool's own lock if both are, to
/// change a phase, and to queue a call or take calls from the queue when that depends on them.
type Phases = Arc<Mutex<Vec<Phase>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes the answer to one call. Called exactly once, where the answer arrives (a worker's
/// supervisor, a providing app's connection): it goes on from there with no task or channel of
/// its own per call. What it queues in an outbox is written at the thread's next flush (see
/// `common::outbox`), which the supervisor does before it waits.
pub type Done = Box<dyn FnOnce(Answer) + Send>;

/// One call waiting in the queue, with where its answer goes.
struct Job {
    /// Who made it: callers take turns (see `queue`).
    caller: Caller,
    /// Its id from its caller (a route id from the server), by which it may be cancelled.
    id: u64,
    module: Arc<str>,
    function: String,
    args: Vec<Json>,
    kwargs: Keywords,
    /// When the caller stops waiting, in ms of `CLOCK_MONOTONIC` (see `watch`).
    deadline_ms: u64,
    /// When a call still waiting for its module's import is told so (see [`tell_before_ms`]).
    tell_at_ms: u64,
    /// Taken when answered; see the `Drop` below.
    done: Option<Done>,
}

impl Job {
    /// Checks the call against `headers` (see [`ModuleDescriptor::check_call`]).
    fn check(&self, headers: &ModuleDescriptor) -> Result<(), RemoteError> {
        let keywords: Vec<&str> = self.kwargs.keys().map(String::as_str).collect();
        headers.check_call(&self.function, self.args.len(), &keywords)
    }

    /// Hands the answer on; what that queues is written at once.
    fn answer(self, answer: Answer) {
        self.answer_queued(answer);
        flush_queued();
    }

    /// Drops the call unanswered: nobody waits for its answer.
    fn cancel(mut self) {
        self.done = None;
    }

    /// Hands the answer on; what that queues is written at this thread's next flush, with
    /// the answers that follow it.
    fn answer_queued(mut self, answer: Answer) {
        if let Some(done) = self.done.take() {
            done(answer);
        }
    }
}

impl Drop for Job {
    /// A job dropped unanswered was written to its worker when the worker was stopped: it still
    /// answers. (The calls still queued then are answered by `Inner::stop`: they never ran.)
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let (module, function) = (&self.module, &self.function);
            done(Err(failed(format!(
                "worker for module '{module}' was stopped during the call to {function}"
            ))));
            flush_queued();
        }
    }
}

impl Pool {
    /// Starts the workers: the first process now, so that an interpreter that cannot be run
    /// is known at once, the others in the background (none waits for its import). `Err` says
    /// why the first could not be spawned: its workers are tried again with backoff, and the
    /// module's calls fail with it while none runs or starts.
    pub fn start(spec: WorkerSpec) -> (Pool, Result<(), RemoteError>) {
        let first = spawn(&spec);
        let started = first.as_ref().map(drop).map_err(Clone::clone);
        let (_, nothing_before) = channel::bounded(1);
        let current = Mutex::new(Generation::start(&spec, nothing_before, Some(first)));
        let module = Arc::from(spec.module.as_str());
        let inner = Arc::new(Inner { module, current });
        (Pool { inner }, started)
    }

    /// Runs `call` on an idle worker (or queues it for one, `caller`'s calls taking turns with
    /// other callers'), handing its answer to `done`. Never hangs: if the worker dies mid-call
    /// the call fails with [`ErrorKind::WorkerFailed`] naming the module and the exit status.
    /// While no worker runs or starts, it fails at once with why (see `phase`). A call whose
    /// `timeout_ms` has passed is not started, and is interrupted if it is running; one still
    /// waiting for an import is told so before then (see [`Pool::check_overdue`]).
    pub fn submit(&self, call: Call, caller: Caller, done: Done) {
        // Rounded up: a call is never interrupted before its caller's own deadline, which the
        // stub of a local call reads from a finer clock (it times the call out first, and its
        // answer says so).
        let deadline_ms = monotonic_ms()
            .saturating_add(call.timeout_ms)
            .saturating_add(1);
        let job = Job {
            caller,
            id: call.id,
            module: self.inner.module.clone(),
            function: call.function,
            args: call.args,
            kwargs: call.kwargs,
            deadline_ms,
            tell_at_ms: deadline_ms - tell_before_ms(call.timeout_ms),
            done: Some(done),
        };
        // Under the lock, so that a call never lands in a queue being replaced.
        let refused = self.current().submit(job);
        if let Some(refused) = refused {
            let module = &self.inner.module;
            refused.answer(Err(failed(format!("module '{module}' is stopped"))));
        }
    }

    /// Drops, without running them, the calls still queued that `cancelled` picks by caller
    /// and id: nobody waits for them. A call already written to a worker runs all the same
    /// (it cannot be taken back safely); its answer goes where it would have gone. Returns how
    /// many were dropped.
    pub fn cancel(&self, mut cancelled: impl FnMut(Caller, u64) -> bool) -> usize {
        let dropped = (self.current().jobs).take_where(|job| cancelled(job.caller, job.id));
        let count = dropped.len();
        dropped.into_iter().for_each(Job::cancel);
        count
    }

    /// Restarts every worker on `spec` (the module's file read again, or another file of the
    /// same module name) without cutting a call short: the old workers finish the calls they
    /// are running (each within its timeout), then exit; queued and later calls go to the new
    /// workers, whose processes start once the old ones are gone. A queued call that the new
    /// version's headers refuse (a function gone, or taking other arguments) fails as the stub
    /// would have failed it, not as the Python error of running it.
    pub fn reload(&self, spec: WorkerSpec) {
        let mut current = self.current();
        debug_assert_eq!(spec.module, *self.inner.module, "a pool runs one module");
        let next = Generation::start(&spec, current.ended.clone(), None);
        let mut refused = Vec::new();
        for job in current.drain() {
            match spec.headers.as_deref().map(|headers| job.check(headers)) {
                Some(Err(e)) => refused.push((job, e)),
                _ => drop(next.jobs.push(job.caller, job)),
            }
        }
        let old = std::mem::replace(&mut *current, next);
        current.older = Some(Box::new(old));
        drop(current);
        for (job, e) in refused {
            job.answer(Err(e));
        }
    }

    /// Kills the workers, old ones still finishing calls too. A call written to a worker fails
    /// as stopped during it (`WorkerFailed`); a call still queued never ran, and is told so with
    /// `why` the pool stops (`module 'm' {why} before the call to f ran`, `OwnerGone`: "was
    /// withdrawn"). Later calls fail with `WorkerFailed`.
    pub fn stop(&self, why: &str) {
        self.inner.stop(why);
    }

    /// Interrupts each call running past its deadline, and kills a worker that stays in one
    /// (see `watch`); answers each call about to time out while it waits for an import. Called
    /// by the stub's tick.
    pub fn check_overdue(&self) {
        let now = monotonic_ms();
        let mut current = self.current();
        current.tell_still_starting(&self.inner.module, now);
        let mut generation = Some(&mut *current);
        while let Some(g) = generation {
            for watch in &g.watches {
                watch.check(now);
            }
            if g.older
                .as_ref()
                .is_some_and(|older| older.ended.is_closed())
            {
                g.older = None;
            }
            generation = g.older.as_deref_mut();
        }
    }

    fn current(&self) -> MutexGuard<'_, Generation> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    /// See [`Pool::stop`].
    fn stop(&self, why: &str) {
        let mut queued = Vec::new();
        let current = lock(&self.current);
        let mut generation = Some(&*current);
        while let Some(g) = generation {
            queued.extend(g.stop());
            generation = g.older.as_deref();
        }
        drop(current);
        for job in queued {
            let (module, function) = (&job.module, &job.function);
            let message = format!("module '{module}' {why} before the call to {function} ran");
            job.answer_queued(Err(RemoteError::new(ErrorKind::OwnerGone, message)));
        }
        flush_queued();
    }
}

impl Drop for Inner {
    /// The last handle is gone, the pool maybe not stopped (a module dropped by its stub): its
    /// workers end, and the calls still queued are told that they never ran, not left to the
    /// `Drop` of `Job`, which would say they were stopped during the call.
    fn drop(&mut self) {
        self.stop("was stopped");
    }
}

impl Generation {
    /// Spawns `spec.workers` supervisors, whose processes start once `previous` has ended. The
    /// first one's may be spawned already; if it could not be, none is tried before a backoff.
    fn start(spec: &WorkerSpec, previous: Receiver<()>, mut first: Option<Spawned>) -> Generation {
        let failed = first.as_ref().and_then(|f| f.as_ref().err().cloned());
        let jobs = Arc::new(FairQueue::default());
        let (stop, stopping) = channel::bounded(1);
        let (drain, draining) = channel::bounded(1);
        let (alive, ended) = channel::bounded(1);
        let (mut lanes, mut watches) = (Vec::new(), Vec::new());
        let workers = spec.workers.max(1);
        let phases: Phases = Arc::new(Mutex::new((0..workers).map(|_| Phase::Waiting).collect()));
        for index in 0..workers {
            let spawned = first.take().or_else(|| failed.clone().map(Err));
            let lane = Arc::new(Lane::default());
            lanes.push(lane.clone());
            let watch = Arc::new(Watch::default());
            watches.push(watch.clone());
            let supervisor = Supervisor {
                spec: spec.clone(),
                lane,
                watch,
                jobs: jobs.clone(),
                stop: stopping.clone(),
                draining: draining.clone(),
                previous: previous.clone(),
                phases: phases.clone(),
                index,
                _alive: alive.clone(),
            };
            smol::spawn(supervisor.run(spawned)).detach();
        }
        Generation {
            jobs,
            lanes,
            watches,
            phases,
            stop,
            drain,
            ended,
            older: None,
        }
    }

    /// Hands `job` to an idle worker, or queues it; answers it at once if no worker can serve
    /// it; gives it back if the generation stopped.
    fn submit(&self, mut job: Job) -> Option<Job> {
        if self.jobs.is_closed() {
            return Some(job);
        }
        // Held until the call is queued: the calls queued when the last worker that could
        // serve fails to start are failed under it (see `Supervisor::enter`).
        let phases = lock(&self.phases);
        if let Some(error) = refusal(&phases, &job.module) {
            drop(phases);
            job.answer(Err(error));
            return None;
        }
        // Only past an empty queue, or a call would overtake those queued before it.
        if self.jobs.is_empty() {
            for lane in &self.lanes {
                match lane.hand(job) {
                    Ok(()) => return None,
                    Err(back) => job = back,
                }
            }
        }
        self.jobs.push(job.caller, job).err()
    }

    /// Answers each queued call whose time to be told has come, while no worker serves and one
    /// imports the module, with that; the others stay queued, in order.
    fn tell_still_starting(&self, module: &str, now_ms: u64) {
        if self.jobs.is_empty() {
            return;
        }
        let phases = lock(&self.phases);
        let Some(error) = still_starting(&phases, module) else {
            return;
        };
        // With no worker ready, no supervisor takes calls from the queue, nor starts to while
        // the lock is held; the pool's lock, held too, keeps calls from coming meanwhile.
        let told = self.jobs.take_where(|job| job.tell_at_ms <= now_ms);
        drop(phases);
        answer_all(told, error);
    }

    /// Tells the supervisors to kill their processes; returns the calls still queued. Calls
    /// already written to a worker fail as stopped during the call.
    fn stop(&self) -> Vec<Job> {
        self.stop.close();
        let queued = self.drain();
        for lane in &self.lanes {
            drop(lane.close());
        }
        queued
    }

    /// Tells the supervisors to end their processes once the calls written to them are
    /// answered; returns the calls still queued.
    fn drain(&self) -> Vec<Job> {
        for lane in &self.lanes {
            lane.shut();
        }
        self.drain.close();
        self.jobs.close()
    }
}

/// Answers each of `jobs` with `error`; what that queues is written at once.
fn answer_all(jobs: Vec<Job>, error: RemoteError) {
    for job in jobs {
        job.answer_queued(Err(error.clone()));
    }
    flush_queued();
}

fn failed(message: String) -> RemoteError {
    RemoteError::new(ErrorKind::WorkerFailed, message)
}

async fn sleep(duration: Duration) {
    Timer::after(duration).await;
}

#[cfg(test)]
mod tests;
