//! The floor's relays: the least a process can do per hop. Three modes, chained as
//! app → `route` → `pipe` → `python` → `python3` echo worker:
//! - `route` (the caller stub's place): many apps in, one connection up; it prefixes each line
//!   with its app's number and strips it on the way back, the only parsing routing needs;
//! - `pipe` (the server's place): copies bytes both ways, no parsing at all;
//! - `python` (the owner's place): copies bytes between its connection and an echo worker's pipes.
//!
//! Each binds a free loopback port, prints `listening on 127.0.0.1:PORT`, and uses blocking I/O
//! with one thread per direction, forwarding whatever a read returned in one write.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use clap::{Args, ValueEnum};

/// The echo worker: writes each line back as it comes, one line at a time, no logic.
const ECHO: &str = include_str!("echo.py");
const BUF: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RelayMode {
    Route,
    Pipe,
    Python,
}

#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    #[arg(long, value_enum)]
    pub mode: RelayMode,
    /// HOST:PORT of the next relay (route and pipe modes).
    #[arg(long)]
    pub upstream: Option<String>,
    /// The interpreter of the echo worker (python mode).
    #[arg(long, default_value = "python3")]
    pub python: String,
}

pub fn main(args: RelayArgs) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot listen: {e}"))?;
    let upstream = || -> Result<TcpStream, String> {
        let addr = args.upstream.as_deref().ok_or("--upstream is required")?;
        let stream = TcpStream::connect(addr).map_err(|e| format!("cannot reach {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(stream)
    };
    match args.mode {
        RelayMode::Pipe => {
            let up = upstream()?;
            let down = accept_one(&listener)?;
            let (down2, up2) = (clone(&down)?, clone(&up)?);
            std::thread::spawn(move || pump(up2, down2));
            pump(down, up);
        }
        RelayMode::Python => python(&listener, &args.python)?,
        RelayMode::Route => route(&listener, upstream()?)?,
    }
    Ok(())
}

fn clone(s: &TcpStream) -> Result<TcpStream, String> {
    s.try_clone()
        .map_err(|e| format!("cannot clone a socket: {e}"))
}

/// Says where it listens, then takes the one connection of the previous hop.
fn accept_one(listener: &TcpListener) -> Result<TcpStream, String> {
    announce(listener)?;
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("accept failed: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

fn announce(listener: &TcpListener) -> Result<(), String> {
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())
}

/// Copies bytes from `from` to `to` until either side ends.
fn pump(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; BUF];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            break;
        }
    }
}

/// Runs the echo worker and joins its pipes to the one connection.
fn python(listener: &TcpListener, interpreter: &str) -> Result<(), String> {
    let mut child = Command::new(interpreter)
        .args(["-u", "-c", ECHO])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {interpreter}: {e}"))?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the echo worker's pipes are missing".into());
    };
    let down = accept_one(listener)?;
    let back = clone(&down)?;
    std::thread::spawn(move || pump(stdout, back));
    pump(down, stdin);
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

type Apps = Arc<Mutex<HashMap<u64, TcpStream>>>;

/// Accepts apps forever; their lines go up tagged, answers come back to the tagged app.
fn route(listener: &TcpListener, up: TcpStream) -> Result<(), String> {
    let apps = Apps::default();
    let up_writer = Arc::new(Mutex::new(clone(&up)?));
    {
        let apps = apps.clone();
        std::thread::spawn(move || back(up, &apps));
    }
    announce(listener)?;
    for (conn, stream) in (0u64..).zip(listener.incoming()) {
        let stream = stream.map_err(|e| format!("accept failed: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        lock(&apps).insert(conn, clone(&stream)?);
        let (up, apps) = (up_writer.clone(), apps.clone());
        std::thread::spawn(move || {
            forth(conn, stream, &up);
            lock(&apps).remove(&conn);
        });
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One app's lines, each prefixed with `CONN `, written up in one write per read.
fn forth(conn: u64, mut from: TcpStream, up: &Mutex<TcpStream>) {
    let prefix = format!("{conn} ");
    let (mut buf, mut split, mut out) = (vec![0u8; BUF], Split::default(), Vec::new());
    while let Ok(n @ 1..) = from.read(&mut buf) {
        split.feed(&buf[..n], |line| {
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(line);
        });
        if !out.is_empty() {
            if lock(up).write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// Answers from upstream, each to the app its prefix names, one write per app per read.
fn back(mut from: TcpStream, apps: &Apps) {
    let (mut buf, mut split) = (vec![0u8; BUF], Split::default());
    let mut outs: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    while let Ok(n @ 1..) = from.read(&mut buf) {
        split.feed(&buf[..n], |line| {
            let Some(space) = line.iter().position(|&b| b == b' ') else {
                return;
            };
            let conn = std::str::from_utf8(&line[..space])
                .ok()
                .and_then(|s| s.parse().ok());
            if let Some(conn) = conn {
                outs.entry(conn)
                    .or_default()
                    .extend_from_slice(&line[space + 1..]);
            }
        });
        let mut apps = lock(apps);
        for (conn, bytes) in outs.iter_mut().filter(|(_, b)| !b.is_empty()) {
            if let Some(stream) = apps.get_mut(conn) {
                let _ = stream.write_all(bytes);
            }
            bytes.clear();
        }
    }
}

/// Splits a byte stream into whole lines (newline included), keeping a partial line for later.
#[derive(Default)]
struct Split {
    partial: Vec<u8>,
}

impl Split {
    fn feed(&mut self, mut chunk: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = chunk.split_at(i + 1);
            if self.partial.is_empty() {
                line(head);
            } else {
                self.partial.extend_from_slice(head);
                line(&self.partial);
                self.partial.clear();
            }
            chunk = rest;
        }
        self.partial.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_partial_lines() {
        let mut split = Split::default();
        let mut lines = Vec::new();
        split.feed(b"a\nb", |l| lines.push(l.to_vec()));
        split.feed(b"c\nd\n", |l| lines.push(l.to_vec()));
        assert_eq!(
            lines,
            vec![b"a\n".to_vec(), b"bc\n".to_vec(), b"d\n".to_vec()]
        );
    }
}
