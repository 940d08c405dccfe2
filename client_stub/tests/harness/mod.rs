//! Test harness: starts the real `server_stub` and `client_stub` binaries on ephemeral loopback
//! ports in temp directories, collects their output line by line, and waits for what a user
//! would see. Waits are generous (a slow, busy machine must pass); a wait that fails prints the
//! process's whole output.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one expected line may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// A binary of this workspace (all are built into the same directory).
pub fn exe(name: &str) -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_client_stub"));
    let path = client.with_file_name(name);
    assert!(path.exists(), "{} is not built: run cargo build --workspace first", path.display());
    path
}

/// The example module shipped with test_app.
pub fn example_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test_app/modules/z.py")
}

/// A running binary and everything it printed.
pub struct Proc {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `exe` with `args` in `cwd`; stdin is a pipe the test can write to.
    pub fn start(name: &str, exe: &Path, args: &[&str], cwd: &Path) -> Proc {
        let mut child = Command::new(exe)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let stdin = child.stdin.take();
        Proc { name: name.into(), child, stdin, lines }
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
    pub fn wait_n(&self, pattern: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self.output().into_iter().filter(|l| l.contains(pattern)).collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            if start.elapsed() > WAIT {
                panic!(
                    "{}: no line with '{pattern}' (wanted {n}, saw {}) after {WAIT:?}; output:\n{}",
                    self.name,
                    found.len(),
                    self.output().join("\n")
                );
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
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).expect("write to stdin");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads catch the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if start.elapsed() > WAIT {
                panic!("{} did not exit; output:\n{}", self.name, self.output().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// A server stub on a free port in `dir/server`.
pub fn server(dir: &Path, extra: &[&str]) -> (Proc, u16) {
    let srv_dir = dir.join("server");
    let mut args = vec!["-p", "0", "-d", srv_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let p = Proc::start("server", &exe("server_stub"), &args, dir);
    let line = p.wait_for("listening on ");
    let port = line.rsplit(':').next().unwrap().trim().parse().expect("port");
    (p, port)
}

/// A client stub named `name` receiving into `dir/<name>`, with an app port picked freely.
pub fn stub(dir: &Path, port: u16, name: &str, extra: &[&str]) -> Proc {
    let recv = dir.join(name);
    let port = port.to_string();
    let mut args = vec!["-a", "127.0.0.1", "-p", &port, "-n", name, "-q", "0", "-d", recv.to_str().unwrap()];
    args.extend_from_slice(extra);
    let p = Proc::start(name, &exe("client_stub"), &args, dir);
    p.wait_for("apps on ");
    p
}

/// The app port a stub printed.
pub fn app_port(p: &Proc) -> u16 {
    let line = p.wait_for("apps on ");
    line.rsplit(':').next().unwrap().trim().parse().expect("app port")
}
