//! A counting TCP proxy on loopback: a stub connects to it instead of the server, and every byte
//! each way is counted. It shows what really crosses the stub's link (the kernel's per-process
//! i/o counters do not see socket traffic).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes seen so far, each way, over every connection the proxy carried.
#[derive(Debug, Default)]
pub struct Counts {
    /// Server → stub.
    pub down: AtomicU64,
    /// Stub → server.
    pub up: AtomicU64,
}

impl Counts {
    /// (down, up) now.
    pub fn get(&self) -> (u64, u64) {
        (
            self.down.load(Ordering::Relaxed),
            self.up.load(Ordering::Relaxed),
        )
    }
}

/// The running proxy; it stops accepting when dropped (open connections end with their peers).
pub struct Proxy {
    pub port: u16,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Result<Proxy, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy: cannot listen: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        std::thread::spawn(move || accept(listener, upstream, &c, &s));
        Ok(Proxy { port, counts, stop })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

fn accept(listener: TcpListener, upstream: u16, counts: &Arc<Counts>, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(down) = stream else { continue };
        let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
            continue;
        };
        let _ = (down.set_nodelay(true), up.set_nodelay(true));
        let (Ok(down2), Ok(up2)) = (down.try_clone(), up.try_clone()) else {
            continue;
        };
        let c = counts.clone();
        std::thread::spawn(move || pump(down, up, &c.up));
        let c = counts.clone();
        std::thread::spawn(move || pump(up2, down2, &c.down));
    }
}

/// Copies `from` to `to`, counting, until either ends; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        count.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
