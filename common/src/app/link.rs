//! One connection to the stub, shared by every call in flight and driven by the calls
//! themselves: no task of its own.
//!
//! A call queues its request in the outbox and waits for its answer. Meanwhile one of the
//! waiting calls, the one holding the reader, writes the outbox and reads for everyone, handing
//! each answer to its call; when its own answer comes it passes the reader on. So an app's calls
//! run on the app's own executor and thread: no hop through another thread per call, and
//! requests queued together still go out in one write.

use std::collections::HashMap;
use std::future::poll_fn;
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use serde_json::Value;
use smol::future::FutureExt;
use smol::io::AsyncWrite;
use smol::lock::Mutex as AsyncMutex;
use smol::Async;

use crate::conn::FrameReader;
use crate::error::RemoteError;
use crate::proto::ToApp;
use crate::readiness::ReadWhenReady;

pub(super) type Answer = Result<Value, RemoteError>;

pub(super) struct Link {
    stream: Arc<Async<TcpStream>>,
    state: Mutex<State>,
    reader: AsyncMutex<FrameReader<ReadWhenReady<TcpStream>>>,
}

#[derive(Default)]
struct State {
    /// Requests not yet written, the first `sent` bytes of them written.
    out: Vec<u8>,
    sent: usize,
    calls: HashMap<u64, Slot>,
    /// The call holding the reader, woken when there is more to write.
    reading: Option<Waker>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

enum Slot {
    Waiting(Option<Waker>),
    Answered(Answer),
}

impl Link {
    pub(super) fn new(stream: smol::net::TcpStream, max_frame: usize) -> Link {
        let stream: Arc<Async<TcpStream>> = stream.into();
        let reader = FrameReader::new(ReadWhenReady::new(stream.clone()), max_frame);
        Link {
            stream,
            state: Mutex::default(),
            reader: AsyncMutex::new(reader),
        }
    }

    /// Sends `request` (one JSON text) and waits for the answer to call `id`; `Err` says why
    /// the connection ended. Dropping the future forgets the call (its request may still go).
    pub(super) async fn request(&self, id: u64, request: &str) -> Result<Answer, String> {
        let wake = {
            let mut state = self.state();
            if let Some(why) = &state.closed {
                return Err(why.clone());
            }
            state.out.extend_from_slice(request.as_bytes());
            state.out.push(b'\n');
            state.calls.insert(id, Slot::Waiting(None));
            state.reading.take()
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

    /// Ready once another call has read the answer to `id`, or the connection has ended.
    fn poll_answer(&self, id: u64, cx: &mut Context<'_>) -> Poll<Result<Answer, String>> {
        match self.take_answer(id, Some(cx.waker())) {
            Some(answer) => Poll::Ready(answer),
            None => Poll::Pending,
        }
    }

    /// The answer to `id` if it has come or can never come; else `waker` is kept for it.
    fn take_answer(&self, id: u64, waker: Option<&Waker>) -> Option<Result<Answer, String>> {
        let mut state = self.state();
        let State { calls, closed, .. } = &mut *state;
        if let (Some(Slot::Waiting(kept)), None) = (calls.get_mut(&id), &closed) {
            if let Some(waker) = waker.filter(|w| !kept.as_ref().is_some_and(|k| k.will_wake(w))) {
                *kept = Some(waker.clone());
            }
            return None;
        }
        Some(match calls.remove(&id) {
            Some(Slot::Answered(answer)) => Ok(answer),
            _ => Err(closed
                .clone()
                .unwrap_or_else(|| "the call was forgotten".into())),
        })
    }

    /// Holding the reader: writes what is queued and reads answers until the one to `id`.
    async fn read_until_answered(
        &self,
        reader: &mut FrameReader<ReadWhenReady<TcpStream>>,
        id: u64,
    ) -> Result<Answer, String> {
        loop {
            if let Some(answer) = self.take_answer(id, None) {
                self.state().reading = None;
                return answer;
            }
            let frame = async { Some(reader.read::<ToApp>().await) }
                .or(poll_fn(|cx| self.poll_write(cx).map(|_| None)))
                .await;
            match frame {
                Some(Ok(Some(ToApp::Reply(reply)))) => self.answered(reply.id, reply.result),
                Some(Ok(Some(ToApp::Error { message }))) => eprintln!("stub: error: {message}"),
                // Only a provider (see `provider`) is sent calls.
                Some(Ok(Some(ToApp::Call(_)))) => {}
                Some(Ok(None)) => self.close("the stub closed the connection".into()),
                Some(Err(e)) => self.close(format!("the connection to the stub failed: {e}")),
                None => {} // the write failed: `poll_write` closed the link
            }
        }
    }

    /// Writes the outbox. Pending while there is nothing (more) to write, and then woken when a
    /// call queues a request; ready only when the write failed, the link closed.
    fn poll_write(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        while state.sent < state.out.len() {
            let State { out, sent, .. } = &mut *state;
            match Pin::new(&mut &*self.stream).poll_write(cx, &out[*sent..]) {
                Poll::Ready(Ok(n)) if n > 0 => *sent += n,
                Poll::Ready(result) => {
                    let why = match result {
                        Err(e) => format!("the connection to the stub failed: {e}"),
                        Ok(_) => "the stub closed the connection".to_owned(),
                    };
                    drop(state);
                    self.close(why);
                    return Poll::Ready(());
                }
                Poll::Pending => return Poll::Pending, // woken when the socket has room
            }
        }
        state.out.clear();
        state.sent = 0;
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
        let Some(Slot::Waiting(waker)) = state.calls.get_mut(&id) else {
            return; // timed out and forgotten
        };
        let waker = waker.take();
        state.calls.insert(id, Slot::Answered(answer));
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The connection ended: every waiting call and every later one fails with `why`.
    fn close(&self, why: String) {
        let wakers: Vec<Waker> = {
            let mut state = self.state();
            state.closed.get_or_insert(why);
            let slots = state.calls.values_mut();
            slots
                .filter_map(|slot| match slot {
                    Slot::Waiting(waker) => waker.take(),
                    Slot::Answered(_) => None,
                })
                .collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// Forgets a call however it ends (answer, timeout, drop).
struct Forget<'a>(&'a Link, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.state().calls.remove(&self.1);
    }
}
