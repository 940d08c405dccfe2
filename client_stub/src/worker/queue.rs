//! The calls a module's workers share, waiting for one: callers take turns, so that one
//! caller's flood of calls does not shut out another's single call. Each caller's own calls
//! keep their order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use event_listener::Event;

/// Who made a call, as far as taking turns goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A stub on the network, by the number the server gave its connection (0 from a server
    /// that gives none: all its calls then take one turn).
    Stub(u64),
    /// An app of this stub, by its connection.
    App(u64),
}

/// Emptied queues kept for their capacity, at most: a caller that comes back often reuses one
/// rather than allocating.
const SPARE: usize = 8;

/// Queued calls, served one caller at a time in turn. Whether it is empty, or closed, is read
/// without its lock (see `Generation::submit`).
pub(super) struct FairQueue<T> {
    state: Mutex<State<T>>,
    /// How many items are queued, changed under the lock.
    len: AtomicUsize,
    /// Nothing is queued any more; what waits is woken and finds it. Set under the lock.
    closed: AtomicBool,
    /// Notified when an item is queued, or the queue closes.
    pushed: Event,
}

struct State<T> {
    /// Each caller with calls queued, with its calls in order; the first is served next.
    turns: VecDeque<(Caller, VecDeque<T>)>,
    spare: Vec<VecDeque<T>>,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            state: Mutex::new(State {
                turns: VecDeque::new(),
                spare: Vec::new(),
            }),
            len: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            pushed: Event::new(),
        }
    }
}

impl<T> FairQueue<T> {
    /// Queues `item` after `caller`'s others; a caller with none waits for its turn after
    /// those waiting. Gives `item` back if the queue is closed.
    pub(super) fn push(&self, caller: Caller, item: T) -> Result<(), T> {
        self.put(caller, item, false)
    }

    /// Queues `item` before `caller`'s others, `caller` first to be served: a call that was
    /// already on its way to a worker goes back where it was. Gives `item` back if the queue
    /// is closed.
    pub(super) fn push_front(&self, caller: Caller, item: T) -> Result<(), T> {
        self.put(caller, item, true)
    }

    fn put(&self, caller: Caller, item: T, front: bool) -> Result<(), T> {
        let mut state = self.lock();
        if self.is_closed() {
            return Err(item);
        }
        let State { turns, spare, .. } = &mut *state;
        match turns.iter().position(|(c, _)| *c == caller) {
            Some(at) if front => {
                let (_, mut calls) = turns.remove(at).expect("found");
                calls.push_front(item);
                turns.push_front((caller, calls));
            }
            Some(at) => turns[at].1.push_back(item),
            None => {
                let mut calls = spare.pop().unwrap_or_default();
                calls.push_back(item);
                match front {
                    true => turns.push_front((caller, calls)),
                    false => turns.push_back((caller, calls)),
                }
            }
        }
        self.len.fetch_add(1, Ordering::Release);
        drop(state);
        self.pushed.notify_additional(1);
        Ok(())
    }

    /// The next item: the first of the caller whose turn it is, who then waits for the others'.
    pub(super) fn try_pop(&self) -> Option<T> {
        if self.is_empty() {
            return None;
        }
        let mut state = self.lock();
        let (caller, mut calls) = state.turns.pop_front()?;
        let item = calls.pop_front();
        match calls.is_empty() {
            true if state.spare.len() < SPARE => state.spare.push(calls),
            true => {}
            false => state.turns.push_back((caller, calls)),
        }
        self.len.fetch_sub(1, Ordering::Release);
        item
    }

    /// The next item once there is one; `None` once the queue is closed.
    pub(super) async fn pop(&self) -> Option<T> {
        loop {
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.is_closed() {
                return None;
            }
            let listener = self.pushed.listen();
            // Queued or closed since: the notification may have come before the listener.
            if !self.is_empty() || self.is_closed() {
                continue;
            }
            listener.await;
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Closes the queue: nothing more is queued, and what waits for an item gets `None`.
    /// Returns what was queued, in turn.
    pub(super) fn close(&self) -> Vec<T> {
        let state = self.lock();
        self.closed.store(true, Ordering::Release);
        drop(state);
        self.pushed.notify(usize::MAX);
        self.take_where(|_| true)
    }

    /// Takes every item `pred` holds true, in turn; the others keep their places.
    pub(super) fn take_where(&self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut state = self.lock();
        let mut taken: Vec<Vec<T>> = Vec::new();
        for (_, calls) in state.turns.iter_mut() {
            let (take, keep): (Vec<T>, Vec<T>) = calls.drain(..).partition(|t| pred(t));
            *calls = keep.into();
            taken.push(take);
        }
        state.turns.retain(|(_, calls)| !calls.is_empty());
        let count: usize = taken.iter().map(Vec::len).sum();
        self.len.fetch_sub(count, Ordering::Release);
        drop(state);
        interleave(taken)
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The items of each list taken in turn, each list's own in order.
fn interleave<T>(lists: Vec<Vec<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(lists.iter().map(Vec::len).sum());
    let mut lists: Vec<std::vec::IntoIter<T>> = lists.into_iter().map(Vec::into_iter).collect();
    while !lists.is_empty() {
        lists.retain_mut(|list| match list.next() {
            Some(item) => {
                out.push(item);
                true
            }
            None => false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &FairQueue<(Caller, u32)>) -> Vec<(Caller, u32)> {
        std::iter::from_fn(|| queue.try_pop()).collect()
    }

    #[test]
    fn callers_take_turns_each_in_order() {
        let q = FairQueue::default();
        let (a, b, c) = (Caller::Stub(1), Caller::Stub(2), Caller::App(1));
        for i in 0..4 {
            q.push(a, (a, i)).unwrap();
        }
        q.push(b, (b, 0)).unwrap();
        q.push(b, (b, 1)).unwrap();
        q.push(c, (c, 0)).unwrap();
        let want = [(a, 0), (b, 0), (c, 0), (a, 1), (b, 1), (a, 2), (a, 3)];
        assert_eq!(drain(&q), want);
        assert!(q.is_empty());
    }

    #[test]
    fn a_newcomer_is_served_after_one_more_of_a_flood() {
        let q = FairQueue::default();
        let (flood, one) = (Caller::Stub(1), Caller::Stub(2));
        for i in 0..100 {
            q.push(flood, i).unwrap();
        }
        assert_eq!(q.try_pop(), Some(0));
        q.push(one, 1000).unwrap();
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.try_pop(), Some(1000));
        assert_eq!(q.try_pop(), Some(2));
    }

    #[test]
    fn stubs_and_apps_with_the_same_number_are_different_callers() {
        let q = FairQueue::default();
        for i in 0..3 {
            q.push(Caller::Stub(1), i).unwrap();
        }
        q.push(Caller::App(1), 10).unwrap();
        assert_eq!(
            std::iter::from_fn(|| q.try_pop()).collect::<Vec<_>>(),
            [0, 10, 1, 2]
        );
    }

    #[test]
    fn put_back_goes_first_before_its_callers_others() {
        let q = FairQueue::default();
        let (a, b) = (Caller::Stub(1), Caller::Stub(2));
        q.push(a, 3).unwrap();
        q.push(b, 10).unwrap();
        q.push_front(a, 2).unwrap();
        q.push_front(a, 1).unwrap();
        q.push_front(Caller::App(5), 0).unwrap();
        let got: Vec<i32> = std::iter::from_fn(|| q.try_pop()).collect();
        assert_eq!(got, [0, 1, 10, 2, 3]);
    }

    #[test]
    fn take_where_keeps_the_rest_in_place_and_close_empties_it() {
        let q = FairQueue::default();
        let (a, b) = (Caller::Stub(1), Caller::Stub(2));
        for i in 0..4 {
            q.push(a, i).unwrap();
        }
        q.push(b, 10).unwrap();
        q.push(b, 11).unwrap();
        assert_eq!(q.take_where(|i| i % 2 == 1), [1, 11, 3]);
        assert_eq!(q.try_pop(), Some(0));
        assert_eq!(q.close(), [10, 2]);
        assert!(q.is_empty());
        assert_eq!(q.push(a, 5), Err(5));
        assert_eq!(smol::block_on(q.pop()), None);
    }

    #[test]
    fn a_waiting_pop_wakes_for_an_item_and_for_the_close() {
        let q = std::sync::Arc::new(FairQueue::default());
        let pop = |q: &std::sync::Arc<FairQueue<i32>>| {
            let q = q.clone();
            smol::spawn(async move { q.pop().await })
        };
        let waiting = pop(&q);
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.push(Caller::Stub(1), 7).unwrap();
        assert_eq!(smol::block_on(waiting), Some(7));
        let waiting = pop(&q);
        std::thread::sleep(std::time::Duration::from_millis(20));
        q.close();
        assert_eq!(smol::block_on(waiting), None);
    }
}
