//! Call statistics per module and function: calls, errors, the last error, mean and p99
//! latency. Latencies go into fixed log-scale buckets (four per doubling), so recording is
//! O(1) with no allocation and p99 is exact to within a bucket (about 19%).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use crate::log::printable;

/// Buckets: bucket `i` holds latencies up to `2^(i/4)` microseconds (about 71 minutes at the top).
const BUCKETS: usize = 128;

/// The figures of one function.
#[derive(Debug, Clone)]
pub struct FunctionStats {
    pub calls: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    total_us: u64,
    buckets: [u32; BUCKETS],
}

impl Default for FunctionStats {
    fn default() -> Self {
        FunctionStats {
            calls: 0,
            errors: 0,
            last_error: None,
            total_us: 0,
            buckets: [0; BUCKETS],
        }
    }
}

fn bucket(us: u64) -> usize {
    // 4·log2(us), rounded up, without floating point on the hot path's common values.
    let us = us.max(1) as f64;
    ((us.log2() * 4.0).ceil() as usize).min(BUCKETS - 1)
}

fn bucket_top_us(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

impl FunctionStats {
    fn record(&mut self, took: Duration, error: Option<&str>) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        self.calls += 1;
        self.total_us = self.total_us.saturating_add(us);
        self.buckets[bucket(us)] += 1;
        if let Some(e) = error {
            self.errors += 1;
            self.last_error = Some(e.to_owned());
        }
    }

    /// Mean latency in milliseconds.
    pub fn mean_ms(&self) -> f64 {
        match self.calls {
            0 => 0.0,
            n => self.total_us as f64 / n as f64 / 1000.0,
        }
    }

    /// The 99th percentile latency in milliseconds (the top of its bucket).
    pub fn p99_ms(&self) -> f64 {
        let want = (self.calls as f64 * 0.99).ceil() as u64;
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= want && seen > 0 {
                return bucket_top_us(i) / 1000.0;
            }
        }
        0.0
    }
}

/// One row of [`Stats::rows`], as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub module: String,
    pub function: String,
    pub calls: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub mean_ms: f64,
    pub p99_ms: f64,
}

/// How many modules that are gone [`Stats`] keeps the figures of (see [`Stats::gone`]).
pub const GONE_KEPT: usize = 100;

/// How many functions of one module [`Stats`] keeps the figures of by name: the calls to any
/// other count in one row, [`OTHER_FUNCTIONS`]. The caller chooses the name it calls (a raw stub,
/// or one whose copy of the descriptor is out of date), and each name would otherwise keep a row
/// for as long as its module stays.
pub const FUNCTIONS_KEPT: usize = 1000;

/// The row of a module's calls to functions past its first [`FUNCTIONS_KEPT`].
pub const OTHER_FUNCTIONS: &str = "(other functions)";

/// Statistics of many functions.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// By module, then function.
    by: BTreeMap<String, ModuleStats>,
    /// The modules gone whose figures are kept, the newest last: at most [`GONE_KEPT`].
    gone: VecDeque<String>,
}

#[derive(Debug, Clone, Default)]
struct ModuleStats {
    functions: BTreeMap<String, FunctionStats>,
    /// In [`Stats::gone`].
    gone: bool,
}

impl Stats {
    /// Records one call of `module.function` that took `took`, failed with `error` if any.
    pub fn record(&mut self, module: &str, function: &str, took: Duration, error: Option<&str>) {
        // Look up by reference first: the common case is a function seen before, and then
        // nothing is allocated.
        if let Some(f) = (self.by.get_mut(module)).and_then(|m| m.functions.get_mut(function)) {
            return f.record(took, error);
        }
        let m = self.by.entry(module.to_owned()).or_default();
        let name = match m.functions.len() < FUNCTIONS_KEPT {
            true => function,
            false => OTHER_FUNCTIONS,
        };
        let f = m.functions.entry(name.to_owned()).or_default();
        f.record(took, error);
    }

    /// `module` is gone (it left the network, or this stub no longer calls or serves it), until
    /// it is [`back`](Stats::back). Its figures are still shown until [`GONE_KEPT`] more modules
    /// are gone: those of modules that come and go under new names (an app's per-job module)
    /// would otherwise pile up for as long as the process runs. The calls still in flight when
    /// it went, which fail after, count among them.
    pub fn gone(&mut self, module: &str) {
        let m = self.by.entry(module.to_owned()).or_default();
        if m.gone {
            return;
        }
        m.gone = true;
        self.gone.push_back(module.to_owned());
        if self.gone.len() > GONE_KEPT {
            if let Some(oldest) = self.gone.pop_front() {
                self.by.remove(&oldest);
            }
        }
    }

    /// `module` is back (registered again): its figures are kept for good again.
    pub fn back(&mut self, module: &str) {
        if let Some(m) = self.by.get_mut(module).filter(|m| m.gone) {
            m.gone = false;
            self.gone.retain(|g| g != module);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by.values().all(|m| m.functions.is_empty())
    }

    /// Every function's figures, by module then function.
    pub fn rows(&self) -> Vec<Row> {
        self.by
            .iter()
            .flat_map(|(module, m)| m.functions.iter().map(move |f| (module, f)))
            .map(|(module, (function, s))| Row {
                module: module.clone(),
                function: function.clone(),
                calls: s.calls,
                errors: s.errors,
                last_error: s.last_error.clone(),
                mean_ms: s.mean_ms(),
                p99_ms: s.p99_ms(),
            })
            .collect()
    }

    /// A table for the shells, headed by `title`.
    pub fn render(&self, title: &str) -> String {
        if self.is_empty() {
            return format!("{title}: none yet\n");
        }
        let mut out = format!(
            "{title}:\n  {:<28} {:>8} {:>7} {:>10} {:>10}  last error\n",
            "function", "calls", "errors", "mean ms", "p99 ms"
        );
        // Function names and errors come from peers (a caller, a module's exception).
        for r in self.rows() {
            let name = format!("{}.{}", r.module, r.function);
            let name = printable(&name);
            let last = printable(r.last_error.as_deref().unwrap_or("-"));
            out += &format!(
                "  {name:<28} {:>8} {:>7} {:>10.3} {:>10.3}  {last}\n",
                r.calls, r.errors, r.mean_ms, r.p99_ms
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_errors_mean_and_p99() {
        let mut s = Stats::default();
        for _ in 0..99 {
            s.record("z", "f", Duration::from_micros(100), None);
        }
        s.record("z", "f", Duration::from_millis(50), Some("ValueError: x"));
        let r = &s.rows()[0];
        assert_eq!((r.calls, r.errors), (100, 1));
        assert_eq!(r.last_error.as_deref(), Some("ValueError: x"));
        assert!((r.mean_ms - 0.599).abs() < 0.001, "{}", r.mean_ms);
        assert!(r.p99_ms >= 0.1 && r.p99_ms < 0.12, "p99 {}", r.p99_ms);
        s.record("z", "f", Duration::from_millis(50), None);
        assert!(s.rows()[0].p99_ms >= 50.0, "{}", s.rows()[0].p99_ms);
        assert!(s.render("calls").contains("z.f"));
    }

    #[test]
    fn only_the_newest_modules_gone_keep_their_figures() {
        let mut s = Stats::default();
        let call = |s: &mut Stats, module: &str| s.record(module, "f", Duration::ZERO, None);
        call(&mut s, "stays");
        for i in 0..GONE_KEPT + 10 {
            let module = format!("job{i}");
            call(&mut s, &module);
            s.gone(&module);
            s.gone(&module); // told twice: counted once
            call(&mut s, &module); // a call that was in flight when it went
        }
        let rows = s.rows();
        assert_eq!(rows.len(), GONE_KEPT + 1);
        assert!(rows.iter().any(|r| r.module == "stays"));
        assert!(
            !rows.iter().any(|r| r.module == "job9"),
            "the oldest gone are dropped"
        );
        assert!(rows.iter().any(|r| r.module == "job10" && r.calls == 2));
        // One that is back is kept for good again.
        s.back("job10");
        for i in 0..GONE_KEPT {
            s.gone(&format!("later{i}")); // never called: counted as gone all the same
        }
        let rows = s.rows();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().any(|r| r.module == "job10"));
        assert!(!s.render("calls").contains("none yet"));
        for module in ["stays", "job10"] {
            s.gone(module);
        }
        for i in 0..GONE_KEPT {
            s.gone(&format!("last{i}"));
        }
        assert!(s.is_empty());
        assert!(s.render("calls").contains("none yet"));
    }

    #[test]
    fn a_module_keeps_rows_for_so_many_functions_and_counts_the_others_in_one() {
        let mut s = Stats::default();
        let call = |s: &mut Stats, function: &str| s.record("z", function, Duration::ZERO, None);
        for i in 0..FUNCTIONS_KEPT + 10 {
            call(&mut s, &format!("f{i}"));
        }
        call(&mut s, "f0"); // kept before the bound: still its own row
        call(&mut s, "f1005"); // past it: among the others, again
        s.record("y", "g", Duration::ZERO, None); // another module has rows of its own
        let rows = s.rows();
        assert_eq!(rows.len(), FUNCTIONS_KEPT + 2);
        let calls = |function: &str| {
            let row = rows
                .iter()
                .find(|r| r.module == "z" && r.function == function);
            row.map(|r| r.calls)
        };
        assert_eq!(calls("f0"), Some(2));
        assert_eq!(calls(&format!("f{}", FUNCTIONS_KEPT - 1)), Some(1));
        assert_eq!(calls(&format!("f{FUNCTIONS_KEPT}")), None);
        assert_eq!(calls(OTHER_FUNCTIONS), Some(11));
        assert!(s.render("calls").contains("z.(other functions)"));
    }

    #[test]
    fn a_peers_function_name_and_error_stay_within_their_row() {
        let mut s = Stats::default();
        let error = "ValueError: \x1b]0;pwned\x07\nforged";
        s.record("z", "f\rg", Duration::from_micros(100), Some(error));
        let text = s.render("calls");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains(r"z.f\rg"), "{text}");
        assert!(
            text.contains(r"ValueError: \u{1b}]0;pwned\u{7}\nforged"),
            "{text}"
        );
    }
}
