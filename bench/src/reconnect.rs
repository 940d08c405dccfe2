//! Reconnecting with a warm cache: an owner registers N modules, a stub receives them all, is
//! killed and restarted on the same receiving dir (once the owner's workers have all started:
//! they would take the CPU from the restart). It must print `cached copy is current` for each,
//! and the server must send it no file: the file bytes are counted from the server's
//! `sent MODULE to NAME: N bytes` lines after the restart, and must be 0. The stub reaches the
//! server through a counting proxy, which gives every byte on its link besides.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::binaries::Bins;
use crate::cleanup::Scratch;
use crate::network::{start_server, Stub, WAIT};
use crate::procs::Line;
use crate::proxy::Proxy;
use crate::results::ReconnectFigures;

const NAME: &str = "cache";
/// How long to keep listening for stray transfers after the last `cached copy is current`.
const SETTLE: Duration = Duration::from_millis(500);

pub fn measure(bins: &Bins, modules: usize) -> Result<ReconnectFigures, String> {
    let dir = Scratch::new("reconnect")?;
    let files = write_modules(&dir, modules)?;
    let (mut server, port) = start_server(bins, &dir.path().join("server"))?;
    let owner = Stub {
        name: "owner",
        dir: dir.path().join("owner"),
        register: files,
        live: false,
    };
    let mut owner = owner.start(bins, port)?;
    owner.wait_for("registered m", modules, WAIT)?;
    if !crate::cpu::settle(owner.pid(), WAIT) {
        return Err(format!(
            "the owner's {modules} workers were still busy after {WAIT:?}"
        ));
    }
    let proxy = Proxy::start(port)?;
    let cache = Stub {
        name: NAME,
        dir: dir.path().join(NAME),
        register: vec![],
        live: false,
    };
    let mut stub = cache.start(bins, proxy.port)?;
    stub.wait_for("received m", modules, WAIT)?;
    server.wait_for(&format!(" to {NAME}: "), modules, WAIT)?;
    let (first_file_bytes, _) = sent_to(&server.since(0));
    drop(stub); // SIGKILL: the stub gets no chance to say goodbye
    server.wait_for(&format!("left: {NAME}"), 1, WAIT)?;
    let (mark, first) = (server.len(), proxy.counts.get());
    let restarted = Instant::now();
    let mut stub = cache.start(bins, proxy.port)?;
    let last = stub.wait_for("cached copy is current", modules, WAIT)?;
    std::thread::sleep(SETTLE);
    let (file_bytes, sent_lines) = sent_to(&server.since(mark));
    let now = proxy.counts.get();
    Ok(ReconnectFigures {
        modules,
        first_file_bytes,
        file_bytes,
        sent_lines,
        cached_lines: stub.count("cached copy is current"),
        ms: last.at.saturating_duration_since(restarted).as_secs_f64() * 1e3,
        link_down_bytes: now.0 - first.0,
        link_up_bytes: now.1 - first.1,
        first_link_down_bytes: first.0,
    })
}

/// Writes `m000.py`… with one function each.
fn write_modules(dir: &Scratch, n: usize) -> Result<Vec<PathBuf>, String> {
    let src = dir.path().join("modules");
    std::fs::create_dir_all(&src).map_err(|e| format!("cannot create {}: {e}", src.display()))?;
    (0..n)
        .map(|i| {
            let path = src.join(format!("m{i:03}.py"));
            let source =
                format!("def f{i}(a, b):\n    \"\"\"Module {i}.\"\"\"\n    return a + b\n");
            std::fs::write(&path, source)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// File bytes and line count of the server's `sent M to cache: N bytes …` lines.
fn sent_to(lines: &[Line]) -> (u64, usize) {
    let prefix = "sent ";
    let to = format!(" to {NAME}: ");
    let mut bytes = 0;
    let mut count = 0;
    for line in lines
        .iter()
        .filter(|l| l.text.starts_with(prefix) && l.text.contains(&to))
    {
        count += 1;
        let after = line.text.split(&to).nth(1).unwrap_or_default();
        bytes += after
            .split(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    (bytes, count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Line {
        Line {
            at: Instant::now(),
            text: text.into(),
            stderr: false,
        }
    }

    #[test]
    fn counts_bytes_sent_to_the_stub() {
        let lines = [
            line("sent m001 to cache: 311 bytes in 1 chunk(s)"),
            line("sent m002 to other: 5 bytes in 1 chunk(s)"),
            line("sent m003 to cache: 9 bytes in 1 chunk(s)"),
            line("joined: cache from 127.0.0.1:1"),
        ];
        assert_eq!(sent_to(&lines), (320, 2));
    }
}
