//! Apps whose stub stops reading (here: stopped with SIGSTOP) while they write a request larger
//! than the socket buffers: the call still ends at its timeout, and once the stub reads again
//! the next call works. For the Rust clients and for a Python app through its generated stub.

mod harness;

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::app::{AsyncClient, CallError, Client};
use harness::*;
use serde_json::{json, Map};

/// An argument several times what the sockets between an app and its stub hold (a few MB).
const LARGE: usize = 24_000_000;

/// The frame limit of the caller's stub and its apps: a request of [`LARGE`] bytes is one the
/// stub would take.
const FRAME: usize = 64 << 20;

/// How long a call that ends at its timeout may take here at most: far more than any timeout
/// below, so that only a call that hangs goes past it.
const HUNG: Duration = Duration::from_secs(20);

const MODULE: &str = "def add(a, b):\n    return a + b\n";

/// A server, an owner `a` of module `m`, and its caller `b`, whose frame limit is [`FRAME`].
struct Net {
    tmp: tempfile::TempDir,
    _server: Proc,
    _owner: Proc,
    caller: Proc,
}

fn net() -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("b.toml");
    std::fs::write(&profile, format!("[limits]\nmax_frame_bytes = {FRAME}\n")).unwrap();
    let flags = ["-c", profile.to_str().unwrap()];
    let [server, owner, caller] = owner_and_caller(tmp.path(), MODULE, &flags);
    Net {
        tmp,
        _server: server,
        _owner: owner,
        caller,
    }
}

/// `p` stopped (SIGSTOP) until this is dropped (SIGCONT), however the test ends.
struct Stopped<'a>(&'a Proc);

impl<'a> Stopped<'a> {
    fn new(p: &'a Proc) -> Self {
        assert!(kill(p, "-STOP"), "cannot stop {}", p.name);
        Stopped(p)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        kill(self.0, "-CONT");
    }
}

fn kill(p: &Proc, signal: &str) -> bool {
    let status = std::process::Command::new("kill")
        .args([signal, &p.pid().to_string()])
        .status();
    status.is_ok_and(|s| s.success())
}

/// What `call` returns, made on a thread of its own; a failure if it takes [`HUNG`] (a call that
/// hangs), not a test that hangs with it.
fn unless_hung<T: Send + 'static>(what: &str, call: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || done.send(call()));
    match result.recv_timeout(HUNG) {
        Ok(answer) => answer,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: still waiting after {HUNG:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the thread panicked"),
    }
}

fn timed_out<T: std::fmt::Debug>(result: &Result<T, CallError>) -> bool {
    matches!(result, Err(CallError::Timeout(_)))
}

#[test]
fn a_request_its_stub_does_not_read_ends_at_its_timeout_and_the_next_call_connects_again() {
    let n = net();
    let address = format!("127.0.0.1:{}", app_port(&n.caller));
    let app = std::sync::Arc::new(Client::connect(&address).unwrap().with_max_frame(FRAME));
    assert_eq!(app.call("m", "add", (1, 2)), Ok(json!(3)));
    let stopped = Stopped::new(&n.caller);
    let short = Some(Duration::from_millis(500));
    let large = app.clone();
    let result = unless_hung("a large request to a stopped stub", move || {
        large.call_with("m", "add", ("x".repeat(LARGE), ""), Map::new(), short)
    });
    assert!(timed_out(&result), "{result:?}");
    // The next call, on a new connection, waits for an answer that cannot come yet, in time.
    let small = app.clone();
    let result = unless_hung("a small request to a stopped stub", move || {
        small.call_with("m", "add", (1, 2), Map::new(), short)
    });
    assert!(timed_out(&result), "{result:?}");
    drop(stopped);
    assert_eq!(app.call("m", "add", (2, 2)), Ok(json!(4)));
}

#[test]
fn an_async_request_its_stub_does_not_read_ends_at_its_timeout_and_the_next_call_works() {
    let n = net();
    let address = format!("127.0.0.1:{}", app_port(&n.caller));
    let app = smol::block_on(AsyncClient::connect(&address)).unwrap();
    let app = std::sync::Arc::new(app.with_max_frame(FRAME));
    assert_eq!(smol::block_on(app.call("m", "add", (1, 2))), Ok(json!(3)));
    let stopped = Stopped::new(&n.caller);
    let calls = app.clone();
    // A large call, and behind it a small one with a shorter timeout: each ends at its own.
    let ended = unless_hung("calls to a stopped stub", move || {
        let ended = std::cell::RefCell::new(Vec::new());
        let call = |name, arg, ms| {
            let (timeout, ended) = (Some(Duration::from_millis(ms)), &ended);
            let call = calls.call_with("m", "add", (arg, ""), Map::new(), timeout);
            async move {
                let result = call.await;
                ended.borrow_mut().push((name, result));
            }
        };
        let large = call("large", "x".repeat(LARGE), 3000);
        let small = call("small", String::new(), 500);
        smol::block_on(smol::future::zip(large, small));
        ended.into_inner()
    });
    let names: Vec<&str> = ended.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["small", "large"], "{ended:?}");
    assert!(
        ended.iter().all(|(_, result)| timed_out(result)),
        "{ended:?}"
    );
    drop(stopped);
    assert_eq!(smol::block_on(app.call("m", "add", (2, 2))), Ok(json!(4)));
}

/// A Python app through the generated stub `m.py`: the large call, begun, raises a late
/// answer's `TimeoutError` (not "not sent": the next call writes its rest and the stub runs it),
/// and the next call works once the stub is continued (by the app itself).
#[test]
fn a_python_request_its_stub_does_not_read_ends_at_its_timeout() {
    let n = net();
    let script = format!(
        "import os, signal, time, m, _stubnet\n\
         assert m.add(1, 2) == 3\n\
         os.kill({pid}, signal.SIGSTOP)\n\
         _stubnet.set_timeout(0.5)\n\
         started = time.monotonic()\n\
         try:\n    m.add('x' * {LARGE}, '')\n    raise SystemExit('no TimeoutError')\n\
         except TimeoutError as e:\n    print('timed out:', e)\n\
         assert time.monotonic() - started < {hung}, time.monotonic() - started\n\
         os.kill({pid}, signal.SIGCONT)\n\
         _stubnet.set_timeout(None)\n\
         assert m.add(2, 2) == 4\n\
         print('python ok')\n",
        pid = n.caller.pid(),
        hung = HUNG.as_secs(),
    );
    let recv = n.tmp.path().join("b");
    let out = python(&recv, app_port(&n.caller), &script);
    kill(&n.caller, "-CONT"); // whatever the app did
    let late = "m.add: no answer within 0.5 s (its request was still being written";
    assert!(out.contains(late) && out.contains("python ok"), "{out}");
}

/// Runs `script` with python3 in `dir` against the app port, killed if it runs past twice
/// [`HUNG`]: its output.
fn python(dir: &Path, port: u16, script: &str) -> String {
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .current_dir(dir)
        .env("STUBNET_APP_PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > 2 * HUNG {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
