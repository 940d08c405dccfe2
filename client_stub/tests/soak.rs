//! Every call gets exactly one answer: apps call without pause while the owner and then the
//! server are killed with SIGKILL and restarted. Each call must end in a correct result or an
//! error that says why; none may be left to its timeout. `SOAK_SECONDS` sets the length
//! (default 8, the short form CI runs).

mod harness;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::app::{CallError, Client};
use harness::*;
use serde_json::json;

#[derive(Default, Debug)]
struct Tally {
    issued: u64,
    ok: u64,
    wrong: u64,
    failed: BTreeMap<String, u64>,
    /// Calls that ended by their own timeout: an answer that never came.
    unanswered: u64,
    /// Calls answered correctly after the last restart.
    ok_at_end: u64,
}

fn kind(e: &CallError) -> &'static str {
    match e {
        CallError::NotConnected(_) => "not connected",
        CallError::OwnerGone(_) => "owner gone",
        CallError::UnknownModule(_) => "module not (yet) known",
        CallError::Failed(_) => "worker failed",
        CallError::Exception { .. } => "exception",
        CallError::TooLarge(_) => "too large",
        _ => "other",
    }
}

#[test]
fn every_call_gets_exactly_one_answer_while_owner_and_server_are_killed() {
    let secs: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let phase = Duration::from_secs(secs) / 4;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let profile = dir.join("server.toml");
    std::fs::write(&profile, "[limits]\nheartbeat_ms = 300\n").unwrap();
    let (mut server, port) = server(&dir, &["-c", profile.to_str().unwrap()]);
    let m = dir.join("m.py");
    std::fs::write(&m, "def add(a, b):\n    return a + b\n").unwrap();
    let m = m.to_str().unwrap().to_owned();
    let mut owner = stub(&dir, port, "a", &["--register", &m]);
    let caller = stub(&dir, port, "b", &[]);
    caller.wait_for("received m from a");
    let app_addr = format!("127.0.0.1:{}", app_port(&caller));

    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let apps: Vec<_> = (0..4)
        .map(|t| {
            let (stop, restarted, tally) = (stop.clone(), restarted.clone(), tally.clone());
            let client = Client::connect(&app_addr)
                .unwrap()
                .with_timeout(Duration::from_secs(20));
            std::thread::spawn(move || {
                let mut i = t * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let result = client.call("m", "add", (i, 1));
                    let mut t = tally.lock().unwrap();
                    t.issued += 1;
                    match result {
                        Ok(v) if v == json!(i + 1) => {
                            t.ok += 1;
                            t.ok_at_end += restarted.load(Ordering::Relaxed) as u64;
                        }
                        Ok(_) => t.wrong += 1,
                        Err(CallError::Timeout(_)) => t.unanswered += 1,
                        Err(e) => {
                            *t.failed.entry(kind(&e).to_owned()).or_default() += 1;
                            drop(t);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    }
                }
            })
        })
        .collect();

    let start = Instant::now();
    std::thread::sleep(phase);
    owner.kill();
    server.wait_for("left: a");
    owner = stub(&dir, port, "a", &["--register", &m]);
    owner.wait_for("registered m");
    std::thread::sleep(phase);
    server.kill();
    let p = port.to_string();
    let profile = profile.to_str().unwrap();
    let server = Proc::start(
        "server2",
        &exe("server_stub"),
        &["-p", &p, "-c", profile, "-d", "server"],
        &dir,
    );
    server.wait_for("listening on");
    owner.wait_n("registered m", 2);
    caller.wait_for("m from a: cached copy is current");
    restarted.store(true, Ordering::Relaxed);
    std::thread::sleep(phase * 2);
    stop.store(true, Ordering::Relaxed);
    for app in apps {
        app.join().unwrap();
    }

    let t = tally.lock().unwrap();
    let failed: u64 = t.failed.values().sum();
    eprintln!(
        "soak {:?}: issued {}, answered {}, failed with a reason {} {:?}, unanswered {}, wrong {}",
        start.elapsed(),
        t.issued,
        t.ok,
        failed,
        t.failed,
        t.unanswered,
        t.wrong
    );
    assert_eq!(t.issued, t.ok + t.wrong + failed + t.unanswered);
    assert_eq!(t.unanswered, 0, "{t:?}");
    assert_eq!(t.wrong, 0, "{t:?}");
    assert!(
        t.ok_at_end > 0,
        "calls work again after the restarts: {t:?}"
    );
}
