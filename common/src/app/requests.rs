//! Requests as both clients make them: an id each, the line of JSON (refused over the frame
//! limit), the timeout and the error when it passes; a client profile's address and settings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{finite, CallError, DEFAULT_TIMEOUT};
use crate::config::{ClientProfile, Profile};
use crate::conn::{put_line, DEFAULT_MAX_FRAME};
use crate::proto::{Call, Json, ToStub};

/// What both clients share: request ids, the default timeout and the frame limit.
pub(super) struct Requests {
    next_id: AtomicU64,
    pub(super) timeout: Duration,
    pub(super) max_frame: usize,
}

/// A request ready to write: its line, its id, and how long its answer may take.
pub(super) struct Request {
    pub(super) id: u64,
    pub(super) line: Vec<u8>,
    timeout: Duration,
    /// What it asks, for its timeout message.
    what: String,
}

impl Requests {
    pub(super) fn new() -> Self {
        Requests {
            next_id: AtomicU64::new(0),
            timeout: DEFAULT_TIMEOUT,
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// The app address of a client profile's stub (`-c conf2`), or `app_port` on loopback if
    /// given, and the profile's `call_timeout_ms` and frame limit.
    pub(super) fn of_profile(
        profile: &str,
        app_port: Option<u16>,
    ) -> Result<(String, Requests), CallError> {
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

    /// `module.function(*args, **kwargs)`; `args` is a tuple, a list, or one value (`()`, as
    /// any lone null, is no arguments). Arguments holding NaN or an infinity are refused.
    pub(super) fn call(
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
        let is_list = text.starts_with('[');
        if finite::may_hold_one(&text) {
            finite::check(&args, is_list)
                .map_err(|e| CallError::BadArguments(format!("{module}.{function}: {e}")))?;
        }
        let args = if is_list {
            serde_json::from_str(&text).map_err(bad)?
        } else if text == "null" {
            Vec::new() // `()`: no arguments
        } else {
            vec![Json::parse(text).map_err(bad)?]
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
                // Rounded up: a timeout under a millisecond is not 0 ms, which the stub takes
                // as expired. Saturated: `as` would wrap 2^61 s to 0 ms.
                timeout_ms: u64::try_from(timeout.as_nanos().div_ceil(1_000_000))
                    .unwrap_or(u64::MAX),
                caller: None,
            })
        };
        self.request(make, timeout, what)
    }

    /// Any other request, with the default timeout.
    pub(super) fn other(
        &self,
        make: impl FnOnce(u64) -> ToStub,
        what: &str,
    ) -> Result<Request, CallError> {
        self.request(make, self.timeout, what.to_owned())
    }

    /// The request as a line of JSON, refused before it is sent if it is over the frame limit.
    fn request(
        &self,
        make: impl FnOnce(u64) -> ToStub,
        timeout: Duration,
        what: String,
    ) -> Result<Request, CallError> {
        if timeout.is_zero() {
            return Err(CallError::BadArguments(format!(
                "{what}: a timeout of 0 leaves the call no time: give one above 0"
            )));
        }
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
    /// When its answer is late. A timeout past what the clock can count (`Duration::MAX`
    /// meant as "wait for ever") waits a century instead of panicking.
    pub(super) fn deadline(&self) -> Instant {
        deadline_after(self.timeout)
    }

    /// The error of a request whose answer did not come in time.
    pub(super) fn late(&self) -> CallError {
        let (what, timeout) = (&self.what, self.timeout);
        CallError::Timeout(format!("{what}: no answer within {timeout:?}"))
    }

    /// The error of a request whose call could not connect to the stub at `address` in time.
    pub(super) fn unconnected(&self, address: &str) -> CallError {
        let (what, timeout) = (&self.what, self.timeout);
        CallError::Timeout(format!(
            "{what}: could not connect to the stub at {address} within {timeout:?}"
        ))
    }

    /// The error of a request none of which was written in time: the stub did not take it,
    /// or the timeout was too short to write it.
    pub(super) fn unsent(&self) -> CallError {
        let (what, timeout) = (&self.what, self.timeout);
        let why = if timeout < Duration::from_millis(1) {
            "a timeout under a millisecond ended before it could be written"
        } else {
            "the stub did not take it: it is not reading, or is still reading what was written \
             before it"
        };
        CallError::Timeout(format!("{what}: not sent within {timeout:?} ({why})"))
    }
}

/// When `timeout` from now ends. One past what the clock can count (`Duration::MAX` meant as
/// "wait for ever") ends in a century instead of panicking.
pub(super) fn deadline_after(timeout: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + CENTURY)
}
