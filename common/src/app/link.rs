//! One connection to the stub, shared by every call in flight and driven by the calls
//! themselves: no task of its own.
//!
//! A call queues its request in the outbox and waits for its answer. Meanwhile one of the
//! waiting calls, the one holding the reader, writes the outbox and reads for everyone, handing
//! each answer to its call; when its own answer comes it passes the reader on. So an app's calls
//! run on the app's own executor and thread: no hop through another thread per call, and
//! requests queued together still go out in one write. The holder also keeps the time: one
//! timer, set for the earliest deadline of all waiting calls, fails the calls that are late
//! (a timer per call would cost a wake of the app's reactor per call).
//!
//! The holder keeps the time while the socket is full too: a stub that stops reading holds no
//! call past its deadline. A request not yet written when its call ends (late, or dropped) is
//! not sent, so requests nobody waits for do not pile up; one partly written is finished, as
//! the stub would read the next request as its rest.
//!
//! When the connection ends (the stub stopped or restarted), the calls waiting on it fail and
//! the next call connects again. A call made while no other is in flight first looks whether
//! the stub closed the connection meanwhile, and connects again at once if so.

use std::collections::{BTreeMap, HashMap};
use std::future::poll_fn;
use std::net::TcpStream;
use std::ops::Range;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use smol::future::FutureExt;
use smol::io::AsyncWrite;
use smol::lock::Mutex as AsyncMutex;
use smol::{Async, Timer};

use super::{hung_up, not_an_app_port, stub_failed, STUB_CLOSED};
use crate::conn::FrameReader;
use crate::error::RemoteError;
use crate::proto::{Json, ToApp};
use crate::readiness::ReadWhenReady;

pub(super) type Answer = Result<Json, RemoteError>;

/// Why a call got no answer.
#[derive(Debug)]
pub(super) enum NoAnswer {
    /// The connection ended, for this reason.
    Closed(String),
    /// Its deadline passed.
    Late,
    /// Its deadline passed before any of its request was written: it is not sent.
    Unsent,
    /// Its deadline passed while it waited to connect again to the stub at this address.
    Unconnected(String),
}

pub(super) struct Link {
    /// The stub's app address, to connect again after the connection ended.
    address: String,
    state: Mutex<State>,
    reader: AsyncMutex<Reader>,
}

/// What the call holding the reader holds.
struct Reader {
    frames: FrameReader<ReadWhenReady<TcpStream>>,
    /// Set for [`State::armed`].
    timer: Timer,
    /// The largest answer read, for `frames` and a connection made again.
    max_frame: usize,
}

struct State {
    stream: Arc<Async<TcpStream>>,
    /// Requests not yet written, the first `sent` bytes of them written.
    out: Vec<u8>,
    sent: usize,
    /// The requests in `out` taken out unwritten (start to end, as [`Span`]s): skipped when
    /// writing, and their bytes, `dropped_bytes` in all, left until `out` is written or
    /// [`State::compact`]ed. Taking one out of `out` at once would move the rest, and every
    /// call's span: behind a stalled stub, calls late in turn would cost the square of their
    /// number.
    dropped: BTreeMap<u64, u64>,
    dropped_bytes: usize,
    /// Where `out` starts in the bytes queued on the connection (those taken out included,
    /// until compacted), for the calls' [`Span`]s.
    out_at: u64,
    calls: HashMap<u64, Slot>,
    /// The call holding the reader, woken when a call queues a request: more to write, and a
    /// deadline to time.
    reading: Option<Waker>,
    /// When the reader's timer fires, if it is set.
    armed: Option<Instant>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

/// Where a call's request is in the bytes written on the connection.
type Span = Range<u64>;

enum Slot {
    /// Its waker, its deadline, and where its request is.
    Waiting(Option<Waker>, Instant, Span),
    Answered(Answer),
    Late,
    /// Late, and taken out of the outbox unwritten.
    Unsent,
    /// The connection ended, for this reason, before its answer came.
    Ended(String),
}

impl Link {
    /// Connects to the stub's app port `address` by `deadline`.
    pub(super) async fn connect(
        address: &str,
        max_frame: usize,
        deadline: Instant,
    ) -> Result<Link, String> {
        let late = async {
            Timer::at(deadline).await;
            Err(format!("no stub at {address}: connection timed out"))
        };
        let stream = Self::open(address).or(late).await?;
        let frames = FrameReader::new(ReadWhenReady::new(stream.clone()), max_frame);
        let state = State {
            stream,
            out: Vec::new(),
            sent: 0,
            dropped: BTreeMap::new(),
            dropped_bytes: 0,
            out_at: 0,
            calls: HashMap::new(),
            reading: None,
            armed: None,
            closed: None,
        };
        Ok(Link {
            address: address.to_owned(),
            state: Mutex::new(state),
            reader: AsyncMutex::new(Reader {
                frames,
                timer: Timer::never(),
                max_frame,
            }),
        })
    }

    /// Connects to `address`. A stopped stub whose accept backlog is full holds it for minutes:
    /// callers bound it by their deadline.
    async fn open(address: &str) -> Result<Arc<Async<TcpStream>>, String> {
        let stream = smol::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("no stub at {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(stream.into())
    }

    /// Refuses answers longer than `max_frame` bytes from now on.
    pub(super) fn set_max_frame(&mut self, max_frame: usize) {
        let reader = self.reader.get_mut();
        reader.frames.set_max(max_frame);
        reader.max_frame = max_frame;
    }

    /// Connects again after the connection ended, holding the reader so that no call reads
    /// meanwhile; unless another call has already.
    async fn reconnect(&self) -> Result<(), NoAnswer> {
        let mut reader = self.reader.lock().await;
        if self.state().closed.is_none() {
            return Ok(());
        }
        let stream = Self::open(&self.address).await.map_err(NoAnswer::Closed)?;
        reader.frames = FrameReader::new(ReadWhenReady::new(stream.clone()), reader.max_frame);
        let mut state = self.state();
        // What is still queued was for the calls that failed with the old connection.
        (state.out, state.sent) = (Vec::new(), 0);
        (state.dropped, state.dropped_bytes) = (BTreeMap::new(), 0);
        (state.reading, state.armed, state.closed) = (None, None, None);
        state.stream = stream;
        Ok(())
    }

    /// Sends `request` (one line of JSON) and waits for the answer to call `id` until
    /// `deadline`.
    /// Dropping the future forgets the call (its request still goes if it is partly written).
    pub(super) async fn request(
        &self,
        id: u64,
        request: &[u8],
        deadline: Instant,
    ) -> Result<Answer, NoAnswer> {
        // Whether this call connected again: a connection it made is not looked at again (a
        // port that closes each one at once would have it connect until its deadline).
        let mut connected = false;
        let wake = loop {
            {
                let mut state = self.state();
                // A connection no call uses may have been closed by the stub since (nobody
                // reads it to see): found now, before the request is queued on it. With no
                // call waiting there is nobody to fail.
                if !connected
                    && state.closed.is_none()
                    && state.calls.is_empty()
                    && hung_up(state.stream.get_ref())
                {
                    state.closed = Some(STUB_CLOSED.into());
                }
                if state.closed.is_none() {
                    let at = state.out_at + state.out.len() as u64;
                    state.out.extend_from_slice(request);
                    let span = at..at + request.len() as u64;
                    state.calls.insert(id, Slot::Waiting(None, deadline, span));
                    if state.armed.is_some_and(|armed| deadline < armed) {
                        state.armed = None; // the holder, woken below, sets the timer again
                    }
                    break state.reading.take();
                }
            }
            // Within the call's deadline, a wait for another call connecting again included.
            let late = async {
                Timer::at(deadline).await;
                Err(NoAnswer::Unconnected(self.address.clone()))
            };
            self.reconnect().or(late).await?;
            connected = true;
        };
        if let Some(reading) = wake {
            reading.wake();
        }
        let _forget = Forget(self, id);
        let answered = poll_fn(|cx| self.poll_answer(id, cx));
        let read_for_everyone = async {
            let mut reader = self.reader.lock().await;
            self.read_until_answered(&mut reader, id).await
        };
        answered.or(read_for_everyone).await
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ready once another call has read the answer to `id`, or it is late, or the connection
    /// it was sent on has ended.
    fn poll_answer(&self, id: u64, cx: &mut Context<'_>) -> Poll<Result<Answer, NoAnswer>> {
        match self.take_answer(id, Some(cx.waker())) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }

    /// The answer to `id` if it has come or never will; else `waker` is kept for it.
    fn take_answer(&self, id: u64, waker: Option<&Waker>) -> Option<Result<Answer, NoAnswer>> {
        let mut state = self.state();
        if let Some(Slot::Waiting(kept, ..)) = state.calls.get_mut(&id) {
            if let Some(waker) = waker.filter(|w| !kept.as_ref().is_some_and(|k| k.will_wake(w))) {
                *kept = Some(waker.clone());
            }
            return None;
        }
        Some(match state.calls.remove(&id) {
            Some(Slot::Answered(answer)) => Ok(answer),
            Some(Slot::Late) => Err(NoAnswer::Late),
            Some(Slot::Unsent) => Err(NoAnswer::Unsent),
            Some(Slot::Ended(why)) => Err(NoAnswer::Closed(why)),
            _ => Err(NoAnswer::Closed("the call was forgotten".into())),
        })
    }

    /// Holding the reader: writes what is queued, reads answers and keeps the time, until the
    /// answer to `id`.
    async fn read_until_answered(&self, reader: &mut Reader, id: u64) -> Result<Answer, NoAnswer> {
        loop {
            if let Some(answer) = self.take_answer(id, None) {
                self.state().reading = None;
                return answer;
            }
            self.arm(&mut reader.timer);
            let Reader { frames, timer, .. } = reader;
            let frame = async { Some(frames.read::<ToApp>().await) }
                .or(poll_fn(|cx| self.poll_write(cx).map(|_| None)))
                .or(async {
                    timer.await;
                    self.fail_late();
                    None
                })
                .await;
            match frame {
                Some(Ok(Some(ToApp::Reply(reply)))) => self.answered(reply.id, reply.result),
                Some(Ok(Some(ToApp::Error { message }))) => eprintln!("stub: error: {message}"),
                // Only a provider (see `provider`) is sent calls.
                Some(Ok(Some(ToApp::Call(_)))) => {}
                Some(Ok(None)) => self.close(STUB_CLOSED.into()),
                Some(Err(e)) => self.close(
                    not_an_app_port(&self.address, frames.refused_head())
                        .unwrap_or_else(|| stub_failed(e)),
                ),
                // A deadline passed, or one must be timed, or the write failed: the link closed.
                None => {}
            }
        }
    }

    /// Sets `timer` for the earliest deadline of the waiting calls, unless it is set already
    /// (for that one, or one that has passed since: it then fires and looks again).
    fn arm(&self, timer: &mut Timer) {
        let mut state = self.state();
        if state.armed.is_some() {
            return;
        }
        let deadlines = state.calls.values().filter_map(|slot| match slot {
            Slot::Waiting(_, deadline, _) => Some(*deadline),
            _ => None,
        });
        state.armed = deadlines.min();
        if let Some(at) = state.armed {
            timer.set_at(at);
        }
    }

    /// The reader's timer fired: every call past its deadline is late, and its request, if
    /// none of it is written yet, is not sent.
    fn fail_late(&self) {
        let now = Instant::now();
        let mut wakers = Vec::new();
        {
            let mut state = self.state();
            state.armed = None;
            let late: Vec<u64> = (state.calls.iter())
                .filter(
                    |(_, slot)| matches!(slot, Slot::Waiting(_, deadline, _) if *deadline <= now),
                )
                .map(|(id, _)| *id)
                .collect();
            for id in late {
                if let Some(Slot::Waiting(waker, _, span)) = state.calls.remove(&id) {
                    let slot = if state.unqueue(span) {
                        Slot::Unsent
                    } else {
                        Slot::Late
                    };
                    state.calls.insert(id, slot);
                    wakers.extend(waker);
                }
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Writes the outbox. Pending while there is nothing (more) to write or the socket is full,
    /// and then woken when a call queues a request or the socket has room; ready when the write
    /// failed (the link closed), or when the timer must be set for a new call's earlier
    /// deadline (even while the socket is full: a stub that stops reading must not hold back
    /// the timeouts of the calls behind).
    fn poll_write(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        while state.sent < state.out.len() {
            let State {
                stream,
                out,
                sent,
                out_at,
                dropped,
                dropped_bytes,
                ..
            } = &mut *state;
            // Up to the next request taken out, which is skipped.
            let upto = match dropped.first_key_value() {
                Some((&start, &end)) if start == *out_at + *sent as u64 => {
                    dropped.pop_first();
                    *dropped_bytes -= (end - start) as usize;
                    *sent += (end - start) as usize;
                    continue;
                }
                Some((&start, _)) => (start - *out_at) as usize,
                None => out.len(),
            };
            match Pin::new(&mut &**stream).poll_write(cx, &out[*sent..upto]) {
                Poll::Ready(Ok(n)) if n > 0 => *sent += n,
                Poll::Ready(result) => {
                    let why = match result {
                        Err(e) => stub_failed(e),
                        Ok(_) => STUB_CLOSED.to_owned(),
                    };
                    drop(state);
                    self.close(why);
                    return Poll::Ready(());
                }
                Poll::Pending => break, // woken when the socket has room
            }
        }
        if state.sent == state.out.len() {
            state.out_at += state.out.len() as u64;
            state.out.clear();
            state.sent = 0;
        }
        if state.armed.is_none() {
            return Poll::Ready(());
        }
        if !state
            .reading
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.reading = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Hands an answer to its call, if it still waits.
    fn answered(&self, id: u64, answer: Answer) {
        let mut state = self.state();
        let Some(Slot::Waiting(waker, ..)) = state.calls.get_mut(&id) else {
            return; // late, or forgotten
        };
        let waker = waker.take();
        state.calls.insert(id, Slot::Answered(answer));
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The connection ended: every waiting call fails with `why`; the next one connects again.
    fn close(&self, why: String) {
        let mut wakers = Vec::new();
        {
            let mut state = self.state();
            let why = state.closed.get_or_insert(why).clone();
            for slot in state.calls.values_mut() {
                if let Slot::Waiting(waker, ..) = slot {
                    wakers.extend(waker.take());
                    *slot = Slot::Ended(why.clone());
                }
            }
        }
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl State {
    /// Takes the request at `span` out of the outbox, its call being over, unless some of it
    /// is written: the stub then reads it whole (it would read the next request as its rest).
    /// Whether it was taken out.
    fn unqueue(&mut self, span: Span) -> bool {
        if span.start < self.out_at + self.sent as u64 {
            return false;
        }
        self.dropped_bytes += (span.end - span.start) as usize;
        self.dropped.insert(span.start, span.end);
        if self.dropped_bytes >= Self::COMPACT_AT.max(self.out.len() / 2) {
            self.compact();
        }
        true
    }

    /// How many bytes of requests taken out are worth a [`State::compact`], at least.
    const COMPACT_AT: usize = 1 << 16;

    /// Frees the bytes of the requests taken out of the outbox, moving the calls' spans to
    /// match: done once they are half of it, its cost is spread over the requests taken out.
    fn compact(&mut self) {
        let at = |offset: u64| (offset - self.out_at) as usize;
        let mut kept = Vec::with_capacity(self.out.len() - self.dropped_bytes);
        // The end of each request taken out, and how many bytes were taken out up to it.
        let mut moved = Vec::with_capacity(self.dropped.len());
        let (mut from, mut taken) = (0, 0);
        for (&start, &end) in &self.dropped {
            kept.extend_from_slice(&self.out[from..at(start)]);
            from = at(end);
            taken += end - start;
            moved.push((end, taken));
        }
        kept.extend_from_slice(&self.out[from..]);
        for slot in self.calls.values_mut() {
            if let Slot::Waiting(.., span) = slot {
                let before = moved.partition_point(|&(end, _)| end <= span.start);
                if let Some(&(_, taken)) = before.checked_sub(1).and_then(|i| moved.get(i)) {
                    *span = span.start - taken..span.end - taken;
                }
            }
        }
        (self.out, self.dropped, self.dropped_bytes) = (kept, BTreeMap::new(), 0);
    }
}

/// Forgets a call however it ends (answer, timeout, drop); a request not yet begun is not sent.
struct Forget<'a>(&'a Link, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        if let Some(Slot::Waiting(.., span)) = state.calls.remove(&self.1) {
            state.unqueue(span);
        }
    }
}
