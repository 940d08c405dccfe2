//! Python module source → [`ModuleDescriptor`].
//!
//! The owner of a module reads its `.py` file and turns it into the descriptor every stub sees:
//! the exported top-level functions with their parameters, annotations, defaults, return
//! annotation, first docstring line and `async`-ness. The source is parsed with
//! `rustpython-parser`, so any syntax error anywhere in the file is reported with its line.
//! Where that parser is laxer or vaguer than Python (assignment targets, bare generator
//! arguments, `*, **kwargs`, unterminated strings and brackets, indentation of blank lines,
//! and what Python's compiler refuses: `return`, `yield` or `await` outside a function, `break`
//! outside a loop, misplaced `__future__` imports...), this module adds the check or moves the
//! error to the line Python names.
//!
//! Which functions are exported: a top-level `def` whose nearest non-blank line above it (above
//! its decorators) is the comment line `#%function%`; if the file has no such marker line at
//! all, every top-level function whose name does not start with `_`. A `def` in the block of a
//! top-level `if`, `try` or `with` counts as top-level, but not one under
//! `if __name__ == "__main__":` or `if TYPE_CHECKING:`. When a name is defined more than once,
//! the last definition gives the header and the position, and the name is exported if any of
//! its definitions is.
//!
//! Defaults and annotations are kept as the source text of their expressions (trimmed, line
//! endings normalised to `\n`), so the descriptor is the same for LF and CRLF files.

use std::borrow::Cow;
use std::collections::HashMap;

use rustpython_parser::ast::{self, Constant, Expr, Ranged, Stmt};
use rustpython_parser::text_size::{TextRange, TextSize};
use rustpython_parser::Parse;
use unicode_normalization::UnicodeNormalization;

use crate::module::{FunctionDesc, ModuleDescriptor, Param, ParamKind};

pub mod encoding;
mod grammar;
mod lexed;
mod scopes;
#[cfg(test)]
mod tests;

use lexed::Lexed;
use scopes::{check_scopes, Pass};

/// A module source that cannot be parsed; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// The comment that marks the next top-level function as exported.
const MARKER: &str = "%function%";

/// Python's message for `def f(*, **kwargs)`.
const BARE_STAR: &str = "named arguments must follow bare *";

/// Stack for parsing each byte of source. The parser keeps its own stack, but rustpython turns
/// nested assignment targets into stores recursively and drops the syntax tree recursively: one
/// level per byte at worst. Measured worst cases: ~260 bytes of stack per byte optimised, ~1400
/// in a debug build (`[[[[a]]]] = 1`); three to four times that, for safety.
const STACK_PER_BYTE: usize = if cfg!(debug_assertions) { 4096 } else { 1024 };

/// Parses `source` (the text of a Python file) into the descriptor of module `module`.
pub fn parse_module(module: &str, source: &str) -> Result<ModuleDescriptor, ParseError> {
    // On a thread whose stack grows with the source: a few thousand levels of nesting, which
    // Python accepts, would overflow the caller's (tests/fuzz_regressions/pyparse). The stack is
    // only reserved: untouched pages cost nothing.
    let stack = source
        .len()
        .saturating_mul(STACK_PER_BYTE)
        .saturating_add(1 << 20);
    std::thread::scope(|scope| {
        let parser = std::thread::Builder::new()
            .name("pyparse".into())
            .stack_size(stack)
            .spawn_scoped(scope, || parse_on_this_thread(module, source))
            .map_err(|e| ParseError {
                line: 1,
                message: format!("source of {} bytes is too large: {e}", source.len()),
            })?;
        parser
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// [`parse_module`]'s work, on a stack large enough for `source`.
fn parse_on_this_thread(module: &str, source: &str) -> Result<ModuleDescriptor, ParseError> {
    // A UTF-8 BOM is legal at the start of a Python file but is not Python.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let src = Source::new(source);
    let (suite, lexed) = parse_suite(module, &src)?;
    let markers = src.marker_lines(&lexed.strings);

    // Every top-level def, with whether it is exported by itself.
    let mut top_level = Vec::new();
    module_level_defs(&suite, &mut top_level);
    let defs: Vec<(FnDef, bool)> = top_level
        .into_iter()
        .map(|def| {
            let exported = if markers.is_empty() {
                !def.name.starts_with('_')
            } else {
                let header = src.line_index(header_start(&def, &lexed.ats));
                src.preceding_nonblank_line(header)
                    .is_some_and(|line| markers.binary_search(&line).is_ok())
            };
            (def, exported)
        })
        .collect();

    // A name is exported if any of its definitions is; the last one is what Python binds.
    let mut names: HashMap<&str, (usize, bool)> = HashMap::new();
    for (i, (def, exported)) in defs.iter().enumerate() {
        let entry = names.entry(&def.name).or_insert((i, false));
        *entry = (i, entry.1 || *exported);
    }
    let mut functions = Vec::new();
    for (i, (def, _)) in defs.iter().enumerate() {
        if names.get(def.name.as_ref()) == Some(&(i, true)) {
            functions.push(describe(def, &src)?);
        }
    }
    Ok(ModuleDescriptor {
        module: module.to_string(),
        functions,
        attributes: Vec::new(),
    })
}

/// Parses the whole source, with the syntax checks the parser itself leaves out.
fn parse_suite(module: &str, src: &Source) -> Result<(ast::Suite, Lexed), ParseError> {
    let lexable = src.with_blank_indentation_as_spaces();
    let (tokens, lexed) = Lexed::new(&lexable);
    let error_at = |offset: TextSize, message: String| {
        // Report the earliest error, as Python does.
        match lexed.bare_star.filter(|&star| star < offset) {
            Some(star) => ParseError {
                line: src.line_of(star),
                message: BARE_STAR.to_string(),
            },
            None => ParseError {
                line: src.line_of(offset),
                message,
            },
        }
    };
    let suite = ast::Suite::parse_tokens(tokens, module).map_err(|e| {
        let (offset, message) = lexed.explain(e);
        error_at(offset, message)
    })?;
    // What Python's parser refuses and rustpython's does not, then what its compiler refuses.
    let checked = check_scopes(&suite, &lexed.parens);
    if let Err((Pass::Parser, at, message)) = checked {
        return Err(error_at(at, message));
    }
    if let Some(star) = lexed.bare_star {
        return Err(error_at(star, BARE_STAR.to_string()));
    }
    checked.map_err(|(_, at, message)| ParseError {
        line: src.line_of(at),
        message,
    })?;
    Ok((suite, lexed))
}

/// An identifier as Python reads it: NFKC-normalised (`ﬁx` is `fix`, `ℕ` is `N`), which is the
/// name a call must use. The parser keeps identifiers as written.
fn python_name(written: &str) -> Cow<'_, str> {
    match written.is_ascii() {
        true => Cow::Borrowed(written),
        false => Cow::Owned(written.nfkc().collect()),
    }
}

/// The parts of a `def` or `async def` statement this module needs.
struct FnDef<'a> {
    /// As Python binds it (see [`python_name`]).
    name: Cow<'a, str>,
    args: &'a ast::Arguments,
    body: &'a [Stmt],
    decorators: &'a [Expr],
    returns: Option<&'a Expr>,
    is_async: bool,
    range: TextRange,
}

impl<'a> FnDef<'a> {
    fn of(stmt: &'a Stmt) -> Option<Self> {
        match stmt {
            Stmt::FunctionDef(d) => Some(FnDef {
                name: python_name(&d.name),
                args: &d.args,
                body: &d.body,
                decorators: &d.decorator_list,
                returns: d.returns.as_deref(),
                is_async: false,
                range: d.range,
            }),
            Stmt::AsyncFunctionDef(d) => Some(FnDef {
                name: python_name(&d.name),
                args: &d.args,
                body: &d.body,
                decorators: &d.decorator_list,
                returns: d.returns.as_deref(),
                is_async: true,
                range: d.range,
            }),
            _ => None,
        }
    }
}

/// The defs of `suite` that bind a name of the module when it is imported, in source order:
/// those at its top level and in the blocks of its top-level `if`, `try` and `with` statements
/// (`try: from fast import f` / `except ImportError: def f(...)`), but not under
/// `if __name__ == "__main__":` or `if TYPE_CHECKING:`, which do not run on import. Which branch
/// runs is not known here: as for any name defined twice, the last definition gives the header.
fn module_level_defs<'a>(suite: &'a [Stmt], defs: &mut Vec<FnDef<'a>>) {
    for stmt in suite {
        if let Some(def) = FnDef::of(stmt) {
            defs.push(def);
            continue;
        }
        let blocks: Vec<&[Stmt]> = match stmt {
            Stmt::If(s) if runs_not_on_import(&s.test) => vec![&s.orelse],
            Stmt::If(s) => vec![&s.body, &s.orelse],
            Stmt::With(s) => vec![&s.body],
            Stmt::AsyncWith(s) => vec![&s.body],
            Stmt::Try(s) => try_blocks(&s.body, &s.handlers, &s.orelse, &s.finalbody),
            Stmt::TryStar(s) => try_blocks(&s.body, &s.handlers, &s.orelse, &s.finalbody),
            _ => continue,
        };
        for block in blocks {
            module_level_defs(block, defs);
        }
    }
}

/// A `try` statement's blocks, in source order: its body, its handlers', `else`, `finally`.
fn try_blocks<'a>(
    body: &'a [Stmt],
    handlers: &'a [ast::ExceptHandler],
    orelse: &'a [Stmt],
    finalbody: &'a [Stmt],
) -> Vec<&'a [Stmt]> {
    let handled = (handlers.iter()).map(|ast::ExceptHandler::ExceptHandler(h)| &h.body[..]);
    [body]
        .into_iter()
        .chain(handled)
        .chain([orelse, finalbody])
        .collect()
}

/// Whether `test` is `__name__ == "__main__"` (either way round) or `TYPE_CHECKING` (also
/// `typing.TYPE_CHECKING`): false when a module is imported.
fn runs_not_on_import(test: &Expr) -> bool {
    let compare = match test {
        Expr::Name(n) => return n.id.as_str() == "TYPE_CHECKING",
        Expr::Attribute(a) => return a.attr.as_str() == "TYPE_CHECKING",
        Expr::Compare(compare) => compare,
        _ => return false,
    };
    let is = |e: &Expr, name: bool| match e {
        Expr::Name(n) => name && n.id.as_str() == "__name__",
        Expr::Constant(c) => !name && matches!(&c.value, Constant::Str(s) if s == "__main__"),
        _ => false,
    };
    let [ast::CmpOp::Eq] = compare.ops[..] else {
        return false;
    };
    let (left, right) = (&*compare.left, &compare.comparators[0]);
    (is(left, true) && is(right, false)) || (is(left, false) && is(right, true))
}

/// Where a def's header begins: its first decorator's `@`, else the statement itself.
fn header_start(def: &FnDef, ats: &[TextSize]) -> TextSize {
    let Some(first) = def.decorators.first() else {
        return def.range.start();
    };
    // The decorator expression starts after its `@` (and any opening parenthesis), so the
    // header starts at the last `@` token before it.
    let before = ats.partition_point(|&at| at < first.start());
    before
        .checked_sub(1)
        .and_then(|i| ats.get(i))
        .copied()
        .unwrap_or_else(|| first.start())
}

/// Builds the descriptor of one exported function.
fn describe(def: &FnDef, src: &Source) -> Result<FunctionDesc, ParseError> {
    let args = def.args;
    let params = with_defaults(&args.posonlyargs, ParamKind::PositionalOnly)
        .chain(with_defaults(&args.args, ParamKind::Positional))
        .chain(
            args.vararg
                .as_deref()
                .map(|a| (a, None, ParamKind::VarPositional)),
        )
        .chain(with_defaults(&args.kwonlyargs, ParamKind::KeywordOnly))
        .chain(
            args.kwarg
                .as_deref()
                .map(|a| (a, None, ParamKind::VarKeyword)),
        )
        .map(|(arg, default, kind)| param(arg, default, kind, src))
        .collect::<Result<_, _>>()?;
    Ok(FunctionDesc {
        name: def.name.clone().into_owned(),
        params,
        returns: def.returns.map(|e| src.text(e.range())).transpose()?,
        doc: docstring_summary(def.body),
        is_async: def.is_async,
        wrapped_by: (def.decorators.iter())
            .find(|d| !decorator_name(d).is_some_and(|name| KEEP_ARGUMENTS.contains(&name)))
            // Named without its arguments: `bp.route`, not `bp.route("/x", methods=[...])`.
            .map(|d| match d {
                Expr::Call(c) => src.text(c.func.range()),
                _ => src.text(d.range()),
            })
            .transpose()?,
    })
}

/// Decorators known to leave a function's arguments as written (by their last name:
/// `functools.lru_cache(maxsize=2)` is `lru_cache`). Any other may supply an argument or add
/// one (`@with_instrument` calling `f(instrument, x)` as `f(x)`), so its header is not held to.
const KEEP_ARGUMENTS: &[&str] = &[
    "staticmethod",
    "cache",
    "lru_cache",
    "contextmanager",
    "asynccontextmanager",
    "final",
    "overload",
    "override",
    "no_type_check",
    "deprecated",
    "register",
];

/// A decorator's last name: `a.b` and `a.b(...)` are `b`.
fn decorator_name(decorator: &Expr) -> Option<&str> {
    match decorator {
        Expr::Name(n) => Some(n.id.as_str()),
        Expr::Attribute(a) => Some(a.attr.as_str()),
        Expr::Call(c) => decorator_name(&c.func),
        _ => None,
    }
}

fn with_defaults(
    args: &[ast::ArgWithDefault],
    kind: ParamKind,
) -> impl Iterator<Item = (&ast::Arg, Option<&Expr>, ParamKind)> {
    args.iter()
        .map(move |a| (&a.def, a.default.as_deref(), kind))
}

fn param(
    arg: &ast::Arg,
    default: Option<&Expr>,
    kind: ParamKind,
    src: &Source,
) -> Result<Param, ParseError> {
    Ok(Param {
        name: python_name(&arg.arg).into_owned(),
        kind,
        default: default.map(|e| src.text(e.range())).transpose()?,
        annotation: arg
            .annotation
            .as_deref()
            .map(|e| src.text(e.range()))
            .transpose()?,
    })
}

/// The first non-empty line of the body's docstring, trimmed.
fn docstring_summary(body: &[Stmt]) -> Option<String> {
    let Some(Stmt::Expr(stmt)) = body.first() else {
        return None;
    };
    // Only a plain (or raw) string literal is a docstring: not bytes, not an f-string.
    let Expr::Constant(ast::ExprConstant {
        value: Constant::Str(doc),
        ..
    }) = stmt.value.as_ref()
    else {
        return None;
    };
    // The line breaks of Python's `str.splitlines`, so the summary matches `__doc__`'s.
    doc.split(|c| {
        matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        )
    })
    .map(str::trim)
    .find(|line| !line.is_empty())
    .map(str::to_string)
}

/// The source text with its line structure.
struct Source<'a> {
    text: &'a str,
    /// Byte offset of the start of each line; `\n`, `\r\n` and a lone `\r` end a line, as in
    /// Python.
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    fn new(text: &'a str) -> Self {
        let bytes = text.as_bytes();
        let mut line_starts = vec![0];
        for (i, &b) in bytes.iter().enumerate() {
            let ends_line = b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            if ends_line {
                line_starts.push(i + 1);
            }
        }
        Source { text, line_starts }
    }

    /// 0-based index of the line holding byte `offset`.
    fn line_index(&self, offset: TextSize) -> usize {
        let offset = usize::from(offset);
        self.line_starts
            .partition_point(|&start| start <= offset)
            .saturating_sub(1)
    }

    /// 1-based line number of byte `offset`.
    fn line_of(&self, offset: TextSize) -> usize {
        self.line_index(offset) + 1
    }

    /// The text of line `index` without its line break.
    fn line(&self, index: usize) -> &'a str {
        let start = self
            .line_starts
            .get(index)
            .copied()
            .unwrap_or(self.text.len());
        let end = self
            .line_starts
            .get(index + 1)
            .copied()
            .unwrap_or(self.text.len());
        let line = self.text.get(start..end).unwrap_or("");
        line.trim_end_matches(['\n', '\r'])
    }

    /// The nearest line above line `index` that is not blank.
    fn preceding_nonblank_line(&self, index: usize) -> Option<usize> {
        (0..index).rev().find(|&i| !self.line(i).trim().is_empty())
    }

    /// Sorted 0-based indices of the lines that are exactly a marker comment.
    fn marker_lines(&self, strings: &[TextRange]) -> Vec<usize> {
        let is_marker = |(i, &start): (usize, &usize)| {
            let line = self.line(i);
            let comment = line.trim().strip_prefix('#')?;
            // A line inside a multi-line string only looks like a comment.
            let hash = start + (line.len() - line.trim_start().len());
            (comment.trim() == MARKER && !inside_any(strings, hash)).then_some(i)
        };
        self.line_starts
            .iter()
            .enumerate()
            .filter_map(is_marker)
            .collect()
    }

    /// The source with the indentation of blank and comment-only lines turned into spaces,
    /// byte for byte (so offsets hold): Python ignores that indentation, but the lexer rejects
    /// a tab after spaces there. Strings that change this way are never looked at.
    fn with_blank_indentation_as_spaces(&self) -> Cow<'a, str> {
        let mut bytes: Option<Vec<u8>> = None;
        for (i, &start) in self.line_starts.iter().enumerate() {
            let line = self.line(i);
            let code = line.trim_start_matches([' ', '\t', '\x0c']);
            let indent = line.len() - code.len();
            let tabbed = line.bytes().take(indent).any(|b| b != b' ');
            if tabbed && (code.is_empty() || code.starts_with('#')) {
                let bytes = bytes.get_or_insert_with(|| self.text.as_bytes().to_vec());
                if let Some(indentation) = bytes.get_mut(start..start + indent) {
                    indentation.fill(b' ');
                }
            }
        }
        // Only ASCII whitespace was replaced by ASCII spaces, so this stays UTF-8.
        match bytes.map(String::from_utf8) {
            Some(Ok(text)) => Cow::Owned(text),
            _ => Cow::Borrowed(self.text),
        }
    }

    /// The source text of `range`, trimmed, with line breaks normalised to `\n`.
    fn text(&self, range: TextRange) -> Result<String, ParseError> {
        let slice = self
            .text
            .get(usize::from(range.start())..usize::from(range.end()))
            .ok_or_else(|| ParseError {
                line: self.line_of(range.start()),
                message: "parser returned a range outside the source".to_string(),
            })?;
        Ok(slice.trim().replace("\r\n", "\n").replace('\r', "\n"))
    }
}

/// Whether byte `offset` lies inside one of the sorted, disjoint `ranges`.
fn inside_any(ranges: &[TextRange], offset: usize) -> bool {
    let after = ranges.partition_point(|r| usize::from(r.start()) <= offset);
    after
        .checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|r| offset < usize::from(r.end()))
}
