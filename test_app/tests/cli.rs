//! test_app's command line: what a user who gets an option or a profile wrong is told.

use std::path::Path;

use test_app::procs::Proc;

/// Runs test_app with `args` in `dir`; its exit code and everything it printed.
fn run(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut p = Proc::start(
        "test_app",
        Path::new(env!("CARGO_BIN_EXE_test_app")),
        args,
        dir,
    );
    let status = p.wait_exit();
    (status.code(), p.output().join("\n"))
}

/// Runs test_app with `args` as `test_app ARGS | head -0` would: its output's reader gone
/// before the first line. Without CARGO set (the demo builds with it). Its exit status and
/// what it wrote to stderr.
fn run_unread(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_test_app"))
        .args(args)
        .env_remove("CARGO")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let done = child.wait_with_output().unwrap();
    (
        done.status,
        String::from_utf8_lossy(&done.stderr).into_owned(),
    )
}

#[test]
fn a_bad_profile_is_named_with_its_fault_not_reported_as_not_connected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cases = [
        ("typo.toml", "app_prot = 8765\n", "unknown field `app_prot`"),
        ("broken.toml", "app_port = \n", "invalid string"),
        (
            "server_key.toml",
            "[limits]\nmax_peers = 5\n",
            "`max_peers` is a server setting",
        ),
        ("zero.toml", "call_timeout_ms = 0\n", "at least 1 ms"),
    ];
    for (file, text, fault) in cases {
        std::fs::write(dir.join(file), text).unwrap();
        let (code, out) = run(dir, &["-c", file, "call", "m.f"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.starts_with(&format!("error: bad profile {file}: ")) && out.contains(fault),
            "{out}"
        );
        assert!(!out.contains("not connected"), "{out}");
    }
    let (code, out) = run(dir, &["-c", "nosuch", "list"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("error: no profile 'nosuch'"), "{out}");
}

#[test]
fn the_demo_refuses_the_flags_that_do_not_apply_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    for flags in [&["-q", "9"][..], &["-c", "conf"], &["--timeout-ms", "5"]] {
        let (code, out) = run(tmp.path(), &[&["demo"][..], flags].concat());
        assert_eq!(code, Some(2), "{flags:?}: {out}");
        assert!(
            out.contains(
                "error: demo starts its own network: -q, -c and --timeout-ms do not apply"
            ),
            "{flags:?}: {out}"
        );
    }
    // Nor does its help offer them.
    let (code, help) = run(tmp.path(), &["demo", "--help"]);
    assert_eq!(code, Some(0), "{help}");
    assert!(help.contains("Usage: test_app demo"), "{help}");
    for flag in ["--app-port", "--config", "--timeout-ms", "OPTIONS"] {
        assert!(!help.contains(flag), "{flag}: {help}");
    }
}

#[test]
fn a_timeout_of_0_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = run(tmp.path(), &["--timeout-ms", "0", "call", "m.f"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("invalid value '0' for '--timeout-ms <TIMEOUT_MS>'")
            && out.contains("at least 1 ms"),
        "{out}"
    );
}

/// A binary of this workspace, built beside test_app (`cargo build --workspace`).
fn sibling(name: &str) -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_test_app"))
        .parent()
        .unwrap()
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: run cargo build --workspace first",
        path.display()
    );
    path
}

/// A server stub in `dir/server`, running while the returned process lives; its port.
fn server(dir: &Path) -> (Proc, String) {
    let srv_dir = dir.join("server");
    let server = Proc::start(
        "server",
        &sibling("server_stub"),
        &["-p", "0", "-d", srv_dir.to_str().unwrap()],
        dir,
    );
    let line = server.wait_for("listening on ");
    let port = line.rsplit(':').next().unwrap().trim().to_owned();
    (server, port)
}

/// A server and a stub `a` that owns the example module z: they run while the returned
/// processes live; the stub's app port.
fn network(dir: &Path) -> ([Proc; 2], String) {
    let (server, port) = server(dir);
    let port = port.as_str();
    let z = Path::new(env!("CARGO_MANIFEST_DIR")).join("modules/z.py");
    let recv = dir.join("a");
    let stub = Proc::start(
        "a",
        &sibling("client_stub"),
        &[
            "-a",
            "127.0.0.1",
            "-p",
            port,
            "-n",
            "a",
            "-q",
            "0",
            "-d",
            recv.to_str().unwrap(),
            "--register",
            z.to_str().unwrap(),
        ],
        dir,
    );
    stub.wait_for("registered z");
    let app = stub.wait_for("apps on ");
    let app_port = app.rsplit(':').next().unwrap().trim().to_owned();
    ([server, stub], app_port)
}

/// `-q` given the server stub's port: the server answers the app's first frame (no hello)
/// with a refusal and closes; it used to be told "the stub closed the connection".
#[test]
fn an_app_port_that_is_a_server_stubs_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir);
    let told = format!(
        "error: not connected: 127.0.0.1:{port} is not a stub's app port \
         (it answered as a server stub)"
    );
    for args in [&["list"][..], &["call", "z.add_prams", "1", "2"]] {
        let (code, out) = run(dir, &[&["-q", port.as_str()][..], args].concat());
        assert_eq!((code, out.as_str()), (Some(1), told.as_str()), "{args:?}");
    }
    // The async client says so too.
    let address = format!("127.0.0.1:{port}");
    let err = smol::block_on(async {
        let app = common::app::AsyncClient::connect(&address).await.unwrap();
        app.modules("").await.unwrap_err()
    });
    assert_eq!(format!("error: {err}"), told);
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let (_network, app_port) = network(tmp.path());
    // `test_app describe z | head -0`: the pipe is closed before the first line is written.
    for args in [&["describe", "z"][..], &["call", "z.add_prams", "1", "2"]] {
        let (status, stderr) = run_unread(&[&["-q", &app_port][..], args].concat());
        assert!(status.success(), "{args:?}: {status:?} {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn call_takes_negative_numbers_and_refuses_numbers_it_would_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_network, app_port) = network(dir);
    let call = |args: &[&str]| run(dir, &[&["-q", &app_port, "call"][..], args].concat());
    assert_eq!(call(&["z.add_prams", "-1", "2"]), (Some(0), "1".into()));
    assert_eq!(
        call(&["z.add_prams", "-1.5", "b=-2"]),
        (Some(0), "-3.5".into())
    );
    let u64_max = u64::MAX.to_string();
    assert_eq!(call(&["z.add_prams", &u64_max, "0"]), (Some(0), u64_max));
    // Once an approximate float (1.8446744073709552e+19), once the string "1e400".
    for (number, why) in [
        ("18446744073709551616", "an integer beyond 64 bits"),
        ("1e400", "beyond the range of a float"),
    ] {
        let (code, out) = call(&["z.add_prams", number, "0"]);
        assert_eq!(code, Some(1), "{out}");
        let said = format!("error: wrong arguments: {number}: the number {number} is {why}");
        assert!(out.starts_with(&said), "{out}");
    }
}

#[test]
fn call_prints_a_result_that_would_reorder_the_line_as_the_same_json_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_network, app_port) = network(dir);
    let args = [
        "-q",
        &app_port,
        "call",
        "z.add_prams",
        r#""a\u202e""#,
        r#""b""#,
    ];
    assert_eq!(run(dir, &args), (Some(0), r#""a\u202eb""#.into()));
}

#[test]
fn call_refuses_a_malformed_argument_or_target_saying_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_network, app_port) = network(dir);
    let call = |args: &[&str]| run(dir, &[&["-q", &app_port, "call"][..], args].concat());
    // They used to go as the strings '{"a": 1' and '[1, 2', or to no module ''.
    for (args, said) in [
        (
            &["z.add_prams", r#"{"a": 1"#, "2"][..],
            r#"{"a": 1: not JSON"#,
        ),
        (&["z.add_prams", "1", "b=[1, 2"], "b=[1, 2: not JSON"),
        (&[".add_prams", "1", "2"], "'.add_prams' has no module name"),
    ] {
        let (code, out) = call(args);
        assert_eq!(code, Some(1), "{out}");
        let said = format!("error: wrong arguments: {said}");
        assert!(out.starts_with(&said), "{args:?}: {out}");
    }
    // A bare word is still a string.
    let (code, out) = call(&["z.greet", "bob"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("bob"), "{out}");
}

#[test]
fn the_demo_runs_to_its_end_and_cleans_up_when_its_reader_goes_away() {
    // Without CARGO set, the demo uses the binaries built beside it.
    let (status, stderr) = run_unread(&["demo"]);
    // It used to panic at its first line, leaving its stubs to fail its steps.
    assert!(status.success(), "{status:?} {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_demo_interrupted_says_so_last_and_exits_130() {
    use std::io::BufRead;
    let mut demo = std::process::Command::new(env!("CARGO_BIN_EXE_test_app"))
        .arg("demo")
        .env_remove("CARGO")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Interrupted as its app starts calling: the calls fail as the stubs are stopped.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let calling = line.contains("an app connects to gamma");
        seen.push(line);
        if calling {
            let pid = demo.id().to_string();
            assert!(std::process::Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success());
            break;
        }
    }
    seen.extend(lines.map(Result::unwrap));
    assert_eq!(demo.wait().unwrap().code(), Some(130), "{seen:#?}");
    // Nothing after the notice: neither the failing calls nor the stubs' last words.
    let last = seen.iter().rposition(|l| !l.is_empty()).unwrap();
    assert_eq!(
        seen[last], "interrupted: stopping every process",
        "{seen:#?}"
    );
}
