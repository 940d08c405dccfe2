//! `bench`: stubnet's benchmark harness. With no subcommand it runs the whole benchmark (see
//! `run.rs`); the hidden subcommands are the processes the run starts: the floor's relays
//! (`relay`) and the load generators that play the apps (`load`).

mod affinity;
mod binaries;
mod calls;
mod cleanup;
mod cpu;
mod drive;
mod floor;
mod load;
mod load_floor;
mod load_stubnet;
mod local_failure;
mod machine;
mod memory;
mod network;
mod plot;
mod procs;
mod proxy;
mod reconnect;
mod relay;
mod report;
mod results;
mod rpyc;
mod run;
mod stats;
mod sync;
mod targets;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks stubnet against a loopback floor and RPyC, in one run, and writes BENCHMARKS.md.
#[derive(Parser, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    #[command(flatten)]
    run: run::Options,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// One relay of the floor chain (started by the run itself).
    #[command(hide = true)]
    Relay(relay::RelayArgs),
    /// One load-generating app (started by the run itself); prints its result as JSON.
    #[command(hide = true)]
    Load(load::LoadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.mode {
        Some(Mode::Relay(args)) => relay::main(args),
        Some(Mode::Load(args)) => load::main(args),
        None => run::main(cli.run),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository the bench crate lives in (its parent directory).
pub fn default_repo() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
