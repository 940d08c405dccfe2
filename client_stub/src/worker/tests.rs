//! The supervisor against real Python workers.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::time::Instant;

use super::answer::parse_answer;
use super::watch::KILL_AFTER_MS;
use super::*;
use serde_json::{json, Map, Value};
use smol::future::FutureExt;
use smol::Async;

/// A pool running `source` as module `z` (the file and its directory live as long as the
/// returned guard).
fn pool(source: &str, workers: usize) -> (tempfile::TempDir, Pool) {
    pool_framed(source, workers, common::conn::DEFAULT_MAX_FRAME)
}

/// [`pool`], with a frame limit of `max_frame` bytes.
fn pool_framed(source: &str, workers: usize, max_frame: usize) -> (tempfile::TempDir, Pool) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("z.py"), source).expect("write module");
    let (pool, started) = Pool::start(z_spec(dir.path(), workers, max_frame));
    started.expect("python3 starts");
    (dir, pool)
}

/// Module `z` in `dir`, its file imported as it is when a worker starts.
fn z_spec(dir: &std::path::Path, workers: usize, max_frame: usize) -> WorkerSpec {
    WorkerSpec {
        module: "z".into(),
        path: dir.join("z.py"),
        python: "python3".into(),
        workers,
        max_frame,
        source: None,
        headers: None,
    }
}

/// Reloads `pool`, a [`pool`] of `workers` in `dir`, on its file as it is now.
fn reload(pool: &Pool, dir: &tempfile::TempDir, workers: usize) {
    pool.reload(z_spec(dir.path(), workers, common::conn::DEFAULT_MAX_FRAME));
}

/// Runs `test` in smol, failing it rather than hanging.
fn run<T>(test: impl Future<Output = T>) -> T {
    run_within(Duration::from_secs(30), test)
}

/// Runs `test` in smol, failing it if it is not done within `limit`.
fn run_within<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    smol::block_on(test.or(async {
        Timer::after(limit).await;
        panic!("test timed out");
    }))
}

/// Completes once `done` says so, looking every 20 ms.
async fn wait_until(done: impl Fn() -> bool) {
    while !done() {
        sleep(Duration::from_millis(20)).await;
    }
}

async fn call(pool: &Pool, function: &str, args: Value) -> Result<Value, RemoteError> {
    let args = args.as_array().cloned().unwrap_or_default();
    call_with(pool, function, args, Map::new()).await
}

/// Submits a call and waits for what its `done` is handed.
async fn call_with(
    pool: &Pool,
    function: &str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
) -> Result<Value, RemoteError> {
    call_within(pool, function, args, kwargs, 30_000).await
}

/// Submits a call with a timeout and waits for what its `done` is handed.
async fn call_within(
    pool: &Pool,
    function: &str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    timeout_ms: u64,
) -> Result<Value, RemoteError> {
    value(call_raw(pool, function, args, kwargs, timeout_ms).await)
}

/// Submits a call with a timeout and waits for the answer, its value as the worker wrote it.
async fn call_raw(
    pool: &Pool,
    function: &str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    timeout_ms: u64,
) -> Answer {
    let (tx, rx) = channel::bounded(1);
    let done = Box::new(move |answer| drop(tx.try_send(answer)));
    pool.submit(
        request(function, args, kwargs, timeout_ms),
        Caller::Stub(0),
        done,
    );
    rx.recv().await.expect("every call is answered")
}

/// An answer's value read.
fn value(answer: Answer) -> Result<Value, RemoteError> {
    answer.map(|json| json.read().expect("a value this side reads"))
}

fn request(function: &str, args: Vec<Value>, kwargs: Map<String, Value>, ms: u64) -> Call {
    Call {
        id: 0,
        module: "z".into(),
        function: function.into(),
        args: args.into_iter().map(Json::from).collect(),
        kwargs: kwargs.into_iter().map(|(k, v)| (k, v.into())).collect(),
        timeout_ms: ms,
        caller: None,
    }
}

const MODULE: &str = r#"
import asyncio, os, time

def add(a, b=0):
    return a + b

def div(a, b):
    return a / b

def noisy():
    print("hello from noisy")
    os.write(1, b"raw write to fd 1\n")
    return "quiet"

def die():
    os._exit(3)

def pid():
    return os.getpid()

def fork_and_die():
    if os.fork() == 0:  # the child keeps the protocol pipes open
        time.sleep(3)
        os._exit(0)
    os._exit(4)

def slow():
    time.sleep(30)

def a_set():
    return {1, 2}

def nan():
    return float("nan")

def int_keys():
    return {1: 2}

def pair():
    return (1.5, "é", None)

async def later(x):
    await asyncio.sleep(0.01)
    return x * 2

def stop():
    raise StopIteration("from the module")

def big():
    return 2 ** 70

def widest():
    return [2 ** 64 - 1, -2 ** 63]

def big_inside():
    return [1, {"n": -2 ** 64}]

def surrogate():
    return "ok\ud800"

def deep():
    v = []
    for _ in range(200):
        v = [v]
    return v

def yes():
    return True

def nothing():
    return None

VERSION = "1.0"
"#;

#[test]
fn result_and_exception() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        assert_eq!(call(&pool, "add", json!([2, 3])).await, Ok(json!(5)));
        let error = call(&pool, "div", json!([1, 0])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Exception);
        assert_eq!(error.exc_type.as_deref(), Some("ZeroDivisionError"));
        assert_eq!(error.message, "division by zero");
        let traceback = error.traceback.unwrap_or_default();
        assert!(traceback.contains("in div"), "{traceback}");
        assert!(traceback.contains("ZeroDivisionError"), "{traceback}");
    });
}

#[test]
fn keyword_args() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let mut kwargs = Map::new();
        kwargs.insert("b".into(), json!(40));
        let result = call_with(&pool, "add", vec![json!(2)], kwargs).await;
        assert_eq!(result, Ok(json!(42)));
    });
}

#[test]
fn prints_do_not_break_calls() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        assert_eq!(call(&pool, "noisy", json!([])).await, Ok(json!("quiet")));
        assert_eq!(call(&pool, "add", json!([1, 1])).await, Ok(json!(2)));
    });
}

#[test]
fn an_answer_over_the_frame_limit_is_refused_with_its_size_and_the_worker_goes_on() {
    const LONG: &str = "def long(n):\n    return 'x' * n\n\ndef oops(n):\n    raise ValueError('y' * n)\n\nimport os\ndef pid():\n    return os.getpid()\n";
    let (_dir, pool) = pool_framed(LONG, 1, 4096);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        // Read to its end but not kept: the stub's memory does not grow with it.
        let error = call(&pool, "long", json!([20_000_000])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::TooLarge);
        let said = "the result is 20000002 bytes, over the frame limit of 4096 bytes";
        assert!(error.message.starts_with(said), "{}", error.message);
        let error = call(&pool, "oops", json!([10_000])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::TooLarge);
        assert!(
            error.message.contains("over the frame limit"),
            "{}",
            error.message
        );
        assert_eq!(call(&pool, "long", json!([3])).await, Ok(json!("xxx")));
        assert_eq!(call(&pool, "pid", json!([])).await, Ok(pid));
    });
}

#[test]
fn dying_worker_fails_the_call_and_is_restarted() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let error = call(&pool, "die", json!([])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::WorkerFailed);
        assert!(error.message.contains("module 'z'"), "{}", error.message);
        assert!(
            error.message.contains("exit status: 3"),
            "{}",
            error.message
        );
        assert!(error.message.contains("call to die"), "{}", error.message);
        assert_eq!(call(&pool, "add", json!([1, 2])).await, Ok(json!(3)));
    });
}

/// A call the stub let through that names no function of the module (a reload took it away
/// while the call was queued) fails as a call to an unknown function does at the stub, not as a
/// remote `AttributeError`; a module's own `AttributeError` stays an exception.
#[test]
fn a_call_to_a_function_the_module_does_not_have_fails_as_an_unknown_function() {
    const MODULE: &str = "def attr():\n    raise AttributeError('its own')\n";
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let error = call(&pool, "gone", json!([])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownFunction, "{error:?}");
        assert_eq!(error.message, "module 'z' has no function 'gone'");
        let error = call(&pool, "attr", json!([])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Exception, "{error:?}");
        assert_eq!(error.exc_type.as_deref(), Some("AttributeError"));
    });
}

#[test]
fn a_keyboard_interrupt_or_other_base_exception_fails_its_call_and_the_worker_goes_on() {
    const RAISES: &str = "import os\nclass Stop(BaseException):\n    pass\n\ndef kbi():\n    raise KeyboardInterrupt('from the module')\n\ndef stop():\n    raise Stop('stopped')\n\ndef pid():\n    return os.getpid()\n";
    let (_dir, pool) = pool(RAISES, 1);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        for (function, exc_type, message) in [
            ("kbi", "KeyboardInterrupt", "from the module"),
            ("stop", "Stop", "stopped"),
        ] {
            let error = call(&pool, function, json!([])).await.unwrap_err();
            assert_eq!(error.kind, ErrorKind::Exception, "{function}: {error:?}");
            assert_eq!(error.exc_type.as_deref(), Some(exc_type));
            assert_eq!(error.message, message);
        }
        // The same worker, its state kept.
        assert_eq!(call(&pool, "pid", json!([])).await, Ok(pid));
    });
}

#[test]
fn an_exception_whose_text_holds_a_lone_surrogate_fails_its_call_and_the_worker_goes_on() {
    // A name from os.listdir of a file whose name is not UTF-8 holds one ('\udcff').
    const RAISES: &str = "import os\ndef bad_name():\n    raise ValueError('no file ' + os.fsdecode(b'\\xff'))\n\ndef pid():\n    return os.getpid()\n";
    let (_dir, pool) = pool(RAISES, 1);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        let error = call(&pool, "bad_name", json!([])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Exception, "{error:?}");
        assert_eq!(error.exc_type.as_deref(), Some("ValueError"));
        assert_eq!(error.message, "no file \\udcff");
        assert_eq!(call(&pool, "pid", json!([])).await, Ok(pid));
    });
}

#[test]
fn non_json_result_is_a_clear_type_error() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let error = call(&pool, "a_set", json!([])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::Exception);
        assert_eq!(error.exc_type.as_deref(), Some("TypeError"));
        assert!(error.message.contains("of type set"), "{}", error.message);
        for (function, says) in [
            ("nan", "(nan) is not JSON"),
            ("int_keys", "a key of type int"),
            ("big", "result is an integer of 71 bits"),
            ("big_inside", "result[1]['n'] is an integer below -2**63"),
        ] {
            let error = call(&pool, function, json!([])).await.unwrap_err();
            assert_eq!(error.exc_type.as_deref(), Some("TypeError"), "{function}");
            assert!(
                error.message.contains(says),
                "{function}: {}",
                error.message
            );
        }
        let pair = call(&pool, "pair", json!([])).await.unwrap();
        assert_eq!(pair, json!([1.5, "é", null]));
    });
}

#[test]
fn a_result_only_python_can_read_is_carried_as_written() {
    // Text, not a tree, between the worker and the caller: a lone surrogate or nesting deeper
    // than a Rust reader takes goes through for a Python caller to read.
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let surrogate = call_raw(&pool, "surrogate", Vec::new(), Map::new(), 30_000).await;
        assert_eq!(surrogate.unwrap().text(), r#""ok\ud800""#);
        let deep = call_raw(&pool, "deep", Vec::new(), Map::new(), 30_000).await;
        let deep = deep.unwrap();
        assert!(deep.text().starts_with(&"[".repeat(200)), "{}", deep.text());
        assert!(
            deep.read::<Value>().is_err(),
            "deeper than serde_json reads"
        );
    });
}

#[test]
fn every_kind_of_result_comes_back_as_it_was() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        for (function, value) in [
            ("widest", json!([u64::MAX, i64::MIN])),
            ("yes", json!(true)),
            ("nothing", json!(null)),
            ("VERSION", json!("1.0")),
        ] {
            let got = call(&pool, function, json!([])).await;
            assert_eq!(got, Ok(value), "{function}");
        }
        // Raised by the module, not a line the worker could not read.
        let error = call(&pool, "stop", json!([])).await.unwrap_err();
        assert_eq!(error.exc_type.as_deref(), Some("StopIteration"));
        assert_eq!(error.message, "from the module");
    });
}

#[test]
fn import_error_fails_calls_quickly() {
    let (_dir, pool) = pool("def broken(:\n", 2);
    run(async {
        for _ in 0..3 {
            let started = Instant::now();
            let error = call(&pool, "broken", json!([])).await.unwrap_err();
            assert_eq!(error.kind, ErrorKind::WorkerFailed);
            assert_eq!(error.exc_type.as_deref(), Some("SyntaxError"));
            assert!(error.message.contains("module 'z'"), "{}", error.message);
            assert!(started.elapsed() < Duration::from_secs(5));
        }
    });
}

/// Imports only once the test has created `go` beside it.
const WAITS_FOR_GO: &str = r#"
import os, time
here = os.path.dirname(os.path.abspath(__file__))
while not os.path.exists(os.path.join(here, "go")):
    time.sleep(0.02)

def add(a, b):
    return a + b
"#;

/// Put before `WAITS_FOR_GO`: the first import fails at once; the next writes `retrying`.
const FAILS_FIRST: &str = r#"
import os
here = os.path.dirname(os.path.abspath(__file__))
if not os.path.exists(os.path.join(here, "tried")):
    open(os.path.join(here, "tried"), "w").close()
    raise ImportError("the first import fails")
open(os.path.join(here, "retrying"), "w").close()
"#;

/// Submits a call now; its answer comes on the channel returned.
fn submit(pool: &Pool, function: &str, args: Value, timeout_ms: u64) -> Receiver<Answer> {
    let (tx, rx) = channel::bounded(1);
    let done = Box::new(move |answer| drop(tx.try_send(answer)));
    let args = args.as_array().cloned().unwrap_or_default();
    pool.submit(
        request(function, args, Map::new(), timeout_ms),
        Caller::Stub(0),
        done,
    );
    rx
}

/// The answer on `rx`, the pool ticking meanwhile; a panic if `timeout_ms` passes first (the
/// caller's own timeout would have fired).
async fn answer_within(pool: &Pool, rx: Receiver<Answer>, timeout_ms: u64) -> Answer {
    let too_late = async {
        sleep(Duration::from_millis(timeout_ms)).await;
        panic!("no answer within the call's timeout of {timeout_ms} ms");
    };
    let answer = async { rx.recv().await.expect("every call is answered") };
    answer.or(too_late).or(tick(pool)).await
}

#[test]
fn a_call_waiting_for_a_slow_import_is_told_so_before_its_timeout() {
    let (dir, pool) = pool(WAITS_FOR_GO, 1);
    run(async {
        let patient = submit(&pool, "add", json!([1, 2]), 60_000);
        let hasty = submit(&pool, "add", json!([2, 3]), 6_000);
        // It used to wait for the import until its caller's own timeout, told nothing.
        let error = value(answer_within(&pool, hasty, 6_000).await).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Timeout);
        let message = &error.message;
        let told = "module 'z' is still starting: its worker has been importing it for ";
        assert!(message.starts_with(told), "{message}");
        assert!(message.ends_with(" s"), "{message}");
        // A call that can still be served waits for the import.
        std::fs::write(dir.path().join("go"), "").expect("write go");
        let sum = value(answer_within(&pool, patient, 60_000).await);
        assert_eq!(sum, Ok(json!(3)));
    });
}

#[test]
fn a_call_during_a_retry_waits_for_it_rather_than_fail_with_the_last_error() {
    let (dir, pool) = pool(&format!("{FAILS_FIRST}{WAITS_FOR_GO}"), 1);
    run(async {
        let error = call(&pool, "add", json!([1, 2])).await.unwrap_err();
        assert_eq!(error.exc_type.as_deref(), Some("ImportError"));
        wait_until(|| dir.path().join("retrying").exists()).await;
        // Both come while the retry imports: they used to fail at once with the first error.
        let patient = submit(&pool, "add", json!([1, 2]), 60_000);
        let hasty = submit(&pool, "add", json!([2, 3]), 4_000);
        let error = value(answer_within(&pool, hasty, 4_000).await).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Timeout);
        let message = &error.message;
        assert!(message.contains("is still starting"), "{message}");
        let before = "(the start before failed: ImportError: module 'z' failed to import: the \
                      first import fails)";
        assert!(message.ends_with(before), "{message}");
        std::fs::write(dir.path().join("go"), "").expect("write go");
        let sum = value(answer_within(&pool, patient, 60_000).await);
        assert_eq!(sum, Ok(json!(3)));
    });
}

/// Imported by one worker at a time: the others fail to import while it holds its lock, and
/// write `refused`.
const ONE_AT_A_TIME: &str = r#"
import fcntl, os, time
here = os.path.dirname(os.path.abspath(__file__))
_lock = open(__file__)
try:
    fcntl.flock(_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    open(os.path.join(here, "refused"), "w").close()
    raise ImportError("another worker holds the lock")

def nap(started):
    open(started, "w").close()
    time.sleep(1)
    return "rested"

def add(a, b):
    return a + b
"#;

#[test]
fn a_call_waits_for_a_busy_worker_rather_than_fail_with_another_ones_error() {
    let (dir, pool) = pool(ONE_AT_A_TIME, 2);
    let started = dir.path().join("started");
    run(async {
        assert_eq!(call(&pool, "add", json!([1, 2])).await, Ok(json!(3)));
        wait_until(|| dir.path().join("refused").exists()).await;
        let napping = submit(&pool, "nap", json!([started.display().to_string()]), 30_000);
        wait_until(|| started.exists()).await;
        // The other worker keeps failing to import: it used to take this call and fail it.
        assert_eq!(call(&pool, "add", json!([2, 3])).await, Ok(json!(5)));
        let rested = napping.recv().await.expect("every call is answered");
        assert_eq!(value(rested), Ok(json!("rested")));
    });
}

/// Exits by itself (status 7) a moment after each start, calls or not; `starts` counts them.
const CRASHES_SOON: &str = r#"
import os, threading, time
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "starts"), "a") as f:
    f.write("started\n")

def _die():
    time.sleep(0.3)
    os._exit(7)

threading.Thread(target=_die, daemon=True).start()

def add(a, b):
    return a + b
"#;

#[test]
fn calls_to_a_worker_that_keeps_crashing_fail_at_once_with_its_exit_status() {
    let (dir, pool) = pool(CRASHES_SOON, 1);
    let starts = || std::fs::read_to_string(dir.path().join("starts")).unwrap_or_default();
    run_within(Duration::from_secs(90), async {
        // Two quick exits in a row make a crash loop.
        wait_until(|| starts().lines().count() >= 3).await;
        loop {
            // One that comes while a worker is up runs on it; between two, it used to wait for
            // the next worker.
            match call(&pool, "add", json!([1, 2])).await {
                Err(error) if error.message.contains("keeps crashing") => {
                    assert_eq!(error.kind, ErrorKind::WorkerFailed);
                    assert!(error.message.contains("module 'z'"), "{}", error.message);
                    assert!(
                        error.message.contains("exit status: 7"),
                        "{}",
                        error.message
                    );
                    assert!(error.message.contains("restart"), "{}", error.message);
                    break;
                }
                _ => sleep(Duration::from_millis(50)).await,
            }
        }
    });
}

#[test]
fn a_missing_interpreter_is_told_at_start_and_in_each_call_until_it_is_there() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("z.py"), MODULE).expect("write module");
    let python = dir.path().join("python");
    let named = format!("`{}`", python.display());
    let spec = WorkerSpec {
        python: python.to_str().expect("utf-8 path").into(),
        ..z_spec(dir.path(), 2, common::conn::DEFAULT_MAX_FRAME)
    };
    let (pool, started) = Pool::start(spec);
    let error = started.expect_err("no interpreter there");
    assert!(error.message.contains(&named), "{}", error.message);
    run_within(Duration::from_secs(90), async {
        let error = call(&pool, "add", json!([1, 2])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::WorkerFailed);
        assert!(error.message.contains(&named), "{}", error.message);
        assert!(error.message.contains("module 'z'"), "{}", error.message);
        // Put in place whole, executable: the next try runs it.
        let script = dir.path().join("python.new");
        std::fs::write(&script, "#!/bin/sh\nexec python3 \"$@\"\n").expect("write script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&script, &python).expect("rename");
        loop {
            match call(&pool, "add", json!([1, 2])).await {
                Ok(sum) => break assert_eq!(sum, json!(3)),
                Err(error) => assert!(error.message.contains(&named), "{}", error.message),
            }
            sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn many_concurrent_calls_on_two_workers() {
    let (_dir, pool) = pool(MODULE, 2);
    run(async {
        let calls: Vec<_> = (0..200)
            .map(|i| {
                let pool = pool.clone();
                smol::spawn(async move { (i, call(&pool, "add", json!([i, 1000])).await) })
            })
            .collect();
        for task in calls {
            let (i, result) = task.await;
            assert_eq!(result, Ok(json!(i + 1000)));
        }
    });
}

/// Submits `count` calls of `function` at once, before any is answered; their answers in the
/// order of submission.
async fn burst(pool: &Pool, function: &str, count: usize) -> Vec<Result<Value, RemoteError>> {
    let (tx, rx) = channel::unbounded();
    for i in 0..count {
        let tx = tx.clone();
        let done = Box::new(move |answer| drop(tx.try_send((i, answer))));
        pool.submit(
            request(function, Vec::new(), Map::new(), 30_000),
            Caller::Stub(0),
            done,
        );
    }
    let mut answers: Vec<_> = (0..count).map(|_| None).collect();
    for _ in 0..count {
        let (i, answer) = rx.recv().await.expect("every call is answered");
        answers[i] = Some(value(answer));
    }
    answers.into_iter().flatten().collect()
}

#[test]
fn calls_run_in_the_order_they_came_whether_written_at_once_or_queued() {
    let counter = "n = 0\n\ndef next_n():\n    global n\n    n += 1\n    return n\n";
    let (_dir, pool) = pool(counter, 1);
    run(async {
        let mut expected = 0;
        for count in [1, 1, 50, 3, 1, 200] {
            // The first call of each burst finds the worker idle and is written straight to
            // it; the rest queue behind it.
            for answer in burst(&pool, "next_n", count).await {
                expected += 1;
                assert_eq!(answer, Ok(json!(expected)));
            }
        }
    });
}

#[test]
fn a_call_is_written_straight_to_an_idle_worker_only_past_an_empty_queue() {
    let spec = z_spec(std::path::Path::new(""), 1, common::conn::DEFAULT_MAX_FRAME);
    // The supervisor waits for this never-ending previous generation: it takes nothing.
    let (_previous_runs, previous) = channel::bounded(1);
    let generation = Generation::start(&spec, previous, None);
    let (reader, writer) = std::io::pipe().unwrap();
    let stdin = Arc::new(Async::new(File::from(OwnedFd::from(writer))).unwrap());
    let job = |function: &str| Job {
        caller: Caller::Stub(0),
        id: 0,
        module: Arc::from("z"),
        function: function.into(),
        args: vec![json!(1).into()],
        kwargs: Default::default(),
        deadline_ms: 7,
        tell_at_ms: 7,
        done: Some(Box::new(|_| {})),
    };
    let lane = &generation.lanes[0];

    assert!(generation.submit(job("first")).is_none());
    lane.open(&stdin);
    assert!(generation.submit(job("second")).is_none());
    assert!(
        lane.close().is_empty(),
        "the second call waits behind the first"
    );
    assert_eq!(generation.jobs.len(), 2);

    drop(generation.stop());
    let (_previous_runs, previous) = channel::bounded(1);
    let generation = Generation::start(&spec, previous, None);
    let lane = &generation.lanes[0];
    lane.open(&stdin);
    assert!(generation.submit(job("third")).is_none());
    assert!(generation.submit(job("fourth")).is_none());
    let handed = lane.close();
    assert_eq!(handed.len(), 1, "one call in flight, the next one queued");
    assert_eq!(handed[0].1.function, "third");
    assert_eq!(generation.jobs.len(), 1);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(reader), &mut line).unwrap();
    assert_eq!(line, format!("[{},\"third\",[1],7]\n", handed[0].0));
    drop(generation.stop());
}

#[test]
fn async_function() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        assert_eq!(call(&pool, "later", json!([21])).await, Ok(json!(42)));
    });
}

fn alive(pid: &Value) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits up to 5 s for process `pid` to be gone.
async fn gone(pid: &Value) -> bool {
    for _ in 0..50 {
        if !alive(pid) {
            return true;
        }
        Timer::after(Duration::from_millis(100)).await;
    }
    false
}

#[test]
fn dropping_the_pool_kills_the_worker() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        assert!(alive(&pid));
        drop(pool);
        assert!(gone(&pid).await, "worker {pid} still alive");
    });
}

#[test]
fn a_worker_outlives_the_thread_that_started_it() {
    // A worker tied to the thread that forked it (`PR_SET_PDEATHSIG`) would be killed here.
    let (thread, _dir, pool, pid) = std::thread::spawn(|| {
        let thread = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        let (dir, pool) = pool(MODULE, 1);
        let pid = run(call(&pool, "pid", json!([]))).expect("pid");
        (thread, dir, pool, pid)
    })
    .join()
    .expect("the thread");
    run(async {
        // The thread's /proc entry goes only once its end has sent what it sends.
        wait_until(|| !std::path::Path::new("/proc").join(&thread).exists()).await;
        assert_eq!(call(&pool, "pid", json!([])).await, Ok(pid));
    });
}

#[test]
fn stop_fails_the_call_in_flight_and_kills_the_worker() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        let slow = smol::spawn({
            let pool = pool.clone();
            async move { call(&pool, "slow", json!([])).await }
        });
        Timer::after(Duration::from_millis(200)).await;
        pool.stop("was stopped");
        let error = slow.await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::WorkerFailed);
        assert!(error.message.contains("call to slow"), "{}", error.message);
        assert!(gone(&pid).await, "worker {pid} still alive");
    });
}

#[test]
fn worker_dying_while_its_child_holds_the_pipes_does_not_hang() {
    let (_dir, pool) = pool(MODULE, 1);
    run(async {
        let error = call(&pool, "fork_and_die", json!([])).await.unwrap_err();
        assert!(
            error.message.contains("exit status: 4"),
            "{}",
            error.message
        );
        assert_eq!(call(&pool, "add", json!([1, 2])).await, Ok(json!(3)));
    });
}

#[test]
fn answers_are_checked() {
    let null = parse_answer(r#"{"id": 7, "ok": null}"#, 7);
    assert_eq!(null.expect("an answer").expect("a result").text(), "null");
    let error = r#"{"id": 7, "error": {"type": "E", "message": "m", "traceback": "t"}}"#;
    let error = parse_answer(error, 7).expect("valid").unwrap_err();
    assert_eq!(
        (error.exc_type.as_deref(), error.message.as_str()),
        (Some("E"), "m")
    );
    let python_only = parse_answer(r#"{"id":7,"ok":"\ud800"}"#, 7).expect("an answer");
    assert_eq!(python_only.expect("a result").text(), r#""\ud800""#);
    let other_call = r#"{"id":6,"ok":"\ud800"}"#;
    for line in [
        r#"{"id": 6, "ok": 1}"#,
        "hello",
        r#"{"id": 7}"#,
        "[7]",
        other_call,
    ] {
        assert!(parse_answer(line, 7).is_err(), "{line}");
    }
}

/// Holds a lock only one process may hold, like an open instrument, and returns `version`.
/// Version `version` of a module that holds a lock while imported (as one holding an
/// instrument would), and whose `nap` says it started by creating the file it is given.
fn locking(version: u32) -> String {
    let lock =
        "import fcntl, time\n_lock = open(__file__)\nfcntl.flock(_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)\n";
    let nap = "def nap(started):\n    open(started, 'w').close()\n    time.sleep(0.5)\n";
    format!("{lock}def v():\n    return {version}\n{nap}    return {version}\n")
}

#[test]
fn reload_restarts_after_the_old_worker_is_gone_and_stop_fails_calls() {
    let (dir, pool) = pool(&locking(1), 1);
    run(async {
        assert_eq!(call(&pool, "v", json!([])).await, Ok(json!(1)));
        std::fs::write(dir.path().join("z.py"), locking(2)).expect("write");
        reload(&pool, &dir, 1);
        assert_eq!(call(&pool, "v", json!([])).await, Ok(json!(2)));
        pool.stop("was stopped");
        let error = call(&pool, "v", json!([])).await.unwrap_err();
        assert_eq!(error.kind, ErrorKind::WorkerFailed);
        reload(&pool, &dir, 1);
        assert_eq!(call(&pool, "v", json!([])).await, Ok(json!(2)));
    });
}

#[test]
fn a_reload_lets_the_calls_running_finish_on_the_old_code() {
    let (dir, pool) = pool(&locking(1), 2);
    let started = dir.path().join("started");
    run(async {
        let running = {
            let (pool, started) = (pool.clone(), started.display().to_string());
            smol::spawn(async move { call(&pool, "nap", json!([started])).await })
        };
        wait_until(|| started.exists()).await;
        std::fs::write(dir.path().join("z.py"), locking(2)).expect("write");
        reload(&pool, &dir, 2);
        // The new workers import once the old ones are gone (the lock says so), after the nap.
        assert_eq!(call(&pool, "v", json!([])).await, Ok(json!(2)));
        assert_eq!(running.await, Ok(json!(1)));
        // A reload while the last one still drains waits for both.
        std::fs::write(dir.path().join("z.py"), locking(3)).expect("write");
        reload(&pool, &dir, 2);
        std::fs::write(dir.path().join("z.py"), locking(4)).expect("write");
        reload(&pool, &dir, 2);
        assert_eq!(call(&pool, "v", json!([])).await, Ok(json!(4)));
    });
}

/// Calls queued while a reload is made were checked against the old headers: each is checked
/// again against the new ones, and one they refuse fails as the stub fails such a call, not
/// as the Python error of running it (a `TypeError`, or the worker's unknown function).
#[test]
fn a_reload_fails_the_queued_calls_its_new_headers_refuse_as_the_stub_would() {
    let pair = |params: &str| format!("def pair({params}):\n    return [{params}]\n");
    let v1 = format!("{}{}def gone():\n    return 0\n", locking(1), pair("a, b"));
    let v2 = format!("{}{}", locking(2), pair("a"));
    let (dir, pool) = pool(&v1, 1);
    let started = dir.path().join("started");
    run(async {
        let running = submit(&pool, "nap", json!([started.display().to_string()]), 30_000);
        wait_until(|| started.exists()).await;
        // Queued behind the nap: checked against v1's headers, as the stub checks them.
        let queued = [
            submit(&pool, "pair", json!([1, 2]), 30_000),
            submit(&pool, "gone", json!([]), 30_000),
            submit(&pool, "v", json!([]), 30_000),
        ];
        std::fs::write(dir.path().join("z.py"), &v2).expect("write");
        let headers = common::pyparse::parse_module("z", &v2).expect("v2 parses");
        pool.reload(WorkerSpec {
            headers: Some(Arc::new(headers)),
            ..z_spec(dir.path(), 1, common::conn::DEFAULT_MAX_FRAME)
        });
        let [pair, gone, v] = queued.map(|rx| async move { rx.recv().await.expect("answered") });
        let error = value(pair.await).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadArguments, "{error:?}");
        assert!(
            error.message.contains("pair() takes 1 positional"),
            "{error:?}"
        );
        let error = value(gone.await).unwrap_err();
        assert_eq!(error.kind, ErrorKind::UnknownFunction, "{error:?}");
        assert_eq!(
            value(v.await),
            Ok(json!(2)),
            "a call that still fits runs on v2"
        );
        assert_eq!(value(running.recv().await.expect("answered")), Ok(json!(1)));
    });
}

const OVERRUNS: &str = r#"
import asyncio, signal, time

one_at_a_time = asyncio.Semaphore(1)  # bound to the loop that first waits on it
cleaned = []

async def one():
    async with one_at_a_time:
        await asyncio.sleep(0.01)

async def limited(x):
    await asyncio.gather(one(), one())
    return x

async def async_nap(seconds):
    try:
        await asyncio.sleep(seconds)
    finally:
        cleaned.append(seconds)

def cleanups():
    return cleaned

count = 0

def counter():
    global count
    count += 1
    return count

def nap(seconds):
    time.sleep(seconds)
    return seconds

def stubborn():
    try:
        time.sleep(30)
    except BaseException:  # swallows the interrupt too
        time.sleep(30)

def add(a, b):
    return a + b

def echo(x):
    return x
"#;

/// Checks the pool for overdue calls as the stub's tick does, for as long as it is awaited.
async fn tick<T>(pool: &Pool) -> T {
    loop {
        Timer::after(Duration::from_millis(20)).await;
        pool.check_overdue();
    }
}

#[test]
fn a_call_past_its_timeout_is_interrupted_and_the_worker_keeps_its_state() {
    let (_dir, pool) = pool(OVERRUNS, 1);
    run(async {
        assert_eq!(call(&pool, "counter", json!([])).await, Ok(json!(1)));
        let started = Instant::now();
        let nap = call_within(&pool, "nap", vec![json!(30)], Map::new(), 200);
        let error = nap.or(tick(&pool)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(error.exc_type.as_deref(), Some("CallTimedOut"));
        assert_eq!(error.kind, ErrorKind::Timeout);
        assert!(error.message.contains("call to nap"), "{}", error.message);
        let traceback = error.traceback.unwrap_or_default();
        assert!(traceback.contains("in nap"), "{traceback}");
        // The same process, its module state intact.
        assert_eq!(call(&pool, "counter", json!([])).await, Ok(json!(2)));
        // Checking an idle worker, or one within its time, interrupts nothing.
        pool.check_overdue();
        let quick = call_within(&pool, "nap", vec![json!(0.1)], Map::new(), 5_000);
        assert_eq!(quick.or(tick(&pool)).await, Ok(json!(0.1)));
    });
}

#[test]
fn async_functions_share_one_event_loop_and_one_past_its_timeout_is_cancelled() {
    let (_dir, pool) = pool(OVERRUNS, 1);
    run(async {
        for x in [1, 2] {
            assert_eq!(call(&pool, "limited", json!([x])).await, Ok(json!(x)));
        }
        let nap = call_within(&pool, "async_nap", vec![json!(30)], Map::new(), 200);
        let error = nap.or(tick(&pool)).await.unwrap_err();
        assert_eq!(error.exc_type.as_deref(), Some("CallTimedOut"));
        // Its `finally` ran before the answer, and the loop still serves.
        assert_eq!(call(&pool, "cleanups", json!([])).await, Ok(json!([30])));
        assert_eq!(call(&pool, "limited", json!([3])).await, Ok(json!(3)));
    });
}

#[test]
fn a_call_whose_timeout_passes_while_it_waits_is_not_run() {
    let (_dir, pool) = pool(OVERRUNS, 1);
    run(async {
        let (tx, rx) = channel::unbounded();
        for (function, args, ms) in [("nap", json!([0.5]), 5_000), ("counter", json!([]), 100)] {
            let tx = tx.clone();
            let done = Box::new(move |answer| drop(tx.try_send((function, answer))));
            let args = args.as_array().cloned().unwrap_or_default();
            pool.submit(
                request(function, args, Map::new(), ms),
                Caller::Stub(0),
                done,
            );
        }
        let mut answers = HashMap::new();
        for _ in 0..2 {
            let (function, answer) = rx.recv().await.unwrap();
            answers.insert(function, value(answer));
        }
        assert_eq!(answers["nap"], Ok(json!(0.5)));
        let error = answers["counter"].clone().unwrap_err();
        assert_eq!(error.exc_type.as_deref(), Some("CallTimedOut"));
        assert_eq!(error.kind, ErrorKind::Timeout);
        assert!(error.message.contains("not run"), "{}", error.message);
        assert_eq!(call(&pool, "counter", json!([])).await, Ok(json!(1)));
    });
}

#[test]
fn a_worker_that_stays_in_a_call_past_its_timeout_is_killed_and_the_calls_behind_run() {
    let (_dir, pool) = pool(OVERRUNS, 1);
    run(async {
        assert_eq!(call(&pool, "counter", json!([])).await, Ok(json!(1)));
        let stubborn = call_within(&pool, "stubborn", Vec::new(), Map::new(), 100);
        let behind = call_within(&pool, "add", vec![json!(1), json!(2)], Map::new(), 20_000);
        let both = smol::future::zip(stubborn, behind); // submitted in this order
        let (error, behind) = both.or(tick(&pool)).await;
        let error = error.unwrap_err();
        assert_eq!(error.kind, ErrorKind::WorkerFailed);
        let message = &error.message;
        assert!(
            message.contains("was killed: the call to stubborn"),
            "{message}"
        );
        assert!(
            message.contains(&format!("{KILL_AFTER_MS} ms past its timeout")),
            "{message}"
        );
        assert_eq!(
            behind,
            Ok(json!(3)),
            "the call behind it runs on the new worker"
        );
        assert_eq!(
            call(&pool, "counter", json!([])).await,
            Ok(json!(1)),
            "a new process"
        );
    });
}

/// Submits `calls` (function, arguments, timeout in ms) at once, in this order, before any is
/// answered, the pool ticking meanwhile; their answers in that order.
async fn submit_all(pool: &Pool, calls: &[(&str, Value, u64)]) -> Vec<Answer> {
    let receivers: Vec<_> = calls
        .iter()
        .map(|(function, args, ms)| submit(pool, function, args.clone(), *ms))
        .collect();
    let answers = async {
        let mut answers = Vec::new();
        for rx in receivers {
            answers.push(rx.recv().await.expect("every call is answered"));
        }
        answers
    };
    answers.or(tick(pool)).await
}

/// Many short calls, so that the worker is written several at once (see `write_ahead`), then
/// `long` behind them: requests and answers over what a pipe holds (64 KiB).
fn short_calls_then<'a>(long: &[(&'a str, Value, u64)]) -> Vec<(&'a str, Value, u64)> {
    let short = (0..100).map(|i| ("echo", json!([i]), 30_000));
    short.chain(long.iter().cloned()).collect()
}

#[test]
fn long_answers_to_calls_written_at_once_with_long_requests_do_not_wedge_the_worker() {
    let (_dir, pool) = pool(OVERRUNS, 1);
    // Each long answer fills the worker's stdout while the stub is still writing the next long
    // request to its stdin: the stub must read answers meanwhile, or neither side moves again.
    let long = "y".repeat(300_000);
    let echo = ("echo", json!([long]), 30_000);
    let calls = short_calls_then(&vec![echo; 8]);
    run(async {
        for (i, answer) in submit_all(&pool, &calls).await.into_iter().enumerate() {
            assert_eq!(value(answer), Ok(calls[i].1[0].clone()), "call {i}");
        }
        assert_eq!(call(&pool, "counter", json!([])).await, Ok(json!(1)));
    });
}

#[test]
fn a_worker_stuck_in_a_call_while_long_requests_are_written_is_killed_and_they_run() {
    let (_dir, pool) = pool(OVERRUNS, 1);
    // The worker never reads the long requests written after the stuck call: it is killed all
    // the same, and they run on the new worker.
    let long = "y".repeat(300_000);
    let echo = ("echo", json!([long]), 60_000);
    let calls = short_calls_then(&[("stubborn", json!([]), 3_000), echo.clone(), echo]);
    run_within(Duration::from_secs(60), async {
        let answers = submit_all(&pool, &calls).await;
        for (i, answer) in answers[..100].iter().enumerate() {
            assert_eq!(value(answer.clone()), Ok(json!(i)), "call {i}");
        }
        let error = value(answers[100].clone()).unwrap_err();
        assert!(
            error.message.contains("was killed: the call to stubborn"),
            "{}",
            error.message
        );
        for answer in &answers[101..] {
            assert_eq!(value(answer.clone()), Ok(json!(long)));
        }
    });
}

/// `worker.py` run by hand with `args` (a lifeline, then its own), in a process group of its
/// own, led by `sh` when `leads` is false: nothing it kills can be the test's.
fn run_by_hand(args: &[&str], leads: bool) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("z.py"), "def f():\n    return 1\n").expect("write module");
    let mut command = if leads {
        Command::new("python3")
    } else {
        // Not `exec`: sh stays the leader, and says whether it outlived python.
        let mut sh = Command::new("sh");
        sh.args(["-c", "\"$@\"; echo \"sh survived $?\"", "sh", "python3"]);
        sh
    };
    command.args(["-u", "-c", SCRIPT]).args(args);
    // stdin: a pipe, a lifeline that passes for one (its other end closes at once).
    let output = command
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .process_group(0);
    output.output().expect("python3 runs")
}

#[test]
fn a_worker_that_cannot_watch_for_its_stubs_end_says_why_and_does_not_start() {
    let ready_error = |out: &std::process::Output| {
        let line = String::from_utf8_lossy(&out.stdout);
        let ready: Value = serde_json::from_str(line.lines().next().unwrap_or("")).expect(&line);
        assert_eq!(ready["ready"], json!(false), "{line}");
        ready["error"]["message"].as_str().unwrap_or("").to_owned()
    };
    // A lifeline that is not open: an error, not a SIGKILL from a watcher that failed.
    let out = run_by_hand(&["999", "z.py"], true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let message = ready_error(&out);
    let said = "cannot watch for the stub's end on fd 999: [Errno 9] Bad file descriptor";
    assert_eq!(message, said);
    // No import was tried, and the stub does not say one failed.
    let ready: Value = serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap())
        .expect("a ready line");
    let error = super::process::not_ready(&ready, "z").expect("an error");
    assert_eq!(
        error.message,
        format!("worker for module 'z' did not start: {said}")
    );
    // Describing a module: the stub reports the last line of stderr.
    let out = run_by_hand(&["999", "--describe", "json"], true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().last(), Some(said), "{stderr}");
    // Not the leader of its group, which would be the shell's job run by hand: not killed.
    let out = run_by_hand(&["0", "z.py"], false);
    let message = ready_error(&out);
    assert!(
        message.contains("does not lead its process group"),
        "{message}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.ends_with("sh survived 1\n"), "{stdout}");
}

/// A module whose functions fork as a careless module might: a child that returns from the
/// call, as its parent does; a child that lives on for a while (its daemon work), then returns.
const FORKS: &str = r#"
import os, time

def pid():
    return os.getpid()

def add(a, b):
    return a + b

def fork_returns():
    return "child" if os.fork() == 0 else "parent"

def daemon(release, done):
    child = os.fork()
    if child:
        return child
    while not os.path.exists(release):
        time.sleep(0.01)
    open(done, "w").close()
    return "daemon"

def reap(child):
    """The exit code of process `child`, once it has ended; None if it is still running after
    a long while (hang detection)."""
    for _ in range(2000):
        ended, status = os.waitpid(child, os.WNOHANG)
        if ended:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    return None
"#;

#[test]
fn a_child_forked_by_a_call_that_returns_from_it_answers_nothing_and_exits() {
    let (_dir, pool) = pool(FORKS, 1);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        // The child used to answer the call too, with the parent, and read calls meant for it:
        // the next call read the answer left over, and failed.
        for _ in 0..5 {
            let forked = call(&pool, "fork_returns", json!([])).await;
            assert_eq!(forked, Ok(json!("parent")));
            assert_eq!(call(&pool, "add", json!([1, 2])).await, Ok(json!(3)));
            assert_eq!(call(&pool, "pid", json!([])).await, Ok(pid.clone()));
        }
    });
}

#[test]
fn a_child_forked_by_a_call_lives_on_and_exits_once_it_returns_into_the_worker() {
    let (dir, pool) = pool(FORKS, 1);
    let (release, done) = (dir.path().join("release"), dir.path().join("done"));
    let paths = json!([release.display().to_string(), done.display().to_string()]);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        let child = call(&pool, "daemon", paths).await.expect("the child's pid");
        assert_eq!(call(&pool, "add", json!([1, 2])).await, Ok(json!(3)));
        assert!(alive(&child), "the daemon {child} was killed");
        // Its work done, it returns into the worker's loop, where it used to read calls meant
        // for the worker and answer them, with the answer to `daemon` first.
        std::fs::write(&release, "").expect("release");
        wait_until(|| done.exists()).await;
        assert_eq!(call(&pool, "reap", json!([child])).await, Ok(json!(0)));
        assert_eq!(call(&pool, "add", json!([2, 3])).await, Ok(json!(5)));
        assert_eq!(call(&pool, "pid", json!([])).await, Ok(pid));
    });
}

#[test]
fn a_child_forked_by_the_import_that_goes_on_past_it_does_not_say_the_worker_is_ready() {
    // Forked at import, the child goes on importing the module, as its parent does.
    let forks = "import os\n_child = os.fork()\n\ndef child():\n    return _child\n";
    let (_dir, pool) = pool(&format!("{forks}{FORKS}"), 1);
    run(async {
        let pid = call(&pool, "pid", json!([])).await.expect("pid");
        assert_eq!(call(&pool, "add", json!([1, 2])).await, Ok(json!(3)));
        let child = call(&pool, "child", json!([]))
            .await
            .expect("the child's pid");
        assert_eq!(call(&pool, "reap", json!([child])).await, Ok(json!(0)));
        assert_eq!(call(&pool, "pid", json!([])).await, Ok(pid));
    });
}

const NAPS: &str = r#"
import time

def nap(started):
    open(started, "w").close()
    time.sleep(30)

def add(a, b):
    return a + b
"#;

/// Starts a long call on `pool`'s one worker, queues another behind it, then ends the pool with
/// `end`: returns the answers of the call running and of the call queued.
async fn running_and_queued(
    pool: Pool,
    dir: &std::path::Path,
    end: impl FnOnce(Pool),
) -> (Answer, Answer) {
    let started = dir.join("started");
    let running = submit(&pool, "nap", json!([started.display().to_string()]), 60_000);
    wait_until(|| started.exists()).await;
    // The worker busy, its lane is closed: the call waits in the queue.
    let queued = submit(&pool, "add", json!([1, 2]), 60_000);
    end(pool);
    let running = running.recv().await.expect("the call running is answered");
    let queued = queued.recv().await.expect("the call queued is answered");
    (running, queued)
}

/// What the call running is told when its pool ends: it was stopped during it.
fn stopped_during(running: Answer) {
    let error = running.unwrap_err();
    assert_eq!(error.kind, ErrorKind::WorkerFailed, "{error}");
    let said = "worker for module 'z' was stopped during the call to nap";
    assert_eq!(error.message, said);
}

#[test]
fn a_call_queued_in_a_pool_stopped_is_told_it_never_ran_and_why() {
    let (dir, pool) = pool(NAPS, 1);
    run(async {
        let withdraw = |pool: Pool| pool.stop("was withdrawn");
        let (running, queued) = running_and_queued(pool, dir.path(), withdraw).await;
        stopped_during(running);
        let error = queued.unwrap_err();
        assert_eq!(error.kind, ErrorKind::OwnerGone, "{error}");
        assert_eq!(
            error.message,
            "module 'z' was withdrawn before the call to add ran"
        );
    });
}

#[test]
fn a_call_queued_in_a_pool_dropped_is_told_it_never_ran() {
    let (dir, pool) = pool(NAPS, 1);
    run(async {
        let (running, queued) = running_and_queued(pool, dir.path(), drop).await;
        stopped_during(running);
        // It used to be told it was stopped during the call, which never began.
        let error = queued.unwrap_err();
        assert_eq!(error.kind, ErrorKind::OwnerGone, "{error}");
        assert_eq!(
            error.message,
            "module 'z' was stopped before the call to add ran"
        );
    });
}
