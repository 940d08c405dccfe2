//! The server binary spoken to byte by byte: the wire format, and bad input answered with an
//! error frame while the connection (and everyone else) keeps working.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server() -> Server {
    server_with("")
}

/// A server whose profile holds `limits` (TOML lines of the `[limits]` table).
fn server_with(limits: &str) -> Server {
    server_profile(&format!("[limits]\n{limits}\n"))
}

/// A server whose profile (in its temp dir) is `toml`.
fn server_profile(toml: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("server.toml");
    std::fs::write(&profile, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_server_stub"))
        .args(["-p", "0", "-c"])
        .arg(&profile)
        .arg("-d")
        .arg(dir.path().join("store"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    // Keep reading what the server prints, so its stdout never fills up.
    std::thread::spawn(move || out.lines().map_while(Result::ok).for_each(drop));
    Server { child, port, dir }
}

struct Peer {
    out: TcpStream,
    inp: BufReader<TcpStream>,
}

impl Peer {
    fn connect(port: u16) -> Peer {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Peer {
            out: s.try_clone().unwrap(),
            inp: BufReader::new(s),
        }
    }

    fn raw(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).unwrap();
    }

    fn send(&mut self, v: Value) {
        self.raw(format!("{v}\n").as_bytes());
    }

    /// The next frame other than a heartbeat.
    fn recv(&mut self) -> Value {
        loop {
            let mut line = String::new();
            self.inp.read_line(&mut line).unwrap();
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
            if v["cmd"] != "ping" {
                return v;
            }
        }
    }

    fn join(port: u16, name: &str) -> Peer {
        Self::join_as(port, name, json!(null))
    }

    fn join_as(port: u16, name: &str, session: Value) -> Peer {
        let mut p = Peer::connect(port);
        p.send(json!({"cmd": "hello", "data": {"version": 1, "name": name, "session": session}}));
        let welcome = p.recv();
        let data = &welcome["data"];
        assert_eq!(welcome["cmd"], "welcome", "{welcome}");
        assert_eq!(data["name"], name, "{welcome}");
        assert_eq!(
            (&data["version"], &data["heartbeat_ms"]),
            (&json!(1), &json!(5000))
        );
        p
    }
}

fn chunk(module: &str, md5: &str, size: u64, seq: u32, total: u32, data: &str) -> Value {
    json!({"cmd": "chunk", "data": {"module": module, "md5": md5, "size": size, "seq": seq, "total": total, "data": data}})
}

#[test]
fn a_bad_profile_is_one_error_its_lines_indented_under_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("server.toml");
    std::fs::write(&profile, "port = 0\nadress = \"127.0.0.1\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_server_stub"))
        .arg("-c")
        .arg(&profile)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].starts_with(&format!("error: bad profile {}: ", profile.display())),
        "{err}"
    );
    assert!(
        lines.len() > 1 && lines[1..].iter().all(|l| l.starts_with("    ")),
        "{err}"
    );
    assert!(err.contains("unknown field `adress`"), "{err}");
}

/// What `cmd` printed and how it ended, killed if still running after `limit` (a server that
/// should have refused to start must not hang the test).
fn output_within(mut cmd: Command, limit: Duration) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

#[test]
fn a_log_file_that_cannot_be_used_is_an_error_naming_it_not_a_panic_or_lost_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("logs")).unwrap();
    let profile = dir.path().join("server.toml");
    // (what [log] file says, what the error says about it)
    let cases = [
        ("", "it names no file"),
        (
            ".",
            "it names a directory: give [log] file a file in it, like ",
        ),
        ("logs", "it names a directory"),
        // Not made: a file named `new` would not do either.
        (
            "new/",
            "it names a directory: give [log] file a file in it, like ",
        ),
        // Opened for appending, they refuse every write.
        ("/dev/full", "No space left on device"),
        // (Input/output error; for a user but root, Permission denied at the open.)
        ("/proc/version", ""),
    ];
    for (file, why) in cases {
        std::fs::write(&profile, format!("port = 0\n[log]\nfile = \"{file}\"\n")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_server_stub"));
        cmd.arg("-c")
            .arg(&profile)
            .arg("-d")
            .arg(dir.path().join("store"));
        let out = output_within(cmd, Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "[log] file = {file:?}: {err}");
        assert!(
            err.starts_with("error: cannot log to ")
                && err.contains(&format!("([log] file in {}): {why}", profile.display())),
            "[log] file = {file:?}: {err}"
        );
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.is_empty(), "it must not listen: {said}");
    }
    assert!(!dir.path().join("new").exists());
}

#[test]
fn a_server_that_cannot_listen_leaves_no_directory_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    for (store, made) in [("made", "made"), ("outer/inner", "outer"), ("kept", "")] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_server_stub"));
        cmd.args(["-p", &port, "-d"]).arg(dir.path().join(store));
        let out = output_within(cmd, Duration::from_secs(10));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        let cannot = format!("error: cannot listen on 127.0.0.1:{port}: ");
        assert!(err.starts_with(&cannot), "{err}");
        assert!(
            !dir.path().join(made).exists() || made.is_empty(),
            "-d {store}"
        );
    }
    assert!(kept.is_dir(), "a directory it did not make stays");
}

/// What a process prints, line by line, as it prints it.
#[derive(Clone, Default)]
struct Said(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Said {
    fn read(child: &mut Child) -> Said {
        let said = Said::default();
        let out = BufReader::new(child.stdout.take().unwrap());
        let lines = said.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                lines.0.lock().unwrap().push(line);
            }
        });
        said
    }

    /// The lines said so far, once one matches `wanted` (waited for, within a bound that only
    /// catches a hang).
    fn once(&self, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let lines = self.0.lock().unwrap().clone();
            if lines.iter().any(|l| wanted(l)) {
                return lines;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "{lines:#?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_log_file_that_fills_loses_lines_counted_and_told_once_and_tears_none() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("server.toml");
    std::fs::write(&profile, "[log]\nfile = \"server.log\"\n").unwrap();
    let log = dir.path().join("server.log");
    // A disk that fills: the server may write its files up to 8 blocks (4 or 8 KiB), past which
    // a write takes what fits and the next fails (EFBIG; its signal ignored).
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 8 && trap '' XFSZ && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_server_stub"))
        .args(["-p", "0", "-c"])
        .arg(&profile)
        .arg("-d")
        .arg(dir.path().join("store"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let said = Said::read(&mut child);
    let lines = said.once(|l| l.starts_with("listening on "));
    let port: u16 = lines[0].rsplit(':').next().unwrap().parse().unwrap();
    let _server = Server { child, port, dir };
    let mut p = Peer::join(port, "a");
    let message = |i: usize| format!("m{i:03} {}", "x".repeat(100));
    let logged = |i: usize| format!("message from a: {}", message(i));
    for i in 0..200 {
        p.send(json!({"cmd": "say", "data": {"text": message(i)}}));
    }
    let named = format!("log file {:?}: ", log.display().to_string());
    let failing = format!(
        "{named}cannot write: File too large (os error 27); its lines are dropped, and counted, \
         until it takes them again"
    );
    said.once(|l| l == failing);
    // Failing, the file is at its limit: nothing more can land in it. Room again:
    let before = std::fs::read_to_string(&log).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    p.send(json!({"cmd": "say", "data": {"text": message(200)}}));
    let back = format!("{named}takes lines again, after dropping ");
    let lines = said.once(|l| l.starts_with(&back));
    let told: Vec<&String> = (lines.iter())
        .filter(|l| l.starts_with("log file "))
        .collect();
    assert_eq!(told.len(), 2, "told once, until it was back: {told:#?}");
    let dropped: usize = told[1][back.len()..]
        .strip_suffix(" log lines")
        .unwrap()
        .parse()
        .unwrap();

    // The file holds whole lines only: the one it took part of was finished first. The lines
    // dropped are counted where they were, before the first line kept after them.
    let after = std::fs::read_to_string(&log).unwrap();
    let whole = format!("{before}{after}");
    let note = format!(
        "... {dropped} log lines dropped: the log file was not taking them (File too large (os \
         error 27))"
    );
    let lines: Vec<&str> = whole.lines().collect();
    let at = lines.iter().position(|l| *l == note).expect(&whole);
    let kept = (lines[..at].iter())
        .filter(|l| l.starts_with("message from"))
        .enumerate()
        .inspect(|(i, l)| assert_eq!(**l, logged(*i), "{whole}"))
        .count();
    assert!(kept > 0 && dropped > 0, "{whole}");
    // (The lines after it may meet a full file again, if its writer still lagged.)
    assert_eq!(lines[at + 1], logged(kept + dropped), "{whole}");
}

#[test]
fn the_first_frame_must_be_hello() {
    let s = server();
    let mut p = Peer::connect(s.port);
    p.raw(b"\x00\x01 garbage\n");
    let v = p.recv();
    assert_eq!(v["cmd"], "refused", "{v}");
    assert!(
        v["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed frame"),
        "{v}"
    );
    let mut p = Peer::connect(s.port);
    p.send(json!({"cmd": "hello", "data": {"version": 99, "name": "x"}}));
    let v = p.recv();
    assert!(
        v["data"]["reason"].as_str().unwrap().contains("version 99"),
        "{v}"
    );
}

/// The first frame was read up to `max_frame_bytes` (4 MiB) before its token was checked: a
/// few hundred connections holding no token held gigabytes. Now a hello is read up to 32 KiB,
/// and the frames after it up to the limit.
#[test]
fn a_hello_past_its_limit_is_refused_before_it_is_held_and_later_frames_take_the_full_limit() {
    let s = server();
    let mut p = Peer::connect(s.port);
    // (Past the limit, the rest of a frame is read to its newline, but not kept.)
    let long = format!(
        r#"{{"cmd":"hello","data":{{"version":1,"name":"{}"#,
        "n".repeat(40_000)
    );
    p.raw(format!("{long}\n").as_bytes());
    let v = p.recv();
    assert_eq!(v["cmd"], "refused", "{v}");
    let reason = v["data"]["reason"].as_str().unwrap();
    assert!(reason.contains("32768"), "{v}");
    // A member sends a frame far larger than a hello: it is read whole.
    let mut member = Peer::join(s.port, "m");
    let text = "x".repeat(100_000);
    member.send(json!({"cmd": "say", "data": {"text": text}}));
    member.send(json!({"cmd": "echo", "data": {"id": 1}}));
    let answer = member.recv();
    assert_eq!(answer["cmd"], "echo", "{answer}");
}

#[test]
fn a_name_with_spaces_at_either_end_is_refused() {
    // The server's shell could not kick it: `kick: a ` is `kick:a`.
    let s = server();
    let _a = Peer::join(s.port, "a");
    for name in [" a", "a ", " a "] {
        let mut p = Peer::connect(s.port);
        p.send(json!({"cmd": "hello", "data": {"version": 1, "name": name}}));
        let v = p.recv();
        assert_eq!(v["cmd"], "refused", "{name:?}: {v}");
        let reason = v["data"]["reason"].as_str().unwrap();
        assert!(reason.contains("spaces at either end"), "{reason}");
    }
}

#[test]
fn a_peers_text_is_logged_escaped_and_cannot_forge_a_line() {
    let s = server_profile("[log]\nfile = \"server.log\"\n");
    let log = s.dir.path().join("server.log");
    // Refused before any token check: the name it is refused for is quoted.
    let mut stranger = Peer::connect(s.port);
    stranger.send(json!({"cmd": "hello", "data": {"version": 1, "name": "x\u{1b}[2J"}}));
    assert_eq!(stranger.recv()["cmd"], "refused");
    let mut p = Peer::join(s.port, "mallory");
    let text = "hi \u{1b}]0;pwned\u{7}\nforged [server] bob left\r";
    p.send(json!({"cmd": "say", "data": {"text": text}}));
    let start = std::time::Instant::now();
    let written = loop {
        let written = std::fs::read_to_string(&log).unwrap_or_default();
        if written.contains("message from mallory") || start.elapsed() > Duration::from_secs(30) {
            break written;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        written
            .contains(r"message from mallory: hi \u{1b}]0;pwned\u{7}\nforged [server] bob left\r"),
        "{written}"
    );
    assert!(
        written.contains(r"name 'x\u{1b}[2J' is not acceptable"),
        "{written}"
    );
    assert!(!written.contains(['\u{1b}', '\u{7}', '\r']), "{written:?}");
    assert!(
        !written.lines().any(|l| l.starts_with("forged")),
        "{written}"
    );
}

#[test]
fn a_peers_long_text_is_logged_shortened() {
    let s = server_profile("[log]\nfile = \"server.log\"\n");
    let log = s.dir.path().join("server.log");
    let mut stranger = Peer::connect(s.port);
    // (Under the 32 KiB a hello may take.)
    let name = "n".repeat(30_000);
    stranger.send(json!({"cmd": "hello", "data": {"version": 1, "name": name}}));
    let refused = stranger.recv();
    assert_eq!(
        refused["data"]["reason"],
        "a name of 30000 bytes is not acceptable: use 1 to 64 bytes, no ':', control characters or spaces at either end"
    );
    let mut p = Peer::join(s.port, "a");
    p.send(json!({"cmd": "say", "data": {"text": "s".repeat(1_000_000)}}));
    let start = std::time::Instant::now();
    let written = loop {
        let written = std::fs::read_to_string(&log).unwrap_or_default();
        if written.contains("message from a") || start.elapsed() > Duration::from_secs(30) {
            break written;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let said = format!("message from a: {}… (1000000 bytes)\n", "s".repeat(1000));
    assert!(written.contains(&said), "{written}");
    assert!(written.lines().all(|l| l.len() < 1100), "{written}");
}

#[test]
fn bad_frames_get_an_error_and_the_connection_survives() {
    let s = server();
    let mut p = Peer::join(s.port, "a");
    let mut other = Peer::join(s.port, "b");

    p.raw(b"{not json\n");
    let v = p.recv();
    assert_eq!(v["cmd"], "error");
    assert!(
        v["data"]["message"]
            .as_str()
            .unwrap()
            .starts_with("malformed frame"),
        "{v}"
    );

    p.send(json!({"cmd": "launch_missiles"}));
    assert!(p.recv()["data"]["message"]
        .as_str()
        .unwrap()
        .contains("launch_missiles"));

    p.send(json!({"cmd": "say", "data": {"text": 5}}));
    assert!(p.recv()["data"]["message"]
        .as_str()
        .unwrap()
        .contains("invalid type"));

    let mut big = vec![b'x'; 5 * 1024 * 1024];
    big.push(b'\n');
    p.raw(&big);
    let v = p.recv();
    let msg = v["data"]["message"].as_str().unwrap();
    assert!(
        msg.contains("5242880 bytes") && msg.contains("limit of 4194304"),
        "{v}"
    );

    p.send(json!({"cmd": "who"}));
    let v = p.recv();
    assert_eq!(v["cmd"], "who");
    assert_eq!(v["data"]["peers"].as_array().unwrap().len(), 2);
    other.send(json!({"cmd": "who"}));
    assert_eq!(other.recv()["cmd"], "who");
}

#[test]
fn uploads_are_checked_before_anything_is_written() {
    let s = server();
    let mut p = Peer::join(s.port, "a");
    let desc = br#"{"module":"z","functions":[]}"#;
    let b64 = base64_encode(desc);
    let md5 = md5_of(desc);

    for bad in ["../../x", "a/b", "/etc/passwd", "..", "x y"] {
        p.send(chunk(bad, &md5, desc.len() as u64, 0, 1, &b64));
        let v = p.recv();
        assert_eq!(v["cmd"], "register_failed", "{v}");
        assert!(
            v["data"]["reason"]
                .as_str()
                .unwrap()
                .contains("never a path"),
            "{v}"
        );
    }
    p.send(chunk("z", &"0".repeat(32), desc.len() as u64, 0, 1, &b64));
    assert!(p.recv()["data"]["reason"]
        .as_str()
        .unwrap()
        .contains("digest mismatch"));
    p.send(chunk("z", &md5, desc.len() as u64, 1, 2, &b64));
    assert!(p.recv()["data"]["reason"]
        .as_str()
        .unwrap()
        .contains("before seq 0"));
    p.send(chunk("z", &md5, 1 << 40, 0, 1, &b64));
    assert!(p.recv()["data"]["reason"]
        .as_str()
        .unwrap()
        .contains("over the limit"));
    p.send(chunk("y", &md5, desc.len() as u64, 0, 1, &b64));
    assert!(p.recv()["data"]["reason"]
        .as_str()
        .unwrap()
        .contains("names module 'z'"));

    let store = s.dir.path().join("store");
    let names: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "nothing written: {names:?}");
    let outside: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside.len(),
        2,
        "only the store and the profile: {outside:?}"
    );

    p.send(chunk("z", &md5, desc.len() as u64, 0, 1, &b64));
    assert_eq!(
        p.recv(),
        json!({"cmd": "registered", "data": {"module": "z", "md5": md5}})
    );
    assert_eq!(std::fs::read(store.join("z.json")).unwrap(), desc);
}

#[test]
fn an_upload_the_server_cannot_store_is_refused_on_its_console_too() {
    let s = server_profile("[log]\nfile = \"server.log\"\n");
    let log = s.dir.path().join("server.log");
    // Its file cannot be replaced (as with a full disk, the write fails).
    std::fs::create_dir(s.dir.path().join("store/z.json")).unwrap();
    let mut p = Peer::join(s.port, "a");
    let desc = br#"{"module":"z","functions":[]}"#;
    let b64 = base64_encode(desc);
    p.send(chunk("z", &md5_of(desc), desc.len() as u64, 0, 1, &b64));
    let v = p.recv();
    assert_eq!(v["cmd"], "register_failed", "{v}");
    let reason = v["data"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("the server cannot store it: "), "{v}");
    let said = format!("refused module z from a: {reason}\n");
    let start = std::time::Instant::now();
    let written = loop {
        let written = std::fs::read_to_string(&log).unwrap_or_default();
        if written.contains(&said) || start.elapsed() > Duration::from_secs(30) {
            break written;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(written.contains(&said), "{written}");
}

#[test]
fn calls_to_unknown_modules_fail_at_once_and_calls_route_to_the_owner() {
    let s = server();
    let mut owner = Peer::join(s.port, "owner");
    let mut caller = Peer::join(s.port, "caller");
    caller.send(json!({"cmd": "call", "data": {"id": 7, "module": "z", "function": "f", "timeout_ms": 1000}}));
    let v = caller.recv();
    assert_eq!(v["data"]["id"], 7);
    assert_eq!(v["data"]["result"]["Err"]["kind"], "unknown_module", "{v}");

    register_z(&mut owner);
    assert_eq!(caller.recv()["cmd"], "offer");
    caller.send(json!({"cmd": "call", "data": {"id": 8, "module": "z", "function": "f", "args": [1], "timeout_ms": 60000}}));
    let forwarded = owner.recv();
    assert_eq!(forwarded["cmd"], "call");
    assert_eq!(forwarded["data"]["args"], json!([1]));
    let route = forwarded["data"]["id"].clone();
    owner.send(json!({"cmd": "reply", "data": {"id": route, "result": {"Ok": 42}}}));
    assert_eq!(
        caller.recv(),
        json!({"cmd": "reply", "data": {"id": 8, "result": {"Ok": 42}}})
    );

    // The owner vanishes mid-call: the caller is told at once.
    caller.send(json!({"cmd": "call", "data": {"id": 9, "module": "z", "function": "f", "timeout_ms": 60000}}));
    assert_eq!(owner.recv()["cmd"], "call");
    drop(owner);
    let mut kinds = Vec::new();
    for _ in 0..2 {
        let v = caller.recv();
        kinds.push(v["cmd"].as_str().unwrap().to_owned());
        if v["cmd"] == "reply" {
            assert_eq!(v["data"]["id"], 9);
            assert_eq!(v["data"]["result"]["Err"]["kind"], "owner_gone", "{v}");
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["gone", "reply"]);
}

#[test]
fn a_call_and_a_reply_with_data_before_cmd_are_routed_as_any_other() {
    let s = server();
    let mut owner = Peer::join(s.port, "owner");
    let mut caller = Peer::join(s.port, "caller");
    register_z(&mut owner);
    assert_eq!(caller.recv()["cmd"], "offer");
    // Written by hand: `json!` puts keys in order, and these have `cmd` last.
    caller.raw(
        b"{\"data\":{\"id\":8,\"module\":\"z\",\"function\":\"f\",\"args\":[1],\
                 \"timeout_ms\":60000},\"cmd\":\"call\"}\n",
    );
    let forwarded = owner.recv();
    assert_eq!(forwarded["cmd"], "call", "{forwarded}");
    assert_eq!(forwarded["data"]["args"], json!([1]));
    let route = &forwarded["data"]["id"];
    let reply = format!(r#"{{"data":{{"id":{route},"result":{{"Ok":[4, 2]}}}},"cmd":"reply"}}"#);
    owner.raw(format!("{reply}\n").as_bytes());
    assert_eq!(
        caller.recv(),
        json!({"cmd": "reply", "data": {"id": 8, "result": {"Ok": [4, 2]}}})
    );
}

/// Uploads an empty module `z` in one chunk and checks it was registered.
fn register_z(p: &mut Peer) {
    let desc = br#"{"module":"z","functions":[]}"#;
    p.send(chunk(
        "z",
        &md5_of(desc),
        desc.len() as u64,
        0,
        1,
        &base64_encode(desc),
    ));
    assert_eq!(p.recv()["cmd"], "registered");
}

fn md5_of(bytes: &[u8]) -> String {
    common::store::md5_hex(bytes)
}

fn base64_encode(bytes: &[u8]) -> String {
    common::chunk::split("x", bytes).remove(0).data
}

#[test]
fn a_peer_that_does_not_read_is_dropped_and_others_go_on() {
    let s = server_with("queue_frames = 64");
    let mut deaf = Peer::join(s.port, "deaf");
    let mut other = Peer::join(s.port, "other");
    // Ask for far more answers than the socket buffers and the queue hold, reading none.
    let who = format!("{}\n", json!({"cmd": "who"}));
    let burst = who.repeat(2_000);
    // A server that stops reading us makes writes block; give up after a while.
    deaf.out
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut dropped = false;
    for _ in 0..200 {
        if deaf.out.write_all(burst.as_bytes()).is_err() {
            dropped = true;
            break;
        }
    }
    // The other peer is answered all along, and soon the deaf one is gone.
    let start = std::time::Instant::now();
    loop {
        other.send(json!({"cmd": "who"}));
        let v = other.recv();
        assert_eq!(v["cmd"], "who");
        let peers = v["data"]["peers"].as_array().unwrap().len();
        if peers == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "deaf never dropped ({dropped})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn limits_on_peers_and_calls_in_flight_answer_with_the_limit() {
    let s = server_with("max_peers = 2\nmax_calls_in_flight = 2");
    let mut owner = Peer::join(s.port, "owner");
    let mut caller = Peer::join(s.port, "caller");
    let mut third = Peer::connect(s.port);
    third.send(json!({"cmd": "hello", "data": {"version": 1, "name": "third"}}));
    let v = third.recv();
    assert!(
        v["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("full (2 stubs"),
        "{v}"
    );

    register_z(&mut owner);
    assert_eq!(caller.recv()["cmd"], "offer");
    for id in 1..=3 {
        caller.send(json!({"cmd": "call", "data": {"id": id, "module": "z", "function": "f", "timeout_ms": 60000}}));
    }
    let v = caller.recv();
    assert_eq!(v["data"]["id"], 3);
    let err = &v["data"]["result"]["Err"];
    assert_eq!(err["kind"], "too_large");
    assert!(
        err["message"].as_str().unwrap().contains("limit is 2"),
        "{v}"
    );
}

#[test]
fn a_stub_reconnecting_with_its_session_replaces_its_ghost() {
    let s = server();
    let mut ghost = Peer::join_as(s.port, "a", json!("s1"));
    register_z(&mut ghost);
    let mut watcher = Peer::join(s.port, "w");
    assert_eq!(watcher.recv()["cmd"], "offer");

    // A stranger cannot take the name; the same session can.
    let mut stranger = Peer::connect(s.port);
    stranger.send(json!({"cmd": "hello", "data": {"version": 1, "name": "a", "session": "s2"}}));
    assert_eq!(stranger.recv()["data"]["name_taken"], true);
    let mut back = Peer::join_as(s.port, "a", json!("s1"));
    // The ghost is told why, then its connection is closed; the module stayed: nobody was
    // told it went.
    let told = ghost.recv();
    assert_eq!(told["cmd"], "shutdown", "{told}");
    assert!(
        told["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("replaced"),
        "{told}"
    );
    let mut line = String::new();
    assert_eq!(ghost.inp.read_line(&mut line).unwrap_or(0), 0, "{line}");
    watcher.send(json!({"cmd": "who"}));
    let v = watcher.recv();
    assert_eq!(v["cmd"], "who", "no gone frame came first: {v}");
    assert_eq!(v["data"]["peers"][0]["modules"], json!(["z"]));
    back.send(json!({"cmd": "who"}));
    assert_eq!(back.recv()["cmd"], "who");
}

/// The server's heartbeats keep the interval its profile sets, even one under its 250 ms tick:
/// a stub hearing nothing for three intervals would drop the link.
#[test]
fn heartbeats_keep_a_short_interval() {
    let s = server_with("heartbeat_ms = 100");
    let mut p = Peer::connect(s.port);
    p.send(json!({"cmd": "hello", "data": {"version": 1, "name": "p", "session": null}}));
    let mut line = String::new();
    p.inp.read_line(&mut line).unwrap();
    assert!(line.contains("welcome"), "{line}");
    let start = std::time::Instant::now();
    let mut gaps = Vec::new();
    let mut last = start;
    while start.elapsed() < Duration::from_secs(2) {
        line.clear();
        p.inp.read_line(&mut line).unwrap();
        if line.contains("ping") {
            gaps.push(last.elapsed().as_millis());
            last = std::time::Instant::now();
        }
    }
    // The median: a busy machine may delay a ping or two, not most of them (250 ms, unfixed).
    gaps.sort_unstable();
    assert!(gaps[gaps.len() / 2] < 200, "pings {gaps:?} ms apart");
}

#[test]
fn a_long_frame_arriving_slowly_keeps_its_sender_in() {
    // Silent for three heartbeats (1.5 s) means gone; the frame takes 4 s to arrive.
    let s = server_with("heartbeat_ms = 500");
    let mut slow = Peer::connect(s.port);
    slow.send(json!({"cmd": "hello", "data": {"version": 1, "name": "slow", "session": null}}));
    assert_eq!(slow.recv()["cmd"], "welcome");
    let call = json!({"cmd": "call", "data": {"id": 7, "module": "z", "function": "f",
        "args": ["x".repeat(40_000)], "timeout_ms": 60000}});
    let frame = format!("{call}\n");
    for piece in frame.as_bytes().chunks(frame.len() / 40 + 1) {
        slow.raw(piece);
        std::thread::sleep(Duration::from_millis(100));
    }
    let v = slow.recv();
    assert_eq!(v["cmd"], "reply", "{v}");
    assert_eq!(v["data"]["id"], 7);
    assert_eq!(v["data"]["result"]["Err"]["kind"], "unknown_module", "{v}");
}
