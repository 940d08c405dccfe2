//! What runs an owned module's calls: its supervised Python workers, or the app that provides
//! it in-process (a Rust program using `common::provider`), reached over its app connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::error::{ErrorKind, RemoteError};
use common::proto::{Call, Reply, ToApp};
use serde_json::{Map, Value};
use smol::channel::Sender;

use crate::worker::Pool;

type Waiting = Arc<Mutex<HashMap<u64, Sender<Result<Value, RemoteError>>>>>;

/// An app connection that provides modules: calls go to it as `call` frames, its `answer`
/// frames come back by id. Dropping it fails every call still waiting.
#[derive(Clone)]
pub struct AppRunner {
    /// The app connection.
    pub conn: u64,
    tx: Sender<ToApp>,
    waiting: Waiting,
    next: Arc<AtomicU64>,
}

impl AppRunner {
    pub fn new(conn: u64, tx: Sender<ToApp>) -> Self {
        AppRunner {
            conn,
            tx,
            waiting: Waiting::default(),
            next: Arc::default(),
        }
    }

    async fn call(
        &self,
        module: &str,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, RemoteError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = smol::channel::bounded(1);
        self.waiting.lock().expect("not poisoned").insert(id, tx);
        let call = Call {
            id,
            module: module.to_owned(),
            function: function.to_owned(),
            args,
            kwargs,
            timeout_ms: 0,
        };
        let gone = || {
            RemoteError::new(
                ErrorKind::OwnerGone,
                format!("the app providing '{module}' left"),
            )
        };
        if self.tx.try_send(ToApp::Call(call)).is_err() {
            self.waiting.lock().expect("not poisoned").remove(&id);
            return Err(gone());
        }
        rx.recv().await.unwrap_or_else(|_| Err(gone()))
    }

    /// The provider's answer to call `reply.id`.
    pub fn answered(&self, reply: Reply) {
        if let Some(tx) = self.waiting.lock().expect("not poisoned").remove(&reply.id) {
            let _ = tx.try_send(reply.result);
        }
    }

    /// The provider left: every waiting call fails.
    pub fn close(&self) {
        self.waiting.lock().expect("not poisoned").clear();
    }
}

/// What runs a module's calls.
#[derive(Clone)]
pub enum Runner {
    Python(Pool),
    App(AppRunner),
}

impl Runner {
    pub async fn call(
        &self,
        module: &str,
        function: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<Value, RemoteError> {
        match self {
            Runner::Python(pool) => pool.call(function, args, kwargs).await,
            Runner::App(app) => app.call(module, function, args, kwargs).await,
        }
    }

    /// Restarts Python workers on the current file; an app provides what it provides.
    pub fn restart(&self) {
        if let Runner::Python(pool) = self {
            pool.restart();
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
