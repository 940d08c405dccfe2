//! A call that fails at the caller's own stub: `bench_mod.nope(1, 2)` (no such function) must
//! be answered from the cached descriptor, with no round trip to the server. A network of its
//! own puts a counting proxy between the caller and the server; the bytes crossing it during the
//! failing calls are compared with those of as many good calls.

use crate::binaries::Bins;
use crate::drive::{self, Outcome, Spec};
use crate::load::Target;
use crate::network::Network;
use crate::results::LocalFailure;

pub fn measure(bins: &Bins, calls: u64, warmup: u64) -> Result<LocalFailure, String> {
    let net = Network::start(bins, true)?;
    let proxy = net.proxy.as_ref().ok_or("the network has no proxy")?;
    let link = || {
        let (down, up) = proxy.counts.get();
        down + up
    };
    let before = link();
    let failing = run(bins, &net.app, "nope", calls, warmup)?;
    let link_bytes = link() - before;
    let app = failing.apps.first().ok_or("no result")?;
    let error = app.first_error.clone().unwrap_or_default();
    if app.errors != app.calls || !error.contains("function not found") {
        return Err(format!(
            "expected every call to fail with 'function not found'; {} of {} failed, first: {error}",
            app.errors, app.calls
        ));
    }
    let before = link();
    let good = run(bins, &net.app, "add", calls, warmup)?;
    drive::no_errors("good calls", &good)?;
    Ok(LocalFailure {
        p50_us: failing.p50_us,
        p99_us: failing.p99_us,
        calls: app.calls,
        error,
        link_bytes,
        link_bytes_good_calls: link() - before,
    })
}

fn run(
    bins: &Bins,
    addr: &str,
    function: &str,
    calls: u64,
    warmup: u64,
) -> Result<Outcome, String> {
    let spec = Spec {
        target: Target::Stubnet,
        addr,
        apps: 1,
        in_flight: 1,
        calls,
        secs: 600.0,
        warmup,
        function,
        cpu: None,
        watch: &[],
    };
    drive::run(bins, &spec)
}
