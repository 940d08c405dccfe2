//! Supervised Python workers: the owner of a module runs it in `python3` processes (see
//! `worker.py` for the line protocol) that are restarted with backoff when they die.

use std::collections::BTreeMap;
use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use smol::channel::{self, Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use smol::process::{Child, ChildStderr, Command, Stdio};
use smol::{Async, Task, Timer};

use common::error::{ErrorKind, RemoteError};
use common::log::printable;
use common::outbox::flush_queued;
use common::proto::{Call, Json};
use common::readiness::ReadWhenReady;
use common::say;
use lane::{request_line, Lane};
use not_started::{NotStarted, CRASH_LOOP};
use phase::{refusal, still_starting, Phase};
use watch::{monotonic_ms, Watch, KILL_AFTER_MS};
use woken::WhenWoken;

mod lane;
mod not_started;
mod phase;
mod watch;
mod woken;

/// The worker program, run as `python -u -c SCRIPT ...`: never written to disk.
pub const SCRIPT: &str = include_str!("worker.py");
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

/// How to start a module's workers.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// The module's name, used in messages and log lines.
    pub module: String,
    /// The module's file.
    pub path: PathBuf,
    /// The Python interpreter to run, e.g. `python3`.
    pub python: String,
    /// How many worker processes share the module's calls (at least 1).
    pub workers: usize,
}

/// A module's running workers. Cloneable handle; dropping the last handle kills the processes.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    spec: WorkerSpec,
    /// The module's name, shared by every job's message for a call cut short.
    module: Arc<str>,
    current: Mutex<Generation>,
}

/// One set of supervisor tasks and the job queue they share. The tasks hold no handle to the
/// pool: they end when `stop` is closed, which dropping the pool does too.
struct Generation {
    jobs: Sender<Job>,
    queue: Receiver<Job>,
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
    module: Arc<str>,
    function: String,
    args: Vec<Json>,
    kwargs: BTreeMap<String, Json>,
    /// When the caller stops waiting, in ms of `CLOCK_MONOTONIC` (see `watch`).
    deadline_ms: u64,
    /// When a call still waiting for its module's import is told so (see [`tell_before_ms`]).
    tell_at_ms: u64,
    /// Taken when answered; see the `Drop` below.
    done: Option<Done>,
}

impl Job {
    /// Hands the answer on; what that queues is written at once.
    fn answer(self, answer: Answer) {
        self.answer_queued(answer);
        flush_queued();
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
    /// A job dropped unanswered was in flight when its worker was stopped: it still answers.
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
        let inner = Arc::new(Inner {
            spec,
            module,
            current,
        });
        (Pool { inner }, started)
    }

    /// Runs `call` on an idle worker (or queues it for one), handing its answer to `done`.
    /// Never hangs: if the worker dies mid-call the call fails with [`ErrorKind::WorkerFailed`]
    /// naming the module and the exit status. While no worker runs or starts, it fails at once
    /// with why (see `phase`). A call whose `timeout_ms` has passed is not started, and is
    /// interrupted if it is running; one still waiting for an import is told so before then
    /// (see [`Pool::check_overdue`]).
    pub fn submit(&self, call: Call, done: Done) {
        let deadline_ms = monotonic_ms().saturating_add(call.timeout_ms);
        let job = Job {
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

    /// Restarts every worker on the current file contents without cutting a call short: the
    /// old workers finish the calls they are running (each within its timeout), then exit;
    /// queued and later calls go to the new workers, whose processes start once the old ones
    /// are gone.
    pub fn reload(&self) {
        let mut current = self.current();
        let next = Generation::start(&self.inner.spec, current.ended.clone(), None);
        for job in current.drain() {
            let _ = next.jobs.try_send(job);
        }
        let old = std::mem::replace(&mut *current, next);
        current.older = Some(Box::new(old));
    }

    /// Kills the workers, old ones still finishing calls too; calls in flight or queued fail
    /// with `WorkerFailed`, later calls too.
    pub fn stop(&self) {
        let mut queued = Vec::new();
        let mut generation = Some(&*self.current());
        while let Some(g) = generation {
            queued.extend(g.stop());
            generation = g.older.as_deref();
        }
        for job in queued {
            let message = format!(
                "module '{}' was stopped before the call to {}",
                job.module, job.function
            );
            job.answer(Err(failed(message)));
        }
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

impl Generation {
    /// Spawns `spec.workers` supervisors, whose processes start once `previous` has ended. The
    /// first one's may be spawned already; if it could not be, none is tried before a backoff.
    fn start(spec: &WorkerSpec, previous: Receiver<()>, mut first: Option<Spawned>) -> Generation {
        let failed = first.as_ref().and_then(|f| f.as_ref().err().cloned());
        let (jobs, queue) = channel::unbounded();
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
                jobs: queue.clone(),
                requeue: jobs.clone(),
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
            queue,
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
        self.jobs.try_send(job).err().map(|e| e.into_inner())
    }

    /// Answers each queued call whose time to be told has come, while no worker serves and one
    /// imports the module, with that; the others stay queued, in order.
    fn tell_still_starting(&self, module: &str, now_ms: u64) {
        if self.queue.is_empty() {
            return;
        }
        let phases = lock(&self.phases);
        let Some(error) = still_starting(&phases, module) else {
            return;
        };
        // With no worker ready, no supervisor takes calls from the queue, nor starts to while
        // the lock is held; the pool's lock, held too, keeps calls from coming meanwhile.
        let (told, waiting): (Vec<Job>, Vec<Job>) = all_queued(&self.queue)
            .into_iter()
            .partition(|job| job.tell_at_ms <= now_ms);
        for job in waiting {
            let _ = self.jobs.try_send(job); // open: only closed under the pool's lock
        }
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
        self.jobs.close();
        self.drain.close();
        all_queued(&self.queue)
    }
}

/// Takes every call from `queue`, in order.
fn all_queued(queue: &Receiver<Job>) -> Vec<Job> {
    std::iter::from_fn(|| queue.try_recv().ok()).collect()
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

/// A worker process, or why it could not be spawned.
type Spawned = Result<Conn, RemoteError>;

fn spawn(spec: &WorkerSpec) -> Spawned {
    Conn::spawn(spec).map_err(|e| {
        let (python, module) = (&spec.python, &spec.module);
        failed(format!(
            "could not start the Python interpreter `{python}` for module '{module}': {e}"
        ))
    })
}

async fn sleep(duration: Duration) {
    Timer::after(duration).await;
}

/// Keeps one worker process running and feeds it jobs from the shared queue.
struct Supervisor {
    spec: WorkerSpec,
    lane: Arc<Lane>,
    watch: Arc<Watch>,
    jobs: Receiver<Job>,
    /// Where calls written to a worker that died before it started them go back to.
    requeue: Sender<Job>,
    /// Closed, never written, when the supervisor must end.
    stop: Receiver<()>,
    /// Closed, never written, when the supervisor must end once its calls running are done.
    draining: Receiver<()>,
    previous: Receiver<()>,
    /// Its generation's, this supervisor's at `index`.
    phases: Phases,
    index: usize,
    /// Dropped when the supervisor ends: see [`Generation::ended`].
    _alive: Sender<()>,
}

/// What a supervisor does once a process has ended.
enum Next {
    /// Restart it; calls wait for it (one that died during a call says nothing of the next).
    Restart,
    /// It exited by itself, running no call, with this status: restart it.
    Exited(String),
    /// It did not start, for this reason: restart it (see `phase` for what calls do meanwhile).
    Refuse(RemoteError),
    Stop,
}

/// Why a process stopped serving.
enum Stopped {
    Stop,
    /// Its generation was reloaded, and it has no call left to answer.
    Drained,
    ImportFailed(RemoteError),
    /// It broke before it was ready.
    NotReady(Broken),
    /// It broke while serving, during this call if any.
    Broken(Broken, Option<Job>),
}

enum Broken {
    /// It exited, or closed its pipes.
    Exited,
    /// It wrote something that is not the protocol.
    Invalid(String),
}

impl Supervisor {
    /// Keeps a process running, starting with `first` if spawned already (or failed to be:
    /// the pool has said why).
    async fn run(self, mut first: Option<Spawned>) {
        // A module holding an instrument must not be imported while it is still open. The
        // previous generation was told to stop, or to drain, before this one started: the wait
        // lasts at most as long as its calls still running (each within its timeout).
        while self.previous.recv().await.is_ok() {}
        let module = &self.spec.module;
        let mut backoff = FIRST_BACKOFF;
        let mut not_started = first
            .as_ref()
            .and_then(|f| f.as_ref().err().cloned())
            .map(NotStarted::Failed);
        let mut quick_exits = 0;
        while !self.draining.is_closed() {
            let started = Instant::now();
            let spawned = first.take().unwrap_or_else(|| spawn(&self.spec));
            let next = match spawned {
                Ok(conn) => {
                    let after = not_started.clone();
                    let recovering = after.is_some();
                    self.enter(Phase::Importing {
                        since: started,
                        after,
                    });
                    self.run_process(conn, recovering).await
                }
                Err(error) => Next::Refuse(error),
            };
            let stable = started.elapsed() >= STABLE_AFTER;
            if stable {
                backoff = FIRST_BACKOFF;
            }
            quick_exits = match next {
                Next::Exited(_) if !stable => quick_exits + 1,
                _ => 0,
            };
            let now = match next {
                Next::Stop => return,
                Next::Refuse(error) => Some(NotStarted::Failed(error)),
                Next::Exited(status) if quick_exits >= CRASH_LOOP => Some(NotStarted::Crashing {
                    status,
                    times: quick_exits,
                }),
                Next::Restart | Next::Exited(_) => None,
            };
            let next_start = Instant::now() + backoff;
            if let Some(why) = now.as_ref().filter(|w| !w.same_as(not_started.as_ref())) {
                let error = why.error(module, next_start); // once, not every retry
                say!(
                    "[{module}] {error} (retrying; calls fail with this while no worker runs or \
                     starts)"
                );
            }
            not_started = now;
            self.enter(match &not_started {
                Some(why) => Phase::Failed {
                    why: why.clone(),
                    next: next_start,
                },
                None => Phase::Waiting,
            });
            sleep(backoff).or(self.drained()).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn stopped(&self) {
        while self.stop.recv().await.is_ok() {}
    }

    /// Completes once the generation is told to drain (a stop tells it too).
    async fn drained(&self) {
        while self.draining.recv().await.is_ok() {}
    }

    /// Its worker is now in `phase`. If that leaves no worker serving or being started, the
    /// calls queued fail at once with why, under the lock taken to queue one (see
    /// `Generation::submit`): none is left to wait for nothing.
    fn enter(&self, phase: Phase) {
        let mut phases = lock(&self.phases);
        phases[self.index] = phase;
        let Some(error) = refusal(&phases, &self.spec.module) else {
            return;
        };
        let queued = all_queued(&self.jobs);
        drop(phases);
        answer_all(queued, error);
    }

    /// Runs one process from start to end; `recovering` if the last one did not start.
    async fn run_process(&self, mut conn: Conn, recovering: bool) -> Next {
        self.watch.started(conn.child.id());
        let stopping = async {
            self.stopped().await;
            Stopped::Stop
        };
        let stopped = self.serve(&mut conn, recovering).or(stopping).await;
        self.watch.ended();
        let on_its_way_out = matches!(
            stopped,
            Stopped::Drained
                | Stopped::ImportFailed(_)
                | Stopped::NotReady(Broken::Exited)
                | Stopped::Broken(Broken::Exited, _)
        );
        let status = conn.end(on_its_way_out).await;
        let module = &self.spec.module;
        let (why, job) = match stopped {
            Stopped::Stop | Stopped::Drained => return Next::Stop,
            Stopped::ImportFailed(error) => return Next::Refuse(error),
            Stopped::NotReady(why) => {
                let what = why.describe(&status);
                let message = format!("worker for module '{module}' {what} while importing it");
                return Next::Refuse(failed(message));
            }
            Stopped::Broken(why, job) => (why, job),
        };
        let exited_idle = job.is_none() && matches!(why, Broken::Exited);
        let why = why.describe(&status);
        let function = job.as_ref().map_or("?", |job| &job.function);
        let (why, during) = match self.watch.take_killed() {
            true => {
                let past = format!("went on {KILL_AFTER_MS} ms past its timeout");
                (
                    format!("was killed: the call to {function} {past}"),
                    String::new(),
                )
            }
            false => (why, format!(" during the call to {function}")),
        };
        if let Some(job) = job {
            job.answer(Err(failed(format!(
                "worker for module '{module}' {why}{during}"
            ))));
        }
        say!("[{module}] worker {why}; restarting it");
        match exited_idle {
            true => Next::Exited(status),
            false => Next::Restart,
        }
    }

    /// Serves jobs until the process fails; a stop is raced against it outside. Calls wait
    /// for its import, whatever the last one's outcome (see `phase`).
    async fn serve(&self, conn: &mut Conn, recovering: bool) -> Stopped {
        let module = &self.spec.module;
        let drained = async {
            self.drained().await;
            Err(Stopped::Drained)
        };
        if let Err(stopped) = conn.wait_ready(module).or(drained).await {
            return stopped;
        }
        // Before it takes a call: see `Generation::tell_still_starting`.
        self.enter(Phase::Ready);
        if recovering {
            say!("[{module}] worker ready: its calls run again");
        }
        loop {
            // Idle: a call may now be written straight to the worker (see `Lane`).
            self.lane.open(&conn.stdin);
            // The queue closes when the generation drains, or stops (see `run_process`).
            let next_job = async {
                match self.jobs.recv().await {
                    Ok(job) => Woke::Queued(job),
                    Err(_) => Woke::Drained,
                }
            };
            let handed = async {
                self.lane.handed().await;
                Woke::Handed
            };
            // A worker dying while idle is restarted now rather than failing the next call.
            let exited = async {
                let _ = (&mut conn.exited).await;
                Woke::Exited
            };
            let woke = exited.or(next_job.or(handed)).await;
            // Calls handed over before the lane closed were written first: their answers come
            // first.
            let mut sent = self.lane.close();
            let mut batch = Vec::new();
            let gone = matches!(woke, Woke::Exited);
            match woke {
                // With calls handed over, reading their answers finds it gone and fails them.
                Woke::Exited if sent.is_empty() => return Stopped::Broken(Broken::Exited, None),
                Woke::Drained if sent.is_empty() => return Stopped::Drained,
                Woke::Queued(job) => batch.push(job),
                Woke::Exited | Woke::Handed | Woke::Drained => {}
            }
            // Every call already queued goes to the worker in one write; it still runs them one
            // at a time, in order, reading ahead from its pipe.
            while !gone && sent.len() + batch.len() < MAX_BATCH {
                match self.jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            for job in batch {
                let id = self.lane.next_id();
                match conn.queue(id, &job) {
                    Ok(()) => sent.push((id, job)),
                    Err(answer) => job.answer(answer),
                }
            }
            if let Err(stopped) = self.run_batch(conn, sent).await {
                return stopped;
            }
        }
    }

    /// Writes the queued requests, then hands each answer, in order, to its call.
    async fn run_batch(&self, conn: &mut Conn, sent: Vec<(u64, Job)>) -> Result<(), Stopped> {
        if sent.is_empty() {
            return Ok(());
        }
        let written = conn.flush_out().await;
        let mut jobs = sent.into_iter();
        let mut outcome = written;
        while let Some((id, job)) = jobs.next() {
            self.watch.running(job.deadline_ms);
            let answer = match outcome {
                Ok(()) => conn.answer(id).await,
                Err(why) => Err(why),
            };
            match answer {
                Ok(answer) => job.answer_queued(answer),
                Err(why) => {
                    for (_, rest) in jobs {
                        self.requeue_or_fail(rest, &why);
                    }
                    return Err(Stopped::Broken(why, Some(job)));
                }
            }
            outcome = Ok(());
        }
        self.watch.idle();
        flush_queued();
        Ok(())
    }

    /// A call written to a worker that broke before answering an earlier one. The worker runs
    /// its calls in order, so a worker that exited never started it: it runs on the next one.
    /// A worker that wrote something else than an answer may have run it: it fails.
    fn requeue_or_fail(&self, job: Job, why: &Broken) {
        let job = match why {
            Broken::Exited => match self.requeue.try_send(job) {
                Ok(()) => return,
                Err(refused) => refused.into_inner(), // the generation stopped
            },
            Broken::Invalid(_) => job,
        };
        let message = format!(
            "worker for module '{}' failed before the call to {}",
            self.spec.module, job.function
        );
        job.answer(Err(failed(message)));
    }
}

/// Most calls written to a worker at once.
const MAX_BATCH: usize = 256;

/// What ended a supervisor's wait for calls.
enum Woke {
    Queued(Job),
    /// A call was written straight to the worker.
    Handed,
    Exited,
    /// The queue closed: the generation ends once its calls running are done.
    Drained,
}

impl Broken {
    fn describe(&self, status: &str) -> String {
        match self {
            Broken::Exited => format!("exited ({status})"),
            Broken::Invalid(detail) => format!("sent an invalid line ({detail})"),
        }
    }
}

/// Forwards a worker's stderr, where its prints go too, to the stub's log line by line. The
/// module is local, but what it prints may echo a caller's arguments: escaped like peer text.
async fn forward(module: String, stderr: ChildStderr) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    while let Ok(1..) = reader.read_until(b'\n', &mut line).await {
        let text = String::from_utf8_lossy(&line);
        say!("[{module}] {}", printable(text.trim_end()));
        line.clear();
    }
}

/// Runs in the forked worker before it starts Python: the kernel kills it when the stub ends,
/// however the stub ends (SIGKILL included), so no worker goes on running a module's code
/// unseen. (The signal comes when the forking thread ends: the executor's, which lives as long
/// as the stub.)
fn die_with_stub(stub: rustix::process::Pid) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    if rustix::process::getppid() != Some(stub) {
        return Err(io::Error::other("the stub ended while the worker started"));
    }
    Ok(())
}

/// One worker process and its protocol pipes, with buffers reused from call to call.
struct Conn {
    child: Child,
    /// Non-blocking, so that a call can be written to it without waiting (see `Lane`).
    stdin: Arc<Async<File>>,
    stdout: BufReader<ReadWhenReady<File>>,
    /// Completes when the process exits: raced with every read so that a worker that died
    /// while something else (a forked child) holds its stdout open still ends the wait.
    /// Polled only once the process's pidfd wakes it (each poll is a `wait4`).
    exited: WhenWoken<Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>>,
    stderr: Option<Task<()>>,
    line: String,
    out: Vec<u8>,
}

impl Conn {
    fn spawn(spec: &WorkerSpec) -> io::Result<Conn> {
        let mut command = std::process::Command::new(&spec.python);
        command.args(["-u", "-c", SCRIPT]).arg(&spec.path);
        let stub = rustix::process::getpid();
        // SAFETY: `die_with_stub` makes two system calls and touches no memory of the parent.
        unsafe { command.pre_exec(move || die_with_stub(stub)) };
        let mut child = Command::from(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let module = spec.module.clone();
        let stderr = child.stderr.take().map(|e| smol::spawn(forward(module, e)));
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the worker's pipes are missing"));
        };
        let exited =
            WhenWoken::new(Box::pin(child.status()) as Pin<Box<dyn Future<Output = _> + Send>>);
        let stdin = Arc::new(Async::new(File::from(OwnedFd::try_from(stdin)?))?);
        let stdout = File::from(OwnedFd::try_from(stdout)?);
        let stdout = BufReader::new(ReadWhenReady::new(Arc::new(Async::new(stdout)?)));
        let (line, out) = (String::new(), Vec::new());
        Ok(Conn {
            child,
            stdin,
            stdout,
            exited,
            stderr,
            line,
            out,
        })
    }

    /// Ends the process and returns its exit status as text. A process `on_its_way_out` gets
    /// a moment to exit by itself so that its own status is reported.
    async fn end(mut self, on_its_way_out: bool) -> String {
        // The end of its input: a worker with no call left exits by itself.
        drop(self.stdin);
        let exited = self.child.status();
        let grace = async {
            if on_its_way_out {
                sleep(GRACE).await;
            }
            None
        };
        let status = match async { Some(exited.await) }.or(grace).await {
            Some(status) => status,
            None => {
                let _ = self.child.kill(); // fails only if it has exited already
                self.child.status().await
            }
        };
        if let Some(stderr) = self.stderr {
            // Let its last lines (often a traceback) out, unless something else holds the pipe.
            stderr.or(sleep(GRACE)).await;
        }
        match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("exit status unknown: {e}"),
        }
    }

    /// Reads the line the worker writes once it has imported the module, or failed to.
    async fn wait_ready(&mut self, module: &str) -> Result<(), Stopped> {
        let slow = async {
            sleep(SLOW_IMPORT).await;
            let secs = SLOW_IMPORT.as_secs();
            say!("[{module}] still importing after {secs} s: its calls wait until it is ready");
            std::future::pending().await
        };
        self.read_line().or(slow).await.map_err(Stopped::NotReady)?;
        let ready: Value = serde_json::from_str(&self.line)
            .map_err(|e| Stopped::NotReady(Broken::Invalid(invalid(e, &self.line))))?;
        if ready.get("ready") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        let context = format!("module '{module}' failed to import: ");
        match ready
            .get("error")
            .and_then(|e| exception(ErrorKind::WorkerFailed, e, &context))
        {
            Some(error) => Err(Stopped::ImportFailed(error)),
            None => Err(Stopped::NotReady(Broken::Invalid(excerpt(&self.line)))),
        }
    }

    /// Appends job `id`'s request to the pending output; `Err` answers a job that cannot be
    /// sent.
    fn queue(&mut self, id: u64, job: &Job) -> Result<(), Answer> {
        request_line(&mut self.out, id, job).map_err(|e| {
            let message = format!("arguments are not JSON: {e}");
            Err(RemoteError::new(ErrorKind::BadArguments, message))
        })
    }

    /// Writes the pending output.
    async fn flush_out(&mut self) -> Result<(), Broken> {
        let mut pipe = &*self.stdin;
        let written = async {
            pipe.write_all(&self.out).await?;
            pipe.flush().await
        };
        let result = written.await.map_err(|_| Broken::Exited);
        self.out.clear();
        result
    }

    /// Reads the answer to request `id`.
    async fn answer(&mut self, id: u64) -> Result<Answer, Broken> {
        // About to wait for the worker: the answers handed on before go out first.
        if !self.stdout.buffer().contains(&b'\n') {
            flush_queued();
        }
        self.read_line().await?;
        parse_answer(&self.line, id).map_err(Broken::Invalid)
    }

    /// Reads one line into `self.line`, unless the process exits or its stdout ends first.
    async fn read_line(&mut self) -> Result<(), Broken> {
        let Conn {
            stdout,
            exited,
            line,
            ..
        } = self;
        line.clear();
        let read = async {
            match stdout.read_line(line).await {
                Ok(1..) => Ok(()),
                Ok(0) | Err(_) => Err(Broken::Exited),
            }
        };
        read.or(async {
            let _ = exited.await;
            Err(Broken::Exited)
        })
        .await
    }
}

/// A worker's answer line, its value kept as text.
#[derive(Deserialize)]
struct WorkerAnswer {
    id: Option<u64>,
    /// Present, even as `null`, for a result.
    #[serde(default, deserialize_with = "present")]
    ok: Option<Json>,
    error: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

/// Parses the answer to request `id`: `Err` describes a line that is not one.
fn parse_answer(line: &str, id: u64) -> Result<Answer, String> {
    let answer: WorkerAnswer = serde_json::from_str(line).map_err(|e| invalid(e, line))?;
    if answer.id != Some(id) {
        return Err(format!(
            "expected the answer to call {id}: {}",
            excerpt(line)
        ));
    }
    if let Some(ok) = answer.ok {
        return Ok(Ok(ok));
    }
    let error = answer.error.as_ref();
    // Interrupted at its deadline (or not started past it): a timeout to the caller, as when
    // its own stub times it out first; which of the two ticks first is chance.
    let kind = match error.and_then(|e| e.get("type")) {
        Some(t) if t == "CallTimedOut" => ErrorKind::Timeout,
        _ => ErrorKind::Exception,
    };
    match error.and_then(|e| exception(kind, e, "")) {
        Some(error) => Ok(Err(error)),
        None => Err(format!(
            "neither a result nor an exception: {}",
            excerpt(line)
        )),
    }
}

/// The error for an exception as `worker.py` describes it, its message after `context`.
fn exception(kind: ErrorKind, error: &Value, context: &str) -> Option<RemoteError> {
    let text = |key| error.get(key).and_then(Value::as_str).map(str::to_owned);
    Some(RemoteError {
        kind,
        message: format!("{context}{}", text("message")?),
        exc_type: Some(text("type")?),
        traceback: text("traceback"),
    })
}

fn invalid(error: serde_json::Error, line: &str) -> String {
    format!("{error}: {}", excerpt(line))
}

/// The start of a line, for messages.
fn excerpt(line: &str) -> String {
    let line = line.trim_end();
    match line.char_indices().nth(200) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests;
