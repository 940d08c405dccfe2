//! Runs load: starts one or several app processes (`bench load …`) against a target, lines their
//! measurements up on a common start time, and sums what they report.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::binaries::Bins;
use crate::cpu::Watch;
use crate::load::{LoadResult, Target};
use crate::procs::Proc;

/// One load measurement.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub target: Target,
    pub addr: &'a str,
    /// App processes, each with its own connection.
    pub apps: usize,
    /// Calls in flight per app.
    pub in_flight: usize,
    /// Measured calls per app (a cap), and seconds (a cap).
    pub calls: u64,
    pub secs: f64,
    pub warmup: u64,
    pub function: &'a str,
    /// Run the apps on this CPU only.
    pub cpu: Option<usize>,
    /// The chain's processes, for the CPU time per call of each (one app only: with several,
    /// each would count the whole chain's time against its own calls).
    pub watch: &'a [Watch],
}

/// What the apps of one measurement reported together.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub calls_per_sec: f64,
    /// The median of the apps' percentiles (the one app's, for one app).
    pub p50_us: f64,
    pub p99_us: f64,
    /// µs of CPU per call by process (see `cpu.rs`), with one app.
    pub cpu_us_per_call: BTreeMap<String, f64>,
    pub apps: Vec<LoadResult>,
}

/// Time the apps get to connect and warm up before the common start.
const LEAD: Duration = Duration::from_millis(1500);

pub fn run(bins: &Bins, spec: &Spec) -> Result<Outcome, String> {
    let start_at = (spec.apps > 1).then(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (now + LEAD).as_millis() as u64
    });
    let mut procs = Vec::new();
    for i in 0..spec.apps {
        let args = load_args(spec, start_at);
        procs.push(Proc::start(
            &format!("app{i}"),
            bins.bench.as_os_str(),
            &args,
        )?);
    }
    let limit = Duration::from_secs_f64(spec.secs) + LEAD + Duration::from_secs(60);
    let mut results = Vec::new();
    for proc in &mut procs {
        let status = proc.wait_exit(limit)?;
        let line = proc.last_stdout().unwrap_or_default();
        let result: LoadResult = serde_json::from_str(&line).map_err(|e| {
            format!(
                "{} ({status}) gave no result ({e}); last output:\n{}",
                proc.name,
                proc.tail(10)
            )
        })?;
        if result.late_ms > 100.0 {
            eprintln!(
                "bench: warning: {} started {:.0} ms late",
                proc.name, result.late_ms
            );
        }
        results.push(result);
    }
    let median = |f: fn(&LoadResult) -> f64| {
        crate::stats::median(&results.iter().map(f).collect::<Vec<_>>())
    };
    Ok(Outcome {
        calls_per_sec: results.iter().map(LoadResult::per_sec).sum(),
        p50_us: median(|r| r.p50_us),
        p99_us: median(|r| r.p99_us),
        cpu_us_per_call: match &results[..] {
            [one] => one.cpu_us_per_call.clone(),
            _ => BTreeMap::new(),
        },
        apps: results,
    })
}

fn load_args(spec: &Spec, start_at: Option<u64>) -> Vec<OsString> {
    let target = match spec.target {
        Target::Stubnet => "stubnet",
        Target::Floor => "floor",
    };
    let mut args: Vec<OsString> = vec!["load".into(), "--target".into(), target.into()];
    let values = [
        ("--addr", spec.addr.to_owned()),
        ("--in-flight", spec.in_flight.to_string()),
        ("--calls", spec.calls.to_string()),
        ("--secs", spec.secs.to_string()),
        ("--warmup", spec.warmup.to_string()),
        ("--function", spec.function.to_owned()),
    ];
    for (flag, value) in values {
        args.push(flag.into());
        args.push(value.into());
    }
    if let Some(cpu) = spec.cpu {
        args.push("--cpu".into());
        args.push(cpu.to_string().into());
    }
    if spec.apps == 1 {
        for w in spec.watch {
            args.push("--watch".into());
            args.push(w.to_string().into());
        }
    }
    if let Some(at) = start_at {
        args.push("--start-at-ms".into());
        args.push(at.to_string().into());
    }
    args
}

/// Fails with the first error an app saw, unless errors were expected.
pub fn no_errors(what: &str, outcome: &Outcome) -> Result<(), String> {
    match outcome.apps.iter().find(|r| r.errors > 0) {
        Some(r) => Err(format!(
            "{what}: {} of {} calls failed; first: {}",
            r.errors,
            r.calls,
            r.first_error.as_deref().unwrap_or("?")
        )),
        None => Ok(()),
    }
}
