//! What runs an owned module's calls: its supervised Python workers, or the app that provides
//! it in-process (a Rust program using `common::provider`), reached over its app connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::calls::{push_to_app, timed_out};
use crate::worker::{Caller, Done, Pool, WorkerSpec};
use common::config::LinkLimits;
use common::error::{ErrorKind, RemoteError};
use common::outbox::Outbox;
use common::proto::{Call, Reply, ToApp};

/// Calls sent to the providing app, by id.
type Calls = HashMap<u64, Sent>;

/// A call sent to the providing app.
struct Sent {
    /// The module, for messages.
    module: String,
    /// `module.function` and the call's timeout, for the message at its deadline.
    what: String,
    timeout_ms: u64,
    deadline: Instant,
    /// Where its answer goes.
    done: Done,
}

/// The calls waiting for the app; those still waiting when it is dropped fail.
#[derive(Default)]
struct Waiting(Mutex<Calls>);

impl Drop for Waiting {
    fn drop(&mut self) {
        fail_all(self.0.get_mut().unwrap_or_else(PoisonError::into_inner));
    }
}

/// An app connection that provides modules: calls go to it as `call` frames, its `answer`
/// frames come back by id. Closing or dropping it fails every call still waiting.
#[derive(Clone)]
pub struct AppRunner {
    /// The app connection.
    pub conn: u64,
    outbox: Arc<Outbox>,
    limits: LinkLimits,
    waiting: Arc<Waiting>,
    next: Arc<AtomicU64>,
}

impl AppRunner {
    pub fn new(conn: u64, outbox: Arc<Outbox>, limits: LinkLimits) -> Self {
        AppRunner {
            conn,
            outbox,
            limits,
            waiting: Arc::default(),
            next: Arc::default(),
        }
    }

    /// Sends `call` to the app under an id of this connection's own. It goes at once, so its
    /// `timeout_ms` as it came is what remains of the caller's timeout. An app too far behind
    /// (it does not read its calls) is cut off, as one that does not read its answers is.
    fn submit(&self, call: Call, done: Done) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let sent = Sent {
            module: call.module.clone(),
            what: format!("{}.{}", call.module, call.function),
            timeout_ms: call.timeout_ms,
            deadline: Instant::now() + Duration::from_millis(call.timeout_ms),
            done,
        };
        self.waiting().insert(id, sent);
        let call = ToApp::Call(Call {
            id,
            caller: None,
            ..call
        });
        let what = "the calls it provides";
        if !push_to_app(&self.outbox, &call, &self.limits, what) {
            let waiting = self.waiting().remove(&id);
            if let Some(sent) = waiting {
                (sent.done)(Err(gone(&sent.module)));
            }
        }
    }

    /// The provider's answer to call `reply.id`.
    pub fn answered(&self, reply: Reply) {
        let waiting = self.waiting().remove(&reply.id);
        if let Some(sent) = waiting {
            (sent.done)(reply.result);
        }
    }

    /// Fails each call past its deadline: its caller stopped waiting, and an app that never
    /// answers must not keep it for as long as it stays connected. A late answer is dropped.
    fn expire(&self) {
        let now = Instant::now();
        let late: Vec<Sent> = (self.waiting())
            .extract_if(|_, sent| sent.deadline <= now)
            .map(|(_, sent)| sent)
            .collect();
        for sent in late {
            let running = "in the app providing it";
            (sent.done)(Err(timed_out(&sent.what, sent.timeout_ms, running)));
        }
    }

    /// The provider left: every waiting call fails.
    pub fn close(&self) {
        let mut waiting = std::mem::take(&mut *self.waiting());
        fail_all(&mut waiting);
    }

    /// The table of waiting calls; never held while an answer is handed on.
    fn waiting(&self) -> MutexGuard<'_, Calls> {
        self.waiting
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn fail_all(calls: &mut Calls) {
    for (_, sent) in calls.drain() {
        (sent.done)(Err(gone(&sent.module)));
    }
}

fn gone(module: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::OwnerGone,
        format!("the app providing '{module}' left"),
    )
}

/// What runs a module's calls.
#[derive(Clone)]
pub enum Runner {
    Python(Pool),
    App(AppRunner),
}

impl Runner {
    /// Runs `call` made by `caller`, handing its answer to `done`.
    pub fn submit(&self, call: Call, caller: Caller, done: Done) {
        match self {
            Runner::Python(pool) => pool.submit(call, caller, done),
            Runner::App(app) => app.submit(call, done),
        }
    }

    /// Drops the queued Python calls `cancelled` picks by caller and id (see
    /// `worker::Pool::cancel`); returns how many. A providing app's calls went to it at once:
    /// they run, and their answers are dropped.
    pub fn cancel(&self, cancelled: impl FnMut(Caller, u64) -> bool) -> usize {
        match self {
            Runner::Python(pool) => pool.cancel(cancelled),
            Runner::App(_) => 0,
        }
    }

    /// Restarts Python workers on `spec` once their calls running are done (see
    /// `worker::Pool::reload`); an app provides what it provides.
    pub fn reload(&self, spec: WorkerSpec) {
        if let Runner::Python(pool) = self {
            pool.reload(spec);
        }
    }

    /// Cuts short Python calls past their timeout (see `worker::Pool::check_overdue`). A
    /// providing app's calls run in its own process, which alone can stop them: they fail here
    /// at their deadline.
    pub fn check_overdue(&self) {
        match self {
            Runner::Python(pool) => pool.check_overdue(),
            Runner::App(app) => app.expire(),
        }
    }

    /// Ends the module's workers for good (a stub that stops), failing the calls they hold, those
    /// still queued with `why` (see `worker::Pool::stop`); an app's calls fail too.
    pub fn stop(&self, why: &str) {
        match self {
            Runner::Python(pool) => pool.stop(why),
            Runner::App(app) => app.close(),
        }
    }

    /// The app connection providing the module, if it is app-provided.
    pub fn provider(&self) -> Option<u64> {
        match self {
            Runner::App(app) => Some(app.conn),
            Runner::Python(_) => None,
        }
    }
}
