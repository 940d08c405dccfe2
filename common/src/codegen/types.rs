//! Python annotations → Rust types, and names that are safe in both languages.

use super::*;

/// The Rust type of a Python annotation (as written in the source); `serde_json::Value` for
/// none, or for one that does not map (the mapping is in the module docs).
pub fn rust_type(annotation: Option<&str>) -> String {
    annotation
        .and_then(|a| Ann::parse(a, 0))
        .map_or_else(|| VALUE.to_owned(), |a| a.rust())
}

pub(super) const VALUE: &str = "serde_json::Value";
/// How deep annotations nest before they are given up on (a hostile header stays cheap).
pub(super) const MAX_DEPTH: usize = 16;

/// An annotation expression, as far as types go: `a.b[X, Y]`, `X | Y`, or something else.
#[derive(Debug, PartialEq)]
pub(super) enum Ann {
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
pub(super) fn union_type(members: &[Ann]) -> String {
    let some: Vec<&Ann> = members.iter().filter(|m| !m.is_none()).collect();
    match some.as_slice() {
        [one] if some.len() < members.len() => option(one.rust()),
        [one] => one.rust(),
        _ => VALUE.to_owned(),
    }
}

pub(super) fn named_type(name: &str, args: &[Ann]) -> String {
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
            format!("common::codegen::Dict<{}>", value.rust())
        }
        ("Optional", [inner]) => option(inner.rust()),
        ("Union", members) if !members.is_empty() => union_type(members),
        _ => VALUE.to_owned(),
    }
}

/// `Option<T>`, never `Option<Option<T>>`: JSON has one null.
pub(super) fn option(inner: String) -> String {
    match inner.starts_with("Option<") {
        true => inner,
        false => format!("Option<{inner}>"),
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Name(String),
    /// A string annotation (a forward reference): its text, parsed in turn.
    Str(String),
    Punct(char),
}

/// The tokens of an annotation; `None` at anything but names, strings, `.`, `[`, `]`, `,`, `|`.
pub(super) fn tokenize(text: &str) -> Option<Vec<Tok>> {
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

pub(super) struct AnnParser<'a> {
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
pub(super) const RUST_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "static", "struct", "trait", "true", "try", "type", "unsafe", "use", "where",
    "while", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof",
    "unsized", "virtual", "yield",
];

/// Names `r#` cannot take, and names generated code needs unshadowed: they get a `_`.
pub(super) const RUST_RENAMED: &[&str] = &[
    "self", "Self", "super", "crate", "_", "Some", "None", "Ok", "Err",
];

/// A Rust identifier for the Python `name`, not in `taken` (which it is added to).
pub(super) fn rust_ident(name: &str, taken: &mut HashSet<String>) -> String {
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
