//! A future polled only when it has asked to be.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// Wraps a future whose every poll costs something (a child's exit status is a `wait4` per
/// poll) so that racing it against each read of a busy pipe costs nothing: it is polled the
/// first time and then only after its own waker fired.
pub struct WhenWoken<F> {
    inner: F,
    signal: Arc<Signal>,
}

#[derive(Default)]
struct Signal {
    woken: AtomicBool,
    /// The task to wake on the inner future's behalf.
    task: Mutex<Option<Waker>>,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl<F> WhenWoken<F> {
    pub fn new(inner: F) -> Self {
        let signal = Arc::new(Signal::default());
        signal.woken.store(true, Ordering::Relaxed);
        WhenWoken { inner, signal }
    }
}

impl<F: Future + Unpin> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        {
            let mut task = self
                .signal
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        if !self.signal.woken.swap(false, Ordering::Acquire) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.signal.clone());
        let this = &mut *self;
        Pin::new(&mut this.inner).poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Ready on its third poll, waking itself after each of the first two.
    struct Counting(Arc<AtomicUsize>);

    impl Future for Counting {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0.fetch_add(1, Ordering::Relaxed) == 2 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn polls_the_inner_future_only_after_its_wakes() {
        let polls = Arc::new(AtomicUsize::new(0));
        let mut fut = WhenWoken::new(Counting(polls.clone()));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut pin = Pin::new(&mut fut);
        assert!(pin.as_mut().poll(&mut cx).is_pending());
        assert!(pin.as_mut().poll(&mut cx).is_pending());
        assert!(pin.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 3);

        // Never woken: polling it again and again does not reach it.
        let quiet = Arc::new(AtomicUsize::new(0));
        struct Silent(Arc<AtomicUsize>);
        impl Future for Silent {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                self.0.fetch_add(1, Ordering::Relaxed);
                Poll::Pending
            }
        }
        let mut fut = WhenWoken::new(Silent(quiet.clone()));
        for _ in 0..5 {
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        assert_eq!(quiet.load(Ordering::Relaxed), 1);
    }
}
