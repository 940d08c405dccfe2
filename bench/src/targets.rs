//! Issue 5's targets, judged against one run's figures: each with what was measured and met,
//! missed, or not measured.

use crate::results::{Figures, Results, RpycFigures};

/// The in-flight count the throughput target is about.
pub const TARGET_IN_FLIGHT: usize = 64;

/// One target.
pub struct Verdict {
    pub target: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

pub fn evaluate(r: &Results) -> Vec<Verdict> {
    let (s, f) = (&r.stubnet, &r.floor);
    let rate = |fig: &Figures| fig.one_app.get(&TARGET_IN_FLIGHT).copied().unwrap_or(0.0);
    let p50 = ratio(s.p50_us, f.p50_us);
    let p99 = ratio(s.p99_us, f.p99_us);
    let tput = ratio(rate(s), rate(f));
    let mut v = vec![
        Verdict {
            target: "p50 latency ≤ 1.15 × floor".into(),
            measured: format!("{p50:.2} × ({:.0} µs vs {:.0} µs)", s.p50_us, f.p50_us),
            met: Some(p50 <= 1.15),
        },
        Verdict {
            target: "p99 latency ≤ 1.3 × floor".into(),
            measured: format!("{p99:.2} × ({:.0} µs vs {:.0} µs)", s.p99_us, f.p99_us),
            met: Some(p99 <= 1.3),
        },
        Verdict {
            target: format!("calls/s at {TARGET_IN_FLIGHT} in flight ≥ 0.8 × floor"),
            measured: format!("{tput:.2} × ({:.0} vs {:.0} calls/s)", rate(s), rate(f)),
            met: Some(tput >= 0.8),
        },
        ahead_of_rpyc(s, f, &r.rpyc),
    ];
    v.extend(others(r));
    v
}

/// Whether stubnet beats RPyC's best form in every column RPyC was measured in; where it does
/// not, whether the floor (the same hops doing nothing) does, which tells a column no stack with
/// these hops could win on this machine from one stubnet loses.
fn ahead_of_rpyc(s: &Figures, floor: &Figures, rpyc: &Result<RpycFigures, String>) -> Verdict {
    let target = "ahead of RPyC in every column".to_owned();
    let Ok(rp) = rpyc else {
        return Verdict {
            target,
            measured: "RPyC was not measured".into(),
            met: None,
        };
    };
    let behind = behind_rpyc(s, rp);
    let measured = match behind.is_empty() {
        true => "ahead in p50, p99, 1, 8 and 64 in flight".to_owned(),
        false => {
            let floor_behind = behind_rpyc(floor, rp);
            let floor_too = match floor_behind.is_empty() {
                true => "the floor is ahead in all of them".to_owned(),
                false => format!("so is the floor in: {}", floor_behind.join(", ")),
            };
            format!("behind in: {} ({floor_too})", behind.join(", "))
        }
    };
    Verdict {
        target,
        measured,
        met: Some(behind.is_empty()),
    }
}

/// The columns in which `fig` is not ahead of RPyC's best form.
fn behind_rpyc(fig: &Figures, rp: &RpycFigures) -> Vec<&'static str> {
    let mut behind = Vec::new();
    if fig.p50_us >= rp.cached.p50_us {
        behind.push("p50");
    }
    if fig.p99_us >= rp.cached.p99_us {
        behind.push("p99");
    }
    if fig.one_app.get(&1).copied().unwrap_or(0.0) <= rp.cached.per_sec {
        behind.push("1 in flight");
    }
    for (n, rate) in &rp.async_ {
        if fig.one_app.get(n).copied().unwrap_or(0.0) <= *rate {
            behind.push(if *n == 8 {
                "8 in flight"
            } else {
                "64 in flight"
            });
        }
    }
    behind
}

/// The targets that are not about call speed.
fn others(r: &Results) -> Vec<Verdict> {
    let local = match &r.local_failure {
        Ok(l) => (
            format!(
                "{} bytes between caller stub and server during {} failing calls ({} during as many good ones)",
                l.link_bytes, l.calls, l.link_bytes_good_calls
            ),
            Some(l.link_bytes < l.calls),
        ),
        Err(e) => (format!("failed: {e}"), None),
    };
    let memory = match &r.memory {
        Ok(m) => (
            format!(
                "{:.1} MB VmRSS ({:.1} MB peak) with {} stubs",
                m.rss_kb as f64 / 1024.0,
                m.hwm_kb as f64 / 1024.0,
                m.stubs
            ),
            (m.stubs >= 1000).then_some(m.rss_kb as f64 / 1024.0 <= 50.0),
        ),
        Err(e) => (format!("failed: {e}"), None),
    };
    let reconnect = match &r.reconnect {
        Ok(c) => (
            format!(
                "{} file bytes, {} `sent` lines, {} of {} modules cached",
                c.file_bytes, c.sent_lines, c.cached_lines, c.modules
            ),
            Some(c.file_bytes == 0 && c.sent_lines == 0 && c.cached_lines == c.modules),
        ),
        Err(e) => (format!("failed: {e}"), None),
    };
    [
        (
            "unknown function answered without a network round trip",
            local,
        ),
        ("server memory with 1,000 stubs ≤ 50 MB", memory),
        (
            "reconnect with 100 cached modules sends 0 file bytes",
            reconnect,
        ),
    ]
    .into_iter()
    .map(|(target, (measured, met))| Verdict {
        target: target.into(),
        measured,
        met,
    })
    .collect()
}
