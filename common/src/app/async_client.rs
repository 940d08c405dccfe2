//! The smol client: many calls in flight on one connection, sharing it through [`Link`].

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use super::link::{Link, NoAnswer};
use super::requests::{deadline_after, Request, Requests};
use super::{decode, CallError};
use crate::module::ModuleDescriptor;
use crate::proto::{Json, ToStub};

/// A connection to the local stub (smol form). Cheap to share by reference across tasks; it
/// runs no task of its own, so it works under any executor. When the connection ends (the stub
/// stopped or restarted), the calls waiting on it fail; the next call connects again (at once,
/// before sending, if no call was in flight when the stub closed it).
pub struct AsyncClient {
    link: Link,
    requests: Requests,
}

impl AsyncClient {
    /// Connects to a stub's app port, for example `127.0.0.1:8765`.
    pub async fn connect(address: &str) -> Result<Self, CallError> {
        Self::connect_with(address, Requests::new()).await
    }

    /// Connects to the stub of a client profile (`-c conf2`): its `app_port`,
    /// `call_timeout_ms` and frame limit.
    pub async fn connect_profile(profile: &str) -> Result<Self, CallError> {
        let (address, requests) = Requests::of_profile(profile, None)?;
        Self::connect_with(&address, requests).await
    }

    /// Connects to `address`, reading answers up to the frame limit of `requests`.
    async fn connect_with(address: &str, requests: Requests) -> Result<Self, CallError> {
        let deadline = deadline_after(requests.timeout);
        let link = Link::connect(address, requests.max_frame, deadline).await;
        Ok(AsyncClient {
            link: link.map_err(CallError::NotConnected)?,
            requests,
        })
    }

    /// Sets the default timeout of every call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.requests.timeout = timeout;
        self
    }

    /// Sets the largest request sent and answer read (default: the stubs' default frame
    /// limit): the stub's `max_frame_bytes`.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.requests.max_frame = bytes;
        self.link.set_max_frame(bytes);
        self
    }

    /// Calls `module.function(*args)`; `args` is a tuple, a list, or one value (`()`, as any
    /// lone null, is no arguments: one `None` goes as `(None,)`). NaN and the infinities,
    /// which JSON cannot carry, are refused (`BadArguments`), as is a timeout of 0.
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
        let request = self
            .requests
            .call(module, function, args, Map::new(), None)?;
        decode(self.send(request).await?)
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
        let request = self
            .requests
            .call(module, function, args, kwargs, timeout)?;
        decode(self.send(request).await?)
    }

    /// The names of the modules on the network that start with `prefix`.
    pub async fn modules(&self, prefix: &str) -> Result<Vec<String>, CallError> {
        let prefix = prefix.to_owned();
        let request = self
            .requests
            .other(|id| ToStub::Modules { id, prefix }, "modules")?;
        decode(self.send(request).await?)
    }

    /// The descriptor of `module`.
    pub async fn describe(&self, module: &str) -> Result<ModuleDescriptor, CallError> {
        let module = module.to_owned();
        let request = self
            .requests
            .other(|id| ToStub::Describe { id, module }, "describe")?;
        decode(self.send(request).await?)
    }

    /// Reads the plain value `name` of `module` (an exposed installed module's constant, such
    /// as `os.path.sep`).
    pub async fn attr(&self, module: &str, name: &str) -> Result<Value, CallError> {
        self.call(module, name, ()).await
    }

    /// This app's stub as the server sees it: `{"address": ..., "rtt_ms": ...}`.
    pub async fn ping(&self) -> Result<Value, CallError> {
        decode(
            self.send(self.requests.other(|id| ToStub::Ping { id }, "ping")?)
                .await?,
        )
    }

    /// Call statistics of the stub: `{"made": [...], "served": [...]}`, a row per function.
    pub async fn stats(&self) -> Result<Value, CallError> {
        decode(
            self.send(self.requests.other(|id| ToStub::Stats { id }, "stats")?)
                .await?,
        )
    }

    /// Reloads a module the stub owns from its file; returns the descriptor's new md5.
    pub async fn reload(&self, module: &str) -> Result<String, CallError> {
        let module = module.to_owned();
        let request = self
            .requests
            .other(|id| ToStub::Reload { id, module }, "reload")?;
        decode(self.send(request).await?)
    }

    /// Sends one request and waits for its answer or the timeout, whichever comes first.
    async fn send(&self, request: Request) -> Result<Json, CallError> {
        let deadline = request.deadline();
        match self.link.request(request.id, &request.line, deadline).await {
            Ok(result) => result.map_err(CallError::from),
            Err(NoAnswer::Closed(why)) => Err(CallError::NotConnected(why)),
            Err(NoAnswer::Late) => Err(request.late()),
            Err(NoAnswer::Unsent) => Err(request.unsent()),
            Err(NoAnswer::Unconnected(address)) => Err(request.unconnected(&address)),
        }
    }
}
