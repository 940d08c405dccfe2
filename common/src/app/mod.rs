//! The app's API: call shared modules through the local client stub.
//!
//! One connection carries many calls in flight, matched by id (see `link.rs`: the waiting calls
//! themselves write the requests and read the answers). Every call has a timeout (a default,
//! and per call) enforced here, so no call waits forever whatever the network does.
//! [`AsyncClient`] is the smol form; [`Client`] the blocking one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};
use smol::net::TcpStream;

use crate::config::{ClientProfile, Profile};
use crate::conn::{put_line, read_frame, DEFAULT_MAX_FRAME};
use crate::error::{ErrorKind, RemoteError};
use crate::module::ModuleDescriptor;
use crate::proto::{Call, Json, ToApp, ToStub};
use link::{Link, NoAnswer};

mod link;

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
    /// The client profile (`-c`) cannot be used; the message names its file and what is wrong.
    #[error("{0}")]
    Profile(String),
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

/// What both clients share: request ids, the default timeout and the frame limit.
struct Requests {
    next_id: AtomicU64,
    timeout: Duration,
    max_frame: usize,
}

/// A request ready to write: its line, its id, and how long its answer may take.
struct Request {
    id: u64,
    line: Vec<u8>,
    timeout: Duration,
    /// What it asks, for its timeout message.
    what: String,
}

impl Requests {
    fn new() -> Self {
        Requests {
            next_id: AtomicU64::new(0),
            timeout: DEFAULT_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// The app address of a client profile's stub (`-c conf2`), or `app_port` on loopback if
    /// given, and the profile's `call_timeout_ms` and frame limit.
    fn of_profile(profile: &str, app_port: Option<u16>) -> Result<(String, Requests), CallError> {
        let p = Profile::<ClientProfile>::load(profile)
            .map_err(|e| CallError::Profile(e.to_string()))?;
        let port = app_port.or(p.values.app_port).unwrap_or(8765);
        if port == 0 {
            // 0 tells the stub to take any free port: only its output says which.
            return Err(CallError::Profile(format!(
                "the profile {} has app_port = 0 (its stub takes any free port): connect to \
                 the port the stub printed (apps on 127.0.0.1:PORT)",
                p.path.display()
            )));
        }
        let address = format!("127.0.0.1:{port}");
        let mut requests = Requests::new();
        requests.max_frame = p.values.limits.max_frame_bytes;
        if let Some(ms) = p.values.call_timeout_ms {
            requests.timeout = Duration::from_millis(ms);
        }
        Ok((address, requests))
    }

    /// `module.function(*args, **kwargs)`; `args` is a tuple, a list, or one value.
    fn call(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
        kwargs: Map<String, Value>,
        timeout: Option<Duration>,
    ) -> Result<Request, CallError> {
        let bad = |e: serde_json::Error| CallError::BadArguments(e.to_string());
        // Printed once; a list is then split into its values' texts, not parsed.
        let text = serde_json::to_string(&args).map_err(bad)?;
        let args = match text.as_bytes().first() {
            Some(b'[') => serde_json::from_str(&text).map_err(bad)?,
            _ if text == "null" => Vec::new(),
            _ => vec![Json::parse(text).map_err(bad)?],
        };
        let kwargs = kwargs.into_iter().map(|(k, v)| (k, v.into())).collect();
        let timeout = timeout.unwrap_or(self.timeout);
        let (module, function) = (module.to_owned(), function.to_owned());
        let what = format!("{module}.{function}");
        let make = |id| {
            ToStub::Call(Call {
                id,
                module,
                function,
                args,
                kwargs,
                timeout_ms: timeout.as_millis() as u64,
            })
        };
        self.request(make, timeout, what)
    }

    /// Any other request, with the default timeout.
    fn other(&self, make: impl FnOnce(u64) -> ToStub, what: &str) -> Result<Request, CallError> {
        self.request(make, self.timeout, what.to_owned())
    }

    /// The request as a line of JSON, refused before it is sent if it is over the frame limit.
    fn request(
        &self,
        make: impl FnOnce(u64) -> ToStub,
        timeout: Duration,
        what: String,
    ) -> Result<Request, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        // Room for a typical call at once: growing from empty would reallocate several times.
        let mut line = Vec::with_capacity(256);
        put_line(&mut line, &make(id)).map_err(|e| CallError::BadArguments(e.to_string()))?;
        let size = line.len() - 1; // the newline is not part of the frame
        let max_frame = self.max_frame;
        if size > max_frame {
            return Err(CallError::TooLarge(format!(
                "{what}: the request is {size} bytes, over the frame limit of {max_frame} bytes"
            )));
        }
        Ok(Request {
            id,
            line,
            timeout,
            what,
        })
    }
}

impl Request {
    fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    /// The error of a request whose answer did not come in time.
    fn late(&self) -> CallError {
        let (what, timeout) = (&self.what, self.timeout);
        CallError::Timeout(format!("{what}: no answer within {timeout:?}"))
    }
}

/// A connection to the local stub (smol form). Cheap to share by reference across tasks; it
/// runs no task of its own, so it works under any executor.
pub struct AsyncClient {
    link: Link,
    requests: Requests,
}

impl AsyncClient {
    /// Connects to a stub's app port, for example `127.0.0.1:8765`.
    pub async fn connect(address: &str) -> Result<Self, CallError> {
        let stream = TcpStream::connect(address)
            .await
            .map_err(|e| CallError::NotConnected(format!("no stub at {address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(AsyncClient {
            link: Link::new(stream, DEFAULT_MAX_FRAME),
            requests: Requests::new(),
        })
    }

    /// Connects to the stub of a client profile (`-c conf2`): its `app_port` and
    /// `call_timeout_ms`.
    pub async fn connect_profile(profile: &str) -> Result<Self, CallError> {
        let (address, requests) = Requests::of_profile(profile, None)?;
        let client = Self::connect(&address).await?;
        Ok(AsyncClient { requests, ..client })
    }

    /// Sets the default timeout of every call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.requests.timeout = timeout;
        self
    }

    /// Sets the largest request sent (default: the stubs' default frame limit).
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.requests.max_frame = bytes;
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
        }
    }
}

/// A blocking connection to the local stub. Each call writes its request and reads until its
/// answer on the calling thread: no background task and no thread hop, the fastest path for an
/// app that makes one call at a time. Threads sharing one `Client` take turns; for many calls
/// in flight, use [`AsyncClient`].
pub struct Client {
    link: Mutex<SyncLink>,
    requests: Requests,
}

struct SyncLink {
    writer: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
    line: Vec<u8>,
}

impl Client {
    /// Connects to a stub's app port, for example `127.0.0.1:8765`.
    pub fn connect(address: &str) -> Result<Self, CallError> {
        let refused =
            |e: std::io::Error| CallError::NotConnected(format!("no stub at {address}: {e}"));
        let stream = std::net::TcpStream::connect(address).map_err(refused)?;
        let _ = stream.set_nodelay(true);
        let reader = std::io::BufReader::new(stream.try_clone().map_err(refused)?);
        Ok(Client {
            link: Mutex::new(SyncLink {
                writer: stream,
                reader,
                line: Vec::with_capacity(1024),
            }),
            requests: Requests::new(),
        })
    }

    /// Connects to the stub of a client profile (`-c conf2`): its `app_port` and
    /// `call_timeout_ms`.
    pub fn connect_profile(profile: &str) -> Result<Self, CallError> {
        Self::connect_profile_on(profile, None)
    }

    /// [`Client::connect_profile`], on loopback port `app_port` instead of the profile's if
    /// given (the profile's timeout and frame limit still apply).
    pub fn connect_profile_on(profile: &str, app_port: Option<u16>) -> Result<Self, CallError> {
        let (address, requests) = Requests::of_profile(profile, app_port)?;
        let client = Self::connect(&address)?;
        Ok(Client { requests, ..client })
    }

    /// Sets the default timeout of every call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.requests.timeout = timeout;
        self
    }

    /// See [`AsyncClient::call`].
    pub fn call(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<Value, CallError> {
        self.call_with(module, function, args, Map::new(), None)
    }

    /// See [`AsyncClient::call_as`].
    pub fn call_as<T: DeserializeOwned>(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<T, CallError> {
        decode(
            self.send(
                self.requests
                    .call(module, function, args, Map::new(), None)?,
            )?,
        )
    }

    /// See [`AsyncClient::call_with`].
    pub fn call_with(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
        kwargs: Map<String, Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, CallError> {
        decode(
            self.send(
                self.requests
                    .call(module, function, args, kwargs, timeout)?,
            )?,
        )
    }

    pub fn modules(&self, prefix: &str) -> Result<Vec<String>, CallError> {
        let prefix = prefix.to_owned();
        decode(
            self.send(
                self.requests
                    .other(|id| ToStub::Modules { id, prefix }, "modules")?,
            )?,
        )
    }

    pub fn describe(&self, module: &str) -> Result<ModuleDescriptor, CallError> {
        let module = module.to_owned();
        decode(
            self.send(
                self.requests
                    .other(|id| ToStub::Describe { id, module }, "describe")?,
            )?,
        )
    }

    pub fn attr(&self, module: &str, name: &str) -> Result<Value, CallError> {
        self.call(module, name, ())
    }

    pub fn ping(&self) -> Result<Value, CallError> {
        decode(self.send(self.requests.other(|id| ToStub::Ping { id }, "ping")?)?)
    }

    pub fn stats(&self) -> Result<Value, CallError> {
        decode(self.send(self.requests.other(|id| ToStub::Stats { id }, "stats")?)?)
    }

    pub fn reload(&self, module: &str) -> Result<String, CallError> {
        let module = module.to_owned();
        decode(
            self.send(
                self.requests
                    .other(|id| ToStub::Reload { id, module }, "reload")?,
            )?,
        )
    }

    /// Writes one request and reads until its answer, or the timeout.
    fn send(&self, request: Request) -> Result<Json, CallError> {
        use std::io::{BufRead, Write};
        let mut link = self.link.lock().unwrap_or_else(|e| e.into_inner());
        let gone = |e: std::io::Error| {
            CallError::NotConnected(format!("the connection to the stub failed: {e}"))
        };
        link.writer.write_all(&request.line).map_err(gone)?;
        let deadline = request.deadline();
        let SyncLink { reader, line, .. } = &mut *link;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(request.late());
            }
            reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(gone)?;
            // A read cut short by the timeout leaves its bytes in `line`: the next read, in this
            // call or the next one, completes the line instead of losing its start.
            match reader.read_until(b'\n', line) {
                Ok(0) if line.is_empty() => {
                    return Err(CallError::NotConnected(
                        "the stub closed the connection".into(),
                    ))
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(gone(e)),
            }
            if line.last() != Some(&b'\n') {
                return Err(CallError::NotConnected(
                    "the stub closed the connection".into(),
                ));
            }
            // Answers to earlier calls that timed out, and anything unreadable, are skipped.
            let frame = read_frame::<ToApp>(line);
            line.clear();
            if let Ok(ToApp::Reply(reply)) = frame {
                if reply.id == request.id {
                    return reply.result.map_err(CallError::from);
                }
            }
        }
    }
}

/// A result read as the type asked for.
fn decode<T: DeserializeOwned>(value: Json) -> Result<T, CallError> {
    value
        .read()
        .map_err(|e| CallError::BadResult(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::future::zip;
    use std::io::{BufRead, BufReader, Write};

    #[test]
    fn a_profile_whose_app_port_is_any_free_port_says_so() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p.toml");
        std::fs::write(&path, "app_port = 0\n").unwrap();
        let path = path.to_str().unwrap();
        let Err(e) = Client::connect_profile(path) else {
            panic!("connected to port 0")
        };
        assert!(
            matches!(&e, CallError::Profile(m) if m.contains("has app_port = 0")),
            "{e}"
        );
        // A port given with it is used instead.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(Client::connect_profile_on(path, Some(port)).is_ok());
    }

    #[test]
    fn a_bad_profile_is_a_profile_error_naming_its_file_and_the_fault() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p.toml");
        for (text, fault) in [
            ("app_port = \"x\"\n", "invalid type"),
            ("nmae = 1\n", "nmae"),
        ] {
            std::fs::write(&path, text).unwrap();
            let Err(e) = Client::connect_profile(path.to_str().unwrap()) else {
                panic!("connected with {text}")
            };
            let CallError::Profile(m) = &e else {
                panic!("not a profile error: {e:?}")
            };
            assert!(
                m.contains(&path.display().to_string()) && m.contains(fault),
                "{m}"
            );
            assert!(!e.to_string().contains("not connected"), "{e}");
        }
    }

    #[test]
    fn a_reply_cut_by_a_timeout_does_not_garble_the_next_call() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stub = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut requests = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            requests.read_line(&mut line).unwrap();
            s.write_all(br#"{"cmd":"reply","data":{"id":1,"#).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            s.write_all(b"\"result\":{\"Ok\":1}}}\n").unwrap();
            requests.read_line(&mut line).unwrap();
            s.write_all(b"{\"cmd\":\"reply\",\"data\":{\"id\":2,\"result\":{\"Ok\":2}}}\n")
                .unwrap();
        });
        let client = Client::connect(&addr).unwrap();
        let first = client.call_with("m", "f", (), Map::new(), Some(Duration::from_millis(100)));
        assert!(matches!(first, Err(CallError::Timeout(_))), "{first:?}");
        assert_eq!(client.call("m", "f", ()).unwrap(), serde_json::json!(2));
        stub.join().unwrap();
    }

    #[test]
    fn arguments_over_the_frame_limit_fail_before_they_are_sent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let client = Client::connect(&addr).unwrap();
        let big = "x".repeat(DEFAULT_MAX_FRAME);
        match client.call("m", "f", (big,)) {
            Err(CallError::TooLarge(m)) => assert!(m.contains("frame limit of 4194304"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    /// A fake stub on a thread: reads `requests` lines, then runs `answer` on the socket.
    fn fake_stub(
        requests: usize,
        answer: impl FnOnce(std::net::TcpStream) + Send + 'static,
    ) -> (String, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stub = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut lines = BufReader::new(s.try_clone().unwrap());
            for _ in 0..requests {
                lines.read_line(&mut String::new()).unwrap();
            }
            answer(s);
        });
        (addr, stub)
    }

    #[test]
    fn an_answer_with_data_before_cmd_is_read() {
        let answer = |mut s: std::net::TcpStream| {
            s.write_all(b"{\"data\":{\"id\":1,\"result\":{\"Ok\":[1, 2]}},\"cmd\":\"reply\"}\n")
                .unwrap();
        };
        let (addr, stub) = fake_stub(1, answer);
        let client = Client::connect(&addr).unwrap();
        assert_eq!(
            client.call("m", "f", ()).unwrap(),
            serde_json::json!([1, 2])
        );
        stub.join().unwrap();
        let (addr, stub) = fake_stub(1, answer);
        smol::block_on(async {
            let client = AsyncClient::connect(&addr).await.unwrap();
            let result = client.call("m", "f", ()).await;
            assert_eq!(result.unwrap(), serde_json::json!([1, 2]));
        });
        stub.join().unwrap();
    }

    #[test]
    fn a_call_timing_out_while_it_reads_for_others_passes_the_reading_on() {
        let (addr, stub) = fake_stub(2, |mut s| {
            std::thread::sleep(Duration::from_millis(300));
            for id in [2, 1] {
                let reply = format!(
                    "{{\"cmd\":\"reply\",\"data\":{{\"id\":{id},\"result\":{{\"Ok\":{id}}}}}}}\n"
                );
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        smol::block_on(async {
            let client = AsyncClient::connect(&addr).await.unwrap();
            // The first call waits first, so it holds the reader when its timeout cuts it.
            let short = Some(Duration::from_millis(100));
            let first = client.call_with("m", "f", (), Map::new(), short);
            let second = client.call("m", "f", ());
            let (first, second) = zip(first, second).await;
            assert!(matches!(first, Err(CallError::Timeout(_))), "{first:?}");
            assert_eq!(second.unwrap(), serde_json::json!(2));
        });
        stub.join().unwrap();
    }

    #[test]
    fn a_later_call_with_a_shorter_timeout_times_out_on_time() {
        let (addr, stub) = fake_stub(2, |mut s| {
            std::thread::sleep(Duration::from_millis(800));
            s.write_all(b"{\"cmd\":\"reply\",\"data\":{\"id\":1,\"result\":{\"Ok\":1}}}\n")
                .unwrap();
        });
        smol::block_on(async {
            let client = AsyncClient::connect(&addr).await.unwrap();
            // The first call holds the reader, its timer set for its own (distant) deadline.
            let first = client.call("m", "f", ());
            let second = async {
                smol::Timer::after(Duration::from_millis(50)).await;
                let started = Instant::now();
                let short = Some(Duration::from_millis(100));
                let result = client.call_with("m", "f", (), Map::new(), short).await;
                (result, started.elapsed())
            };
            let (first, (second, waited)) = zip(first, second).await;
            assert!(matches!(second, Err(CallError::Timeout(_))), "{second:?}");
            assert!(
                waited < Duration::from_millis(600),
                "timed out after {waited:?}"
            );
            assert_eq!(first.unwrap(), serde_json::json!(1));
        });
        stub.join().unwrap();
    }

    #[test]
    fn the_stub_closing_fails_every_waiting_call_at_once() {
        let (addr, stub) = fake_stub(3, drop);
        smol::block_on(async {
            let client = AsyncClient::connect(&addr).await.unwrap();
            let started = Instant::now();
            let call = || client.call("m", "f", ());
            let (a, (b, c)) = zip(call(), zip(call(), call())).await;
            for result in [a, b, c] {
                assert!(
                    matches!(result, Err(CallError::NotConnected(_))),
                    "{result:?}"
                );
            }
            assert!(started.elapsed() < DEFAULT_TIMEOUT / 2);
            let later = client.call("m", "f", ()).await;
            assert!(
                matches!(later, Err(CallError::NotConnected(_))),
                "{later:?}"
            );
        });
        stub.join().unwrap();
    }

    #[test]
    fn answers_in_any_order_reach_their_calls_while_others_time_out() {
        const CALLS: u64 = 300;
        // Answers each request (its result is its id), in bursts, the last of a burst first.
        let (addr, stub) = fake_stub(0, |s| {
            let mut lines = BufReader::new(s.try_clone().unwrap());
            let mut out = s;
            let (mut burst, mut line) = (Vec::new(), String::new());
            while lines.read_line(&mut line).unwrap() > 0 {
                let at = line.find("\"id\":").unwrap() + 5;
                let id: u64 = line[at..].split(',').next().unwrap().parse().unwrap();
                line.clear();
                burst.push(id);
                if burst.len() == 7 || id == CALLS {
                    std::thread::sleep(Duration::from_millis(2));
                    for id in burst.drain(..).rev() {
                        let reply = format!("{{\"cmd\":\"reply\",\"data\":{{\"id\":{id},\"result\":{{\"Ok\":{id}}}}}}}\n");
                        out.write_all(reply.as_bytes()).unwrap();
                    }
                }
            }
        });
        smol::block_on(async {
            let client = AsyncClient::connect(&addr).await.unwrap();
            let ex = smol::LocalExecutor::new();
            let calls: Vec<_> = (1..=CALLS)
                .map(|id| {
                    // Every fifth call gives up at once, wherever it is: often holding the reader.
                    let timeout = Duration::from_millis(if id % 5 == 0 { 1 } else { 10_000 });
                    let call = client.call_with("m", "f", (), Map::new(), Some(timeout));
                    ex.spawn(async move { (id, call.await) })
                })
                .collect();
            let timed_out = ex
                .run(async {
                    let mut timed_out = 0;
                    for call in calls {
                        match call.await {
                            (id, Err(CallError::Timeout(_))) if id % 5 == 0 => timed_out += 1,
                            (id, answer) => assert_eq!(answer.unwrap(), serde_json::json!(id)),
                        }
                    }
                    timed_out
                })
                .await;
            assert!(timed_out > 0, "no call timed out: the test tested nothing");
        });
        stub.join().unwrap();
    }
}
