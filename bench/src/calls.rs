//! The call measurements of one round, stubnet and the floor interleaved figure by figure so
//! that both see the same machine: sequential latency, then calls/s with 1, 8, 64 in flight from
//! one app and from several apps. Rounds are combined by taking each figure's median round: on a
//! shared machine noise slows a round down, and where the scheduler puts the processes can make
//! a round much faster (a chain that happens to stay on one CPU), so neither extreme is a fair
//! figure.

use std::collections::BTreeMap;

use crate::affinity::Pinned;
use crate::binaries::Bins;
use crate::cpu::Watch;
use crate::drive::{self, Outcome, Spec};
use crate::load::Target;
use crate::results::Figures;
use crate::stats::median;

/// What to measure, shared by every round.
#[derive(Debug, Clone)]
pub struct Plan {
    pub calls: u64,
    pub warmup: u64,
    pub secs: f64,
    pub in_flight: Vec<usize>,
    pub apps: usize,
}

/// Where each side listens for apps.
pub struct Targets<'a> {
    pub stubnet: &'a str,
    pub floor: &'a str,
    /// The process groups of both chains (for the one-CPU figures).
    pub groups: Vec<u32>,
    /// The processes of each chain, for their CPU time per call.
    pub stubnet_chain: Vec<Watch>,
    pub floor_chain: Vec<Watch>,
}

/// One round: (stubnet, floor).
pub fn round(bins: &Bins, plan: &Plan, targets: &Targets) -> Result<(Figures, Figures), String> {
    let mut stubnet = Figures::default();
    let mut floor = Figures::default();
    let seq = |target, addr, cpu| {
        let spec = Spec {
            target,
            addr,
            apps: 1,
            in_flight: 1,
            calls: plan.calls,
            secs: 600.0,
            warmup: plan.warmup,
            function: "add",
            cpu,
            watch: &[],
        };
        let label = match cpu {
            None => "sequential".to_owned(),
            Some(cpu) => format!("sequential, all on CPU {cpu}"),
        };
        measure(bins, &spec, &label)
    };
    let f = seq(Target::Floor, targets.floor, None)?;
    let s = seq(Target::Stubnet, targets.stubnet, None)?;
    (floor.p50_us, floor.p99_us) = (f.p50_us, f.p99_us);
    (stubnet.p50_us, stubnet.p99_us) = (s.p50_us, s.p99_us);
    {
        let pinned = Pinned::new(targets.groups.clone())?;
        let f = seq(Target::Floor, targets.floor, Some(pinned.cpu()))?;
        let s = seq(Target::Stubnet, targets.stubnet, Some(pinned.cpu()))?;
        (floor.one_cpu_p50_us, floor.one_cpu_p99_us) = (f.p50_us, f.p99_us);
        (stubnet.one_cpu_p50_us, stubnet.one_cpu_p99_us) = (s.p50_us, s.p99_us);
    }
    for apps in [1, plan.apps] {
        for &n in &plan.in_flight {
            let load = |target, addr, watch| {
                let spec = Spec {
                    target,
                    addr,
                    apps,
                    in_flight: n,
                    calls: 10_000_000,
                    secs: plan.secs,
                    warmup: plan.warmup,
                    function: "add",
                    cpu: None,
                    watch,
                };
                measure(bins, &spec, &format!("{apps} app(s) x {n} in flight"))
            };
            let f = load(Target::Floor, targets.floor, &targets.floor_chain)?;
            let s = load(Target::Stubnet, targets.stubnet, &targets.stubnet_chain)?;
            let (fs, ss) = match apps {
                1 => (&mut floor.one_app, &mut stubnet.one_app),
                _ => (&mut floor.many_apps, &mut stubnet.many_apps),
            };
            fs.insert(n, f.calls_per_sec);
            ss.insert(n, s.calls_per_sec);
            if apps == 1 {
                floor.cpu_us_per_call.insert(n, f.cpu_us_per_call);
                stubnet.cpu_us_per_call.insert(n, s.cpu_us_per_call);
            }
        }
    }
    Ok((stubnet, floor))
}

/// Runs one measurement, printing it as `TARGET, LABEL: figures`.
fn measure(bins: &Bins, spec: &Spec, label: &str) -> Result<Outcome, String> {
    let what = format!("{:?}, {label}", spec.target);
    let outcome = drive::run(bins, spec).map_err(|e| format!("{what}: {e}"))?;
    drive::no_errors(&what, &outcome)?;
    println!(
        "  {what}: {:.0} calls/s, p50 {:.1} us, p99 {:.1} us",
        outcome.calls_per_sec, outcome.p50_us, outcome.p99_us
    );
    Ok(outcome)
}

/// Each figure's median round.
pub fn combine(rounds: &[Figures]) -> Figures {
    let pick = |f: &dyn Fn(&Figures) -> f64| rounds.iter().map(f).collect::<Vec<_>>();
    let map = |which: &dyn Fn(&Figures) -> &BTreeMap<usize, f64>| -> BTreeMap<usize, f64> {
        let keys = rounds
            .first()
            .map(|r| which(r).keys().copied().collect::<Vec<_>>());
        keys.unwrap_or_default()
            .into_iter()
            .map(|k| {
                (
                    k,
                    median(&pick(&|r| which(r).get(&k).copied().unwrap_or(0.0))),
                )
            })
            .collect()
    };
    Figures {
        p50_us: median(&pick(&|r| r.p50_us)),
        p99_us: median(&pick(&|r| r.p99_us)),
        one_cpu_p50_us: median(&pick(&|r| r.one_cpu_p50_us)),
        one_cpu_p99_us: median(&pick(&|r| r.one_cpu_p99_us)),
        one_app: map(&|r| &r.one_app),
        many_apps: map(&|r| &r.many_apps),
        cpu_us_per_call: cpu_medians(rounds),
    }
}

/// For each number in flight and each process, the median over the rounds of its µs per call.
fn cpu_medians(rounds: &[Figures]) -> BTreeMap<usize, BTreeMap<String, f64>> {
    let mut all: BTreeMap<usize, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for round in rounds {
        for (&n, by_name) in &round.cpu_us_per_call {
            for (name, &us) in by_name {
                let at = all.entry(n).or_default().entry(name.clone()).or_default();
                at.push(us);
            }
        }
    }
    all.into_iter()
        .map(|(n, by_name)| {
            let medians = by_name.into_iter().map(|(k, v)| (k, median(&v)));
            (n, medians.collect())
        })
        .collect()
}
