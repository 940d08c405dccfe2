//! A stub's state and the events that change it, applied by the tasks that produce them.
//!
//! Each task that reads a frame (or hears a tick, or a shell line) applies its event itself,
//! under one lock, and writes what that queued in [`Outbox`](crate::outbox::Outbox)es: a call is
//! read, routed and written on by one task, with no hop through a channel to an actor task and
//! on to a writer task. Handling never waits, so the lock is held only for the handling.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use smol::channel::{Receiver, Sender};

use crate::outbox::flush_queued;

/// Most frames a connection task applies before it writes what they queued.
pub const FLUSH_EVERY: usize = 16;

/// State changed only by events.
pub trait Actor: Send {
    type Event;
    /// How a session ends.
    type End: Send;

    /// Applies one event; `Some` ends the session.
    fn handle(&mut self, event: Self::Event) -> Option<Self::End>;

    /// The session has ended: last words to peers. Called once; then the actor is dropped,
    /// though tasks may still hold the [`Shared`].
    fn end(&mut self, _end: &Self::End) {}
}

/// An actor shared by the tasks that feed it.
pub struct Shared<A: Actor> {
    /// `None` once the session has ended.
    actor: Mutex<Option<A>>,
    ended: Sender<A::End>,
}

impl<A: Actor> Shared<A> {
    /// Shares `actor`; the receiver gets how the session ended, once it has.
    pub fn new(actor: A) -> (Arc<Self>, Receiver<A::End>) {
        let (ended, end) = smol::channel::bounded(1);
        let actor = Mutex::new(Some(actor));
        (Arc::new(Shared { actor, ended }), end)
    }

    /// Applies `event` and writes the frames it queued.
    ///
    /// # Returns
    /// `false` once the session has ended (the event was not applied, or ended it).
    pub fn apply(&self, event: A::Event) -> bool {
        let live = self.apply_queued(event);
        flush_queued();
        live
    }

    /// Applies an event a connection task read: what it queued is written once the task has
    /// no more frames buffered (`more` is false), so that frames read together go out together,
    /// but at least every [`FLUSH_EVERY`] frames, so that the next hop starts on the first
    /// frames of a long batch while this one handles the rest. `unflushed` counts the frames
    /// applied since the task last wrote; each task keeps its own.
    pub fn apply_read(&self, event: A::Event, more: bool, unflushed: &mut usize) -> bool {
        *unflushed += 1;
        if more && *unflushed < FLUSH_EVERY {
            return self.apply_queued(event);
        }
        *unflushed = 0;
        self.apply(event)
    }

    /// Applies `event`, leaving the frames it queued for this thread's next flush: for a task
    /// with more frames already read, so that a batch goes out in one write per connection.
    fn apply_queued(&self, event: A::Event) -> bool {
        let mut actor = self.lock();
        let Some(end) = actor.as_mut().map(|a| a.handle(event)) else {
            return false;
        };
        let Some(end) = end else {
            return true;
        };
        if let Some(mut actor) = actor.take() {
            actor.end(&end);
        }
        let _ = self.ended.try_send(end);
        false
    }

    /// Applies `event()` every `period` until the session ends: the clock of timeouts and
    /// heartbeats.
    pub async fn every(&self, period: Duration, event: impl Fn() -> A::Event) {
        loop {
            smol::Timer::after(period).await;
            if !self.apply(event()) {
                return;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<A>> {
        self.actor.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Outbox;

    /// Counts to a limit, then ends with the count.
    struct Counter(u32, u32);

    impl Actor for Counter {
        type Event = u32;
        type End = u32;
        fn handle(&mut self, add: u32) -> Option<u32> {
            self.0 += add;
            (self.0 >= self.1).then_some(self.0)
        }
    }

    #[test]
    fn events_apply_until_the_end_then_none() {
        let (counter, end) = Shared::new(Counter(0, 5));
        assert!(counter.apply(2));
        assert!(counter.apply_queued(2));
        assert!(!counter.apply(3), "this one ends it");
        assert!(!counter.apply(1), "after the end, nothing applies");
        assert_eq!(end.try_recv().unwrap(), 7);
    }

    /// Queues one frame per event.
    struct Echo(Arc<Outbox>);

    impl Actor for Echo {
        type Event = ();
        type End = ();
        fn handle(&mut self, (): ()) -> Option<()> {
            self.0.push(&crate::proto::ToServer::Who);
            None
        }
    }

    #[test]
    fn frames_read_together_go_out_together_at_most_a_few_at_a_time() {
        smol::block_on(async {
            let listener = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (out, _peer) =
                smol::future::zip(smol::net::TcpStream::connect(addr), listener.accept()).await;
            let outbox = Outbox::tcp(&out.unwrap());
            let (echo, _) = Shared::new(Echo(outbox.clone()));
            let mut unflushed = 0;
            for i in 1..FLUSH_EVERY {
                assert!(echo.apply_read((), true, &mut unflushed));
                assert_eq!(
                    outbox.frames(),
                    i,
                    "more frames buffered: nothing written yet"
                );
            }
            echo.apply_read((), true, &mut unflushed);
            assert_eq!(outbox.frames(), 0, "written after {FLUSH_EVERY} frames");
            echo.apply_read((), true, &mut unflushed);
            echo.apply_read((), false, &mut unflushed);
            assert_eq!(outbox.frames(), 0, "written once nothing more is buffered");
        });
    }
}
