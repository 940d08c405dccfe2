//! A connection's outbound frames, written by the task that queued them.
//!
//! A task queues frames ([`Outbox::push`], serialized at once into the connection's buffer) and,
//! when it has nothing more to queue, flushes them ([`flush_queued`]): straight to the socket,
//! which takes them at once unless it is backed up. So a frame read on one connection goes out
//! on another within the same task, with no hop through a channel to a writer task; a batch of
//! frames read together still goes out in one write. The connection's writer task
//! ([`Outbox::write_out`]) writes only what the socket did not take at once, and everything
//! under TLS.

use std::cell::RefCell;
use std::io::Write;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

use serde::Serialize;
use smol::io::{AsyncWrite, AsyncWriteExt};
use smol::Async;

use crate::conn::put_line;

/// One connection's frames waiting to be written.
pub struct Outbox {
    state: Mutex<State>,
    /// The socket, for writes that need no task; `None` where every byte must go through the
    /// writer task (TLS).
    direct: Option<Arc<Async<TcpStream>>>,
}

#[derive(Default)]
struct State {
    /// Frames queued and not yet written, each ending in a newline.
    buf: Vec<u8>,
    /// How many frames `buf` holds (counting a partly written one).
    frames: usize,
    /// How many of them were queued since the last flush: not yet offered to the peer, so not
    /// a sign that it is behind.
    fresh: usize,
    /// The writer task is writing frames it took from `buf`: direct writes wait for it, so
    /// frames keep their order.
    writing: bool,
    closed: bool,
    /// The writer task, while it waits for frames.
    writer: Option<Waker>,
}

thread_local! {
    /// Outboxes this thread queued frames in since its last [`flush_queued`].
    static QUEUED: RefCell<Vec<Arc<Outbox>>> = const { RefCell::new(Vec::new()) };
}

/// Writes the frames this thread queued (see [`Outbox::push`]). Call it before waiting for
/// anything, once there is nothing more to queue.
pub fn flush_queued() {
    QUEUED.with(|queued| {
        for outbox in queued.borrow_mut().drain(..) {
            outbox.flush();
        }
    });
}

impl Outbox {
    /// The outbox of a link over `stream`: written straight to the socket when it can, unless
    /// the link is encrypted (`tls`): then every byte goes through the writer task.
    pub fn for_link(stream: &smol::net::TcpStream, tls: bool) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::default(),
            direct: (!tls).then(|| stream.clone().into()),
        })
    }

    /// The outbox of a plain TCP link.
    pub fn tcp(stream: &smol::net::TcpStream) -> Arc<Outbox> {
        Self::for_link(stream, false)
    }

    /// Queues `msg`. It is written at this thread's next [`flush_queued`], which the caller
    /// owes; see [`Outbox::send`] for one frame on its own.
    ///
    /// # Returns
    /// `false` (and nothing queued) once the outbox is closed or its connection broke.
    pub fn push<T: Serialize>(self: &Arc<Self>, msg: &T) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let was_empty = state.buf.is_empty();
        // Our own message types always serialize.
        if put_line(&mut state.buf, msg).is_err() {
            return false;
        }
        state.frames += 1;
        // Behind frames a flush left (the peer is behind), it waits as they do.
        if was_empty || state.fresh > 0 {
            state.fresh += 1;
        }
        drop(state);
        // A non-empty buffer is already on some thread's list, or with the writer task.
        if was_empty {
            QUEUED.with(|queued| queued.borrow_mut().push(self.clone()));
        }
        true
    }

    /// Queues `msg` and writes what this thread queued: for a frame that is not part of a batch.
    pub fn send<T: Serialize>(self: &Arc<Self>, msg: &T) -> bool {
        let queued = self.push(msg);
        flush_queued();
        queued
    }

    /// Frames queued and not yet handed to the socket.
    pub fn frames(&self) -> usize {
        self.lock().frames
    }

    /// Whether the peer is further behind than `limits` allow (frames or bytes queued).
    pub fn over(&self, limits: &crate::config::LinkLimits) -> bool {
        let state = self.lock();
        // Frames the socket was offered and did not take: a batch still being queued is not
        // the peer's fault, however small `queue_frames`. Its bytes count all the same.
        state.frames - state.fresh >= limits.queue_frames || state.buf.len() >= limits.queue_bytes
    }

    /// Whether the peer has sent all it will send and all of it was read: its end of the
    /// connection is closed though its reader may not have seen that yet. `false` for an
    /// encrypted link (its bytes cannot be told from here).
    pub fn peer_sent_all(&self) -> bool {
        self.direct
            .as_ref()
            .is_some_and(|socket| matches!(socket.get_ref().peek(&mut [0]), Ok(0)))
    }

    /// Gives up on a peer that does not read: nothing more is queued, and the socket is shut
    /// so that the connection's reader ends too.
    ///
    /// # Returns
    /// Whether this cut it: `false` once it is closed, so that however many answers still come
    /// for the connection (each finding it over its limits), it is reported once.
    pub fn cut(&self) -> bool {
        if !self.close() {
            return false;
        }
        if let Some(socket) = &self.direct {
            let _ = socket.get_ref().shutdown(std::net::Shutdown::Both);
        }
        true
    }

    /// No more frames: the writer task writes what is queued, then ends. Whether this closed
    /// it (it was open).
    pub fn close(&self) -> bool {
        let mut state = self.lock();
        let was_open = !std::mem::replace(&mut state.closed, true);
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
        was_open
    }

    /// Hands the queued frames on: straight to the socket if it takes them, else (what it did
    /// not take) to the writer task.
    fn flush(&self) {
        let mut state = self.lock();
        // Offered to the peer now: written straight away, or behind a write still going on.
        // Under TLS with the writer task idle, they are its next batch: still fresh until it
        // takes them.
        if self.direct.is_some() || state.writing {
            state.fresh = 0;
        }
        if state.buf.is_empty() {
            return;
        }
        if let (false, Some(socket)) = (state.writing, &self.direct) {
            // The socket is non-blocking: this never waits.
            let mut socket: &TcpStream = socket.get_ref();
            match socket.write(&state.buf) {
                Ok(n) if n == state.buf.len() => {
                    state.buf.clear();
                    state.frames = 0;
                    return;
                }
                Ok(n) => drop(state.buf.drain(..n)),
                // Backed up (the writer task waits for room) or broken (it meets the error).
                Err(_) => {}
            }
        }
        if let Some(writer) = state.writer.take() {
            writer.wake();
        }
    }

    /// Starts the connection's writer task ([`Outbox::write_out`]) on `writer`.
    pub fn spawn_writer<W>(self: &Arc<Self>, writer: W) -> smol::Task<()>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let outbox = self.clone();
        smol::spawn(async move { outbox.write_out(writer).await })
    }

    /// The connection's writer task: writes what the socket did not take at once, until the
    /// outbox is closed and empty, or a write fails (then the outbox closes).
    pub async fn write_out<W: AsyncWrite + Unpin>(&self, mut writer: W) {
        let mut batch = Vec::new();
        loop {
            let more = std::future::poll_fn(|cx| {
                let mut state = self.lock();
                if !state.buf.is_empty() {
                    // Swapped, not copied: both buffers keep their capacity.
                    std::mem::swap(&mut state.buf, &mut batch);
                    (state.frames, state.fresh) = (0, 0);
                    state.writing = true;
                    Poll::Ready(true)
                } else if state.closed {
                    Poll::Ready(false)
                } else {
                    state.writer = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            if !more {
                return;
            }
            let written = match writer.write_all(&batch).await {
                Ok(()) => writer.flush().await,
                Err(e) => Err(e),
            };
            batch.clear();
            let mut state = self.lock();
            state.writing = false;
            if written.is_err() {
                // Broken, not behind: nothing is queued any more (`push` says it is closed).
                state.closed = true;
                state.buf.clear();
                (state.frames, state.fresh) = (0, 0);
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::FrameReader;
    use crate::proto::ToServer;
    use smol::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = smol::future::zip(TcpStream::connect(addr), listener.accept()).await;
        (a.unwrap(), b.unwrap().0)
    }

    #[test]
    fn frames_go_out_in_order_directly_or_through_the_writer() {
        smol::block_on(async {
            let (a, b) = pair().await;
            let outbox = Outbox::tcp(&a);
            let writer = smol::spawn({
                let (outbox, a) = (outbox.clone(), a.clone());
                async move { outbox.write_out(a).await }
            });
            // Far more than a socket buffer holds: most goes through the writer task.
            let said: Vec<String> = (0..20_000).map(|i| format!("{i:0>64}")).collect();
            for (i, text) in said.iter().enumerate() {
                assert!(outbox.push(&ToServer::Say { text: text.clone() }));
                if i % 7 == 0 {
                    flush_queued();
                }
            }
            flush_queued();
            outbox.close();
            let mut reader = FrameReader::new(b, 1024);
            for text in &said {
                let got = reader.read::<ToServer>().await.unwrap();
                assert_eq!(got, Some(ToServer::Say { text: text.clone() }));
            }
            writer.await;
            assert!(!outbox.push(&ToServer::Who), "closed");
        });
    }

    #[test]
    fn a_peer_that_does_not_read_is_cut_once() {
        smol::block_on(async {
            let (a, _b) = pair().await;
            let outbox = Outbox::tcp(&a);
            let limits = crate::config::LinkLimits {
                queue_frames: 2,
                ..Default::default()
            };
            // Frames of 1 MB to a peer that reads none, until its socket takes no more.
            let big = ToServer::Say {
                text: "x".repeat(1 << 20),
            };
            while outbox.frames() < 2 {
                assert!(!outbox.over(&limits));
                outbox.push(&big);
                flush_queued();
            }
            // Still over its limits after the cut (nothing was written), but cut only once.
            assert!(outbox.over(&limits) && outbox.cut());
            assert!(!outbox.push(&ToServer::Who));
            assert!(outbox.over(&limits) && !outbox.cut());
        });
    }

    #[test]
    fn a_batch_being_queued_does_not_count_against_the_peer() {
        smol::block_on(async {
            let limits = crate::config::LinkLimits {
                queue_frames: 1,
                ..Default::default()
            };
            let (a, b) = pair().await;
            let outbox = Outbox::tcp(&a);
            for _ in 0..3 {
                assert!(!outbox.over(&limits));
                outbox.push(&ToServer::Who);
            }
            flush_queued();
            assert!(!outbox.over(&limits), "the socket took all three");
            let mut reader = FrameReader::new(b, 1024);
            for _ in 0..3 {
                assert_eq!(reader.read().await.unwrap(), Some(ToServer::Who));
            }
            // Encrypted, every frame waits for the writer task: flushed in pieces, as a long
            // batch of frames read is, they are still its next batch, not a backlog.
            let (a, _b) = pair().await;
            let outbox = Outbox::for_link(&a, true);
            for _ in 0..3 {
                assert!(!outbox.over(&limits));
                outbox.push(&ToServer::Who);
                flush_queued();
            }
        });
    }

    #[test]
    fn nothing_is_written_before_the_flush() {
        smol::block_on(async {
            let (a, b) = pair().await;
            let outbox = Outbox::tcp(&a);
            outbox.push(&ToServer::Who);
            outbox.push(&ToServer::Who);
            assert_eq!(outbox.frames(), 2);
            flush_queued();
            assert_eq!(outbox.frames(), 0, "the socket took both at once");
            let mut reader = FrameReader::new(b, 1024);
            assert_eq!(reader.read().await.unwrap(), Some(ToServer::Who));
            assert_eq!(reader.read().await.unwrap(), Some(ToServer::Who));
        });
    }
}
