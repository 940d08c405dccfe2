//! The ModuleServer family: modules reloaded when their file changes, `reload`, `ping`,
//! `help:MODULE` and call statistics, from the shells and the API.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use common::app::CallError;
use harness::*;
use serde_json::json;

#[test]
fn an_edited_module_under_constant_load_is_reloaded_and_no_call_is_cut_short() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    let slow = "import time\n\ndef slow(s):\n    time.sleep(s)\n    return s\n";
    std::fs::write(&m, slow).unwrap();
    let (_server, port) = server(dir, &[]);
    let owner = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let caller = stub(dir, port, "b", &[]);
    caller.wait_for("received m from a");
    // Two apps keep a call running or queued all the time.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (app, stop) = (client(&caller), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(app.call("m", "slow", (0.1,)).unwrap(), json!(0.1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&m, format!("{slow}\ndef g():\n    return 2\n")).unwrap();
    let app = client(&caller);
    assert_eq!(eventually(|| app.call("m", "g", ())).unwrap(), json!(2));
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().expect("every call under load answered");
    }
    owner.wait_for("reloaded m (its file changed): new headers uploaded");
}

#[test]
fn an_edited_module_is_reloaded_and_a_broken_edit_keeps_the_old_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    std::fs::write(
        &m,
        "import time\n\ndef f():\n    return 1\n\ndef slow(s):\n    time.sleep(s)\n    return s\n",
    )
    .unwrap();
    let (_server, port) = server(dir, &[]);
    let mut owner = stub(dir, port, "a", &["-l", "--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let caller = stub(dir, port, "b", &[]);
    caller.wait_for("received m from a");
    let app = client(&caller);
    assert_eq!(app.call("m", "f", ()).unwrap(), json!(1));

    // A long call is running when the file changes: it finishes on the old code first.
    let slow_app = client(&caller);
    let slow = std::thread::spawn(move || slow_app.call("m", "slow", (2,)));
    std::thread::sleep(std::time::Duration::from_millis(300));
    std::fs::write(&m, "import time\n\ndef f():\n    return 2\n\ndef g(x):\n    return x\n\ndef slow(s):\n    time.sleep(s)\n    return s\n").unwrap();
    assert_eq!(
        slow.join().unwrap().unwrap(),
        json!(2),
        "the running call was not cut short"
    );
    owner.wait_for("reloaded m (its file changed): new headers uploaded");
    caller.wait_n("received m from a", 2);
    assert_eq!(app.call("m", "f", ()).unwrap(), json!(2));
    assert_eq!(app.call("m", "g", (7,)).unwrap(), json!(7));

    std::fs::write(&m, "def f(:\n").unwrap();
    owner.wait_for("the old version of m keeps running");
    assert_eq!(app.call("m", "f", ()).unwrap(), json!(2));

    std::fs::write(&m, "def f():\n    return 3\n").unwrap();
    owner.wait_n("reloaded m", 2);
    owner.send("reload:m");
    owner.wait_for("reloaded m (asked at the shell): headers unchanged");
    owner.send("reload:nope");
    owner.wait_for("does not own a module 'nope'");
    let owner_app = client(&owner);
    assert_eq!(owner_app.reload("m").unwrap().len(), 32);
    assert!(matches!(owner_app.reload("zz"), Err(CallError::Failed(_))));

    // `rm:` of the same file while a call runs: unchanged, nothing restarts.
    let slow_src = "import time\n\ndef f():\n    return 4\n\ndef slow(s=1.5):\n    time.sleep(s)\n    return s\n";
    std::fs::write(&m, slow_src).unwrap();
    assert_eq!(
        eventually(|| app.call("m", "slow", ())).unwrap(),
        json!(1.5)
    );
    let slow_app = client(&caller);
    let slow = std::thread::spawn(move || slow_app.call("m", "slow", (1.5,)));
    std::thread::sleep(Duration::from_millis(300));
    owner.send(&format!("rm:{}", m.display()));
    owner.wait_for("is registered from");
    assert_eq!(slow.join().unwrap().unwrap(), json!(1.5));

    // A file deleted, then back with a new function: the watcher reloads it.
    std::fs::remove_file(&m).unwrap();
    owner.wait_for("cannot read");
    std::fs::write(&m, "def f():\n    return 5\n\ndef h():\n    return 6\n").unwrap();
    assert_eq!(eventually(|| app.call("m", "h", ())).unwrap(), json!(6));

    // Another file of the same name: it replaces the first, code and headers.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("m.py"), "def k():\n    return 7\n").unwrap();
    owner.send(&format!("rm:{}", other.join("m.py").display()));
    assert_eq!(eventually(|| app.call("m", "k", ())).unwrap(), json!(7));
}

/// An edit that parses but that Python's compiler refuses (`await` in a plain `def`, a
/// common slip) is refused as a syntax error is: its workers would fail to import it, and
/// the module would stop working everywhere.
#[test]
fn an_edit_pythons_compiler_refuses_keeps_the_old_version_running() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    let good = "def f():\n    return 1\n";
    std::fs::write(&m, good).unwrap();
    let (_server, port) = server(dir, &[]);
    let owner = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let caller = stub(dir, port, "b", &[]);
    caller.wait_for("received m from a");
    let app = client(&caller);
    assert_eq!(app.call("m", "f", ()).unwrap(), json!(1));

    std::fs::write(&m, format!("{good}\ndef fetch(x):\n    await x\n")).unwrap();
    let told = owner.wait_for("the old version of m keeps running");
    assert!(
        told.contains("line 5: 'await' outside async function"),
        "{told}"
    );
    assert_eq!(app.call("m", "f", ()).unwrap(), json!(1));
    assert!(matches!(
        app.call("m", "fetch", (1,)),
        Err(CallError::UnknownFunction(_))
    ));
}

/// A registered file replaced by a link to another module's file is not read through the link
/// (that is another module): the owner says what the file has become, and `m` goes on.
#[test]
fn a_registered_file_replaced_by_a_link_is_told_and_the_module_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    std::fs::write(&m, "def f():\n    return 1\n").unwrap();
    std::fs::write(dir.join("other.py"), "def g():\n    return 22\n").unwrap();
    let (_server, port) = server(dir, &[]);
    let owner = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let app = client(&owner);
    assert_eq!(app.call("m", "f", ()).unwrap(), json!(1)); // its worker has imported it

    std::fs::remove_file(&m).unwrap();
    std::os::unix::fs::symlink("other.py", &m).unwrap();
    let told = owner.wait_for("the old version of m keeps running");
    let other = dir.join("other.py").canonicalize().unwrap();
    let link = format!("{} is now a link to {}", m.display(), other.display());
    assert!(told.contains(&link), "{told}");
    assert!(told.contains("registers as module other"), "{told}");
    assert_eq!(app.call("m", "f", ()).unwrap(), json!(1));
}

#[test]
fn ping_help_and_stats_from_the_shells_and_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    std::fs::write(&m, "def add(a, b):\n    \"\"\"Adds.\"\"\"\n    return a + b\n\ndef boom():\n    raise KeyError('k')\n").unwrap();
    let (mut server, port) = server(dir, &["-l"]);
    let owner = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let mut caller = stub(dir, port, "b", &["-l"]);
    caller.wait_for("received m from a");
    let app = client(&caller);
    for i in 0..10 {
        app.call("m", "add", (i, 1)).unwrap();
    }
    assert!(app.call("m", "boom", ()).is_err());

    caller.send("ping");
    caller.wait_for("the server sees this stub as 127.0.0.1:");
    let pong = app.ping().unwrap();
    assert!(
        pong["address"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{pong}"
    );
    assert!(pong["rtt_ms"].as_f64().unwrap() >= 0.0);

    // A line that is not UTF-8 is skipped; neither shell (nor the network) ends over it.
    caller.send_bytes(b"wii\xff\n");
    server.send_bytes(b"wii\xff\n");
    caller.wait_for("line ignored");
    server.wait_for("line ignored");
    assert!(app.ping().is_ok());

    caller.send("help:m");
    caller.wait_for("add(a, b)");
    caller.wait_for("Adds.");

    caller.send("stats");
    caller.wait_for("calls made for apps:");
    let row = caller.wait_for("m.add");
    assert!(row.contains(" 10 "), "{row}");
    caller.wait_for("KeyError: 'k'");
    server.send("stats");
    server.wait_for("calls routed:");
    server.wait_for("m.boom");

    let stats = app.stats().unwrap();
    let made = stats["made"].as_array().unwrap();
    let add = made.iter().find(|r| r["function"] == "add").unwrap();
    assert_eq!(add["calls"], 10);
    assert_eq!(add["errors"], 0);
    assert!(add["p99_ms"].as_f64().unwrap() >= add["mean_ms"].as_f64().unwrap() * 0.5);
    let owner_app = client(&owner);
    let served = owner_app.stats().unwrap()["served"].clone();
    let boom = served
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["function"] == "boom")
        .unwrap()
        .clone();
    assert_eq!(
        (boom["calls"].clone(), boom["errors"].clone()),
        (json!(1), json!(1))
    );
}

/// Writes `text` as module `m` in `dir/sub/m.py` (each owner of a shared module has its own file).
fn module_m(dir: &std::path::Path, sub: &str, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join(sub)).unwrap();
    let path = dir.join(sub).join("m.py");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn several_owners_of_a_shared_module_take_calls_in_turn_and_outlive_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let source = "def where():\n    return __file__\n";
    let copy = |sub: &str, text: &str| module_m(dir, sub, text).to_str().unwrap().to_owned();
    let (ma, mc) = (copy("src_a", source), copy("src_c", source));
    let (server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["--shared", "m", "--register", &ma]);
    a.wait_for("registered m");
    let c = stub(dir, port, "c", &["--shared", "m", "--register", &mc]);
    c.wait_for("registered m");
    let b = stub(dir, port, "b", &[]);
    // Offered by both; callable once the descriptor has arrived, not when it is asked for.
    b.wait_for("received m from a, c");
    let app = client(&b);
    let places: std::collections::BTreeSet<String> = (0..10)
        .map(|_| app.call_as::<String>("m", "where", ()).unwrap())
        .collect();
    assert_eq!(places.len(), 2, "calls spread over both owners: {places:?}");

    let other = copy("src_d", "def where(x):\n    return x\n");
    let d = stub(dir, port, "d", &["--shared", "m", "--register", &other]);
    d.wait_for("different headers");
    let e = stub(dir, port, "e", &["--register", &copy("src_e", source)]);
    e.wait_for("declared shared");

    a.kill();
    server.wait_for("left: a");
    // b is told who provides m now, from its cached copy.
    b.wait_for("m from c: cached copy is current");
    for _ in 0..4 {
        let place = app.call_as::<String>("m", "where", ()).unwrap();
        assert!(place.contains("src_c"), "{place}");
    }
    assert_eq!(b.count("module m is gone"), 0);
}

#[test]
fn a_stub_joining_the_owners_of_a_shared_module_keeps_no_copy_and_a_refused_one_still_calls_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let copy = |sub: &str, text: &str| module_m(dir, sub, text).to_str().unwrap().to_owned();
    let source = "def one():\n    return 1\n";
    let (server, port) = server(dir, &[]);
    let mut b = stub(
        dir,
        port,
        "b",
        &["--shared", "m", "--register", &copy("src_b", source)],
    );
    b.wait_for("registered m");
    // Offered m by b as it joins, a then becomes one of its owners.
    let mut a = stub(
        dir,
        port,
        "a",
        &["-l", "--shared", "m", "--register", &copy("src_a", source)],
    );
    a.wait_for("registered m");
    // Refused as an owner (other headers), d still calls the m that b provides.
    let mut d = stub(dir, port, "d", &["-l", "--shared", "m"]);
    d.wait_for("received m from b");
    d.send(&format!(
        "rm:{}",
        copy("src_d", "def two():\n    return 2\n")
    ));
    d.wait_for("different headers");
    assert_eq!(client(&d).call_as::<i64>("m", "one", ()).unwrap(), 1);

    b.kill();
    server.wait_for("left: b");
    a.send("um:m");
    a.wait_for("withdrew m");
    // The last owner gone, m is nowhere on a: not listed, no copy of it kept as b's.
    assert_eq!(client(&a).modules("m").unwrap(), Vec::<String>::new());
    assert!(!dir.join("a/m.json").exists() && !dir.join("a/m.py").exists());
}

#[test]
fn headers_refused_while_shared_are_uploaded_again_by_a_reload_once_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let source = "def one():\n    return 1\n";
    let copy = |sub: &str| module_m(dir, sub, source);
    let (ma, mb) = (copy("src_a"), copy("src_b"));
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l", "--shared", "m"]);
    a.send(&format!("rm:{}", ma.display()));
    a.wait_for("registered m");
    let mut b = stub(dir, port, "b", &["-l", "--shared", "m"]);
    b.send(&format!("rm:{}", mb.display()));
    b.wait_for("registered m");

    // a's new headers are refused while b provides the old ones.
    std::fs::write(&ma, format!("{source}\ndef two():\n    return 2\n")).unwrap();
    a.wait_for("its headers cannot change while they provide it");
    b.send("um:m");
    b.wait_for("withdrew m");
    // Alone now, a uploads them on asking.
    a.send("reload:m");
    a.wait_for("reloaded m (asked at the shell)");
    let caller = stub(dir, port, "c", &[]);
    assert_eq!(
        eventually(|| client(&caller).call_as::<i64>("m", "two", ())).unwrap(),
        2
    );
}

/// An owner whose edit of a shared module is refused (its headers changed while another owner
/// provides the old ones) runs the version the network holds again: it used to run and check
/// its calls against the file's, so every call routed to it failed, half of them.
#[test]
fn an_owner_whose_new_headers_are_refused_while_shared_serves_the_networks_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let source = "def one():\n    return 1\n\ndef v(a):\n    return a\n";
    let copy = |sub: &str| module_m(dir, sub, source);
    let (ma, mb) = (copy("src_a"), copy("src_b"));
    let (_server, port) = server(dir, &[]);
    let a = stub(
        dir,
        port,
        "a",
        &["--shared", "m", "--register", ma.to_str().unwrap()],
    );
    a.wait_for("registered m");
    let b = stub(
        dir,
        port,
        "b",
        &["--shared", "m", "--register", mb.to_str().unwrap()],
    );
    b.wait_for("registered m");
    let c = stub(dir, port, "c", &[]);
    c.wait_for("received m from a, b");

    std::fs::write(&ma, "def v(a, b):\n    return a + b\n").unwrap();
    a.wait_for("this stub runs that version again");
    let app = client(&c);
    for _ in 0..6 {
        assert_eq!(app.call_as::<i64>("m", "one", ()).unwrap(), 1);
        assert_eq!(app.call_as::<i64>("m", "v", (5,)).unwrap(), 5);
    }
}

#[test]
fn installed_python_modules_are_shared_by_name_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(
        dir,
        port,
        "a",
        &[
            "--expose",
            "math",
            "--expose",
            "os.path",
            "--expose",
            "no_such_module_here",
        ],
    );
    a.wait_for("registered math");
    a.wait_for("registered os.path");
    a.wait_for("cannot expose 'no_such_module_here'");
    let mut b = stub(dir, port, "b", &["-l"]);
    b.wait_for("received os.path from a");
    b.wait_for("received math from a");
    // Its values are listed with its functions, or nobody could find them.
    b.send("desc:os.path");
    let values = b.wait_for("  values (read by a call with no arguments): ");
    assert!(
        values.contains("sep") && values.contains("curdir"),
        "{values}"
    );
    let port = app_port(&b).to_string();
    let described = std::process::Command::new(exe("test_app"))
        .args(["-q", &port, "describe", "os.path"])
        .output()
        .unwrap();
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(
        described.lines().any(
            |l| l.starts_with("values (read by a call with no arguments): ") && l.contains("sep")
        ),
        "{described}"
    );
    let app = client(&b);
    assert_eq!(app.call("math", "pow", (3, 2)).unwrap(), json!(9.0));
    assert_eq!(app.attr("os.path", "sep").unwrap(), json!("/"));
    assert_eq!(
        app.call("os.path", "join", ("a", "b")).unwrap(),
        json!("a/b")
    );
    let pi = app.attr("math", "pi").unwrap().as_f64().unwrap();
    assert!((pi - std::f64::consts::PI).abs() < 1e-12);
    // Only what is listed: other modules, and private names, are not there.
    assert!(matches!(
        app.call("os", "system", ("true",)),
        Err(CallError::UnknownModule(_))
    ));
    assert!(matches!(
        app.call("os.path", "_get_sep", ("a",)),
        Err(CallError::UnknownFunction(_))
    ));
    assert!(matches!(
        app.call("math", "pi", (1,)),
        Err(CallError::UnknownFunction(_))
    ));
}

#[test]
fn an_installed_module_that_prints_on_import_is_exposed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Importable by name from the stub's directory, as an installed module is from anywhere.
    let printy = "print('hello from import')\n\ndef f():\n    return 1\n";
    std::fs::write(dir.join("printy.py"), printy).unwrap();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &["--expose", "printy"]);
    let line = a.wait_for("printy");
    assert!(line.starts_with("registering printy"), "{line}");
    a.wait_for("registered printy");
    assert_eq!(client(&a).call("printy", "f", ()).unwrap(), json!(1));
    a.wait_for("[printy] hello from import");
}

#[test]
fn an_interpreter_that_cannot_start_is_named_with_the_module_it_was_to_expose() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(
        dir,
        port,
        "a",
        &["--python", "/nonexistent/python3", "--expose", "math"],
    );
    let line = a.wait_for("cannot expose 'math'");
    assert!(
        line.contains("`/nonexistent/python3`") && line.contains("--python"),
        "{line}"
    );
}

/// Writes a profile for the stub `name` on the server at `port`, registering `register` (TOML
/// list items), with the lines `rest` after it.
fn write_profile(path: &std::path::Path, name: &str, port: u16, register: &str, rest: &str) {
    let text = format!(
        "name = {name:?}\naddress = \"127.0.0.1\"\nport = {port}\napp_port = 0\nreceiving_dir = \"recv\"\nregister = [{register}]\n{rest}"
    );
    std::fs::write(path, text).unwrap();
}

#[test]
fn the_profile_is_watched_and_logs_rotate_to_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for m in ["m1", "m2"] {
        std::fs::write(dir.join(format!("{m}.py")), "def f():\n    return 1\n").unwrap();
    }
    let (_server, port) = server(dir, &[]);
    let profile = dir.join("p.toml");
    let write = |register: &str, workers: &str| {
        let rest = format!(
            "live_console = true\nworkers = {{ {workers} }}\n[log]\nfile = \"logs/p.log\"\nmax_bytes = 2000\nkeep = 2\n"
        );
        write_profile(&profile, "p", port, register, &rest);
    };
    write("\"m1.py\"", "");
    let mut p = Proc::start(
        "p",
        &exe("client_stub"),
        &["-c", profile.to_str().unwrap()],
        dir,
    );
    p.wait_for("registered m1");
    // Make sure the edit gets a new modification time.
    std::thread::sleep(std::time::Duration::from_millis(50));
    write("\"m2.py\"", "m2 = 2");
    p.wait_for("registered m2");
    // Keys other than the lists apply at the next start, and the stub says so.
    p.wait_for("note: the profile's workers changed: that applies when the stub is restarted");
    p.wait_for("withdrawing m1: removed from the profile");
    p.wait_for("withdrew m1");
    let log = std::fs::read_to_string(dir.join("logs/p.log")).unwrap();
    assert!(log.contains("withdrew m1"), "{log}");
    // Why the stub stopped is the log's last line, as it is its output's.
    p.send("_end_");
    assert!(p.wait_exit().success());
    let log = std::fs::read_to_string(dir.join("logs/p.log")).unwrap();
    assert!(log.ends_with("stopped: quit\n"), "{log}");
}

/// `mods/` and `prof/` made in `tmp`, canonical, so that the paths a test lists are spelled
/// otherwise only where meant to be.
fn listing_dirs(tmp: &std::path::Path) -> std::path::PathBuf {
    let dir = tmp.canonicalize().unwrap();
    std::fs::create_dir_all(dir.join("mods")).unwrap();
    std::fs::create_dir_all(dir.join("prof")).unwrap();
    dir
}

/// A stub started on the profile `write_listing` wrote.
fn stub_of_listing(dir: &std::path::Path, profile: &std::path::Path) -> Proc {
    let args = ["-c", profile.to_str().unwrap()];
    Proc::start("alpha", &exe("client_stub"), &args, dir)
}

/// Writes the profile of the stub `alpha` (shell on), its `register` list `paths`.
fn write_listing(profile: &std::path::Path, port: u16, paths: &[&str]) {
    let register: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    write_profile(
        profile,
        "alpha",
        port,
        &register.join(", "),
        "live_console = true\n",
    );
}

#[test]
fn the_same_module_file_spelled_otherwise_in_the_profile_is_not_withdrawn() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &listing_dirs(tmp.path());
    for m in ["z", "odd", "m2", "m3"] {
        std::fs::write(dir.join(format!("mods/{m}.py")), "def f():\n    return 1\n").unwrap();
    }
    std::os::unix::fs::symlink(dir.join("mods"), dir.join("link")).unwrap();
    let (_server, port) = server(dir, &[]);
    let profile = dir.join("prof/alpha.toml");
    let write = |register: &[&str]| write_listing(&profile, port, register);
    write(&["../mods/z.py", "../mods/odd.py"]);
    let mut alpha = stub_of_listing(dir, &profile);
    alpha.wait_for("registered z");
    alpha.wait_for("registered odd");
    // Absolute, and with `./` and `..`; a module added shows the edit was read.
    std::thread::sleep(Duration::from_millis(50));
    let z = dir.join("mods/z.py");
    write(&[
        z.to_str().unwrap(),
        "./../mods/../mods/odd.py",
        "../mods/m2.py",
    ]);
    alpha.wait_for("registered m2");
    // `sc:` onto the running profile writes every path canonical.
    alpha.send(&format!("sc:{}", profile.display()));
    alpha.wait_for("saved the running configuration");
    std::thread::sleep(Duration::from_millis(1500));
    // Through a symlink, relative again.
    write(&[
        "../link/z.py",
        "../mods/odd.py",
        "../mods/m2.py",
        "../mods/m3.py",
    ]);
    alpha.wait_for("registered m3");
    let out = alpha.output();
    assert_eq!(alpha.count("withdrawing"), 0, "{out:#?}");
    assert_eq!(alpha.count("registering z "), 1, "{out:#?}");
    assert_eq!(alpha.count("registering odd "), 1, "{out:#?}");
}

/// A listed file missing at start, spelled otherwise once it is there, is the same module; and
/// `sc:` onto the running profile changes nothing, says nothing of keys it wrote out (defaults,
/// the port in use), and keeps a listed file still missing.
#[test]
fn a_file_missing_at_start_is_the_same_module_spelled_otherwise_and_sc_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &listing_dirs(tmp.path());
    let module = "def f():\n    return 1\n";
    std::fs::write(dir.join("mods/m2.py"), module).unwrap();
    let (_server, port) = server(dir, &[]);
    let profile = dir.join("prof/alpha.toml");
    let write = |register: &[&str]| write_listing(&profile, port, register);
    write(&["../mods/late.py", "../mods/later.py"]);
    let mut alpha = stub_of_listing(dir, &profile);
    alpha.wait_n("it is tried again when the file changes", 2);
    std::fs::write(dir.join("mods/late.py"), module).unwrap();
    alpha.wait_for("registered late");
    // Absolute now; a module added shows the edit was read.
    std::thread::sleep(Duration::from_millis(50));
    let late = dir.join("mods/late.py");
    write(&[late.to_str().unwrap(), "../mods/later.py", "../mods/m2.py"]);
    alpha.wait_for("registered m2");
    alpha.send(&format!("sc:{}", profile.display()));
    alpha.wait_for("saved the running configuration");
    let saved = std::fs::read_to_string(&profile).unwrap();
    assert!(
        saved.contains("later.py"),
        "the file still missing stays listed:\n{saved}"
    );
    // Time for the watcher to see the edit (it looks twice, a second apart).
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::write(dir.join("mods/later.py"), module).unwrap();
    alpha.wait_for("registered later");
    let out = alpha.output();
    assert_eq!(alpha.count("withdraw"), 0, "{out:#?}");
    assert_eq!(alpha.count("note:"), 0, "{out:#?}");
    assert_eq!(alpha.count("registering late "), 1, "{out:#?}");
}

#[test]
fn a_module_listed_twice_in_the_profile_is_registered_once_and_told() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &tmp.path().canonicalize().unwrap();
    for sub in ["one", "two"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        let code = format!("def f():\n    return {sub:?}\n");
        std::fs::write(dir.join(format!("{sub}/m.py")), code).unwrap();
    }
    let (_server, port) = server(dir, &[]);
    let profile = dir.join("p.toml");
    let write = |register: &str| write_profile(&profile, "p", port, register, "");
    // The same file twice is no error; another file of the same name is.
    write("\"one/m.py\", \"./one/m.py\", \"two/m.py\"");
    let p = Proc::start(
        "p",
        &exe("client_stub"),
        &["-c", profile.to_str().unwrap()],
        dir,
    );
    let told = p.wait_for("is listed twice");
    let (one, two) = (dir.join("one/m.py"), dir.join("two/m.py"));
    assert!(
        told.contains(&format!("as {} and as {}", one.display(), two.display())),
        "{told}"
    );
    p.wait_for("registered m ");
    let answer: String = eventually(|| client(&p).call_as("m", "f", ())).unwrap();
    assert_eq!(answer, "one");
    // Both leave the list: withdrawn once, and nothing is left to fail.
    std::thread::sleep(Duration::from_millis(50));
    write("");
    p.wait_for("withdrew m");
    std::thread::sleep(Duration::from_millis(1500));
    let out = p.output();
    assert_eq!(p.count("registering m "), 1, "{out:#?}");
    assert_eq!(p.count("withdrawing m:"), 1, "{out:#?}");
    assert_eq!(p.count("error: module m: "), 0, "{out:#?}");
}

#[test]
fn a_rust_program_provides_a_module_in_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let b = stub(dir, port, "b", &[]);
    let example = exe("examples/provider");
    let a_port = format!("127.0.0.1:{}", app_port(&a));
    // It says it provides only when it does: not when no stub answers, nor when refused.
    let mut nowhere = Proc::start("nowhere", &example, &["127.0.0.1:1"], dir);
    assert!(!nowhere.wait_exit().success());
    let out = nowhere.output();
    assert!(
        out.len() == 1 && out[0].starts_with("error: not connected: no stub at 127.0.0.1:1"),
        "{out:?}"
    );
    let server_port = format!("127.0.0.1:{port}");
    let mut to_server = Proc::start("to_server", &example, &[&server_port], dir);
    assert!(!to_server.wait_exit().success());
    assert_eq!(
        to_server.output(),
        [format!(
            "error: not connected: {server_port} is not a stub's app port \
             (it answered as a server stub)"
        )]
    );
    let mut provider = Proc::start("provider", &example, &[&a_port], dir);
    provider.wait_for(&format!("providing rustcalc through the stub at {a_port}"));
    a.wait_for("registered rustcalc");
    b.wait_for("received rustcalc from a");
    let mut second = Proc::start("second", &example, &[&a_port], dir);
    assert!(!second.wait_exit().success());
    assert_eq!(
        second.output(),
        ["error: this stub already owns a module 'rustcalc'"]
    );
    let app = client(&b);
    assert_eq!(app.call("rustcalc", "add", (2, 3)).unwrap(), json!(5));
    assert_eq!(
        app.call("rustcalc", "greet", ("bo",)).unwrap(),
        json!("hello, bo, from Rust")
    );
    match app.call("rustcalc", "mean", (Vec::<f64>::new(),)) {
        Err(CallError::Exception { message, .. }) => assert_eq!(message, "mean of an empty list"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        app.call("rustcalc", "add", (1,)),
        Err(CallError::BadArguments(_))
    ));
    let by_name = json!({"b": 3}).as_object().cloned().unwrap();
    assert_eq!(
        app.call_with("rustcalc", "add", (2,), by_name, None)
            .unwrap(),
        json!(5)
    );
    let twice = json!({"a": 3}).as_object().cloned().unwrap();
    match app.call_with("rustcalc", "add", (2,), twice, None) {
        Err(CallError::BadArguments(m)) => {
            assert!(m.contains("multiple values for argument 'a'"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let desc = app.describe("rustcalc").unwrap();
    assert_eq!(
        desc.function("mean").unwrap().doc.as_deref(),
        Some("The mean of a list of numbers.")
    );
    provider.kill();
    b.wait_for("module rustcalc is gone");
}

/// Names no Python module could have are refused when provided, naming the first: callers
/// and generated stubs take names for identifiers.
#[test]
fn a_provided_function_or_parameter_not_named_by_an_identifier_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let address = format!("127.0.0.1:{}", app_port(&a));
    let one = |(x,): (i64,)| Ok(x);
    let cases = [
        ("my-fn", "x", "its function 'my-fn' is not an identifier"),
        (
            "f",
            "a b",
            "its parameter 'a b' of 'f' is not an identifier",
        ),
        ("f\n", "x", "its function 'f\\n' is not an identifier"),
    ];
    for (function, param, told) in cases {
        let provider = common::provider::Provider::new("p").function(function, &[param], "", one);
        match provider.provide_blocking(&address) {
            Err(e) => assert_eq!(e.to_string(), told),
            Ok(_) => panic!("{function:?} was provided"),
        }
    }
    // The stub goes on: a module with good names is provided.
    let good = common::provider::Provider::new("p").function("f", &["x"], "", one);
    assert!(good.provide_blocking(&address).is_ok());
    a.wait_for("registered p");
}

#[test]
fn a_provider_function_that_panics_fails_its_call_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let b = stub(dir, port, "b", &[]);
    let boom = |(n,): (i64,)| -> Result<i64, String> { panic!("kaboom {n}") };
    let providing = common::provider::Provider::new("p")
        .function("boom", &["n"], "", boom)
        .provide_blocking(&format!("127.0.0.1:{}", app_port(&a)))
        .unwrap();
    std::thread::spawn(move || providing.serve_blocking());
    b.wait_for("received p from a");
    let app = client(&b).with_timeout(Duration::from_secs(30));
    let start = std::time::Instant::now();
    match app.call("p", "boom", (1,)) {
        Err(CallError::Exception {
            exc_type, message, ..
        }) => {
            assert_eq!((exc_type.as_str(), message.as_str()), ("panic", "kaboom 1"))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_providing_app_is_sent_what_remains_of_each_calls_timeout() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let b = stub(dir, port, "b", &[]);
    // A provider speaking the protocol itself, to see the call frames as they come.
    let mut provider = provide_raw(&a, "p");
    let mut frames = BufReader::new(provider.try_clone().unwrap()).lines();
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&frames.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["cmd"], "reply");
    b.wait_for("received p from a");
    let app = client(&b).with_timeout(Duration::from_secs(60));
    let caller = std::thread::spawn(move || app.call("p", "f", ()));
    let call = next();
    assert_eq!(call["cmd"], "call", "{call}");
    let ms = call["data"]["timeout_ms"].as_u64().unwrap();
    assert!(ms > 50_000 && ms <= 60_000, "{call}");
    let answer = json!({"cmd": "answer", "data": {"id": call["data"]["id"], "result": {"Ok": 7}}});
    writeln!(provider, "{answer}").unwrap();
    assert_eq!(caller.join().unwrap().unwrap(), json!(7));
}

/// A providing app that provides its shared module again with new headers, which the server
/// refuses while another stub provides the old ones, is answered a second time under its
/// `provide`'s id with the refusal; the network keeps the old headers, and the app serves them.
#[test]
fn a_providing_app_whose_new_headers_the_server_refuses_is_told() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &["--shared", "p"]);
    let b = stub(dir, port, "b", &["--shared", "p"]);
    let mut provider = provide_raw(&a, "p");
    a.wait_for("registered p");
    let _other = provide_raw(&b, "p");
    b.wait_for("registered p");
    let mut frames = BufReader::new(provider.try_clone().unwrap()).lines();
    let mut next =
        || -> serde_json::Value { serde_json::from_str(&frames.next().unwrap().unwrap()).unwrap() };
    assert_eq!(next()["data"]["id"], 1);

    let g = json!({"name": "g", "params": []});
    let descriptor = json!({"module": "p", "functions": [g]});
    let provide = json!({"cmd": "provide", "data": {"id": 2, "descriptor": descriptor}});
    writeln!(provider, "{provide}").unwrap();
    let accepted = next();
    assert!(accepted["data"]["result"]["Ok"].is_string(), "{accepted}");
    let refused = next();
    let reason = "module 'p' is shared with 'b': its headers cannot change while they provide it; \
                  the network keeps its version before";
    assert_eq!(refused["data"]["id"], 2, "{refused}");
    assert_eq!(
        refused["data"]["result"]["Err"]["message"],
        format!("the server refused module 'p': {reason}"),
        "{refused}"
    );
    a.wait_for(&format!("error: module p: {reason}"));
}

/// An app connection to `stub` that asks to provide `module` (function `f(*args)`), speaking
/// the protocol itself; the reply to its `provide` is left for the test to read.
fn provide_raw(stub: &Proc, module: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut provider = raw_app(stub);
    let f = json!({"name": "f", "params": [{"name": "args", "kind": "var_positional"}]});
    let descriptor = json!({"module": module, "functions": [f]});
    let provide = json!({"cmd": "provide", "data": {"id": 1, "descriptor": descriptor}});
    writeln!(provider, "{provide}").unwrap();
    provider
}

#[test]
fn a_call_a_providing_app_never_answers_fails_at_its_deadline_on_the_providing_stub() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let b = stub(dir, port, "b", &[]);
    let _provider = provide_raw(&a, "p"); // reads nothing, answers nothing
    b.wait_for("received p from a");
    let app = client(&b).with_timeout(Duration::from_millis(300));
    assert!(matches!(app.call("p", "f", ()), Err(CallError::Timeout(_))));
    // The providing stub let the call go too, rather than keep it while the app stays: its
    // statistics count it, failed at its deadline.
    let owner = client(&a);
    let mut served = serde_json::Value::Null;
    soon(|| {
        served = owner.stats().unwrap()["served"].clone();
        served[0]["errors"] == 1
    });
    let error = served[0]["last_error"].as_str();
    let told = "p.f: no answer within 300ms (it may still be running in the app providing it)";
    assert!(error.is_some_and(|e| e.ends_with(told)), "{served}");
}

#[test]
fn a_providing_app_that_does_not_read_its_calls_is_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let profile = dir.join("a.toml");
    std::fs::write(&profile, "[limits]\nqueue_frames = 2\n").unwrap();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &["-c", profile.to_str().unwrap()]);
    let b = stub(dir, port, "b", &[]);
    let _provider = provide_raw(&a, "p"); // reads nothing, answers nothing
    b.wait_for("received p from a");
    // Calls of 1 MB each, until the sockets between the stub and the app are full and calls
    // wait in the stub.
    let big = Arc::new("x".repeat(1 << 20));
    let callers: Vec<_> = (0..40)
        .map(|_| {
            let (app, big) = (
                client(&b).with_timeout(Duration::from_secs(60)),
                big.clone(),
            );
            std::thread::spawn(move || app.call("p", "f", (big.as_str(),)))
        })
        .collect();
    a.wait_for("dropping an app connection: it does not read the calls it provides");
    b.wait_for("module p is gone");
    // Each call fails, none waits its minute: the stub failed those it held; the rest came
    // after the module had left.
    let answers: Vec<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
    use CallError::{OwnerGone, UnknownModule};
    assert!(
        answers.iter().any(|a| matches!(a, Err(OwnerGone(_)))),
        "{answers:?}"
    );
    let failed = |a: &Result<_, _>| matches!(a, Err(OwnerGone(_) | UnknownModule(_)));
    assert!(answers.iter().all(failed), "{answers:?}");
}

#[test]
fn a_stub_stopped_by_a_signal_says_so_and_ends_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &[]);
    a.wait_for("apps on");
    assert!(a.terminate().success());
    // It used to say "stopped: stopped".
    a.wait_for("stopped: asked to stop (Ctrl-C or a terminate signal)");
}

/// Modules that come and go under new names (an app providing a module per job) used to leave
/// their statistics behind for as long as each process ran: the server's, the caller's and the
/// owner's tables grew by a row per module, about 6 KB each. Only the newest modules gone keep
/// theirs, counting the calls that fail because their module went.
#[test]
fn the_statistics_of_modules_gone_are_not_kept_for_good() {
    use std::io::Write;
    const GONE_KEPT: usize = common::stats::GONE_KEPT;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut server, port) = server(dir, &["-l"]);
    let a = stub(dir, port, "a", &[]);
    let b = stub(dir, port, "b", &[]);
    let app = Arc::new(client(&b));
    let jobs = GONE_KEPT + 20;
    for job in 0..jobs {
        let module = format!("job{job}");
        // Every other job's module is provided by an app through `a`, which answers; the
        // others by a stub that leaves during the call, which fails after its module has gone.
        let answers = job % 2 == 0;
        let mut owner = match answers {
            true => Frames::new(provide_raw(&a, &module)),
            false => Frames::stub_owning(port, &module),
        };
        if answers {
            assert_eq!(owner.next()["cmd"], "reply");
        }
        b.wait_for(&format!("received {module} from "));
        let caller = {
            let (app, module) = (Arc::clone(&app), module.clone());
            std::thread::spawn(move || app.call(&module, "f", ()))
        };
        let call = owner.until("call");
        if answers {
            let id = &call["data"]["id"];
            let answer = json!({"cmd": "answer", "data": {"id": id, "result": {"Ok": 1}}});
            writeln!(owner.stream, "{answer}").unwrap();
        }
        owner.stream.shutdown(std::net::Shutdown::Both).unwrap();
        match caller.join().unwrap() {
            Ok(one) => assert!(answers && one == json!(1), "{job}: {one}"),
            Err(CallError::OwnerGone(_)) => assert!(!answers, "{job}"),
            Err(e) => panic!("{job}: {e:?}"),
        }
    }
    b.wait_n("is gone", jobs);
    let rows = |app: &common::app::Client, side: &str| {
        app.stats().unwrap()[side].as_array().unwrap().len()
    };
    assert_eq!(
        rows(&app, "made"),
        GONE_KEPT,
        "{}",
        app.stats().unwrap()["made"]
    );
    let owner = client(&a);
    assert!(soon(|| rows(&owner, "served") == jobs / 2));
    server.send("stats");
    server.wait_for(&format!("job{}.f", jobs - 1));
    let out = server.output();
    let table = out
        .iter()
        .rev()
        .take_while(|l| !l.contains("calls routed:"));
    assert_eq!(table.filter(|l| l.contains(".f ")).count(), GONE_KEPT);
}

/// The frames a peer reads, one JSON value a line.
struct Frames {
    stream: std::net::TcpStream,
    lines: std::io::Lines<std::io::BufReader<std::net::TcpStream>>,
}

impl Frames {
    fn new(stream: std::net::TcpStream) -> Frames {
        use std::io::BufRead;
        let lines = std::io::BufReader::new(stream.try_clone().unwrap()).lines();
        Frames { stream, lines }
    }

    /// A stub speaking the protocol itself, joined to the server at `port` as the owner of
    /// `module` (one function, `f`).
    fn stub_owning(port: u16, module: &str) -> Frames {
        use common::proto::{Hello, ToServer, PROTOCOL_VERSION};
        use std::io::Write;
        let mut owner = Frames::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
        let name = format!("owner of {module}");
        let hello = Hello {
            version: PROTOCOL_VERSION,
            name,
            token: None,
            session: None,
        };
        let f = json!({"name": "f", "params": []});
        let descriptor = json!({"module": module, "functions": [f]}).to_string();
        let chunks = common::chunk::split(module, descriptor.as_bytes());
        let frames =
            std::iter::once(ToServer::Hello(hello)).chain(chunks.into_iter().map(ToServer::Chunk));
        for frame in frames {
            writeln!(owner.stream, "{}", serde_json::to_string(&frame).unwrap()).unwrap();
        }
        owner.until("registered");
        owner
    }

    fn next(&mut self) -> serde_json::Value {
        serde_json::from_str(&self.lines.next().unwrap().unwrap()).unwrap()
    }

    /// The next frame whose command is `cmd`.
    fn until(&mut self, cmd: &str) -> serde_json::Value {
        loop {
            let frame = self.next();
            if frame["cmd"] == cmd {
                return frame;
            }
        }
    }
}

/// A module whose `slow(tag, gate)` prints `started TAG` and returns `[VERSION, TAG]` once the
/// file `gate` exists; `f()` returns VERSION; `die()` ends its worker.
fn gated(version: &str) -> String {
    format!(
        "import os, time\n\n\
         def f():\n    return '{version}'\n\n\
         def slow(tag, gate):\n    print('started', tag, flush=True)\n    \
         while not os.path.exists(gate):\n        time.sleep(0.01)\n    \
         return ['{version}', tag]\n\n\
         def die():\n    os._exit(3)\n"
    )
}

/// `rm:` of another file of the same name while a call runs and others wait: as for a reload,
/// the call running finishes on the old code, and those queued run on the new file's workers.
#[test]
fn another_file_of_the_same_name_replaces_a_module_as_a_reload_does() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (m, other) = (dir.join("m.py"), dir.join("other"));
    std::fs::write(&m, gated("old")).unwrap();
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("m.py"), gated("new")).unwrap();
    let gate = dir.join("gate").to_str().unwrap().to_owned();
    let (_server, port) = server(dir, &[]);
    let mut owner = stub(dir, port, "a", &["-l", "--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let call = |tag: &'static str| {
        let (app, gate) = (client(&owner), gate.clone());
        std::thread::spawn(move || app.call("m", "slow", (tag, gate)))
    };
    let running = call("a");
    owner.wait_for("[m] started a");
    let queued = [call("b"), call("c")];
    // (Time for the two calls to reach the queue; one that came later would go to the new
    // workers all the same.)
    std::thread::sleep(Duration::from_millis(300));
    owner.send(&format!("rm:{}", other.join("m.py").display()));
    owner.wait_for("registering m from");
    // The workers change over just after that line; the server's answer comes later still.
    // Opened sooner, the gate could let the old worker finish and take a queued call first.
    owner.wait_n("registered m (md5", 2);
    std::fs::write(&gate, "").unwrap();
    assert_eq!(running.join().unwrap().unwrap(), json!(["old", "a"]));
    for (thread, tag) in queued.into_iter().zip(["b", "c"]) {
        assert_eq!(thread.join().unwrap().unwrap(), json!(["new", tag]));
    }
    assert_eq!(client(&owner).call("m", "f", ()).unwrap(), json!("new"));
}

/// A valid edit, then a broken one while a call still runs: the reload waits for that call,
/// then starts the workers on the valid edit, not on the broken file now on disk.
#[test]
fn a_broken_edit_while_a_reload_waits_for_a_call_keeps_the_valid_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    std::fs::write(&m, gated("1")).unwrap();
    let gate = dir.join("gate").to_str().unwrap().to_owned();
    let (_server, port) = server(dir, &[]);
    let owner = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let running = {
        let (app, gate) = (client(&owner), gate.clone());
        std::thread::spawn(move || app.call("m", "slow", ("a", gate)))
    };
    owner.wait_for("[m] started a");
    std::fs::write(&m, gated("2")).unwrap();
    owner.wait_for("reloaded m (its file changed)");
    std::fs::write(&m, "def f(:\n").unwrap();
    owner.wait_for("the old version of m keeps running");
    std::fs::write(&gate, "").unwrap();
    assert_eq!(running.join().unwrap().unwrap(), json!(["1", "a"]));
    let app = client(&owner);
    assert_eq!(app.call("m", "f", ()).unwrap(), json!("2"));
}

/// A worker that restarts (here it exits mid-call) while its file does not parse starts on the
/// version that did: its `__file__`, and its imports of files beside it, as before.
#[test]
fn a_worker_restarted_while_its_file_is_broken_runs_the_old_version() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    std::fs::write(dir.join("helper.py"), "X = 5\n").unwrap();
    let where_ =
        "\ndef where():\n    import helper\n    return [os.path.basename(__file__), helper.X]\n";
    // Longer than a pipe holds: the worker reads its source in several writes.
    let padding = format!("# {}\n", "x".repeat(300_000));
    std::fs::write(&m, gated("1") + where_ + &padding).unwrap();
    let (_server, port) = server(dir, &[]);
    let owner = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let app = client(&owner);
    assert_eq!(app.call("m", "f", ()).unwrap(), json!("1"));

    std::fs::write(&m, "def f(:\n").unwrap();
    owner.wait_for("the old version of m keeps running");
    let died = app.call("m", "die", ()).unwrap_err().to_string();
    assert!(died.contains("exited"), "{died}");
    assert_eq!(app.call("m", "f", ()).unwrap(), json!("1"));
    assert_eq!(app.call("m", "where", ()).unwrap(), json!(["m.py", 5]));

    // Fixed, it is reloaded from the file again.
    std::fs::write(&m, gated("3")).unwrap();
    owner.wait_for("reloaded m (its file changed)");
    assert_eq!(eventually(|| app.call("m", "f", ())).unwrap(), json!("3"));
}

#[test]
fn listed_modules_that_cannot_register_at_start_register_once_their_files_can() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = "def f():\n    return 1\n";
    std::fs::write(dir.join("bad.py"), "def f(:\n").unwrap();
    std::fs::write(dir.join("cli.py"), good).unwrap();
    std::fs::write(dir.join("m.py"), good).unwrap();
    let (_server, port) = server(dir, &[]);
    let profile = dir.join("p.toml");
    let write = |register: &str| {
        write_profile(&profile, "p", port, register, "live_console = true\n");
    };
    write("\"bad.py\", \"later.py\"");
    let cli = dir.join("cli.py");
    // No edit makes these modules: they are not tried again.
    std::fs::write(dir.join("my-mod.py"), good).unwrap();
    let p = Proc::start(
        "p",
        &exe("client_stub"),
        &[
            "-c",
            profile.to_str().unwrap(),
            "--register",
            cli.to_str().unwrap(),
            "--register",
            "my-mod.py",
            "--register",
            dir.to_str().unwrap(),
        ],
        dir,
    );
    p.wait_for("registered cli");
    p.wait_for("'my-mod' is not a module name");
    p.wait_for("is not a Python file");
    assert_eq!(
        p.count("it is tried again when the file changes"),
        2,
        "{:#?}",
        p.output()
    );
    // Fixed, and there at last: each is registered without a word to the stub.
    std::fs::write(dir.join("bad.py"), good).unwrap();
    p.wait_for("registered bad");
    std::fs::write(dir.join("later.py"), good).unwrap();
    p.wait_for("registered later");
    // What the command line lists stays when the profile lists it and then no longer does.
    std::thread::sleep(Duration::from_millis(50));
    write("\"bad.py\", \"later.py\", \"cli.py\"");
    p.wait_for("cli is registered from");
    std::thread::sleep(Duration::from_millis(50));
    write("\"bad.py\", \"later.py\", \"m.py\"");
    p.wait_for("registered m");
    assert_eq!(p.count("withdraw"), 0, "{:#?}", p.output());
}
