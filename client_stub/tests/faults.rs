//! Faults with the real binaries: a stub that freezes, a server that restarts, a stub restarted
//! while its ghost is still connected, values over the frame limit.

mod harness;

use std::path::Path;
use std::time::Duration;

use std::io::{BufRead, BufReader, Read, Write};

use common::app::CallError;
use common::proto::{Json, Offer, Reply, ToClient, ToServer, PROTOCOL_VERSION};
use harness::*;
use serde_json::json;

const MODULE: &str = "def add(a, b):\n    return a + b\n\ndef big(n):\n    return 'x' * n\n";

/// A server profile with a short heartbeat, so silence is noticed quickly (3 s), but not so
/// short that a busy machine's stall of a stub looks like one: at 200 ms, a test's stub lost
/// its server after 600 ms unheard while the machine ran the tests beside other work.
fn quick_server(dir: &Path, extra: &[&str]) -> (Proc, u16) {
    server_with_limits(dir, "heartbeat_ms = 1000\nmax_frame_bytes = 1000000", extra)
}

/// A server whose profile's `[limits]` table holds `limits`.
fn server_with_limits(dir: &Path, limits: &str, extra: &[&str]) -> (Proc, u16) {
    let profile = dir.join("server.toml");
    std::fs::write(&profile, format!("[limits]\n{limits}\n")).unwrap();
    let mut args = vec!["-c", profile.to_str().unwrap()];
    args.extend_from_slice(extra);
    server(dir, &args)
}

fn module(dir: &Path) -> String {
    let m = dir.join("m.py");
    std::fs::write(&m, MODULE).unwrap();
    m.to_str().unwrap().to_owned()
}

/// Stub `a`, owner of module `m`, whose profile's `[limits]` table holds `limits`.
fn owner_with_limits(dir: &Path, port: u16, limits: &str) -> Proc {
    let m = module(dir);
    let profile = dir.join("stub.toml");
    std::fs::write(&profile, format!("[limits]\n{limits}\n")).unwrap();
    let a = stub(
        dir,
        port,
        "a",
        &["--register", &m, "-c", profile.to_str().unwrap()],
    );
    a.wait_for("registered m");
    a
}

fn signal(p: &Proc, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_frozen_stub_is_noticed_and_comes_back_when_it_thaws() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server_with_limits(dir, "heartbeat_ms = 200", &[]);
    let m = module(dir);
    let a = stub(dir, port, "a", &["--register", &m]);
    let b = stub(dir, port, "b", &[]);
    b.wait_for("received m from a");

    signal(&a, "-STOP");
    server.wait_for("nothing heard for 600ms");
    assert!(server.count("lost a:") >= 1);
    b.wait_for("module m is gone: its owner 'a' left");
    signal(&a, "-CONT");
    a.wait_for("reconnected to");
    a.wait_n("registered m", 2);
    b.wait_n("received m from a", 2);
}

/// An owner that stalled (stopped, swapped out, suspended) read the calls sent meanwhile
/// once it went on, and ran every one, long after their callers had been told `timeout`: it
/// counts a call's timeout from when it reads it. Now the server tells the owner to drop each
/// call whose timeout has passed: only one the owner hands its idle worker before it reads
/// that can still run.
#[test]
fn calls_that_timed_out_while_their_owner_stalled_are_dropped_not_run_late() {
    const N: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ran = dir.join("ran.txt");
    let m = dir.join("m.py");
    let source = format!(
        "def hit(i):\n    with open({:?}, 'a') as f:\n        f.write(f'{{i}}\\n')\n    return i\n",
        ran.to_str().unwrap()
    );
    std::fs::write(&m, source).unwrap();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    let b = stub(dir, port, "b", &[]);
    b.wait_for("received m from a");
    let app = client(&b).with_timeout(Duration::from_secs(1));
    assert_eq!(app.call("m", "hit", (0,)), Ok(json!(0)));

    signal(&a, "-STOP");
    // An app each: one `Client` makes one call at a time.
    let apps: Vec<_> = (0..N)
        .map(|_| client(&b).with_timeout(Duration::from_secs(1)))
        .collect();
    std::thread::scope(|s| {
        let calls: Vec<_> = (apps.iter().zip(1..))
            .map(|(app, i)| s.spawn(move || app.call("m", "hit", (i,))))
            .collect();
        for call in calls {
            let answer = call.join().unwrap();
            assert!(matches!(answer, Err(CallError::Timeout(_))), "{answer:?}");
        }
    });
    // The server tells the owner at its next tick (every 250 ms) past each deadline.
    std::thread::sleep(Duration::from_secs(1));
    signal(&a, "-CONT");
    let dropped = |out: &[String]| -> usize {
        let said = out.iter().filter_map(|l| {
            let (head, _) = l.split_once(" dropped before the")?;
            l.ends_with("their caller stopped waiting")
                .then(|| head.rsplit(' ').nth(1)?.parse::<usize>().ok())?
        });
        said.sum()
    };
    let start = std::time::Instant::now();
    while dropped(&a.output()) < N - 1 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dropped(&a.output()) >= N - 1,
        "{:#?} ran: {:?}",
        a.output(),
        std::fs::read_to_string(&ran)
    );
    // The owner goes on: a fresh call runs.
    assert_eq!(app.call("m", "hit", (9,)), Ok(json!(9)));
    let lines = std::fs::read_to_string(&ran).unwrap();
    let late = lines.lines().filter(|l| !["0", "9"].contains(l)).count();
    assert!(late <= 1, "ran late: {lines:?}");
}

/// Each app `ping` is an `echo` to the server and one back. Without a bound, an app pinging
/// without end had the server queue echoes for its stub faster than the stub read them, and
/// the server dropped the stub, its modules with it. Past 1,000 waiting, a ping fails at once.
#[test]
fn pings_waiting_on_the_server_are_bounded_and_each_is_answered() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    a.wait_for("joined");
    let mut app = raw_app(&a);
    // The server stopped: none of the echoes comes back until it goes on.
    signal(&server, "-STOP");
    let pings: String = (1..=1005)
        .map(|id| format!("{{\"cmd\":\"ping\",\"data\":{{\"id\":{id}}}}}\n"))
        .collect();
    app.write_all(pings.as_bytes()).unwrap();
    let mut lines = BufReader::new(app.try_clone().unwrap()).lines();
    let mut answer = || -> serde_json::Value {
        serde_json::from_str(&lines.next().expect("an answer").unwrap()).unwrap()
    };
    for id in 1001..=1005 {
        let refused = answer();
        assert_eq!(refused["data"]["id"], id, "{refused}");
        let error = &refused["data"]["result"]["Err"];
        assert_eq!(error["kind"], "too_large", "{refused}");
        let said = "1000 pings in flight from this stub, the limit is 1000";
        assert_eq!(error["message"], said, "{refused}");
    }
    signal(&server, "-CONT");
    let mut ids: Vec<u64> = (0..1000)
        .map(|_| {
            let pong = answer();
            assert!(pong["data"]["result"]["Ok"]["rtt_ms"].is_number(), "{pong}");
            pong["data"]["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=1000).collect::<Vec<u64>>());
    assert_eq!(a.count("lost the server"), 0);
}

#[test]
fn the_server_restarts_and_every_stub_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut server, port) = quick_server(dir, &[]);
    let m = module(dir);
    let a = stub(dir, port, "a", &["--register", &m]);
    let b = stub(dir, port, "b", &[]);
    b.wait_for("received m from a");
    let app = client(&b);
    assert_eq!(app.call("m", "add", (1, 2)).unwrap(), json!(3));

    server.kill();
    b.wait_for("lost the server");
    let gap = app.call("m", "add", (1, 2));
    assert!(matches!(&gap, Err(CallError::NotConnected(_))), "{gap:?}");

    let p = port.to_string();
    let server = Proc::start(
        "server2",
        &exe("server_stub"),
        &["-p", &p, "-d", "server"],
        dir,
    );
    server.wait_for("listening on");
    a.wait_for("reconnected to");
    b.wait_for("reconnected to");
    a.wait_n("registered m", 2);
    // b kept its cached copy: the re-sync finds it current and fetches nothing.
    b.wait_for("m from a: cached copy is current");
    assert_eq!(server.count("sent m to b"), 0);
    let again = (0..100)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            app.call("m", "add", (2, 2))
        })
        .find(|r| r.is_ok());
    assert_eq!(again.unwrap().unwrap(), json!(4));
}

/// A module withdrawn while the server is away, removed from the profile or by `um:`, stays
/// withdrawn: it used to be registered again when the stub reconnected.
#[test]
fn a_module_withdrawn_while_the_server_is_away_is_not_registered_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for m in ["keep", "drop", "gone"] {
        std::fs::write(dir.join(format!("{m}.py")), "def f(x):\n    return x\n").unwrap();
    }
    let (mut server, port) = server(dir, &[]);
    let profile = dir.join("p.toml");
    let write = |register: &str| {
        let text = format!(
            "name = \"p\"\naddress = \"127.0.0.1\"\nport = {port}\napp_port = 0\n\
             receiving_dir = \"recv\"\nregister = [{register}]\n"
        );
        std::fs::write(&profile, text).unwrap();
    };
    write("\"keep.py\", \"drop.py\", \"gone.py\"");
    let args = ["-c", profile.to_str().unwrap(), "-l"];
    let mut p = Proc::start("p", &exe("client_stub"), &args, dir);
    for m in ["keep", "drop", "gone"] {
        p.wait_for(&format!("registered {m}"));
    }

    server.kill();
    p.wait_for("lost the server");
    write("\"keep.py\", \"gone.py\"");
    p.wait_for("withdrawing drop: removed from the profile");
    p.send("um:gone");
    // Its output follows the withdraw's: that is done when it shows.
    p.send("mods");
    p.wait_for("module(s):");

    let p_arg = port.to_string();
    let args = ["-p", p_arg.as_str(), "-d", "server"];
    let _server = Proc::start("server2", &exe("server_stub"), &args, dir);
    p.wait_for("reconnected to");
    p.wait_n("registered keep", 2);
    let mut modules = client(&p).modules("").unwrap();
    modules.sort();
    assert_eq!(modules, ["keep"], "{:#?}", p.output());
    assert!(
        p.count("registering 1 module(s) again") == 1,
        "{:#?}",
        p.output()
    );
    assert_eq!(p.count("registered drop") + p.count("registered gone"), 2);
}

/// The reconnecting stub says the wait it really makes before its next try: doubling from
/// 0.1 s to 5 s (it said 6.4s, then 10s, while it waited 5 s).
#[test]
fn a_reconnecting_stub_says_how_long_it_really_waits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    server.kill();
    // The sixth try waits 5 s (0.1 s doubled six times is 6.4 s, over the cap).
    a.wait_n("reconnecting:", 6);
    let said: Vec<String> = (a.output().iter())
        .filter_map(|line| line.split_once("next try in ").map(|(_, d)| d.to_owned()))
        .take(6)
        .collect();
    assert_eq!(said, ["200ms", "400ms", "800ms", "1.6s", "3.2s", "5s"]);
}

#[test]
fn a_stub_restarted_on_its_directory_reclaims_its_name_from_its_ghost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A long heartbeat: the server will not notice the frozen stub by itself.
    let (server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &[]);
    signal(&a, "-STOP");
    let again = stub(dir, port, "a", &[]);
    again.wait_for("joined 127.0.0.1");
    server.wait_for("rejoined: a");
    a.kill();
    // Somebody else still cannot take the name.
    let mut other = start_stub("other", dir, &port.to_string(), "a", "elsewhere", &[]);
    assert!(!other.wait_exit().success());
    other.wait_for("already in use");
}

#[test]
fn a_restarted_stub_that_no_longer_registers_a_module_takes_it_off_the_network() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let z = example_module();
    let z = z.to_str().unwrap();
    let (server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["--register", z]);
    let mut b = stub(dir, port, "b", &["-l"]);
    b.wait_for("received z from a");
    // Frozen, its connection is a ghost the server has not seen die; a new `a` on the same
    // directory, registering nothing, reclaims the name.
    signal(&a, "-STOP");
    let _again = stub(dir, port, "a", &[]);
    server.wait_for("rejoined: a");
    // z used to stay, owned by the new `a`, which could not run it nor withdraw it.
    b.wait_for("module z is gone: withdrawn by 'a'");
    let err = client(&b).call("z", "add_prams", (1, 2)).unwrap_err();
    assert!(matches!(err, CallError::UnknownModule(_)), "{err}");
    b.send(&format!("rm:{z}"));
    b.wait_for("registered z");
    signal(&a, "-CONT");
    a.wait_exit();
}

#[test]
fn a_stub_back_after_a_module_left_removes_its_cached_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let z = example_module();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l", "--register", z.to_str().unwrap()]);
    let mut b = stub(dir, port, "b", &[]);
    b.wait_for("received z from a");
    let cached = ["z.json", "z.py", "z.rs"].map(|f| dir.join("b").join(f));
    assert!(cached.iter().all(|f| f.exists()));
    // A JSON file of the user's in the receiving directory is not the store's to remove.
    let notes = dir.join("b/notes.json");
    std::fs::write(&notes, r#"{"module": "notes"}"#).unwrap();
    b.kill();
    a.send("um:z");
    a.wait_for("withdrew z");
    // No `gone` reached b, away; its copy used to stay, and an app there could import it.
    let b = stub(dir, port, "b", &[]);
    b.wait_for("module z left the network while this stub was away: its cached copy is removed");
    for file in &cached {
        assert!(!file.exists(), "{} is still there", file.display());
    }
    assert!(notes.exists());
}

/// The answers an app of stub `a` (owner of module `m`, run by one worker) reads to a call
/// running (`nap`) and one queued behind it (`add`) when `end` withdraws the module, or stops
/// the stub: the one running was stopped during it, the one queued never ran, and says so.
fn running_and_queued_when(
    end: impl FnOnce(&mut Proc, &Path),
) -> (serde_json::Value, serde_json::Value) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    let nap =
        "import time\n\ndef nap(started):\n    open(started, 'w').close()\n    time.sleep(60)\n";
    std::fs::write(&m, format!("{nap}\ndef add(a, b):\n    return a + b\n")).unwrap();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l", "--register", m.to_str().unwrap()]);
    a.wait_for("registered m");
    let mut app = raw_app(&a);
    let started = dir.join("started");
    let call = |id: u64, function: &str, args: serde_json::Value| {
        let data = json!({"id": id, "module": "m", "function": function, "args": args,
                          "timeout_ms": 60000});
        json!({"cmd": "call", "data": data})
    };
    writeln!(
        app,
        "{}",
        call(1, "nap", json!([started.to_str().unwrap()]))
    )
    .unwrap();
    assert!(soon(|| started.exists()), "nap never started");
    // Its worker busy, `add` is queued; the stub takes an app's requests in order, so once the
    // list of modules asked after it is answered, `add` is in the queue.
    writeln!(app, "{}", call(2, "add", json!([1, 2]))).unwrap();
    writeln!(app, r#"{{"cmd":"modules","data":{{"id":3,"prefix":""}}}}"#).unwrap();
    let mut replies = BufReader::new(app);
    let mut reply = || {
        let mut line = String::new();
        replies.read_line(&mut line).unwrap();
        serde_json::from_str::<serde_json::Value>(&line).unwrap()["data"].clone()
    };
    assert_eq!(reply()["id"], 3);
    end(&mut a, dir);
    let (first, second) = (reply(), reply());
    let [running, queued] = match first["id"] == 1 {
        true => [first, second],
        false => [second, first],
    };
    assert_eq!((&running["id"], &queued["id"]), (&json!(1), &json!(2)));
    (
        running["result"]["Err"].clone(),
        queued["result"]["Err"].clone(),
    )
}

#[test]
fn a_call_queued_when_its_module_is_withdrawn_is_told_it_never_ran() {
    let (running, queued) = running_and_queued_when(|a, _| {
        a.send("um:m");
        a.wait_for("withdrew m");
    });
    assert_eq!(running["kind"], "worker_failed", "{running}");
    let during = "worker for module 'm' was stopped during the call to nap";
    assert_eq!(running["message"], during, "{running}");
    // It used to be told it was stopped during the call, which never began.
    assert_eq!(queued["kind"], "owner_gone", "{queued}");
    let before = "module 'm' was withdrawn before the call to add ran";
    assert_eq!(queued["message"], before, "{queued}");
}

#[test]
fn a_call_queued_when_its_stub_stops_is_told_it_never_ran() {
    let (running, queued) = running_and_queued_when(|a, _| {
        signal(a, "-TERM");
        a.wait_exit();
    });
    assert_eq!(running["kind"], "worker_failed", "{running}");
    let during = "worker for module 'm' was stopped during the call to nap";
    assert_eq!(running["message"], during, "{running}");
    assert_eq!(queued["kind"], "owner_gone", "{queued}");
    let before = "module 'm' was stopped with its stub before the call to add ran";
    assert_eq!(queued["message"], before, "{queued}");
}

#[test]
fn a_second_stub_on_the_same_directory_replaces_the_first_which_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &[]);
    let again = stub(dir, port, "a", &[]);
    again.wait_for("joined 127.0.0.1");
    a.wait_exit();
    a.wait_for("replaced by a newer connection of this stub");
    // The first does not come back to take the name again (it used to, over and over).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.count("rejoined: a"), 1);
    assert_eq!(again.count("lost the server"), 0);
}

/// Under another name too (its profile's name edited, say): the two used to run side by side
/// on one directory, the second's `.apps` naming its port in place of the first's.
#[test]
fn a_second_stub_on_the_same_directory_under_another_name_replaces_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &[]);
    let z = example_module();
    let mut a = stub(dir, port, "a", &["--register", z.to_str().unwrap()]);
    let b = stub(dir, port, "b", &[]);
    b.wait_for("received z from a");
    let again = start_stub("again", dir, &port.to_string(), "a2", "a", &[]);
    again.wait_for("joined 127.0.0.1");
    assert!(a.wait_exit().success());
    a.wait_for("replaced by a newer connection of this stub");
    // It owns only what it registers itself: z, only the first's, left with it.
    b.wait_for("module z is gone: its owner 'a' left");
    server.wait_for("left: a");
    assert_eq!(again.count("lost the server"), 0);
}

/// A "server" that takes connections (the kernel's backlog does) and never answers: the
/// port reused by another program, or a server that hangs.
fn mute_server() -> (std::net::TcpListener, String) {
    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port().to_string();
    (mute, port)
}

/// A stub joining a server that never answers gives up, saying so: it used to wait forever.
#[test]
fn a_server_that_never_answers_the_hello_is_given_up_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_mute, port) = mute_server();
    let mut a = start_stub("a", dir, &port, "a", "a", &[]);
    let status = a.wait_exit();
    assert_eq!(status.code(), Some(1), "{:?}", a.output());
    a.wait_for(&format!(
        "the server at 127.0.0.1:{port} did not answer within 10s"
    ));
}

/// A port where another program answers (a web server, say) is named as not a stubnet server;
/// the stub said only "malformed frame", naming nothing.
#[test]
fn a_port_that_answers_other_than_a_server_stub_is_named() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let web = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = web.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in web.incoming().map_while(Result::ok) {
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let mut a = start_stub("a", dir, &port.to_string(), "a", "a", &[]);
    assert_eq!(a.wait_exit().code(), Some(1), "{:?}", a.output());
    a.wait_for(&format!(
        "the server at 127.0.0.1:{port} did not answer as a stubnet server: malformed frame"
    ));
    // The receiving directory it made is gone with it.
    assert!(!dir.join("a").exists());
}

/// Ctrl-C or SIGTERM while a stub is still joining stops it at once: it was not heeded.
#[test]
fn a_stub_still_joining_stops_when_told() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_mute, port) = mute_server();
    let mut a = start_stub("a", dir, &port, "a", "a", &[]);
    // Its hello sent. Unheeded, SIGTERM would leave it to give up on the server 10 s on,
    // with exit status 1.
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.terminate().success(), "{:?}", a.output());
    a.wait_for("stopped: asked to stop");
}

/// Stub `a` started again on its receiving directory (`dir/a`), with app port `app_port` and
/// `extra` flags.
fn stub_a_again(dir: &Path, port: u16, app_port: &str, extra: &[&str]) -> Proc {
    let mut args = stub_args(&port.to_string(), "a", "a");
    args[7] = app_port.to_owned(); // -q
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Proc::start("again", &exe("client_stub"), &args, dir)
}

/// A full network still takes a stub back from its ghost (restarted on its receiving directory,
/// or reconnecting, before the server noticed the old connection die): it replaces a peer, so the
/// count stays. It used to be refused as one too many, and a starting stub exits on that.
#[test]
fn a_stub_replacing_its_ghost_joins_a_full_network() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server_with_limits(dir, "max_peers = 2", &[]);
    let mut a = stub(dir, port, "a", &[]);
    let _b = stub(dir, port, "b", &[]);
    // Frozen, a's connection is a ghost the server has not noticed.
    signal(&a, "-STOP");
    let again = stub_a_again(dir, port, "0", &[]);
    again.wait_for("joined 127.0.0.1");
    signal(&a, "-CONT");
    a.wait_exit();
    // Still full: a third stub is refused.
    let mut c = start_stub("c", dir, &port.to_string(), "c", "c", &[]);
    assert_eq!(c.wait_exit().code(), Some(1), "{:?}", c.output());
    c.wait_for("the network is full (2 stubs, the limit)");
    assert_eq!(again.count("error"), 0, "{:?}", again.output());
}

#[test]
fn a_stub_replacing_one_on_its_app_port_takes_the_port_once_the_other_lets_go() {
    // As when a profile with a fixed app_port is started twice.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &[]);
    let app_port = app_port(&a).to_string();
    // Frozen, the first holds its port after it is replaced, until it thaws and stops.
    signal(&a, "-STOP");
    let again = stub_a_again(dir, port, &app_port, &[]);
    again.wait_for("joined 127.0.0.1");
    signal(&a, "-CONT");
    a.wait_exit();
    again.wait_for(&format!("apps on 127.0.0.1:{app_port}"));
    assert_eq!(again.count("error"), 0, "{:?}", again.output());
}

#[test]
fn a_stub_whose_app_port_another_program_holds_does_not_replace_the_one_running() {
    // The same receiving directory, started again with an app port something else holds.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port().to_string();
    let mut again = stub_a_again(dir, port, &held_port, &[]);
    assert!(!again.wait_exit().success());
    again.wait_for(&format!(
        "cannot listen for apps on 127.0.0.1:{held_port}: Address already in use (os error 98), \
         by a program other than a stub on this receiving directory"
    ));
    assert_eq!(again.count("joined"), 0, "{:?}", again.output());
    // The first goes on, joined and serving.
    assert_eq!(server.count("rejoined: a"), 0);
    assert_eq!(a.count("replaced"), 0);
    client(&a)
        .modules("")
        .expect("the first stub still serves its apps");
}

/// A Rust provider outlives a restart of its stub: it provides its module again once the stub
/// is back on its app port (it used to stop, and the module was gone until someone restarted
/// it). The call it was running then is lost, and its caller is told the owner is gone.
#[test]
fn a_provider_provides_its_module_again_when_its_stub_restarts() {
    use std::sync::{mpsc, Mutex};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &[]);
    let b = stub(dir, port, "b", &[]);
    let a_port = app_port(&a).to_string();
    let address = format!("127.0.0.1:{a_port}");
    let provider = Proc::start("provider", &exe("examples/provider"), &[&address], dir);
    provider.wait_for(&format!("providing rustcalc through the stub at {address}"));
    // Another provider, in this process, whose call `hold` runs until the test lets it end.
    let (started, running) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let hold = move |(): ()| {
        started.send(()).unwrap();
        let _ = released.lock().unwrap().recv();
        Ok(1)
    };
    let slow = common::provider::Provider::new("slow")
        .function("hold", &[], "", hold)
        .function("two", &[], "", |(): ()| Ok(2))
        .provide_blocking(&address)
        .unwrap();
    std::thread::spawn(move || slow.serve_blocking());
    b.wait_for("received rustcalc from a");
    b.wait_for("received slow from a");
    let app = client(&b);
    assert_eq!(app.call("rustcalc", "add", (2, 3)).unwrap(), json!(5));
    let held = {
        let app = client(&b);
        std::thread::spawn(move || app.call("slow", "hold", ()))
    };
    running.recv_timeout(WAIT).unwrap();

    a.kill();
    let lost = held.join().unwrap();
    assert!(matches!(lost, Err(CallError::OwnerGone(_))), "{lost:?}");
    release.send(()).unwrap(); // its answer has nowhere to go
    provider.wait_for(&format!(
        "provider rustcalc: lost the stub at {address} (the stub closed the connection); \
         connecting again"
    ));
    let _again = stub_a_again(dir, port, &a_port, &[]);
    provider.wait_for(&format!(
        "providing rustcalc through the stub at {address} again"
    ));
    assert_eq!(
        eventually(|| app.call("rustcalc", "add", (2, 3))).unwrap(),
        json!(5)
    );
    assert_eq!(
        eventually(|| app.call("slow", "two", ())).unwrap(),
        json!(2)
    );
}

/// A provider whose stub comes back owning a module of that name (another program took the
/// name meanwhile) stops with the stub's refusal: trying again forever would hide the conflict.
#[test]
fn a_provider_whose_stub_comes_back_with_its_module_taken_stops_with_the_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &[]);
    let a_port = app_port(&a).to_string();
    let address = format!("127.0.0.1:{a_port}");
    let mut provider = Proc::start("provider", &exe("examples/provider"), &[&address], dir);
    provider.wait_for(&format!("providing rustcalc through the stub at {address}"));
    a.kill();
    provider.wait_for("provider rustcalc: lost the stub");
    let rustcalc = dir.join("rustcalc.py");
    std::fs::write(&rustcalc, "def add(a, b):\n    return a - b\n").unwrap();
    let _again = stub_a_again(
        dir,
        port,
        &a_port,
        &["--register", rustcalc.to_str().unwrap()],
    );
    assert_eq!(provider.wait_exit().code(), Some(1));
    let out = provider.output();
    assert_eq!(
        out.last().map(String::as_str),
        Some("error: this stub already owns a module 'rustcalc'"),
        "{out:?}"
    );
}

/// A module its stub accepted from a provider but the server then refuses (here: the stub was
/// frozen, its module left the network with it, `b` took the name, and the stub thawed and
/// uploaded it again before hearing of `b`'s) is not left provided in silence: the stub says
/// so as for a Python module, the provider stops with the refusal, and the name is free again.
#[test]
fn a_provider_whose_module_the_server_refuses_stops_with_the_refusal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = quick_server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let address = format!("127.0.0.1:{}", app_port(&a));
    let mut provider = Proc::start("provider", &exe("examples/provider"), &[&address], dir);
    provider.wait_for(&format!("providing rustcalc through the stub at {address}"));
    a.wait_for("registered rustcalc");

    signal(&a, "-STOP");
    server.wait_for("lost a:");
    let rustcalc = dir.join("rustcalc.py");
    std::fs::write(&rustcalc, "def add(a, b):\n    return a - b\n").unwrap();
    let _b = stub(dir, port, "b", &["--register", rustcalc.to_str().unwrap()]);
    server.wait_for("registered rustcalc by b");
    signal(&a, "-CONT");

    let refusal =
        "module 'rustcalc' is owned by 'b' (several owners need it declared shared by all)";
    a.wait_for(&format!("error: module rustcalc: {refusal}"));
    assert_eq!(provider.wait_exit().code(), Some(1));
    let out = provider.output();
    assert_eq!(
        out.last().map(String::as_str),
        Some(format!("error: the server refused module 'rustcalc': {refusal}").as_str()),
        "{out:?}"
    );
    // `a` no longer counts it as its own: its apps reach `b`'s, and providing it again is
    // refused for `b`'s sake, not as one `a` owns already.
    let app = client(&a);
    assert_eq!(
        eventually(|| app.call("rustcalc", "add", (5, 3))).unwrap(),
        json!(2)
    );
    let mut again = Proc::start("again", &exe("examples/provider"), &[&address], dir);
    assert_eq!(again.wait_exit().code(), Some(1));
    assert_eq!(
        again.output(),
        ["error: module 'rustcalc' is owned by 'b' (to provide it too, both must declare it shared)"]
    );
}

/// The fields of `/proc/PID/stat` after the command name (state, parent, ...), if the
/// process is there. `pid (comm) state ppid ...`: comm may hold spaces, so split after its ')'.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    Some(after.split(' ').map(str::to_owned).collect())
}

/// The process ids whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    let pids = std::fs::read_dir("/proc").unwrap().flatten();
    let pids = pids.filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
    pids.filter(|pid| stat_fields(&pid.to_string()).is_some_and(|f| f[1] == parent))
        .collect()
}

#[test]
fn a_killed_stub_takes_its_workers_with_it_and_what_they_started() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let m = dir.join("spin.py");
    let source = "import subprocess\n\
                  at_import = subprocess.Popen(['sleep', '300'])\n\n\
                  def started():\n    \
                  return [at_import.pid, subprocess.Popen(['sleep', '300']).pid]\n\n\
                  def spin():\n    open('spinning', 'w').close()\n    while True:\n        pass\n";
    std::fs::write(&m, source).unwrap();
    let mut a = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    a.wait_for("registered spin");
    let app = client(&a);
    let mut pids: Vec<u64> = app.call_as("spin", "started", ()).unwrap();
    let workers = children(a.pid());
    assert_eq!(workers.len(), 1, "the stub's children: {workers:?}");
    pids.extend(workers.into_iter().map(u64::from));
    // A call still running, in a worker that would not notice its stdin closing.
    let _call = std::thread::spawn(move || app.call("spin", "spin", ()));
    assert!(soon(|| dir.join("spinning").exists()), "spin never ran");
    a.kill(); // SIGKILL: the stub cleans nothing up itself
    all_end_with_their_stub(pids);
}

#[test]
fn a_killed_stub_takes_its_workers_with_it_after_a_module_sigterms_its_own_group() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let m = dir.join("deaf.py");
    // The common way to end all one started: SIGTERM to one's own group. The module and what
    // it started shrug it off; the watcher, in the same group, used to die of it, and the
    // worker no longer ended with its stub.
    let source = "import os, signal, subprocess, time\n\n\
                  def shrug():\n    \
                  signal.signal(signal.SIGTERM, signal.SIG_IGN)\n    \
                  child = subprocess.Popen(['sh', '-c', \"trap '' TERM; exec sleep 300\"])\n    \
                  os.killpg(os.getpgrp(), signal.SIGTERM)\n    \
                  open('shrugged', 'w').write(f'{os.getpid()} {child.pid}\\n')\n    \
                  time.sleep(300)\n";
    std::fs::write(&m, source).unwrap();
    let mut a = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    a.wait_for("registered deaf");
    let app = client(&a);
    // A call still running, in a worker that would not notice its stdin closing.
    let _call = std::thread::spawn(move || app.call("deaf", "shrug", ()));
    let shrugged = dir.join("shrugged");
    assert!(soon(|| pids_in(&shrugged).is_some()), "shrug never ran");
    let pids = pids_in(&shrugged).unwrap();
    assert!(
        pids.iter().all(|&pid| running(pid)),
        "{pids:?} ended at SIGTERM"
    );
    a.kill(); // SIGKILL: the stub cleans nothing up itself
    all_end_with_their_stub(pids);
}

#[test]
fn a_stub_killed_while_it_describes_a_module_leaves_nothing_of_the_description_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    // Importable by name from the stub's working directory (`dir`); its import outlasts the test.
    let source = "import os, subprocess, time\n\
                  child = subprocess.Popen(['sleep', '300'])\n\
                  open('describing', 'w').write(f'{os.getpid()} {child.pid}\\n')\n\
                  time.sleep(300)\n";
    std::fs::write(dir.join("hangs.py"), source).unwrap();
    let mut a = stub(dir, port, "a", &["--expose", "hangs"]);
    let describing = dir.join("describing");
    assert!(
        soon(|| pids_in(&describing).is_some()),
        "the import never ran"
    );
    a.kill();
    all_end_with_their_stub(pids_in(&describing).unwrap());
}

/// The pids a module wrote on one line to `path`, once the line is whole.
fn pids_in(path: &Path) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let pids = text.split_whitespace().map(|p| p.parse().unwrap());
    text.ends_with('\n').then(|| pids.collect())
}

/// Asserts that each of `pids`, a killed stub's worker or what one started, ends.
fn all_end_with_their_stub(pids: Vec<u64>) {
    for pid in pids {
        assert!(
            ends(pid),
            "process {pid} (a worker, or what it started) outlived its stub"
        );
    }
}

#[test]
fn arguments_and_results_over_the_frame_limit_fail_with_their_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The default heartbeat, not a quick server's: a stub busy with a value of megabytes (a
    // debug build on a busy machine) can stay silent longer than 600 ms, and be dropped.
    let (_server, port) = server_with_limits(dir, "max_frame_bytes = 1000000", &[]);
    let _owner = owner_with_limits(dir, port, "max_frame_bytes = 1000000");
    let b = stub(dir, port, "b", &[]);
    b.wait_for("received m from a");
    let app = client(&b);

    let huge = "y".repeat(5_000_000);
    match app.call("m", "add", (huge.as_str(), "")) {
        Err(CallError::TooLarge(msg)) => {
            assert!(msg.contains("over the frame limit of 4194304"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    match app.call("m", "big", (2_000_000,)) {
        Err(CallError::TooLarge(msg)) => {
            // The limit as an argument's error names it, and the room the reply takes.
            let said = "the result is 2000002 bytes, over the frame limit of 1000000 bytes \
                        (less 1024 kept for the reply around it)";
            assert!(msg.ends_with(said), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(app.call("m", "big", (3,)).unwrap(), json!("xxx"));

    // Under b's limit, over the server's: the server answers the call it cannot read.
    let over_server = "y".repeat(1_500_000);
    let wait = Some(Duration::from_secs(20));
    let args = (over_server.as_str(), "");
    match app.call_with("m", "add", args, Default::default(), wait) {
        Err(CallError::TooLarge(msg)) => assert!(msg.contains("limit of 1000000"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_call_that_fits_its_apps_frame_but_not_the_next_hops_is_refused_with_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limits = "max_frame_bytes = 4096";
    let (server, port) = server_with_limits(dir, limits, &[]);
    let _owner = owner_with_limits(dir, port, limits);
    let b = stub(
        dir,
        port,
        "b",
        &["-c", dir.join("stub.toml").to_str().unwrap()],
    );
    b.wait_for("received m from a");
    // Ten calls first: b's own ids for its calls now have two digits, the app's below one.
    let app = client(&b);
    for i in 0..10 {
        assert_eq!(app.call("m", "add", (i, 1)).unwrap(), json!(i + 1));
    }
    // Exactly the limit as the app writes it, and as b would write it on but for the id.
    let call = |pad: &str| {
        format!(
            r#"{{"cmd":"call","data":{{"id":1,"module":"m","function":"add","args":["{pad}",""],"timeout_ms":60000}}}}"#
        )
    };
    let pad = "y".repeat(4096 - call("").len());
    let mut raw = raw_app(&b);
    writeln!(raw, "{}", call(&pad)).unwrap();
    let mut line = String::new();
    BufReader::new(&raw).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["data"]["id"], 1, "{line}");
    let error = &reply["data"]["result"]["Err"];
    assert_eq!(error["kind"], "too_large", "{line}");
    let said = "on its way to the owner (its ids at their widest), over the frame limit of 4096";
    assert!(error["message"].as_str().unwrap().contains(said), "{line}");
    // b never sent it: the server, which reads b's frames in order, saw no bad frame.
    assert_eq!(app.call("m", "add", (1, 1)).unwrap(), json!(2));
    assert_eq!(server.count("bad frame"), 0, "{:?}", server.output());
}

/// A descriptor many times the smallest frame limit goes to and from stubs and a server at that
/// limit: its chunks fit any frame limit a profile may set (each was 64 KiB, refused by them).
#[test]
fn descriptors_larger_than_the_smallest_frame_sync_at_that_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let functions = (0..60).map(|i| format!("def func_{i}(alpha, beta, gamma={i}):\n    \"\"\"Doc line {i} of a module bigger than a frame.\"\"\"\n    return {i}\n"));
    std::fs::write(dir.join("big.py"), functions.collect::<String>()).unwrap();
    let small = "max_frame_bytes = 4096";
    let (server, port) = server_with_limits(dir, small, &[]);
    let profile = dir.join("stub.toml");
    std::fs::write(&profile, format!("[limits]\n{small}\n")).unwrap();
    let small = ["-c", profile.to_str().unwrap()];
    let b = stub(dir, port, "b", &small);
    // One way: registered by a stub at the limit, received by one at the default.
    let big = dir.join("big.py");
    let a = stub(
        dir,
        port,
        "a",
        &[&small[..], &["--register", big.to_str().unwrap()]].concat(),
    );
    a.wait_for("registered big");
    let c = stub(dir, port, "c", &[]);
    c.wait_for("received big from a");
    // The other way: received by a stub at the limit.
    b.wait_for("received big from a");
    assert_eq!(
        client(&b).call("big", "func_59", (1, 2)).unwrap(),
        json!(59)
    );
    let size = std::fs::metadata(dir.join("b/big.json")).unwrap().len();
    assert!(
        size > 4 * 4096,
        "{size} bytes: not bigger than a few frames"
    );
    assert_eq!(server.count("bad frame"), 0, "{:?}", server.output());
}

#[test]
fn directories_removed_while_in_use_are_made_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &[]);
    let b = stub(dir, port, "b", &[]);
    // As a cleaner of old files in /tmp would, under a server and a stub that run on.
    std::fs::remove_dir_all(dir.join("server")).unwrap();
    std::fs::remove_dir_all(dir.join("b")).unwrap();
    let m = module(dir);
    let a = stub(dir, port, "a", &["--register", &m]);
    a.wait_for("registered m");
    b.wait_for("received m from a");
    server.wait_for("was removed; made it again");
    assert!(dir.join("server/m.json").exists());
    assert!(dir.join("b/m.json").exists());
    assert_eq!(client(&b).call("m", "add", (1, 2)).unwrap(), json!(3));
}

/// A receiving directory made again keeps the stub's session: a stub started on it replaces
/// the one running there, as before it was removed (it was refused, the name in use).
#[test]
fn a_receiving_directory_made_again_keeps_its_stubs_session() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &[]);
    let mut b = stub(dir, port, "b", &[]);
    std::fs::remove_dir_all(dir.join("b")).unwrap();
    let m = module(dir);
    let _a = stub(dir, port, "a", &["--register", &m]);
    b.wait_for("received m from a");
    let again = start_stub("again", dir, &port.to_string(), "b", "b", &[]);
    again.wait_for("joined 127.0.0.1");
    assert!(b.wait_exit().success());
    server.wait_for("rejoined: b");
}

#[test]
fn a_message_over_the_frame_limit_is_refused_before_it_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &[]);
    let profile = dir.join("stub.toml");
    std::fs::write(&profile, "[limits]\nmax_frame_bytes = 4096\n").unwrap();
    let mut a = stub(dir, port, "a", &["-l", "-c", profile.to_str().unwrap()]);
    a.send(&format!("s:{}", "y".repeat(4096)));
    a.wait_for("over this stub's max_frame_bytes (4096)");
    // The stub goes on; the server never saw the message (frames arrive in order).
    a.send("s:still here");
    server.wait_for("message from a: still here");
    assert!(!server.output().join("\n").contains("yyy"));
}

#[test]
fn a_request_the_stub_cannot_read_is_answered_by_its_id() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let m = module(dir);
    let a = stub(dir, port, "a", &["--register", &m]);
    a.wait_for("registered m");
    let mut app = raw_app(&a);
    // A list with a trailing comma, which JSON refuses.
    let call = r#"{"cmd": "call", "data": {"id": 9, "module": "m", "function": "add", "args": [1, 2,], "timeout_ms": 30000}}"#;
    writeln!(app, "{call}").unwrap();
    let mut line = String::new();
    BufReader::new(&app).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["cmd"], "reply", "{line}");
    assert_eq!(reply["data"]["id"], 9, "{line}");
    let error = &reply["data"]["result"]["Err"];
    assert_eq!(error["kind"], "protocol", "{line}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("malformed frame"),
        "{line}"
    );
}

#[test]
fn a_request_whose_id_is_not_a_whole_integer_is_refused_without_an_id() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let m = module(dir);
    let a = stub(dir, port, "a", &["--register", &m]);
    a.wait_for("registered m");
    let mut app = raw_app(&a);
    let call = |id: &str| {
        format!(
            r#"{{"cmd":"call","data":{{"id":{id},"module":"m","function":"add","args":[1,2],"timeout_ms":30000}}}}"#
        )
    };
    // A real call 1, then ids whose leading digits read 1, 1 and 12.
    let bad = ["1.5", "1e3", "12abc"];
    for id in ["1"].iter().chain(&bad) {
        writeln!(app, "{}", call(id)).unwrap();
    }
    let mut lines = BufReader::new(&app).lines();
    let mut answers: Vec<serde_json::Value> = (0..1 + bad.len())
        .map(|_| serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap())
        .collect();
    answers.sort_by_key(|a| a["cmd"] != "reply");
    let reply = json!({"cmd": "reply", "data": {"id": 1, "result": {"Ok": 3}}});
    assert_eq!(answers[0], reply, "{answers:?}");
    for error in &answers[1..] {
        assert_eq!(error["cmd"], "error", "{answers:?}");
        let message = error["data"]["message"].as_str().unwrap();
        assert!(message.starts_with("malformed frame: "), "{message}");
    }
}

#[test]
fn an_app_that_does_not_read_its_answers_is_cut_off_and_others_go_on() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = owner_with_limits(dir, port, "queue_bytes = 1000000");
    let mut deaf = std::net::TcpStream::connect(("127.0.0.1", app_port(&a))).unwrap();
    deaf.set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // 100 MB of answers asked for, none read: far more than the socket buffers hold.
    for id in 0..1000 {
        let call = json!({"cmd": "call", "data": {"id": id, "module": "m", "function": "big",
                          "args": [100_000], "timeout_ms": 60_000}});
        if writeln!(deaf, "{call}").is_err() {
            break;
        }
    }
    a.wait_for("dropping an app connection: it does not read its answers");
    let app = client(&a);
    assert_eq!(app.call("m", "add", (1, 2)).unwrap(), json!(3));
}

#[test]
fn an_app_cut_off_for_not_reading_is_reported_once() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = owner_with_limits(dir, port, "queue_frames = 50");
    // An app that asks for 100 MB of answers and reads none: once its socket takes no more,
    // answers wait in the stub, and past 50 of them it is cut off.
    let mut deaf = raw_app(&a);
    let calls: String = (0..1000)
        .map(|id| {
            let call = json!({"cmd": "call", "data": {"id": id, "module": "m", "function": "big",
                              "args": [100_000], "timeout_ms": 20_000}});
            format!("{call}\n")
        })
        .collect();
    deaf.write_all(calls.as_bytes()).unwrap();
    a.wait_for("dropping an app connection: it does not read its answers");
    // The answers still coming for it find it cut off: it was said once.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(a.count("dropping an app connection"), 1);
}

#[test]
fn a_queue_of_1_frame_lets_an_app_be_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = owner_with_limits(dir, port, "queue_frames = 1");
    let app = client(&a);
    for i in 0..3 {
        assert_eq!(app.call("m", "add", (i, 1)).unwrap(), json!(i + 1));
    }
    assert_eq!(a.count("dropping"), 0, "{:?}", a.output());
}

#[test]
fn a_limit_that_cannot_work_is_refused_at_start_naming_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let profile = dir.join("limits.toml");
    let refused = |exe_name: &str, limit: &str, args: &[&str]| {
        std::fs::write(&profile, format!("[limits]\n{limit}\n")).unwrap();
        let mut args = args.to_vec();
        args.extend(["-c", profile.to_str().unwrap()]);
        let mut p = Proc::start(exe_name, &exe(exe_name), &args, dir);
        assert!(!p.wait_exit().success());
        let out = p.output().join("\n");
        assert!(
            out.contains("bad profile") && out.contains(limit) && !out.contains("listening"),
            "{out}"
        );
        out
    };
    refused("server_stub", "queue_frames = 0", &["-p", "0", "-d", "srv"]);
    let stub = stub_args("1", "a", "a");
    let stub: Vec<&str> = stub.iter().map(String::as_str).collect();
    refused("client_stub", "queue_bytes = 0", &stub);
    let out = refused("client_stub", "max_frame_bytes = 70", &stub);
    assert!(out.contains("must be at least 4096"), "{out}");
}

#[test]
fn a_module_over_the_stubs_own_size_limit_is_refused_before_upload() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    let m = module(dir);
    let profile = dir.join("stub.toml");
    std::fs::write(&profile, "[limits]\nmax_module_bytes = 100\n").unwrap();
    let args = ["--register", &m, "-c", profile.to_str().unwrap()];
    let a = stub(dir, port, "a", &args);
    a.wait_for("over this stub's max_module_bytes (100)");
    a.wait_for("joined");
    assert!(!a.output().join("\n").contains("registered m"));
}

#[test]
fn a_slow_import_is_reported_and_what_the_module_prints_reaches_the_log_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    let m = dir.join("m.py");
    let source = "import time\nprint('hello from the import', flush=True)\ntime.sleep(12)\n";
    std::fs::write(&m, format!("{source}{MODULE}")).unwrap();
    let profile = dir.join("stub.toml");
    std::fs::write(&profile, "[log]\nfile = \"a.log\"\n").unwrap();
    let args = [
        "--register",
        m.to_str().unwrap(),
        "-c",
        profile.to_str().unwrap(),
    ];
    let a = stub(dir, port, "a", &args);
    a.wait_for("[m] still importing after 10 s");
    let log = std::fs::read_to_string(dir.join("a.log")).unwrap();
    assert!(log.contains("[m] hello from the import"), "{log}");
    assert!(log.contains("[m] still importing after 10 s"), "{log}");
}

#[test]
fn a_call_made_while_its_module_still_imports_is_told_so_before_its_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    let m = dir.join("m.py");
    std::fs::write(&m, format!("import time\ntime.sleep(600)\n{MODULE}")).unwrap();
    let a = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    a.wait_for("registered m");
    let b = stub(dir, port, "b", &[]);
    // The owner answers before the app's own timeout fires, the way back included; it used to
    // leave the call to time out with no reason.
    let app = client(&b).with_timeout(Duration::from_secs(5));
    let answer = eventually(|| app.call("m", "add", (1, 2)));
    let told = "module 'm' is still starting: its worker has been importing it for ";
    assert!(
        matches!(&answer, Err(CallError::Timeout(message)) if message.starts_with(told)),
        "{answer:?}"
    );
}

#[test]
fn a_module_whose_interpreter_cannot_start_is_an_error_at_once_and_its_calls_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    let m = module(dir);
    let python = dir.join("no-such-python");
    let named = format!("`{}`", python.display());
    let args = ["--register", &m, "--python", python.to_str().unwrap()];
    let a = stub(dir, port, "a", &args);
    let told = a.wait_for("error: could not start the Python interpreter");
    assert!(told.contains(&named), "{told}");
    assert!(told.contains("module 'm'"), "{told}");
    // Registered all the same, as a module that fails to import is; but told first.
    a.wait_for("registered m");
    let out = a.output();
    let at = |text: &str| out.iter().position(|line| line.contains(text)).unwrap();
    assert!(
        at("error: could not start") < at("registered m"),
        "{out:#?}"
    );
    let b = stub(dir, port, "b", &[]);
    let answer = eventually(|| client(&b).call("m", "add", (1, 2)));
    assert!(
        matches!(&answer, Err(CallError::Failed(e)) if e.message.contains(&named)),
        "{answer:?}"
    );
}

/// A server played by the test: it welcomes the stub that connects (as `b`), then `talk`
/// speaks for it, writing frames to the stream and reading the stub's from the reader.
fn fake_server(
    talk: impl FnOnce(&mut std::net::TcpStream, &mut dyn BufRead) + Send + 'static,
) -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut from_stub = BufReader::new(s.try_clone().unwrap());
        let mut hello = String::new();
        from_stub.read_line(&mut hello).unwrap();
        let welcome = ToClient::Welcome {
            name: "b".into(),
            version: PROTOCOL_VERSION,
            heartbeat_ms: 60_000,
            left: Vec::new(),
        };
        send(&mut s, &welcome);
        talk(&mut s, &mut from_stub);
    });
    (port, server)
}

fn send(s: &mut std::net::TcpStream, msg: &ToClient) {
    writeln!(s, "{}", serde_json::to_string(msg).unwrap()).unwrap();
}

/// The next frame the stub sends that `pick` takes (heartbeats and the like are skipped).
fn next_frame<T>(from_stub: &mut dyn BufRead, pick: impl Fn(ToServer) -> Option<T>) -> T {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(from_stub.read_line(&mut line).unwrap() > 0, "the stub left");
        if let Some(it) = pick(serde_json::from_str(&line).unwrap()) {
            return it;
        }
    }
}

/// The next call the stub sends.
fn next_call(from_stub: &mut dyn BufRead) -> common::proto::Call {
    next_frame(from_stub, |f| match f {
        ToServer::Call(call) => Some(call),
        _ => None,
    })
}

/// Answers the next call the stub sends with what `result` makes of it.
fn answer_next_call(
    s: &mut std::net::TcpStream,
    from_stub: &mut dyn BufRead,
    result: impl FnOnce(&common::proto::Call) -> serde_json::Value,
) {
    let call = next_call(from_stub);
    let result = Ok(Json::from(result(&call)));
    send(
        s,
        &ToClient::Reply(Reply {
            id: call.id,
            result,
        }),
    );
}

fn offer(module: &str, owner: &str, bytes: &[u8]) -> ToClient {
    ToClient::Offer(Offer {
        module: module.into(),
        owner: owner.into(),
        md5: common::store::md5_hex(bytes),
        size: bytes.len() as u64,
    })
}

#[test]
fn names_a_server_would_never_send_are_refused_not_printed() {
    let tmp = tempfile::tempdir().unwrap();
    // A hostile server offers modules under forged names.
    let (port, server) = fake_server(|s, _| {
        send(s, &offer("m", "a\n[server] forged line", b"{}"));
        send(s, &offer("../escape", "a", b"{}"));
        std::thread::sleep(Duration::from_secs(2));
    });
    let b = stub(tmp.path(), port, "b", &[]);
    b.wait_n("not valid names, ignored", 2);
    let out = b.output().join("\n");
    assert!(out.contains(r"'a\n[server] forged line'"), "{out}");
    assert!(!out.contains("fetching"), "{out}");
    server.join().unwrap();
}

#[test]
fn frames_with_data_before_cmd_are_read_from_an_app_and_from_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let module = || {
        let provider = common::provider::Provider::new("m");
        let provider = provider.function("f", &["x"], "", |(x,): (i64,)| Ok(x));
        provider.descriptor().to_bytes()
    };
    // The server offers `m`, then answers the call for it with `data` before `cmd`.
    let (port, server) = fake_server(move |s, from_stub| {
        send(s, &offer("m", "a", &module()));
        next_frame(from_stub, |f| {
            matches!(f, ToServer::Want { .. }).then_some(())
        });
        for chunk in common::chunk::split("m", &module()) {
            send(s, &ToClient::Chunk(chunk));
        }
        let id = next_call(from_stub).id;
        let reply = format!(r#"{{"data":{{"id":{id},"result":{{"Ok":[1, 2]}}}},"cmd":"reply"}}"#);
        writeln!(s, "{reply}").unwrap();
        std::thread::sleep(Duration::from_secs(1));
    });
    let b = stub(tmp.path(), port, "b", &[]);
    b.wait_for("received m from a");
    let app = raw_app(&b);
    let call = r#"{"data":{"id":1,"module":"m","function":"f","args":[1],"timeout_ms":30000},"cmd":"call"}"#;
    writeln!(&app, "{call}").unwrap();
    let mut line = String::new();
    BufReader::new(&app).read_line(&mut line).unwrap();
    let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        reply,
        json!({"cmd": "reply", "data": {"id": 1, "result": {"Ok": [1, 2]}}})
    );
    server.join().unwrap();
}

#[test]
fn calls_go_on_while_a_new_version_of_a_module_is_fetched() {
    let tmp = tempfile::tempdir().unwrap();
    let version = |functions: &[&str]| {
        let mut provider = common::provider::Provider::new("m");
        for f in functions {
            provider = provider.function(f, &[], "", |(): ()| Ok(1));
        }
        provider.descriptor().to_bytes()
    };
    // The server sends version 1, then offers version 2 and holds its chunks back: the
    // stub keeps version 1's headers meanwhile, and the call still goes out.
    let (port, server) = fake_server(move |s, from_stub| {
        let v1 = version(&["f"]);
        send(s, &offer("m", "a", &v1));
        next_frame(from_stub, |f| {
            matches!(f, ToServer::Want { .. }).then_some(())
        });
        for chunk in common::chunk::split("m", &v1) {
            send(s, &ToClient::Chunk(chunk));
        }
        send(s, &offer("m", "a", &version(&["f", "g"])));
        answer_next_call(s, from_stub, |call| json!(call.function));
        std::thread::sleep(Duration::from_secs(1));
    });
    let b = stub(tmp.path(), port, "b", &[]);
    b.wait_for("received m from a");
    b.wait_n("m from a: fetching", 2);
    assert_eq!(client(&b).call("m", "f", ()).unwrap(), json!("f"));
    server.join().unwrap();
}

#[test]
fn a_module_whose_first_copy_is_still_being_fetched_is_called_and_its_description_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let module = common::provider::Provider::new("m")
        .function("f", &["x"], "", |(x,): (i64,)| Ok(x))
        .descriptor()
        .to_bytes();
    // The server offers `m` and holds its chunks back: the stub has no headers to check the
    // call against, so it sends the call on for the owner to check.
    let (port, server) = fake_server(move |s, from_stub| {
        send(s, &offer("m", "a", &module));
        answer_next_call(s, from_stub, |call| json!(call.args));
        std::thread::sleep(Duration::from_secs(1));
    });
    let b = stub(tmp.path(), port, "b", &[]);
    b.wait_for("m from a: fetching");
    let app = client(&b);
    let described = app.describe("m").unwrap_err().to_string();
    assert!(
        described.contains("module 'm' from a is still being fetched"),
        "{described}"
    );
    assert_eq!(app.call("m", "f", (7,)).unwrap(), json!([7]));
    server.join().unwrap();
}

/// Whether process `pid` is running (a zombie is not: it has ended, unreaped).
fn running(pid: u64) -> bool {
    stat_fields(&pid.to_string()).is_some_and(|f| f[0] != "Z" && f[0] != "X")
}

/// Waits until process `pid` is no longer running; whether it ended in time.
fn ends(pid: u64) -> bool {
    soon(|| !running(pid))
}

#[test]
fn what_a_module_starts_ends_with_its_worker_and_with_its_stub() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    let m = dir.join("m.py");
    let source =
        "import subprocess\n\ndef spawn():\n    return subprocess.Popen(['sleep', '300']).pid\n";
    std::fs::write(&m, source).unwrap();
    let mut a = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    a.wait_for("registered m");
    let app = client(&a);
    let spawned = || app.call("m", "spawn", ()).unwrap().as_u64().unwrap();
    // A worker restarted (a reload): what the old one started ends with it.
    let first = spawned();
    assert!(running(first));
    app.reload("m").unwrap();
    assert!(
        ends(first),
        "process {first}, started by a worker since restarted, still runs"
    );
    // A stub that stops: what its workers started ends with them.
    let second = spawned();
    assert!(running(second));
    assert!(a.terminate().success());
    assert!(
        ends(second),
        "process {second}, started by a stopped stub's worker, still runs"
    );
}

#[test]
fn an_exposed_module_whose_import_starts_a_process_is_described_without_waiting_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    // Importable by name: `python -c` looks in the stub's working directory (`dir`).
    let source = "import subprocess\n\
                  child = subprocess.Popen(['sleep', '120'])\n\
                  open('children', 'a').write(f'{child.pid}\\n')\n\n\
                  def f():\n    return 1\n";
    std::fs::write(dir.join("starts_one.py"), source).unwrap();
    let mut a = stub(dir, port, "a", &["--expose", "starts_one"]);
    // The process the import started holds the describing interpreter's output open: the
    // stub used to wait for it (two minutes, frozen), and it outlived the description.
    a.wait_for("registered starts_one");
    // The first line: the worker imports it too, later.
    let children = std::fs::read_to_string(dir.join("children")).unwrap();
    let describing: u64 = children.lines().next().unwrap().parse().unwrap();
    assert!(
        ends(describing),
        "process {describing}, started by the import, still runs"
    );
    assert_eq!(client(&a).call("starts_one", "f", ()).unwrap(), json!(1));
    // What the worker's import started ends when the stub stops.
    assert!(a.terminate().success());
    let children = std::fs::read_to_string(dir.join("children")).unwrap();
    for pid in children.lines().map(|l| l.parse().unwrap()) {
        assert!(ends(pid), "process {pid}, started by an import, still runs");
    }
}

#[test]
fn an_exposed_module_whose_import_sets_a_process_apart_holding_its_output_is_described() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    // The process leaves the describing interpreter's group (so it is not killed with it) and
    // keeps its stderr open.
    let source = "import subprocess\n\
                  child = subprocess.Popen(['sleep', '120'], start_new_session=True)\n\
                  open('children', 'a').write(f'{child.pid}\\n')\n\n\
                  def f():\n    return 1\n";
    std::fs::write(dir.join("sets_apart.py"), source).unwrap();
    let a = stub(dir, port, "a", &["--expose", "sets_apart"]);
    // It used to fail after 10 s, "importing it took over 10 s", though the import had ended.
    a.wait_for("registered sets_apart");
    assert_eq!(client(&a).call("sets_apart", "f", ()).unwrap(), json!(1));
    assert_eq!(a.count("error"), 0, "{:?}", a.output());
    // Set apart, they outlive the stub (as the README says): ended here.
    let children = std::fs::read_to_string(dir.join("children")).unwrap();
    for pid in children.lines() {
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
}

#[test]
fn installed_modules_are_described_side_by_side_and_a_slow_one_delays_no_other() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return; // One at a time on one core (see the README).
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    // Each import notes it began, then waits for the test.
    for name in ["first", "second"] {
        let source = format!(
            "import os, time\nopen('importing_{name}', 'a').close()\n\
             while not os.path.exists('go'):\n    time.sleep(0.05)\n\ndef f():\n    return 1\n"
        );
        std::fs::write(dir.join(format!("{name}.py")), source).unwrap();
    }
    let a = stub(dir, port, "a", &["--expose", "first", "--expose", "second"]);
    // The second used to wait for the first's import to end (up to 10 s each).
    assert!(
        soon(|| dir.join("importing_first").exists() && dir.join("importing_second").exists()),
        "the second import did not begin while the first was under way"
    );
    std::fs::write(dir.join("go"), "").unwrap();
    a.wait_for("registered first");
    a.wait_for("registered second");
    assert_eq!(client(&a).call("second", "f", ()).unwrap(), json!(1));
}

#[test]
fn a_stub_describing_an_installed_module_whose_import_hangs_still_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_srv, port) = quick_server(dir, &[]);
    // Its import says it started, then waits for the test (relative paths: the stub's
    // working directory, `dir`, where `python -c` finds the module too).
    let source = "import os, time\n\
                  open('importing', 'w').close()\n\
                  while not os.path.exists('go'):\n    time.sleep(0.05)\n\n\
                  def f():\n    return 1\n";
    std::fs::write(dir.join("hangs.py"), source).unwrap();
    let (importing, go) = (dir.join("importing"), dir.join("go"));
    let mut a = stub(dir, port, "a", &["--expose", "hangs", "-l"]);
    let app = client(&a);
    // Described at start: the stub used to serve nothing until the import ended (or ran
    // out of time, leaving the module unexposed).
    assert!(soon(|| importing.exists()));
    app.ping().unwrap();
    // Meanwhile it is not owned yet, but it is on its way: a reload says so, and `sc:`
    // saves it.
    let early = app.reload("hangs").unwrap_err().to_string();
    assert!(early.contains("hangs is still being described"), "{early}");
    a.send("sc:saved.toml");
    a.wait_for("saved the running configuration");
    let saved = std::fs::read_to_string(dir.join("saved.toml")).unwrap();
    assert!(saved.contains("expose = [\"hangs\"]"), "{saved}");
    std::fs::write(&go, "").unwrap();
    a.wait_for("registered hangs");
    assert_eq!(app.call("hangs", "f", ()).unwrap(), json!(1));
    // Described again for a reload (an app's here; the shell's goes the same way), which is
    // answered once the import has ended.
    std::fs::remove_file(&go).unwrap();
    std::fs::remove_file(&importing).unwrap();
    let reload = std::thread::spawn({
        let reloader = client(&a);
        move || reloader.reload("hangs")
    });
    // An app that asks, then sends nothing more (half-closes), is still answered before its
    // connection is closed.
    let mut half_closed = raw_app(&a);
    let ask = r#"{"cmd":"reload","data":{"id":7,"module":"hangs"}}"#;
    writeln!(half_closed, "{ask}").unwrap();
    half_closed.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(soon(|| importing.exists()));
    app.ping().unwrap();
    std::fs::write(&go, "").unwrap();
    assert_eq!(reload.join().unwrap().unwrap().len(), 32, "the md5");
    let mut answer = String::new();
    half_closed.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(r#""id":7,"result":{"Ok":""#), "{answer}");
    assert_eq!(app.call("hangs", "f", ()).unwrap(), json!(1));
}

#[test]
fn apps_and_providers_on_stubs_with_a_larger_frame_limit_take_values_up_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let limits = "max_frame_bytes = 8000000";
    let (_server, port) = server_with_limits(dir, limits, &[]);
    let owner = owner_with_limits(dir, port, limits);
    let profile = dir.join("b.toml");
    std::fs::write(&profile, format!("[limits]\n{limits}\n")).unwrap();
    let b = stub(dir, port, "b", &["-c", profile.to_str().unwrap()]);
    b.wait_for("received m from a");
    // The app's profile: b's limits, and the port b took.
    let app_profile = dir.join("app.toml");
    let app_port = app_port(&b);
    let text = format!("app_port = {app_port}\n[limits]\n{limits}\n");
    std::fs::write(&app_profile, text).unwrap();
    smol::block_on(async {
        let profile = app_profile.to_str().unwrap();
        let app = common::app::AsyncClient::connect_profile(profile)
            .await
            .unwrap();
        // 5 MB: over the default limit, under the profile's.
        let result = app.call("m", "big", (5_000_000,)).await;
        assert_eq!(
            result.map(|v| v.as_str().map(str::len)),
            Ok(Some(5_000_000))
        );
        assert_eq!(app.call("m", "add", (1, 2)).await, Ok(json!(3)));
        // The same limit given by hand.
        let address = format!("127.0.0.1:{app_port}");
        let app = common::app::AsyncClient::connect(&address).await.unwrap();
        let app = app.with_max_frame(8_000_000);
        let result = app.call("m", "big", (5_000_000,)).await;
        assert_eq!(
            result.map(|v| v.as_str().map(str::len)),
            Ok(Some(5_000_000))
        );
    }); // A Python app through the generated stub: the stub's limit, not the default, applies.
    let script = "import m, _stubnet\n\
                  print(len(m.big(5_000_000)), len(m.add('y' * 5_000_000, '')))\n\
                  try:\n    m.add('y' * 9_000_000, '')\n\
                  except _stubnet.RemoteError as e:\n    print(e.kind)\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .current_dir(dir.join("b"))
        .env("STUBNET_APP_PORT", app_port.to_string())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "5000000 5000000\ntoo_large\n",
        "{err}"
    );
    // A Rust program providing a module through b, called through a with a 5 MB argument.
    let size = |(s,): (String,)| Ok(s.len());
    let providing = common::provider::Provider::new("pv")
        .function("size", &["s"], "", size)
        .with_max_frame(8_000_000)
        .provide_blocking(&format!("127.0.0.1:{app_port}"))
        .unwrap();
    std::thread::spawn(move || providing.serve_blocking());
    owner.wait_for("received pv from b");
    let app = client(&owner).with_max_frame(8_000_000);
    assert_eq!(
        app.call("pv", "size", ("y".repeat(5_000_000),)),
        Ok(json!(5_000_000))
    );
    // One that reads calls up to the default limit only: a larger call fails at once, and the
    // next one is served as before (the provider used to stop at the first).
    let providing = common::provider::Provider::new("small")
        .function("size", &["s"], "", size)
        .provide_blocking(&format!("127.0.0.1:{app_port}"))
        .unwrap();
    let serving = std::thread::spawn(move || providing.serve_blocking());
    owner.wait_for("received small from b");
    match app.call("small", "size", ("y".repeat(5_000_000),)) {
        Err(CallError::TooLarge(m)) => assert!(m.contains("cannot read the call"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(app.call("small", "size", ("y",)), Ok(json!(1)));
    assert!(!serving.is_finished());
}

/// An upload the server refuses is answered once, however many chunks it came in, and a
/// withdraw sent behind it is answered by its own refusal: the module, registered later from a
/// smaller file, reloads and withdraws as any other.
#[test]
fn a_refused_upload_and_the_withdraw_behind_it_are_each_answered_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server_with_limits(dir, "max_module_bytes = 3000", &[]);
    let m = dir.join("m.py");
    let functions = (0..60).map(|i| format!("def func_{i}(alpha, beta):\n    return {i}\n"));
    std::fs::write(&m, functions.collect::<String>()).unwrap();
    let mut a = stub(dir, port, "a", &["-l"]);
    let b = stub(dir, port, "b", &[]);
    a.send(&format!("rm:{}", m.display()));
    a.send("um:m");
    a.wait_for("over the limit of 3000 bytes");

    std::fs::write(&m, "def f():\n    return 1\n").unwrap();
    a.send(&format!("rm:{}", m.display()));
    a.wait_for("registered m");
    b.wait_for("received m from a");
    std::fs::write(&m, "def g():\n    return 2\n").unwrap();
    a.send("reload:m");
    a.wait_n("registered m", 2);
    let app = client(&b);
    let two: i64 = eventually(|| app.call_as("m", "g", ()))
        .unwrap_or_else(|e| panic!("{e}; a's output:\n{}", a.output().join("\n")));
    assert_eq!(two, 2);

    a.send("um:m");
    a.wait_for("withdrew m");
    b.wait_for("module m is gone");
    a.send("mods");
    a.wait_for("no modules on the network");
    let output = a.output().join("\n");
    assert_eq!(a.count("error: module m"), 1, "{output}");
    assert_eq!(a.count("being withdrawn"), 0, "{output}");
}

/// A withdraw the server refuses gets no `gone`: when a stub withdraws a module whose upload
/// is refused in the meantime (another stub owns it), both are refused. The withdraw used to
/// stay counted as on its way for good, and its stale count then took the next `gone` of the
/// module for its answer: registered again and withdrawn, the module stayed owned here while
/// the network had dropped it.
#[test]
fn a_refused_withdraw_is_not_left_waiting_for_an_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = module(dir);
    let refusal = |reason: &str| ToClient::RegisterFailed {
        module: "m".into(),
        reason: reason.into(),
    };
    let (port, server) = fake_server(move |s, from_stub| {
        let upload = |from_stub: &mut dyn BufRead| {
            next_frame(from_stub, |f| match f {
                ToServer::Chunk(chunk) => Some(chunk.md5),
                _ => None,
            })
        };
        let withdraw = |from_stub: &mut dyn BufRead| {
            next_frame(from_stub, |f| {
                matches!(f, ToServer::Withdraw { .. }).then_some(())
            })
        };
        // The upload and the withdraw that followed it at once, refused as the server
        // refuses them when another stub owns the module.
        upload(from_stub);
        withdraw(from_stub);
        send(s, &refusal("module 'm' is owned by 'a'"));
        send(s, &refusal("module 'm' is not provided by this stub"));
        // Registered later, then withdrawn.
        let md5 = upload(from_stub);
        send(
            s,
            &ToClient::Registered {
                module: "m".into(),
                md5,
            },
        );
        withdraw(from_stub);
        let reason = "withdrawn by 'b'".into();
        send(
            s,
            &ToClient::Gone {
                module: "m".into(),
                reason,
            },
        );
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut b = stub(dir, port, "b", &["-l"]);
    b.send(&format!("rm:{m}"));
    b.wait_for("registering m");
    b.send("um:m");
    b.wait_for("not provided by this stub");
    b.send(&format!("rm:{m}"));
    b.wait_for("registered m");
    b.send("um:m");
    b.wait_for("withdrew m");
    let owned = client(&b).modules("").unwrap();
    assert!(owned.is_empty(), "{owned:?}: {:#?}", b.output());
    server.join().unwrap();
}

/// An app outlives a restart of its stub between two calls: the next call connects to the new
/// stub and is answered. It used to be written on the old connection and fail ("the stub
/// closed the connection"), only the call after connecting again.
#[test]
fn the_call_after_a_restart_of_the_apps_stub_is_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let m = module(dir);
    let mut a = stub(dir, port, "a", &["--register", &m]);
    a.wait_for("registered m");
    let a_port = app_port(&a).to_string();
    let app = client(&a);
    let address = format!("127.0.0.1:{a_port}");
    let async_app = smol::block_on(common::app::AsyncClient::connect(&address)).unwrap();
    assert_eq!(app.call("m", "add", (1, 2)), Ok(json!(3)));
    assert_eq!(
        smol::block_on(async_app.call("m", "add", (1, 2))),
        Ok(json!(3))
    );

    a.kill();
    let again = stub_a_again(dir, port, &a_port, &["--register", &m]);
    again.wait_for("registered m");
    assert_eq!(app.call("m", "add", (2, 2)), Ok(json!(4)));
    assert_eq!(
        smol::block_on(async_app.call("m", "add", (2, 2))),
        Ok(json!(4))
    );
}
