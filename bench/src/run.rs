//! The whole benchmark in one go: build the core, start stubnet, the floor and RPyC, measure the
//! calls in rounds, then module sync, reconnection and memory, and write the report and plot.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::binaries::{self, Bins};
use crate::calls::{self, Plan, Targets};
use crate::floor::Floor;
use crate::network::Network;
use crate::results::{Figures, Results, RpycFigures, Section, Settings};
use crate::{cleanup, local_failure, machine, memory, plot, reconnect, report, rpyc, sync};

/// The documented command.
pub const COMMAND: &str = "cargo run --release --manifest-path bench/Cargo.toml --";

#[derive(Args, Debug, Clone)]
pub struct Options {
    /// Where to write the report [default: REPO/BENCHMARKS.md]
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to write the plot [default: REPO/docs/bench.png]
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also write every figure as JSON here
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The stubnet checkout [default: the parent of the bench crate]
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Use the release binaries already built
    #[arg(long)]
    pub no_build: bool,
    /// Sequential calls measured per round (after the warm-up)
    #[arg(long, default_value_t = 2000)]
    pub calls: u64,
    /// Warm-up calls before each measurement
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// Seconds of each throughput measurement
    #[arg(long, default_value_t = 1.0)]
    pub secs: f64,
    /// Rounds of call measurements; each figure is its median round
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Apps for the several-apps throughput
    #[arg(long, default_value_t = 4)]
    pub apps: usize,
    /// Stubs a descriptor update must reach
    #[arg(long, default_value_t = 50)]
    pub sync_stubs: usize,
    /// Modules cached by the reconnecting stub
    #[arg(long, default_value_t = 100)]
    pub cached_modules: usize,
    /// Connected stubs for the server's memory
    #[arg(long, default_value_t = 1000)]
    pub memory_stubs: usize,
    /// RPyC's virtualenv (a cache) [default: bench/target/rpyc-venv]
    #[arg(long)]
    pub venv: Option<PathBuf>,
    /// Do not measure RPyC
    #[arg(long)]
    pub skip_rpyc: bool,
    /// The Python interpreter for the floor's worker and the virtualenv
    #[arg(long, default_value = "python3")]
    pub python: String,
}

pub fn main(opts: Options) -> Result<(), String> {
    cleanup::install()?;
    let repo = opts.repo.clone().unwrap_or_else(crate::default_repo);
    let bins = binaries::prepare(&repo, !opts.no_build)?;
    let plan = Plan {
        calls: opts.calls,
        warmup: opts.warmup,
        secs: opts.secs,
        in_flight: vec![1, 8, 64],
        apps: opts.apps,
    };
    let (stubnet, floor, rpyc, local_failure) = call_figures(&bins, &opts, &plan)?;
    println!("module sync: {} stubs", opts.sync_stubs);
    let sync = sync::measure(&bins, opts.sync_stubs);
    println!("reconnect: {} cached modules", opts.cached_modules);
    let reconnect = reconnect::measure(&bins, opts.cached_modules);
    println!("memory: {} connected stubs", opts.memory_stubs);
    let memory = memory::measure(&bins, opts.memory_stubs);
    let results = Results {
        machine: machine::describe(&opts.python),
        settings: settings(&opts, &plan),
        stubnet,
        floor,
        rpyc,
        local_failure,
        sync,
        reconnect,
        memory,
    };
    write_outputs(&repo, &opts, &results)
}

type CallFigures = (
    Figures,
    Figures,
    Section<RpycFigures>,
    Section<crate::results::LocalFailure>,
);

/// Starts stubnet, the floor and RPyC, and measures calls on all three in rounds.
fn call_figures(bins: &Bins, opts: &Options, plan: &Plan) -> Result<CallFigures, String> {
    let net = Network::start(bins, false)?;
    println!(
        "stubnet: apps on {} (pids: server {}, owner {}, caller {})",
        net.app,
        net.server.pid(),
        net.owner.pid(),
        net.caller.pid()
    );
    let floor = Floor::start(bins, &opts.python)?;
    println!("floor: apps on {}", floor.addr);
    let rpyc = rpyc_server(opts);
    let targets = Targets {
        stubnet: &net.app,
        floor: &floor.addr,
        groups: [net.groups(), floor.groups()].concat(),
        stubnet_chain: net.chain(),
        floor_chain: floor.chain(),
    };
    let (mut stubnets, mut floors, mut rpycs) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=opts.rounds.max(1) {
        println!("round {round} of {}", opts.rounds.max(1));
        let (s, f) = calls::round(bins, plan, &targets)?;
        stubnets.push(s);
        floors.push(f);
        if let Ok((python, server)) = &rpyc {
            let figures = rpyc::measure(python, server.port, plan);
            match &figures {
                Ok(r) => println!("  RPyC: {r:?}"),
                Err(e) => println!("  RPyC failed: {e}"),
            }
            rpycs.push(figures);
        }
    }
    let local = local_failure::measure(bins, opts.calls, opts.warmup);
    let rpyc = match rpyc {
        Err(e) => Err(e),
        Ok(_) => rpycs
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map(|r| rpyc::combine(&r)),
    };
    Ok((
        calls::combine(&stubnets),
        calls::combine(&floors),
        rpyc,
        local,
    ))
}

/// The virtualenv and the RPyC server, or why RPyC is skipped.
fn rpyc_server(opts: &Options) -> Section<(PathBuf, rpyc::Server)> {
    if opts.skip_rpyc {
        return Err("skipped (--skip-rpyc)".into());
    }
    let venv = opts.venv.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("rpyc-venv")
    });
    let started = rpyc::setup(&venv, &opts.python)
        .and_then(|python| rpyc::Server::start(&python).map(|server| (python, server)));
    match started {
        Ok((python, server)) => {
            println!("rpyc: serving on 127.0.0.1:{}", server.port);
            Ok((python, server))
        }
        Err(e) => {
            println!("rpyc: SKIPPED, it could not be set up: {e}");
            Err(format!("skipped: it could not be set up: {e}"))
        }
    }
}

fn settings(opts: &Options, plan: &Plan) -> Settings {
    let args: Vec<String> = std::env::args().skip(1).collect();
    Settings {
        command: format!("{COMMAND} {}", args.join(" "))
            .trim_end()
            .to_owned(),
        rounds: opts.rounds.max(1),
        calls: plan.calls,
        warmup: plan.warmup,
        secs: plan.secs,
        in_flight: plan.in_flight.clone(),
        apps: plan.apps,
    }
}

fn write_outputs(repo: &Path, opts: &Options, results: &Results) -> Result<(), String> {
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| repo.join("BENCHMARKS.md"));
    let png = opts
        .plot
        .clone()
        .unwrap_or_else(|| repo.join("docs").join("bench.png"));
    plot::draw(&png, results)?;
    println!("wrote {}", png.display());
    let markdown = report::render(results, &relative(&png, &out));
    std::fs::write(&out, markdown).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    println!("wrote {}", out.display());
    if let Some(json) = &opts.json {
        let text = serde_json::to_string_pretty(results).map_err(|e| e.to_string())?;
        std::fs::write(json, text).map_err(|e| format!("cannot write {}: {e}", json.display()))?;
    }
    print!("{}", report::summary(results));
    Ok(())
}

/// `png` as a link from the directory of `out` (absolute if it is elsewhere).
fn relative(png: &Path, out: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let (png, out) = (abs(png), abs(out));
    let base = out.parent().unwrap_or(Path::new("/"));
    png.strip_prefix(base).unwrap_or(&png).display().to_string()
}
