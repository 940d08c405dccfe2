//! Calls: requests from apps, checked against the descriptor and run here (for modules this
//! stub owns) or sent to the server; answers routed back by id; timeouts; call statistics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::config::LinkLimits;
use common::error::{ErrorKind, RemoteError};
use common::module::ModuleDescriptor;
use common::outbox::Outbox;
use common::proto::{Call, Json, Reply, ToApp, ToServer, ToStub, CANCEL_IDS};
use common::say;
use common::store::{check_module_name, md5_hex};
use serde_json::{json, Value};

use crate::owned::{Asker, Parsed};
use crate::runner::AppRunner;
use crate::stub::Stub;
use crate::worker::Caller;

/// A call from an app waiting for the network.
pub(crate) struct Pending {
    pub(crate) conn: u64,
    pub(crate) app_id: u64,
    pub(crate) module: String,
    pub(crate) function: String,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
}

/// A call an app made on a module this stub owns. Nobody on the network times it out, so the
/// stub does: it is answered once, by its result or at its deadline by a timeout (the stub's
/// tick looks), whichever comes first.
pub(crate) struct LocalCall {
    outbox: Arc<Outbox>,
    limits: LinkLimits,
    id: u64,
    /// `module.function`, for the timeout's message.
    what: String,
    timeout_ms: u64,
    deadline: Instant,
    answered: AtomicBool,
}

impl LocalCall {
    /// Whether it is unanswered, for the app behind `outbox`.
    fn waits_on(&self, outbox: &Arc<Outbox>) -> bool {
        Arc::ptr_eq(&self.outbox, outbox) && !self.answered.load(Ordering::Acquire)
    }

    /// Answers the app, unless it was answered already.
    fn answer(&self, result: Result<Json, RemoteError>) {
        if !self.answered.swap(true, Ordering::AcqRel) {
            let id = self.id;
            reply_to_app(&self.outbox, Reply { id, result }, &self.limits);
        }
    }
}

/// Most `ping`s that wait for the server's echo at once. Each is an `echo` to the server and
/// one back: apps pinging without end, on several connections, would have the server queue
/// echoes for this stub faster than it reads them, and drop it as a stub that does not read.
/// Calls have the server's `max_calls_in_flight` for that.
pub(crate) const MAX_PINGS_IN_FLIGHT: usize = 1000;

/// A `ping` waiting for the server's echo: from the shell (`None`) or an app (connection, id).
pub(crate) struct PingWaiter {
    pub(crate) app: Option<(u64, u64)>,
    pub(crate) sent: Instant,
}

impl Stub {
    pub(crate) fn app(&mut self, conn: u64, msg: ToStub) {
        match msg {
            ToStub::Call(call) => self.app_call(conn, call),
            ToStub::Modules { id, prefix } => {
                let names = self.owned.keys().chain(self.known.keys());
                let list: Vec<Value> = names
                    .filter(|m| m.starts_with(&prefix))
                    .map(|m| Value::from(m.as_str()))
                    .collect();
                self.answer_app(conn, id, Ok(Value::Array(list).into()));
            }
            ToStub::Describe { id, module } => {
                let result = match self.descriptor(&module) {
                    Some((desc, _)) => Ok(Json::of(desc).expect("descriptors serialize")),
                    None => Err(self.not_here(&module)),
                };
                self.answer_app(conn, id, result);
            }
            ToStub::Ping { id } => self.ping(Some((conn, id))),
            ToStub::Stats { id } => {
                let served = self.served.lock().map(|s| s.rows()).unwrap_or_default();
                let stats = json!({"made": self.made.rows(), "served": served});
                self.answer_app(conn, id, Ok(stats.into()));
            }
            ToStub::Provide { id, descriptor } => {
                let result = self
                    .provide(conn, id, descriptor)
                    .map(|text| Value::from(text).into())
                    .map_err(|e| RemoteError::new(ErrorKind::Refused, e));
                self.answer_app(conn, id, result);
            }
            ToStub::Answer(reply) => {
                if let Some(runner) = self.providers.get(&conn) {
                    runner.answered(reply);
                }
            }
            ToStub::Reload { id, module } => {
                self.reload(&module, "asked by an app", Asker::App(conn, id))
            }
        }
    }

    /// An app provides a module itself (its request `id`): register it, with the app as its
    /// runner.
    fn provide(&mut self, conn: u64, id: u64, desc: ModuleDescriptor) -> Result<String, String> {
        check_module_name(&desc.module).map_err(|e| e.to_string())?;
        if let Some(bad) = desc.first_bad_name() {
            return Err(format!("its {bad} is not an identifier"));
        }
        if let Some(owned) = self.owned.get(&desc.module) {
            match owned.pool.provider() {
                Some(other) if other == conn => {}
                // An app that left (and whose leaving its task has not told yet) gives way
                // now, so an app that restarts at once can provide its module again.
                Some(other) if self.apps.get(&other).is_some_and(|o| o.peer_sent_all()) => {
                    self.withdraw_provided(other)
                }
                _ => return Err(format!("this stub already owns a module '{}'", desc.module)),
            }
        }
        let Some(outbox) = self.apps.get(&conn).cloned() else {
            return Err("the app left".into());
        };
        let runner = self
            .providers
            .entry(conn)
            .or_insert_with(|| AppRunner::new(conn, outbox, self.config.limits))
            .clone();
        let bytes = desc.to_bytes();
        let parsed = Parsed {
            path: format!("app:{conn}").into(),
            md5: md5_hex(&bytes),
            desc,
            bytes,
            source: None,
        };
        let md5 = parsed.md5.clone();
        self.own(parsed, Some((runner, id)))?;
        Ok(md5)
    }

    /// An app sent all it will send: the modules it provides leave (it can no longer answer
    /// their calls); its own calls are still answered, then its connection closes.
    pub(crate) fn app_done(&mut self, conn: u64) {
        self.withdraw_provided(conn);
        self.closing.push(conn);
        self.close_answered_apps();
    }

    /// Closes each app connection that sent all it will send and has no call left to answer:
    /// its task ends it once the answers are written.
    pub(crate) fn close_answered_apps(&mut self) {
        let Stub {
            closing,
            apps,
            pending,
            local_calls,
            pings,
            app_reloads,
            ..
        } = self;
        closing.retain(|&conn| {
            let Some(outbox) = apps.get(&conn) else {
                return false;
            };
            let waiting = pending.values().any(|p| p.conn == conn)
                || pings
                    .values()
                    .any(|p| p.app.is_some_and(|(c, _)| c == conn))
                || local_calls.iter().any(|c| c.waits_on(outbox))
                || app_reloads.contains(&conn);
            if !waiting {
                outbox.close();
            }
            waiting
        });
    }

    /// An app left: the modules it provided leave with it, and calls waiting on it fail. Its
    /// own calls not yet running are dropped, here and at their owners: nobody waits for them.
    pub(crate) fn app_left(&mut self, conn: u64) {
        if let Some(outbox) = self.apps.remove(&conn) {
            self.local_calls.retain(|call| !call.waits_on(&outbox));
        }
        self.closing.retain(|&c| c != conn);
        self.cancel_owned(|caller, _| caller == Caller::App(conn), "their app left");
        // Their answers, if any still come, are dropped.
        let ids: Vec<u64> = (self.pending)
            .extract_if(|_, p| p.conn == conn)
            .map(|(id, _)| id)
            .collect();
        if self.up.is_some() {
            for ids in ids.chunks(CANCEL_IDS) {
                let ids = ids.to_vec();
                self.send_up(ToServer::Cancel { ids });
            }
        }
        self.withdraw_provided(conn);
    }

    /// Drops the calls still queued for this stub's modules that `cancelled` picks, saying
    /// how many and `why` for each module.
    pub(crate) fn cancel_owned(&self, mut cancelled: impl FnMut(Caller, u64) -> bool, why: &str) {
        for (module, owned) in &self.owned {
            match owned.pool.cancel(&mut cancelled) {
                0 => {}
                1 => say!("[{module}] 1 call dropped before it ran: {why}"),
                n => say!("[{module}] {n} calls dropped before they ran: {why}"),
            }
        }
    }

    /// The modules app `conn` provides leave: calls waiting on them fail.
    fn withdraw_provided(&mut self, conn: u64) {
        if let Some(runner) = self.providers.remove(&conn) {
            runner.close();
            let provided: Vec<String> = self
                .owned
                .iter()
                .filter(|(_, o)| o.pool.provider() == Some(conn))
                .map(|(m, _)| m.clone())
                .collect();
            for module in provided {
                self.withdraw_owned(&module, "the app providing it left");
                self.disown(&module, "was withdrawn");
            }
            self.refresh_names();
        }
    }

    /// Asks the server how it sees this stub, timing the round trip. At most
    /// [`MAX_PINGS_IN_FLIGHT`] wait for the server at once.
    pub(crate) fn ping(&mut self, app: Option<(u64, u64)>) {
        let refused = if self.up.is_none() {
            let msg = "not connected to the server (reconnecting)";
            Some(RemoteError::new(ErrorKind::NotConnected, msg))
        } else if self.pings.len() >= MAX_PINGS_IN_FLIGHT {
            let msg = format!(
                "{MAX_PINGS_IN_FLIGHT} pings in flight from this stub, the limit is \
                 {MAX_PINGS_IN_FLIGHT}"
            );
            Some(RemoteError::new(ErrorKind::TooLarge, msg))
        } else {
            None
        };
        if let Some(err) = refused {
            return match app {
                Some((conn, id)) => self.answer_app(conn, id, Err(err)),
                None => say!("error: {}", err.message),
            };
        }
        self.next_id += 1;
        let sent = Instant::now();
        self.pings.insert(self.next_id, PingWaiter { app, sent });
        self.send_up(ToServer::Echo { id: self.next_id });
    }

    /// The server's answer to a `ping`.
    pub(crate) fn echoed(&mut self, id: u64, address: String) {
        let Some(waiter) = self.pings.remove(&id) else {
            return;
        };
        let rtt_ms = waiter.sent.elapsed().as_secs_f64() * 1000.0;
        match waiter.app {
            Some((conn, app_id)) => {
                let pong = json!({"address": address, "rtt_ms": rtt_ms});
                self.answer_app(conn, app_id, Ok(pong.into()));
            }
            None => say!("the server sees this stub as {address}; round trip {rtt_ms:.3} ms"),
        }
    }

    /// The server's answer to a call an app made through this stub.
    pub(crate) fn replied(&mut self, reply: Reply) {
        if let Some(p) = self.pending.remove(&reply.id) {
            self.settle(p, reply.result);
        }
    }

    /// Ends a call that waited for the network: counts it and answers its app.
    pub(crate) fn settle(&mut self, p: Pending, result: std::result::Result<Json, RemoteError>) {
        let error = result.as_ref().err().map(ToString::to_string);
        let took = p.started.elapsed();
        self.made
            .record(&p.module, &p.function, took, error.as_deref());
        self.answer_app(p.conn, p.app_id, result);
    }

    /// An app's call: checked against the descriptor here, then run here or sent to the owner.
    pub(crate) fn app_call(&mut self, conn: u64, call: Call) {
        if let Err(e) = self.check(&call) {
            // A module whose first copy is still being fetched is checked by its owner alone.
            let fetching = (self.known.get(&call.module)).is_some_and(|k| k.desc.is_none());
            if !fetching {
                return self.answer_app(conn, call.id, Err(e));
            }
        }
        if self.owned.contains_key(&call.module) {
            let Some(outbox) = self.apps.get(&conn) else {
                return;
            };
            let local = Arc::new(LocalCall {
                outbox: outbox.clone(),
                limits: self.config.limits,
                id: call.id,
                what: format!("{}.{}", call.module, call.function),
                timeout_ms: call.timeout_ms,
                deadline: Instant::now() + Duration::from_millis(call.timeout_ms),
                answered: AtomicBool::new(false),
            });
            self.local_calls.push(local.clone());
            // Each app its own caller: two apps on this stub take turns as two stubs do.
            return self.run_owned(call, Caller::App(conn), Answer::App(local));
        }
        if self.up.is_none() {
            let msg = "not connected to the server (reconnecting)";
            let err = RemoteError::new(ErrorKind::NotConnected, msg);
            return self.answer_app(conn, call.id, Err(err));
        }
        if let Err(e) = fits_every_hop(&call, self.config.limits.max_frame_bytes) {
            return self.answer_app(conn, call.id, Err(e));
        }
        self.next_id += 1;
        let started = Instant::now();
        let pending = Pending {
            conn,
            app_id: call.id,
            module: call.module.clone(),
            function: call.function.clone(),
            started,
            deadline: started + Duration::from_millis(call.timeout_ms),
        };
        self.pending.insert(self.next_id, pending);
        self.send_up(ToServer::Call(Call {
            id: self.next_id,
            caller: None, // the server says who made it
            ..call
        }));
    }

    pub(crate) fn check(&self, call: &Call) -> std::result::Result<(), RemoteError> {
        let Some((desc, _)) = self.descriptor(&call.module) else {
            return Err(unknown_module(&call.module));
        };
        let keywords: Vec<&str> = call.kwargs.keys().map(String::as_str).collect();
        desc.check_call(&call.function, call.args.len(), &keywords)
    }

    /// Why a module has no [`descriptor`](Self::descriptor) here.
    pub(crate) fn not_here(&self, module: &str) -> RemoteError {
        match self.known.get(module) {
            Some(k) => RemoteError::new(
                ErrorKind::UnknownModule,
                format!(
                    "module '{module}' from {} is still being fetched: try again shortly",
                    k.owner
                ),
            ),
            None => unknown_module(module),
        }
    }

    /// Runs a call `caller` made on a module this stub owns (callers take turns: see
    /// `worker::queue`), answering where `answer` says. The caller's side enforces the timeout
    /// (the server and the caller's stub drop a late answer); here a Python call runs to its
    /// end, or is interrupted at its deadline (see `worker`).
    pub(crate) fn run_owned(&self, call: Call, caller: Caller, answer: Answer) {
        let Some(owned) = self.owned.get(&call.module) else {
            let err = RemoteError::new(
                ErrorKind::UnknownModule,
                format!("this stub does not own '{}'", call.module),
            );
            return answer.send(Reply {
                id: call.id,
                result: Err(err),
            });
        };
        let limit = self.config.limits.max_frame_bytes;
        let served = self.served.clone();
        let (id, started) = (call.id, Instant::now());
        let (module, function) = (call.module.clone(), call.function.clone());
        let done = Box::new(move |result: Result<Json, RemoteError>| {
            let result = result.and_then(|value| fits_a_frame(value, limit));
            if let Ok(mut stats) = served.lock() {
                let error = result.as_ref().err().map(ToString::to_string);
                stats.record(&module, &function, started.elapsed(), error.as_deref());
            }
            answer.send(Reply { id, result });
        });
        owned.pool.submit(call, caller, done);
    }

    pub(crate) fn answer_app(
        &self,
        conn: u64,
        id: u64,
        result: std::result::Result<Json, RemoteError>,
    ) {
        if let Some(outbox) = self.apps.get(&conn) {
            reply_to_app(outbox, Reply { id, result }, &self.config.limits);
        }
    }

    pub(crate) fn expire(&mut self) {
        let now = Instant::now();
        self.local_calls.retain(|call| {
            if call.answered.load(Ordering::Acquire) {
                return false;
            }
            if call.deadline > now {
                return true;
            }
            call.answer(Err(timed_out(
                &call.what,
                call.timeout_ms,
                "in this stub's worker",
            )));
            false
        });
        let late: Vec<Pending> = (self.pending)
            .extract_if(|_, p| p.deadline <= now)
            .map(|(_, p)| p)
            .collect();
        for p in late {
            let what = format!("{}.{}", p.module, p.function);
            let timeout_ms = (p.deadline - p.started).as_millis() as u64;
            self.settle(p, Err(timed_out(&what, timeout_ms, "on its owner")));
        }
    }
}

/// Where the answer to a call run here goes.
pub(crate) enum Answer {
    Server(Arc<Outbox>),
    App(Arc<LocalCall>),
}

impl Answer {
    /// Queues the reply; it is written at this thread's next flush (see [`Outbox::push`]).
    pub(crate) fn send(&self, reply: Reply) {
        match self {
            Answer::Server(up) => {
                up.push(&ToServer::Reply(reply));
            }
            Answer::App(call) => call.answer(reply.result),
        }
    }
}

/// Queues `reply` for an app.
fn reply_to_app(outbox: &Arc<Outbox>, reply: Reply, limits: &LinkLimits) {
    push_to_app(outbox, &ToApp::Reply(reply), limits, "its answers");
}

/// Queues `msg` for an app, unless the app is too far behind: then it is cut off (said once),
/// for it does not read `what` it is sent. Checked before queuing, as the server does:
/// `queue_frames` frames may wait, not one fewer.
///
/// # Returns
/// Whether `msg` was queued.
pub(crate) fn push_to_app(
    outbox: &Arc<Outbox>,
    msg: &ToApp,
    limits: &LinkLimits,
    what: &str,
) -> bool {
    if !outbox.over(limits) {
        return outbox.push(msg);
    }
    if outbox.cut() {
        say!("dropping an app connection: it does not read {what}");
    }
    false
}

/// Bytes of a frame kept for the reply around a result (its command, id and `Ok`, with the
/// ids of every hop).
const REPLY_ENVELOPE: usize = 1024;

/// `value`, unless it is too large for one frame: then an error naming its size, so that it is
/// never sent only to be refused.
fn fits_a_frame(value: Json, max_frame: usize) -> Result<Json, RemoteError> {
    match value.text().len() {
        size if size > max_frame.saturating_sub(REPLY_ENVELOPE) => {
            Err(result_too_large(size, max_frame))
        }
        _ => Ok(value),
    }
}

/// The error for a result of `size` bytes, too large for one frame. It names the frame limit as
/// an argument's error does, and the room the reply takes from it.
pub(crate) fn result_too_large(size: usize, max_frame: usize) -> RemoteError {
    RemoteError::new(
        ErrorKind::TooLarge,
        format!(
            "the result is {size} bytes, over the frame limit of {max_frame} bytes (less \
             {REPLY_ENVELOPE} kept for the reply around it)"
        ),
    )
}

/// Its frame around a call's data: `{"cmd":"call","data":DATA}`.
const CALL_ENVELOPE: usize = r#"{"cmd":"call","data":}"#.len();

/// Digits of the widest id a call may be given on its way (`u64::MAX`).
const WIDEST_ID: usize = 20;

/// What the server adds to a call it forwards, at its widest: who made it.
const CALLER_FIELD: usize = r#","caller":"#.len() + WIDEST_ID;

/// Whether `call` fits one frame on every hop to its owner. This stub and the server send it
/// on under ids of their own, which may be longer than its app's, and the server adds who made
/// it: measured with the widest, a call the app's frame held is refused here, with its size,
/// not by the server as a bad frame.
fn fits_every_hop(call: &Call, max_frame: usize) -> Result<(), RemoteError> {
    // Most calls are far from the limit: an upper bound of their size, summed from lengths
    // already known, spares serializing them twice (JSON writes a string at most 6 bytes a
    // byte, and the rest of a frame, its field names and numbers, within 200).
    let texts = (call.args.iter()).chain(call.kwargs.values());
    let bound = 200
        + 6 * (call.module.len() + call.function.len())
        + (call.kwargs.keys()).map(|k| 6 * k.len() + 4).sum::<usize>()
        + texts.map(|v| v.text().len() + 1).sum::<usize>();
    if bound <= max_frame {
        return Ok(());
    }
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut data = Counter(0);
    serde_json::to_writer(&mut data, call).expect("calls serialize");
    let id_digits = call.id.checked_ilog10().map_or(1, |d| d as usize + 1);
    match CALL_ENVELOPE + data.0 - id_digits + WIDEST_ID + CALLER_FIELD {
        size if size > max_frame => Err(RemoteError::new(
            ErrorKind::TooLarge,
            format!(
                "{}.{}: the call is {size} bytes on its way to the owner (its ids at their \
                 widest), over the frame limit of {max_frame} bytes",
                call.module, call.function
            ),
        )),
        _ => Ok(()),
    }
}

/// A call's answer at its timeout, said as an app's own timer says it (`common::app`), and
/// where the call may still run (until its worker interrupts it: see `worker::watch`).
pub(crate) fn timed_out(what: &str, timeout_ms: u64, running: &str) -> RemoteError {
    let timeout = Duration::from_millis(timeout_ms);
    let msg = format!("{what}: no answer within {timeout:?} (it may still be running {running})");
    RemoteError::new(ErrorKind::Timeout, msg)
}

fn unknown_module(module: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::UnknownModule,
        format!("no module '{module}' on the network (see mods)"),
    )
}
