//! The core's release binaries: built with `cargo build --release -p server_stub -p client_stub`
//! in the repository, then found in its target dir (`$CARGO_TARGET_DIR` if set, else
//! `REPO/target`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the stubnet binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub server: PathBuf,
    pub client: PathBuf,
    /// This very program, for the relays and load generators.
    pub bench: PathBuf,
}

/// Builds the core's binaries in `repo` (unless `build` is false) and finds them.
pub fn prepare(repo: &Path, build: bool) -> Result<Bins, String> {
    if build {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        println!(
            "building: cargo build --release -p server_stub -p client_stub (in {})",
            repo.display()
        );
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "server_stub",
                "-p",
                "client_stub",
            ])
            .current_dir(repo)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building the core failed ({status}); see cargo's output above"
            ));
        }
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo.join(dir),
        None => repo.join("target"),
    };
    let release = target.join("release");
    let bench = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let bins = Bins {
        server: release.join("server_stub"),
        client: release.join("client_stub"),
        bench,
    };
    for bin in [&bins.server, &bins.client] {
        if !bin.is_file() {
            return Err(format!(
                "{} is missing (build it, or drop --no-build)",
                bin.display()
            ));
        }
    }
    Ok(bins)
}
