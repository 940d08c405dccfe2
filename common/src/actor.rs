//! A stub's state and the events that change it, applied by the tasks that produce them.
//!
//! Each task that reads a frame (or hears a tick, or a shell line) applies its event itself,
//! under one lock, and writes what that queued in [`Outbox`](crate::outbox::Outbox)es: a call is
//! read, routed and written on by one task, with no hop through a channel to an actor task and
//! on to a writer task. Handling never waits, so the lock is held only for the handling.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use smol::channel::{Receiver, Sender};

use crate::outbox::flush_queued;

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

    /// Applies `event`, leaving the frames it queued for this thread's next flush: for a task
    /// with more frames already read, so that a batch goes out in one write per connection.
    pub fn apply_queued(&self, event: A::Event) -> bool {
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

    fn lock(&self) -> MutexGuard<'_, Option<A>> {
        self.actor.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
