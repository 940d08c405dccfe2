//! Unit tests and the corpus of tricky real-world headers.

use super::*;

fn parse(source: &str) -> ModuleDescriptor {
    match parse_module("m", source) {
        Ok(descriptor) => descriptor,
        Err(e) => panic!("unexpected error {e} for:\n{source}"),
    }
}

fn names(source: &str) -> Vec<String> {
    parse(source)
        .functions
        .into_iter()
        .map(|f| f.name)
        .collect()
}

fn error_line(source: &str) -> usize {
    match parse_module("m", source) {
        Ok(d) => panic!("expected an error, got {d:?} for:\n{source}"),
        Err(e) => e.line,
    }
}

fn only(source: &str) -> FunctionDesc {
    let mut functions = parse(source).functions;
    assert_eq!(functions.len(), 1, "{functions:?}");
    functions.remove(0)
}

fn p(name: &str, kind: ParamKind, default: Option<&str>, annotation: Option<&str>) -> Param {
    Param {
        name: name.to_string(),
        kind,
        default: default.map(str::to_string),
        annotation: annotation.map(str::to_string),
    }
}

#[test]
fn every_parameter_kind() {
    let f = only("def f(a, b: int = 1, /, c=2, *args: str, d, e=3, **kw: 'X') -> None: pass\n");
    use ParamKind::*;
    assert_eq!(
        f.params,
        vec![
            p("a", PositionalOnly, None, None),
            p("b", PositionalOnly, Some("1"), Some("int")),
            p("c", Positional, Some("2"), None),
            p("args", VarPositional, None, Some("str")),
            p("d", KeywordOnly, None, None),
            p("e", KeywordOnly, Some("3"), None),
            p("kw", VarKeyword, None, Some("'X'")),
        ]
    );
    assert_eq!(f.returns.as_deref(), Some("None"));
    assert!(!f.is_async);
    let f = only("def g(*, key): pass");
    assert_eq!(f.params, vec![p("key", KeywordOnly, None, None)]);
}

#[test]
fn defaults_are_source_text() {
    let src = "def f(a=')', b='#', c=[1, (2, {3: 4})], d=lambda x, y=(1,): (x, y),\n      \
                   e=(  1  ,), f=- 1, g=\"a\" 'b'): pass\n";
    let defaults: Vec<_> = only(src).params.into_iter().map(|p| p.default).collect();
    let want = [
        "')'",
        "'#'",
        "[1, (2, {3: 4})]",
        "lambda x, y=(1,): (x, y)",
        "(  1  ,)",
        "- 1",
        "\"a\" 'b'",
    ];
    assert_eq!(defaults, want.map(|d| Some(d.to_string())));
}

#[test]
fn multi_line_signature_with_comments() {
    let src = "def f(\n    a,  # first ) (\n    # own line\n    b: dict[str, list[int]] = {\n        'k': [1],  # x\n    },\n) -> 'Ret':\n    pass\n";
    let f = only(src);
    assert_eq!(f.params[0], p("a", ParamKind::Positional, None, None));
    assert_eq!(
        f.params[1].annotation.as_deref(),
        Some("dict[str, list[int]]")
    );
    assert_eq!(
        f.params[1].default.as_deref(),
        Some("{\n        'k': [1],  # x\n    }")
    );
    assert_eq!(f.returns.as_deref(), Some("'Ret'"));
}

#[test]
fn docstring_first_line() {
    let doc = |body: &str| only(&format!("def f():\n{body}\n")).doc;
    assert_eq!(
        doc("    \"\"\"\n\n    Summary.  \n    More.\n    \"\"\""),
        Some("Summary.".into())
    );
    assert_eq!(
        doc("    '''Single quotes.'''"),
        Some("Single quotes.".into())
    );
    assert_eq!(
        doc("    r'''Raw \\n kept.'''"),
        Some("Raw \\n kept.".into())
    );
    assert_eq!(doc("    'One\\nTwo'"), Some("One".into()));
    assert_eq!(doc("    b'bytes'"), None);
    assert_eq!(doc("    f'fstring'"), None);
    assert_eq!(doc("    '   '"), None);
    assert_eq!(doc("    x = 1\n    'late'"), None);
    assert_eq!(doc("    pass"), None);
    assert_eq!(only("def f(): 'inline'").doc, Some("inline".into()));
}

#[test]
fn async_and_decorated() {
    let src = "@app.route(\n    '/x',\n    methods=['GET'],\n)\n@other\nasync def f(x): pass\n";
    let f = only(src);
    assert!(f.is_async);
    assert_eq!(f.name, "f");
    assert_eq!(f.wrapped_by.as_deref(), Some("app.route"));
}

#[test]
fn a_decorator_that_may_change_the_arguments_is_named() {
    for keeps in [
        "@functools.lru_cache(maxsize=2)\n@staticmethod\ndef f(a): pass\n",
        "@cache\n@typing.final\ndef f(a): pass\n",
        "def f(a): pass\n",
    ] {
        assert_eq!(only(keeps).wrapped_by, None, "{keeps}");
    }
    let f = only("@functools.cache\n@with_instrument('scope')\ndef f(inst, a): pass\n");
    assert_eq!(f.wrapped_by.as_deref(), Some("with_instrument"));
}

#[test]
fn without_markers_public_top_level_functions_are_exported() {
    let src = "def a(): pass\ndef _b(): pass\nclass C:\n    def m(self): pass\n\
                   def d():\n    def inner(): pass\nif True:\n    def e(): pass\nasync def g(): pass\n";
    assert_eq!(names(src), ["a", "d", "e", "g"]);
}

#[test]
fn functions_in_top_level_if_try_and_with_blocks_are_exported() {
    // What runs on import defines module functions, whichever branch it is.
    let src = [
        "import sys",
        "if sys.platform == 'win32':",
        "    def a(x): pass",
        "elif False:",
        "    pass",
        "else:",
        "    def a(x, y): pass",
        "try:",
        "    from fast import b",
        "except ImportError:",
        "    def b(n: int) -> int: pass",
        "else:",
        "    def c(): pass",
        "finally:",
        "    def d(): pass",
        "with open(__file__):",
        "    if True:",
        "        async def e(): pass",
        "try:",
        "    pass",
        "except* OSError:",
        "    def f(): pass",
        "for i in range(1):",
        "    def loop(): pass",
        "class K:",
        "    def method(self): pass",
    ]
    .join("\n");
    let d = parse(&src);
    let got: Vec<&str> = d.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(got, ["a", "b", "c", "d", "e", "f"]);
    assert_eq!(
        d.functions[0].params.len(),
        2,
        "the last definition gives the header"
    );
    assert_eq!(d.functions[1].returns.as_deref(), Some("int"));
    assert!(d.functions[4].is_async);
    // A marker, indented with its def, exports it alone.
    let src = "def a(): pass\nif True:\n    #%function%\n    def b(): pass\n";
    assert_eq!(names(src), ["b"]);
}

#[test]
fn functions_under_the_main_or_type_checking_check_are_not_exported_but_its_else_branch_is() {
    // Neither runs on import.
    let checks = [
        "__name__ == '__main__'",
        "\"__main__\" == __name__",
        "TYPE_CHECKING",
        "typing.TYPE_CHECKING",
    ];
    for check in checks {
        let src = format!(
            "def a(): pass
if {check}:
    def main(): pass
    main()
else:
    def b(): pass
"
        );
        assert_eq!(names(&src), ["a", "b"], "{check}");
    }
    // Any other check is code that runs on import.
    let src = "if __name__ != '__main__':
    def a(): pass
if __name__ == 'm':
    def b(): pass
";
    assert_eq!(names(src), ["a", "b"]);
}

#[test]
fn markers_select_functions() {
    let src = "#%function%\ndef a(): pass\n\ndef b(): pass\n\n  # %function%  \n\n\n@deco\ndef c(): pass\n\
                   #%function%\n# other comment\ndef d(): pass\n#%function%\nclass K: pass\ndef e(): pass\n\
                   #%function%\ndef _f(): pass\n@deco\n#%function%\ndef g(): pass\n\
                   def h(): pass  #%function%\ndef i(): pass\n";
    assert_eq!(names(src), ["a", "c", "_f"]);
}

#[test]
fn marker_text_inside_a_string_is_not_a_marker() {
    let src = "'''\n#%function%\n'''\ndef a(): pass\ndef _b(): pass\nx = \"\"\"\n  #%function%\n\"\"\"\ndef c(): pass\n";
    assert_eq!(names(src), ["a", "c"]);
}

#[test]
fn last_definition_wins() {
    let src = "def f(a): pass\ndef g(): pass\ndef f(a, b): pass\n";
    let d = parse(src);
    assert_eq!(d.functions.len(), 2);
    assert_eq!(d.functions[0].name, "g");
    assert_eq!(d.functions[1].params.len(), 2);
    // Marking any definition exports the name, with the header Python binds.
    let src = "#%function%\ndef f(a): pass\ndef f(a, b): pass\n";
    assert_eq!(only(src).params.len(), 2);
}

#[test]
fn unicode_source() {
    let src = "# ünïcödé ✓\ndef größe(länge: 'Größe' = \"ä😀\", *, 名字=\"默认\") -> \"字典\":\n    \"\"\"Ünïcode 😀 doc.\"\"\"\n";
    let f = only(src);
    assert_eq!(f.name, "größe");
    assert_eq!(
        f.params[0],
        p(
            "länge",
            ParamKind::Positional,
            Some("\"ä😀\""),
            Some("'Größe'")
        )
    );
    assert_eq!(f.params[1].default.as_deref(), Some("\"默认\""));
    assert_eq!(f.returns.as_deref(), Some("\"字典\""));
    assert_eq!(f.doc.as_deref(), Some("Ünïcode 😀 doc."));
}

#[test]
fn line_endings_and_bom_do_not_matter() {
    let lf = "#%function%\ndef f(a=[1,\n        2], b='x'):\n    \"\"\"Doc.\n    More.\"\"\"\n\ndef g(): pass\n";
    let expected = parse(lf);
    assert_eq!(parse(&lf.replace('\n', "\r\n")), expected);
    assert_eq!(parse(&lf.replace('\n', "\r")), expected);
    assert_eq!(parse(&format!("\u{feff}{lf}")), expected);
    assert_eq!(
        expected.functions[0].params[0].default.as_deref(),
        Some("[1,\n        2]")
    );
    assert_eq!(error_line("x = 1\r\ny = (\r\n  1 +\r\n)\r\n"), 4);
    assert_eq!(error_line("x = 1\ry = )\r"), 2);
}

#[test]
fn indentation_of_blank_and_comment_lines_is_ignored() {
    // Python ignores it; the lexer alone would reject a tab after spaces.
    for filler in [" \t\t", " \t\t# c", "    \t# c", "  \x0c  # c"] {
        let src = format!("def f():\n    if x:\n        pass\n{filler}\n    return 1\n");
        assert_eq!(names(&src), ["f"], "{src:?}");
    }
    // Inside a string such a line is content, and the default keeps it.
    let f = only("def f(a='''x\n \t\n'''): pass\n");
    assert_eq!(f.params[0].default.as_deref(), Some("'''x\n \t\n'''"));
}

#[test]
fn empty_and_comment_only_files() {
    assert_eq!(parse("").functions, vec![]);
    assert_eq!(parse("# just a comment\n\n").functions, vec![]);
    assert_eq!(parse("#%function%\n").functions, vec![]);
}

#[test]
fn syntax_errors_report_their_line() {
    assert_eq!(error_line("x = 1\n\ndef f(x y):\n    pass\n"), 3);
    assert_eq!(error_line("def f():\n    x = 1\n      y = 2\n"), 3);
    assert_eq!(error_line("import os\nprint 'x'\n"), 2);
    assert_eq!(error_line("def f(a=1, b): pass\n"), 1);
    assert_eq!(error_line("def f(a, a): pass\n"), 1);
    assert_eq!(error_line("x = 1\nif x:\npass\n"), 3);
    // A syntax error anywhere, even far from any function, fails the whole module.
    assert_eq!(
        error_line("def ok(): pass\n\nclass A:\n    def m(self):\n        return 1 +\n"),
        5
    );
    let e = parse_module("m", "x = = 1\n").unwrap_err();
    assert!(e.to_string().starts_with("line 1: "), "{e}");
}

#[test]
fn unterminated_strings_and_brackets_blame_their_start() {
    assert_eq!(error_line("x = 1\ns = 'abc\ny = 2\n"), 2);
    assert_eq!(error_line("x = 1\ns = \"\"\"abc\n\ndef f(): pass\n"), 2);
    assert_eq!(error_line("x = (1,  # c\n  rb'abc\n"), 2);
    assert_eq!(error_line("x = 1\nfoo(1,\n  2\n\ndef g(): pass\n"), 2);
    assert_eq!(error_line("x = [1,\n  (2,\ny = 3\n"), 2);
    assert_eq!(error_line("x = {1: [2, (3,\n 4]}\n"), 2);
    let e = parse_module("m", "x = (\n").unwrap_err();
    assert_eq!(e.message, "'(' was never closed");
}

#[test]
fn grammar_rules_the_parser_leaves_out() {
    for (source, line) in [
        ("x = 0\nf() = 1\n", 2),
        ("1 = x\n", 1),
        ("True = 1\n", 1),
        ("(a, b) += 1\n", 1),
        ("del f()\n", 1),
        ("for f() in x: pass\n", 1),
        ("with a as f(): pass\n", 1),
        ("x = [y for f() in z]\n", 1),
        ("def g():\n    a, (b, 1) = c\n", 2),
        ("def f(a, *, **kw): pass\n", 1),
        ("x = lambda *, **k: 1\n", 1),
        ("f(x for x in y, 1)\n", 1),
        ("class A(x for x in y): pass\n", 1),
        // Everywhere statements and expressions nest.
        ("try:\n    pass\nexcept E:\n    f() = 1\n", 4),
        ("try:\n    pass\nfinally:\n    del 1\n", 4),
        ("match x:\n    case 1:\n        [y for 1 in z]\n", 3),
        ("while x:\n    pass\nelse:\n    g() += 1\n", 4),
        ("@d(f(x for x in y, 1))\ndef g(): pass\n", 1),
        ("def g(a=lambda: [1 for f() in x]): pass\n", 1),
        ("x = f'{[1 for f() in y]}'\n", 1),
        ("class A(metaclass=f(x for x in y, 1)): pass\n", 1),
        ("async def g():\n    async with a as f(): pass\n", 2),
        ("def g() -> {k: v for k, 1 in x}: pass\n", 1),
    ] {
        assert_eq!(error_line(source), line, "{source}");
    }
    let valid = "a, *b = c\n(a.b, c[0]) = d\n[x, [y, *z]] = w\nx: int = 1\n(y): int\n\
                     del a, (b, [c.d]), e[0]\nfor a, (b, *c) in d: pass\nwith a as (b, c): pass\n\
                     f(x for x in y)\nf((x for x in y), 1)\nf((x)for x in y)\nclass B((x for x in y)): pass\n\
                     def g(a, *, b, **kw): pass\n";
    assert_eq!(names(valid), ["g"]);
}

/// What Python's compiler refuses once a file has parsed, with the line and the message it
/// gives (checked against CPython 3.11's `compile`): the worker's import would fail, so the
/// module is refused, and an edit so leaves the old version running.
#[test]
fn what_pythons_compiler_refuses_is_a_syntax_error_with_its_line() {
    for (source, expected) in [
        ("def f():\n    return [await x for x in y]\n", Some((2, "asynchronous comprehension outside of an asynchronous function"))),
        ("def f():\n    return (await x for x in y)\n", None),
        ("def f():\n    return [x async for x in y]\n", Some((2, "asynchronous comprehension outside of an asynchronous function"))),
        ("def f():\n    return (x async for x in y)\n", None),
        ("x = [await y for y in z]\n", Some((1, "asynchronous comprehension outside of an asynchronous function"))),
        ("x = [x async for x in y]\n", Some((1, "asynchronous comprehension outside of an asynchronous function"))),
        ("x = (x async for x in y)\n", None),
        ("x = (await y for y in z)\n", None),
        ("class A:\n    from os import *\n", Some((2, "import * only allowed at module level"))),
        ("class A:\n    yield 1\n", Some((2, "'yield' outside function"))),
        ("class A:\n    await x\n", Some((2, "'await' outside function"))),
        ("class A:\n    return 1\n", Some((2, "'return' outside function"))),
        ("def f():\n    class A:\n        return 1\n", Some((3, "'return' outside function"))),
        ("def f():\n    x = [(yield) for y in z]\n", Some((2, "'yield' inside list comprehension"))),
        ("def f():\n    x = [y for y in (yield)]\n", None),
        ("def f():\n    x = {(yield): 1 for y in z}\n", Some((2, "'yield' inside dict comprehension"))),
        ("def f():\n    x = ((yield) for y in z)\n", Some((2, "'yield' inside generator expression"))),
        ("x = lambda: (yield)\n", None),
        ("x = lambda: await y\n", Some((1, "'await' outside async function"))),
        ("async def f():\n    x = lambda: await y\n", Some((2, "'await' outside async function"))),
        ("for x in y:\n    def g():\n        break\n", Some((3, "'break' outside loop"))),
        ("for x in y:\n    pass\nelse:\n    break\n", Some((4, "'break' outside loop"))),
        ("while 1:\n    class A:\n        continue\n", Some((3, "'continue' not properly in loop"))),
        ("for x in y:\n    try:\n        pass\n    finally:\n        break\n", None),
        ("async def f():\n    def g():\n        async with a: pass\n", Some((3, "'async with' outside async function"))),
        ("import os\nfrom __future__ import annotations\n", Some((2, "from __future__ imports must occur at the beginning of the file"))),
        ("\"\"\"doc\"\"\"\nfrom __future__ import annotations\nfrom __future__ import division\n", None),
        ("from __future__ import annotations, nope\n", Some((1, "future feature nope is not defined"))),
        ("from __future__ import braces\n", Some((1, "not a chance"))),
        ("def f():\n    from __future__ import annotations\n", Some((2, "from __future__ imports must occur at the beginning of the file"))),
        ("if 1:\n    from __future__ import annotations\n", Some((2, "from __future__ imports must occur at the beginning of the file"))),
        ("x = 1\n@(yield)\ndef f(): pass\n", Some((2, "'yield' outside function"))),
        ("def f(a=(yield)): pass\n", Some((1, "'yield' outside function"))),
        ("def f(a: (yield)): pass\n", Some((1, "'yield' outside function"))),
        ("class A((yield)): pass\n", Some((1, "'yield' outside function"))),
        ("def f():\n    class A:\n        x = yield 1\n", Some((3, "'yield' outside function"))),
        ("async def f():\n    yield 1\n    return 2\n", Some((3, "'return' with value in async generator"))),
        ("async def f():\n    return [x async for x in y]\n", None),
        ("def f():\n    return [[x async for x in y] for z in w]\n", Some((2, "asynchronous comprehension outside of an asynchronous function"))),
        ("async def f():\n    def g():\n        return [x async for x in y]\n", Some((3, "asynchronous comprehension outside of an asynchronous function"))),
        ("x = 1\nawait x\n", Some((2, "'await' outside function"))),
        ("def f(): await x\n", Some((1, "'await' outside async function"))),
        ("from __future__ import (annotations)\n", None),
        ("\"\"\"d\"\"\"\n\"\"\"e\"\"\"\nfrom __future__ import annotations\n", Some((3, "from __future__ imports must occur at the beginning of the file"))),
        ("#c\n\nfrom __future__ import annotations\n", None),
        ("x = [i for i in range(3) if (yield)]\n", Some((1, "'yield' inside list comprehension"))),
        ("def f():\n    return [i for i in range(3) if (yield)]\n", Some((2, "'yield' inside list comprehension"))),
        ("def f():\n    return [i for i in range(3) for j in (yield)]\n", Some((2, "'yield' inside list comprehension"))),
        ("async def f():\n    return [i async for i in (await x)]\n", None),
        ("def f():\n    return [i for i in await x]\n", Some((2, "'await' outside async function"))),
        ("def f():\n    return [i for i in (j async for j in x)]\n", None),
        ("async def f():\n    async for x in y:\n        break\n", None),
        ("for x in y:\n    async def g():\n        continue\n", Some((3, "'continue' not properly in loop"))),
        ("def f():\n    async for x in y: pass\n", Some((2, "'async for' outside async function"))),
        ("def f():\n    async with x: pass\n", Some((2, "'async with' outside async function"))),
        ("async def f():\n    class A:\n        await x\n", Some((3, "'await' outside function"))),
        ("async def f():\n    class A:\n        async with x: pass\n", Some((3, "'async with' outside async function"))),
        ("async def f():\n    x = [await y for y in z]\n", None),
        ("def f():\n    def g():\n        pass\n    await x\n", Some((4, "'await' outside async function"))),
        ("with a:\n    return\n", Some((2, "'return' outside function"))),
        ("x = [i for i in [await j for j in y]]\n", Some((1, "asynchronous comprehension outside of an asynchronous function"))),
        ("async def f():\n    return {await x: 1 for x in y}\n", None),
        ("def f():\n    return {x: y async for x, y in z}\n", Some((2, "asynchronous comprehension outside of an asynchronous function"))),
        ("x = 1\n\nfrom __future__ import annotations\n", Some((3, "from __future__ imports must occur at the beginning of the file"))),
        ("from __future__ import annotations\nimport os\nfrom __future__ import division\n", Some((3, "from __future__ imports must occur at the beginning of the file"))),
        ("x = ([await j for j in y] for i in z)\n", None),
        ("def f():\n    return ([await j for j in y] for i in z)\n", None),
        ("def f():\n    return ([j async for j in y] for i in z)\n", None),
        ("async def f():\n    class A:\n        x = [await y for y in z]\n", Some((3, "asynchronous comprehension outside of an asynchronous function"))),
        ("x = [\n    i\n    for i in y\n    if await i\n]\n", Some((1, "asynchronous comprehension outside of an asynchronous function"))),
        ("def f():\n    return [\n        i\n        for i in y\n        if await i\n    ]\n", Some((2, "asynchronous comprehension outside of an asynchronous function"))),
        ("x = [i async for i in y for j in (yield)]\n", Some((1, "'yield' inside list comprehension"))),
        ("def f():\n    return 1\nx = 2\nyield 3\nreturn 4\n", Some((4, "'yield' outside function"))),
        ("x = 1\nreturn 2\nfrom os import *\ndef g():\n    from os import *\n", Some((5, "import * only allowed at module level"))),
        ("return 1\nnonlocal x\n", Some((2, "nonlocal declaration not allowed at module level"))),
        ("break\nimport os\nfrom __future__ import annotations\n", Some((1, "'break' outside loop"))),
        ("x = (yield)\nx = [(yield) for y in z]\n", Some((2, "'yield' inside list comprehension"))),
        ("def f():\n    await x\n    yield 1\nreturn\n", Some((2, "'await' outside async function"))),
        ("async def f():\n    if x:\n        return 1\n    def g():\n        yield 2\n    return 3\n", None),
        ("async def f():\n    if x:\n        return\n    yield 2\n", None),
        ("async def f():\n    x = lambda: (yield)\n    return 3\n", None),
        ("async def f():\n    x = [(yield) for i in y]\n    return 3\n", Some((2, "'yield' inside list comprehension"))),
        ("async def f():\n    return 3\n    yield\n", Some((2, "'return' with value in async generator"))),
        ("async def f():\n    yield from y\n", Some((2, "'yield from' inside async function"))),
    ] {
        let got = parse_module("m", source).err().map(|e| (e.line, e.message));
        let expected = expected.map(|(line, message)| (line, message.to_string()));
        assert_eq!(got, expected, "{source}");
    }
}

#[test]
fn deep_expressions_do_not_overflow_the_stack() {
    // Python itself accepts expressions nested a few thousand levels deep.
    let sum = vec!["1"; 3000].join("+");
    let f = only(&format!(
        "x = {}1\ndef f(a={sum}): pass\n",
        "-".repeat(3000)
    ));
    assert_eq!(f.params[0].default.as_deref(), Some(sum.as_str()));
}

/// Each `tests/corpus/NAME.py` has `NAME.expected.json` (the descriptor of module `NAME`)
/// or `NAME.expected_error` (the error's line number). The expectations were checked
/// against CPython's `ast` and `inspect.signature`.
#[test]
fn corpus() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus"));
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 10,
        "corpus has only {} files",
        entries.len()
    );
    let mut failures = Vec::new();
    for path in &entries {
        if let Err(failure) = check_corpus_file(path) {
            failures.push(format!("{}: {failure}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn check_corpus_file(path: &std::path::Path) -> Result<(), String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("bad name")?;
    let source = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    if name.contains("crlf") && !source.contains("\r\n") {
        return Err("lost its CRLF line endings (check .gitattributes)".into());
    }
    let got = parse_module(name, &source);
    let json = path.with_file_name(format!("{name}.expected.json"));
    let error = path.with_file_name(format!("{name}.expected_error"));
    if let Ok(text) = std::fs::read_to_string(&json) {
        let want: ModuleDescriptor = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match got {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!(
                "got\n{}",
                serde_json::to_string_pretty(&got).unwrap_or_default()
            )),
            Err(e) => Err(format!("unexpected error {e}")),
        }
    } else if let Ok(text) = std::fs::read_to_string(&error) {
        let want: usize = text.trim().parse().map_err(|_| "bad expected_error")?;
        match got {
            Err(e) if e.line == want => Ok(()),
            Err(e) => Err(format!("expected an error on line {want}, got {e}")),
            Ok(_) => Err(format!(
                "expected an error on line {want}, got a descriptor"
            )),
        }
    } else {
        Err("no expected.json or expected_error".into())
    }
}

#[test]
fn names_are_the_ones_python_binds_normalised_as_it_normalises_them() {
    // Python reads `ℕ` as `N` and `ﬁrst` as `first` (NFKC): a call must use those names.
    let source =
        "def ℕ(ﬁrst, *, ｂ=1):\n    pass\n\ndef ﬁx():\n    pass\n\ndef fix(a):\n    pass\n";
    assert_eq!(names(source), ["N", "fix"]);
    let desc = parse(source);
    let params: Vec<&str> = (desc.functions[0].params.iter())
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(params, ["first", "b"]);
    // Defined twice under one name, as Python sees it: the last definition is the header.
    assert_eq!(desc.functions[1].params[0].name, "a");
}
