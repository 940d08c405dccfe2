//! Putting the processes of a measurement on one CPU, and back. On a virtual machine, waking a
//! process that sleeps on the other CPU costs an inter-processor interrupt and the wake of a
//! halted virtual CPU, tens of µs, and where the scheduler puts each process is luck: the same
//! chain measures 30 µs or 150 µs from one run to the next. On one CPU no wake crosses CPUs, so
//! what is left is the work each hop does.

use std::io;

/// The process groups, and the children of their processes (the Python workers, which lead
/// groups of their own), pinned to one CPU while this lives; dropping it gives them back the
/// CPUs the benchmark itself runs on.
pub struct Pinned {
    groups: Vec<u32>,
    cpu: usize,
}

impl Pinned {
    /// Pins `groups` to the first CPU this benchmark may run on.
    pub fn new(groups: Vec<u32>) -> Result<Pinned, String> {
        let allowed = own_set().map_err(|e| format!("cannot read this process's CPUs: {e}"))?;
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
            .ok_or("this process may run on no CPU")?;
        set_groups(&groups, &only(cpu)).map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))?;
        Ok(Pinned { groups, cpu })
    }

    /// The CPU everything is pinned to.
    pub fn cpu(&self) -> usize {
        self.cpu
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let all = own_set();
        if let Err(e) = all.and_then(|all| set_groups(&self.groups, &all)) {
            eprintln!("bench: warning: cannot give the CPUs back: {e}");
        }
    }
}

/// Pins the calling process (a load app) to `cpu`.
pub fn pin_self(cpu: usize) -> Result<(), String> {
    set(0, &only(cpu)).map_err(|e| format!("cannot pin to CPU {cpu}: {e}"))
}

/// The set of just `cpu`.
fn only(cpu: usize) -> libc::cpu_set_t {
    let mut set = empty_set();
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

fn empty_set() -> libc::cpu_set_t {
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_ZERO(&mut set) };
    set
}

/// The CPUs this process may run on.
fn own_set() -> io::Result<libc::cpu_set_t> {
    let mut set = empty_set();
    let size = std::mem::size_of::<libc::cpu_set_t>();
    match unsafe { libc::sched_getaffinity(0, size, &mut set) } {
        0 => Ok(set),
        _ => Err(io::Error::last_os_error()),
    }
}

fn set(tid: i32, cpus: &libc::cpu_set_t) -> io::Result<()> {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    match unsafe { libc::sched_setaffinity(tid, size, cpus) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Sets every thread of every process in `groups`, and of their children.
fn set_groups(groups: &[u32], cpus: &libc::cpu_set_t) -> io::Result<()> {
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some((parent, group)) = parent_and_group(pid) else {
            continue;
        };
        let in_groups = |group| groups.contains(&group);
        if !in_groups(group) && !parent_and_group(parent).is_some_and(|(_, g)| in_groups(g)) {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue; // it has just exited
        };
        for task in tasks.flatten() {
            if let Some(tid) = task.file_name().to_str().and_then(|n| n.parse().ok()) {
                // A thread that has just exited is no error.
                match set(tid, cpus) {
                    Err(e) if e.raw_os_error() != Some(libc::ESRCH) => return Err(e),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// A process's parent and group, from `/proc/PID/stat` (the fourth and fifth fields; the second
/// may hold spaces).
fn parent_and_group(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut after_name = stat[stat.rfind(')')? + 1..].split_whitespace().skip(1);
    Some((
        after_name.next()?.parse().ok()?,
        after_name.next()?.parse().ok()?,
    ))
}
