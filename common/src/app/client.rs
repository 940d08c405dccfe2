//! The blocking client: each call writes its request and reads its answer on the calling thread.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use super::requests::{deadline_after, Request, Requests};
use super::{decode, hung_up, not_an_app_port, stub_failed, CallError, STUB_CLOSED};
use crate::conn::read_frame;
use crate::module::ModuleDescriptor;
use crate::proto::{Json, ToApp, ToStub};

/// A blocking connection to the local stub. Each call writes its request and reads until its
/// answer on the calling thread: no background task and no thread hop, the fastest path for an
/// app that makes one call at a time. Threads sharing one `Client` take turns, each call
/// within its timeout (give or take 10 ms: a socket timeout is set again only when the time
/// left differs from it by more), its wait for its turn, connecting again and the writing of
/// its request included; for many calls in flight, use [`AsyncClient`](super::AsyncClient). A
/// call that finds the connection ended (the stub stopped or restarted), or whose request its
/// timeout cut short (a stub that stops reading), fails; the next call connects again. One the
/// stub closed between calls is found before the request is written: the call connects again.
pub struct Client {
    /// The stub's app address, to connect again after the connection ended.
    address: String,
    turn: Mutex<Turn>,
    /// Told when a call gives the connection back.
    returned: Condvar,
    requests: Requests,
}

/// The connection, out while a call has it, and how many calls wait for it.
struct Turn {
    link: Option<SyncLink>,
    waiting: usize,
}

/// A call's hold on the connection: given back when dropped, however the call ends.
struct Held<'a> {
    client: &'a Client,
    link: Option<SyncLink>,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut turn = self.client.lock_turn();
        turn.link = self.link.take();
        if turn.waiting > 0 {
            self.client.returned.notify_one();
        }
    }
}

struct SyncLink {
    /// `None` once the connection ended: the next call connects again.
    conn: Option<Conn>,
    line: Vec<u8>,
}

struct Conn {
    writer: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
    /// The socket's timeouts as last set (both halves are one socket).
    read_timeout: SocketTimeout,
    write_timeout: SocketTimeout,
}

/// A socket timeout as last set. A call sets its time left only when that is further than
/// [`SocketTimeout::SLACK`] from it: calls one after another with one timeout set it once, not
/// a syscall per call.
#[derive(Default)]
struct SocketTimeout(Option<Duration>);

impl SocketTimeout {
    /// How early or late a wait may end, to spare a syscall: well under a timeout's worth.
    const SLACK: Duration = Duration::from_millis(10);

    /// Has the socket's timeout be `left`, give or take [`SocketTimeout::SLACK`], by `set`.
    fn fit(
        &mut self,
        left: Duration,
        set: impl FnOnce(Option<Duration>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        if self.0.is_none_or(|now| now.abs_diff(left) > Self::SLACK) {
            set(Some(left))?;
            self.0 = Some(left);
        }
        Ok(())
    }
}

/// The error of a connection to `address` that failed (not one that ran out of time).
fn refused(address: &str, e: std::io::Error) -> CallError {
    CallError::NotConnected(format!("no stub at {address}: {e}"))
}

impl Conn {
    /// Connects to `address` by `deadline`: an error of kind `TimedOut` if it passed.
    fn open(address: &str, deadline: Instant) -> std::io::Result<Conn> {
        let stream = connect_by(address, deadline)?;
        let _ = stream.set_nodelay(true);
        let reader = std::io::BufReader::new(stream.try_clone()?);
        Ok(Conn {
            writer: stream,
            reader,
            read_timeout: SocketTimeout::default(),
            write_timeout: SocketTimeout::default(),
        })
    }
}

impl Client {
    /// Connects to a stub's app port, for example `127.0.0.1:8765`.
    pub fn connect(address: &str) -> Result<Self, CallError> {
        Self::connect_with(address, Requests::new())
    }

    /// Connects to `address` within the default timeout of `requests`, its calls made with
    /// them.
    fn connect_with(address: &str, requests: Requests) -> Result<Self, CallError> {
        let conn = Conn::open(address, deadline_after(requests.timeout));
        let link = SyncLink {
            conn: Some(conn.map_err(|e| refused(address, e))?),
            line: Vec::with_capacity(1024),
        };
        Ok(Client {
            address: address.to_owned(),
            turn: Mutex::new(Turn {
                link: Some(link),
                waiting: 0,
            }),
            returned: Condvar::new(),
            requests,
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
        Self::connect_with(&address, requests)
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
        self
    }

    /// See [`AsyncClient::call`](super::AsyncClient::call).
    pub fn call(
        &self,
        module: &str,
        function: &str,
        args: impl Serialize,
    ) -> Result<Value, CallError> {
        self.call_with(module, function, args, Map::new(), None)
    }

    /// See [`AsyncClient::call_as`](super::AsyncClient::call_as).
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

    /// See [`AsyncClient::call_with`](super::AsyncClient::call_with).
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

    fn lock_turn(&self) -> MutexGuard<'_, Turn> {
        self.turn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for the connection until `deadline`: a call waiting behind a slower one
    /// times out on time, unsent.
    fn take_turn(&self, request: &Request, deadline: Instant) -> Result<Held<'_>, CallError> {
        let mut turn = self.lock_turn();
        loop {
            if let Some(link) = turn.link.take() {
                return Ok(Held {
                    client: self,
                    link: Some(link),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(request.late());
            }
            turn.waiting += 1;
            turn = (self.returned.wait_timeout(turn, left))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            turn.waiting -= 1;
        }
    }

    /// Writes one request and reads until its answer, or the timeout; on a connection that
    /// ended, connecting again first.
    fn send(&self, request: Request) -> Result<Json, CallError> {
        let deadline = request.deadline();
        let mut held = self.take_turn(&request, deadline)?;
        let link = held.link.as_mut().expect("a turn holds the connection");
        if link.conn.as_ref().is_some_and(|conn| hung_up(&conn.writer)) {
            link.conn = None;
            link.line.clear(); // the old connection's
        }
        let conn = match &mut link.conn {
            Some(conn) => conn,
            None => link
                .conn
                .insert(Conn::open(&self.address, deadline).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::TimedOut {
                        request.unconnected(&self.address)
                    } else {
                        refused(&self.address, e)
                    }
                })?),
        };
        let max = self.requests.max_frame;
        match exchange(conn, &mut link.line, &request, deadline, &self.address, max) {
            Ok(answer) => answer,
            Err(Ended(error)) => {
                link.conn = None;
                link.line.clear(); // the old connection's
                Err(error)
            }
        }
    }
}

/// Connects to `address` (`host:port`), trying each of its addresses in the time left until
/// `deadline`: a stopped stub whose accept backlog is full would hold a plain connect for
/// minutes.
fn connect_by(address: &str, deadline: Instant) -> std::io::Result<std::net::TcpStream> {
    use std::io::{Error, ErrorKind::TimedOut};
    let mut failed = None;
    for addr in std::net::ToSocketAddrs::to_socket_addrs(address)? {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::new(TimedOut, "connection timed out"));
        }
        match std::net::TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => failed = Some(e),
        }
    }
    Err(failed.unwrap_or_else(|| Error::other("the address resolves to none")))
}

/// A connection ended, and the error of the call that saw it end.
struct Ended(CallError);

fn failed(e: std::io::Error) -> Ended {
    Ended(CallError::NotConnected(stub_failed(e)))
}

fn closed() -> Ended {
    Ended(CallError::NotConnected(STUB_CLOSED.into()))
}

/// Whether an I/O error is a wait that ended early (its timeout, a signal): try again.
fn cut_short(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}

/// Writes `request` on `conn` (to `address`) and reads until its answer, or its deadline.
/// `line` keeps a line cut short by a deadline, for the next call to complete; a line over
/// `max` bytes ends the connection.
fn exchange(
    conn: &mut Conn,
    line: &mut Vec<u8>,
    request: &Request,
    deadline: Instant,
    address: &str,
    max: usize,
) -> Result<Result<Json, CallError>, Ended> {
    use std::io::BufRead;
    if let Err(late) = write(conn, request, deadline)? {
        return Ok(Err(late));
    }
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Err(request.late()));
        }
        let reader = conn.reader.get_ref();
        (conn.read_timeout)
            .fit(left, |t| reader.set_read_timeout(t))
            .map_err(failed)?;
        // One read at a time, so that the deadline is looked at between reads: a peer that
        // trickles bytes without a newline would hold a whole-line read past it, growing it.
        // A read cut short by the timeout leaves its bytes in `line`: the next read, in this
        // call or the next one, completes the line instead of losing its start.
        let read = match conn.reader.fill_buf() {
            Ok([]) => return Err(closed()),
            Ok(read) => read,
            Err(e) if cut_short(&e) => continue,
            Err(e) => return Err(failed(e)),
        };
        let (piece, whole) = match memchr::memchr(b'\n', read) {
            Some(end) => (&read[..=end], true),
            None => (read, false),
        };
        if line.len() + piece.len() > max + 1 {
            return Err(Ended(CallError::NotConnected(format!(
                "the stub sent a line over the frame limit of {max} bytes (with_max_frame)"
            ))));
        }
        line.extend_from_slice(piece);
        let used = piece.len();
        conn.reader.consume(used);
        if !whole {
            continue;
        }
        // Answers to earlier calls that timed out, and anything unreadable, are skipped; but
        // a server stub's refusal says no stub is there.
        let frame = read_frame::<ToApp>(line);
        let elsewhere = match frame {
            Err(_) => not_an_app_port(address, line),
            Ok(_) => None,
        };
        line.clear();
        if let Some(why) = elsewhere {
            return Err(Ended(CallError::NotConnected(why)));
        }
        if let Ok(ToApp::Reply(reply)) = frame {
            if reply.id == request.id {
                return Ok(reply.result.map_err(CallError::from));
            }
        }
    }
}

/// Writes `request` on `conn` by its deadline (a stub that stops reading fills the socket). A
/// request cut short by it ends the connection: the stub would read the next one as its rest.
fn write(
    conn: &mut Conn,
    request: &Request,
    deadline: Instant,
) -> Result<Result<(), CallError>, Ended> {
    use std::io::Write;
    let mut rest = &request.line[..];
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let (late, begun) = (request.unsent(), rest.len() < request.line.len());
            return if begun {
                Err(Ended(late))
            } else {
                Ok(Err(late))
            };
        }
        let writer = &conn.writer;
        (conn.write_timeout)
            .fit(left, |t| writer.set_write_timeout(t))
            .map_err(failed)?;
        match (&conn.writer).write(rest) {
            Ok(0) => return Err(closed()),
            Ok(n) => rest = &rest[n..],
            Err(e) if cut_short(&e) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(Ok(()))
}
