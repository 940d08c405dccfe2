//! Module sync: how long a descriptor update takes to reach many stubs. A server, an owner
//! started with `-l` (its shell reads our piped lines) that registers `bench_mod`, and N stubs
//! that each receive it; then the module gains a function, `rm:PATH` is written to the owner's
//! shell, and the time until every stub has printed `received bench_mod` again is measured
//! (each line is timestamped when the stub printed it).

use std::time::Instant;

use crate::binaries::Bins;
use crate::cleanup::Scratch;
use crate::network::{start_server, Stub, MODULE, MODULE_SOURCE, WAIT};
use crate::procs::Proc;
use crate::results::SyncFigures;
use crate::stats;

/// The edit: a new function, so the descriptor (headers only) really changes.
const EDIT: &str = "\n\ndef sub(a, b):\n    return a - b\n";

pub fn measure(bins: &Bins, stubs: usize) -> Result<SyncFigures, String> {
    let dir = Scratch::new("sync")?;
    let module = dir.path().join(format!("{MODULE}.py"));
    std::fs::write(&module, MODULE_SOURCE).map_err(|e| format!("cannot write the module: {e}"))?;
    let (_server, port) = start_server(bins, &dir.path().join("server"))?;
    let owner = Stub {
        name: "owner",
        dir: dir.path().join("owner"),
        register: vec![module.clone()],
        live: true,
    };
    let mut owner = owner.start(bins, port)?;
    owner.wait_for(&format!("registered {MODULE}"), 1, WAIT)?;
    let mut procs = start_stubs(bins, port, &dir, stubs)?;
    let received = format!("received {MODULE}");
    for proc in &mut procs {
        proc.wait_for(&received, 1, WAIT)?;
    }
    let source = format!("{MODULE_SOURCE}{EDIT}");
    std::fs::write(&module, source).map_err(|e| format!("cannot edit the module: {e}"))?;
    let sent = Instant::now();
    owner.send(&format!("rm:{}", module.display()))?;
    let mut ms = Vec::with_capacity(procs.len());
    for proc in &mut procs {
        let line = proc.wait_for(&received, 2, WAIT)?;
        ms.push(line.at.saturating_duration_since(sent).as_secs_f64() * 1e3);
    }
    owner.wait_for(&format!("registered {MODULE}"), 2, WAIT)?;
    Ok(SyncFigures {
        stubs,
        all_ms: ms.iter().copied().fold(0.0, f64::max),
        median_ms: stats::median(&ms),
        first_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
    })
}

/// Starts `n` stubs named `s1`…`sN`, all at once, each with its own receiving dir.
fn start_stubs(bins: &Bins, port: u16, dir: &Scratch, n: usize) -> Result<Vec<Proc>, String> {
    (1..=n)
        .map(|i| {
            let name = format!("s{i}");
            let stub = Stub {
                name: &name,
                dir: dir.path().join(&name),
                register: vec![],
                live: false,
            };
            stub.start(bins, port)
        })
        .collect()
}
