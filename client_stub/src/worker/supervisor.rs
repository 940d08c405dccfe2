//! A worker's supervisor: keeps one process running, restarting it with backoff when it dies,
//! and writes it the calls its generation queues, in batches, handing each answer on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;

use common::error::RemoteError;
use common::outbox::flush_queued;
use common::say;

use super::lane::Lane;
use super::not_started::{NotStarted, CRASH_LOOP};
use super::phase::{refusal, Phase};
use super::process::{spawn, Broken, Conn, Spawned};
use super::queue::FairQueue;
use super::watch::{Watch, KILL_AFTER_MS};
use super::{
    answer_all, failed, lock, sleep, Job, Phases, WorkerSpec, FIRST_BACKOFF, MAX_BACKOFF,
    STABLE_AFTER,
};

/// Keeps one worker process running and feeds it jobs from the shared queue.
pub(super) struct Supervisor {
    pub(super) spec: WorkerSpec,
    pub(super) lane: Arc<Lane>,
    pub(super) watch: Arc<Watch>,
    /// Its generation's calls waiting for a worker; calls written to a worker that died
    /// before it started them go back to it.
    pub(super) jobs: Arc<FairQueue<Job>>,
    /// Closed, never written, when the supervisor must end.
    pub(super) stop: Receiver<()>,
    /// Closed, never written, when the supervisor must end once its calls running are done.
    pub(super) draining: Receiver<()>,
    pub(super) previous: Receiver<()>,
    /// Its generation's, this supervisor's at `index`.
    pub(super) phases: Phases,
    pub(super) index: usize,
    /// Dropped when the supervisor ends: see [`Generation::ended`](super::Generation::ended).
    pub(super) _alive: Sender<()>,
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
pub(super) enum Stopped {
    Stop,
    /// Its generation was reloaded, and it has no call left to answer.
    Drained,
    ImportFailed(RemoteError),
    /// It broke before it was ready.
    NotReady(Broken),
    /// It broke while serving, during this call if any.
    Broken(Broken, Option<Job>),
}

impl Supervisor {
    /// Keeps a process running, starting with `first` if spawned already (or failed to be:
    /// the pool has said why).
    pub(super) async fn run(self, mut first: Option<Spawned>) {
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
        let queued = self.jobs.take_where(|_| true);
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
        // How many calls to write at once: one until the worker shows how long its calls take.
        let mut ahead = 1;
        loop {
            // Idle: a call may now be written straight to the worker (see `Lane`).
            self.lane.open(&conn.stdin);
            // The queue closes when the generation drains, or stops (see `run_process`).
            let next_job = async {
                match self.jobs.pop().await {
                    Some(job) => Woke::Queued(job),
                    None => Woke::Drained,
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
            // The calls already queued go to the worker in one write, callers in turn; it still
            // runs them one at a time, in order, reading ahead from its pipe.
            while !gone && sent.len() + batch.len() < ahead {
                match self.jobs.try_pop() {
                    Some(job) => batch.push(job),
                    None => break,
                }
            }
            for job in batch {
                let id = self.lane.next_id();
                match conn.queue(id, &job) {
                    Ok(()) => sent.push((id, job)),
                    Err(answer) => job.answer(answer),
                }
            }
            let (calls, started) = (sent.len(), Instant::now());
            if let Err(stopped) = self.run_batch(conn, sent).await {
                return stopped;
            }
            if calls > 0 {
                ahead = write_ahead(started.elapsed() / calls as u32);
            }
        }
    }

    /// Writes the queued requests, then hands each answer, in order, to its call. What the
    /// worker's pipe does not take at once is written as it reads them, while the answers are
    /// read: a worker writing an answer waits for it to be read before it reads on.
    async fn run_batch(&self, conn: &mut Conn, sent: Vec<(u64, Job)>) -> Result<(), Stopped> {
        let Some((_, first)) = sent.first() else {
            return Ok(());
        };
        // Watched from its first request on: a worker that does not answer, however it is
        // stuck, is interrupted, then killed (see `watch`).
        self.watch.running(first.deadline_ms);
        let written = conn.write_out();
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
                    // Last first: each goes back before its caller's others.
                    for (_, rest) in jobs.rev() {
                        self.requeue_or_fail(rest, &why);
                    }
                    return Err(Stopped::Broken(why, Some(job)));
                }
            }
            outcome = Ok(());
        }
        if conn.writing() {
            // `worker.py` answers a call only once it has read its request.
            let what = "answers to calls not yet written to it".to_owned();
            return Err(Stopped::Broken(Broken::Invalid(what), None));
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
            Broken::Exited => match self.jobs.push_front(job.caller, job) {
                Ok(()) => return,
                Err(refused) => refused, // the generation stopped
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
const MAX_BATCH: usize = 32;

/// About how long the calls written to a worker at once take to run. A call written is
/// beyond recall: another caller's call that comes meanwhile waits for them, and a call
/// cancelled meanwhile runs all the same. Writing several at once pays only for calls much
/// shorter than this.
const WRITE_AHEAD: Duration = Duration::from_millis(1);

/// How many calls to write to a worker at once, when its last ones took `per_call` each.
fn write_ahead(per_call: Duration) -> usize {
    let calls = WRITE_AHEAD.as_nanos() / per_call.as_nanos().max(1);
    calls.clamp(1, MAX_BATCH as u128) as usize
}

/// What ended a supervisor's wait for calls.
enum Woke {
    Queued(Job),
    /// A call was written straight to the worker.
    Handed,
    Exited,
    /// The queue closed: the generation ends once its calls running are done.
    Drained,
}
