//! Lines for an output that may stop taking them (stdout: a pipe that nobody reads fills and then
//! blocks its writer; the log file: a disk that stalls): they are written by a thread of their
//! own, so that whoever says a line never waits for the output. While it lags, lines wait in
//! memory up to a budget of bytes; past it they are dropped and counted, and the count is written
//! as a line of its own once the output has taken the lines that waited.

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

/// Which output a queue writes to: it names the writer thread and says why lines were dropped.
#[derive(Clone, Copy)]
pub struct Output {
    /// The writer thread's name.
    pub thread: &'static str,
    /// Why lines were dropped, after `... N log lines dropped: `.
    pub lagged: &'static str,
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
    pub fn spawn(out: impl Write + Send + 'static, output: Output, budget: usize) -> Queue {
        let (to_writer, items) = smol::channel::unbounded();
        let counts = Arc::new(Counts::default());
        let writer = counts.clone();
        // If the system has no thread to spare, every line is dropped: output never stops a stub.
        let _ = std::thread::Builder::new()
            .name(output.thread.into())
            .spawn(move || write_out(out, items, &writer, output.lagged));
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

/// The writer thread: writes each line in turn, and whenever it has caught up, the count of lines
/// dropped (so that it comes after the lines kept before them) and a flush (a buffered output
/// holds no line back while nothing more comes).
fn write_out(mut out: impl Write, items: Receiver<Item>, counts: &Counts, lagged: &str) {
    while let Ok(item) = items.recv_blocking() {
        let done = match item {
            Item::Line(line) => {
                let _ = out.write_all(line.as_bytes());
                counts.waiting.fetch_sub(line.len(), Relaxed);
                None
            }
            Item::Flush(done) => Some(done),
        };
        if done.is_some() || items.is_empty() {
            tell_dropped(&mut out, counts, lagged);
            let _ = out.flush();
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}

/// Writes how many lines were dropped since the last time it was told, if any.
fn tell_dropped(out: &mut impl Write, counts: &Counts, lagged: &str) {
    let lines = match counts.dropped.swap(0, Relaxed) {
        0 => return,
        1 => "1 log line".to_owned(),
        n => format!("{n} log lines"),
    };
    let _ = writeln!(out, "... {lines} dropped: {lagged}");
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
    use crate::log::TO_STDOUT as STDOUT;

    #[test]
    fn lines_past_the_budget_are_dropped_counted_and_told_after_the_lines_kept() {
        let gate = Gate::default();
        // Three lines of 7 bytes fit in 25; the first is held by the stuck writer and still
        // counts, however soon the writer takes it.
        let queue = Queue::spawn(gate.clone(), STDOUT, 25);
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
        let queue = Queue::spawn(gate.clone(), STDOUT, 7);
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
