//! What runs an owned module's calls: its supervised Python workers, or the app that provides
//! it in-process (a Rust program using `common::provider`), reached over its app connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use common::error::{ErrorKind, RemoteError};
use common::outbox::Outbox;
use common::proto::{Call, Reply, ToApp};

use crate::worker::{Done, Pool};

/// Calls sent to the providing app, by id: the module (for messages) and where the answer goes.
type Calls = HashMap<u64, (String, Done)>;

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
    waiting: Arc<Waiting>,
    next: Arc<AtomicU64>,
}

impl AppRunner {
    pub fn new(conn: u64, outbox: Arc<Outbox>) -> Self {
        AppRunner {
            conn,
            outbox,
            waiting: Arc::default(),
            next: Arc::default(),
        }
    }

    /// Sends `call` to the app under an id of this connection's own. It goes at once, so its
    /// `timeout_ms` as it came is what remains of the caller's timeout.
    fn submit(&self, call: Call, done: Done) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.waiting().insert(id, (call.module.clone(), done));
        let call = Call { id, ..call };
        if !self.outbox.push(&ToApp::Call(call)) {
            let waiting = self.waiting().remove(&id);
            if let Some((module, done)) = waiting {
                done(Err(gone(&module)));
            }
        }
    }

    /// The provider's answer to call `reply.id`.
    pub fn answered(&self, reply: Reply) {
        let waiting = self.waiting().remove(&reply.id);
        if let Some((_, done)) = waiting {
            done(reply.result);
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
    for (_, (module, done)) in calls.drain() {
        done(Err(gone(&module)));
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
    /// Runs `call`, handing its answer to `done`.
    pub fn submit(&self, call: Call, done: Done) {
        match self {
            Runner::Python(pool) => pool.submit(call, done),
            Runner::App(app) => app.submit(call, done),
        }
    }

    /// Restarts Python workers on the current file once their calls running are done (see
    /// `worker::Pool::reload`); an app provides what it provides.
    pub fn reload(&self) {
        if let Runner::Python(pool) = self {
            pool.reload();
        }
    }

    /// Cuts short Python calls past their timeout (see `worker::Pool::check_overdue`). A
    /// providing app's calls run in its own process: it alone can stop them.
    pub fn check_overdue(&self) {
        if let Runner::Python(pool) = self {
            pool.check_overdue();
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
