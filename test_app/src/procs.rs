//! Child processes whose output is collected line by line, to wait for what a user would see.
//! Used by the demo and by the integration tests. A wait that fails reports the whole output.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long any one expected line may take (generous: a slow, busy machine must pass).
pub const WAIT: Duration = Duration::from_secs(30);

/// A running binary and everything it printed.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
    /// The threads reading its stdout and stderr: each ends at the end of its pipe.
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts `exe` with `args` in `cwd`; stdin is a pipe the test can write to.
    pub fn start(name: &str, exe: &Path, args: &[&str], cwd: &Path) -> Proc {
        Self::start_echo(name, exe, args, cwd, false)
    }

    /// Like [`Proc::start`]; with `echo`, every line is also printed as `[name] line`.
    pub fn start_echo(name: &str, exe: &Path, args: &[&str], cwd: &Path, echo: bool) -> Proc {
        let mut child = Command::new(exe)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers = [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ]
        .map(|out| {
            let (lines, tag) = (lines.clone(), name.to_owned());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if echo {
                        crate::show(format_args!("    [{tag}] {line}"));
                    }
                    lines.lock().unwrap().push(line);
                }
            })
        })
        .into();
        let stdin = child.stdin.take();
        Proc {
            name: name.into(),
            child,
            stdin,
            lines,
            readers,
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many lines so far contain `pattern`.
    pub fn count(&self, pattern: &str) -> usize {
        self.output().iter().filter(|l| l.contains(pattern)).count()
    }

    /// Waits until `n` lines contain `pattern`; returns the last of them.
    ///
    /// # Panics
    /// After [`WAIT`], with the whole output (what a test wants).
    pub fn wait_n(&self, pattern: &str, n: usize) -> String {
        self.try_wait_n(pattern, n)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until `n` lines contain `pattern`, or the process exits, or [`WAIT`] passes.
    ///
    /// # Errors
    /// What was awaited, and the whole output.
    pub fn try_wait_n(&self, pattern: &str, n: usize) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self
                .output()
                .into_iter()
                .filter(|l| l.contains(pattern))
                .collect();
            if found.len() >= n {
                return Ok(found[n - 1].clone());
            }
            if start.elapsed() > WAIT {
                return Err(format!(
                    "{}: no line with '{pattern}' (wanted {n}, saw {}) after {WAIT:?}; output:\n{}",
                    self.name,
                    found.len(),
                    self.output().join("\n")
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a line contains `pattern`.
    pub fn wait_for(&self, pattern: &str) -> String {
        self.wait_n(pattern, 1)
    }

    /// Types a line into the process's stdin (its shell, when started with `-l`).
    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Writes raw bytes into the process's stdin: input that need not be text.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .expect("write to stdin");
    }

    /// Waits for the process to exit, and for the reader threads to have all it printed.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Its last lines may still be in the pipes: they are read to their end (unless
                // something it started holds them open; then its output is what came in time).
                let exited = Instant::now();
                while !self.readers.iter().all(JoinHandle::is_finished) && exited.elapsed() < WAIT {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return status;
            }
            if start.elapsed() > WAIT {
                panic!(
                    "{} did not exit; output:\n{}",
                    self.name,
                    self.output().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the process to stop (SIGTERM, as a service manager does) and waits for its exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "{}: kill -TERM failed",
            self.name
        );
        self.wait_exit()
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
