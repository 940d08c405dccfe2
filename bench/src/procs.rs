//! Child processes as guards: each runs in its own process group, its stdout and stderr are
//! drained by threads into timestamped lines (so a chatty child never blocks on a full pipe,
//! and a line's time is when it was printed, not when someone looked), and dropping the guard
//! kills the whole group.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::cleanup;

/// One line a child printed.
#[derive(Debug, Clone)]
pub struct Line {
    /// When the line was read from the pipe.
    pub at: Instant,
    pub text: String,
    /// Printed on stderr.
    pub stderr: bool,
}

type Lines = Arc<Mutex<Vec<Line>>>;

/// A running child process and everything it printed.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines,
}

impl Proc {
    /// Starts `program` with `args`; stdin is a pipe (see [`Proc::send`]).
    pub fn start<S: AsRef<OsStr>>(name: &str, program: &OsStr, args: &[S]) -> Result<Proc, String> {
        let mut command = Command::new(program);
        command.args(args);
        Self::spawn(name, command)
    }

    /// Starts a prepared command (its stdio is replaced by pipes).
    pub fn spawn(name: &str, mut command: Command) -> Result<Proc, String> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {name} ({program}): {e}"))?;
        cleanup::add_group(child.id());
        let lines = Lines::default();
        if let Some(out) = child.stdout.take() {
            drain(out, lines.clone(), false);
        }
        if let Some(err) = child.stderr.take() {
            drain(err, lines.clone(), true);
        }
        let stdin = child.stdin.take();
        Ok(Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> MutexGuard<'_, Vec<Line>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many lines were printed so far.
    pub fn len(&self) -> usize {
        self.lines().len()
    }

    /// The lines printed from index `from` on.
    pub fn since(&self, from: usize) -> Vec<Line> {
        self.lines()
            .get(from..)
            .map(<[Line]>::to_vec)
            .unwrap_or_default()
    }

    /// How many lines so far contain `pattern`.
    pub fn count(&self, pattern: &str) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.text.contains(pattern))
            .count()
    }

    /// The `n`th (1-based) line containing `pattern`, if printed yet.
    fn nth(&self, pattern: &str, n: usize) -> Option<Line> {
        let lines = self.lines();
        let mut found = lines.iter().filter(|l| l.text.contains(pattern));
        found.nth(n.saturating_sub(1)).cloned()
    }

    /// Waits until `n` lines contain `pattern`; returns the `n`th.
    ///
    /// # Errors
    /// The process exited or `timeout` passed first; the message ends with its last lines.
    pub fn wait_for(&mut self, pattern: &str, n: usize, timeout: Duration) -> Result<Line, String> {
        let start = Instant::now();
        loop {
            if let Some(line) = self.nth(pattern, n) {
                return Ok(line);
            }
            let why = match self.child.try_wait() {
                Ok(Some(status)) => Some(format!("exited ({status})")),
                Err(e) => Some(format!("cannot be waited for: {e}")),
                Ok(None) if start.elapsed() > timeout => {
                    Some(format!("did not say it in {timeout:?}"))
                }
                Ok(None) => None,
            };
            if let Some(why) = why {
                // Let the reader threads catch the last lines before reporting them.
                std::thread::sleep(Duration::from_millis(50));
                if let Some(line) = self.nth(pattern, n) {
                    return Ok(line);
                }
                let seen = self.count(pattern);
                return Err(format!(
                    "{} {why}: waited for {n} line(s) with '{pattern}', saw {seen}; last output:\n{}",
                    self.name,
                    self.tail(15)
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        let from = lines.len().saturating_sub(n);
        let shown: Vec<String> = lines[from..]
            .iter()
            .map(|l| format!("  | {}", l.text))
            .collect();
        shown.join("\n")
    }

    /// Writes one line to the child's stdin.
    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| format!("{}: stdin is closed", self.name))?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("{}: cannot write to its stdin: {e}", self.name))
    }

    /// Waits for the child to exit by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    std::thread::sleep(Duration::from_millis(20)); // the last lines
                    return Ok(status);
                }
                Ok(None) if start.elapsed() > timeout => {
                    return Err(format!("{} did not finish within {timeout:?}", self.name))
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("{}: cannot wait: {e}", self.name)),
            }
        }
    }

    /// The last stdout line, e.g. a JSON result.
    pub fn last_stdout(&self) -> Option<String> {
        let lines = self.lines();
        lines
            .iter()
            .rev()
            .find(|l| !l.stderr)
            .map(|l| l.text.clone())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return;
        };
        cleanup::kill_group(pid);
        let _ = self.child.wait();
        cleanup::remove_group(self.child.id());
    }
}

/// Reads `from` line by line into `lines` on a thread of its own.
fn drain(from: impl Read + Send + 'static, lines: Lines, stderr: bool) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(from);
        let mut buf = Vec::new();
        while let Ok(1..) = reader.read_until(b'\n', &mut buf) {
            let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
            let line = Line {
                at: Instant::now(),
                text,
                stderr,
            };
            lines
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
            buf.clear();
        }
    });
}
