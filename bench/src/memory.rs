//! The server's memory with many stubs connected. Starting 1,000 client stub processes is too
//! heavy for a 2-core machine, so this opens N raw TCP connections that each speak the real
//! protocol as a stub's first step does (send `hello`, read `welcome`) and stay connected, then
//! reads the server process's VmRSS and VmHWM from /proc/PID/status.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::binaries::Bins;
use crate::cleanup::Scratch;
use crate::network::start_server;
use crate::results::MemoryFigures;

const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the server to settle once every stub is in.
const SETTLE: Duration = Duration::from_millis(500);

pub fn measure(bins: &Bins, stubs: usize) -> Result<MemoryFigures, String> {
    let dir = Scratch::new("memory")?;
    let (server, port) = start_server(bins, &dir.path().join("server"))?;
    std::thread::sleep(SETTLE);
    let pid = server.pid();
    let (baseline_rss_kb, _) = status(pid)?;
    let started = Instant::now();
    let mut peers = Vec::with_capacity(stubs);
    for i in 0..stubs {
        peers.push(join(port, &format!("peer{i}"))?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let (rss_kb, hwm_kb) = status(pid)?;
    drop(peers);
    Ok(MemoryFigures {
        stubs,
        baseline_rss_kb,
        rss_kb,
        hwm_kb,
        connect_secs,
    })
}

/// Connects as stub `name`: hello, then the welcome. Returns the open connection.
fn join(port: u16, name: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("{name}: cannot connect to the server: {e}"))?;
    stream
        .set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let hello = format!("{{\"cmd\":\"hello\",\"data\":{{\"version\":1,\"name\":\"{name}\"}}}}\n");
    (&stream)
        .write_all(hello.as_bytes())
        .map_err(|e| format!("{name}: cannot send hello: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .map_err(|e| format!("{name}: no welcome: {e}"))?;
    if !line.contains("\"welcome\"") {
        return Err(format!(
            "{name}: expected welcome, got: {}",
            line.trim_end()
        ));
    }
    Ok(stream)
}

/// VmRSS and VmHWM of process `pid`, in kB.
fn status(pid: u32) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read the server's /proc status: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
