//! Generated client stubs end to end, with the real binaries: a caller's stub writes `z.rs`,
//! `z.py` and `_stubnet.py` beside `z.json` (and `os_path.*` for the exposed `os.path`); the
//! Python stubs run and the Rust stubs compile and run against the live network; the files
//! follow the module (rewritten when the cached copy is current, removed when it is gone).

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;

/// Annotated and unannotated functions, defaults (literal and not), keyword-only parameters,
/// `*args`, `**kwargs`, names that are Rust keywords, and exceptions.
const MODULE: &str = r#""""Module for the generated-stub tests."""
import time
from typing import Dict, List, Optional

LIMIT = 10


def add_prams(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


def div_prams(a, b):
    """Divides a by b."""
    return a / b


def greet(name: str, greeting: str = "hello", *, punctuation: str = "!") -> str:
    """Greets someone."""
    return f"{greeting}, {name}{punctuation}"


def stats(values: List[float]) -> Dict[str, float]:
    """Count, sum and mean."""
    return {"count": len(values), "sum": sum(values), "mean": sum(values) / len(values)}


def pack(first, second=2, /, *rest, scale: float = 1.0, label: Optional[str] = None, **extra) -> dict:
    """Packs what it is given."""
    return {"first": first, "second": second, "rest": list(rest), "scale": scale,
            "label": label, "extra": extra}


def clamp(x: int, limit=LIMIT, *, floor: int = 0) -> int:
    """Clamps x; the default limit is a name only the owner knows."""
    return max(floor, min(x, limit))


def lookup(key: str, table: Dict[str, int]) -> Optional[int]:
    """Looks a key up."""
    return table[key]


def window(items=list(range(5)), size=3, /) -> list:
    """A default only the owner can compute, then a literal one, both positional-only."""
    return items[:size]


def far(x: float = 1e400) -> str:
    """A float literal beyond JSON's range: Python reads it as inf."""
    return str(x)


def type(match: str, self=None, client: bool = False, _=0) -> list:
    """Parameters named like Rust keywords."""
    return [match, self, client, _]


def nothing() -> None:
    """Returns nothing (its doc line \u202e written back to front, to no Rust compiler's harm)."""


def half(x: int) -> int:
    """Claims an int, returns a float."""
    return x / 2


def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _with_scale(f):
    def supplied(x, **options):
        return f(10, x, **options)
    return supplied


@_with_scale
def scaled(scale, x, offset=0):
    """The decorator supplies the scale: called as scaled(x, offset=...)."""
    return scale * x + offset


class Custom(Exception):
    pass


def custom():
    raise Custom("mine")
"#;

/// A server, an owner `a` of module `z` (and of the installed `os.path`), and a caller `b` that
/// has received them.
struct Net {
    tmp: tempfile::TempDir,
    _server: Proc,
    owner: Proc,
    caller: Proc,
    port: u16,
}

fn net() -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let z = dir.join("z.py");
    std::fs::write(&z, MODULE).unwrap();
    let (server, port) = server(dir, &[]);
    let args = ["--register", z.to_str().unwrap(), "--expose", "os.path"];
    let owner = stub(dir, port, "a", &args);
    owner.wait_for("registered z");
    owner.wait_for("registered os.path");
    let caller = stub(dir, port, "b", &[]);
    caller.wait_for("received z from a");
    caller.wait_for("received os.path from a");
    Net {
        tmp,
        _server: server,
        owner,
        caller,
        port,
    }
}

const GENERATED: [&str; 3] = ["z.rs", "z.py", "_stubnet.py"];

#[test]
fn generated_stubs_call_the_live_network() {
    let n = net();
    let recv = n.tmp.path().join("b");
    for name in ["z.json", "os.path.json", "os_path.rs", "os_path.py"]
        .iter()
        .chain(&GENERATED)
    {
        assert!(recv.join(name).exists(), "{name} in {}", recv.display());
    }
    let port = app_port(&n.caller);
    python_stub_works(&recv, port);
    rust_stub_works(&recv, port);
}

#[test]
fn generated_stubs_follow_the_module() {
    let mut n = net();
    let recv = n.tmp.path().join("b");
    // A restarted caller whose cached copy is current writes the stubs again.
    n.caller.kill();
    std::fs::remove_file(recv.join("z.py")).unwrap();
    let caller = stub(n.tmp.path(), n.port, "b", &[]);
    caller.wait_for("z from a: cached copy is current");
    for name in GENERATED {
        assert!(recv.join(name).exists(), "{name} rewritten");
    }
    // The module leaves with its owner: its stubs go, the shared helper stays.
    n.owner.kill();
    caller.wait_for("module z is gone");
    caller.wait_for("module os.path is gone");
    for name in [
        "z.json",
        "z.rs",
        "z.py",
        "os.path.json",
        "os_path.rs",
        "os_path.py",
    ] {
        assert!(!recv.join(name).exists(), "{name} removed");
    }
    assert!(recv.join("_stubnet.py").exists());
}

#[test]
fn modules_whose_stubs_share_a_file_name_never_take_each_others() {
    let n = net();
    let dir = n.tmp.path();
    let recv = dir.join("b");
    let module_of = |file: &str| {
        let text = std::fs::read_to_string(recv.join(file)).unwrap();
        text.lines().next().unwrap_or_default().to_owned()
    };
    let dotted = "stubnet module 'os.path'";
    assert!(module_of("os_path.py").contains(dotted));
    // `os_path` would make os_path.py and os_path.rs too: os.path keeps them.
    std::fs::write(dir.join("os_path.py"), "def mine():\n    return 1\n").unwrap();
    let mut c = stub(dir, n.port, "c", &["-l"]);
    c.send(&format!("rm:{}", dir.join("os_path.py").display()));
    c.wait_for("registered os_path");
    n.caller.wait_for("received os_path from c");
    n.caller
        .wait_for("os_path: no generated stubs: their file names (os_path.py, .rs) are os.path's");
    assert!(module_of("os_path.py").contains(dotted));
    assert!(module_of("os_path.rs").contains("module `os.path`"));
    assert!(recv.join("os_path.json").exists() && recv.join("os.path.json").exists());
    // It leaves: os.path's stubs stay.
    c.send("um:os_path");
    n.caller.wait_for("module os_path is gone");
    assert!(module_of("os_path.py").contains(dotted));
    // Back again, it waits for its stub names until os.path leaves.
    c.send(&format!("rm:{}", dir.join("os_path.py").display()));
    n.caller.wait_n("received os_path from c", 2);
    assert!(module_of("os_path.py").contains(dotted));
    let mut owner = n.owner;
    owner.kill();
    n.caller.wait_for("module os.path is gone");
    assert!(module_of("os_path.py").contains("stubnet module 'os_path'"));
}

/// Imports `z` from the receiving directory and checks results, defaults, exceptions, timeouts.
const PYTHON_CHECKS: &str = r#"
import inspect
import _stubnet
import os_path
import z

assert z.add_prams(1, 2) == 3
assert z.div_prams(1, 2) == 0.5
try:
    z.div_prams(1, 0)
    raise SystemExit("no ZeroDivisionError")
except ZeroDivisionError as e:
    assert str(e) == "division by zero", e
    assert "ZeroDivisionError" in e.remote_traceback, e.remote_traceback
assert z.greet("bob") == "hello, bob!"
assert z.greet("bob", "hi", punctuation="?") == "hi, bob?"
assert z.greet.__doc__ == "Greets someone."
sig = str(inspect.signature(z.greet))
assert sig == "(name: 'str', greeting: 'str' = 'hello', *, punctuation: 'str' = '!') -> 'str'", sig
assert z.stats([1, 2, 3]) == {"count": 3, "sum": 6, "mean": 2.0}
assert z.pack(1) == {"first": 1, "second": 2, "rest": [], "scale": 1.0, "label": None, "extra": {}}
got = z.pack(1, 5, 6, 7, scale=2.0, x="y")
assert got == {"first": 1, "second": 5, "rest": [6, 7], "scale": 2.0, "label": None, "extra": {"x": "y"}}, got
assert str(inspect.signature(z.clamp)) == "(x: 'int', limit=LIMIT, *, floor: 'int' = 0) -> 'int'"
assert z.clamp(50) == 10 and z.clamp(50, 20) == 20 and z.clamp(-5, floor=-2) == -2
assert z.type("m", client=True) == ["m", None, True, 0]
assert z.window() == [0, 1, 2] and z.window([5, 6, 7], 2) == [5, 6]
assert z.far() == "inf" and z.far(2.5) == "2.5"
assert z.nothing() is None
assert z.scaled(2) == 20 and z.scaled(2, offset=1) == 21
try:
    z.scaled(1, 2, 3)
    raise SystemExit("no TypeError from the module")
except TypeError as e:
    assert "supplied()" in str(e), e
try:
    z.lookup("nope", {})
    raise SystemExit("no KeyError")
except KeyError as e:
    assert e.args == ("nope",), e.args
try:
    z.custom()
    raise SystemExit("no RemoteError")
except _stubnet.RemoteError as e:
    assert (e.kind, e.exc_type, e.message) == ("exception", "Custom", "mine"), e
try:
    z.add_prams(1)
    raise SystemExit("no TypeError")
except TypeError:
    pass
_stubnet.set_timeout(0.3)
try:
    z.slow(1.5)
    raise SystemExit("no TimeoutError")
except TimeoutError:
    pass
_stubnet.set_timeout(None)
assert z.add_prams(2, 2) == 4  # the late reply to slow() is skipped
# An installed module: a dotted name, plain values read on demand.
assert os_path.join("a", "b", "c") == "a/b/c"
assert os_path.sep == "/"
print("python stub ok")
"#;

fn python_stub_works(recv: &Path, port: u16) {
    let out = Command::new("python3")
        .args(["-c", PYTHON_CHECKS])
        .current_dir(recv)
        .env("STUBNET_APP_PORT", port.to_string())
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("python stub ok"),
        "python stub failed:\n{stdout}\n{stderr}\n{}",
        std::fs::read_to_string(recv.join("z.py")).unwrap()
    );
}

/// Modules named like the standard ones the helper itself uses: the app's `json` and `socket`
/// are the network's, while `_stubnet` talks to its stub with the real ones (it used to get the
/// stubs: a deadlock on its own lock for `socket`, endless recursion for `json`).
#[test]
fn stubs_named_like_standard_modules() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    // What the helper uses, and what the standard library imports on its way (connecting
    // imported the idna codec, which imports re and unicodedata).
    let exposed = ["json", "socket", "math", "re", "unicodedata"];
    let flags: Vec<&str> = exposed.iter().flat_map(|m| ["--expose", m]).collect();
    let owner = stub(dir, port, "a", &flags);
    let caller = stub(dir, port, "b", &[]);
    for m in exposed {
        owner.wait_for(&format!("registered {m}"));
        caller.wait_for(&format!("received {m} from a"));
    }
    let recv = dir.join("b");
    // On the path at start too, where Python's own start-up imports the stubs of math and re.
    let on_path = [("PYTHONPATH", recv.to_str().unwrap())];
    // Whichever comes first, the stub or the helper, `import json` gives the stub.
    for (first, env) in [
        ("json", &[][..]),
        ("socket", &[]),
        ("_stubnet", &[]),
        ("json", &on_path),
    ] {
        let script = format!("import {first}\n{STANDARD_CHECKS}");
        let limit = Duration::from_secs(60);
        let (ok, out) = python_within_env(&recv, app_port(&caller), &script, limit, env);
        assert!(
            ok && out.contains("standard ok"),
            "importing {first} first, {env:?}:\n{out}"
        );
    }
}

/// The Python helper given the server stub's port says so, as the Rust client does (it used to
/// say that the client stub closed the connection): the server refuses its first frame.
#[test]
fn the_python_helper_given_the_server_stubs_port_says_so() {
    use common::codegen::{PYTHON_HELPER, PYTHON_HELPER_FILE};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let app = dir.join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(app.join(PYTHON_HELPER_FILE), PYTHON_HELPER).unwrap();
    let script = "import _stubnet\n\
                  try:\n    _stubnet.call('z', 'add_prams', 1, 2)\n\
                  except _stubnet.RemoteError as e:\n    print(e)\n";
    let (ok, out) = python_within(&app, port, script, Duration::from_secs(60));
    let told = format!(
        "not_connected: 127.0.0.1:{port} is not a stub's app port (it answered as a server stub)"
    );
    assert!(ok && out.trim_end() == told, "{out}");
}

/// A result the helper's Python cannot decode (a list nested 995 levels, which the worker could
/// encode) fails its own call, and the connection and the calls in flight go on: it used to kill
/// the reader thread (a RecursionError it did not catch), failing every call with "the client
/// stub closed the connection". A long result (past the first 64 KiB the helper reads of a line)
/// comes whole.
#[test]
fn the_python_helper_fails_only_the_call_whose_result_it_cannot_decode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (z, nest) = (dir.join("z.py"), dir.join("nest.py"));
    std::fs::write(&z, MODULE).unwrap();
    std::fs::write(&nest, NEST).unwrap();
    let (_server, port) = server(dir, &[]);
    let args = [
        "--register",
        z.to_str().unwrap(),
        "--register",
        nest.to_str().unwrap(),
    ];
    let owner = stub(dir, port, "a", &args);
    owner.wait_for("registered z");
    owner.wait_for("registered nest");
    let caller = stub(dir, port, "b", &[]);
    caller.wait_for("received z from a");
    caller.wait_for("received nest from a");
    let (ok, out) = python_within(
        &dir.join("b"),
        app_port(&caller),
        NEST_CHECKS,
        Duration::from_secs(60),
    );
    assert!(ok && out.contains("nest ok"), "{out}");
    let told = "protocol: its result is nested too deeply for this Python to decode \
                (RecursionError: maximum recursion depth exceeded";
    assert!(out.starts_with(told), "{out}");
}

const NEST: &str = r#"
def nested(levels):
    v = []
    for _ in range(levels):
        v = [v]
    return v


def big(n):
    return "x" * n
"#;

/// z.slow is in flight (written, its module's worker asleep) while nest.nested's reply comes.
const NEST_CHECKS: &str = r#"
import threading, time
import _stubnet, nest, z
slow = []
t = threading.Thread(target=lambda: slow.append(z.slow(1.0)))
t.start()
while not (_stubnet._connection and _stubnet._connection.waiting):
    time.sleep(0.01)
connection = _stubnet._connection
try:
    nest.nested(995)
    raise SystemExit("no RemoteError")
except _stubnet.RemoteError as e:
    print(e)
t.join()
assert slow == [1.0], slow
assert nest.nested(3) == [[[[]]]]
assert nest.big(300000) == "x" * 300000
assert _stubnet._connection is connection, "connected again"
print("nest ok")
"#;

const STANDARD_CHECKS: &str = r#"
import json, math, socket, _stubnet
assert json.dumps([1, "a"]) == '[1, "a"]'
assert math.floor(2.5) == 2  # the stub, or the real math Python loaded at its start
assert json.loads('{"k": [2]}') == {"k": [2]}
assert socket.gethostname() == _stubnet.socket.gethostname()
assert json.__file__.endswith("json.py") and socket.__file__.endswith("socket.py")
assert _stubnet.json is not json and _stubnet.socket is not socket
print("standard ok")
"#;

/// Runs `script` with python3 in `dir` against the app port, killed if it runs past `limit`:
/// whether it succeeded, and its output.
fn python_within(dir: &Path, port: u16, script: &str, limit: Duration) -> (bool, String) {
    python_within_env(dir, port, script, limit, &[])
}

/// [`python_within`] with more environment variables.
fn python_within_env(
    dir: &Path,
    port: u16,
    script: &str,
    limit: Duration,
    env: &[(&str, &str)],
) -> (bool, String) {
    let (stdout, stderr) = (dir.with_extension("out"), dir.with_extension("err"));
    let mut child = Command::new("python3")
        .args(["-c", script])
        .envs(env.iter().copied())
        .current_dir(dir)
        .env("STUBNET_APP_PORT", port.to_string())
        .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
        .spawn()
        .expect("python3 runs");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = format!(
        "{}{}{}",
        std::fs::read_to_string(&stdout).unwrap(),
        std::fs::read_to_string(&stderr).unwrap(),
        if status.is_none() {
            "(hung: killed)"
        } else {
            ""
        }
    );
    (status.is_some_and(|s| s.success()), out)
}

/// The app that uses the Rust stub: every call's result on a line of its own.
const RUST_APP: &str = r#"mod os_path;
mod z;

use common::app::{CallError, Client};
use common::codegen::Dict;
use serde_json::{json, Map};

fn main() {
    let port = std::env::args().nth(1).expect("app port");
    let c = Client::connect(&format!("127.0.0.1:{port}")).expect("connect");
    let sum: i64 = z::add_prams(&c, 1, 2).unwrap();
    println!("add_prams {sum}");
    match z::div_prams(&c, json!(1), json!(0)) {
        Err(CallError::Exception { exc_type, .. }) => println!("div_prams {exc_type}"),
        other => println!("div_prams {other:?}"),
    }
    let hi: String = z::greet(&c, "bob".into(), None, Some("?".into())).unwrap();
    println!("greet {hi}");
    let stats: Dict<f64> = z::stats(&c, vec![1.0, 2.0, 3.0]).unwrap();
    println!("stats {} {:?}", stats["mean"], stats.keys().collect::<Vec<_>>());
    let nan = z::stats(&c, vec![1.0, f64::NAN]);
    println!("stats_nan {}", matches!(nan, Err(CallError::BadArguments(m)) if m.contains("it holds NaN")));
    let mut extra = Map::new();
    extra.insert("x".into(), json!("y"));
    let packed = z::pack(&c, json!(1), None, vec![], Some(2.0), Some("l".into()), extra).unwrap();
    println!("pack {}", serde_json::Value::Object(packed));
    let gap = z::pack(&c, json!(1), None, vec![json!(3)], None, None, Map::new());
    println!("pack_gap {}", matches!(gap, Err(CallError::BadArguments(_))));
    println!("clamp {}", z::clamp(&c, 50, None, Some(0)).unwrap());
    let table = Dict::from([("k".to_string(), 7)]);
    println!("lookup {:?}", z::lookup(&c, "k".into(), table).unwrap());
    let reserved = z::r#type(&c, "m".into(), None, Some(true), Some(json!(5))).unwrap();
    println!("type {}", serde_json::Value::Array(reserved));
    let unit: () = z::nothing(&c).unwrap();
    println!("nothing {unit:?}");
    println!("half {}", matches!(z::half(&c, 3), Err(CallError::BadResult(_))));
    let mut offset = Map::new();
    offset.insert("offset".into(), json!(1));
    println!("scaled {}", z::scaled(&c, vec![json!(2)], offset).unwrap());
    let joined = os_path::join(&c, json!("a"), vec![json!("b")]).unwrap();
    println!("os_path {joined} {}", os_path::sep(&c).unwrap());
}
"#;

const RUST_EXPECTED: &[&str] = &[
    "add_prams 3",
    "div_prams ZeroDivisionError",
    "greet hello, bob?",
    r#"stats 2 ["count", "sum", "mean"]"#,
    "stats_nan true",
    r#"pack {"first":1,"second":2,"rest":[],"scale":2.0,"label":"l","extra":{"x":"y"}}"#,
    "pack_gap true",
    "clamp 10",
    "lookup Some(7)",
    r#"type ["m",null,true,5]"#,
    "nothing ()",
    "half true",
    "scaled 21",
    r#"os_path "a/b" "/""#,
];

/// Builds a cargo project around the generated `z.rs` and runs it: one compile per test run.
fn rust_stub_works(recv: &Path, port: u16) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let app = recv.parent().unwrap().join("app");
    std::fs::create_dir_all(app.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"stub_app\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\ncommon = {{ path = {:?} }}\nserde_json = \"1\"\n\n[workspace]\n",
        repo.join("common")
    );
    std::fs::write(app.join("Cargo.toml"), manifest).unwrap();
    // The workspace's versions, already downloaded: no network, and compiled deps are reused.
    std::fs::copy(repo.join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    for stub in ["z.rs", "os_path.rs"] {
        std::fs::copy(recv.join(stub), app.join("src").join(stub)).unwrap();
    }
    std::fs::write(app.join("src/main.rs"), RUST_APP).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--offline", "--manifest-path"])
        .arg(app.join("Cargo.toml"))
        .arg("--")
        .arg(port.to_string())
        .env("CARGO_TARGET_DIR", target_dir().join("stubs-test"))
        .output()
        .expect("cargo runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let z_rs = std::fs::read_to_string(recv.join("z.rs")).unwrap();
    assert!(
        out.status.success(),
        "rust stub app failed:\n{stderr}\n{stdout}\n{z_rs}"
    );
    assert!(
        !stderr.contains("warning"),
        "the stub compiles warning-free:\n{stderr}\n{z_rs}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, RUST_EXPECTED, "{stderr}\n{z_rs}");
}

/// The workspace's target directory (`CARGO_TARGET_DIR` or `<repo>/target`): the built
/// binaries live in its `debug` directory.
fn target_dir() -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_client_stub"));
    client.parent().unwrap().parent().unwrap().to_path_buf()
}
