//! The app's API: call shared modules through the local client stub.
//!
//! One connection carries many calls in flight, matched by id (see `link.rs`: the waiting calls
//! themselves write the requests and read the answers). Every call has a timeout (a default,
//! and per call) enforced here, so no call waits forever whatever the network does.
//! [`AsyncClient`] is the smol form; [`Client`] the blocking one.
//!
//! - `mod.rs`: [`CallError`], [`DEFAULT_TIMEOUT`] and reading a result as the type asked for;
//! - `requests.rs`: what both clients share: request ids, the lines of JSON, the timeouts;
//! - `finite.rs`: refusing arguments that hold NaN or an infinity, which JSON cannot carry;
//! - `async_client.rs`: [`AsyncClient`], many calls in flight on one connection;
//! - `client.rs`: [`Client`], one call at a time, read on the calling thread;
//! - `link.rs`: the connection [`AsyncClient`] shares among its calls.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{ErrorKind, RemoteError};
use crate::proto::Json;

mod async_client;
mod client;
pub(crate) mod finite;
mod link;
mod requests;
#[cfg(test)]
pub(crate) mod tests;

pub use async_client::AsyncClient;
pub use client::Client;

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
    /// An argument or a result over the frame limit, or a call over the server's limit of calls
    /// in flight from one stub (`max_calls_in_flight`).
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

/// Why the connection to `address` ended, if the frame read there that no stub sends an app
/// (`head`, its start) shows that a server stub answered: it refuses an app's first frame, which
/// is no hello (`-q` given the server's port, say).
pub(crate) fn not_an_app_port(address: &str, head: &[u8]) -> Option<String> {
    (crate::proto::command(head) == Some("refused"))
        .then(|| format!("{address} is not a stub's app port (it answered as a server stub)"))
}

/// Why a connection to the stub ended when the stub closed it.
pub(crate) const STUB_CLOSED: &str = "the stub closed the connection";

/// Whether the stub has closed or reset `socket`, a connection no call is using, seen without
/// waiting (one `poll`). A call checks this before writing on it: writing on a connection the
/// stub closed (a stub restarted since the last call) would fail the call, and only the next
/// one would connect again. Nothing is sent yet, so connecting again cannot run the call twice.
/// A stub that closes it just after the check still fails the call.
#[cfg(unix)]
pub(crate) fn hung_up(socket: &std::net::TcpStream) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    // RDHUP: the stub's end of the stream, even behind unread bytes (a late answer to a call
    // that timed out). Linux only: elsewhere the end shows as readable, and a peek tells it
    // from bytes (it does not wait: something is there), unless bytes are before it.
    const LINUX: bool = cfg!(any(target_os = "linux", target_os = "android"));
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let ended = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let ended = PollFlags::HUP | PollFlags::ERR;
    let mut fds = [PollFd::new(socket, PollFlags::IN | ended)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // A failed poll tells nothing: the call goes on, and fails if the connection did end.
    if poll(&mut fds, Some(&now)).is_err() {
        return false;
    }
    let seen = fds[0].revents();
    seen.intersects(ended)
        || (!LINUX && seen.contains(PollFlags::IN) && socket.peek(&mut [0]).is_ok_and(|n| n == 0))
}

/// Without `poll`, a connection the stub closed is found by the call that uses it.
#[cfg(not(unix))]
pub(crate) fn hung_up(_socket: &std::net::TcpStream) -> bool {
    false
}

/// Why a connection to the stub ended when reading or writing on it failed with `e`.
pub(crate) fn stub_failed(e: impl std::fmt::Display) -> String {
    format!("the connection to the stub failed: {e}")
}

/// A result read as the type asked for.
fn decode<T: DeserializeOwned>(value: Json) -> Result<T, CallError> {
    value
        .read()
        .map_err(|e| CallError::BadResult(e.to_string()))
}
