//! Every figure one run produces, as plain data: what `report.rs` and `plot.rs` render and
//! `--json` writes.

use std::collections::BTreeMap;

use serde::Serialize;

/// A part of the run that may fail on its own without losing the others: its error is reported.
pub type Section<T> = Result<T, String>;

/// Call figures of stubnet or the floor (each the median of the rounds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Sequential calls from one app: latency percentiles, and calls/s of that loop.
    pub p50_us: f64,
    pub p99_us: f64,
    /// The same with every process of the chain, and the app, on one CPU.
    pub one_cpu_p50_us: f64,
    pub one_cpu_p99_us: f64,
    /// calls/s from one app, by calls in flight.
    pub one_app: BTreeMap<usize, f64>,
    /// calls/s summed over the apps, by calls in flight per app.
    pub many_apps: BTreeMap<usize, f64>,
    /// µs of CPU per call with one app, by calls in flight, then by process (see `cpu.rs`).
    pub cpu_us_per_call: BTreeMap<usize, BTreeMap<String, f64>>,
}

/// One sequential loop of RPyC calls.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sequential {
    pub p50_us: f64,
    pub p99_us: f64,
    pub per_sec: f64,
}

/// RPyC's figures (each the median of the rounds).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RpycFigures {
    pub version: String,
    /// `conn.root.add(1, 2)` every time.
    pub as_written: Sequential,
    /// `f = conn.root.add` once, then `f(1, 2)`.
    pub cached: Sequential,
    /// calls/s with `rpyc.async_`, by calls in flight.
    pub async_: BTreeMap<usize, f64>,
}

/// A call that fails at the caller's stub (unknown function).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocalFailure {
    pub p50_us: f64,
    pub p99_us: f64,
    pub calls: u64,
    /// The error the app got.
    pub error: String,
    /// Bytes between the caller stub and the server during the failing calls (warm-up
    /// included), and during as many good calls, for scale.
    pub link_bytes: u64,
    pub link_bytes_good_calls: u64,
}

/// A descriptor update reaching many stubs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncFigures {
    pub stubs: usize,
    /// From `rm:` written to the owner's shell until the last / the median stub printed it.
    pub all_ms: f64,
    pub median_ms: f64,
    pub first_ms: f64,
}

/// A stub with many cached modules reconnecting.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconnectFigures {
    pub modules: usize,
    /// File bytes the server sent the stub on its first sync (from its `sent` lines).
    pub first_file_bytes: u64,
    /// File bytes and `sent` lines for the stub after its restart: both must be 0.
    pub file_bytes: u64,
    pub sent_lines: usize,
    /// `cached copy is current` lines the restarted stub printed.
    pub cached_lines: usize,
    /// From the restart until the last `cached copy is current`.
    pub ms: f64,
    /// Bytes between the stub and the server after the restart (frames of any kind), each way.
    pub link_down_bytes: u64,
    pub link_up_bytes: u64,
    /// The same on the first sync, for scale.
    pub first_link_down_bytes: u64,
}

/// The server's memory with many stubs connected.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MemoryFigures {
    pub stubs: usize,
    pub baseline_rss_kb: u64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub connect_secs: f64,
}

/// The machine the run was on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory: String,
    pub kernel: String,
    pub date: String,
    pub rustc: String,
    pub python: String,
}

/// How the run was set up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Settings {
    pub command: String,
    pub rounds: usize,
    pub calls: u64,
    pub warmup: u64,
    pub secs: f64,
    pub in_flight: Vec<usize>,
    pub apps: usize,
}

/// Everything.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub stubnet: Figures,
    pub floor: Figures,
    pub rpyc: Section<RpycFigures>,
    pub local_failure: Section<LocalFailure>,
    pub sync: Section<SyncFigures>,
    pub reconnect: Section<ReconnectFigures>,
    pub memory: Section<MemoryFigures>,
}
