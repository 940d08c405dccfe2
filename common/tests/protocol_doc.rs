//! PROTOCOL.md is generated from the code's own types here, so it cannot drift: this test fails
//! when the file differs from what the code serializes. `UPDATE_PROTOCOL=1 cargo test -p common
//! --test protocol_doc` rewrites it.

use common::error::{ErrorKind, RemoteError};
use common::proto::*;
use serde_json::json;

/// Every variant's name; exhaustive, so a new variant cannot be forgotten here.
fn to_server_name(m: &ToServer) -> &'static str {
    match m {
        ToServer::Hello(_) => "hello",
        ToServer::Chunk(_) => "chunk",
        ToServer::Withdraw { .. } => "withdraw",
        ToServer::Owns { .. } => "owns",
        ToServer::Have { .. } => "have",
        ToServer::Want { .. } => "want",
        ToServer::Say { .. } => "say",
        ToServer::Who => "who",
        ToServer::Call(_) => "call",
        ToServer::Reply(_) => "reply",
        ToServer::Cancel { .. } => "cancel",
        ToServer::Ping => "ping",
        ToServer::Echo { .. } => "echo",
    }
}

fn to_client_name(m: &ToClient) -> &'static str {
    match m {
        ToClient::Welcome { .. } => "welcome",
        ToClient::Refused { .. } => "refused",
        ToClient::Registered { .. } => "registered",
        ToClient::RegisterFailed { .. } => "register_failed",
        ToClient::Offer(_) => "offer",
        ToClient::Chunk(_) => "chunk",
        ToClient::Gone { .. } => "gone",
        ToClient::Message { .. } => "message",
        ToClient::Who { .. } => "who",
        ToClient::Call(_) => "call",
        ToClient::Reply(_) => "reply",
        ToClient::Cancel { .. } => "cancel",
        ToClient::Error { .. } => "error",
        ToClient::Shutdown { .. } => "shutdown",
        ToClient::Ping => "ping",
        ToClient::Echo { .. } => "echo",
    }
}

fn to_stub_name(m: &ToStub) -> &'static str {
    match m {
        ToStub::Call(_) => "call",
        ToStub::Modules { .. } => "modules",
        ToStub::Describe { .. } => "describe",
        ToStub::Ping { .. } => "ping",
        ToStub::Stats { .. } => "stats",
        ToStub::Reload { .. } => "reload",
        ToStub::Provide { .. } => "provide",
        ToStub::Answer(_) => "answer",
    }
}

fn to_app_name(m: &ToApp) -> &'static str {
    match m {
        ToApp::Reply(_) => "reply",
        ToApp::Call(_) => "call",
        ToApp::Error { .. } => "error",
    }
}

fn chunk() -> Chunk {
    Chunk {
        module: "z".into(),
        md5: "5d41402abc4b2a76b9719d911017c592".into(),
        size: 5,
        seq: 0,
        total: 1,
        data: "aGVsbG8=".into(),
        shared: false,
    }
}

fn call(id: u64) -> Call {
    Call {
        id,
        module: "z".into(),
        function: "add_prams".into(),
        args: vec![json!(1).into(), json!(2).into()],
        kwargs: Default::default(),
        timeout_ms: 30000,
        caller: None,
    }
}

fn ok(id: u64) -> Reply {
    Reply {
        id,
        result: Ok(json!(3).into()),
    }
}

fn exception(id: u64) -> Reply {
    let mut e = RemoteError::new(ErrorKind::Exception, "division by zero");
    e.exc_type = Some("ZeroDivisionError".into());
    e.traceback = Some("Traceback (most recent call last): ...".into());
    Reply { id, result: Err(e) }
}

/// One section: a title, a sentence, and each example with what it means.
fn section<T: serde::Serialize>(
    out: &mut String,
    title: &str,
    intro: &str,
    rows: &[(&str, T)],
    name: fn(&T) -> &'static str,
) {
    out.push_str(&format!("## {title}\n\n{intro}\n\n"));
    for (meaning, msg) in rows {
        let line = serde_json::to_string(msg).unwrap();
        out.push_str(&format!(
            "### `{}`\n{meaning}\n\n```json\n{line}\n```\n\n",
            name(msg)
        ));
    }
}

fn render() -> String {
    let mut out = String::from(
        "# The stubnet protocol\n\n\
         Generated from `common/src/proto.rs` by `common/tests/protocol_doc.rs`; do not edit by hand.\n\n\
         Every frame is one JSON object on one line (`\\n`-terminated): `{\"cmd\": NAME, \"data\": PAYLOAD}`;\n\
         commands without a payload have no `data`; the last frame before the end of the stream may\n\
         lack its newline. A frame is at most 4 MiB by default. A frame that is\n\
         malformed, unknown, of the wrong shape or over the limit is answered with an `error` frame naming\n\
         what was wrong, and the connection goes on; but when its start reads `{\"cmd\": NAME, \"data\":\n\
         {\"id\": N, ...`, N a whole number as JSON writes one (`1.5`, `1e3` or `01` is no id), the\n\
         request it was is answered by that id instead (a call fails with kind `protocol` or\n\
         `too_large`), so nobody waits for a timeout. Senders put the id first for this,\n\
         and `cmd` before `data`: arguments and results go from stub to stub as the JSON text they came\n\
         as, never parsed into values on the way, which needs the command read first. A frame with `data`\n\
         before `cmd` is still read: it is parsed again with `cmd` moved first (and, if it still cannot be\n\
         read, its id is looked for there).\n\
         Ids are chosen by the sender of a call and unique among its calls in flight; the answer carries\n\
         the same id. Timeouts travel as durations (`timeout_ms`), never as clock times. A `result` is\n\
         `{\"Ok\": VALUE}` or `{\"Err\": ERROR}` where ERROR has `kind` (exception, unknown_module,\n\
         unknown_function, bad_arguments, timeout, owner_gone, not_connected, worker_failed, protocol,\n\
         refused, too_large), `message`, and for exceptions `exc_type` and `traceback`. An app that\n\
         shuts down its writing half still gets the answers to its calls; then its stub closes.\n\n",
    );
    let offer = Offer {
        module: "z".into(),
        owner: "alpha".into(),
        md5: chunk().md5,
        size: 5,
    };
    section(&mut out, "Client stub → server", "The first frame must be `hello`.", &[
        ("Join the network under a name. `token`: for networks that set one. `session`: a random id kept for the stub's lifetime, so a stub that reconnects reclaims its name from its own ghost.", ToServer::Hello(Hello { version: PROTOCOL_VERSION, name: "alpha".into(), token: Some("s3cret".into()), session: Some("8c1f0e4a2b7d9c35".into()) })),
        ("One piece of a descriptor this stub registers; the server checks order, size and md5. Each upload (all its chunks) is answered once, by `registered` or `register_failed`: a refused upload's remaining chunks are dropped unanswered.", ToServer::Chunk(chunk())),
        ("Withdraw a module this stub owns. Answered once, by `gone` or `register_failed`, in order with the uploads of that module.", ToServer::Withdraw { module: "z".into() }),
        ("Every module this stub owns, sent after its uploads on each connection: any other module the server has it owning (its ghost's, when a stub restarted on the same receiving directory reclaims the name) leaves the network, as if withdrawn.", ToServer::Owns { modules: vec!["z".into()] }),
        ("Answer to an offer: my cached copy has this md5, send nothing.", ToServer::Have { module: "z".into(), md5: chunk().md5 }),
        ("Answer to an offer: send the chunks.", ToServer::Want { module: "z".into(), md5: chunk().md5 }),
        ("A message for the server's console.", ToServer::Say { text: "hi".into() }),
        ("Who is in?", ToServer::Who),
        ("A call on a module another stub owns.", ToServer::Call(call(1))),
        ("The answer to a call this stub ran as owner.", ToServer::Reply(ok(17))),
        ("Calls this stub made, by its ids, that nobody waits for any more: the app that made them left. The server forgets them, sends their owners `cancel`, and answers none of them. At most 100 ids a frame.", ToServer::Cancel { ids: vec![1, 2] }),
        ("Liveness, sent every heartbeat interval.", ToServer::Ping),
        ("How does the server see me? (for `ping`)", ToServer::Echo { id: 1 }),
    ], to_server_name);
    section(
        &mut out,
        "Server → client stub",
        "",
        &[
            (
                "Hello accepted. Each side sends at least a `ping` every `heartbeat_ms`; one that hears nothing for three intervals treats the other as gone. `left`: the modules that left the network since the server started and are not back (the newest 100); the stub removes its cached copy of each, for it left while the stub was away.",
                ToClient::Welcome {
                    name: "alpha".into(),
                    version: PROTOCOL_VERSION,
                    heartbeat_ms: 5000,
                    left: vec!["old".into()],
                },
            ),
            (
                "Hello refused; the connection closes.",
                ToClient::Refused {
                    reason: "name 'alpha' is already in use on this network".into(),
                    name_taken: true,
                },
            ),
            (
                "An upload was verified and stored.",
                ToClient::Registered {
                    module: "z".into(),
                    md5: chunk().md5,
                },
            ),
            (
                "An upload or withdraw was refused (the answer to it).",
                ToClient::RegisterFailed {
                    module: "z".into(),
                    reason: "module 'z' is owned by 'beta'".into(),
                },
            ),
            (
                "A module exists: answer `have` or `want`.",
                ToClient::Offer(offer),
            ),
            (
                "One piece of a descriptor this stub wanted.",
                ToClient::Chunk(chunk()),
            ),
            (
                "A module left the network; to a stub that withdrew it, the answer to its withdraw.",
                ToClient::Gone {
                    module: "z".into(),
                    reason: "its owner 'alpha' left".into(),
                },
            ),
            (
                "A message from the server console.",
                ToClient::Message {
                    from: "server".into(),
                    text: "hello all".into(),
                },
            ),
            (
                "Who is in.",
                ToClient::Who {
                    peers: vec![PeerInfo {
                        name: "alpha".into(),
                        address: "127.0.0.1:40000".into(),
                        modules: vec!["z".into()],
                    }],
                },
            ),
            (
                "Run a call on a module this stub owns (the id is the server's route id). `caller`: who made it, a number the server gives each stub's connection (it replaces whatever the calling stub sent); the owner runs its calls by caller in turn, each caller's in order.",
                ToClient::Call(Call {
                    caller: Some(2),
                    ..call(17)
                }),
            ),
            (
                "The answer to a call this stub made.",
                ToClient::Reply(exception(1)),
            ),
            (
                "Calls sent to this stub as owner, by their route ids, that nobody waits for any more (their app, or their stub, left, or their timeout passed): one still queued is dropped without running; one running finishes, and the server drops its answer. At most 100 ids a frame.",
                ToClient::Cancel { ids: vec![17, 18] },
            ),
            (
                "A frame this stub sent could not be handled.",
                ToClient::Error {
                    message: "malformed frame: expected value at line 1 column 1".into(),
                },
            ),
            (
                "The session ends, or a newer connection of this stub (its session) replaced this one; \
                 the stub exits.",
                ToClient::Shutdown {
                    reason: "the server ended the session".into(),
                },
            ),
            ("Liveness, sent every heartbeat interval.", ToClient::Ping),
            (
                "The answer to `echo`: the stub's address as the server sees it.",
                ToClient::Echo {
                    id: 1,
                    address: "127.0.0.1:40000".into(),
                },
            ),
        ],
        to_client_name,
    );
    section(
        &mut out,
        "App → its local client stub",
        "Apps connect to `127.0.0.1:APP_PORT`; many requests may be in flight on one connection.",
        &[
            ("Call a function.", ToStub::Call(call(1))),
            (
                "List modules whose names start with a prefix; the result is a list of names.",
                ToStub::Modules {
                    id: 2,
                    prefix: "".into(),
                },
            ),
            (
                "A module's descriptor.",
                ToStub::Describe {
                    id: 3,
                    module: "z".into(),
                },
            ),
            (
                "This stub's address as the server sees it and the round trip: `{\"address\": ..., \"rtt_ms\": ...}`. Past 1,000 pings waiting on the stub at once (from all its apps), `too_large`.",
                ToStub::Ping { id: 4 },
            ),
            (
                "Call statistics: `{\"made\": [...], \"served\": [...]}`, one row per function (calls, errors, last_error, mean_ms, p99_ms).",
                ToStub::Stats { id: 5 },
            ),
            (
                "Reload a module this stub owns from its file; the result is its new md5.",
                ToStub::Reload { id: 6, module: "z".into() },
            ),
            (
                "This app provides a module itself (a Rust program using `common::provider`): the stub registers it and sends the app its calls. The result is the descriptor's md5: the stub has taken the module and uploads it. If the server then refuses it (another stub owns that name, say), a second `reply` with the same id follows, whenever that is, with the refusal: the module is not provided as sent (the connection stays open).",
                ToStub::Provide {
                    id: 7,
                    descriptor: common::module::ModuleDescriptor {
                        module: "rustcalc".into(),
                        functions: vec![],
                        attributes: vec![],
                    },
                },
            ),
            (
                "The providing app's answer to a `call` the stub sent it.",
                ToStub::Answer(ok(3)),
            ),
        ],
        to_stub_name,
    );
    section(
        &mut out,
        "Local client stub → app",
        "",
        &[
            (
                "The answer to the request with the same id.",
                ToApp::Reply(ok(1)),
            ),
            (
                "A call on a module this app provides; answer with `answer` and the same id. \
                 `timeout_ms` is what remains of the caller's timeout: an answer after it is dropped.",
                ToApp::Call(call(3)),
            ),
            (
                "A frame from the app could not be handled.",
                ToApp::Error {
                    message: "malformed frame: ...".into(),
                },
            ),
        ],
        to_app_name,
    );
    out.push_str("## Descriptor files\n\nA module's descriptor is the JSON file `NAME.json`; its md5 is the md5 of those bytes.\n\n```json\n");
    out.push_str(
        &String::from_utf8(
            common::module::ModuleDescriptor {
                module: "z".into(),
                functions: vec![common::module::FunctionDesc {
                    name: "add_prams".into(),
                    params: vec![
                        common::module::Param {
                            name: "a".into(),
                            kind: common::module::ParamKind::Positional,
                            default: None,
                            annotation: Some("int".into()),
                        },
                        common::module::Param {
                            name: "b".into(),
                            kind: common::module::ParamKind::Positional,
                            default: Some("1".into()),
                            annotation: None,
                        },
                    ],
                    returns: Some("int".into()),
                    doc: Some("Adds two numbers.".into()),
                    is_async: false,
                    wrapped_by: None,
                }],
                attributes: Vec::new(),
            }
            .to_bytes(),
        )
        .unwrap(),
    );
    out.push_str("```\n");
    out
}

#[test]
fn protocol_md_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../PROTOCOL.md");
    let want = render();
    if std::env::var_os("UPDATE_PROTOCOL").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(have == want, "PROTOCOL.md is out of date: run UPDATE_PROTOCOL=1 cargo test -p common --test protocol_doc");
}
