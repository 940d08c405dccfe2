//! The clients: profile errors, the frame limit, and against fake stubs, timeouts, closed
//! connections and answers in any order.

use super::*;
use crate::conn::DEFAULT_MAX_FRAME;
use serde_json::Map;
use smol::future::zip;
use std::io::{BufRead, BufReader, Write};
use std::time::Instant;

#[test]
fn a_profile_whose_app_port_is_any_free_port_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.toml");
    std::fs::write(&path, "app_port = 0\n").unwrap();
    let path = path.to_str().unwrap();
    let Err(e) = Client::connect_profile(path) else {
        panic!("connected to port 0")
    };
    assert!(
        matches!(&e, CallError::Profile(m) if m.contains("has app_port = 0")),
        "{e}"
    );
    // A port given with it is used instead.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(Client::connect_profile_on(path, Some(port)).is_ok());
}

#[test]
fn a_bad_profile_is_a_profile_error_naming_its_file_and_the_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.toml");
    for (text, fault) in [
        ("app_port = \"x\"\n", "invalid type"),
        ("nmae = 1\n", "nmae"),
    ] {
        std::fs::write(&path, text).unwrap();
        let Err(e) = Client::connect_profile(path.to_str().unwrap()) else {
            panic!("connected with {text}")
        };
        let CallError::Profile(m) = &e else {
            panic!("not a profile error: {e:?}")
        };
        assert!(
            m.contains(&path.display().to_string()) && m.contains(fault),
            "{m}"
        );
        assert!(!e.to_string().contains("not connected"), "{e}");
    }
}

#[test]
fn a_reply_cut_by_a_timeout_does_not_garble_the_next_call() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stub = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut requests = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        requests.read_line(&mut line).unwrap();
        s.write_all(br#"{"cmd":"reply","data":{"id":1,"#).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        s.write_all(b"\"result\":{\"Ok\":1}}}\n").unwrap();
        requests.read_line(&mut line).unwrap();
        s.write_all(b"{\"cmd\":\"reply\",\"data\":{\"id\":2,\"result\":{\"Ok\":2}}}\n")
            .unwrap();
    });
    let client = Client::connect(&addr).unwrap();
    let first = client.call_with("m", "f", (), Map::new(), Some(Duration::from_millis(100)));
    assert!(matches!(first, Err(CallError::Timeout(_))), "{first:?}");
    assert_eq!(client.call("m", "f", ()).unwrap(), serde_json::json!(2));
    stub.join().unwrap();
}

#[test]
fn arguments_over_the_frame_limit_fail_before_they_are_sent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let client = Client::connect(&addr).unwrap();
    let big = "x".repeat(DEFAULT_MAX_FRAME);
    match client.call("m", "f", (big,)) {
        Err(CallError::TooLarge(m)) => assert!(m.contains("frame limit of 4194304"), "{m}"),
        other => panic!("{other:?}"),
    }
}

/// A fake stub on a thread: reads `requests` lines, then runs `answer` on the socket.
fn fake_stub(
    requests: usize,
    answer: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stub = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut lines = BufReader::new(s.try_clone().unwrap());
        for _ in 0..requests {
            lines.read_line(&mut String::new()).unwrap();
        }
        answer(s);
    });
    (addr, stub)
}

#[test]
fn an_answer_with_data_before_cmd_is_read() {
    let answer = |mut s: std::net::TcpStream| {
        s.write_all(b"{\"data\":{\"id\":1,\"result\":{\"Ok\":[1, 2]}},\"cmd\":\"reply\"}\n")
            .unwrap();
    };
    let (addr, stub) = fake_stub(1, answer);
    let client = Client::connect(&addr).unwrap();
    assert_eq!(
        client.call("m", "f", ()).unwrap(),
        serde_json::json!([1, 2])
    );
    stub.join().unwrap();
    let (addr, stub) = fake_stub(1, answer);
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let result = client.call("m", "f", ()).await;
        assert_eq!(result.unwrap(), serde_json::json!([1, 2]));
    });
    stub.join().unwrap();
}

#[test]
fn a_call_timing_out_while_it_reads_for_others_passes_the_reading_on() {
    let (addr, stub) = fake_stub(2, |mut s| {
        std::thread::sleep(Duration::from_millis(300));
        for id in [2, 1] {
            let reply = format!(
                "{{\"cmd\":\"reply\",\"data\":{{\"id\":{id},\"result\":{{\"Ok\":{id}}}}}}}\n"
            );
            s.write_all(reply.as_bytes()).unwrap();
        }
    });
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        // The first call waits first, so it holds the reader when its timeout cuts it.
        let short = Some(Duration::from_millis(100));
        let first = client.call_with("m", "f", (), Map::new(), short);
        let second = client.call("m", "f", ());
        let (first, second) = zip(first, second).await;
        assert!(matches!(first, Err(CallError::Timeout(_))), "{first:?}");
        assert_eq!(second.unwrap(), serde_json::json!(2));
    });
    stub.join().unwrap();
}

#[test]
fn a_later_call_with_a_shorter_timeout_times_out_on_time() {
    let (addr, stub) = fake_stub(2, |mut s| {
        std::thread::sleep(Duration::from_millis(800));
        s.write_all(b"{\"cmd\":\"reply\",\"data\":{\"id\":1,\"result\":{\"Ok\":1}}}\n")
            .unwrap();
    });
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        // The first call holds the reader, its timer set for its own (distant) deadline.
        let first = client.call("m", "f", ());
        let second = async {
            smol::Timer::after(Duration::from_millis(50)).await;
            let started = Instant::now();
            let short = Some(Duration::from_millis(100));
            let result = client.call_with("m", "f", (), Map::new(), short).await;
            (result, started.elapsed())
        };
        let (first, (second, waited)) = zip(first, second).await;
        assert!(matches!(second, Err(CallError::Timeout(_))), "{second:?}");
        assert!(
            waited < Duration::from_millis(600),
            "timed out after {waited:?}"
        );
        assert_eq!(first.unwrap(), serde_json::json!(1));
    });
    stub.join().unwrap();
}

#[test]
fn the_stub_closing_fails_every_waiting_call_at_once() {
    let (addr, stub) = fake_stub(3, drop);
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let started = Instant::now();
        let call = || client.call("m", "f", ());
        let (a, (b, c)) = zip(call(), zip(call(), call())).await;
        for result in [a, b, c] {
            assert!(
                matches!(result, Err(CallError::NotConnected(_))),
                "{result:?}"
            );
        }
        assert!(started.elapsed() < DEFAULT_TIMEOUT / 2);
        let later = client.call("m", "f", ()).await;
        assert!(
            matches!(later, Err(CallError::NotConnected(_))),
            "{later:?}"
        );
    });
    stub.join().unwrap();
}

/// A fake stub that closes its first connection at its first request (as a stub stopping does),
/// then answers the first request of its second connection, call 2, with `2`.
fn restarting_stub() -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stub = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        BufReader::new(&s).read_line(&mut String::new()).unwrap();
        drop(s);
        let (mut s, _) = listener.accept().unwrap();
        BufReader::new(&s).read_line(&mut String::new()).unwrap();
        s.write_all(b"{\"cmd\":\"reply\",\"data\":{\"id\":2,\"result\":{\"Ok\":2}}}\n")
            .unwrap();
    });
    (addr, stub)
}

#[test]
fn after_the_stub_closed_the_connection_the_next_call_connects_again() {
    let closed =
        |r: &Result<serde_json::Value, CallError>| matches!(r, Err(CallError::NotConnected(_)));
    let (addr, stub) = restarting_stub();
    let client = Client::connect(&addr).unwrap();
    let first = client.call("m", "f", ());
    assert!(closed(&first), "{first:?}");
    assert_eq!(client.call("m", "f", ()).unwrap(), serde_json::json!(2));
    stub.join().unwrap();
    let (addr, stub) = restarting_stub();
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let first = client.call("m", "f", ()).await;
        assert!(closed(&first), "{first:?}");
        let second = client.call("m", "f", ()).await;
        assert_eq!(second.unwrap(), serde_json::json!(2));
    });
    stub.join().unwrap();
}

/// Waits until the app's socket at loopback port `port` has seen its peer close the connection
/// (in CLOSE_WAIT, as /proc/net/tcp tells): an app that then calls must know it, without the
/// test relying on when the kernel delivers the close.
fn wait_until_closed_on(port: u16) {
    let local = format!(":{port:04X}");
    for _ in 0..2000 {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let close_wait = table.lines().any(|row| {
            let fields: Vec<&str> = row.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "08"
        });
        if close_wait {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the app's socket on port {port} never saw the close");
}

/// A fake stub restarted between two calls: it answers the first request of its first
/// connection (once told by the sender returned, if `late`), closes it and tells (by the
/// receiver returned) once the app's socket has seen that, then answers the first request of
/// its second connection. Its thread returns the ids of the requests it read.
fn stub_restarted_between_calls(
    late: bool,
) -> (
    String,
    std::sync::mpsc::Sender<()>,
    std::sync::mpsc::Receiver<()>,
    std::thread::JoinHandle<Vec<u64>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (go, told) = std::sync::mpsc::channel();
    let (closed, seen) = std::sync::mpsc::channel();
    let stub = std::thread::spawn(move || {
        let mut ids = Vec::new();
        for connection in 0..2 {
            let (mut s, app) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            ids.push(id_of(&line));
            if late && connection == 0 {
                told.recv().unwrap();
            }
            s.write_all(&reply(id_of(&line))).unwrap();
            if connection == 0 {
                drop(s);
                wait_until_closed_on(app.port());
                closed.send(()).unwrap();
            }
        }
        ids
    });
    (addr, go, seen, stub)
}

/// A stub restarted while the app was between calls failed the app's next call ("the stub
/// closed the connection", written on the old connection): only the call after connected
/// again. Now the call sees the connection closed before writing and connects again itself.
#[test]
fn a_call_after_the_stub_restarted_between_calls_connects_again_and_is_answered() {
    let (addr, _go, closed, stub) = stub_restarted_between_calls(false);
    let client = Client::connect(&addr).unwrap();
    assert_eq!(client.call("m", "f", ()), Ok(serde_json::json!(1)));
    closed.recv().unwrap();
    assert_eq!(client.call("m", "f", ()), Ok(serde_json::json!(2)));
    assert_eq!(stub.join().unwrap(), [1, 2]);
    let (addr, _go, closed, stub) = stub_restarted_between_calls(false);
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        assert_eq!(client.call("m", "f", ()).await, Ok(serde_json::json!(1)));
        closed.recv().unwrap();
        assert_eq!(client.call("m", "f", ()).await, Ok(serde_json::json!(2)));
    });
    assert_eq!(stub.join().unwrap(), [1, 2]);
    // The stub's close behind the late answer to a call that timed out, unread.
    let (addr, go, closed, stub) = stub_restarted_between_calls(true);
    let client = Client::connect(&addr).unwrap();
    let short = Some(Duration::from_millis(100));
    let late = client.call_with("m", "f", (), Map::new(), short);
    assert!(matches!(late, Err(CallError::Timeout(_))), "{late:?}");
    go.send(()).unwrap();
    closed.recv().unwrap();
    assert_eq!(client.call("m", "f", ()), Ok(serde_json::json!(2)));
    assert_eq!(stub.join().unwrap(), [1, 2]);
}

#[test]
fn answers_in_any_order_reach_their_calls_while_others_time_out() {
    const CALLS: u64 = 300;
    // Answers each request (its result is its id), in bursts, the last of a burst first.
    let (addr, stub) = fake_stub(0, |s| {
        let mut lines = BufReader::new(s.try_clone().unwrap());
        let mut out = s;
        let (mut burst, mut line) = (Vec::new(), String::new());
        while lines.read_line(&mut line).unwrap() > 0 {
            let at = line.find("\"id\":").unwrap() + 5;
            let id: u64 = line[at..].split(',').next().unwrap().parse().unwrap();
            line.clear();
            burst.push(id);
            if burst.len() == 7 || id == CALLS {
                std::thread::sleep(Duration::from_millis(2));
                for id in burst.drain(..).rev() {
                    let reply = format!("{{\"cmd\":\"reply\",\"data\":{{\"id\":{id},\"result\":{{\"Ok\":{id}}}}}}}\n");
                    out.write_all(reply.as_bytes()).unwrap();
                }
            }
        }
    });
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let ex = smol::LocalExecutor::new();
        let calls: Vec<_> = (1..=CALLS)
            .map(|id| {
                // Every fifth call gives up at once, wherever it is: often holding the reader.
                let timeout = Duration::from_millis(if id % 5 == 0 { 1 } else { 10_000 });
                let call = client.call_with("m", "f", (), Map::new(), Some(timeout));
                ex.spawn(async move { (id, call.await) })
            })
            .collect();
        let timed_out = ex
            .run(async {
                let mut timed_out = 0;
                for call in calls {
                    match call.await {
                        (id, Err(CallError::Timeout(_))) if id % 5 == 0 => timed_out += 1,
                        (id, answer) => assert_eq!(answer.unwrap(), serde_json::json!(id)),
                    }
                }
                timed_out
            })
            .await;
        assert!(timed_out > 0, "no call timed out: the test tested nothing");
    });
    stub.join().unwrap();
}

#[test]
fn a_timeout_too_long_for_a_clock_waits_as_long_as_one_can() {
    // Duration::MAX ("no timeout"), and 2^61 s, whose milliseconds wrap to 0 in 64 bits.
    for timeout in [Duration::MAX, Duration::from_secs(1 << 61)] {
        let answer = |mut s: std::net::TcpStream| {
            s.write_all(b"{\"cmd\":\"reply\",\"data\":{\"id\":1,\"result\":{\"Ok\":1}}}\n")
                .unwrap();
        };
        let (addr, stub) = fake_stub(1, answer);
        let client = Client::connect(&addr).unwrap().with_timeout(timeout);
        assert_eq!(client.call("m", "f", ()).unwrap(), serde_json::json!(1));
        stub.join().unwrap();
        let (addr, stub) = fake_stub(1, answer);
        smol::block_on(async {
            let client = AsyncClient::connect(&addr).await.unwrap();
            let one = client.call_with("m", "f", (), Map::new(), Some(timeout));
            assert_eq!(one.await.unwrap(), serde_json::json!(1));
        });
        stub.join().unwrap();
        // What the stub is told: the longest timeout it reads, not the milliseconds wrapped.
        let requests = requests::Requests::new();
        let request = requests
            .call("m", "f", (), Map::new(), Some(timeout))
            .unwrap();
        let line = String::from_utf8(request.line).unwrap();
        assert!(
            line.contains(r#""timeout_ms":18446744073709551615"#),
            "{line}"
        );
    }
}

/// A request several times what the sockets between an app and its stub hold (a few MB).
const LARGE: usize = 24_000_000;

/// The reply to call `id`, whose result is `id`.
fn reply(id: u64) -> Vec<u8> {
    format!("{{\"cmd\":\"reply\",\"data\":{{\"id\":{id},\"result\":{{\"Ok\":{id}}}}}}}\n")
        .into_bytes()
}

/// The id of a request line.
fn id_of(line: &str) -> u64 {
    let at = line.find("\"id\":").unwrap() + 5;
    line[at..]
        .split([',', '}'])
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_request_cut_short_by_its_timeout_ends_the_connection_and_the_next_call_connects_again() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (go, told) = std::sync::mpsc::channel();
    let stub = std::thread::spawn(move || {
        let (first, _) = listener.accept().unwrap();
        // Nothing read until the large call timed out (or one that hangs has had 20 s).
        let _ = told.recv_timeout(Duration::from_secs(20));
        first
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // What came on the first connection: the start of the large request, then its end.
        let mut came = Vec::new();
        std::io::Read::read_to_end(&mut &first, &mut came).unwrap();
        let (mut second, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&second).read_line(&mut line).unwrap();
        second.write_all(&reply(id_of(&line))).unwrap();
        came
    });
    let client = Client::connect(&addr).unwrap().with_max_frame(LARGE * 2);
    let short = Some(Duration::from_millis(300));
    let large = client.call_with("m", "f", ("x".repeat(LARGE),), Map::new(), short);
    assert!(
        matches!(&large, Err(CallError::Timeout(m)) if m.contains("not sent within 300ms")),
        "{large:?}"
    );
    go.send(()).unwrap();
    assert_eq!(client.call("m", "f", ()), Ok(serde_json::json!(2)));
    let came = stub.join().unwrap();
    assert!(
        !came.is_empty() && came.len() < LARGE,
        "{} bytes",
        came.len()
    );
}

/// A fake stub that reads nothing until told (by the sender returned), then reads as many
/// requests as `ids` and answers each with its id; its thread checks that they had those ids.
fn stub_reading_when_told(
    ids: &'static [u64],
) -> (
    std::sync::mpsc::Sender<()>,
    String,
    std::thread::JoinHandle<()>,
) {
    let (go, told) = std::sync::mpsc::channel();
    let (addr, stub) = fake_stub(0, move |s| {
        told.recv().unwrap();
        let mut lines = BufReader::new(&s);
        let mut read = Vec::new();
        for _ in ids {
            let mut line = String::new();
            lines.read_line(&mut line).unwrap();
            read.push(id_of(&line));
            (&s).write_all(&reply(id_of(&line))).unwrap();
        }
        assert_eq!(read, ids, "the requests read");
    });
    (go, addr, stub)
}

#[test]
fn a_late_calls_request_not_yet_begun_is_not_sent() {
    // It reads nothing until the small call timed out.
    let (go, addr, stub) = stub_reading_when_told(&[1, 3]);
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let client = client.with_max_frame(LARGE * 2);
        let long = Some(Duration::from_secs(20));
        // First, so that its request fills the socket: the small one waits behind it, unsent.
        let large = client.call_with("m", "f", ("x".repeat(LARGE),), Map::new(), long);
        let then = async {
            let short = Some(Duration::from_millis(100));
            let late = client.call_with("m", "f", (), Map::new(), short).await;
            go.send(()).unwrap();
            (late, client.call("m", "f", ()).await)
        };
        let (large, (late, next)) = zip(large, then).await;
        let unsent = "m.f: not sent within 100ms (the stub did not take it: it is not \
                      reading, or is still reading what was written before it)";
        assert!(
            matches!(&late, Err(CallError::Timeout(m)) if m == unsent),
            "{late:?}"
        );
        assert_eq!(large, Ok(serde_json::json!(1)));
        assert_eq!(next, Ok(serde_json::json!(3)));
    });
    stub.join().unwrap();
}

#[test]
fn requests_taken_out_unwritten_are_freed_and_the_calls_between_them_still_go_whole() {
    // It reads nothing until the late calls are over.
    let (go, addr, stub) = stub_reading_when_told(&[1, 3, 45]);
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let client = client.with_max_frame(LARGE * 2);
        let (long, short) = (
            Some(Duration::from_secs(20)),
            Some(Duration::from_millis(50)),
        );
        let mega = || ("x".repeat(1 << 20),);
        // First, so that its request fills the socket: the others wait behind it, unsent.
        let large = client.call_with("m", "f", ("x".repeat(LARGE),), Map::new(), long);
        let then = async {
            let late = client.call_with("m", "f", mega(), Map::new(), short).await;
            assert!(matches!(late, Err(CallError::Timeout(_))), "{late:?}");
            // Two calls queued behind that one, which the late ones behind them free: one
            // answered, one dropped (its request, moved, is taken out).
            let mut kept = Box::pin(client.call_with("m", "f", mega(), Map::new(), long));
            let mut dropped = Box::pin(client.call_with("m", "f", mega(), Map::new(), long));
            assert!(smol::future::poll_once(&mut kept).await.is_none());
            assert!(smol::future::poll_once(&mut dropped).await.is_none());
            for _ in 0..40 {
                let late = client.call_with("m", "f", mega(), Map::new(), short).await;
                assert!(matches!(late, Err(CallError::Timeout(_))), "{late:?}");
            }
            drop(dropped);
            go.send(()).unwrap();
            (kept.await, client.call("m", "f", ()).await)
        };
        let (large, (kept, next)) = zip(large, then).await;
        assert_eq!(large, Ok(serde_json::json!(1)));
        assert_eq!(kept, Ok(serde_json::json!(3)));
        assert_eq!(next, Ok(serde_json::json!(45)));
    });
    stub.join().unwrap();
}

/// Connections to `listener` until one is not accepted within half a second: its accept backlog
/// is full (the kernel drops the next SYNs), as a stopped stub's becomes. The connections, kept
/// open.
pub(crate) fn fill_backlog(listener: &std::net::TcpListener) -> Vec<std::net::TcpStream> {
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
        held.push(s);
        assert!(held.len() < 100_000, "the backlog never filled");
    }
    held
}

#[test]
fn a_call_that_cannot_connect_again_ends_at_its_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let client = Client::connect(&addr).unwrap();
    let async_client = smol::block_on(AsyncClient::connect(&addr)).unwrap();
    // Both connections end, as when a stub stops; its backlog then fills. The next calls see
    // the connections closed, and connect again.
    for _ in 0..2 {
        let (ended, app) = listener.accept().unwrap();
        drop(ended);
        wait_until_closed_on(app.port());
    }
    let _held = fill_backlog(&listener);
    let short = Some(Duration::from_millis(300));
    let told = format!("m.f: could not connect to the stub at {addr} within 300ms");
    let late = client.call_with("m", "f", (), Map::new(), short);
    assert_eq!(late, Err(CallError::Timeout(told.clone())));
    let late = smol::block_on(async_client.call_with("m", "f", (), Map::new(), short));
    assert_eq!(late, Err(CallError::Timeout(told)));
}

/// A peer that trickles bytes and never ends the line (the wrong program on the port) held a
/// blocking call past its timeout, its line growing without end: now the call ends at its
/// timeout, for both clients, and a line over the frame limit ends the connection.
#[test]
fn a_line_that_never_ends_neither_holds_a_call_past_its_timeout_nor_grows_past_the_limit() {
    let trickle = |mut s: std::net::TcpStream| {
        while s.write_all(b"x").is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let short = Some(Duration::from_millis(300));
    let (addr, _stub) = fake_stub(1, trickle);
    let client = Client::connect(&addr).unwrap();
    let late = client.call_with("m", "f", (), Map::new(), short);
    assert!(matches!(late, Err(CallError::Timeout(_))), "{late:?}");
    let (addr, _stub) = fake_stub(1, trickle);
    let late = smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        client.call_with("m", "f", (), Map::new(), short).await
    });
    assert!(matches!(late, Err(CallError::Timeout(_))), "{late:?}");
    // A flood: the line passes the limit long before the call's timeout.
    let (addr, _stub) = fake_stub(1, |mut s| while s.write_all(&[b'x'; 4096]).is_ok() {});
    let client = Client::connect(&addr).unwrap().with_max_frame(100_000);
    let ended = client.call_with("m", "f", (), Map::new(), Some(Duration::from_secs(60)));
    let told = "the stub sent a line over the frame limit of 100000 bytes (with_max_frame)";
    assert_eq!(ended, Err(CallError::NotConnected(told.into())));
}

/// The `args` of a request line.
fn args_of(line: &[u8]) -> serde_json::Value {
    let request: serde_json::Value = serde_json::from_slice(line).unwrap();
    request["data"]["args"].clone()
}

/// NaN and the infinities, which serde_json prints as null, went as null: the function ran on
/// None. Now the call is refused naming the argument, and nothing is sent; the stub reads the
/// next call.
#[test]
fn an_argument_holding_nan_or_an_infinity_is_refused_before_anything_is_sent() {
    #[derive(serde::Serialize)]
    struct Point {
        x: f64,
        y: Option<f32>,
    }
    let requests = requests::Requests::new();
    let refused = |args: &dyn erased::Args| refused(&requests, args);
    let told = |what: &str| {
        format!("m.f: {what}: JSON carries finite numbers only (serde_json would send null)")
    };
    assert_eq!(refused(&(f64::NAN,)), told("argument 1 is NaN"));
    assert_eq!(refused(&f64::NAN), told("argument 1 is NaN"));
    assert_eq!(refused(&(1, f64::INFINITY)), told("argument 2 is inf"));
    assert_eq!(
        refused(&vec![f32::NEG_INFINITY]),
        told("argument 1 is -inf")
    );
    let nested = (None::<i64>, vec![0.5, f64::NAN]);
    assert_eq!(refused(&nested), told("argument 2 holds NaN"));
    let point = Point {
        x: 1.0,
        y: Some(f32::NAN),
    };
    assert_eq!(refused(&(point,)), told("argument 1 holds NaN"));
    // Finite floats and nulls go as they are; `()` (a lone null) is no arguments.
    let fine = requests.call("m", "f", (0.5, None::<i64>, -0.0), Map::new(), None);
    assert_eq!(
        args_of(&fine.unwrap().line),
        serde_json::json!([0.5, null, -0.0])
    );
    let none = requests.call("m", "f", (), Map::new(), None);
    assert_eq!(args_of(&none.unwrap().line), serde_json::json!([]));
    // Through both clients, to a stub that reads (and answers) only what is sent.
    let (addr, stub) = stub_answering_the_first_call_of_each_of_two_connections(|line| {
        assert_eq!(args_of(line.as_bytes()), serde_json::json!([1.5]), "{line}")
    });
    let client = Client::connect(&addr).unwrap();
    let nan = client.call("m", "f", (f64::NAN,));
    assert_eq!(nan, Err(CallError::BadArguments(told("argument 1 is NaN"))));
    assert_eq!(client.call("m", "f", (1.5,)), Ok(serde_json::json!(1)));
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let inf = client.call("m", "f", (f64::INFINITY,)).await;
        assert_eq!(inf, Err(CallError::BadArguments(told("argument 1 is inf"))));
        assert_eq!(
            client.call("m", "f", (1.5,)).await,
            Ok(serde_json::json!(1))
        );
    });
    stub.join().unwrap();
}

/// An i128 or u128 past 64 bits went whole, and reached a program reading `Value` (every
/// stub, most apps) as an approximate float. Now it is refused as Python's worker refuses it;
/// one that fits 64 bits goes, as do long numbers in strings.
#[test]
fn an_argument_holding_an_integer_beyond_64_bits_is_refused() {
    let requests = requests::Requests::new();
    let refused = |args: &dyn erased::Args| refused(&requests, args);
    let told = |what: &str| {
        format!(
            "m.f: {what}: JSON between stubs carries integers from -2**63 to 2**64-1 exactly \
             (a larger one reaches most programs as an approximate float): send it as a string"
        )
    };
    let past = u64::MAX as u128 + 1;
    assert_eq!(
        refused(&(past,)),
        told("argument 1 is 18446744073709551616")
    );
    let below = i64::MIN as i128 - 1;
    assert_eq!(
        refused(&(1, vec![below])),
        told("argument 2 holds -9223372036854775809")
    );
    let fine = (
        u64::MAX as u128,
        i64::MIN as i128,
        "123456789012345678901234",
    );
    let line = requests
        .call("m", "f", fine, Map::new(), None)
        .unwrap()
        .line;
    assert_eq!(
        args_of(&line),
        serde_json::json!([u64::MAX, i64::MIN, "123456789012345678901234"])
    );
}

/// Why `args` are refused (`BadArguments`) before anything is sent.
fn refused(requests: &requests::Requests, args: &dyn erased::Args) -> String {
    match args.call(requests) {
        Err(CallError::BadArguments(m)) => m,
        other => panic!(
            "not refused: {:?}",
            other.map(|r| String::from_utf8(r.line))
        ),
    }
}

/// Arguments of any type, for a table of calls.
mod erased {
    pub(super) trait Args {
        fn call(
            &self,
            requests: &super::requests::Requests,
        ) -> Result<super::requests::Request, super::CallError>;
    }

    impl<T: serde::Serialize> Args for T {
        fn call(
            &self,
            requests: &super::requests::Requests,
        ) -> Result<super::requests::Request, super::CallError> {
            requests.call("m", "f", self, serde_json::Map::new(), None)
        }
    }
}

/// A zero timeout failed as "not sent within 0ns (the stub is not reading)", and one under a
/// millisecond told the stub 0 ms, which it takes as expired. Now a zero timeout is refused
/// before anything is sent, and the stub is told the timeout in milliseconds rounded up; one
/// that ends before the request could be written is not blamed on the stub.
#[test]
fn a_zero_timeout_is_refused_and_one_under_a_millisecond_is_told_the_stub_as_one() {
    let told = "m.f: a timeout of 0 leaves the call no time: give one above 0";
    let requests = requests::Requests::new();
    let zero = requests.call("m", "f", (), Map::new(), Some(Duration::ZERO));
    assert_eq!(zero.err(), Some(CallError::BadArguments(told.into())));
    for (timeout, ms) in [
        (Duration::from_nanos(1), 1),
        (Duration::from_micros(1500), 2),
    ] {
        let request = requests
            .call("m", "f", (), Map::new(), Some(timeout))
            .unwrap();
        let line: serde_json::Value = serde_json::from_slice(&request.line).unwrap();
        assert_eq!(line["data"]["timeout_ms"], ms, "{timeout:?}");
    }
    // Through both clients, to a stub that reads (and answers) only what is sent.
    let (addr, stub) = stub_answering_the_first_call_of_each_of_two_connections(|line| {
        assert!(line.contains(r#""timeout_ms":30000"#), "{line}")
    });
    let zero = Some(Duration::ZERO);
    let client = Client::connect(&addr).unwrap();
    let refused = client.call_with("m", "f", (), Map::new(), zero);
    assert_eq!(refused, Err(CallError::BadArguments(told.into())));
    // Over before its first byte could be written: not blamed on the stub.
    let tiny = client.call_with("m", "f", (), Map::new(), Some(Duration::from_nanos(1)));
    let unsent =
        "m.f: not sent within 1ns (a timeout under a millisecond ended before it could be written)";
    assert_eq!(tiny, Err(CallError::Timeout(unsent.into())));
    // (The stub answers with the id, which the unsent call took.)
    assert_eq!(client.call("m", "f", ()), Ok(serde_json::json!(2)));
    smol::block_on(async {
        let client = AsyncClient::connect(&addr).await.unwrap();
        let refused = client.call_with("m", "f", (), Map::new(), zero).await;
        assert_eq!(refused, Err(CallError::BadArguments(told.into())));
        assert_eq!(client.call("m", "f", ()).await, Ok(serde_json::json!(1)));
    });
    stub.join().unwrap();
}

/// A fake stub that reads the first request of each of two connections, checks it with
/// `check`, and answers it with its id.
fn stub_answering_the_first_call_of_each_of_two_connections(
    check: impl Fn(&str) + Send + 'static,
) -> (String, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stub = std::thread::spawn(move || {
        for _ in 0..2 {
            let (s, _) = listener.accept().unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            check(&line);
            (&s).write_all(&reply(id_of(&line))).unwrap();
        }
    });
    (addr, stub)
}
