//! TLS between stubs and the server, with a certificate made by `server_stub gen-cert`.

mod harness;

use harness::*;
use serde_json::json;

const TLS_SERVER: [&str; 4] = ["--tls-cert", "tls/cert.pem", "--tls-key", "tls/key.pem"];
const TLS_STUB: [&str; 4] = ["--tls-ca", "tls/cert.pem", "--tls-name", "localhost"];

/// Makes a certificate and key in `dir/sub` with `server_stub gen-cert`.
fn gen_cert(dir: &std::path::Path, sub: &str) {
    let mut gen = Proc::start(
        "gen-cert",
        &exe("server_stub"),
        &["gen-cert", "--dir", sub],
        dir,
    );
    assert!(gen.wait_exit().success());
    gen.wait_for("wrote");
}

/// Starts a stub named `name` at the server on `port` with `extra` flags, expects it to exit
/// non-zero, and returns it.
fn refused_stub(dir: &std::path::Path, port: u16, name: &str, extra: &[&str]) -> Proc {
    let mut stub = start_stub(name, dir, &port.to_string(), name, name, extra);
    assert!(!stub.wait_exit().success(), "{:?}", stub.output());
    stub
}

#[test]
fn a_stub_and_a_server_that_disagree_about_tls_are_told_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_cert(dir, "tls");
    // (server flags, stub flags, what the stub says, what the server says once)
    let cases: [(&[&str], &[&str], &str, &str); 2] = [
        (
            &TLS_SERVER,
            &[],
            "speaks TLS: give --tls-ca (profile key tls_ca)",
            "it speaks in the clear, but this server speaks TLS",
        ),
        (
            &[],
            &TLS_STUB,
            "does not speak TLS (remove tls_ca",
            "it starts a TLS handshake, but this server does not speak TLS",
        ),
    ];
    for (server_flags, stub_flags, told, refused) in cases {
        let (server, port) = server(dir, server_flags);
        let odd = refused_stub(dir, port, "odd", stub_flags);
        odd.wait_for(&format!("the server at 127.0.0.1:{port} {told}"));
        server.wait_for(refused);
        assert_eq!(
            server.count("refused 127.0.0.1:"),
            1,
            "{:?}",
            server.output()
        );

        // The server goes on serving a stub that agrees with it.
        let agrees: &[&str] = if server_flags.is_empty() {
            &[]
        } else {
            &TLS_STUB
        };
        let _good = stub(dir, port, "good", agrees);
        server.wait_for("joined: good");
        assert_eq!(server.count(refused), 1, "{:?}", server.output());
    }
}

#[test]
fn stubs_speak_tls_to_the_server_and_strangers_cannot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_cert(dir, "tls");
    gen_cert(dir, "other");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("tls/key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the key is private");

    let (server, port) = server(dir, &TLS_SERVER);
    server.wait_for("every connection uses TLS");
    let m = dir.join("m.py");
    std::fs::write(&m, "def add(a, b):\n    return a + b\n").unwrap();
    let ca = TLS_STUB;
    let mut owner_args = ca.to_vec();
    owner_args.extend(["--register", m.to_str().unwrap()]);
    let owner = stub(dir, port, "a", &owner_args);
    owner.wait_for("registered m");
    let caller = stub(dir, port, "b", &ca);
    caller.wait_for("received m from a");
    let app = client(&caller);
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
    wrong.wait_for("its certificate is not one tls_ca trusts");
    assert_eq!(server.count("joined:"), 2, "{:?}", server.output());

    // A stub that quits over TLS leaves as it does in the clear: not "lost" with an i/o error.
    let mut leaver_args = ca.to_vec();
    leaver_args.push("-l");
    let mut leaver = stub(dir, port, "leaver", &leaver_args);
    server.wait_for("joined: leaver");
    leaver.send("quit");
    assert!(leaver.wait_exit().success());
    server.wait_for("left: leaver");
    assert_eq!(server.count("lost leaver"), 0, "{:?}", server.output());
}

#[test]
fn a_file_without_a_certificate_or_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_cert(dir, "tls");
    std::fs::write(dir.join("notpem.txt"), "not a certificate\n").unwrap();
    let expect = |args: &[&str], exe_name: &str, said: &str| {
        let mut p = Proc::start(exe_name, &exe(exe_name), args, dir);
        assert!(!p.wait_exit().success(), "{:?}", p.output());
        p.wait_for(said);
    };
    // The server: no certificate in its chain, the certificate given as its key.
    let srv = ["-p", "0", "-d", "srv", "--tls-cert", "notpem.txt"];
    let mut no_cert = srv.to_vec();
    no_cert.extend(["--tls-key", "tls/key.pem"]);
    expect(&no_cert, "server_stub", "no certificate in notpem.txt");
    let no_key = [
        "-p",
        "0",
        "-d",
        "srv",
        "--tls-cert",
        "tls/cert.pem",
        "--tls-key",
        "tls/cert.pem",
    ];
    expect(&no_key, "server_stub", "no private key in tls/cert.pem");

    // A stub told to trust a file with no certificate in it says so before connecting.
    let (_server, port) = server(dir, &TLS_SERVER);
    let odd = refused_stub(dir, port, "odd", &["--tls-ca", "notpem.txt"]);
    odd.wait_for("no certificate in notpem.txt");
    // A certificate's name with no certificate to trust, at a plain server: not ignored.
    let (_plain, port) = server(dir, &[]);
    let odd = refused_stub(dir, port, "odd", &["--tls-name", "localhost"]);
    odd.wait_for("--tls-name localhost (profile key tls_name) is for TLS, which is off: give --tls-ca (profile key tls_ca) too");
}

#[test]
fn gen_cert_keeps_existing_files_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    gen_cert(dir, "tls");
    let read = |file: &str| std::fs::read(dir.join("tls").join(file)).unwrap();
    let key = read("key.pem");
    let gen = |extra: &[&str]| {
        let mut args = vec!["gen-cert", "--dir", "tls"];
        args.extend_from_slice(extra);
        let mut p = Proc::start("gen-cert", &exe("server_stub"), &args, dir);
        let status = p.wait_exit();
        (status, p.output().join("\n"))
    };
    let (status, out) = gen(&[]);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("tls/cert.pem and tls/key.pem already exist: not replaced (--force"),
        "{out}"
    );
    assert_eq!(read("key.pem"), key);

    // One of them left: it alone is named, and nothing is written.
    std::fs::remove_file(dir.join("tls/cert.pem")).unwrap();
    let (status, out) = gen(&[]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("tls/key.pem already exists"), "{out}");
    assert!(!dir.join("tls/cert.pem").exists());

    // A key others could read is replaced by one only its owner can.
    use std::os::unix::fs::PermissionsExt;
    let key_file = dir.join("tls/key.pem");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (status, out) = gen(&["--force"]);
    assert!(status.success(), "{out}");
    assert!(dir.join("tls/cert.pem").exists());
    assert_ne!(read("key.pem"), key);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");

    // A link planted where the key goes (a directory others can write) was written through:
    // the key landed in a file its planter could read. A link to nowhere counts as there; with
    // --force the link itself is replaced, and what it pointed to is left as it was.
    std::fs::remove_file(&key_file).unwrap();
    std::os::unix::fs::symlink("stolen", &key_file).unwrap();
    let (status, out) = gen(&[]);
    assert!(!status.success(), "{out}");
    assert!(out.contains("tls/key.pem already exist"), "{out}");
    assert!(!dir.join("tls/stolen").exists());
    std::fs::write(dir.join("tls/stolen"), "planted").unwrap();
    let (status, out) = gen(&["--force"]);
    assert!(status.success(), "{out}");
    assert_eq!(read("stolen"), b"planted");
    let meta = std::fs::symlink_metadata(&key_file).unwrap();
    assert!(meta.is_file(), "{meta:?}");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(String::from_utf8(read("key.pem"))
        .unwrap()
        .contains("PRIVATE KEY"));

    // A directory that cannot be made is named.
    std::fs::write(dir.join("afile"), "").unwrap();
    let mut p = Proc::start(
        "gen-cert",
        &exe("server_stub"),
        &["gen-cert", "--dir", "afile/tls"],
        dir,
    );
    assert!(!p.wait_exit().success());
    p.wait_for("error: cannot make the directory afile/tls: ");
}

#[test]
fn gen_cert_refuses_a_name_no_stub_could_ask_for_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for (name, said) in [("", "''"), ("a host", "'a host'")] {
        let args = ["gen-cert", "--dir", "tls", "localhost", name];
        let mut p = Proc::start("gen-cert", &exe("server_stub"), &args, dir);
        assert!(!p.wait_exit().success());
        p.wait_for(&format!(
            "error: {said} is neither a host name nor an IP address"
        ));
        assert!(!dir.join("tls").exists());
    }
}
