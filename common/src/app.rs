//! The app's API: call shared modules through the local client stub.
//!
//! One connection carries many calls in flight, matched by id: a writer task batches requests,
//! a reader task hands each answer to the call waiting for it. Every call has a timeout (a
//! default, and per call) enforced here, so no call waits forever whatever the network does.
//! [`AsyncClient`] is the smol form; [`Client`] the blocking one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use smol::channel::Sender;
use smol::future::FutureExt;
use smol::net::TcpStream;

use crate::config::{ClientProfile, Profile};
use crate::conn::{drain, FrameReader, FrameWriter, DEFAULT_MAX_FRAME};
use crate::error::{ErrorKind, RemoteError};
use crate::module::ModuleDescriptor;
use crate::proto::{Call, ToApp, ToStub};

/// The timeout of a call when none is given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The remote code raised an exception.
    #[error("{exc_type}: {message}")]
    Exception {
        exc_type: String,
        message: String,
        traceback: String,
    },
    #[error("module not found: {0}")]
    UnknownModule(String),
    #[error("function not found: {0}")]
    UnknownFunction(String),
    #[error("wrong arguments: {0}")]
    BadArguments(String),
    #[error("timeout: {0}")]
    Timeout(String),
    #[error("owner gone: {0}")]
    OwnerGone(String),
    #[error("not connected: {0}")]
    NotConnected(String),
    /// An argument or a result over the frame limit.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The call failed on the way for another reason (a worker crash, a value over a limit...).
    #[error("{0}")]
    Failed(RemoteError),
    /// The result arrived but is not of the type asked for.
    #[error("unexpected result: {0}")]
    BadResult(String),
}

impl From<RemoteError> for CallError {
    fn from(e: RemoteError) -> Self {
        match e.kind {
            ErrorKind::Exception => CallError::Exception {
                exc_type: e.exc_type.unwrap_or_else(|| "Exception".into()),
                message: e.message,
                traceback: e.traceback.unwrap_or_default(),
            },
            ErrorKind::UnknownModule => CallError::UnknownModule(e.message),
            ErrorKind::UnknownFunction => CallError::UnknownFunction(e.message),
            ErrorKind::BadArguments => CallError::BadArguments(e.message),
            ErrorKind::Timeout => CallError::Timeout(e.message),
            ErrorKind::OwnerGone => CallError::OwnerGone(e.message),
            ErrorKind::NotConnected => CallError::NotConnected(e.message),
            ErrorKind::TooLarge => CallError::TooLarge(e.message),
            _ => CallError::Failed(e),
        }
    }
}

type Waiting = Arc<Mutex<HashMap<u64, Sender<Result<Value, RemoteError>>>>>;

/// A connection to the local stub (smol form). Cheap to share by reference across tasks.
pub struct AsyncClient {
    /// Requests, already serialized (so their size is checked before they are queued).
    requests: Sender<Box<RawValue>>,
    waiting: Waiting,
    next_id: AtomicU64,
    timeout: Duration,
    max_frame: usize,
    _tasks: (smol::Task<()>, smol::Task<()>),
}

impl AsyncClient {
    /// Connects to a stub's app port, for example `127.0.0.1:8765`.
    pub async fn connect(address: &str) -> Result<Self, CallError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| CallError::NotConnected(format!("no stub at {address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (requests, outbox) = smol::channel::unbounded();
        let waiting = Waiting::default();
        let writer = smol::spawn(drain(outbox, FrameWriter::new(stream.clone()), |_| false));
        let reader = smol::spawn(read_answers(stream, waiting.clone(), requests.clone()));
        Ok(AsyncClient {
            requests,
            waiting,
            next_id: AtomicU64::new(0),
            timeout: DEFAULT_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
            _tasks: (writer, reader),
        })
    }

    /// Connects to the stub of a client profile (`-c conf2`): its `app_port` and
    /// `call_timeout_ms`.
    pub async fn connect_profile(profile: &str) -> Result<Self, CallError> {
        let p = Profile::<ClientProfile>::load(profile)
            .map_err(|e| CallError::NotConnected(e.to_string()))?;
        let port = p.values.app_port.unwrap_or(8765);
        let mut client = Self::connect(&format!("127.0.0.1:{port}")).await?;
        client.max_frame = p.values.limits.max_frame_bytes;
        Ok(match p.values.call_timeout_ms {
            Some(ms) => client.with_timeout(Duration::from_millis(ms)),
            None => client,
        })
    }

    /// Sets the default timeout of every call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the largest request sent (default: the stubs' default frame limit).
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Calls `module.function(*args)`; `args` is a tuple, a list, or one value.
    pub async fn call(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<Value, CallError> {
        self.call_with(module, function, args, Map::new(), None)
            .await
    }

    /// Calls `module.function(*args)` and reads the result as a `T`.
    pub async fn call_as<T: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<T, CallError> {
        let value = self.call(module, function, args).await?;
        serde_json::from_value(value).map_err(|e| CallError::BadResult(e.to_string()))
    }

    /// Calls `module.function(*args, **kwargs)` with an optional timeout of its own.
    pub async fn call_with(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
        kwargs: Map<String, Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, CallError> {
        let args =
            match serde_json::to_value(args).map_err(|e| CallError::BadArguments(e.to_string()))? {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                one => vec![one],
            };
        let timeout = timeout.unwrap_or(self.timeout);
        let call = |id| {
            ToStub::Call(Call {
                id,
                module: module.to_owned(),
                function: function.to_owned(),
                args,
                kwargs,
                timeout_ms: timeout.as_millis() as u64,
            })
        };
        let what = format!("{module}.{function}");
        self.request(call, timeout, &what).await
    }

    /// The names of the modules on the network that start with `prefix`.
    pub async fn modules(&self, prefix: &str) -> Result<Vec<String>, CallError> {
        let prefix = prefix.to_owned();
        let value = self
            .request(|id| ToStub::Modules { id, prefix }, self.timeout, "modules")
            .await?;
        serde_json::from_value(value).map_err(|e| CallError::BadResult(e.to_string()))
    }

    /// The descriptor of `module`.
    pub async fn describe(&self, module: &str) -> Result<ModuleDescriptor, CallError> {
        let module = module.to_owned();
        let value = self
            .request(
                |id| ToStub::Describe { id, module },
                self.timeout,
                "describe",
            )
            .await?;
        serde_json::from_value(value).map_err(|e| CallError::BadResult(e.to_string()))
    }

    /// Reads the plain value `name` of `module` (an exposed installed module's constant, such
    /// as `os.path.sep`).
    pub async fn attr(&self, module: &str, name: &str) -> Result<Value, CallError> {
        self.call(module, name, ()).await
    }

    /// This app's stub as the server sees it: `{"address": ..., "rtt_ms": ...}`.
    pub async fn ping(&self) -> Result<Value, CallError> {
        self.request(|id| ToStub::Ping { id }, self.timeout, "ping")
            .await
    }

    /// Call statistics of the stub: `{"made": [...], "served": [...]}`, a row per function.
    pub async fn stats(&self) -> Result<Value, CallError> {
        self.request(|id| ToStub::Stats { id }, self.timeout, "stats")
            .await
    }

    /// Reloads a module the stub owns from its file; returns the descriptor's new md5.
    pub async fn reload(&self, module: &str) -> Result<String, CallError> {
        let module = module.to_owned();
        let value = self
            .request(|id| ToStub::Reload { id, module }, self.timeout, "reload")
            .await?;
        serde_json::from_value(value).map_err(|e| CallError::BadResult(e.to_string()))
    }

    /// Sends one request and waits for its answer or the timeout, whichever comes first.
    async fn request(
        &self,
        make: impl FnOnce(u64) -> ToStub,
        timeout: Duration,
        what: &str,
    ) -> Result<Value, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let frame = serde_json::value::to_raw_value(&make(id))
            .map_err(|e| CallError::BadArguments(e.to_string()))?;
        let size = frame.get().len();
        if size > self.max_frame {
            let limit = self.max_frame;
            return Err(CallError::TooLarge(format!(
                "{what}: the request is {size} bytes, over the frame limit of {limit} bytes"
            )));
        }
        let (tx, rx) = smol::channel::bounded(1);
        self.waiting.lock().expect("not poisoned").insert(id, tx);
        let _forget = Forget(&self.waiting, id);
        if self.requests.try_send(frame).is_err() {
            return Err(CallError::NotConnected(
                "the connection to the stub is closed".into(),
            ));
        }
        let answer = async { rx.recv().await.ok() }.or(async {
            smol::Timer::after(timeout).await;
            None
        });
        match answer.await {
            Some(result) => result.map_err(CallError::from),
            None if rx.is_closed() => Err(CallError::NotConnected(
                "the stub closed the connection".into(),
            )),
            None => Err(CallError::Timeout(format!(
                "{what}: no answer within {timeout:?}"
            ))),
        }
    }
}

/// Removes a call from the waiting table however the call ends (answer, timeout, drop).
struct Forget<'a>(&'a Waiting, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.0.lock() {
            w.remove(&self.1);
        }
    }
}

/// Hands each answer to its waiting call; when the connection ends, every waiting call fails.
async fn read_answers(stream: TcpStream, waiting: Waiting, requests: Sender<Box<RawValue>>) {
    let mut reader = FrameReader::new(stream, DEFAULT_MAX_FRAME);
    loop {
        match reader.read::<ToApp>().await {
            Ok(Some(ToApp::Reply(reply))) => {
                let tx = waiting.lock().expect("not poisoned").remove(&reply.id);
                if let Some(tx) = tx {
                    let _ = tx.try_send(reply.result);
                }
            }
            Ok(Some(ToApp::Error { message })) => eprintln!("stub: error: {message}"),
            // Only a provider (see `provider`) is sent calls.
            Ok(Some(ToApp::Call(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    // New calls fail at once; dropping the senders wakes every waiting call with "not connected".
    requests.close();
    waiting.lock().expect("not poisoned").clear();
}

/// A blocking connection to the local stub.
pub struct Client {
    inner: AsyncClient,
}

impl Client {
    /// See [`AsyncClient::connect`].
    pub fn connect(address: &str) -> Result<Self, CallError> {
        smol::block_on(AsyncClient::connect(address)).map(|inner| Client { inner })
    }

    /// See [`AsyncClient::connect_profile`].
    pub fn connect_profile(profile: &str) -> Result<Self, CallError> {
        smol::block_on(AsyncClient::connect_profile(profile)).map(|inner| Client { inner })
    }

    pub fn with_timeout(self, timeout: Duration) -> Self {
        Client {
            inner: self.inner.with_timeout(timeout),
        }
    }

    pub fn call(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<Value, CallError> {
        smol::block_on(self.inner.call(module, function, args))
    }

    pub fn call_as<T: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<T, CallError> {
        smol::block_on(self.inner.call_as(module, function, args))
    }

    pub fn call_with(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
        kwargs: Map<String, Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, CallError> {
        smol::block_on(
            self.inner
                .call_with(module, function, args, kwargs, timeout),
        )
    }

    pub fn modules(&self, prefix: &str) -> Result<Vec<String>, CallError> {
        smol::block_on(self.inner.modules(prefix))
    }

    pub fn describe(&self, module: &str) -> Result<ModuleDescriptor, CallError> {
        smol::block_on(self.inner.describe(module))
    }

    pub fn attr(&self, module: &str, name: &str) -> Result<Value, CallError> {
        smol::block_on(self.inner.attr(module, name))
    }

    pub fn ping(&self) -> Result<Value, CallError> {
        smol::block_on(self.inner.ping())
    }

    pub fn stats(&self) -> Result<Value, CallError> {
        smol::block_on(self.inner.stats())
    }

    pub fn reload(&self, module: &str) -> Result<String, CallError> {
        smol::block_on(self.inner.reload(module))
    }

    /// The async form, to share the connection with async code.
    pub fn as_async(&self) -> &AsyncClient {
        &self.inner
    }
}
