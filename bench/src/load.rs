//! The `load` mode: one app process that calls `bench_mod.add(1, 2)` (or the floor's echo) with
//! N calls in flight, either a fixed number of calls (latency) or for a fixed time (throughput),
//! and prints one JSON line: calls, seconds, latency percentiles, errors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::cpu::{self, Watch};
use crate::stats;

/// What the app talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// A client stub's app port, through `common::app`.
    Stubnet,
    /// The first relay of the floor chain, raw newline-delimited JSON.
    Floor,
}

#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    pub target: Target,
    /// HOST:PORT to connect to.
    #[arg(long)]
    pub addr: String,
    /// Calls in flight at once on the one connection.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Stop after this many measured calls...
    #[arg(long, default_value_t = 2_000_000)]
    pub calls: u64,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 2.0)]
    pub secs: f64,
    /// Calls made (per slot in flight) before measuring.
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    /// Start measuring at this wall-clock time (ms since the epoch), to line up several apps.
    #[arg(long)]
    pub start_at_ms: Option<u64>,
    /// Run on this CPU only.
    #[arg(long)]
    pub cpu: Option<usize>,
    /// The function to call on `bench_mod` (stubnet only).
    #[arg(long, default_value = "add")]
    pub function: String,
    /// A process of the chain whose CPU time per call to report, as NAME=PID (repeatable).
    #[arg(long, value_name = "NAME=PID")]
    pub watch: Vec<Watch>,
}

/// What one load process measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Calls completed in the measured window (errors included).
    pub calls: u64,
    pub secs: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    /// The first error's text, if any.
    pub first_error: Option<String>,
    /// How late the measurement started after `start_at_ms` (warm-up took too long).
    pub late_ms: f64,
    /// µs of CPU per call in the window: each watched process, this app, and the idle time.
    #[serde(default)]
    pub cpu_us_per_call: BTreeMap<String, f64>,
}

impl LoadResult {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.calls as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// When a measurement stops: a count and a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub calls: u64,
    pub until: Instant,
}

/// Per-call latencies and errors, collected by whichever client runs.
#[derive(Debug, Default)]
pub struct Tally {
    pub latencies: Vec<Duration>,
    pub errors: u64,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn record(&mut self, took: Duration, error: Option<String>) {
        self.latencies.push(took);
        if let Some(e) = error {
            self.errors += 1;
            self.first_error.get_or_insert(e);
        }
    }
}

pub fn main(args: LoadArgs) -> Result<(), String> {
    if let Some(cpu) = args.cpu {
        crate::affinity::pin_self(cpu)?;
    }
    let result = match args.target {
        Target::Stubnet => crate::load_stubnet::run(&args)?,
        Target::Floor => crate::load_floor::run(&args)?,
    };
    let json = serde_json::to_string(&result).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

/// The measured window: when it stops, how late it began, and the CPU times at its start.
pub struct Window {
    pub budget: Budget,
    late_ms: f64,
    started: Instant,
    cpu: cpu::Sample,
}

/// Waits for `start_at_ms` (if given) and opens the measured window.
pub fn start(args: &LoadArgs) -> Window {
    let mut late_ms = 0.0;
    if let Some(at) = args.start_at_ms {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let at = Duration::from_millis(at);
        match at.checked_sub(now) {
            Some(wait) => std::thread::sleep(wait),
            None => late_ms = (now - at).as_secs_f64() * 1e3,
        }
    }
    let cpu = cpu::sample(&args.watch);
    let started = Instant::now();
    let budget = Budget {
        calls: args.calls,
        until: started + Duration::from_secs_f64(args.secs),
    };
    Window {
        budget,
        late_ms,
        started,
        cpu,
    }
}

/// Closes the window and turns what was measured in it into its result.
pub fn finish(tally: Tally, window: Window, args: &LoadArgs) -> LoadResult {
    let secs = window.started.elapsed().as_secs_f64();
    let cpu = cpu::sample(&args.watch);
    let calls = tally.latencies.len() as u64;
    let latency = stats::Latency::of(&tally.latencies);
    LoadResult {
        calls,
        secs,
        p50_us: latency.p50_us,
        p99_us: latency.p99_us,
        errors: tally.errors,
        first_error: tally.first_error,
        late_ms: window.late_ms,
        cpu_us_per_call: cpu::per_call(&window.cpu, &cpu, calls),
    }
}
