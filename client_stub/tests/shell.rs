//! The client shell driven through a pseudo-terminal, as a person uses it.

mod harness;

use harness::*;
use std::process::Command;

#[test]
fn the_shell_registers_lists_completes_and_quits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let recv = dir.join("a");
    let mut cmd = Command::new(exe("client_stub"));
    cmd.current_dir(dir).args([
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-n",
        "a",
        "-q",
        "0",
        "-l",
    ]);
    cmd.arg("-d").arg(&recv);
    let mut sh = rexpect::session::spawn_command(cmd, Some(WAIT.as_millis() as u64)).unwrap();
    sh.exp_string("apps on").unwrap();

    sh.send_line(&format!("rm:{}", example_module().display()))
        .unwrap();
    sh.exp_string("registered z").unwrap();
    sh.send_line("mods").unwrap();
    sh.exp_string("1 module(s):").unwrap();
    sh.exp_string("owner: this stub").unwrap();

    // Tab completes the command, then the module name.
    sh.send("des").unwrap();
    sh.send("\t").unwrap();
    sh.send("\t").unwrap();
    sh.send_line("").unwrap();
    sh.exp_string("module z (owner this stub)").unwrap();
    sh.exp_string("add_prams(a, b)").unwrap();

    // Two lines pasted at once (a terminal's bracketed paste) are two commands.
    sh.send("\x1b[200~sc:mine\nwii\x1b[201~").unwrap();
    sh.send_line("").unwrap();
    sh.exp_string("saved the running configuration to conf/mine.toml")
        .unwrap();
    sh.exp_string("1 stub(s):").unwrap();
    assert!(dir.join("conf/mine.toml").is_file());

    sh.send_line("frobnicate").unwrap();
    sh.exp_string("unknown command 'frobnicate' (type help for the list)")
        .unwrap();
    sh.send_line("help").unwrap();
    sh.exp_string("sc:PROFILE").unwrap();
    sh.send_line("quit").unwrap();
    sh.exp_string("stopped: quit").unwrap();
    sh.exp_eof().unwrap();

    let history = std::fs::read_to_string(recv.join(".shell_history")).unwrap();
    assert!(
        history.contains("desc:z") && history.contains("mods"),
        "{history}"
    );
}

#[test]
fn an_empty_answer_at_the_prompts_says_which_flag_sets_it() {
    let tmp = tempfile::tempdir().unwrap();
    // (flags given, the prompt, what the empty answer is told)
    let cases: [(&[&str], &str, &str); 2] = [
        (&[], "name of this stub: ", "-n NAME sets it"),
        (&["-n", "a"], "server address: ", "-a ADDRESS sets it"),
    ];
    for (flags, prompt, told) in cases {
        let mut cmd = Command::new(exe("client_stub"));
        cmd.current_dir(tmp.path()).args(flags);
        let mut sh = rexpect::session::spawn_command(cmd, Some(WAIT.as_millis() as u64)).unwrap();
        sh.exp_string(prompt).unwrap();
        sh.send_line("").unwrap();
        sh.exp_string(told).unwrap();
        sh.exp_eof().unwrap();
    }
}

/// A name the server finds taken is asked for again at a terminal; an empty answer then is told
/// which flag sets it too (it said only "no name given").
#[test]
fn an_empty_answer_when_the_name_is_taken_says_which_flag_sets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_server, port) = server(dir, &[]);
    let _a = stub(dir, port, "a", &[]);
    let mut cmd = Command::new(exe("client_stub"));
    cmd.current_dir(dir)
        .args(stub_args(&port.to_string(), "a", "a2"));
    let mut sh = rexpect::session::spawn_command(cmd, Some(WAIT.as_millis() as u64)).unwrap();
    sh.exp_string("the name 'a' is taken").unwrap();
    sh.exp_string("name of this stub: ").unwrap();
    sh.send_line("").unwrap();
    sh.exp_string("no name of this stub given: -n NAME sets it")
        .unwrap();
    sh.exp_eof().unwrap();
}
