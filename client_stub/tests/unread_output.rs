//! Stubs whose stdout nobody reads (a supervisor or a script that never drains it) keep serving:
//! the lines the pipe cannot take are dropped, and said to be, but no call waits for them.

mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;

/// What a stub says when its stdout lost lines.
const DROPPED: &str = "log lines dropped: stdout was not being read";

/// A binary whose stdout is read only up to a line the test needs, then left unread, its pipe
/// filling; its stderr is not kept.
struct Unread {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    /// What was read of stdout once the test read it again.
    lines: Arc<Mutex<Vec<String>>>,
}

impl Unread {
    /// Starts `exe` with `args` in `cwd`, and reads its stdout up to a line with `until`.
    ///
    /// # Returns
    /// It, and that line.
    fn start(exe: &Path, args: &[&str], cwd: &Path, until: &str) -> (Unread, String) {
        let mut child = Command::new(exe)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains(until) {
            line.clear();
            let read = stdout.read_line(&mut line).unwrap();
            assert!(read > 0, "{} ended before saying '{until}'", exe.display());
        }
        let unread = Unread {
            child,
            stdout: Some(stdout),
            lines: Default::default(),
        };
        (unread, line)
    }

    /// Reads its stdout again from now on, in the background.
    fn read_again(&mut self) {
        let stdout = self.stdout.take().expect("not read yet");
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
    }

    /// Whether a line read again contains `pattern`, within [`WAIT`].
    fn says(&self, pattern: &str) -> bool {
        soon(|| {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(pattern))
        })
    }

    /// SIGTERM, then its exit within [`WAIT`].
    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let asked = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(asked.elapsed() < WAIT, "it did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Module `m` in `dir`: `add`, and `spam`, which prints `n` lines of 1,000 bytes.
fn module(dir: &Path) -> String {
    let m = dir.join("m.py");
    let source = "def add(a, b):\n    return a + b\n\n\
                  def spam(n):\n    for _ in range(n):\n        print('x' * 1000)\n    return n\n";
    std::fs::write(&m, source).unwrap();
    m.to_str().unwrap().to_owned()
}

#[test]
fn a_server_whose_stdout_is_not_read_keeps_routing_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = ["-p", "0", "-d", "server"];
    let (mut server, listening) = Unread::start(&exe("server_stub"), &args, dir, "listening on ");
    let port: u16 = listening
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    // About 3 MB of log, far more than the pipe (64 KB) and the queue (1 MiB) hold: the server
    // logs each connection it refuses with what it sent, up to 1,000 bytes of it.
    let junk = format!("{{\"cmd\":\"{}\"}}\n", "x".repeat(2000));
    for _ in 0..3000 {
        let to = ([127, 0, 0, 1], port).into();
        let mut s = TcpStream::connect_timeout(&to, WAIT).expect("the server takes connections");
        s.write_all(junk.as_bytes()).unwrap();
        // Its answer (a refusal), then its close: the server goes on to the next.
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).expect("the server answers");
        assert!(!answer.is_empty());
    }

    let m = module(dir);
    let a = stub(dir, port, "a", &["--register", &m]);
    a.wait_for("registered m");
    let b = stub(dir, port, "b", &[]);
    let app = client(&b);
    for i in 0..10 {
        let sum = eventually(|| app.call("m", "add", (i, 1)));
        assert_eq!(sum.unwrap(), json!(i + 1));
    }

    // Read again, it says how many lines it could not print, then prints its last line.
    server.read_again();
    assert!(server.says(DROPPED), "{:?}", server.lines.lock().unwrap());
    assert!(server.terminate().success());
    assert!(server.says("stopped: "));
}

#[test]
fn an_owner_whose_stdout_is_not_read_serves_a_module_that_prints_a_lot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let m = module(dir);
    std::fs::write(dir.join("a.toml"), "[log]\nfile = \"a.log\"\n").unwrap();
    let args = stub_args(&port.to_string(), "a", "a");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--register", &m, "-c", "a.toml"]);
    let (mut a, _) = Unread::start(&exe("client_stub"), &args, dir, "registered m");
    let b = stub(dir, port, "b", &[]);
    let app = client(&b).with_timeout(WAIT);

    // 3 MB of the module's prints go to a's log while its stdout is not read.
    let printed = eventually(|| app.call("m", "spam", (3000,)));
    assert_eq!(printed.unwrap(), json!(3000));
    assert_eq!(app.call("m", "add", (1, 2)).unwrap(), json!(3));
    // The log file has every line: stdout lost lines, the file none.
    let log = || std::fs::read_to_string(dir.join("a.log")).unwrap();
    assert_eq!(
        log().lines().filter(|l| l.starts_with("[m] xxx")).count(),
        3000
    );

    // Its stdout still not read, it stops when told, after a bounded wait for it.
    assert!(a.terminate().success());
    let last = log().lines().last().map(str::to_owned);
    assert!(
        last.as_ref().is_some_and(|l| l.starts_with("stopped: ")),
        "{last:?}"
    );
}

#[test]
fn an_owner_whose_log_file_stalls_serves_on_and_the_file_gets_every_line_later() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let m = module(dir);
    // The log file is a named pipe that is opened but not read: a disk that stalls.
    let fifo = dir.join("a.log");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::fs::write(dir.join("a.toml"), "[log]\nfile = \"a.log\"\n").unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::File::open(fifo).unwrap()) // waits for the writer
    };
    let a = stub(dir, port, "a", &["--register", &m, "-c", "a.toml"]);
    a.wait_for("registered m");
    let reader = reader.join().unwrap();
    let b = stub(dir, port, "b", &[]);
    let app = client(&b).with_timeout(WAIT);

    // 3 MB of the module's prints, far more than the pipe holds (64 KB), wait for the file.
    let printed = eventually(|| app.call("m", "spam", (3000,)));
    assert_eq!(printed.unwrap(), json!(3000));
    assert_eq!(app.call("m", "add", (1, 2)).unwrap(), json!(3));

    // The disk catches up: every line reaches the file, none was dropped.
    let lines = Arc::new(Mutex::new(Vec::new()));
    let read = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            read.lock().unwrap().push(line);
        }
    });
    let spam = || {
        let lines = lines.lock().unwrap();
        lines.iter().filter(|l| l.starts_with("[m] xxx")).count()
    };
    assert!(soon(|| spam() == 3000), "{} of 3000 lines", spam());
    assert!(!lines.lock().unwrap().iter().any(|l| l.contains("dropped")));
}
