//! One worker process: spawning it (ending with the stub, see `group`), its protocol pipes,
//! writing requests and reading the answers, forwarding its stderr to the log, and ending it.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;

use serde_json::Value;
use smol::future::FutureExt;
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::process::{Child, ChildStderr, Command, Stdio};
use smol::{Async, Task};

use common::error::{ErrorKind, RemoteError};
use common::log::{printable_head, PRINTABLE_BYTES};
use common::outbox::flush_queued;
use common::readiness::ReadWhenReady;
use common::say;

use super::answer::{exception, excerpt, invalid, parse_answer, too_large};
use super::group::Group;
use super::lane::request_line;
use super::supervisor::Stopped;
use super::woken::WhenWoken;
use super::{failed, python_command, sleep, Answer, Job, WorkerSpec, GRACE, SLOW_IMPORT};

/// A worker process, or why it could not be spawned.
pub(super) type Spawned = Result<Conn, RemoteError>;

pub(super) fn spawn(spec: &WorkerSpec) -> Spawned {
    Conn::spawn(spec).map_err(|e| {
        let (python, module) = (&spec.python, &spec.module);
        failed(format!(
            "could not start the Python interpreter `{python}` for module '{module}': {e}"
        ))
    })
}

/// One worker process and its protocol pipes, with buffers reused from call to call.
pub(super) struct Conn {
    pub(super) child: Child,
    /// Non-blocking, so that a call can be written to it without waiting (see `Lane`).
    pub(super) stdin: Arc<Async<File>>,
    stdout: BufReader<ReadWhenReady<File>>,
    /// Completes when the process exits: raced with every read so that a worker that died
    /// while something else (a forked child) holds its stdout open still ends the wait.
    /// Polled only once the process's pidfd wakes it (each poll is a `wait4`).
    pub(super) exited: WhenWoken<Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send>>>,
    stderr: Option<Task<()>>,
    line: Vec<u8>,
    /// The longest line kept: an answer over the frame limit is read to its end, not kept.
    max_line: usize,
    /// Requests to write; while the worker's pipe has taken only part of them, `out_sent`
    /// bytes (see [`Conn::write_out`]).
    out: Vec<u8>,
    out_sent: usize,
    /// The module's source, written to the worker before it imports it (see
    /// [`WorkerSpec::source`]).
    source: Option<Arc<[u8]>>,
    /// Declared last, so dropped last: after `child`, which kills the worker if it still runs.
    group: Group,
}

impl Conn {
    fn spawn(spec: &WorkerSpec) -> io::Result<Conn> {
        let mut command = python_command(&spec.python)?;
        command.arg(&spec.path);
        if let Some(source) = &spec.source {
            // It reads that many bytes of source from its input before anything else.
            command.arg(source.len().to_string());
        }
        let mut child = Command::from(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let group = Group::led_by(child.id());
        let module = spec.module.clone();
        let stderr = child.stderr.take().map(|e| smol::spawn(forward(module, e)));
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("the worker's pipes are missing"));
        };
        let exited =
            WhenWoken::new(Box::pin(child.status()) as Pin<Box<dyn Future<Output = _> + Send>>);
        let stdin = Arc::new(Async::new(File::from(OwnedFd::try_from(stdin)?))?);
        let stdout = File::from(OwnedFd::try_from(stdout)?);
        let stdout = BufReader::new(ReadWhenReady::new(Arc::new(Async::new(stdout)?)));
        let (line, out) = (Vec::new(), Vec::new());
        Ok(Conn {
            child,
            stdin,
            stdout,
            exited,
            stderr,
            line,
            max_line: spec.max_frame,
            out,
            out_sent: 0,
            source: spec.source.clone(),
            group,
        })
    }

    /// Ends the process and returns its exit status as text. A process `on_its_way_out` gets
    /// a moment to exit by itself so that its own status is reported.
    pub(super) async fn end(mut self, on_its_way_out: bool) -> String {
        // The end of its input: a worker with no call left exits by itself.
        drop(self.stdin);
        let exited = self.child.status();
        let grace = async {
            if on_its_way_out {
                sleep(GRACE).await;
            }
            None
        };
        let status = match async { Some(exited.await) }.or(grace).await {
            Some(status) => status,
            None => {
                self.group.kill();
                self.child.status().await
            }
        };
        drop(self.group); // what the worker started, which may outlive it
        if let Some(stderr) = self.stderr {
            // Let its last lines (often a traceback) out, unless something else holds the pipe.
            stderr.or(sleep(GRACE)).await;
        }
        match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("exit status unknown: {e}"),
        }
    }

    /// Writes the worker the module's source, if it runs one, then reads the line it writes
    /// once it has imported the module, or failed to.
    pub(super) async fn wait_ready(&mut self, module: &str) -> Result<(), Stopped> {
        if let Some(source) = self.source.take() {
            // A worker that exits first breaks the pipe: it is reported as not ready.
            let mut pipe = &*self.stdin;
            let written = async {
                pipe.write_all(&source).await?;
                pipe.flush().await
            };
            written
                .await
                .map_err(|_| Stopped::NotReady(Broken::Exited))?;
        }
        let slow = async {
            sleep(SLOW_IMPORT).await;
            let secs = SLOW_IMPORT.as_secs();
            say!("[{module}] still importing after {secs} s: its calls wait until it is ready");
            std::future::pending().await
        };
        let line = match self.read_line().or(slow).await.map_err(Stopped::NotReady)? {
            Line::Text(line) => line,
            Line::Over(size) => {
                let line = format!("a line of {size} bytes");
                return Err(Stopped::NotReady(Broken::Invalid(line)));
            }
        };
        let ready: Value = serde_json::from_str(line)
            .map_err(|e| Stopped::NotReady(Broken::Invalid(invalid(e, line))))?;
        if ready.get("ready") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        match not_ready(&ready, module) {
            Some(error) => Err(Stopped::ImportFailed(error)),
            None => Err(Stopped::NotReady(Broken::Invalid(excerpt(line)))),
        }
    }

    /// Appends job `id`'s request to the pending output; `Err` answers a job that cannot be
    /// sent.
    pub(super) fn queue(&mut self, id: u64, job: &Job) -> Result<(), Answer> {
        request_line(&mut self.out, id, job).map_err(|e| {
            let message = format!("arguments are not JSON: {e}");
            Err(RemoteError::new(ErrorKind::BadArguments, message))
        })
    }

    /// Writes as much of the pending output as the worker's pipe takes now, without waiting:
    /// the rest is written while answers are read (see `read_line`). Waiting for the pipe to
    /// take it all could wait for good: the worker reads no more requests while it waits for
    /// an answer longer than its pipe holds to be read.
    pub(super) fn write_out(&mut self) -> Result<(), Broken> {
        if self.out.is_empty() {
            return Ok(());
        }
        // Non-blocking: one write, all of it as a rule (a few short requests).
        let mut pipe: &File = self.stdin.get_ref();
        match io::Write::write(&mut pipe, &self.out) {
            Ok(n) => self.out_sent = n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return Err(Broken::Exited),
        }
        if self.out_sent == self.out.len() {
            self.out.clear();
            self.out_sent = 0;
        }
        Ok(())
    }

    /// Whether some of the requests written at once are still to be written.
    pub(super) fn writing(&self) -> bool {
        !self.out.is_empty()
    }

    /// Reads the answer to request `id`.
    pub(super) async fn answer(&mut self, id: u64) -> Result<Answer, Broken> {
        // About to wait for the worker: the answers handed on before go out first.
        if !self.stdout.buffer().contains(&b'\n') {
            flush_queued();
        }
        match self.read_line().await? {
            Line::Text(line) => parse_answer(line, id).map_err(Broken::Invalid),
            Line::Over(size) => Ok(Err(too_large(&self.line, id, size, self.max_line))),
        }
    }

    /// Reads one line, unless the process exits or its stdout ends first, writing meanwhile
    /// the requests still to write (see `write_out`).
    async fn read_line(&mut self) -> Result<Line<'_>, Broken> {
        let Conn {
            stdin,
            stdout,
            exited,
            line,
            max_line,
            out,
            out_sent,
            ..
        } = self;
        line.clear();
        let read = async {
            let limit = *max_line as u64 + 1;
            match (&mut *stdout).take(limit).read_until(b'\n', line).await {
                Ok(0) | Err(_) => Err(Broken::Exited),
                Ok(_) if line.ends_with(b"\n") => Ok(None),
                Ok(kept) => skip_line(stdout).await.map(|rest| Some(kept + rest)),
            }
        };
        let writing = async {
            if !out.is_empty() {
                write_rest(stdin, out, out_sent).await?;
            }
            // All written: only the answer, or the process's end, ends the wait.
            std::future::pending().await
        };
        let over = read
            .or(async {
                let _ = exited.await;
                Err(Broken::Exited)
            })
            .or(writing)
            .await?;
        match over {
            Some(size) => Ok(Line::Over(size)),
            None => std::str::from_utf8(line)
                .map(Line::Text)
                .map_err(|e| Broken::Invalid(format!("a line that is not UTF-8: {e}"))),
        }
    }
}

/// Writes `out` from `sent` on, as the pipe takes it, then empties it. Cut short anywhere (by
/// the answer awaited), `sent` still says what was written.
async fn write_rest(
    stdin: &Async<File>,
    out: &mut Vec<u8>,
    sent: &mut usize,
) -> Result<(), Broken> {
    let mut pipe = stdin;
    while *sent < out.len() {
        match pipe.write(&out[*sent..]).await {
            Ok(0) => return Err(Broken::Exited),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Broken::Exited),
        }
    }
    out.clear();
    *sent = 0;
    Ok(())
}

/// A line a worker wrote: its text, or the size of one over the frame limit, not kept.
enum Line<'a> {
    Text(&'a str),
    Over(usize),
}

/// Reads the rest of a line without keeping it; its size, the newline not counted.
async fn skip_line(stdout: &mut BufReader<ReadWhenReady<File>>) -> Result<usize, Broken> {
    let mut size = 0;
    loop {
        let buf = stdout.fill_buf().await.map_err(|_| Broken::Exited)?;
        if buf.is_empty() {
            return Err(Broken::Exited);
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let used = newline.map_or(buf.len(), |i| i + 1);
        stdout.consume(used);
        size += used;
        if newline.is_some() {
            return Ok(size - 1);
        }
    }
}

/// How a worker process broke.
pub(super) enum Broken {
    /// It exited, or closed its pipes.
    Exited,
    /// It wrote something that is not the protocol.
    Invalid(String),
}

impl Broken {
    pub(super) fn describe(&self, status: &str) -> String {
        match self {
            Broken::Exited => format!("exited ({status})"),
            Broken::Invalid(detail) => format!("sent an invalid line ({detail})"),
        }
    }
}

/// Forwards a worker's stderr, where its prints go too, to the stub's log line by line. The
/// module is local, but what it prints may echo a caller's arguments: escaped like peer text.
/// Of a line only the head that is printed is kept, however much the module writes without a
/// newline: a module writing megabytes so cannot make the stub hold them.
async fn forward(module: String, stderr: ChildStderr) {
    let mut reader = BufReader::new(stderr);
    // The line's head (a few bytes past what is printed, for a character cut there), its size.
    let (mut head, mut size) = (Vec::new(), 0);
    while let Ok(buf) = reader.fill_buf().await {
        let at_end = buf.is_empty();
        let newline = buf.iter().position(|&b| b == b'\n');
        let piece = &buf[..newline.map_or(buf.len(), |i| i + 1)];
        let room = (PRINTABLE_BYTES + 4).saturating_sub(head.len());
        head.extend_from_slice(&piece[..piece.len().min(room)]);
        size += piece.len();
        let used = piece.len();
        reader.consume(used);
        if newline.is_some() || (at_end && size > 0) {
            let text = String::from_utf8_lossy(&head);
            let (shown, all) = match head.len() == size {
                true => (text.trim_end(), text.trim_end().len()),
                false => (&text[..], size - usize::from(newline.is_some())),
            };
            say!("[{module}] {}", printable_head(shown, all));
            head.clear();
            size = 0;
        }
        if at_end {
            break;
        }
    }
}

/// The error a worker's `{"ready": false, ...}` line reports; `None` if it reports none.
pub(super) fn not_ready(ready: &Value, module: &str) -> Option<RemoteError> {
    let context = match ready.get("unwatched") == Some(&Value::Bool(true)) {
        true => format!("worker for module '{module}' did not start: "),
        false => format!("module '{module}' failed to import: "),
    };
    exception(ErrorKind::WorkerFailed, ready.get("error")?, &context)
}
