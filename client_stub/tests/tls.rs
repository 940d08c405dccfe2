//! TLS between stubs and the server, with a certificate made by `server_stub gen-cert`.

mod harness;

use common::app::Client;
use harness::*;
use serde_json::json;

#[test]
fn stubs_speak_tls_to_the_server_and_strangers_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut gen = Proc::start(
        "gen-cert",
        &exe("server_stub"),
        &["gen-cert", "--dir", "tls"],
        dir,
    );
    assert!(gen.wait_exit().success());
    gen.wait_for("wrote");
    let mut other = Proc::start(
        "gen-other",
        &exe("server_stub"),
        &["gen-cert", "--dir", "other"],
        dir,
    );
    assert!(other.wait_exit().success());
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the key is private");

    let (server, port) = server(
        dir,
        &["--tls-cert", "tls/cert.pem", "--tls-key", "tls/key.pem"],
    );
    server.wait_for("every connection uses TLS");
    let m = dir.join("m.py");
    std::fs::write(&m, "def add(a, b):\n    return a + b\n").unwrap();
    let ca = ["--tls-ca", "tls/cert.pem", "--tls-name", "localhost"];
    let mut owner_args = ca.to_vec();
    owner_args.extend(["--register", m.to_str().unwrap()]);
    let owner = stub(dir, port, "a", &owner_args);
    owner.wait_for("registered m");
    let caller = stub(dir, port, "b", &ca);
    caller.wait_for("received m from a");
    let app = Client::connect(&format!("127.0.0.1:{}", app_port(&caller))).unwrap();
    assert_eq!(app.call("m", "add", (20, 22)).unwrap(), json!(42));

    let p = port.to_string();
    let base = ["-a", "127.0.0.1", "-p", &p, "-q", "0"];
    let mut plain_args = base.to_vec();
    plain_args.extend(["-n", "plain", "-d", "plain"]);
    let mut plain = Proc::start("plain", &exe("client_stub"), &plain_args, dir);
    assert!(!plain.wait_exit().success());
    let mut wrong_args = base.to_vec();
    wrong_args.extend([
        "-n",
        "wrong",
        "-d",
        "wrong",
        "--tls-ca",
        "other/cert.pem",
        "--tls-name",
        "localhost",
    ]);
    let mut wrong = Proc::start("wrong", &exe("client_stub"), &wrong_args, dir);
    assert!(!wrong.wait_exit().success());
    wrong.wait_for("TLS with the server");
    assert_eq!(server.count("joined:"), 2, "{:?}", server.output());
}
