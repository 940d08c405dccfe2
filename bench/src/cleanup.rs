//! Clean-up however the run ends. Every child runs in a process group of its own (so its own
//! children, such as a stub's Python workers, go with it) and every scratch directory is a
//! [`Scratch`]: Drop guards kill and remove them on a normal end, an error or a panic, and the
//! Ctrl-C / SIGTERM handler installed here does the same for whatever is still registered.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Installs the Ctrl-C / SIGTERM handler: kill every registered group, remove every scratch
/// directory, exit 130.
pub fn install() -> Result<(), String> {
    ctrlc::set_handler(|| {
        eprintln!("bench: interrupted; stopping every process it started");
        let groups: Vec<i32> = lock(&GROUPS).iter().copied().collect();
        for group in groups {
            kill_group(group);
        }
        for dir in lock(&DIRS).iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    })
    .map_err(|e| format!("cannot catch Ctrl-C: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remembers a process group (its leader's pid) to kill on an interrupt.
pub fn add_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        lock(&GROUPS).insert(pid);
    }
}

/// Forgets a process group once its guard has killed it.
pub fn remove_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        lock(&GROUPS).remove(&pid);
    }
}

/// Sends SIGKILL to every process in the group led by `pid`.
pub fn kill_group(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) with a negative pid only sends a signal; it touches no memory.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

/// A temporary directory removed when dropped, or by the interrupt handler.
pub struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    /// A new directory under the system's temp dir, named `stubnet-bench-PREFIX-…`.
    pub fn new(prefix: &str) -> Result<Scratch, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("stubnet-bench-{prefix}-"))
            .tempdir()
            .map_err(|e| format!("cannot create a temp dir: {e}"))?;
        lock(&DIRS).push(dir.path().to_owned());
        Ok(Scratch { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        lock(&DIRS).retain(|d| d != self.dir.path());
    }
}
