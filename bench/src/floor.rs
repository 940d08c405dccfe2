//! The floor: the same hops as a stubnet call with nothing done at any of them. Three relay
//! processes (this program in `relay` mode, see `relay.rs`) and a Python echo worker on a pipe:
//! app → route (caller stub's place) → pipe (server's place) → python (owner's place) → echo.

use std::ffi::OsString;

use crate::binaries::Bins;
use crate::network::WAIT;
use crate::procs::Proc;

/// The running chain; dropping it stops every relay and the echo worker.
pub struct Floor {
    /// The first relay's address: where the floor's apps connect.
    pub addr: String,
    relays: Vec<Proc>,
}

impl Floor {
    /// The relays' process groups (the last relay's holds the echo worker).
    pub fn groups(&self) -> Vec<u32> {
        self.relays.iter().map(Proc::pid).collect()
    }

    /// The chain's processes by place (the relays were started from the owner's end), for
    /// their CPU time per call.
    pub fn chain(&self) -> Vec<crate::cpu::Watch> {
        match &self.relays[..] {
            [python, pipe, route] => crate::cpu::chain(route.pid(), pipe.pid(), python.pid()),
            _ => Vec::new(),
        }
    }

    pub fn start(bins: &Bins, python: &str) -> Result<Floor, String> {
        let mut relays = Vec::new();
        let mut upstream = None;
        for mode in ["python", "pipe", "route"] {
            let mut args: Vec<OsString> = vec!["relay".into(), "--mode".into(), mode.into()];
            args.push("--python".into());
            args.push(python.into());
            if let Some(up) = upstream.take() {
                args.push("--upstream".into());
                args.push(up);
            }
            let mut relay = Proc::start(&format!("relay-{mode}"), bins.bench.as_os_str(), &args)?;
            let line = relay.wait_for("listening on ", 1, WAIT)?;
            let addr = line.text.rsplit(' ').next().unwrap_or_default().to_owned();
            upstream = Some(OsString::from(&addr));
            relays.push(relay);
        }
        let addr = upstream
            .and_then(|a| a.into_string().ok())
            .ok_or("the floor chain gave no address")?;
        Ok(Floor { addr, relays })
    }
}
