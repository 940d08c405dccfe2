//! Generated client stubs: from a module's descriptor, the code an app uses to call it.
//!
//! Beside each received `<module>.json` a client stub writes `<module>.rs` (a Rust module: one
//! typed function per remote function, taking a [`Client`](crate::app::Client)), `<module>.py`
//! (a Python module whose functions have the remote headers) and `_stubnet.py`, the Python
//! helper the stubs of one directory share ([`PYTHON_HELPER`]); a dotted module's stubs are
//! named with `_` (`os_path.rs`). Everything here is a pure function of the descriptor and its
//! md5, except [`Args`], which generated Rust code calls.
//!
//! Rust types come from the Python annotations ([`rust_type`]): `int` `i64`, `float` `f64`, `str`
//! `String`, `bool` `bool`, `None` `()`, `list`/`List` `Vec<Value>`, `list[X]` `Vec<X>`,
//! `dict`/`Dict` `Map<String, Value>`, `dict[str, X]` `HashMap<String, X>`, `Optional[X]` and
//! `X | None` `Option<X>`; what has no annotation, or one that does not map (`bytes`, `tuple`,
//! a class...), is a `serde_json::Value`. A parameter with a default is an `Option`: `None`
//! leaves it to the remote default. Python names that are Rust keywords get `r#`; the few that
//! cannot (`self`, `_`, ...) or that would shadow what generated code uses (`Some`, ...) get a
//! `_`.
//!
//! Python stubs keep the remote headers; a default that is not a plain literal (a name, a call,
//! a list) becomes a `_stubnet.Default` that shows as written and is never sent, so the remote
//! module applies its own.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::app::CallError;
use crate::module::{FunctionDesc, ModuleDescriptor, Param, ParamKind};

/// The Python helper module generated Python stubs import, written beside them as
/// [`PYTHON_HELPER_FILE`].
pub const PYTHON_HELPER: &str = include_str!("codegen_stubnet.py");

/// The file name of [`PYTHON_HELPER`].
pub const PYTHON_HELPER_FILE: &str = "_stubnet.py";

/// The generated files of a module, `(file name, text)`: its Rust and Python stubs and the
/// Python helper (shared by every module of the directory).
pub fn stub_files(desc: &ModuleDescriptor, md5: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = stub_file_names(&desc.module)
        .into_iter()
        .map(|name| {
            let text = match name.ends_with(".rs") {
                true => rust_stub(desc, md5),
                false => python_stub(desc, md5),
            };
            (name, text)
        })
        .collect();
    files.push((PYTHON_HELPER_FILE.to_owned(), PYTHON_HELPER.to_owned()));
    files
}

/// The names of a module's own generated files (not the shared helper), to remove when it goes.
/// A dotted module's files are named with `_` (`os.path`: `os_path.rs`, `os_path.py`), so
/// `mod os_path;` and `import os_path` work. A module named like the helper gets no Python
/// stub: the helper's file is not its to take.
pub fn stub_file_names(module: &str) -> Vec<String> {
    let stem = stub_stem(module);
    let py = format!("{stem}.py");
    let mut names = vec![format!("{stem}.rs")];
    if py != PYTHON_HELPER_FILE {
        names.push(py);
    }
    names
}

/// The name an app knows a module's stubs by: the module's, dots made `_`.
fn stub_stem(module: &str) -> String {
    module.replace('.', "_")
}

// ---------------------------------------------------------------------------------------------
// What generated Rust code calls.

/// One encoded argument: `None` leaves the parameter to its default.
pub type Arg = Option<serde_json::Result<Value>>;

/// The arguments of one call, bound the way the remote header binds them: what a generated
/// Rust stub builds before [`Client::call_with`](crate::app::Client::call_with).
#[derive(Debug)]
pub struct Args {
    function: &'static str,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    /// The first positional parameter left to its default: those after it go by keyword.
    skipped: Option<&'static str>,
}

impl Args {
    pub fn new(function: &'static str) -> Self {
        Args {
            function,
            args: Vec::new(),
            kwargs: Map::new(),
            skipped: None,
        }
    }

    /// A parameter bound by position (`by_keyword`: or by keyword). After one left to its
    /// default, the others go by keyword; a positional-only one then cannot be sent.
    pub fn positional(
        mut self,
        name: &'static str,
        by_keyword: bool,
        value: Arg,
    ) -> Result<Self, CallError> {
        let Some(value) = self.encode(name, value)? else {
            self.skipped.get_or_insert(name);
            return Ok(self);
        };
        match self.skipped {
            None => self.args.push(value),
            Some(_) if by_keyword => {
                self.kwargs.insert(name.to_owned(), value);
            }
            Some(skipped) => return Err(self.cannot_pass(&format!("'{name}'"), skipped)),
        }
        Ok(self)
    }

    /// A keyword-only parameter.
    pub fn keyword(mut self, name: &'static str, value: Arg) -> Result<Self, CallError> {
        if let Some(value) = self.encode(name, value)? {
            self.kwargs.insert(name.to_owned(), value);
        }
        Ok(self)
    }

    /// `*args`: appended to the positional arguments.
    pub fn rest(mut self, values: Vec<Value>) -> Result<Self, CallError> {
        match self.skipped {
            Some(skipped) if !values.is_empty() => Err(self.cannot_pass("*args", skipped)),
            _ => {
                self.args.extend(values);
                Ok(self)
            }
        }
    }

    /// `**kwargs`: merged into the keyword arguments.
    pub fn rest_keywords(mut self, values: Map<String, Value>) -> Result<Self, CallError> {
        for (name, value) in values {
            if self.kwargs.contains_key(&name) {
                let f = self.function;
                let msg = format!("{f}() got multiple values for argument '{name}'");
                return Err(CallError::BadArguments(msg));
            }
            self.kwargs.insert(name, value);
        }
        Ok(self)
    }

    /// The positional and keyword arguments, for `call_with`.
    pub fn finish(self) -> (Vec<Value>, Map<String, Value>) {
        (self.args, self.kwargs)
    }

    fn encode(&self, name: &str, value: Arg) -> Result<Option<Value>, CallError> {
        value.transpose().map_err(|e| {
            CallError::BadArguments(format!("{}(): argument '{name}': {e}", self.function))
        })
    }

    fn cannot_pass(&self, what: &str, skipped: &str) -> CallError {
        CallError::BadArguments(format!(
            "{}(): cannot pass {what} by position while '{skipped}' is left to its default, \
             which only the remote module knows: give '{skipped}' a value",
            self.function
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Python annotations → Rust types.

/// The Rust type of a Python annotation (as written in the source); `serde_json::Value` for
/// none, or for one that does not map (the mapping is in the module docs).
pub fn rust_type(annotation: Option<&str>) -> String {
    annotation
        .and_then(|a| Ann::parse(a, 0))
        .map_or_else(|| VALUE.to_owned(), |a| a.rust())
}

const VALUE: &str = "serde_json::Value";
/// How deep annotations nest before they are given up on (a hostile header stays cheap).
const MAX_DEPTH: usize = 16;

/// An annotation expression, as far as types go: `a.b[X, Y]`, `X | Y`, or something else.
#[derive(Debug, PartialEq)]
enum Ann {
    Name(String, Vec<Ann>),
    Union(Vec<Ann>),
}

impl Ann {
    /// Parses a whole annotation; `None` if it is not one this module understands.
    fn parse(text: &str, depth: usize) -> Option<Ann> {
        if depth > MAX_DEPTH {
            return None;
        }
        let tokens = tokenize(text)?;
        let mut p = AnnParser {
            tokens: &tokens,
            at: 0,
            depth,
        };
        let ann = p.union()?;
        (p.at == tokens.len()).then_some(ann)
    }

    fn rust(&self) -> String {
        match self {
            Ann::Union(members) => union_type(members),
            Ann::Name(name, args) => named_type(name, args),
        }
    }

    fn is_none(&self) -> bool {
        matches!(self, Ann::Name(n, a) if n == "None" && a.is_empty())
    }
}

/// `X | None` and friends are `Option<X>`; any other union is a `Value`.
fn union_type(members: &[Ann]) -> String {
    let some: Vec<&Ann> = members.iter().filter(|m| !m.is_none()).collect();
    match some.as_slice() {
        [one] if some.len() < members.len() => option(one.rust()),
        [one] => one.rust(),
        _ => VALUE.to_owned(),
    }
}

fn named_type(name: &str, args: &[Ann]) -> String {
    let name = ["typing.", "typing_extensions.", "builtins."]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    match (name, args) {
        ("int", []) => "i64".into(),
        ("float", []) => "f64".into(),
        ("str", []) => "String".into(),
        ("bool", []) => "bool".into(),
        ("None", []) => "()".into(),
        ("list" | "List", []) => format!("Vec<{VALUE}>"),
        ("list" | "List", [item]) => format!("Vec<{}>", item.rust()),
        ("dict" | "Dict", []) => format!("serde_json::Map<String, {VALUE}>"),
        ("dict" | "Dict", [key, value]) if key.rust() == "String" => {
            format!("std::collections::HashMap<String, {}>", value.rust())
        }
        ("Optional", [inner]) => option(inner.rust()),
        ("Union", members) if !members.is_empty() => union_type(members),
        _ => VALUE.to_owned(),
    }
}

/// `Option<T>`, never `Option<Option<T>>`: JSON has one null.
fn option(inner: String) -> String {
    match inner.starts_with("Option<") {
        true => inner,
        false => format!("Option<{inner}>"),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    /// A string annotation (a forward reference): its text, parsed in turn.
    Str(String),
    Punct(char),
}

/// The tokens of an annotation; `None` at anything but names, strings, `.`, `[`, `]`, `,`, `|`.
fn tokenize(text: &str) -> Option<Vec<Tok>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '.' | '[' | ']' | ',' | '|' => tokens.push(Tok::Punct(c)),
            '\'' | '"' => {
                let end = text[i + 1..].find(c)? + i + 1;
                tokens.push(Tok::Str(text[i + 1..end].to_owned()));
                while chars.next_if(|&(j, _)| j <= end).is_some() {}
            }
            c if c == '_' || c.is_alphabetic() => {
                let mut name = c.to_string();
                while let Some((_, c)) = chars.next_if(|&(_, c)| c == '_' || c.is_alphanumeric()) {
                    name.push(c);
                }
                tokens.push(Tok::Name(name));
            }
            _ => return None,
        }
    }
    Some(tokens)
}

struct AnnParser<'a> {
    tokens: &'a [Tok],
    at: usize,
    depth: usize,
}

impl AnnParser<'_> {
    fn union(&mut self) -> Option<Ann> {
        let mut members = vec![self.primary()?];
        while self.eat('|') {
            members.push(self.primary()?);
        }
        Some(match members.len() {
            1 => members.pop()?,
            _ => Ann::Union(members),
        })
    }

    /// `a.b`, `a.b[X, ...]` or a string annotation.
    fn primary(&mut self) -> Option<Ann> {
        let name = match self.tokens.get(self.at)? {
            Tok::Str(s) => {
                self.at += 1;
                return Ann::parse(s, self.depth + 1);
            }
            Tok::Name(n) => n.clone(),
            Tok::Punct(_) => return None,
        };
        self.at += 1;
        let mut name = name;
        while self.eat('.') {
            match self.tokens.get(self.at)? {
                Tok::Name(n) => name = format!("{name}.{n}"),
                _ => return None,
            }
            self.at += 1;
        }
        let mut args = Vec::new();
        if self.eat('[') {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return None;
            }
            args.push(self.union()?);
            while self.eat(',') {
                args.push(self.union()?);
            }
            self.depth -= 1;
            self.eat(']').then_some(())?;
        }
        Some(Ann::Name(name, args))
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.tokens.get(self.at) == Some(&Tok::Punct(c));
        self.at += usize::from(found);
        found
    }
}

// ---------------------------------------------------------------------------------------------
// Rust stubs.

/// Rust keywords (strict, reserved, 2018+ and 2024): a Python name among them gets `r#`.
const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "static", "struct", "trait", "true", "try", "type", "unsafe", "use", "where",
    "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof",
    "unsized", "virtual", "yield",
];

/// Names `r#` cannot take, and names generated code needs unshadowed: they get a `_`.
const RUST_RENAMED: &[&str] = &[
    "self", "Self", "super", "crate", "_", "Some", "None", "Ok", "Err",
];

/// A Rust identifier for the Python `name`, not in `taken` (which it is added to).
fn rust_ident(name: &str, taken: &mut HashSet<String>) -> String {
    let mut bare = name.to_owned();
    if RUST_RENAMED.contains(&name) {
        bare.push('_');
    }
    while taken.contains(&bare) {
        bare.push('_');
    }
    taken.insert(bare.clone());
    match RUST_KEYWORDS.contains(&bare.as_str()) {
        true => format!("r#{bare}"),
        false => bare,
    }
}

/// Whether `name` is an identifier in both languages (pyparse only yields those; other
/// descriptor sources might not).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Rust's `non_snake_case` rule: no uppercase letter, no `__` inside.
fn is_snake_case(name: &str) -> bool {
    let name = name.trim_start_matches("r#").trim_matches('_');
    !name.contains("__") && !name.chars().any(char::is_uppercase)
}

/// The Rust module for `desc`: one function per remote function (and one per plain value),
/// taking a `Client` first.
pub fn rust_stub(desc: &ModuleDescriptor, md5: &str) -> String {
    let mut out = format!(
        "//! Client stub for the stubnet module `{module}` (md5 {md5}).\n//!\n\
         //! Generated by stubnet from the module's descriptor: do not edit, it is rewritten when\n\
         //! the module changes. Use it with `{mod_line}` (or `#[path = \"...\"] {mod_line}`);\n\
         //! each function calls the remote one through the local client stub.\n",
        module = desc.module,
        mod_line = mod_line(&stub_stem(&desc.module)),
    );
    let callable: Vec<&FunctionDesc> = desc
        .functions
        .iter()
        .filter(|f| is_identifier(&f.name) && f.params.iter().all(|p| is_identifier(&p.name)))
        .collect();
    let attributes: Vec<&String> = desc
        .attributes
        .iter()
        .filter(|a| is_identifier(a))
        .collect();
    if !callable.is_empty() || !attributes.is_empty() {
        // An app calls the functions it needs: the others are not worth a warning.
        out += "\n#![allow(dead_code)]\n\nuse common::app::{CallError, Client};\n";
    }
    if !callable.is_empty() {
        out += "use common::codegen::Args;\n";
    }
    let mut taken = HashSet::new();
    for f in &desc.functions {
        out += "\n";
        out += &match callable.iter().any(|c| std::ptr::eq(*c, f)) {
            true => rust_function(&desc.module, f, &mut taken),
            false => format!("// {:?}: not a Rust identifier, left out\n", f.name),
        };
    }
    for a in attributes {
        out += "\n";
        out += &rust_attribute(&desc.module, a, &mut taken);
    }
    out
}

/// How an app declares the stub file `<stem>.rs` as a module.
fn mod_line(stem: &str) -> String {
    match rust_ident(stem, &mut HashSet::new()) {
        ident if ident.trim_start_matches("r#") == stem => format!("mod {ident};"),
        renamed => format!("#[path = \"{stem}.rs\"] mod {renamed};"),
    }
}

/// A reader of the plain value `name` (a call with no arguments reads it).
fn rust_attribute(module: &str, name: &str, fn_names: &mut HashSet<String>) -> String {
    let rust_name = rust_ident(name, fn_names);
    let allow = match is_snake_case(&rust_name) {
        true => "",
        false => "#[allow(non_snake_case)]\n",
    };
    format!(
        "/// Reads the remote value `{module}.{name}`.\n{allow}\
         pub fn {rust_name}(client: &Client) -> Result<serde_json::Value, CallError> {{\n    \
         client.call_with({module:?}, {name:?}, (), serde_json::Map::new(), None)\n}}\n"
    )
}

/// One stub function: bind the arguments, call, read the result as the annotated type.
fn rust_function(module: &str, f: &FunctionDesc, fn_names: &mut HashSet<String>) -> String {
    let name = rust_ident(&f.name, fn_names);
    let mut taken = HashSet::new();
    let params: Vec<(String, &Param)> = f
        .params
        .iter()
        .map(|p| (rust_ident(&p.name, &mut taken), p))
        .collect();
    let client = rust_ident("client", &mut taken);
    let mut out = rust_docs(module, f);
    if !is_snake_case(&name) || params.iter().any(|(n, _)| !is_snake_case(n)) {
        out += "#[allow(non_snake_case)]\n";
    }
    let mut decl = vec![format!("{client}: &Client")];
    decl.extend(
        params
            .iter()
            .map(|(n, p)| format!("{n}: {}", param_type(p))),
    );
    let returns = rust_type(f.returns.as_deref());
    let one_line = format!(
        "pub fn {name}({}) -> Result<{returns}, CallError> {{\n",
        decl.join(", ")
    );
    out += &match one_line.len() <= 100 {
        true => one_line,
        // As rustfmt breaks a long header: one parameter a line.
        false => format!(
            "pub fn {name}(\n{}) -> Result<{returns}, CallError> {{\n",
            decl.iter()
                .map(|d| format!("    {d},\n"))
                .collect::<String>()
        ),
    };
    out += &format!("    let (args, kwargs) = Args::new({:?})", f.name);
    for (n, p) in &params {
        out += &format!("\n        {}?", bind_param(n, p));
    }
    out += match params.is_empty() {
        true => ".finish();\n",
        false => "\n        .finish();\n",
    };
    out += &format!(
        "    let value = {client}.call_with({module:?}, {:?}, args, kwargs, None)?;\n",
        f.name
    );
    out +=
        "    serde_json::from_value(value).map_err(|e| CallError::BadResult(e.to_string()))\n}\n";
    out
}

/// The docstring's first line and the remote header, as doc comments.
fn rust_docs(module: &str, f: &FunctionDesc) -> String {
    let mut out = String::new();
    if let Some(doc) = f.doc.as_deref().and_then(|d| d.lines().next()) {
        // A bare CR is an error in a doc comment; no control character belongs in one line.
        let doc: String = doc.trim().chars().filter(|c| !c.is_control()).collect();
        out += &format!("/// {doc}\n///\n");
    }
    let signature = f.signature();
    let signature: Vec<&str> = signature.split_whitespace().collect();
    out += &format!("/// Remote: `{module}.{}`.\n", signature.join(" "));
    out
}

/// The Rust type of a parameter: a default makes it optional (`None`: the remote default).
fn param_type(p: &Param) -> String {
    match p.kind {
        ParamKind::VarPositional => format!("Vec<{VALUE}>"),
        ParamKind::VarKeyword => format!("serde_json::Map<String, {VALUE}>"),
        _ if p.default.is_some() => option(rust_type(p.annotation.as_deref())),
        _ => rust_type(p.annotation.as_deref()),
    }
}

/// The `Args` builder call that passes the parameter `rust_name`.
fn bind_param(rust_name: &str, p: &Param) -> String {
    let value = match p.default {
        Some(_) => format!("{rust_name}.map(serde_json::to_value)"),
        None => format!("Some(serde_json::to_value({rust_name}))"),
    };
    let name = &p.name;
    match p.kind {
        ParamKind::PositionalOnly => format!(".positional({name:?}, false, {value})"),
        ParamKind::Positional => format!(".positional({name:?}, true, {value})"),
        ParamKind::KeywordOnly => format!(".keyword({name:?}, {value})"),
        ParamKind::VarPositional => format!(".rest({rust_name})"),
        ParamKind::VarKeyword => format!(".rest_keywords({rust_name})"),
    }
}

// ---------------------------------------------------------------------------------------------
// Python stubs.

const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

fn is_python_name(name: &str) -> bool {
    is_identifier(name) && !PYTHON_KEYWORDS.contains(&name)
}

/// The Python module for `desc`: one function per remote function, with the remote header.
pub fn python_stub(desc: &ModuleDescriptor, md5: &str) -> String {
    let module = &desc.module;
    let callable: Vec<&FunctionDesc> = desc
        .functions
        .iter()
        .filter(|f| is_python_name(&f.name) && f.params.iter().all(|p| is_python_name(&p.name)))
        .collect();
    // The helper's name in this module, clear of every name the functions use.
    let mut used: HashSet<&str> = callable.iter().map(|f| f.name.as_str()).collect();
    used.extend(
        callable
            .iter()
            .flat_map(|f| f.params.iter().map(|p| p.name.as_str())),
    );
    let mut helper = "_stubnet".to_owned();
    while used.contains(helper.as_str()) {
        helper.push('_');
    }
    let names: String = callable
        .iter()
        .map(|f| format!("    {},\n", py_str(&f.name)))
        .collect();
    let alias = match helper.as_str() {
        "_stubnet" => String::new(),
        other => format!(" as {other}"),
    };
    let mut out = format!(
        "\"\"\"Client stub for the stubnet module '{module}' (md5 {md5}).\n\n\
         Generated by stubnet from the module's descriptor: do not edit, it is rewritten when the\n\
         module changes. Each function calls the remote one through the local client stub (see\n\
         _stubnet.py) and returns its result; a remote exception of a built-in type is raised as\n\
         that type.\n\"\"\"\n\n\
         try:\n    from . import _stubnet{alias}\n\
         except ImportError:\n    import _stubnet{alias}\n\n\
         __all__ = [\n{names}]\n"
    );
    for f in &desc.functions {
        out += "\n\n";
        out += &match callable.iter().any(|c| std::ptr::eq(*c, f)) {
            true => python_function(module, f, &helper),
            false => format!("# {}: not a Python identifier, left out\n", py_str(&f.name)),
        };
    }
    if !desc.attributes.is_empty() {
        out += &python_attributes(module, &desc.attributes, &helper);
    }
    out
}

/// A module `__getattr__` that reads the remote module's plain values when they are asked for.
fn python_attributes(module: &str, attributes: &[String], helper: &str) -> String {
    let names: Vec<String> = attributes.iter().map(|a| py_str(a)).collect();
    format!(
        "\n\n\
         def __getattr__(name):\n    \
         \"\"\"Reads a plain value of the remote module (each read asks the network).\"\"\"\n    \
         if name in {{{}}}:\n        return {helper}.call({}, name)\n    \
         raise AttributeError(f\"module {{__name__!r}} has no attribute {{name!r}}\")\n",
        names.join(", "),
        py_str(module)
    )
}

/// One stub function: the remote header (annotations as strings), its docstring, the call.
fn python_function(module: &str, f: &FunctionDesc, helper: &str) -> String {
    let mut header = Vec::new();
    let (mut positional, mut keywords) = (Vec::new(), Vec::new());
    let (mut varargs, mut varkw) = ("()".to_owned(), "{}".to_owned());
    let mut starred = false;
    for (i, p) in f.params.iter().enumerate() {
        let name = &p.name;
        if p.kind == ParamKind::KeywordOnly && !starred {
            header.push("*".to_owned());
        }
        starred |= matches!(p.kind, ParamKind::VarPositional | ParamKind::KeywordOnly);
        header.push(python_param(p, helper));
        match p.kind {
            ParamKind::PositionalOnly => {
                positional.push(format!("({}, False, {name})", py_str(name)))
            }
            ParamKind::Positional => positional.push(format!("({}, True, {name})", py_str(name))),
            ParamKind::KeywordOnly => keywords.push(format!("{}: {name}", py_str(name))),
            ParamKind::VarPositional => varargs = name.clone(),
            ParamKind::VarKeyword => varkw = name.clone(),
        }
        let next = f.params.get(i + 1).map(|n| n.kind);
        if p.kind == ParamKind::PositionalOnly && next != Some(ParamKind::PositionalOnly) {
            header.push("/".to_owned());
        }
    }
    let returns = f
        .returns
        .as_deref()
        .map(|r| format!(" -> {}", py_str(r)))
        .unwrap_or_default();
    let async_note = if f.is_async {
        "  # async remotely; this stub blocks"
    } else {
        ""
    };
    let mut out = format!(
        "def {}({}){returns}:{async_note}\n",
        f.name,
        header.join(", ")
    );
    if let Some(doc) = f.doc.as_deref().and_then(|d| d.lines().next()) {
        out += &format!("    {}\n", py_docstring(doc.trim()));
    }
    out += &format!(
        "    return {helper}.invoke({}, {}, [{}], {varargs}, {{{}}}, {varkw})\n",
        py_str(module),
        py_str(&f.name),
        positional.join(", "),
        keywords.join(", ")
    );
    out
}

/// A parameter as in the header: `*args`, `name: "ann" = default`.
fn python_param(p: &Param, helper: &str) -> String {
    let mut s = match p.kind {
        ParamKind::VarPositional => format!("*{}", p.name),
        ParamKind::VarKeyword => format!("**{}", p.name),
        _ => p.name.clone(),
    };
    if let Some(a) = &p.annotation {
        s += &format!(": {}", py_str(a));
    }
    if let Some(d) = &p.default {
        let eq = if p.annotation.is_some() { " = " } else { "=" };
        s += eq;
        s += &python_default(d, helper);
    }
    s
}

/// A default as written if it is a plain literal (the stub can send it); otherwise a
/// `Default` that shows as written and leaves the value to the remote module (a name, a call,
/// a mutable default: nothing the stub can evaluate).
fn python_default(text: &str, helper: &str) -> String {
    match is_plain_literal(text) {
        true => text.to_owned(),
        false => format!("{helper}.Default({})", py_str(text)),
    }
}

/// `True`, `False`, `None`, one number (signed) or one single-line string that is neither
/// bytes nor an f-string.
fn is_plain_literal(text: &str) -> bool {
    if matches!(text, "True" | "False" | "None") {
        return true;
    }
    let number = text.trim_start_matches(['-', '+', ' ']);
    if number.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return is_number(number);
    }
    let body = text.trim_start_matches(['r', 'R', 'u', 'U']);
    let Some(quote) = body.chars().next().filter(|c| matches!(c, '\'' | '"')) else {
        return false;
    };
    if body.starts_with(&quote.to_string().repeat(3)) || text.contains(['\n', '\r']) {
        return false;
    }
    // The closing quote (skipping escaped characters) must be the last character.
    let mut chars = body.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            c if c == quote => return i + c.len_utf8() == body.len(),
            _ => {}
        }
    }
    false
}

/// One Python int or float literal token: `0x1f`, `0b1`, `1_000`, `.5`, `1.5e-3` (not `1j`).
fn is_number(text: &str) -> bool {
    let digits = |s: &str, radix: u32| {
        s.chars().any(|c| c.is_digit(radix)) && s.chars().all(|c| c.is_digit(radix) || c == '_')
    };
    let lower = text.to_ascii_lowercase();
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = lower.strip_prefix(prefix) {
            return digits(rest, radix);
        }
    }
    let (mantissa, exponent) = match lower.split_once('e') {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (lower.as_str(), None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let part = |s: &str| s.is_empty() || digits(s, 10);
    part(whole)
        && part(fraction)
        && digits(&format!("{whole}{fraction}"), 10)
        && exponent.is_none_or(|e| digits(e, 10))
}

/// `"""text"""` where nothing in `text` needs escaping, else an escaped string literal.
fn py_docstring(text: &str) -> String {
    match text.contains(['"', '\\']) || text.contains(char::is_control) {
        true => py_str(text),
        false => format!("\"\"\"{text}\"\"\""),
    }
}

/// A Python string literal of `text` (JSON's escapes are a subset of Python's).
fn py_str(text: &str) -> String {
    serde_json::to_string(text).expect("strings serialize")
}

#[cfg(test)]
mod tests {
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
                "std::collections::HashMap<String, Vec<i64>>".to_owned(),
            ),
            (
                "Dict[str, Any]",
                format!("std::collections::HashMap<String, {VALUE}>"),
            ),
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
            ".positional(\"name\", true, Some(serde_json::to_value(name)))?",
            ".positional(\"times\", true, times.map(serde_json::to_value))?",
            ".rest(rest)?",
            ".keyword(\"loud\", loud.map(serde_json::to_value))?",
            ".rest_keywords(extra)?",
            "client.call_with(\"z\", \"greet\", args, kwargs, None)?",
        ] {
            assert!(code.contains(bind), "{bind} in {code}");
        }
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
        ]);
        let code = rust_stub(&desc, "m");
        for want in [
            "pub fn r#type(\n    client_: &Client,\n    r#match: serde_json::Value,\n    \
             self_: serde_json::Value,\n    client: serde_json::Value,\n    __: serde_json::Value,\n    \
             r#gen: serde_json::Value,\n)",
            "client_.call_with(\"z\", \"type\"",
            ".positional(\"self\", true, Some(serde_json::to_value(self_)))?",
            ".positional(\"_\", true, Some(serde_json::to_value(__)))?",
            "pub fn self_(\n    client: &Client,\n    Some_: serde_json::Value,\n    args: serde_json::Value,",
            "pub fn self__(client: &Client)",
            "#[allow(non_snake_case)]\npub fn getValue(",
            "// \"not an identifier\": not a Rust identifier, left out",
        ] {
            assert!(code.contains(want), "{want} in {code}");
        }
        assert_eq!(
            code.matches("#[allow(non_snake_case)]").count(),
            2,
            "{code}"
        );
        // Rust's own rule: `__` and capitals are not snake case, leading `_` is.
        assert!(is_snake_case("_x") && is_snake_case("r#type") && is_snake_case("__"));
        assert!(!is_snake_case("a__b") && !is_snake_case("Some_"));
    }

    #[test]
    fn args_bind_like_python() {
        let v = |x: i64| Some(serde_json::to_value(x));
        let (args, kwargs) = Args::new("f")
            .positional("a", false, v(1))
            .and_then(|a| a.positional("b", true, None))
            .and_then(|a| a.positional("c", true, v(3)))
            .and_then(|a| a.keyword("d", v(4)))
            .and_then(|a| a.keyword("e", None))
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
            .positional("a", false, None)
            .and_then(|a| a.positional("b", false, v(2)));
        assert!(
            matches!(positional_after_gap, Err(CallError::BadArguments(m)) if m.contains("'a'"))
        );
        let rest_after_gap = Args::new("f")
            .positional("a", true, None)
            .and_then(|a| a.rest(vec![Value::Null]));
        assert!(matches!(rest_after_gap, Err(CallError::BadArguments(m)) if m.contains("*args")));
        let duplicate = Args::new("f")
            .keyword("d", v(1))
            .and_then(|a| a.rest_keywords(Map::from_iter([("d".into(), Value::Null)])));
        assert!(matches!(duplicate, Err(CallError::BadArguments(m)) if m.contains("multiple")));
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
            "#[allow(non_snake_case)]\npub fn SEP_X(",
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
}
