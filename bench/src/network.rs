//! A real stubnet network on loopback: a server stub on a free port, client stubs with their
//! own receiving dirs and free app ports, each started from the release binaries exactly as a
//! user would, and waited for by what they print.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::Bins;
use crate::cleanup::Scratch;
use crate::procs::Proc;
use crate::proxy::Proxy;

/// How long a process may take to print a line we wait for.
pub const WAIT: Duration = Duration::from_secs(60);

/// The module the benchmark calls.
pub const MODULE: &str = "bench_mod";
pub const MODULE_SOURCE: &str = "def add(a, b):\n    return a + b\n";

/// Starts `server_stub -p 0 -d DIR`; returns it and its port.
pub fn start_server(bins: &Bins, dir: &Path) -> Result<(Proc, u16), String> {
    let args: [OsString; 4] = ["-p".into(), "0".into(), "-d".into(), dir.into()];
    let mut server = Proc::start("server_stub", bins.server.as_os_str(), &args)?;
    let line = server.wait_for("listening on ", 1, WAIT)?;
    let port = port_of(&line.text).ok_or_else(|| format!("no port in '{}'", line.text))?;
    Ok((server, port))
}

/// The port at the end of `... HOST:PORT`.
pub fn port_of(text: &str) -> Option<u16> {
    text.rsplit(':').next()?.trim().parse().ok()
}

/// How to start one client stub.
pub struct Stub<'a> {
    pub name: &'a str,
    pub dir: PathBuf,
    pub register: Vec<PathBuf>,
    /// Start with `-l`, so shell commands can be written to its stdin.
    pub live: bool,
}

impl Stub<'_> {
    /// Starts the stub against the server on `port` (returns at once).
    pub fn start(&self, bins: &Bins, port: u16) -> Result<Proc, String> {
        let mut args: Vec<OsString> = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string().into(),
            "-n".into(),
            self.name.into(),
            "-q".into(),
            "0".into(),
            "-d".into(),
            self.dir.clone().into(),
        ];
        for path in &self.register {
            args.push("--register".into());
            args.push(path.into());
        }
        if self.live {
            args.push("-l".into());
        }
        Proc::start(self.name, bins.client.as_os_str(), &args)
    }
}

/// Waits for a stub's `apps on 127.0.0.1:PORT` and returns that address.
pub fn app_address(stub: &mut Proc) -> Result<String, String> {
    let line = stub.wait_for("apps on ", 1, WAIT)?;
    let address = line.text.rsplit(' ').next().unwrap_or_default().to_owned();
    match port_of(&address) {
        Some(_) => Ok(address),
        None => Err(format!("{}: no address in '{}'", stub.name, line.text)),
    }
}

/// Server, owner (registers `bench_mod`) and caller (holds its descriptor).
pub struct Network {
    pub server: Proc,
    pub owner: Proc,
    pub caller: Proc,
    /// The caller's app address: where the benchmark's apps connect.
    pub app: String,
    /// The counting proxy between the caller and the server, if asked for.
    pub proxy: Option<Proxy>,
    _dir: Scratch,
}

impl Network {
    /// The process groups of the three stubs (each stub's group holds its Python workers).
    pub fn groups(&self) -> Vec<u32> {
        vec![self.server.pid(), self.owner.pid(), self.caller.pid()]
    }

    /// The chain's processes by place, for their CPU time per call.
    pub fn chain(&self) -> Vec<crate::cpu::Watch> {
        crate::cpu::chain(self.caller.pid(), self.server.pid(), self.owner.pid())
    }

    /// Starts the three stubs; with `proxied`, the caller reaches the server through a
    /// counting [`Proxy`] (an extra hop: not for speed measurements).
    pub fn start(bins: &Bins, proxied: bool) -> Result<Network, String> {
        let dir = Scratch::new("net")?;
        let module = dir.path().join(format!("{MODULE}.py"));
        std::fs::write(&module, MODULE_SOURCE)
            .map_err(|e| format!("cannot write the module: {e}"))?;
        let (server, port) = start_server(bins, &dir.path().join("server"))?;
        let owner = Stub {
            name: "owner",
            dir: dir.path().join("owner"),
            register: vec![module],
            live: false,
        };
        let mut owner = owner.start(bins, port)?;
        owner.wait_for(&format!("registered {MODULE}"), 1, WAIT)?;
        app_address(&mut owner)?;
        let caller = Stub {
            name: "caller",
            dir: dir.path().join("caller"),
            register: vec![],
            live: false,
        };
        let proxy = proxied.then(|| Proxy::start(port)).transpose()?;
        let caller_port = proxy.as_ref().map_or(port, |p| p.port);
        let mut caller = caller.start(bins, caller_port)?;
        caller.wait_for(&format!("received {MODULE}"), 1, WAIT)?;
        let app = app_address(&mut caller)?;
        Ok(Network {
            server,
            owner,
            caller,
            app,
            proxy,
            _dir: dir,
        })
    }
}
