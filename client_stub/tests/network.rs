//! The stub network end to end, with the real binaries: registration, md5 sync, updates,
//! names, leaving, profiles and flags.

mod harness;

use harness::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Copies the example module into `dir` so a test can edit it.
fn module_copy(dir: &Path) -> PathBuf {
    let path = dir.join("z.py");
    fs::copy(example_module(), &path).unwrap();
    path
}

#[test]
fn descriptors_sync_by_md5_update_and_leave_with_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let z = module_copy(dir);
    let (server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l"]);
    let b = stub(dir, port, "b", &[]);
    let mut c = stub(dir, port, "c", &[]);

    a.send(&format!("rm:{}", z.display()));
    a.wait_for("registered z");
    b.wait_for("received z from a");
    c.wait_for("received z from a");
    let on_server = fs::read(dir.join("server/z.json")).unwrap();
    assert_eq!(fs::read(dir.join("b/z.json")).unwrap(), on_server);
    assert_eq!(fs::read(dir.join("c/z.json")).unwrap(), on_server);
    let text = String::from_utf8(on_server.clone()).unwrap();
    assert!(
        text.contains("\"add_prams\"") && text.contains("\"div_prams\""),
        "{text}"
    );
    assert!(
        !text.contains("_helper"),
        "unmarked functions are not exported: {text}"
    );

    // A restarted stub fetches nothing that did not change.
    c.kill();
    let c = stub(dir, port, "c", &[]);
    c.wait_for("z from a: cached copy is current");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(c.count("fetching"), 0, "{:?}", c.output());
    assert_eq!(c.count("received z"), 0, "{:?}", c.output());
    assert_eq!(
        server.count("sent z to c"),
        1,
        "only before the restart: {:?}",
        server.output()
    );

    // An edited module, registered again, reaches everyone.
    let mut source = fs::read_to_string(&z).unwrap();
    source += "\n#%function%\ndef triple(x: int) -> int:\n    \"\"\"Three times x.\"\"\"\n    return 3 * x\n";
    fs::write(&z, source).unwrap();
    a.send(&format!("rm:{}", z.display()));
    b.wait_n("received z from a", 2);
    c.wait_for("received z from a");
    server.wait_n("sent z to c", 2);
    for who in ["b", "c", "server"] {
        let text = fs::read_to_string(dir.join(who).join("z.json")).unwrap();
        assert!(text.contains("\"triple\""), "{who}: {text}");
    }

    // The owner leaves: the module is gone everywhere.
    a.send("_end_");
    assert!(a.wait_exit().success());
    b.wait_for("module z is gone");
    c.wait_for("module z is gone");
    server.wait_for("left: a");
    for who in ["b", "c", "server"] {
        assert!(!dir.join(who).join("z.json").exists(), "{who} still has z");
    }
}

/// A descriptor received and checked that the receiving directory cannot take (a full disk;
/// here a directory where its file goes) is used all the same, and stored once it can be: it
/// used to be dropped, and never asked for again.
#[test]
fn a_descriptor_that_cannot_be_stored_is_used_and_stored_once_it_can_be() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let m = dir.join("m.py");
    fs::write(&m, "def f(x):\n    return x\n").unwrap();
    // No file can be renamed over a directory.
    let copy = dir.join("b/m.json");
    fs::create_dir_all(&copy).unwrap();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    a.wait_for("registered m");
    let b = stub(dir, port, "b", &[]);
    b.wait_for("error: cannot store m:");
    let app = client(&b);
    // Its headers are here (its first copy is no longer "still being fetched").
    let desc = app.describe("m").unwrap();
    assert_eq!(desc.functions.len(), 1, "{desc:?}");
    fs::remove_dir(&copy).unwrap();
    b.wait_for("stored m (md5");
    assert!(fs::read_to_string(&copy).unwrap().contains("\"f\""));
    assert!(dir.join("b/m.py").is_file(), "its generated stub");

    // A new version that cannot be stored: its new function is called all the same.
    fs::remove_file(&copy).unwrap();
    fs::create_dir(&copy).unwrap();
    fs::write(
        &m,
        "def f(x):\n    return x\n\ndef g(x):\n    return x * 3\n",
    )
    .unwrap();
    b.wait_n("error: cannot store m:", 2);
    assert_eq!(app.call("m", "g", (2,)).unwrap(), serde_json::json!(6));
    fs::remove_dir(&copy).unwrap();
    b.wait_n("stored m (md5", 2);
    assert!(fs::read_to_string(&copy).unwrap().contains("\"g\""));
}

#[test]
fn withdraw_and_ownership() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let z = module_copy(dir);
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l"]);
    let mut b = stub(dir, port, "b", &["-l"]);
    a.send(&format!("rm:{}", z.display()));
    b.wait_for("received z from a");

    // Someone else's module cannot be registered.
    b.send(&format!("rm:{}", z.display()));
    b.wait_for("module 'z' is owned by 'a'");
    b.send("um:z");
    b.wait_for("does not own a module 'z'");

    b.send("mods");
    b.wait_for("z                    owner: a");
    b.send("desc:z");
    b.wait_for("add_prams(a, b)");
    b.send("wii");
    b.wait_for("modules: z");

    a.send("um:z");
    a.wait_for("withdrew z");
    b.wait_for("module z is gone: withdrawn by 'a'");
    b.send("mods");
    b.wait_for("no modules on the network");
}

/// A server, stub `a` (with a shell) owning a copy of z registered with `rm:`, and stub `b`
/// that has received it: z's path and the three processes.
fn a_owning_z(dir: &Path) -> (PathBuf, Proc, Proc, Proc) {
    let z = module_copy(dir);
    let (server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l"]);
    let b = stub(dir, port, "b", &[]);
    a.send(&format!("rm:{}", z.display()));
    b.wait_for("received z from a");
    (z, server, a, b)
}

/// z is a's: b's calls to it are answered (in time), and a lists itself as its owner.
fn z_owned_by_a(a: &mut Proc, b: &Proc) {
    let app = client(b);
    let sum: f64 = eventually(|| app.call_as("z", "add_prams", (1, 2)))
        .unwrap_or_else(|e| panic!("{e}; a's output:\n{}", a.output().join("\n")));
    assert_eq!(sum, 3.0);
    a.send("mods");
    a.wait_for("z                    owner: this stub");
}

/// `um:` at once followed by `rm:` of the same module: the server's answer to the withdraw
/// arrives after the new registration was sent, and must not take the module from its owner.
#[test]
fn a_module_registered_again_right_after_its_withdraw_stays_owned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (z, _server, mut a, b) = a_owning_z(dir);

    const ROUNDS: usize = 5;
    for round in 1..=ROUNDS {
        a.send("um:z");
        a.send(&format!("rm:{}", z.display()));
        // The withdraw's answer comes before the registration's.
        a.wait_n("registered z", round + 1);
        assert_eq!(
            a.count("does not own"),
            0,
            "a lost z in an earlier round:\n{}",
            a.output().join("\n")
        );
    }
    // Each round, b was told z is gone, then offered it again: it is back for b at the end.
    z_owned_by_a(&mut a, &b);

    // Swapped for another file of the same name: that file runs the calls.
    let other = dir.join("other");
    fs::create_dir(&other).unwrap();
    let mut source = fs::read_to_string(&z).unwrap();
    source += "\n#%function%\ndef triple(x: int) -> int:\n    \"\"\"Three times x.\"\"\"\n    return 3 * x\n";
    fs::write(other.join("z.py"), source).unwrap();
    a.send("um:z");
    a.send(&format!("rm:{}", other.join("z.py").display()));
    let tripled: f64 = eventually(|| client(&b).call_as("z", "triple", (2,))).unwrap();
    assert_eq!(tripled, 6.0);
}

/// `um:` twice before the server answers, then `rm:` again: the second withdraw is not sent
/// (the server would refuse it, and its refusal took the module re-registered from its owner:
/// listed everywhere, every call to it failing, and `um:` no longer able to withdraw it).
#[test]
fn a_module_withdrawn_twice_then_registered_again_stays_owned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (z, _server, mut a, b) = a_owning_z(dir);

    a.send("um:z");
    a.send("um:z");
    a.send(&format!("rm:{}", z.display()));
    a.wait_n("registered z", 2);
    z_owned_by_a(&mut a, &b);
    let output = a.output().join("\n");
    assert_eq!(a.count("is not registered"), 0, "{output}");
    // The second `um:` is not sent; or, on a busy machine, the first was answered before it
    // was read, and it found nothing to withdraw.
    let not_sent = a.count("z is being withdrawn already") + a.count("does not own a module 'z'");
    assert_eq!(not_sent, 1, "{output}");
}

#[test]
fn a_syntax_error_is_refused_with_its_line_and_nothing_is_uploaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bad = dir.join("broken.py");
    fs::write(
        &bad,
        "def ok(a):\n    return a\n\ndef bad(a:\n    return a\n",
    )
    .unwrap();
    let (server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l"]);
    a.send(&format!("rm:{}", bad.display()));
    let line = a.wait_for("syntax error");
    assert!(line.contains("line 4") || line.contains("line 5"), "{line}");
    a.send(&format!("rm:{}", dir.join("missing.py").display()));
    a.wait_for("cannot read");
    a.send("rm:../../etc/passwd");
    a.wait_for("error:");
    a.send("nonsense");
    a.wait_for("unknown command 'nonsense' (type help");
    a.send("s:still here");
    server.wait_for("message from a: still here");
    assert_eq!(server.count("registered"), 0);
    assert!(!dir.join("server/broken.json").exists());
}

#[test]
fn a_module_path_that_is_not_a_regular_file_is_refused_and_the_stub_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A FIFO nobody writes to: reading it would never end.
    let fifo = dir.join("fifo.py");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l"]);
    for command in ["pm", "rm"] {
        a.send(&format!("{command}:{}", fifo.display()));
        a.wait_n(
            "fifo.py is not a regular file",
            1 + usize::from(command == "rm"),
        );
    }
    a.send("ping");
    a.wait_for("round trip");
}

#[test]
fn names_are_unique_unless_a_suffix_is_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let _a = stub(dir, port, "a", &[]);
    let p = port.to_string();
    let args = stub_args(&p, "a", "a2");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut clash = Proc::start("clash", &exe("client_stub"), &args, dir);
    assert!(!clash.wait_exit().success());
    clash.wait_for("name 'a' is already in use");
    // It made its receiving directory, and takes it away again: nothing is left behind.
    assert!(!dir.join("a2").exists());

    let mut args = args.to_vec();
    args.push("--name-suffix");
    let suffixed = Proc::start("suffixed", &exe("client_stub"), &args, dir);
    suffixed.wait_for("joined as 'a-2' (the name 'a' was taken)");

    // A name as long as names may be is shortened to take its suffix.
    let long = "x".repeat(64);
    let _x = stub(dir, port, &long, &[]);
    let suffixed = start_stub("suffixed", dir, &p, &long, "x2", &["--name-suffix"]);
    let joined = format!(
        "joined as '{}-2' (the name '{long}' was taken)",
        &long[..62]
    );
    suffixed.wait_for(&joined);
}

/// Without -d a stub keeps what it receives in ./stubnet-NAME, one directory whatever the name:
/// `-n ../up` put it in the parent directory, `-n team/alice` in a subdirectory.
#[test]
fn the_default_receiving_directory_is_one_directory_whatever_the_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let work = dir.join("work");
    std::fs::create_dir(&work).unwrap();
    let p = port.to_string();
    let stubs: Vec<Proc> = ["../up", "team/alice"]
        .into_iter()
        .map(|name| {
            let args = ["-a", "127.0.0.1", "-p", &p, "-n", name, "-q", "0"];
            let stub = Proc::start(name, &exe("client_stub"), &args, &work);
            stub.wait_for("apps on ");
            stub
        })
        .collect();
    let made = |d: &Path| d.join(".session").is_file();
    assert!(made(&work.join("stubnet-..%2Fup")) && made(&work.join("stubnet-team%2Falice")));
    assert!(!dir.join("up").exists() && !work.join("stubnet-team").exists());
    drop(stubs);
}

/// A script piped into the shell gets the answers of what it sent before `_end_`: they used to
/// be lost, the stub gone before the server answered.
#[test]
fn a_piped_script_ending_in_end_gets_its_answers_from_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let mut a = start_stub("a", dir, &port.to_string(), "scripted", "a", &["-l"]);
    a.send_bytes(b"wii\nping\n_end_\n");
    assert!(a.wait_exit().success());
    let out = a.output();
    let has = |text: &str| out.iter().any(|line| line.contains(text));
    assert!(
        has("1 stub(s):") && has("scripted "),
        "the who-is-in list: {out:#?}"
    );
    assert!(has("round trip"), "the ping's answer: {out:#?}");
    assert!(out.last().unwrap().contains("stopped: quit"), "{out:#?}");
}

#[test]
fn a_message_over_the_frame_limit_is_refused_in_the_shell_that_typed_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut server, port) = server(dir, &["-l"]);
    let mut a = stub(dir, port, "a", &["-l"]);
    server.wait_for("joined: a");
    let long = "y".repeat(5_000_000);
    server.send(&format!("sta:{long}"));
    server.wait_for("error: message not sent: its frame would be 5000");
    server.send("sta:short");
    a.wait_for("message from server: short");
    a.send(&format!("s:{long}"));
    a.wait_for("error: message not sent: its frame would be 5000");
    a.send("s:fits");
    server.wait_for("message from a: fits");
    assert_eq!(a.count("bad frame"), 0, "{:#?}", a.output());
    assert_eq!(a.count("message from server: yyy"), 0);
}

#[test]
fn a_huge_mistyped_line_is_not_kept_in_either_shells_history() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut server, port) = server(dir, &["-l"]);
    let mut a = stub(dir, port, "a", &["-l"]);
    let pasted = "y".repeat(3_000_000);
    for (p, help) in [(&mut server, "kick:NAME"), (&mut a, "sc:PROFILE")] {
        p.send(&pasted);
        p.wait_for("(3000000 bytes)' (type help");
        p.send("help");
        p.wait_for(help);
    }
    // A line goes into the history before it is carried out.
    for history in [dir.join("server"), dir.join("a")].map(|d| d.join(".shell_history")) {
        let history = fs::read_to_string(history).unwrap();
        assert!(history.contains("help"), "{history}");
        assert!(!history.contains("yyy"), "{} bytes", history.len());
    }
}

#[test]
fn the_server_ends_the_session_and_every_stub_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut server, port) = server(dir, &["-l"]);
    let mut a = stub(dir, port, "a", &[]);
    let mut b = stub(dir, port, "b", &[]);
    server.wait_for("joined: b");
    server.send("wii");
    server.wait_for("2 stub(s):");
    server.send("sta:hello all");
    a.wait_for("message from server: hello all");
    server.send("kick:nobody");
    server.wait_for("no stub named 'nobody'");
    server.send("kick:b");
    assert!(b.wait_exit().success());
    b.wait_for("kicked by the server");
    server.send("_end_");
    assert!(a.wait_exit().success());
    a.wait_for("the server ended the session");
    assert!(server.wait_exit().success());
}

#[test]
fn profiles_and_flags_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = |args: &[&str]| {
        let mut p = Proc::start("stub", &exe("client_stub"), args, dir);
        let status = p.wait_exit();
        (status, p.output().join("\n"))
    };
    let (status, out) = run(&["-c", "nosuch"]);
    assert!(!status.success());
    assert!(
        out.contains("no profile 'nosuch'") && out.contains("conf/nosuch.toml"),
        "{out}"
    );
    // A path has no `conf/NAME.toml` to fall back to: named once, not twice.
    let (status, out) = run(&["-c", "gone/p.toml"]);
    assert!(!status.success());
    assert!(
        out.contains("no profile 'gone/p.toml': it is not a file"),
        "{out}"
    );

    fs::write(dir.join("typo.toml"), "nmae = \"x\"\n").unwrap();
    let (status, out) = run(&["-c", "typo.toml"]);
    assert!(!status.success());
    assert!(out.contains("unknown field `nmae`"), "{out}");
    // The parser's report keeps its lines (the line quoted, the caret under it), not `\n`s.
    assert!(!out.contains("\\n"), "{out}");
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("1 | nmae")),
        "{out}"
    );

    // A server-only limit would do nothing here: refused, named.
    fs::write(dir.join("server.toml"), "[limits]\nheartbeat_ms = 100\n").unwrap();
    let (status, out) = run(&["-c", "server.toml"]);
    assert!(!status.success());
    assert!(
        out.contains("bad profile server.toml")
            && out.contains("`heartbeat_ms` is a server setting"),
        "{out}"
    );

    // An empty directory or interpreter would be the profile's directory, or never start.
    fs::write(dir.join("empty.toml"), "receiving_dir = \"\"\n").unwrap();
    let (status, out) = run(&["-c", "empty.toml"]);
    assert!(!status.success());
    assert!(
        out.contains("receiving_dir = \"\"") && out.contains("must not be empty"),
        "{out}"
    );
    let (status, out) = run(&["-n", "x", "-a", "127.0.0.1", "--python", ""]);
    assert_eq!(status.code(), Some(2));
    assert!(
        out.contains("'--python <PATH>'") && out.contains("must not be empty"),
        "{out}"
    );

    fs::write(dir.join("noname.toml"), "address = \"127.0.0.1\"\n").unwrap();
    let (status, out) = run(&["-c", "noname.toml"]);
    assert!(!status.success());
    assert!(
        out.contains("-n NAME sets it") && out.contains("'name'"),
        "{out}"
    );

    let (status, out) = run(&["-n", "x"]);
    assert!(!status.success());
    assert!(
        out.contains("-a ADDRESS sets it") && out.contains("'address'"),
        "{out}"
    );

    let (status, out) = run(&["--port", "notaport"]);
    assert_eq!(status.code(), Some(2));
    assert!(out.contains("invalid value 'notaport'"), "{out}");

    let (status, out) = run(&["-n", "x", "-a", "127.0.0.1", "-p", "1"]);
    assert!(!status.success());
    assert!(
        out.contains("cannot reach the server at 127.0.0.1:1"),
        "{out}"
    );

    let mut srv = Proc::start("server", &exe("server_stub"), &["-c", "nosuch"], dir);
    assert!(!srv.wait_exit().success());
    srv.wait_for("no profile 'nosuch'");

    // An address that does not resolve is reported as such, not as one beyond loopback.
    let args = ["-a", "no-such-host.invalid", "-p", "0", "-d", "srv"];
    let mut srv = Proc::start("server", &exe("server_stub"), &args, dir);
    assert!(!srv.wait_exit().success());
    srv.wait_for("cannot listen on no-such-host.invalid");
    assert_eq!(
        srv.count("without a network token"),
        0,
        "{:?}",
        srv.output()
    );
}

#[test]
fn a_directory_that_cannot_be_used_is_named_with_what_it_is_for() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("afile"), "").unwrap();
    let mut srv = Proc::start(
        "server",
        &exe("server_stub"),
        &["-p", "0", "-d", "afile"],
        dir,
    );
    assert!(!srv.wait_exit().success());
    let out = srv.output().join("\n");
    assert!(
        out.contains(
            "cannot use afile as the server's directory (-d, profile key dir): it is a file"
        ),
        "{out}"
    );
    // Said before listening, not after.
    assert!(!out.contains("listening"), "{out}");

    for (recv, why) in [
        ("afile", "it is a file"),
        ("/proc/x", "cannot create it: No such file or directory"),
    ] {
        let mut stub = start_stub("stub", dir, "1", "a", recv, &[]);
        assert!(!stub.wait_exit().success());
        let out = stub.output().join("\n");
        let named = format!(
            "cannot use {recv} as the receiving directory (-d, profile key receiving_dir): {why}"
        );
        assert!(out.contains(&named), "{out}");
    }
}

/// A module's path that is not UTF-8 cannot go in a TOML profile: `sc:` says so and saves
/// nothing. It used to save the path with U+FFFD in place of the bytes, naming no file.
#[test]
fn sc_refuses_a_path_that_is_not_utf8_rather_than_save_it_changed() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let odd = dir.join(std::ffi::OsStr::from_bytes(b"bad\xffdir"));
    fs::create_dir(&odd).unwrap();
    fs::write(odd.join("nb.py"), "def nb():\n    return 1\n").unwrap();
    // Registered by a UTF-8 name; the stub keeps the real path, which is not.
    std::os::unix::fs::symlink(&odd, dir.join("link")).unwrap();
    let link = dir.join("link/nb.py");
    let mut a = stub(
        dir,
        port,
        "a",
        &["-l", "--register", link.to_str().unwrap()],
    );
    a.wait_for("registered nb");
    a.send("sc:mine");
    let line = a.wait_for("cannot save the profile");
    assert!(line.contains("invalid UTF-8"), "{line}");
    assert!(!dir.join("conf/mine.toml").exists());
}

#[test]
fn sc_creates_conf_for_a_name_but_not_the_directory_of_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l"]);
    a.send("sc:mine");
    a.wait_for("saved the running configuration to conf/mine.toml");
    assert!(dir.join("conf/mine.toml").is_file());
    let missing = dir.join("no/such");
    a.send(&format!("sc:{}/x.toml", missing.display()));
    let line = a.wait_for("x.toml");
    assert!(
        line.contains(&format!(
            "cannot save the profile to {0}/x.toml: there is no directory {0}",
            missing.display()
        )),
        "{line}"
    );
    assert!(!dir.join("no").exists());
    // A directory is not a file to save to, and is left as it was.
    a.send(&format!("sc:{}/conf", dir.display()));
    let line = a.wait_for(&format!(
        "cannot save the profile to {}/conf:",
        dir.display()
    ));
    assert!(
        line.ends_with("it is a directory: name a file (NAME.toml)"),
        "{line}"
    );
    assert!(dir.join("conf/mine.toml").is_file());
}

#[test]
fn a_python_path_in_a_profile_is_relative_to_the_profile_and_sc_keeps_it_working() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = &tmp.path().canonicalize().unwrap();
    let (_server, port) = server(dir, &[]);
    // A virtualenv-like interpreter beside the profile, not beside where the stub starts.
    let bin = dir.join("prof/venv/bin");
    fs::create_dir_all(&bin).unwrap();
    fs::write(bin.join("python"), "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
    fs::set_permissions(bin.join("python"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(dir.join("m.py"), "def f():\n    return 'ran'\n").unwrap();
    fs::write(
        dir.join("prof/p.toml"),
        format!("name = \"p\"\naddress = \"127.0.0.1\"\nport = {port}\napp_port = 0\nreceiving_dir = \"recv\"\nlive_console = true\npython = \"venv/bin/python\"\nregister = [\"../m.py\"]\n"),
    )
    .unwrap();
    let mut p = Proc::start("p", &exe("client_stub"), &["-c", "prof/p.toml"], dir);
    p.wait_for("registered m");
    let ran: String = eventually(|| client(&p).call_as("m", "f", ())).unwrap();
    assert_eq!(ran, "ran");
    p.send("sc:saved");
    p.wait_for("saved the running configuration to conf/saved.toml");
    let saved = fs::read_to_string(dir.join("conf/saved.toml")).unwrap();
    let python = format!("python = {:?}", bin.join("python").display().to_string());
    assert!(saved.contains(&python), "{saved}");
}

#[test]
fn a_profile_runs_the_stub_and_sc_saves_one_that_restores_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let z = module_copy(dir);
    let (_server, port) = server(dir, &[]);
    fs::create_dir_all(dir.join("conf")).unwrap();
    fs::write(
        dir.join("conf/mine.toml"),
        format!("name = \"p\"\naddress = \"127.0.0.1\"\nport = {port}\napp_port = 0\nreceiving_dir = \"../recv\"\nlive_console = true\nregister = [\"../z.py\"]\nexpose = [\"math\"]\ncall_timeout_ms = 700\n"),
    )
    .unwrap();
    let mut p = Proc::start("p", &exe("client_stub"), &["-c", "mine"], dir);
    p.wait_for("registered z");
    assert!(
        dir.join("recv").is_dir(),
        "receiving_dir is relative to the profile"
    );
    p.wait_for("registered math");
    // The profile edited while the stub runs: `sc:` saves what runs now.
    let edited = fs::read_to_string(dir.join("conf/mine.toml")).unwrap();
    fs::write(
        dir.join("conf/mine.toml"),
        edited.replace("\"math\"", "\"cmath\""),
    )
    .unwrap();
    p.wait_for("registered cmath");
    let port_taken = app_port(&p);
    p.send("sc:saved");
    p.wait_for("saved the running configuration to conf/saved.toml");
    p.send("quit");
    assert!(p.wait_exit().success());

    let saved = fs::read_to_string(dir.join("conf/saved.toml")).unwrap();
    assert!(saved.contains("name = \"p\""), "{saved}");
    assert!(saved.contains("call_timeout_ms = 700"), "{saved}");
    // Only the limits a client stub uses.
    assert!(saved.contains("queue_frames = "), "{saved}");
    for server_only in ["max_peers", "max_calls_in_flight", "heartbeat_ms"] {
        assert!(!saved.contains(server_only), "{saved}");
    }
    assert!(saved.contains("expose = [\"cmath\"]"), "{saved}");
    assert!(
        saved.contains(&format!("app_port = {port_taken}")),
        "{saved}"
    );
    assert!(
        !saved.contains("import:"),
        "exposed modules stay in expose: {saved}"
    );
    assert!(
        saved.contains(&z.canonicalize().unwrap().display().to_string()),
        "{saved}"
    );
    let again = Proc::start(
        "again",
        &exe("client_stub"),
        &["-c", "saved", "-q", "0"],
        dir,
    );
    again.wait_for("registered z");
    again.wait_for("registered cmath");
    assert_eq!(again.count("error"), 0, "{:?}", again.output());
}

#[test]
fn a_network_token_keeps_strangers_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (server, port) = server(dir, &["--token", "s3cret"]);
    let p = port.to_string();
    let args = ["-a", "127.0.0.1", "-p", &p, "-n", "x", "-q", "0", "-d", "x"];
    let mut stranger = Proc::start("stranger", &exe("client_stub"), &args, dir);
    assert!(!stranger.wait_exit().success());
    stranger.wait_for("refused this stub: missing or wrong network token");
    let mut wrong = args.to_vec();
    wrong.extend(["--token", "guess"]);
    let mut guess = Proc::start("guess", &exe("client_stub"), &wrong, dir);
    assert!(!guess.wait_exit().success());
    assert_eq!(server.count("joined:"), 0);

    let mut right = args.to_vec();
    right.extend(["--token", "s3cret"]);
    let member = Proc::start("member", &exe("client_stub"), &right, dir);
    member.wait_for("joined 127.0.0.1");
    server.wait_for("joined: x");

    // Beyond loopback without a token, the server refuses to start and says why, however the
    // address is written (`[::]` was looked up with its brackets, failed, and was let through).
    for address in [
        "0.0.0.0",
        "::",
        "[::]",
        "[0:0:0:0:0:0:0:0]",
        "[::ffff:192.0.2.2]",
    ] {
        let args = ["-a", address, "-p", "0"];
        let mut open = Proc::start("open", &exe("server_stub"), &args, dir);
        assert!(!open.wait_exit().success(), "{address}");
        open.wait_for("without a network token");
    }
}

#[test]
fn a_module_an_app_provides_again_right_after_leaving_stays_provided() {
    use std::io::{BufRead, BufReader, Write};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let a = stub(dir, port, "a", &[]);
    let b = stub(dir, port, "b", &[]);
    let desc = common::provider::Provider::new("pv")
        .function("f", &[], "", |(): ()| Ok(1))
        .descriptor()
        .clone();
    let provide = serde_json::json!({"cmd": "provide", "data": {"id": 1, "descriptor": desc}});
    let a_port = app_port(&a);
    // Each app leaves, and the next provides pv before the server has answered the withdraw
    // its leaving sent; the last one stays connected.
    let mut apps = Vec::new();
    for _ in 0..5 {
        apps.clear();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", a_port)).unwrap();
        writeln!(s, "{provide}").unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("\"Ok\""), "{line}");
        apps.push(s);
    }
    let (owner, caller) = (client(&a), client(&b));
    let listed = |c: &common::app::Client| c.modules("").unwrap().contains(&"pv".to_owned());
    for _ in 0..50 {
        if a.count("withdrew pv") >= 4 && listed(&caller) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(listed(&owner), "{}", a.output().join("\n"));
    assert!(listed(&caller), "{}", b.output().join("\n"));
}

#[test]
fn a_server_stopped_by_a_signal_says_so_and_its_stubs_hear_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &[]);
    server.wait_for("joined: a");
    assert!(server.terminate().success());
    // It used to say "the server ended the session", as if `_end_` had been typed.
    let why = "the server was asked to stop (Ctrl-C or a terminate signal)";
    server.wait_for(&format!("stopped: {why}"));
    assert!(a.wait_exit().success());
    a.wait_for(why);
}

/// A module in Latin-1 with a coding declaration, as Python imports it: registered, described
/// and called like any other. One not UTF-8 without a declaration is refused, naming its line.
#[test]
fn a_module_in_a_declared_encoding_is_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let source = "# -*- coding: latin-1 -*-\ndef größe(wert):\n    \"\"\"Gibt die Größe zurück.\"\"\"\n    return wert * 2\n";
    let latin1: Vec<u8> = source.chars().map(|c| c as u32 as u8).collect();
    fs::write(dir.join("mess.py"), &latin1).unwrap();
    fs::write(
        dir.join("plain.py"),
        &latin1[source.find('\n').unwrap() + 1..],
    )
    .unwrap();
    let (_server, port) = server(dir, &[]);
    let mut a = stub(dir, port, "a", &["-l"]);
    let mut b = stub(dir, port, "b", &["-l"]);
    a.send(&format!("rm:{}", dir.join("plain.py").display()));
    a.wait_for("line 1 is not UTF-8, and no coding declaration names another encoding");
    a.send(&format!("rm:{}", dir.join("mess.py").display()));
    b.wait_for("received mess from a");
    let app = client(&b);
    let twice: i64 = eventually(|| app.call_as("mess", "größe", (21,))).unwrap();
    assert_eq!(twice, 42);
    b.send("desc:mess");
    b.wait_for("Gibt die Größe zurück.");
}
