//! The generators' unit tests.

use super::python::*;
use super::rust::*;
use super::*;

fn ty(annotation: &str) -> String {
    rust_type(Some(annotation))
}

#[test]
fn scalars_and_unknowns() {
    assert_eq!(rust_type(None), "serde_json::Value");
    for (a, want) in [
        ("int", "i64"),
        ("float", "f64"),
        ("str", "String"),
        ("bool", "bool"),
        ("None", "()"),
        ("bytes", VALUE),
        ("tuple", VALUE),
        ("Any", VALUE),
        ("typing.Any", VALUE),
        ("np.ndarray", VALUE),
        ("Callable[[int], str]", VALUE),
        ("int[str]", VALUE),
        ("int | str", VALUE),
        ("lambda: 1", VALUE),
        ("", VALUE),
        ("'int'", "i64"),
        ("\"str\"", "String"),
        ("builtins.int", "i64"),
    ] {
        assert_eq!(ty(a), want, "{a}");
    }
}

#[test]
fn containers_map_recursively() {
    let value_map = "serde_json::Map<String, serde_json::Value>";
    for (a, want) in [
        ("list", "Vec<serde_json::Value>".to_owned()),
        ("List", "Vec<serde_json::Value>".to_owned()),
        ("list[int]", "Vec<i64>".to_owned()),
        ("typing.List[ 'float' ]", "Vec<f64>".to_owned()),
        ("list[list[str]]", "Vec<Vec<String>>".to_owned()),
        ("dict", value_map.to_owned()),
        ("Dict", value_map.to_owned()),
        (
            "dict[str, list[int]]",
            "common::codegen::Dict<Vec<i64>>".to_owned(),
        ),
        ("Dict[str, Any]", format!("common::codegen::Dict<{VALUE}>")),
        ("dict[int, str]", VALUE.to_owned()),
        ("list[bytes]", format!("Vec<{VALUE}>")),
    ] {
        assert_eq!(ty(a), want, "{a}");
    }
}

#[test]
fn optionals() {
    for (a, want) in [
        ("Optional[int]", "Option<i64>"),
        ("typing.Optional[str]", "Option<String>"),
        ("int | None", "Option<i64>"),
        ("None | list[bool]", "Option<Vec<bool>>"),
        ("Union[float, None]", "Option<f64>"),
        ("Union[int]", "i64"),
        ("Optional[Optional[int]]", "Option<i64>"),
        ("Optional[int] | None", "Option<i64>"),
        ("Union[int, str, None]", "serde_json::Value"),
    ] {
        assert_eq!(ty(a), want, "{a}");
    }
}

#[test]
fn hostile_annotations_stay_cheap() {
    let deep = format!("{}int{}", "list[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(ty(&deep), VALUE);
    let quoted = format!("{}int{}", "'".repeat(5_000), "'".repeat(5_000));
    assert_eq!(ty(&quoted), VALUE);
    assert_eq!(ty("'unterminated"), VALUE);
}

fn param(name: &str, kind: ParamKind, default: Option<&str>, ann: Option<&str>) -> Param {
    Param {
        name: name.into(),
        kind,
        default: default.map(Into::into),
        annotation: ann.map(Into::into),
    }
}

fn module(functions: Vec<FunctionDesc>) -> ModuleDescriptor {
    ModuleDescriptor {
        module: "z".into(),
        functions,
        attributes: Vec::new(),
    }
}

fn function(name: &str, params: Vec<Param>, returns: Option<&str>) -> FunctionDesc {
    FunctionDesc {
        name: name.into(),
        params,
        returns: returns.map(Into::into),
        doc: Some("Does it.\nMore.".into()),
        is_async: false,
        wrapped_by: None,
    }
}

#[test]
fn rust_functions_are_typed_with_defaults_optional() {
    use ParamKind::*;
    let f = function(
        "greet",
        vec![
            param("name", Positional, None, Some("str")),
            param("times", Positional, Some("1"), Some("int")),
            param("rest", VarPositional, None, None),
            param("loud", KeywordOnly, Some("False"), Some("bool")),
            param("extra", VarKeyword, None, None),
        ],
        Some("str"),
    );
    let code = rust_stub(&module(vec![f]), "abc");
    assert!(code.starts_with("//! Client stub for the stubnet module `z` (md5 abc)."));
    assert!(
        code.contains("/// Does it.\n///\n/// Remote: `z.greet(name: str, "),
        "{code}"
    );
    assert!(!code.contains("More."));
    let decl = "pub fn greet(\n    client: &Client,\n    name: String,\n    times: Option<i64>,\n    \
                    rest: Vec<serde_json::Value>,\n    loud: Option<bool>,\n    \
                    extra: serde_json::Map<String, serde_json::Value>,\n) -> Result<String, CallError> {";
    assert!(code.contains(decl), "{code}");
    for bind in [
        ".positional(\"name\", true, Some(name))?",
        ".positional(\"times\", true, times)?",
        ".rest(rest)?",
        ".keyword(\"loud\", loud)?",
        ".rest_keywords(extra)?",
        "client.call_with(\"z\", \"greet\", args, kwargs, None)?",
    ] {
        assert!(code.contains(bind), "{bind} in {code}");
    }
}

#[test]
fn rust_doc_comments_escape_what_rustc_refuses_in_them() {
    // A bare CR, and a bidirectional override (a deny-by-default lint), from the doc line and
    // from a default as written.
    let mut f = function(
        "f",
        vec![param("a", ParamKind::Positional, Some("'\u{202e}'"), None)],
        None,
    );
    f.doc = Some("Reads \u{202e}backwards\r.".into());
    let code = rust_stub(&module(vec![f]), "m");
    let unsafe_char =
        |c: char| matches!(c, '\r' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    assert!(!code.contains(unsafe_char), "{code:?}");
    assert!(
        code.contains("/// Reads \\u{202e}backwards\\r.\n"),
        "{code}"
    );
    assert!(code.contains("/// Remote: `z.f(a='\\u{202e}')`."), "{code}");
}

#[test]
fn rust_keywords_and_reserved_names() {
    use ParamKind::*;
    let f = |name: &str, params: Vec<Param>| function(name, params, None);
    let p = |name: &str| param(name, Positional, None, None);
    let desc = module(vec![
        f(
            "type",
            vec![p("match"), p("self"), p("client"), p("_"), p("gen")],
        ),
        f("self", vec![p("Some"), p("args"), p("value")]),
        f("self_", vec![]),
        f("getValue", vec![p("x")]),
        f("not an identifier", vec![]),
        f("spread", vec![p("*args")]),
    ]);
    let code = rust_stub(&desc, "m");
    for want in [
            "pub fn r#type(\n    client_: &Client,\n    r#match: serde_json::Value,\n    \
             self_: serde_json::Value,\n    client: serde_json::Value,\n    __: serde_json::Value,\n    \
             r#gen: serde_json::Value,\n)",
            "client_.call_with(\"z\", \"type\"",
            ".positional(\"self\", true, Some(self_))?",
            ".positional(\"_\", true, Some(__))?",
            "pub fn self_(\n    client: &Client,\n    Some_: serde_json::Value,\n    args: serde_json::Value,",
            "pub fn self__(client: &Client)",
            "\npub fn getValue(",
            "// \"not an identifier\": not a Rust identifier, left out",
            "// \"spread\": its parameter \"*args\" is not a Rust identifier, left out",
        ] {
            assert!(code.contains(want), "{want} in {code}");
        }
    // Python's names, and its counts of parameters, are for the file's one `allow`.
    assert!(code.contains(ALLOWED), "{code}");
    assert_eq!(code.matches("allow(").count(), 1, "{code}");
}

#[test]
fn args_bind_like_python() {
    let v = |x: i64| Some(x);
    let none = None::<i64>;
    let (args, kwargs) = Args::new("f")
        .positional("a", false, v(1))
        .and_then(|a| a.positional("b", true, none))
        .and_then(|a| a.positional("c", true, v(3)))
        .and_then(|a| a.keyword("d", v(4)))
        .and_then(|a| a.keyword("e", none))
        .and_then(|a| a.rest(vec![]))
        .and_then(|a| a.rest_keywords(Map::from_iter([("k".into(), Value::from(5))])))
        .unwrap()
        .finish();
    assert_eq!(args, vec![Value::from(1)]);
    assert_eq!(
        Value::Object(kwargs),
        serde_json::json!({"c": 3, "d": 4, "k": 5})
    );
    let positional_after_gap = Args::new("f")
        .positional("a", false, none)
        .and_then(|a| a.positional("b", false, v(2)));
    assert!(matches!(positional_after_gap, Err(CallError::BadArguments(m)) if m.contains("'a'")));
    let rest_after_gap = Args::new("f")
        .positional("a", true, none)
        .and_then(|a| a.rest(vec![Value::Null]));
    assert!(matches!(rest_after_gap, Err(CallError::BadArguments(m)) if m.contains("*args")));
    let duplicate = Args::new("f")
        .keyword("d", v(1))
        .and_then(|a| a.rest_keywords(Map::from_iter([("d".into(), Value::Null)])));
    assert!(matches!(duplicate, Err(CallError::BadArguments(m)) if m.contains("multiple")));
    // What serde_json would send as null is refused, as `Client::call` refuses it.
    let nan = Args::new("f").positional("x", true, Some(f64::NAN));
    let why = "it is NaN: JSON carries finite numbers only (serde_json would send null)";
    assert!(
        matches!(nan, Err(CallError::BadArguments(m)) if m == format!("f(): argument 'x': {why}"))
    );
    let inf = Args::new("f").keyword("v", Some(vec![1.0, f64::INFINITY]));
    assert!(matches!(inf, Err(CallError::BadArguments(m)) if m.contains("'v': it holds inf")));
}

#[test]
fn python_headers_defaults_and_names() {
    use ParamKind::*;
    let f = function(
        "f",
        vec![
            param("a", PositionalOnly, None, Some("int")),
            param("b", PositionalOnly, Some("DEFAULT"), None),
            param("c", Positional, Some("'x'"), Some("str")),
            param("args", VarPositional, None, None),
            param("d", KeywordOnly, Some("[1, 2]"), None),
            param("_stubnet", KeywordOnly, None, None),
            param("kw", VarKeyword, None, None),
        ],
        Some("dict[str, int]"),
    );
    let g = function(
        "g",
        vec![param("x", KeywordOnly, Some("-1.5e3"), None)],
        None,
    );
    let code = python_stub(&module(vec![f, g, function("class", vec![], None)]), "m5");
    for want in [
            "(md5 m5)",
            "import _stubnet as _stubnet_\n",
            "__all__ = [\n    \"f\",\n    \"g\",\n]",
            "def f(a: \"int\", b=_stubnet_.Default(\"DEFAULT\"), /, c: \"str\" = 'x', *args, \
             d=_stubnet_.Default(\"[1, 2]\"), _stubnet, **kw) -> \"dict[str, int]\":\n    \"\"\"Does it.\"\"\"\n",
            "return _stubnet_.invoke(\"z\", \"f\", [(\"a\", False, a), (\"b\", False, b), \
             (\"c\", True, c)], args, {\"d\": d, \"_stubnet\": _stubnet}, kw)",
            "def g(*, x=-1.5e3):",
            "# \"class\": not a Python identifier, left out",
        ] {
            assert!(code.contains(want), "{want} in {code}");
        }
}

/// A header Python would refuse (a Rust provider's: `def f(a, a)`, a parameter named `from`) is
/// left out, not written: one such function made the whole stub fail to import.
#[test]
fn python_stubs_leave_out_headers_python_refuses() {
    use ParamKind::*;
    let params = |names: &[&str]| {
        names
            .iter()
            .map(|n| param(n, Positional, None, None))
            .collect()
    };
    let functions = vec![
        function("twice", params(&["a", "a"]), None),
        // Python reads `ﬁ` as `fi`.
        function("alike", params(&["ﬁ", "fi"]), None),
        function("keyword", params(&["from", "to"]), None),
        function("fine", params(&["a", "b"]), None),
    ];
    let code = python_stub(&module(functions), "m5");
    for name in ["twice", "alike", "keyword"] {
        let want = format!("# \"{name}\": its parameters are not distinct Python identifiers");
        assert!(code.contains(&want), "{want} in {code}");
    }
    assert!(code.contains("__all__ = [\n    \"fine\",\n]"), "{code}");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; compile(sys.argv[1], 'z.py', 'exec')",
            &code,
        ])
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{code}");
}

/// After a positional default only the remote module knows, the positional-only parameters
/// cannot be sent, so their literal defaults are left to it too: `f()` calls `f()`, not
/// `f(<a's default>, 1)`, which the stub could not send.
#[test]
fn positional_only_defaults_after_a_remote_one_are_left_to_it() {
    use ParamKind::*;
    let f = function(
        "f",
        vec![
            param("a", PositionalOnly, Some("[]"), None),
            param("b", PositionalOnly, Some("1"), None),
            param("c", Positional, Some("2"), None),
        ],
        None,
    );
    let code = python_stub(&module(vec![f]), "m5");
    let want = "def f(a=_stubnet.Default(\"[]\"), b=_stubnet.Default(\"1\"), /, c=2):";
    assert!(code.contains(want), "{want} in {code}");
}

#[test]
fn plain_literals() {
    for yes in [
        "1",
        "-1",
        "- 1",
        "0x1f",
        "1_000",
        "1.5e-3",
        ".5",
        "'a'",
        "\"a\\\"b\"",
        "r'\\d'",
        "None",
        "True",
        "'é'",
        "1e-400",
        "0x1e400",
        "99999999999999999999999",
    ] {
        assert!(is_plain_literal(yes), "{yes}");
    }
    for no in [
        "x",
        "b'a'",
        "f'{x}'",
        "'a' 'b'",
        "'''a'''",
        "[1]",
        "1j",
        "e",
        "-x",
        "'a'.upper()",
        "\"a\" + \"b\"",
        "DEFAULT",
        "(1)",
        "",
        // Python reads it as inf, which JSON cannot carry.
        "1e400",
        "-1_0e3_99",
    ] {
        assert!(!is_plain_literal(no), "{no}");
    }
}

#[test]
fn file_names() {
    assert_eq!(stub_file_names("z"), ["z.rs", "z.py"]);
    assert_eq!(stub_file_names("_stubnet"), ["_stubnet.rs"]);
    assert_eq!(stub_file_names("os.path"), ["os_path.rs", "os_path.py"]);
    assert_eq!(mod_line("z"), "mod z;");
    assert_eq!(mod_line("enum"), "mod r#enum;");
    assert_eq!(mod_line("self"), "#[path = \"self.rs\"] mod self_;");
    // Not a name that would hide a crate the app uses.
    assert_eq!(mod_line("common"), "#[path = \"common.rs\"] mod common_;");
    assert_eq!(mod_line("std"), "#[path = \"std.rs\"] mod std_;");
    let files = stub_files(&module(vec![]), "m");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["z.rs", "z.py", "_stubnet.py"]);
    assert!(
        !files[0].1.contains("\nuse "),
        "no unused imports: {}",
        files[0].1
    );
}

#[test]
fn plain_values_are_read_by_name() {
    let desc = ModuleDescriptor {
        module: "os.path".into(),
        functions: vec![],
        attributes: vec!["sep".into(), "SEP_X".into()],
    };
    let rust = rust_stub(&desc, "m");
    for want in [
        "mod os_path;",
        "use common::app::{CallError, Client};\n\n",
        "pub fn sep(client: &Client) -> Result<serde_json::Value, CallError> {\n    \
             client.call_with(\"os.path\", \"sep\", (), serde_json::Map::new(), None)\n}",
        "\npub fn SEP_X(",
    ] {
        assert!(rust.contains(want), "{want} in {rust}");
    }
    assert!(!rust.contains("Args"), "no unused import: {rust}");
    let python = python_stub(&desc, "m");
    assert!(
        python.contains("if name in {\"sep\", \"SEP_X\"}:"),
        "{python}"
    );
    assert!(python.contains("return _stubnet.call(\"os.path\", name)"));
}

#[test]
fn the_python_helper_refuses_a_bad_setting_naming_it() {
    let dir = helper_dir();
    let seconds = "it takes a number of seconds above 0";
    let port = "it takes a port, 1 to 65535";
    let bytes = "it takes a number of bytes, at least 4096";
    for (name, value, takes) in [
        ("STUBNET_TIMEOUT", "-5", seconds),
        ("STUBNET_TIMEOUT", "0", seconds),
        ("STUBNET_TIMEOUT", "nan", seconds),
        ("STUBNET_TIMEOUT", "soon", seconds),
        ("STUBNET_TIMEOUT", "inf", seconds),
        ("STUBNET_APP_PORT", "abc", port),
        ("STUBNET_APP_PORT", "70000", port),
        ("STUBNET_MAX_REPLY_BYTES", "100", bytes),
        ("STUBNET_MAX_REPLY_BYTES", "1GiB", bytes),
    ] {
        // Refused before it connects: no stub is needed.
        let call = "import _stubnet; _stubnet.call('m', 'f')";
        let said = format!("ValueError: ${name} is '{value}': {takes}");
        assert_eq!(python(dir.path(), call, &[(name, value)]), said);
    }
}

#[test]
fn the_python_helper_takes_a_timeout_only_it_can_wait() {
    use std::io::BufRead;
    let dir = helper_dir();
    // A "stub" that reads each request and hangs up: the call waits for it, then fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let _ = std::io::BufReader::new(conn).read_line(&mut String::new());
        }
    });
    let port = port.to_string();
    let python = |script: &str, timeout: &str| {
        let env = [
            ("STUBNET_APP_PORT", port.as_str()),
            ("STUBNET_TIMEOUT", timeout),
        ];
        python(dir.path(), script, &env)
    };
    let hung_up = "RemoteError: not_connected: the client stub closed the connection";
    // Centuries: as long as a wait can be, not an OverflowError at the call.
    let call = "import _stubnet; _stubnet.call('m', 'f')";
    let err = python(call, "1e300");
    assert!(err.ends_with(hung_up), "{err}");
    for long in ["1e300", "10**400"] {
        let call =
            format!("import _stubnet; _stubnet.set_timeout({long}); _stubnet.call('m', 'f')");
        let err = python(&call, "30");
        assert!(err.ends_with(hung_up), "{long}: {err}");
    }
    // A text is no number of seconds, though float() would read it.
    for bad in ["0", "-1", "-10**400", "'3'", "True", "float('nan')", "[]"] {
        let err = python(
            &format!("import _stubnet; _stubnet.set_timeout({bad})"),
            "30",
        );
        let want = "it takes a number of seconds above 0 (or None)";
        assert!(
            err.starts_with("ValueError: set_timeout(") && err.ends_with(want),
            "{bad}: {err}"
        );
    }
}

/// A stopped stub whose accept backlog is full holds a connect for minutes: the helper gives up
/// at the call's timeout, as the Rust clients do (it used to wait 10 s, whatever the timeout).
#[test]
fn the_python_helper_connects_within_the_calls_timeout() {
    let dir = helper_dir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _held = crate::app::tests::fill_backlog(&listener);
    let late = format!("could not connect to the client stub at 127.0.0.1:{port} within 0.3 s");
    let app_port = port.to_string();
    for (script, told) in [
        (
            "_stubnet.call('m', 'f')",
            format!("TimeoutError: m.f: {late}"),
        ),
        (
            &format!("_stubnet.connect({port})"),
            format!("TimeoutError: {late}"),
        ),
    ] {
        let script = format!("import _stubnet; _stubnet.set_timeout(0.3); {script}");
        let env = [("STUBNET_APP_PORT", app_port.as_str())];
        assert_eq!(python(dir.path(), &script, &env), told);
    }
}

/// A "stub" that reads each request and answers it with `sent`, then reads on until the helper
/// hangs up (it never does itself: what the helper is told comes from `sent`): its port.
fn fake_stub(sent: Vec<u8>) -> u16 {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(&conn);
                let _ = reader.read_line(&mut String::new());
                let _ = (&conn).write_all(&sent);
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
            });
        }
    });
    port
}

/// The last line the helper's call `m.f()` writes (its result, or the exception), with a reply
/// line of at most 100,000 bytes, from the stub at `port`; STUBNET_TIMEOUT 30 s is only hang
/// detection.
fn python_call(dir: &std::path::Path, port: u16) -> String {
    let port = port.to_string();
    let env = [
        ("STUBNET_APP_PORT", port.as_str()),
        ("STUBNET_TIMEOUT", "30"),
        ("STUBNET_MAX_REPLY_BYTES", "100000"),
    ];
    let call = "import _stubnet; print(len(_stubnet.call('m', 'f')))";
    python(dir, call, &env)
}

/// A directory holding the Python helper, as one of generated stubs does.
fn helper_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(PYTHON_HELPER_FILE), PYTHON_HELPER).unwrap();
    dir
}

/// Runs `script` with python3 in `dir`, with `env` set and the helper's other variables unset:
/// the last line it writes (on stdout, then stderr: a result, or the exception).
fn python(dir: &std::path::Path, script: &str, env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new("python3");
    command.args(["-c", script]).current_dir(dir);
    for name in [
        "STUBNET_APP_PORT",
        "STUBNET_TIMEOUT",
        "STUBNET_MAX_REPLY_BYTES",
    ] {
        command.env_remove(name);
    }
    let out = command
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs");
    let out = [out.stdout, out.stderr].concat();
    String::from_utf8_lossy(&out)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

/// A program on the app port that is no stub (a wrong STUBNET_APP_PORT) ends the helper's
/// connection with a reason every call gets. A line with no newline used to be read until
/// MemoryError (the call timing out meanwhile); one that is not JSON, or not an object, ended it
/// as if the stub had hung up, killing the reader thread with a traceback for the latter.
#[test]
fn the_python_helper_ends_a_connection_that_sends_what_no_stub_sends() {
    let dir = helper_dir();
    // A reply of `bytes` bytes and a newline, or no newline.
    let (head, tail) = (
        r#"{"cmd":"reply","data":{"id":1,"result":{"Ok":""#,
        r#""}}}"#,
    );
    let reply = |bytes: usize, newline: bool| {
        let text = "x".repeat(bytes - head.len() - tail.len());
        format!("{head}{text}{tail}{}", if newline { "\n" } else { "" }).into_bytes()
    };
    let no_stub = "is it a stub's app port?";
    for (sent, told) in [
        // As long as it may be, and one byte more.
        (
            reply(100_000, true),
            (100_000 - head.len() - tail.len()).to_string(),
        ),
        (
            reply(100_001, true),
            format!("sent a line over 100000 bytes (see $STUBNET_MAX_REPLY_BYTES): {no_stub}"),
        ),
        // Begun as a stub's, never ended.
        (
            reply(1 << 20, false),
            format!("sent a line over 100000 bytes (see $STUBNET_MAX_REPLY_BYTES): {no_stub}"),
        ),
        // Found out at its first 64 KiB.
        (
            vec![b'x'; 1 << 20],
            format!(
                "sent 65536 bytes of a line no stub sends (b'{}'...): {no_stub}",
                "x".repeat(40)
            ),
        ),
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
            format!(
                "sent a line no stub sends (JSONDecodeError: Expecting value: line 1 column 1 \
                 (char 0); b'HTTP/1.1 400 Bad Request\\r\\n'): {no_stub}"
            ),
        ),
        (
            b"[1]\n".to_vec(),
            format!("sent a line no stub sends (b'[1]\\n'): {no_stub}"),
        ),
    ] {
        let port = fake_stub(sent);
        let got = python_call(dir.path(), port);
        let want = if told.starts_with("sent") {
            format!("_stubnet.RemoteError: not_connected: 127.0.0.1:{port} {told}")
        } else {
            told
        };
        assert_eq!(got, want);
    }
}

/// A "stub" that answers each request, on the connection it came by, with its first argument:
/// its port.
fn echo_stub() -> u16 {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(&conn).lines().map_while(Result::ok) {
                    let request: serde_json::Value = serde_json::from_str(&line).unwrap();
                    let data = &request["data"];
                    let data =
                        serde_json::json!({"id": data["id"], "result": {"Ok": data["args"][0]}});
                    let reply = serde_json::json!({"cmd": "reply", "data": data});
                    if writeln!(&conn, "{reply}").is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

/// After a fork (multiprocessing's default on Linux before Python 3.14) parent and child each
/// get their own answers, and the parent's connection goes on. The child used to inherit the
/// parent's connection without its reader thread: its calls went out on the parent's socket
/// with ids the parent also used (the parent got the child's answers) and timed out.
#[test]
fn the_python_helper_in_a_forked_child_calls_on_a_connection_of_its_own() {
    let dir = helper_dir();
    let port = echo_stub().to_string();
    let script = r#"
import os, threading, warnings, _stubnet
warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() with the reader thread
def burst(who):
    """`who`'s 20 threads each call at once: the calls not answered with their own argument."""
    got = {}
    def one(i):
        mine = f"{who} {i}"
        try:
            got[mine] = _stubnet.call("m", "echo", mine)
        except Exception as e:
            got[mine] = f"{type(e).__name__}: {e}"
    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return "; ".join(f"{k} got {v!r}" for k, v in sorted(got.items()) if k != v) or "ok"
assert _stubnet.call("m", "echo", "first") == "first"
connection = _stubnet._connection
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.write(w, burst("child").encode())
    os._exit(0)
os.close(w)
parent = burst("parent")
told = b"".join(iter(lambda: os.read(r, 1 << 16), b"")).decode()
os.waitpid(child, 0)
after = "ok" if _stubnet._connection is connection else "connected again"
after = after if _stubnet.call("m", "echo", "last") == "last" else "a wrong answer"
print(f"parent: {parent}; child: {told}; after: {after}")
"#;
    let got = python(dir.path(), script, &[("STUBNET_APP_PORT", &port)]);
    assert_eq!(got, "parent: ok; child: ok; after: ok");
}

/// An argument dict with a key that is not a str is refused before anything is sent, as the
/// worker refuses such a result: json.dumps used to write the key as a str ({1: 'a', '1': 'b'}
/// arrived as {'1': 'b'}, {True: 1} as {'true': 1}).
#[test]
fn the_python_helper_refuses_an_argument_with_a_key_that_is_no_str() {
    let dir = helper_dir();
    let port = echo_stub().to_string();
    let script = r#"
import _stubnet
told = []
for args, kwargs in [
    (({1: "a", "1": "b"},), {}),
    ((["x", {"k": {True: 1}}],), {}),
    (("x",), {"table": {"a": [{None: 2}]}}),
    (({1.5: 3},), {}),
    (({"k": ["{"], "{": "}"},), {}),  # braces only in texts: sent (and echoed, keys sorted)
]:
    try:
        told.append(repr(_stubnet.call("m", "f", *args, **kwargs)))
    except TypeError as e:
        told.append(str(e))
told.append(repr(_stubnet.call("m", "f", {"k": 1})))
print(" | ".join(told))
"#;
    let got = python(dir.path(), script, &[("STUBNET_APP_PORT", &port)]);
    let refused =
        |at: &str, kind: &str| format!("m.f: {at} has a key of type {kind}; JSON keys are str");
    let want = [
        refused("args[0]", "int"),
        refused("args[0][1]['k']", "bool"),
        refused("kwargs['table']['a'][0]", "NoneType"),
        refused("args[0]", "float"),
        "{'k': ['{'], '{': '}'}".to_owned(),
        "{'k': 1}".to_owned(),
    ];
    assert_eq!(got, want.join(" | "));
}

/// A call that times out waiting for its turn to write, behind another call's long request,
/// says so: it used to blame the stub for not reading.
#[test]
fn the_python_helper_says_a_call_timed_out_behind_another_calls_write() {
    let dir = helper_dir();
    // A "stub" that never reads: the long request holds the turn to write until its timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().map_while(Result::ok).collect();
        drop(held);
    });
    let script = r#"
import threading, time, _stubnet
_stubnet.connect()
long = threading.Thread(target=_stubnet.call, args=("m", "long", "x" * (32 << 20)), daemon=True)
long.start()
while long.is_alive() and not _stubnet._connection.send_lock.locked():
    time.sleep(0.01)
_stubnet.set_timeout(0.5)
try:
    _stubnet.call("m", "short")
except TimeoutError as e:
    print(e)
"#;
    let got = python(dir.path(), script, &[("STUBNET_APP_PORT", &port)]);
    let want = "m.short: not sent within 0.5 s (it waited all that time behind other calls' \
                requests being written)";
    assert_eq!(got, want);
}

/// A timeout under a millisecond is told the stub as 1 ms: rounded down to 0, the stub failed
/// the call at once. (What the helper would send is caught before it is sent.)
#[test]
fn the_python_helper_tells_the_stub_a_timeout_rounded_up_to_the_millisecond() {
    let dir = helper_dir();
    let script = r#"
import _stubnet
class Told:
    def request(self, cmd, data, timeout, what, spent):
        return {"Ok": data["timeout_ms"]}
_stubnet._connected = lambda timeout, what: (Told(), 0)
told = []
for seconds in (0.0005, 0.0015, 2):
    _stubnet.set_timeout(seconds)
    told.append(_stubnet.call("m", "f"))
print(told)
"#;
    assert_eq!(python(dir.path(), script, &[]), "[1, 2, 2000]");
}
