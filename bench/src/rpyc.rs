//! RPyC, for comparison: a virtualenv (kept as a cache, created with `python3 -m venv`) with
//! `rpyc` installed from the package registry by pip, a classic service exposing `add(a, b)`
//! (`rpyc_server.py`) and a client script (`rpyc_client.py`) that measures and prints JSON.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::calls::Plan;
use crate::network::{port_of, WAIT};
use crate::procs::Proc;
use crate::results::{RpycFigures, Sequential};
use crate::stats::median;

const SERVER: &str = include_str!("rpyc_server.py");
const CLIENT: &str = include_str!("rpyc_client.py");
/// How long creating the virtualenv and installing rpyc may take.
const INSTALL_LIMIT: Duration = Duration::from_secs(300);

/// Makes sure `venv` has rpyc; returns its python.
pub fn setup(venv: &Path, python: &str) -> Result<PathBuf, String> {
    let venv_python = venv.join("bin").join("python");
    if run_ok("check", venv_python.as_os_str(), &["-c", "import rpyc"]).is_ok() {
        return Ok(venv_python);
    }
    println!(
        "rpyc: creating a virtualenv in {} and installing rpyc",
        venv.display()
    );
    let venv_arg = venv.as_os_str().to_owned();
    run_ok(
        "venv",
        python.as_ref(),
        &["-m".into(), "venv".into(), venv_arg],
    )?;
    let pip = [
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        "rpyc",
    ];
    run_ok("pip", venv_python.as_os_str(), &pip)?;
    run_ok("check", venv_python.as_os_str(), &["-c", "import rpyc"])?;
    Ok(venv_python)
}

fn run_ok<S: AsRef<std::ffi::OsStr>>(
    name: &str,
    program: &std::ffi::OsStr,
    args: &[S],
) -> Result<(), String> {
    let mut proc = Proc::start(name, program, args)?;
    let status = proc.wait_exit(INSTALL_LIMIT)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status}):\n{}", proc.tail(10)))
    }
}

/// The RPyC server, running until dropped.
pub struct Server {
    pub port: u16,
    _proc: Proc,
}

impl Server {
    pub fn start(python: &Path) -> Result<Server, String> {
        let args: [&str; 2] = ["-c", SERVER];
        let mut proc = Proc::start("rpyc_server", python.as_os_str(), &args)?;
        let line = proc.wait_for("listening on ", 1, WAIT)?;
        let port = port_of(&line.text).ok_or_else(|| format!("no port in '{}'", line.text))?;
        Ok(Server { port, _proc: proc })
    }
}

/// What the client script prints.
#[derive(Deserialize)]
struct Printed {
    version: serde_json::Value,
    as_written: Loop,
    cached: Loop,
    #[serde(rename = "async")]
    async_: Vec<Pipelined>,
}

#[derive(Deserialize)]
struct Loop {
    calls: u64,
    secs: f64,
    p50_us: f64,
    p99_us: f64,
}

#[derive(Deserialize)]
struct Pipelined {
    in_flight: usize,
    calls: u64,
    secs: f64,
}

fn per_sec(calls: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        calls as f64 / secs
    } else {
        0.0
    }
}

impl From<Loop> for Sequential {
    fn from(l: Loop) -> Self {
        Sequential {
            p50_us: l.p50_us,
            p99_us: l.p99_us,
            per_sec: per_sec(l.calls, l.secs),
        }
    }
}

/// Runs the client script once against `port`: sequential loops, then `async_` with each of the
/// plan's in-flight counts above 1.
pub fn measure(python: &Path, port: u16, plan: &Plan) -> Result<RpycFigures, String> {
    let in_flight: Vec<usize> = plan.in_flight.iter().copied().filter(|&n| n > 1).collect();
    let mut args: Vec<OsString> = vec!["-c".into(), CLIENT.into()];
    let values = [
        port.to_string(),
        plan.calls.to_string(),
        plan.warmup.to_string(),
        plan.secs.to_string(),
    ];
    args.extend(values.into_iter().map(OsString::from));
    args.extend(in_flight.iter().map(|n| OsString::from(n.to_string())));
    let mut proc = Proc::start("rpyc_client", python.as_os_str(), &args)?;
    let limit =
        Duration::from_secs_f64(plan.secs * in_flight.len() as f64) + Duration::from_secs(120);
    let status = proc.wait_exit(limit)?;
    let line = proc.last_stdout().unwrap_or_default();
    let printed: Printed = serde_json::from_str(&line).map_err(|e| {
        format!(
            "rpyc client ({status}) gave no result ({e}):\n{}",
            proc.tail(10)
        )
    })?;
    let version = match printed.version {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    Ok(RpycFigures {
        version,
        as_written: printed.as_written.into(),
        cached: printed.cached.into(),
        async_: printed
            .async_
            .iter()
            .map(|p| (p.in_flight, per_sec(p.calls, p.secs)))
            .collect(),
    })
}

/// Each figure's median round, as for stubnet and the floor.
pub fn combine(rounds: &[RpycFigures]) -> RpycFigures {
    let pick = |f: &dyn Fn(&RpycFigures) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let seq = |which: &dyn Fn(&RpycFigures) -> &Sequential| Sequential {
        p50_us: median(&pick(&|r| which(r).p50_us)),
        p99_us: median(&pick(&|r| which(r).p99_us)),
        per_sec: median(&pick(&|r| which(r).per_sec)),
    };
    let keys: Vec<usize> = rounds
        .first()
        .map(|r| r.async_.keys().copied().collect())
        .unwrap_or_default();
    RpycFigures {
        version: rounds
            .first()
            .map(|r| r.version.clone())
            .unwrap_or_default(),
        as_written: seq(&|r| &r.as_written),
        cached: seq(&|r| &r.cached),
        async_: keys
            .into_iter()
            .map(|k| {
                (
                    k,
                    median(&pick(&|r| r.async_.get(&k).copied().unwrap_or(0.0))),
                )
            })
            .collect(),
    }
}
