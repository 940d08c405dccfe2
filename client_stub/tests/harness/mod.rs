//! Test harness: starts the real `server_stub` and `client_stub` binaries on ephemeral loopback
//! ports in temp directories, watches their output (see `test_app::procs`).

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

pub use test_app::procs::{Proc, WAIT};

/// A binary of this workspace (all are built into the same directory).
pub fn exe(name: &str) -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_client_stub"));
    let path = client.parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is not built: run cargo build --workspace first",
        path.display()
    );
    path
}

/// The example module shipped with test_app.
pub fn example_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../test_app/modules/z.py")
}

/// A server stub on a free port in `dir/server`.
pub fn server(dir: &Path, extra: &[&str]) -> (Proc, u16) {
    let srv_dir = dir.join("server");
    let mut args = vec!["-p", "0", "-d", srv_dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let p = Proc::start("server", &exe("server_stub"), &args, dir);
    let line = p.wait_for("listening on ");
    let port = line
        .rsplit(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("port");
    (p, port)
}

/// The flags that join a client stub named `name` to the server at `port`, receiving into
/// `dir` (relative to the test's directory), with an app port picked freely.
pub fn stub_args(port: &str, name: &str, dir: &str) -> Vec<String> {
    [
        "-a",
        "127.0.0.1",
        "-p",
        port,
        "-n",
        name,
        "-q",
        "0",
        "-d",
        dir,
    ]
    .map(String::from)
    .to_vec()
}

/// Starts (without waiting for anything) a client stub named `name` at the server on `port`,
/// receiving into `recv` (relative to `dir`, the test's directory), with `extra` flags; its
/// output is labelled `label`.
pub fn start_stub(
    label: &str,
    dir: &Path,
    port: &str,
    name: &str,
    recv: &str,
    extra: &[&str],
) -> Proc {
    let args = stub_args(port, name, recv);
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend_from_slice(extra);
    Proc::start(label, &exe("client_stub"), &args, dir)
}

/// A client stub named `name` receiving into `dir/<name>`, with an app port picked freely.
pub fn stub(dir: &Path, port: u16, name: &str, extra: &[&str]) -> Proc {
    let p = start_stub(name, dir, &port.to_string(), name, name, extra);
    p.wait_for("apps on ");
    p
}

/// A server, a stub `a` that owns module `m` (written in `dir` from `source`), and a stub `b`
/// (with `flags`) that has received it: server, owner, caller.
pub fn owner_and_caller(dir: &Path, source: &str, flags: &[&str]) -> [Proc; 3] {
    let m = dir.join("m.py");
    std::fs::write(&m, source).unwrap();
    let (server, port) = server(dir, &[]);
    let owner = stub(dir, port, "a", &["--register", m.to_str().unwrap()]);
    owner.wait_for("registered m");
    let caller = stub(dir, port, "b", flags);
    caller.wait_for("received m from a");
    [server, owner, caller]
}

/// The app port a stub printed.
pub fn app_port(p: &Proc) -> u16 {
    let line = p.wait_for("apps on ");
    line.rsplit(':')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("app port")
}

/// A raw connection to the stub `p`'s app port, for frames no client library writes; a read
/// gives up after 20 s rather than hang the test.
pub fn raw_app(p: &Proc) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(("127.0.0.1", app_port(p))).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s
}

/// An app of the stub `p` (on its app port).
pub fn client(p: &Proc) -> common::app::Client {
    common::app::Client::connect(&format!("127.0.0.1:{}", app_port(p))).unwrap()
}

/// Whether `ready()` turns true within [`WAIT`], asked every 50 ms.
pub fn soon(mut ready: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !ready() {
        if start.elapsed() > WAIT {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    true
}

/// The answer of `call`, retried while its module or function has not reached the caller's
/// stub yet (a descriptor update is on its way): the caller's stub refuses the call as an
/// unknown module or function, or by the function's old parameters.
pub fn eventually<T>(
    mut call: impl FnMut() -> Result<T, common::app::CallError>,
) -> Result<T, common::app::CallError> {
    use common::app::CallError::{BadArguments, UnknownFunction, UnknownModule};
    let start = std::time::Instant::now();
    loop {
        match call() {
            Err(UnknownModule(_) | UnknownFunction(_) | BadArguments(_))
                if start.elapsed() < WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            answer => return answer,
        }
    }
}
