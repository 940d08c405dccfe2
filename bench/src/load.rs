//! The `load` mode: one app process that calls `bench_mod.add(1, 2)` (or the floor's echo) with
//! N calls in flight, either a fixed number of calls (latency) or for a fixed time (throughput),
//! and prints one JSON line: calls, seconds, latency percentiles, errors.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

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

/// Waits for `start_at_ms` (if given) and returns the measurement's budget and how late it began.
pub fn start(args: &LoadArgs) -> (Budget, f64) {
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
    let budget = Budget {
        calls: args.calls,
        until: Instant::now() + Duration::from_secs_f64(args.secs),
    };
    (budget, late_ms)
}

/// Turns a finished measurement into its result.
pub fn finish(tally: Tally, started: Instant, late_ms: f64) -> LoadResult {
    let secs = started.elapsed().as_secs_f64();
    let latency = stats::Latency::of(&tally.latencies);
    LoadResult {
        calls: tally.latencies.len() as u64,
        secs,
        p50_us: latency.p50_us,
        p99_us: latency.p99_us,
        errors: tally.errors,
        first_error: tally.first_error,
        late_ms,
    }
}
