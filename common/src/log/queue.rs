//! Lines for an output that may stop taking them (stdout: a pipe that nobody reads fills and then
//! blocks its writer; the log file: a disk that stalls, or fills): they are written by a thread
//! of their own, so that whoever says a line never waits for the output. While it lags, lines
//! wait in memory up to a budget of bytes; past it they are dropped and counted, and the count is
//! written as a line of its own once the output has taken the lines that waited.
//!
//! An output that fails (a full disk) loses the lines it refuses, counted the same way: the
//! console is told once when it starts failing and once when it takes lines again, and the
//! output gets the count then. No line is torn: one the output took only part of is finished
//! before anything else is written.

use std::io::{self, Write};
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
    /// Why lines were dropped for want of room to wait, after `... N log lines dropped: `.
    pub lagged: &'static str,
    /// Why lines were dropped when the output failed, before the error in brackets.
    pub failed: &'static str,
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
    /// Starts the thread that writes to `out`; `tell` says on the console that `out` fails, or
    /// takes lines again (a line without its newline).
    pub fn spawn(
        out: impl Write + Send + 'static,
        output: Output,
        budget: usize,
        tell: impl Fn(&str) + Send + 'static,
    ) -> Queue {
        let (to_writer, items) = smol::channel::unbounded();
        let counts = Arc::new(Counts::default());
        let writer = Writer {
            out,
            output,
            tell,
            counts: counts.clone(),
            tail: Vec::new(),
            lost: 0,
            failing: None,
        };
        // If the system has no thread to spare, every line is dropped: output never stops a stub.
        let _ = std::thread::Builder::new()
            .name(output.thread.into())
            .spawn(move || writer.run(items));
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

/// The writer thread's state.
struct Writer<W, T> {
    out: W,
    output: Output,
    tell: T,
    counts: Arc<Counts>,
    /// The rest of a line the output took only part of: written before anything else.
    tail: Vec<u8>,
    /// Lines the output refused and that it was not told of yet.
    lost: u64,
    /// While the output fails (from an error to the next line it takes whole): the last error,
    /// and how many lines it lost meanwhile, for the console.
    failing: Option<(io::Error, u64)>,
}

/// How much of some bytes the output took.
#[derive(PartialEq)]
enum Took {
    All,
    /// Part, and the rest is the tail.
    Part,
    Nothing,
}

impl<W: Write, T: Fn(&str)> Writer<W, T> {
    /// Writes each line in turn, and whenever it has caught up, the count of lines dropped (so
    /// that it comes after the lines kept before them) and a flush (a buffered output holds no
    /// line back while nothing more comes).
    fn run(mut self, items: Receiver<Item>) {
        while let Ok(item) = items.recv_blocking() {
            let done = match item {
                Item::Line(line) => {
                    self.put(line.as_bytes());
                    self.counts.waiting.fetch_sub(line.len(), Relaxed);
                    None
                }
                Item::Flush(done) => Some(done),
            };
            if done.is_some() || items.is_empty() {
                self.tell_dropped();
                let _ = self.out.flush();
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }

    /// Writes `line` whole (or begins it, the rest to follow as the tail), or loses it.
    fn put(&mut self, line: &[u8]) {
        if !self.clear() {
            return self.lose(1);
        }
        match self.write(line) {
            Took::All => self.back(),
            Took::Part => {}
            Took::Nothing => self.lose(1),
        }
    }

    /// Writes what must come before the next line: the tail of a line begun, then the count of
    /// lines lost. Whether it all went.
    fn clear(&mut self) -> bool {
        if !self.tail.is_empty() {
            let tail = std::mem::take(&mut self.tail);
            match self.write(&tail) {
                Took::All => {}
                Took::Part => return false,
                Took::Nothing => {
                    self.tail = tail;
                    return false;
                }
            }
        }
        if self.lost > 0 {
            let why = match &self.failing {
                Some((error, _)) => error.to_string(),
                None => "an error".into(),
            };
            let note = format!(
                "... {} dropped: {} ({why})",
                lines(self.lost),
                self.output.failed
            );
            match self.write(format!("{note}\n").as_bytes()) {
                Took::Nothing => return false,
                // Begun, it will be finished: the lines it counts are told.
                Took::Part => {
                    self.lost = 0;
                    return false;
                }
                Took::All => self.lost = 0,
            }
        }
        true
    }

    /// Writes the lines dropped for want of room to wait, if any, after what must come first;
    /// lost with them if the output refuses it.
    fn tell_dropped(&mut self) {
        let n = self.counts.dropped.swap(0, Relaxed);
        if n > 0 {
            let note = format!("... {} dropped: {}\n", lines(n), self.output.lagged);
            if !self.clear() {
                return self.lose(n);
            }
            match self.write(note.as_bytes()) {
                Took::All => self.back(),
                Took::Part => {}
                Took::Nothing => self.lose(n),
            }
        } else if self.lost > 0 || !self.tail.is_empty() {
            // Nothing more may come for a while (the end of the process): finish what is due.
            self.clear();
        }
    }

    /// One write after another until `bytes` are all written or the output fails: then what
    /// was written of them, if any, leaves the rest as the tail, and the failure is noted.
    fn write(&mut self, bytes: &[u8]) -> Took {
        let mut done = 0;
        while done < bytes.len() {
            let error = match self.out.write(&bytes[done..]) {
                Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
                Ok(n) => {
                    done += n;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            self.fail(error);
            if done == 0 {
                return Took::Nothing;
            }
            self.tail = bytes[done..].to_vec();
            return Took::Part;
        }
        Took::All
    }

    /// The output refused a write: the console is told, once until it takes lines again.
    fn fail(&mut self, error: io::Error) {
        match &mut self.failing {
            Some((last, _)) => *last = error,
            None => {
                (self.tell)(&format!(
                    "cannot write: {error}; its lines are dropped, and counted, until it takes \
                     them again"
                ));
                self.failing = Some((error, 0));
            }
        }
    }

    /// `n` lines refused: counted, for the output and for the console.
    fn lose(&mut self, n: u64) {
        self.lost += n;
        if let Some((_, lost)) = &mut self.failing {
            *lost += n;
        }
    }

    /// The output took a line whole: if it was failing, the console is told it is back.
    fn back(&mut self) {
        match self.failing.take() {
            None => {}
            Some((_, 0)) => (self.tell)("takes lines again"),
            Some((_, lost)) => (self.tell)(&format!(
                "takes lines again, after dropping {}",
                lines(lost)
            )),
        }
    }
}

/// `N log lines`.
fn lines(n: u64) -> String {
    match n {
        1 => "1 log line".into(),
        n => format!("{n} log lines"),
    }
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
        let queue = Queue::spawn(gate.clone(), STDOUT, 25, |_: &str| {});
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
        let queue = Queue::spawn(gate.clone(), STDOUT, 7, |_: &str| {});
        queue.push("first.\n".into());
        queue.push("second\n".into());
        gate.open();
        assert!(queue.flush(WAIT));
        assert_eq!(
            gate.text(),
            "first.\n... 1 log line dropped: stdout was not being read\n"
        );
    }

    /// An output with room for so many bytes (a disk that fills), then refusing writes as a full
    /// disk does; each write takes what fits.
    #[derive(Clone, Default)]
    struct Disk {
        room: Arc<Mutex<usize>>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Disk {
        fn text(&self) -> String {
            String::from_utf8(self.written.lock().unwrap().clone()).unwrap()
        }
    }

    impl Write for Disk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut room = self.room.lock().unwrap();
            let n = buf.len().min(*room);
            if n == 0 {
                return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
            }
            *room -= n;
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_a_full_output_refuses_are_counted_told_once_and_none_is_torn() {
        let disk = Disk::default();
        *disk.room.lock().unwrap() = 30; // four lines of 7 bytes, and 2 of the fifth
        let told = Arc::new(Mutex::new(Vec::new()));
        let tell = {
            let told = told.clone();
            move |what: &str| told.lock().unwrap().push(what.to_owned())
        };
        let queue = Queue::spawn(disk.clone(), crate::log::TO_FILE, 1 << 20, tell);
        for i in 0..10 {
            queue.push(format!("line {i}\n"));
        }
        assert!(queue.flush(WAIT));
        assert_eq!(disk.text(), "line 0\nline 1\nline 2\nline 3\nli");
        let full = "No space left on device (os error 28)";
        let failing = format!(
            "cannot write: {full}; its lines are dropped, and counted, until it takes them again"
        );
        assert_eq!(*told.lock().unwrap(), [failing.as_str()], "told once");

        // Room again: the line begun is finished first, then the count, then the new lines.
        *disk.room.lock().unwrap() = 1000;
        queue.push("line 10\n".into());
        assert!(queue.flush(WAIT));
        assert_eq!(
            disk.text(),
            format!(
                "line 0\nline 1\nline 2\nline 3\nline 4\n\
                 ... 5 log lines dropped: the log file was not taking them ({full})\nline 10\n"
            )
        );
        let back = "takes lines again, after dropping 5 log lines".to_owned();
        assert_eq!(*told.lock().unwrap(), [failing, back]);
    }
}
