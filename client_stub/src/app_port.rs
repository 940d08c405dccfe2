//! The loopback port apps reach the stub on, and who holds it.
//!
//! Joining replaces a stub running on the same receiving directory (its session), which must
//! not be for nothing: a port held by another program is refused before joining. The stub of
//! a receiving directory keeps the port it holds, and its pid, in `dir/.apps`, so that the
//! next one can tell its predecessor (which lets go of the port once replaced) from a program
//! that never will.

use std::path::Path;
use std::time::{Duration, Instant};

use common::say;
use smol::net::TcpListener;

/// How long a stub waits for the app port a stub it replaced still holds.
const REPLACED_LETS_GO: Duration = Duration::from_secs(5);

/// The file, in the receiving directory, that names the app port its stub holds.
const HELD: &str = ".apps";

/// The app listener on `port` if it is free now (`Ok(None)`: held by the stub running on
/// `dir`, which joining replaces, see [`take_once_free`]).
///
/// # Errors
/// The port cannot be had, or another program holds it.
pub async fn bind_before_joining(dir: &Path, port: u16) -> std::io::Result<Option<TcpListener>> {
    match TcpListener::bind(("127.0.0.1", port)).await {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && held_by_stub_on(dir, port) => {
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(std::io::Error::new(
            e.kind(),
            format!("{e}, by a program other than a stub on this receiving directory"),
        )),
        Err(e) => Err(e),
    }
}

/// The app listener on `port`, taken once the stub this one replaced lets go of it (as it
/// stops), within [`REPLACED_LETS_GO`].
pub async fn take_once_free(port: u16) -> std::io::Result<TcpListener> {
    let start = Instant::now();
    loop {
        match TcpListener::bind(("127.0.0.1", port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if start.elapsed() >= REPLACED_LETS_GO {
                    return Err(e);
                }
                smol::Timer::after(Duration::from_millis(50)).await;
            }
            bound => return bound,
        }
    }
}

/// Notes in the receiving directory that this process holds app port `port`.
pub fn note_held(store: &mut common::store::Store, port: u16) {
    let note = format!("{port} {}\n", std::process::id());
    if let Err(e) = store.keep_note(HELD, note.as_bytes()) {
        let path = store.dir().join(HELD);
        say!("cannot note the app port in {}: {e}", path.display());
    }
}

/// Whether the stub noted in `dir` as holding `port` is still running.
fn held_by_stub_on(dir: &Path, port: u16) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(HELD)) else {
        return false;
    };
    let mut fields = text.split_whitespace().map(str::parse::<u32>);
    let (Some(Ok(held)), Some(Ok(pid))) = (fields.next(), fields.next()) else {
        return false;
    };
    let running = rustix::process::Pid::from_raw(pid as i32)
        .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
    held == u32::from(port) && running
}
