//! Calls end to end with the real binaries: app → its stub → server → owner's stub → Python
//! worker, and back.

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::app::{AsyncClient, CallError};
use harness::*;
use serde_json::{json, Map, Value};

const MODULE: &str = r#"
import os, sys, time

def add(a, b):
    return a + b

def kw(a, b=2, *, c=3):
    """Keyword arguments."""
    return {"a": a, "b": b, "c": c}

def keys(*args, **kwargs):
    return [list(kwargs)] + [list(a) for a in args] + [{"z": 1, "a": 2}]

def fail(message):
    raise ValueError(message)

def crash():
    os._exit(3)

def slow(seconds):
    time.sleep(seconds)
    return seconds

def announced(seconds):
    print("the call is running", flush=True)
    time.sleep(seconds)

def noisy(x):
    print("some output the module prints", x)
    sys.stdout.flush()
    return x

def bad_result():
    """Docs \x1b]0;pwned\x07 too."""
    return {1, 2}

def flood(mib):
    for _ in range(mib):
        sys.stderr.write("x" * (1 << 20))
    sys.stderr.write("\n")
    sys.stderr.flush()
    return mib

def pid(*args):
    return os.getpid()

def mark(path, text, seconds):
    with open(path, "a") as f:
        f.write(text + "\n")
    time.sleep(seconds)

def stubborn(seconds):
    try:
        time.sleep(seconds)
    except BaseException:
        time.sleep(seconds)
"#;

/// A server, an owner `a` of module `m`, and a caller `b`; returns the caller's app port.
struct Net {
    _tmp: tempfile::TempDir,
    server: Proc,
    owner: Proc,
    caller: Proc,
}

fn net() -> Net {
    net_with(&[])
}

/// [`net`] with `flags` for the caller (`-l` for its shell).
fn net_with(flags: &[&str]) -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let [server, owner, caller] = owner_and_caller(tmp.path(), MODULE, flags);
    Net {
        _tmp: tmp,
        server,
        owner,
        caller,
    }
}

fn kwargs(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn results_exceptions_and_keyword_arguments() {
    let n = net();
    let c = client(&n.caller);
    assert_eq!(c.call("m", "add", (1, 2)).unwrap(), json!(3));
    assert_eq!(c.call_as::<String>("m", "add", ("a", "b")).unwrap(), "ab");
    assert_eq!(
        c.call("m", "add", (vec![1], vec![2, 3])).unwrap(),
        json!([1, 2, 3])
    );
    assert_eq!(
        c.call_with(
            "m",
            "kw",
            (1,),
            kwargs(json!({"c": {"k": [true, null]}})),
            None
        )
        .unwrap(),
        json!({"a": 1, "b": 2, "c": {"k": [true, null]}})
    );
    // Keyword arguments and dicts keep their order both ways, as they do in Python.
    let keys = c.call_with(
        "m",
        "keys",
        (json!({"y": 1, "b": 2}),),
        kwargs(json!({"z": 1, "a": 2, "m": 3})),
        None,
    );
    let keys = serde_json::to_string(&keys.unwrap()).unwrap();
    assert_eq!(keys, r#"[["z","a","m"],["y","b"],{"z":1,"a":2}]"#);
    match c.call("m", "fail", ("boom",)) {
        Err(CallError::Exception {
            exc_type,
            message,
            traceback,
        }) => {
            assert_eq!(
                (exc_type.as_str(), message.as_str()),
                ("ValueError", "boom")
            );
            assert!(traceback.contains("raise ValueError"), "{traceback}");
        }
        other => panic!("{other:?}"),
    }
    // The owner calls its own module through its own stub too.
    assert_eq!(client(&n.owner).call("m", "add", (2, 2)).unwrap(), json!(4));
    assert_eq!(c.modules("").unwrap(), vec!["m".to_string()]);
    assert_eq!(
        c.describe("m").unwrap().function("kw").unwrap().signature(),
        "kw(a, b=2, *, c=3)"
    );
}

#[test]
fn bad_calls_fail_locally_before_anything_is_sent() {
    let n = net();
    let c = client(&n.caller).with_timeout(Duration::from_secs(120));
    // With the owner frozen, anything sent would wait for the whole timeout.
    let owner_pid = n.owner.pid().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &owner_pid])
        .status()
        .unwrap()
        .success());
    let unknown = c.call("m", "nope", ());
    let wrong = c.call("m", "add", (1, 2, 3));
    let missing = c.call("nomodule", "f", ());
    std::process::Command::new("kill")
        .args(["-CONT", &owner_pid])
        .status()
        .unwrap();
    assert!(
        matches!(&unknown, Err(CallError::UnknownFunction(m)) if m.contains("no function 'nope'")),
        "{unknown:?}"
    );
    assert!(
        matches!(&wrong, Err(CallError::BadArguments(m)) if m.contains("takes 2 positional")),
        "{wrong:?}"
    );
    assert!(
        matches!(&missing, Err(CallError::UnknownModule(_))),
        "{missing:?}"
    );
    let kw = c.call_with("m", "kw", (1,), kwargs(json!({"d": 1})), None);
    assert!(
        matches!(&kw, Err(CallError::BadArguments(m)) if m.contains("unexpected keyword argument 'd'")),
        "{kw:?}"
    );
}

#[test]
fn many_apps_with_many_calls_in_flight_each_get_their_own_answer() {
    let n = net();
    let port = app_port(&n.caller);
    smol::block_on(async {
        let mut apps = Vec::new();
        for _ in 0..4 {
            apps.push(Arc::new(
                AsyncClient::connect(&format!("127.0.0.1:{port}"))
                    .await
                    .unwrap(),
            ));
        }
        let mut calls = Vec::new();
        for (a, app) in apps.iter().enumerate() {
            for i in 0..100 {
                let app = app.clone();
                calls.push(smol::spawn(async move {
                    let (x, y) = (a as i64 * 1000, i as i64);
                    (x + y, app.call("m", "add", (x, y)).await)
                }));
            }
        }
        for call in calls {
            let (want, got) = call.await;
            assert_eq!(got.unwrap(), json!(want));
        }
    });
}

#[test]
fn the_owner_killed_mid_call_fails_the_call_at_once() {
    let mut n = net();
    let c = client(&n.caller).with_timeout(Duration::from_secs(120));
    let pending = std::thread::spawn(move || c.call("m", "announced", (60,)));
    // Killed once the call runs there: sooner, the call would find the module gone instead.
    n.owner.wait_for("[m] the call is running");
    let killed = Instant::now();
    n.owner.kill();
    let result = pending.join().unwrap();
    assert!(
        matches!(&result, Err(CallError::OwnerGone(_))),
        "{result:?}"
    );
    // Generous for a busy machine; the error kind above shows the leave, not a timer, ended it.
    let took = killed.elapsed();
    eprintln!("owner gone reported {took:?} after the kill");
    assert!(took < Duration::from_secs(10), "{took:?}");
    n.server.wait_for("left: a");
    n.caller.wait_for("module m is gone");
}

#[test]
fn a_crashing_worker_is_restarted_and_the_next_call_works() {
    let n = net();
    let c = client(&n.caller);
    let crashed = c.call("m", "crash", ());
    assert!(
        matches!(&crashed, Err(CallError::Failed(e)) if e.message.contains("exit")),
        "{crashed:?}"
    );
    assert_eq!(c.call("m", "add", (1, 1)).unwrap(), json!(2));
}

#[test]
fn arguments_nested_past_pythons_recursion_limit_fail_their_call_and_the_worker_goes_on() {
    let n = net();
    let c = client(&n.caller);
    let pid = c.call("m", "pid", ()).unwrap();
    // Well within the frame limit, but deeper than Python's decoder recurses (and than a Rust
    // app can write: sent as text).
    let deep = format!("{}{}", "[".repeat(3000), "]".repeat(3000));
    let mut app = raw_app(&n.caller);
    let call = format!(
        r#"{{"cmd":"call","data":{{"id":7,"module":"m","function":"pid","args":[{deep}],"timeout_ms":60000}}}}"#
    );
    writeln!(app, "{call}").unwrap();
    let mut line = String::new();
    BufReader::new(&app).read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["data"]["id"], 7, "{line}");
    assert_eq!(
        reply["data"]["result"]["Err"]["exc_type"], "RecursionError",
        "{line}"
    );
    // The same worker, module state and all, takes the next call.
    assert_eq!(c.call("m", "pid", ()).unwrap(), pid);
    assert_eq!(n.owner.count("restarting it"), 0);
}

/// The most memory process `pid` has held, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_module_printing_a_huge_line_is_shown_shortened_and_not_held_by_its_stub() {
    let n = net();
    let c = client(&n.caller).with_timeout(Duration::from_secs(120));
    assert_eq!(c.call("m", "flood", (200,)).unwrap(), json!(200));
    let line = n.owner.wait_for("… (209715200 bytes)");
    assert!(
        line.starts_with(&format!("[m] {}", "x".repeat(1000))),
        "{line:.80}"
    );
    // The stub kept the line's head, not its 200 MiB.
    let peak = peak_kib(n.owner.pid());
    assert!(peak < 100 << 10, "the owner's stub held {peak} KiB");
}

#[test]
fn timeouts_non_json_results_and_printing_modules() {
    let n = net();
    let c = client(&n.caller);
    let slow = c.call_with(
        "m",
        "slow",
        (60,),
        Map::new(),
        Some(Duration::from_millis(300)),
    );
    assert!(matches!(&slow, Err(CallError::Timeout(_))), "{slow:?}");
    // The owner interrupted it: the next call does not wait the minute out behind it (the
    // default timeout is 30 s), and the module's served statistics say what happened.

    match c.call("m", "bad_result", ()) {
        Err(CallError::Exception {
            exc_type, message, ..
        }) => {
            assert_eq!(exc_type, "TypeError");
            assert!(message.contains("set"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let served = client(&n.owner).stats().unwrap()["served"].clone();
    let slow = served
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == "slow");
    let slow = slow.expect("the owner counts the interrupted call").clone();
    assert_eq!(slow["errors"], json!(1), "{slow}");
    let last_error = slow["last_error"].as_str().unwrap_or_default();
    assert!(last_error.contains("CallTimedOut"), "{slow}");
    assert_eq!(c.call("m", "noisy", (5,)).unwrap(), json!(5));
    n.owner.wait_for("some output the module prints 5");
    assert_eq!(c.call("m", "noisy", (6,)).unwrap(), json!(6));
}

#[test]
fn calls_made_on_the_owners_own_stub_time_out_on_time() {
    use std::io::{BufRead, BufReader, Write};
    let n = net();
    let port = app_port(&n.owner);
    // Raw connections: the stub must answer by itself (the client libraries time out anyway).
    let connect = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        (BufReader::new(s.try_clone().unwrap()), s)
    };
    type Conn = (BufReader<std::net::TcpStream>, std::net::TcpStream);
    let ask = |(reader, writer): &mut Conn, frame: Value| {
        writeln!(writer, "{frame}").unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap()
    };
    let call = |module: &str, function: &str, args: Value| {
        let data = json!({"id": 5, "module": module, "function": function, "args": args,
                          "timeout_ms": 300});
        json!({"cmd": "call", "data": data})
    };
    let mut app = connect();
    // A Python call that shrugs off the interrupt: the app hears at its timeout, not when the
    // worker is killed 5 s later.
    let started = Instant::now();
    let reply = ask(&mut app, call("m", "stubborn", json!([30])));
    assert_eq!(reply["data"]["result"]["Err"]["kind"], "timeout", "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // A module an app provides here and never answers.
    let mut provider = connect();
    let desc = common::provider::Provider::new("mute")
        .function("f", &[], "", |(): ()| Ok(1))
        .descriptor()
        .clone();
    let provide = json!({"cmd": "provide", "data": {"id": 1, "descriptor": desc}});
    let reply = ask(&mut provider, provide);
    assert!(reply["data"]["result"]["Ok"].is_string(), "{reply}");
    let started = Instant::now();
    let reply = ask(&mut app, call("mute", "f", json!([])));
    assert_eq!(reply["data"]["result"]["Err"]["kind"], "timeout", "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_call_waiting_for_its_turn_on_a_shared_blocking_client_times_out_on_time() {
    let n = net();
    let address = format!("127.0.0.1:{}", app_port(&n.caller));
    let client = Arc::new(common::app::Client::connect(&address).unwrap());
    let busy = client.clone();
    let long = Some(Duration::from_secs(20));
    let holder = std::thread::spawn(move || busy.call_with("m", "slow", (3,), Map::new(), long));
    std::thread::sleep(Duration::from_millis(300)); // the slow call holds the connection
    let started = Instant::now();
    let short = Some(Duration::from_millis(300));
    let result = client.call_with("m", "add", (1, 2), Map::new(), short);
    assert!(matches!(result, Err(CallError::Timeout(_))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(holder.join().unwrap(), Ok(json!(3)));
    // The connection is still usable, in turn.
    assert_eq!(client.call("m", "add", (1, 2)), Ok(json!(3)));
}

#[test]
fn test_app_prints_results_and_exits_1_on_a_remote_exception() {
    let n = net();
    let port = app_port(&n.caller).to_string();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["-q", port.as_str()];
        all.extend_from_slice(args);
        let mut p = Proc::start("test_app", &exe("test_app"), &all, dir.path());
        let status = p.wait_exit();
        (status.code(), p.output().join("\n"))
    };
    assert_eq!(run(&["call", "m.add", "1", "2"]), (Some(0), "3".into()));
    assert_eq!(
        run(&["call", "m.kw", "x", "c=[1]"]),
        (Some(0), r#"{"a":"x","b":2,"c":[1]}"#.into())
    );
    let (code, out) = run(&["call", "m.fail", "bad"]);
    assert_eq!(code, Some(1));
    assert!(out.contains("ValueError: bad"), "{out}");
    assert_eq!(run(&["list"]), (Some(0), "m".into()));
    assert_eq!(
        run(&["list", "q"]),
        (Some(0), "no modules starting with 'q'".into())
    );
    let (code, out) = run(&["describe", "m"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("kw(a, b=2, *, c=3)") && out.contains("Keyword arguments."),
        "{out}"
    );
    // `-c PROFILE -q PORT`: the port given, the profile's call timeout.
    let profile = dir.path().join("short.toml");
    std::fs::write(&profile, "call_timeout_ms = 300\n").unwrap();
    let (code, out) = run(&["-c", profile.to_str().unwrap(), "call", "m.slow", "20"]);
    // A timeout (with the default of 30 s, the 20 s call would return 20): test_app's own
    // ("300ms"), the caller's stub's, or the owner's interrupt, whichever ticks first.
    assert_eq!(code, Some(1));
    assert!(out.starts_with("error: timeout: "), "{out}");
}

#[test]
fn values_travel_as_written_through_every_hop() {
    use std::io::{BufRead, BufReader, Write};
    let n = net();
    let mut s = raw_app(&n.caller);
    // Python's way of writing a string holding a lone surrogate, which a tree of Rust strings
    // cannot hold. No stub reads arguments or results as values: the module gets them, and its
    // result comes back, as written.
    let call = r#"{"cmd": "call", "data": {"id": 4, "module": "m", "function": "add", "args": ["\ud800", "\u00e9"], "timeout_ms": 20000}}"#;
    writeln!(s, "{call}").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    assert_eq!(
        reply.trim_end(),
        r#"{"cmd":"reply","data":{"id":4,"result":{"Ok":"\ud800\u00e9"}}}"#
    );
}

#[test]
fn a_call_past_its_timeout_is_answered_naming_it_and_its_timeout() {
    use std::io::{BufRead, BufReader, Write};
    let n = net();
    // An app with no timer of its own hears the stub's: on the owner's stub, which times the
    // call out at the same tick that interrupts its worker, before the interruption's answer.
    let mut s = raw_app(&n.owner);
    let call = json!({"cmd": "call", "data": {"id": 9, "module": "m", "function": "slow",
                                              "args": [30], "timeout_ms": 300}});
    writeln!(s, "{call}").unwrap();
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).unwrap();
    let reply: Value = serde_json::from_str(&reply).unwrap();
    let error = &reply["data"]["result"]["Err"];
    assert_eq!(error["kind"], "timeout", "{reply}");
    let message = error["message"].as_str().unwrap();
    assert_eq!(
        message, "m.slow: no answer within 300ms (it may still be running in this stub's worker)",
        "{reply}"
    );
}

#[test]
fn an_app_that_half_closes_gets_its_answers_then_the_end() {
    use std::io::{Read, Write};
    let n = net();
    // Through the network (caller `b`) and on the owner's own stub (`a`): as `printf | nc` does,
    // the last frame without its newline, then the writing half shut.
    for p in [&n.caller, &n.owner] {
        let mut s = raw_app(p);
        let call = |id: u64, function: &str, args: Value| {
            let data = json!({"id": id, "module": "m", "function": function, "args": args,
                              "timeout_ms": 10000});
            json!({"cmd": "call", "data": data})
        };
        writeln!(s, "{}", call(1, "slow", json!([0.3]))).unwrap();
        write!(s, "{}", call(2, "add", json!([1, 2]))).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap(); // to the end: the stub closes after the answers
        let results: Vec<(Value, Value)> = all
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|r| (r["data"]["id"].clone(), r["data"]["result"]["Ok"].clone()))
            .collect();
        assert_eq!(
            results,
            [(json!(1), json!(0.3)), (json!(2), json!(3))],
            "{all}"
        );
    }
}

#[test]
fn an_app_that_half_closes_inside_its_last_frame_gets_every_answer_it_can() {
    use std::io::{Read, Write};
    let n = net();
    let mut s = raw_app(&n.caller);
    let call = r#"{"cmd":"call","data":{"id":1,"module":"m","function":"slow","args":[0.3],"timeout_ms":10000}}"#;
    writeln!(s, "{call}").unwrap();
    // Cut short: its id shows, the rest never comes.
    write!(s, r#"{{"cmd":"call","data":{{"id":2,"module":"m","func"#).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap(); // to the end: the stub closes after the answers
    let mut replies: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["data"].clone())
        .collect();
    replies.sort_by_key(|r| r["id"].as_u64());
    assert_eq!(replies.len(), 2, "{all}");
    assert_eq!(replies[0]["result"]["Ok"], json!(0.3), "{all}");
    let cut = &replies[1];
    assert_eq!(cut["id"], 2, "{all}");
    assert_eq!(cut["result"]["Err"]["kind"], "protocol", "{all}");
    let said = cut["result"]["Err"]["message"].as_str().unwrap();
    assert!(said.contains("connection closed inside a frame"), "{all}");

    // Cut short before its id: the app is told why, as for a malformed frame.
    let mut s = raw_app(&n.caller);
    write!(s, r#"{{"cmd":"ca"#).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let told: Value = serde_json::from_str(all.trim_end()).unwrap();
    assert_eq!(told["cmd"], "error", "{all}");
    let said = told["data"]["message"].as_str().unwrap();
    assert!(said.contains("connection closed inside a frame"), "{all}");
}

#[test]
fn a_peers_text_is_printed_escaped_by_the_stubs_and_test_app() {
    let mut n = net_with(&["-l"]);
    let c = client(&n.caller);
    let hostile = "hi \u{1b}]0;pwned\u{7}\nforged [b] line";
    let escaped = r"hi \u{1b}]0;pwned\u{7}";
    // Apps get the text as it was; printing it is where it is escaped.
    match c.call("m", "fail", (hostile,)) {
        Err(CallError::Exception { message, .. }) => assert_eq!(message, hostile),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.call("m", "noisy", ("\u{1b}[2J",)).unwrap(),
        json!("\u{1b}[2J")
    );
    n.owner
        .wait_for(r"[m] some output the module prints \u{1b}[2J");

    // The caller's shell: a doc line, and the last error within its row.
    n.caller.send("desc:m");
    n.caller.wait_for(r"Docs \u{1b}]0;pwned\u{7} too.");
    n.caller.send("stats");
    n.caller
        .wait_for(&format!(r"ValueError: {escaped}\nforged [b] line"));

    // test_app: a multi-line message keeps its lines, the later ones indented.
    let port = app_port(&n.caller).to_string();
    let args = ["-q", port.as_str(), "call", "m.fail", hostile];
    let mut app = Proc::start("test_app", &exe("test_app"), &args, n._tmp.path());
    assert_eq!(app.wait_exit().code(), Some(1));
    let out = app.output();
    assert_eq!(
        out,
        [
            format!("error: ValueError: {escaped}"),
            "    forged [b] line".into()
        ],
        "{out:?}"
    );

    for p in [&n.owner, &n.caller, &app] {
        for line in p.output() {
            assert!(!line.contains(['\u{1b}', '\u{7}']), "{}: {line:?}", p.name);
            assert!(!line.starts_with("forged"), "{}: {line:?}", p.name);
        }
    }
}

/// One stub floods a module with slow calls; another stub's call, and an app's on the owner's
/// own stub, are answered in turn with the flood, not after it.
#[test]
fn callers_take_turns_so_a_flood_does_not_shut_out_another_callers_call() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const FLOOD: usize = 300;
    let n = net();
    let dir = n._tmp.path();
    let port = n.server.wait_for("listening on ");
    let port = port.rsplit(':').next().unwrap().trim().to_owned();
    let other = start_stub("c", dir, &port, "c", "c", &[]);
    other.wait_for("received m from a");
    let flooder = app_port(&n.caller);
    let answered = Arc::new(AtomicUsize::new(0));
    let flood = smol::block_on(async {
        let app = Arc::new(
            AsyncClient::connect(&format!("127.0.0.1:{flooder}"))
                .await
                .unwrap(),
        );
        (0..FLOOD)
            .map(|_| {
                let (app, answered) = (app.clone(), answered.clone());
                smol::spawn(async move {
                    let result = app.call("m", "slow", (0.01,)).await;
                    answered.fetch_add(1, Ordering::SeqCst);
                    result
                })
            })
            .collect::<Vec<_>>()
    });
    // The flood has reached the owner's worker: the rest of it is queued there.
    assert!(soon(|| answered.load(Ordering::SeqCst) > 0));
    assert_eq!(
        client(&other).call("m", "slow", (0.01,)).unwrap(),
        json!(0.01)
    );
    let before_other = answered.load(Ordering::SeqCst);
    assert_eq!(
        client(&n.owner).call("m", "slow", (0.01,)).unwrap(),
        json!(0.01)
    );
    let before_local = answered.load(Ordering::SeqCst);
    for call in flood {
        assert_eq!(smol::block_on(call).unwrap(), json!(0.01));
    }
    // First come, first served, they would have waited for all of it.
    assert!(
        before_other < FLOOD / 2 && before_local < FLOOD / 2,
        "{before_other} and {before_local} of {FLOOD} flood calls answered first"
    );
}

/// An app that sends many slow calls and leaves (as a crashed one does) leaves nothing queued
/// at the owner: its calls not yet running are dropped, and another app's call is served next.
#[test]
fn calls_queued_by_an_app_that_left_are_dropped_not_run() {
    const N: usize = 20;
    let n = net();
    let log = n._tmp.path().join("ran.txt");
    let path = log.to_str().unwrap();
    let ran = || std::fs::read_to_string(&log).unwrap();
    // Through the network, then on the owner's own stub.
    for (p, dropped) in [
        (
            &n.caller,
            "calls dropped before they ran: their caller stopped waiting",
        ),
        (&n.owner, "calls dropped before they ran: their app left"),
    ] {
        std::fs::write(&log, "").unwrap();
        let mut s = raw_app(p);
        for id in 1..=N {
            let data = json!({"id": id, "module": "m", "function": "mark",
                              "args": [path, "x", 0.2], "timeout_ms": 60000});
            writeln!(s, "{}", json!({"cmd": "call", "data": data})).unwrap();
        }
        assert!(soon(|| ran().contains('x')), "the first call runs");
        drop(s);
        // Another app of the same stub. Through the network the owner sees the same caller:
        // its call waits behind those of the first app still queued, then runs. On the
        // owner's own stub it is a caller of its own, taking turns: it goes once the owner
        // has dropped them.
        if std::ptr::eq(p, &n.owner) {
            n.owner.wait_for(dropped);
        }
        let app = client(p);
        assert_eq!(app.call("m", "mark", (path, "y", 0)).unwrap(), json!(null));
        let all = ran();
        let before = all.lines().take_while(|l| *l == "x").count();
        assert!(before < N / 2, "{before} of {N} ran: {all:?}");
        assert_eq!(all.lines().count(), before + 1, "none ran after: {all:?}");
        n.owner.wait_for(dropped);
    }
}

/// An owner that loses the server drops the calls it had queued for other stubs: their callers
/// were answered already (the owner is gone, to them), and an answer could not reach them. Once
/// the server is back, a new call does not wait behind them.
#[test]
fn an_owner_that_loses_the_server_drops_the_calls_queued_for_other_stubs() {
    const N: usize = 20;
    let mut n = net();
    let dir = n._tmp.path().to_owned();
    let port = n.server.wait_for("listening on ");
    let port = port.rsplit(':').next().unwrap().trim().to_owned();
    let log = dir.join("ran.txt");
    let path = log.to_str().unwrap();
    let ran = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut s = raw_app(&n.caller);
    for id in 1..=N {
        let data = json!({"id": id, "module": "m", "function": "mark",
                          "args": [path, "x", 0.2], "timeout_ms": 60000});
        writeln!(s, "{}", json!({"cmd": "call", "data": data})).unwrap();
    }
    assert!(soon(|| ran().contains('x')), "the first call runs");
    n.server.kill();
    n.owner
        .wait_for("calls dropped before they ran: this stub lost the server");
    let server = Proc::start(
        "server2",
        &exe("server_stub"),
        &["-p", &port, "-d", "server"],
        &dir,
    );
    server.wait_for("listening on");
    n.caller.wait_for("reconnected to");
    n.owner.wait_n("registered m", 2);
    let app = client(&n.caller);
    // Until the owner is back on the network too.
    let again = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(50));
        app.call("m", "mark", (path, "y", 0)).ok()
    });
    assert_eq!(again, Some(json!(null)));
    let all = ran();
    let before = all.lines().take_while(|l| *l == "x").count();
    assert!(before < N / 2, "{before} of {N} ran: {all:?}");
    assert_eq!(all.lines().count(), before + 1, "none ran after: {all:?}");
    drop(s);
}
