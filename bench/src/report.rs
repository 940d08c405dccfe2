//! BENCHMARKS.md: the command, the machine, the call figures beside the floor and RPyC with
//! their ratios, module sync, reconnection, memory, issue 5's targets, and how each was measured.

use std::fmt::Write as _;

use crate::cpu::{APP, IDLE, PLACES};
use crate::results::{Figures, Results, RpycFigures};
use crate::targets::{self, ratio};

/// The whole report, linking the plot at `png`.
pub fn render(r: &Results, png: &str) -> String {
    let mut out = String::new();
    out += &header(r, png);
    out += &calls_table(r);
    out += &cpu_table(r);
    out += &other_figures(r);
    out += &targets_table(r);
    out += METHOD;
    out
}

/// What the terminal shows at the end of a run.
pub fn summary(r: &Results) -> String {
    format!("\n{}{}", calls_table(r), targets_table(r))
}

fn header(r: &Results, png: &str) -> String {
    let m = &r.machine;
    let s = &r.settings;
    format!(
        "# stubnet benchmarks\n\n\
         Written by the `bench` crate (`bench/`); do not edit by hand. Rerun with:\n\n\
         ```sh\n{}\n```\n\n\
         **Machine:** {} cores, {}, {} memory, Linux {}; {}, {}. **Date:** {}.\n\n\
         **Run:** {} round(s), each figure its median round (noise slows a round down, and \
         where the scheduler puts the processes can make one much faster); {} sequential calls after {} \
         warm-up calls; throughput windows of {} s; {} apps for the several-apps rows. The \
         ratios, measured in the same run, are what to compare.\n\n\
         ![latency and throughput: stubnet, the floor, RPyC]({png})\n\n",
        s.command,
        m.cores,
        m.cpu,
        m.memory,
        m.kernel,
        m.rustc,
        m.python,
        m.date,
        s.rounds,
        s.calls,
        s.warmup,
        s.secs,
        s.apps
    )
}

fn us(v: f64) -> String {
    format!("{v:.0}")
}

fn rate(v: f64) -> String {
    let n = v.round() as u64;
    let (thousands, rest) = (n / 1000, n % 1000);
    match thousands {
        0 => format!("{rest}"),
        t => format!("{t},{rest:03}"),
    }
}

fn times(v: f64) -> String {
    format!("{v:.2}×")
}

/// One table row: figure, stubnet, floor, ratio, RPyC cached, RPyC as written, stubnet vs RPyC.
struct Row {
    label: String,
    stubnet: f64,
    floor: f64,
    rpyc: Option<f64>,
    rpyc_written: Option<f64>,
    latency: bool,
}

impl Row {
    fn render(&self) -> String {
        let fmt = |v: f64| if self.latency { us(v) } else { rate(v) };
        let opt = |v: Option<f64>| v.map_or("—".into(), fmt);
        let vs_rpyc = self
            .rpyc
            .map_or("—".into(), |p| times(ratio(self.stubnet, p)));
        format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            self.label,
            fmt(self.stubnet),
            fmt(self.floor),
            times(ratio(self.stubnet, self.floor)),
            opt(self.rpyc),
            opt(self.rpyc_written),
            vs_rpyc
        )
    }
}

fn calls_table(r: &Results) -> String {
    let mut out = String::from(
        "## Calls: `bench_mod.add(1, 2)`, app → caller stub → server → owner stub → Python\n\n\
         Latency in µs (lower is better), throughput in calls/s (higher is better). Ratios are \
         stubnet ÷ floor and stubnet ÷ RPyC (cached method for latency, `async_` for throughput).\n\n\
         | figure | stubnet | floor | stubnet ÷ floor | RPyC (cached) | RPyC (as written) | stubnet ÷ RPyC |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows(&r.stubnet, &r.floor, r.rpyc.as_ref().ok(), r.settings.apps) {
        out += &row.render();
    }
    if let Err(e) = &r.rpyc {
        let _ = writeln!(out, "\nRPyC: {e}");
    }
    out.push('\n');
    out
}

/// µs of CPU per call by process, stubnet beside the floor, for each number in flight.
fn cpu_table(r: &Results) -> String {
    let counts: Vec<usize> = r.stubnet.cpu_us_per_call.keys().copied().collect();
    if counts.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "## Where the CPU goes: µs of CPU per call, 1 app\n\n\
         Each process's time on a CPU (all its threads, from `/proc/PID/task/*/schedstat`) over \
         the throughput windows above, divided by the calls made in them; idle is the time the \
         machine's CPUs had nothing to run. Each process of a chain stands at the same place \
         as the other chain's.\n\n| process: stubnet / floor |",
    );
    for n in &counts {
        let _ = write!(out, " stubnet ×{n} | floor ×{n} |");
    }
    out += "\n|---|";
    out += &"---:|---:|".repeat(counts.len());
    out.push('\n');
    let labels = [
        (APP, "the app"),
        (PLACES[0], "caller stub / relay 1 (tags lines)"),
        (PLACES[1], "server stub / relay 2 (copies)"),
        (PLACES[2], "owner stub / relay 3 (to a pipe)"),
        (PLACES[3], "Python worker / echo"),
    ];
    let cell = |side: &Figures, n: &usize, name: &str| {
        let by_name = side.cpu_us_per_call.get(n);
        by_name.and_then(|m| m.get(name)).copied()
    };
    let fmt = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.2}"));
    for (name, label) in labels {
        let _ = write!(out, "| {label} |");
        for n in &counts {
            let (s, f) = (cell(&r.stubnet, n, name), cell(&r.floor, n, name));
            let _ = write!(out, " {} | {} |", fmt(s), fmt(f));
        }
        out.push('\n');
    }
    out += "| **all of them** |";
    for n in &counts {
        let total = |side: &Figures| -> f64 {
            let by_name = side.cpu_us_per_call.get(n);
            by_name.map_or(0.0, |m| {
                m.iter().filter(|(k, _)| *k != IDLE).map(|(_, v)| v).sum()
            })
        };
        let _ = write!(
            out,
            " **{:.2}** | **{:.2}** |",
            total(&r.stubnet),
            total(&r.floor)
        );
    }
    out += "\n| idle (all CPUs) |";
    for n in &counts {
        let (s, f) = (cell(&r.stubnet, n, IDLE), cell(&r.floor, n, IDLE));
        let _ = write!(out, " {} | {} |", fmt(s), fmt(f));
    }
    out += "\n\n";
    out
}

fn rows(s: &Figures, f: &Figures, rp: Option<&RpycFigures>, apps: usize) -> Vec<Row> {
    let row = |label: String, stubnet, floor, rpyc, rpyc_written, latency| Row {
        label,
        stubnet,
        floor,
        rpyc,
        rpyc_written,
        latency,
    };
    let mut rows = vec![
        row(
            "p50 latency, sequential".into(),
            s.p50_us,
            f.p50_us,
            rp.map(|r| r.cached.p50_us),
            rp.map(|r| r.as_written.p50_us),
            true,
        ),
        row(
            "p99 latency, sequential".into(),
            s.p99_us,
            f.p99_us,
            rp.map(|r| r.cached.p99_us),
            rp.map(|r| r.as_written.p99_us),
            true,
        ),
        row(
            "p50 latency, sequential, all on one CPU".into(),
            s.one_cpu_p50_us,
            f.one_cpu_p50_us,
            None,
            None,
            true,
        ),
        row(
            "p99 latency, sequential, all on one CPU".into(),
            s.one_cpu_p99_us,
            f.one_cpu_p99_us,
            None,
            None,
            true,
        ),
    ];
    for (n, &sv) in &s.one_app {
        let fv = f.one_app.get(n).copied().unwrap_or(0.0);
        let (cached, written) = match n {
            1 => (
                rp.map(|r| r.cached.per_sec),
                rp.map(|r| r.as_written.per_sec),
            ),
            _ => (rp.and_then(|r| r.async_.get(n).copied()), None),
        };
        rows.push(row(
            format!("calls/s, 1 app, {n} in flight"),
            sv,
            fv,
            cached,
            written,
            false,
        ));
    }
    for (n, &sv) in &s.many_apps {
        let fv = f.many_apps.get(n).copied().unwrap_or(0.0);
        rows.push(row(
            format!("calls/s, {apps} apps × {n} in flight"),
            sv,
            fv,
            None,
            None,
            false,
        ));
    }
    rows
}

fn other_figures(r: &Results) -> String {
    let mut out = String::from(
        "## Local failures, module sync, reconnection, memory\n\n| figure | value |\n|---|---|\n",
    );
    let rows = [
        local_rows(r),
        sync_rows(r),
        reconnect_rows(r),
        memory_rows(r),
    ];
    for (k, v) in rows.into_iter().flatten() {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push('\n');
    out
}

type Rows = Vec<(String, String)>;

fn local_rows(r: &Results) -> Rows {
    let value = match &r.local_failure {
        Ok(l) => format!(
            "p50 {} µs, p99 {} µs; {} bytes crossed the caller–server link during {} such calls \
             ({} during as many good calls)",
            us(l.p50_us),
            us(l.p99_us),
            l.link_bytes,
            l.calls,
            l.link_bytes_good_calls
        ),
        Err(e) => format!("not measured: {e}"),
    };
    vec![(
        "unknown function (fails at the caller's stub), sequential".into(),
        value,
    )]
}

fn sync_rows(r: &Results) -> Rows {
    match &r.sync {
        Ok(s) => vec![(
            format!("descriptor update reaches {} stubs", s.stubs),
            format!(
                "all in {:.0} ms (median {:.0} ms, first {:.0} ms)",
                s.all_ms, s.median_ms, s.first_ms
            ),
        )],
        Err(e) => vec![("descriptor update".into(), format!("not measured: {e}"))],
    }
}

fn reconnect_rows(r: &Results) -> Rows {
    let c = match &r.reconnect {
        Ok(c) => c,
        Err(e) => return vec![("reconnect".into(), format!("not measured: {e}"))],
    };
    vec![
        (
            format!(
                "reconnect with {} cached modules: file bytes sent",
                c.modules
            ),
            format!(
                "**{}** ({} `sent` lines; {} × `cached copy is current`)",
                c.file_bytes, c.sent_lines, c.cached_lines
            ),
        ),
        (
            "… its first sync, for scale".into(),
            format!("{} file bytes", c.first_file_bytes),
        ),
        (
            "… time until every module is known current".into(),
            format!("{:.0} ms", c.ms),
        ),
        (
            "… all bytes on the stub's link after the restart".into(),
            format!(
                "{} server → stub, {} stub → server (first sync: {} server → stub)",
                c.link_down_bytes, c.link_up_bytes, c.first_link_down_bytes
            ),
        ),
    ]
}

fn memory_rows(r: &Results) -> Rows {
    let m = match &r.memory {
        Ok(m) => m,
        Err(e) => return vec![("server memory".into(), format!("not measured: {e}"))],
    };
    let mb = |kb: u64| kb as f64 / 1024.0;
    let per_stub = m.rss_kb.saturating_sub(m.baseline_rss_kb) as f64 / m.stubs.max(1) as f64;
    vec![(
        format!("server memory with {} connected stubs", m.stubs),
        format!(
            "VmRSS {:.1} MB (peak {:.1} MB; {:.1} MB before they joined; {:.1} KB per stub); \
             joined in {:.2} s",
            mb(m.rss_kb),
            mb(m.hwm_kb),
            mb(m.baseline_rss_kb),
            per_stub,
            m.connect_secs
        ),
    )]
}

fn targets_table(r: &Results) -> String {
    let mut out = String::from("## Targets (issue 5)\n\n| target | measured | |\n|---|---|---|\n");
    for v in targets::evaluate(r) {
        let _ = writeln!(out, "| {} | {} | {} |", v.target, v.measured, v.word());
    }
    out.push('\n');
    out
}

const METHOD: &str = "## How it is measured\n\n\
- **stubnet**: the release `server_stub` (`-p 0`), an owner `client_stub` registering \
`bench_mod.py` (`def add(a, b): return a + b`, one Python worker) and a caller `client_stub`, \
all on loopback with free ports and temp dirs. Each app is a separate process (`bench load`) \
using `common::app`: the blocking `Client::call_as` for one call at a time, one `AsyncClient` \
shared by N tasks for N in flight.\n\
- **floor**: the same hops doing nothing: app → relay 1 (tags each line with its app, the only \
parsing routing needs) → relay 2 (copies bytes) → relay 3 (copies bytes to and from a pipe) → \
`python3 -u` echoing each line back, one at a time (no JSON parsing). Relays are this crate's \
`relay` mode, blocking I/O, one thread per direction, one write per read. Its app is a single \
thread writing stubnet-shaped call frames and reading the echoes, N in flight. Every hop \
forwards whatever one read returned, so with N in flight the floor batches: it measures what the \
hops can carry, which a stack that talks to its Python worker one call at a time cannot reach.\n\
- **RPyC**: a virtualenv with `rpyc` from the package registry, a `ThreadedServer` running a \
classic `rpyc.Service` with `exposed_add`, and a Python client: `conn.root.add(1, 2)` each time \
(as written), `f = conn.root.add` once then `f(1, 2)` (cached), and `rpyc.async_(conn.root.add)` \
keeping N results outstanding.\n\
- **Latency**: p50 and p99 (nearest rank) of sequential calls after a warm-up. **Throughput**: \
calls completed in a timed window ÷ its length, with N calls in flight on one connection; \
several apps are separate processes, each with its own connection and N in flight, started on a \
common clock, their rates summed. Each round measures the floor and stubnet back to back, \
figure by figure (and RPyC after them); each figure is its median round.\n\
- **All on one CPU**: the sequential latency again with every process of each chain (stubs or \
relays, the Python worker, the app) pinned to one CPU (the first the benchmark may use, with \
`sched_setaffinity`), then unpinned. On a virtual machine a wake that crosses CPUs costs an \
inter-processor interrupt and the wake of a halted virtual CPU, and where the scheduler puts \
each process is luck (the same floor measures 30 µs or 150 µs from one run to the next); on one \
CPU no wake crosses, so these rows compare the work each hop does.\n\
- **Where the CPU goes**: the one-app load process reads, at the start and the end of its \
measured window, the CPU time of every process of its chain (the sum over its threads of \
`/proc/PID/task/TID/schedstat`, nanoseconds on a CPU), its own, and the machine's idle time \
(`/proc/stat`); the differences divided by the calls made give µs per call. The Python worker \
is found as the owner's (or relay 3's) child.\n\
- **Local failure**: `bench_mod.nope(1, 2)` from an app, on a network of its own where the \
caller reaches the server through a counting proxy: the bytes crossing it show whether any \
call left the caller's stub.\n\
- **Module sync**: a server, an owner started with `-l` registering `bench_mod`, and N stubs \
that each print `received bench_mod`; a function is added to the module, `rm:PATH` is written \
to the owner's shell, and the time until every stub prints `received bench_mod` again is read \
from the timestamps of their output lines.\n\
- **Reconnection**: an owner registers N modules and its N Python workers start (the benchmark \
waits until the owner and its workers use no CPU), a stub receives them all, is killed (SIGKILL) \
and restarted on the same receiving dir; the time is from the restart to the last \
`cached copy is current`. File bytes are summed from the server's \
`sent M to NAME: N bytes` lines for it after the restart, and a counting proxy between the \
stub and the server gives every byte on its link.\n\
- **Memory**: 1,000 client stub processes are too heavy for a 2-core machine, so the benchmark \
opens 1,000 TCP connections that each speak the real protocol as a stub does first (send \
`{\"cmd\":\"hello\",\"data\":{\"version\":1,\"name\":\"peerN\"}}`, read the `welcome`) and stay \
connected; then it reads VmRSS and VmHWM from the server's /proc/PID/status.\n";
