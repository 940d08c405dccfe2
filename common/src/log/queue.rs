//! Lines for stdout, which may stop taking them (a pipe that nobody reads fills and then blocks
//! its writer): they are written by a thread of their own, so that whoever says a line never
//! waits for stdout. While it lags, lines wait in memory up to a budget of bytes; past it they are
//! dropped and counted, and the count is written as a line of its own once stdout has taken the
//! lines that waited.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use smol::channel::{Receiver, Sender};

/// Lines on their way to an output, and the thread that writes them.
pub struct Queue {
    to_writer: Sender<Item>,
    counts: Arc<Counts>,
    /// The most bytes that may wait (but one line may always wait alone).
    budget: usize,
}

/// What the sayers and the writer both keep up to date.
#[derive(Default)]
struct Counts {
    /// Bytes handed to the writer and not written yet.
    waiting: AtomicUsize,
    /// Lines dropped and not told yet.
    dropped: AtomicU64,
}

enum Item {
    /// A line with its newline.
    Line(String),
    /// Answered once every line before it is written, and the lines dropped are told.
    Flush(mpsc::Sender<()>),
}

impl Queue {
    /// Starts the thread that writes to `out`.
    pub fn spawn(out: impl Write + Send + 'static, budget: usize) -> Queue {
        let (to_writer, items) = smol::channel::unbounded();
        let counts = Arc::new(Counts::default());
        let writer = counts.clone();
        // If the system has no thread to spare, every line is dropped: output never stops a stub.
        let _ = std::thread::Builder::new()
            .name("stdout".into())
            .spawn(move || write_out(out, items, &writer));
        Queue {
            to_writer,
            counts,
            budget,
        }
    }

    /// Hands `line` (ending in its newline) to the writer, without waiting; drops it, counted,
    /// if it would take more than the budget to wait.
    pub fn push(&self, line: String) {
        let len = line.len();
        let waiting = self.counts.waiting.fetch_add(len, Relaxed);
        let over = waiting > 0 && waiting + len > self.budget;
        if over || self.to_writer.try_send(Item::Line(line)).is_err() {
            self.counts.waiting.fetch_sub(len, Relaxed);
            self.counts.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Waits at most `wait` for the lines handed over so far to be written, followed by the
    /// count of those dropped if any. Blocks the calling thread: for the end of a process.
    ///
    /// # Returns
    /// Whether they were written in time.
    pub fn flush(&self, wait: Duration) -> bool {
        let (done, written) = mpsc::channel();
        self.to_writer.try_send(Item::Flush(done)).is_ok() && written.recv_timeout(wait).is_ok()
    }
}

/// The writer thread: writes each line in turn, and the count of lines dropped whenever it has
/// caught up, so that the count comes after the lines kept before them.
fn write_out(mut out: impl Write, items: Receiver<Item>, counts: &Counts) {
    while let Ok(item) = items.recv_blocking() {
        match item {
            Item::Line(line) => {
                let _ = out.write_all(line.as_bytes());
                counts.waiting.fetch_sub(line.len(), Relaxed);
                if items.is_empty() {
                    tell_dropped(&mut out, counts);
                }
            }
            Item::Flush(done) => {
                tell_dropped(&mut out, counts);
                let _ = done.send(());
            }
        }
    }
}

/// Writes how many lines were dropped since the last time it was told, if any.
fn tell_dropped(out: &mut impl Write, counts: &Counts) {
    let lines = match counts.dropped.swap(0, Relaxed) {
        0 => return,
        1 => "1 log line".to_owned(),
        n => format!("{n} log lines"),
    };
    let _ = writeln!(out, "... {lines} dropped: stdout was not being read");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex};

    /// An output that takes nothing until it is opened, as a pipe nobody reads.
    #[derive(Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Gate {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }

        fn close(&self) {
            *self.open.0.lock().unwrap() = false;
        }

        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let (open, opened) = &*self.open;
            drop(
                opened
                    .wait_while(open.lock().unwrap(), |open| !*open)
                    .unwrap(),
            );
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn lines_past_the_budget_are_dropped_counted_and_told_after_the_lines_kept() {
        let gate = Gate::default();
        // Three lines of 7 bytes fit in 25; the first is held by the stuck writer and still
        // counts, however soon the writer takes it.
        let queue = Queue::spawn(gate.clone(), 25);
        for i in 0..10 {
            queue.push(format!("line {i}\n"));
        }
        assert!(
            !queue.flush(Duration::from_millis(50)),
            "a stuck output is not waited for past the bound"
        );
        assert_eq!(gate.text(), "");
        gate.open();
        assert!(queue.flush(WAIT));
        assert_eq!(
            gate.text(),
            "line 0\nline 1\nline 2\n... 7 log lines dropped: stdout was not being read\n"
        );
        // A line longer than the budget passes when it waits alone; the count starts again.
        gate.close();
        let long = format!("{}\n", "x".repeat(100));
        for line in [long.clone(), "line 10\n".into(), "line 11\n".into()] {
            queue.push(line);
        }
        gate.open();
        assert!(queue.flush(WAIT));
        let told = "... 7 log lines dropped: stdout was not being read\n";
        let again = "... 2 log lines dropped: stdout was not being read\n";
        assert_eq!(
            gate.text(),
            format!("line 0\nline 1\nline 2\n{told}{long}{again}")
        );
    }

    #[test]
    fn one_line_dropped_is_told_in_the_singular() {
        let gate = Gate::default();
        let queue = Queue::spawn(gate.clone(), 7);
        queue.push("first.\n".into());
        queue.push("second\n".into());
        gate.open();
        assert!(queue.flush(WAIT));
        assert_eq!(
            gate.text(),
            "first.\n... 1 log line dropped: stdout was not being read\n"
        );
    }
}
