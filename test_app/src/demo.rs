//! `test_app demo`: the whole network in one command. Starts a server stub and three client
//! stubs from the shipped profiles on free ports in a temp dir, registers `z.py` on the first,
//! waits until the others have it, calls it through the third, and shuts everything down. Every
//! child is killed however the demo ends (success, a failed step, Ctrl-C).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::{CallError, Client};
use common::log::printable_lines;
use serde_json::{json, Map};
use test_app::procs::Proc;
use test_app::{show, show_last};

type Children = Arc<Mutex<Vec<Proc>>>;

/// Set by Ctrl-C: the steps that fail from then on are not the demo failing.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run() -> ExitCode {
    let tmp = match tempfile::tempdir() {
        Ok(tmp) => tmp,
        Err(e) => {
            eprintln!("demo failed: cannot make a temp dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let children = Children::default();
    let on_interrupt = children.clone();
    let scratch = tmp.path().to_owned();
    let _ = ctrlc::set_handler(move || {
        INTERRUPTED.store(true, Ordering::SeqCst);
        show_last("\ninterrupted: stopping every process");
        if let Ok(mut c) = on_interrupt.lock() {
            c.clear(); // Dropping a Proc kills it.
        }
        // `exit` skips the temp dir's own cleanup.
        let _ = std::fs::remove_dir_all(&scratch);
        std::process::exit(130);
    });
    let result = steps(&children, tmp.path());
    while INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::park(); // The handler ends the process (130), not a failed step.
    }
    children.lock().map(|mut c| c.clear()).ok();
    match result {
        Ok(()) => {
            show("demo finished: every process stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("demo failed: {}", printable_lines(&e));
            ExitCode::FAILURE
        }
    }
}

fn step(text: &str) {
    show(format_args!("\n==> {text}"));
}

fn steps(children: &Children, dir: &Path) -> Result<(), String> {
    let root = repo_root()?;
    let bin = binaries()?;
    let conf = |name: &str| {
        root.join("conf")
            .join(format!("{name}.toml"))
            .display()
            .to_string()
    };
    let start = |name: &str, exe: &str, args: &[&str]| -> usize {
        let p = Proc::start_echo(name, &bin.join(exe), args, dir, true);
        let mut c = children.lock().expect("not poisoned");
        c.push(p);
        c.len() - 1
    };
    let with = |i: usize, f: &mut dyn FnMut(&mut Proc) -> Result<String, String>| {
        let mut c = children.lock().expect("not poisoned");
        f(&mut c[i])
    };

    step("starting the server stub from conf/server.toml on a free port");
    let srv_dir = dir.join("server").display().to_string();
    let server = start(
        "server",
        "server_stub",
        &["-c", &conf("server"), "-p", "0", "-d", &srv_dir],
    );
    let line = with(server, &mut |p| p.try_wait_n("listening on ", 1))?;
    let port = line
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();

    let mut stubs = Vec::new();
    for (profile, name) in [("conf", "alpha"), ("conf2", "beta"), ("conf3", "gamma")] {
        step(&format!(
            "starting client stub {name} from conf/{profile}.toml"
        ));
        let recv = dir.join(name).display().to_string();
        let i = start(
            name,
            "client_stub",
            &["-c", &conf(profile), "-p", &port, "-q", "0", "-d", &recv],
        );
        with(i, &mut |p| p.try_wait_n("apps on ", 1))?;
        stubs.push(i);
    }

    let z = root.join("test_app/modules/z.py");
    step(&format!("alpha's shell: rm:{}", z.display()));
    with(stubs[0], &mut |p| {
        p.send(&format!("rm:{}", z.display()));
        p.try_wait_n("registered z", 1)
    })?;
    step("waiting until beta and gamma hold z's descriptor");
    for &i in &stubs[1..] {
        with(i, &mut |p| p.try_wait_n("received z from alpha", 1))?;
    }

    let line = with(stubs[2], &mut |p| p.try_wait_n("apps on ", 1))?;
    let app = line.trim_start_matches("apps on ").trim().to_owned();
    step(&format!(
        "an app connects to gamma ({app}) and calls z, which runs on alpha"
    ));
    calls(&app).map_err(|e| format!("a call failed: {e}"))?;

    step("the server's shell: _end_ (every stub is told and exits)");
    with(server, &mut |p| {
        p.send("_end_");
        Ok(String::new())
    })?;
    let mut c = children.lock().expect("not poisoned");
    for p in c.iter_mut() {
        let status = p.wait_exit();
        if !status.success() {
            return Err(format!("{} exited with {status}", p.name));
        }
    }
    Ok(())
}

fn calls(app: &str) -> Result<(), CallError> {
    let client = Client::connect(app)?;
    let show = |what: &str, r: Result<serde_json::Value, CallError>| match r {
        Ok(v) => show(format_args!("    {what} = {v}")),
        Err(e) => show(format_args!(
            "    {what} -> {}",
            printable_lines(&e.to_string())
        )),
    };
    show("z.add_prams(1, 2)", client.call("z", "add_prams", (1, 2)));
    show("z.div_prams(1, 2)", client.call("z", "div_prams", (1, 2)));
    show("z.div_prams(1, 0)", client.call("z", "div_prams", (1, 0)));
    let kwargs = json!({"punctuation": "?"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    show(
        "z.greet('stubnet', punctuation='?')",
        client.call_with("z", "greet", ("stubnet",), kwargs, None),
    );
    show(
        "z.stats([1, 2, 3, 4])",
        client.call("z", "stats", (vec![1, 2, 3, 4],)),
    );
    show("z.nope()", client.call("z", "nope", ()));
    let half_a_second = Some(Duration::from_millis(500));
    let slow = client.call_with("z", "slow", (60,), Map::new(), half_a_second);
    show("z.slow(60), waiting at most 0.5 s", slow);
    // alpha interrupts the call at its timeout: the next one does not wait the minute out.
    let started = Instant::now();
    let next = client.call("z", "add_prams", (2, 3));
    let after = started.elapsed().as_millis();
    show(
        &format!("z.add_prams(2, 3), right after ({after} ms)"),
        next,
    );
    client.call("z", "add_prams", (1, 2)).map(|_| ())
}

/// The checkout: the working directory if it has the profiles, else where this was built from.
fn repo_root() -> Result<PathBuf, String> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    [PathBuf::from("."), built]
        .into_iter()
        .find(|d| d.join("conf/server.toml").is_file())
        .and_then(|d| d.canonicalize().ok())
        .ok_or_else(|| {
            "cannot find conf/server.toml: run the demo from the stubnet checkout".into()
        })
}

/// The directory holding `server_stub` and `client_stub`, built first when run through cargo.
fn binaries() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me
        .parent()
        .ok_or("no directory for this program")?
        .to_path_buf();
    if let Ok(cargo) = std::env::var("CARGO") {
        step("building server_stub and client_stub");
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "server_stub", "-p", "client_stub"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("building the stubs failed".into());
        }
    }
    for exe in ["server_stub", "client_stub"] {
        if !dir.join(exe).is_file() {
            return Err(format!(
                "{} is missing: cargo build --workspace",
                dir.join(exe).display()
            ));
        }
    }
    Ok(dir)
}
