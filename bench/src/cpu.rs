//! Where the CPU goes: the CPU time each process of a chain spends per call, read from /proc by
//! the app itself at the start and the end of its measured window (so warm-up is left out). A
//! process's time is the sum over its threads of `/proc/PID/task/TID/schedstat`'s first field
//! (nanoseconds on a CPU); the machine's idle time comes from `/proc/stat` (all CPUs).

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

/// The name the app's own time is kept under.
pub const APP: &str = "app";
/// The name the machine's idle time is kept under.
pub const IDLE: &str = "idle";

/// The places of a chain, in the order of a call's way there: the caller's stub (or the relay in
/// its place), the server, the owner, and the owner's Python worker.
pub const PLACES: [&str; 4] = ["caller", "server", "owner", "python"];

/// The processes to watch in a chain of three hops: the Python worker is the owner's child.
pub fn chain(caller: u32, server: u32, owner: u32) -> Vec<Watch> {
    let python = children(owner).first().copied();
    [Some(caller), Some(server), Some(owner), python]
        .into_iter()
        .zip(PLACES)
        .filter_map(|(pid, name)| {
            Some(Watch {
                name: name.into(),
                pid: pid?,
            })
        })
        .collect()
}

/// One process to watch, `NAME=PID` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub name: String,
    pub pid: u32,
}

impl std::str::FromStr for Watch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, pid) = s.split_once('=').ok_or("expected NAME=PID")?;
        let pid = pid.parse().map_err(|_| format!("not a pid: {pid}"))?;
        Ok(Watch {
            name: name.to_owned(),
            pid,
        })
    }
}

impl std::fmt::Display for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.name, self.pid)
    }
}

/// CPU nanoseconds so far, by name (the watched processes, [`APP`] and [`IDLE`]).
pub type Sample = BTreeMap<String, u64>;

/// Reads the CPU time of `watch`, of this process, and the machine's idle time. A process that
/// cannot be read (it has exited) is left out.
pub fn sample(watch: &[Watch]) -> Sample {
    let mut sample = Sample::new();
    for w in watch {
        if let Some(ns) = process_ns(&w.pid.to_string()) {
            sample.insert(w.name.clone(), ns);
        }
    }
    if let Some(ns) = process_ns("self") {
        sample.insert(APP.into(), ns);
    }
    if let Some(ns) = idle_ns() {
        sample.insert(IDLE.into(), ns);
    }
    sample
}

/// µs per call of each name found in both samples.
pub fn per_call(before: &Sample, after: &Sample, calls: u64) -> BTreeMap<String, f64> {
    let calls = calls.max(1) as f64;
    after
        .iter()
        .filter_map(|(name, &end)| {
            let start = *before.get(name)?;
            Some((name.clone(), end.saturating_sub(start) as f64 / 1e3 / calls))
        })
        .collect()
}

/// Waits until `pid` and its children (a stub and its Python workers) are quiet: under 1% of a
/// CPU over 200 ms, with no child started meanwhile. A figure measured while a stub still starts
/// its workers (a `python3` that is a pyenv shim takes about 0.1 s of CPU each) would count that
/// work. Gives up after `limit`; returns whether they settled.
pub fn settle(pid: u32, limit: Duration) -> bool {
    const WINDOW: Duration = Duration::from_millis(200);
    let busy = || {
        let mut kids = children(pid);
        kids.sort_unstable();
        let ns: u64 = std::iter::once(pid)
            .chain(kids.iter().copied())
            .filter_map(|p| process_ns(&p.to_string()))
            .sum();
        (kids, ns)
    };
    let start = Instant::now();
    let mut before = busy();
    while start.elapsed() < limit {
        std::thread::sleep(WINDOW);
        let now = busy();
        let quiet = now.0 == before.0 && now.1.saturating_sub(before.1) < 2_000_000;
        if quiet {
            return true;
        }
        before = now;
    }
    false
}

/// The process's children (a stub's Python workers, a relay's echo worker).
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Nanoseconds on a CPU of every thread of `/proc/{pid}`; `None` if no thread's could be read
/// (the process is gone, or the kernel keeps no `schedstat`).
fn process_ns(pid: &str) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let per_thread: Vec<u64> = tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse().ok())
        .collect();
    (!per_thread.is_empty()).then(|| per_thread.iter().sum())
}

/// Idle and I/O-wait time of all CPUs, in nanoseconds (counted in clock ticks).
fn idle_ns() -> Option<u64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let ticks = fields.get(3)? + fields.get(4)?;
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * 1_000_000_000 / per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_parses_name_and_pid() {
        let w: Watch = "caller=42".parse().unwrap();
        assert_eq!(w.to_string(), "caller=42");
        assert!("caller".parse::<Watch>().is_err());
        assert!("caller=x".parse::<Watch>().is_err());
    }

    #[test]
    fn own_time_grows_with_work() {
        let before = sample(&[]);
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let after = sample(&[]);
        let per = per_call(&before, &after, 1);
        assert!(per[APP] > 0.0, "no CPU time counted: {per:?}");
        assert!(per.contains_key(IDLE));
    }

    #[test]
    fn per_call_keeps_names_in_both() {
        let a = Sample::from([("x".into(), 1000), ("gone".into(), 5)]);
        let b = Sample::from([("x".into(), 5000), ("new".into(), 9)]);
        assert_eq!(per_call(&a, &b, 2), BTreeMap::from([("x".into(), 2.0)]));
    }
}
