//! Python module source → [`ModuleDescriptor`].
//!
//! The owner of a module reads its `.py` file and turns it into the descriptor every stub sees:
//! the exported top-level functions with their parameters, annotations, defaults, return
//! annotation, first docstring line and `async`-ness. The source is parsed with
//! `rustpython-parser`, so any syntax error anywhere in the file is reported with its line.
//! Where that parser is laxer or vaguer than Python (assignment targets, bare generator
//! arguments, `*, **kwargs`, unterminated strings and brackets, indentation of blank lines),
//! this module adds the check or moves the error to the line Python names.
//!
//! Which functions are exported: a top-level `def` whose nearest non-blank line above it (above
//! its decorators) is the comment line `#%function%`; if the file has no such marker line at
//! all, every top-level function whose name does not start with `_`. When a name is defined
//! more than once, the last definition gives the header and the position, and the name is
//! exported if any of its definitions is.
//!
//! Defaults and annotations are kept as the source text of their expressions (trimmed, line
//! endings normalised to `\n`), so the descriptor is the same for LF and CRLF files.

use std::borrow::Cow;
use std::collections::HashMap;

use rustpython_parser::ast::{self, Constant, Expr, Ranged, Stmt};
use rustpython_parser::lexer::{self, LexResult, LexicalError, LexicalErrorType};
use rustpython_parser::text_size::{TextRange, TextSize};
use rustpython_parser::{Mode, Parse, Tok};

use crate::module::{FunctionDesc, ModuleDescriptor, Param, ParamKind};

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
/// in a debug build (`[[[[a]]]] = 1`); about four times that, for safety.
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
    let defs: Vec<(FnDef, bool)> = suite
        .iter()
        .filter_map(FnDef::of)
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
        let entry = names.entry(def.name).or_insert((i, false));
        *entry = (i, entry.1 || *exported);
    }
    let mut functions = Vec::new();
    for (i, (def, _)) in defs.iter().enumerate() {
        if names.get(def.name) == Some(&(i, true)) {
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
    check_grammar(&suite, &lexed.parens)
        .map_err(|(range, message)| error_at(range.start(), message.to_string()))?;
    if let Some(star) = lexed.bare_star {
        return Err(error_at(star, BARE_STAR.to_string()));
    }
    Ok((suite, lexed))
}

/// The parts of a `def` or `async def` statement this module needs.
struct FnDef<'a> {
    name: &'a str,
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
                name: d.name.as_str(),
                args: &d.args,
                body: &d.body,
                decorators: &d.decorator_list,
                returns: d.returns.as_deref(),
                is_async: false,
                range: d.range,
            }),
            Stmt::AsyncFunctionDef(d) => Some(FnDef {
                name: d.name.as_str(),
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
        // Python NFKC-normalises identifiers; the parser keeps them as written.
        name: def.name.to_string(),
        params,
        returns: def.returns.map(|e| src.text(e.range())).transpose()?,
        doc: docstring_summary(def.body),
        is_async: def.is_async,
    })
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
        name: arg.arg.as_str().to_string(),
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

/// What the marker search and the extra syntax checks need from the token stream.
#[derive(Default)]
struct Lexed {
    /// Ranges of string literals, sorted: a `#` inside one is not a comment.
    strings: Vec<TextRange>,
    /// Offsets of `@` tokens, sorted: they start decorators.
    ats: Vec<TextSize>,
    /// The first `*` of a `*, **` sequence, which the parser accepts but Python does not.
    bare_star: Option<TextSize>,
    /// `(start, end)` of each pair of matching parentheses, sorted by start.
    parens: Vec<(TextSize, TextSize)>,
    /// The innermost bracket still open when the lexer hit the end of the file.
    unclosed: Option<(TextSize, char)>,
    /// The first closing bracket of the wrong kind, with the bracket it closes.
    mismatch: Option<(TextSize, char, char)>,
}

impl Lexed {
    /// Lexes `source`: the tokens up to and including the first lexical error, for the parser
    /// (which stops there), and what this module needs from them.
    fn new(source: &str) -> (Vec<LexResult>, Self) {
        let mut tokens: Vec<LexResult> = Vec::new();
        let mut lexed = Lexed::default();
        // Open brackets, innermost last.
        let mut open = Vec::new();
        for token in lexer::lex(source, Mode::Module) {
            match token {
                Ok((tok, range)) => {
                    lexed.note(&tok, range, &tokens, &mut open);
                    tokens.push(Ok((tok, range)));
                }
                Err(error) => {
                    let after = match tokens.last() {
                        Some(Ok((_, range))) => range.end(),
                        _ => TextSize::default(),
                    };
                    let error = locate_unterminated_string(source, after, error);
                    // The lexer's end-of-file error, when not a string's, is an open bracket's.
                    if error.error == LexicalErrorType::Eof {
                        lexed.unclosed = open.last().copied();
                    }
                    tokens.push(Err(error));
                    break;
                }
            }
        }
        lexed.parens.sort_unstable();
        (tokens, lexed)
    }

    /// Records what token `tok` at `range` tells, given the tokens before it.
    fn note(
        &mut self,
        tok: &Tok,
        range: TextRange,
        before: &[LexResult],
        open: &mut Vec<(TextSize, char)>,
    ) {
        let closer = match tok {
            Tok::String { .. } => return self.strings.push(range),
            Tok::At => return self.ats.push(range.start()),
            Tok::Lpar => return open.push((range.start(), '(')),
            Tok::Lsqb => return open.push((range.start(), '[')),
            Tok::Lbrace => return open.push((range.start(), '{')),
            Tok::DoubleStar => {
                let last_two = before.len().checked_sub(2).and_then(|i| before.get(i..));
                if let Some([Ok((Tok::Star, star)), Ok((Tok::Comma, _))]) = last_two {
                    self.bare_star = self.bare_star.or(Some(star.start()));
                }
                return;
            }
            Tok::Rpar => ')',
            Tok::Rsqb => ']',
            Tok::Rbrace => '}',
            _ => return,
        };
        // A closing bracket with nothing open is an error the lexer reports itself.
        match open.pop() {
            Some((start, '(')) if closer == ')' => self.parens.push((start, range.end())),
            Some((_, opener)) if !matches!((opener, closer), ('[', ']') | ('{', '}')) => {
                self.mismatch = self.mismatch.or(Some((range.start(), closer, opener)));
            }
            _ => {}
        }
    }

    /// Where and what a parser error is, as Python would say: the parser stumbles wherever a
    /// bracket problem stops making sense, Python blames the bracket.
    fn explain(&self, error: rustpython_parser::ParseError) -> (TextSize, String) {
        match (self.mismatch, self.unclosed) {
            (Some((at, closer, opener)), _) if at <= error.offset => (
                at,
                format!(
                    "closing parenthesis '{closer}' does not match opening parenthesis '{opener}'"
                ),
            ),
            (_, Some((at, bracket))) if at < error.offset => {
                (at, format!("'{bracket}' was never closed"))
            }
            _ => (error.offset, error.error.to_string()),
        }
    }
}

/// Moves an unterminated-string error from where the lexer gave up (the next line, or the end
/// of the file) to the start of the string, where Python reports it. `after` is the end of
/// the last good token, so the failing token starts at the first non-trivia character after it.
fn locate_unterminated_string(source: &str, after: TextSize, error: LexicalError) -> LexicalError {
    let unterminated = match &error.error {
        LexicalErrorType::Eof | LexicalErrorType::StringError => true,
        LexicalErrorType::OtherError(message) => message.starts_with("EOL while scanning"),
        _ => false,
    };
    let Some(mut rest) = source.get(usize::from(after)..).filter(|_| unterminated) else {
        return error;
    };
    // Skip whitespace, comments and line continuations.
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\x0c', '\r', '\n', '\\']);
        match rest.strip_prefix('#') {
            Some(comment) => rest = comment.find(['\r', '\n']).map_or("", |i| &comment[i..]),
            None => break,
        }
    }
    let prefix = rest.find(['"', '\'']).unwrap_or(usize::MAX);
    let is_string = rest
        .get(..prefix)
        .is_some_and(|p| p.len() <= 2 && p.chars().all(|c| "rRbBuUfF".contains(c)));
    let quotes = rest.get(prefix..).unwrap_or("");
    let message = if quotes.starts_with("\"\"\"") || quotes.starts_with("'''") {
        "unterminated triple-quoted string literal"
    } else {
        "unterminated string literal"
    };
    match TextSize::try_from(source.len() - rest.len()) {
        Ok(start) if is_string && start < error.location => {
            LexicalError::new(LexicalErrorType::OtherError(message.to_string()), start)
        }
        _ => error,
    }
}

/// An offending expression's range and what is wrong with it.
type CheckError = (TextRange, &'static str);

/// Checks the syntax rules Python enforces that the parser does not: assignment and deletion
/// targets (`f() = 1`, `1 = x`, `del f()`, `for f() in x`, ...) and unparenthesised generator
/// arguments (`f(x for x in y, 1)`). Returns the earliest violation.
///
/// The walk keeps explicit work lists instead of recursing: Python accepts expressions
/// thousands of levels deep, which would overflow a thread's stack.
fn check_grammar(suite: &[Stmt], parens: &[(TextSize, TextSize)]) -> Result<(), CheckError> {
    let mut walk = Walk {
        parens,
        stmts: suite.iter().collect(),
        exprs: Vec::new(),
        first: None,
    };
    loop {
        if let Some(stmt) = walk.stmts.pop() {
            walk.stmt(stmt);
        } else if let Some(expr) = walk.exprs.pop() {
            walk.expr(expr);
        } else {
            break;
        }
    }
    walk.first.map_or(Ok(()), Err)
}

/// The state of [`check_grammar`]'s walk.
struct Walk<'a> {
    /// Matching parentheses, as in [`Lexed::parens`].
    parens: &'a [(TextSize, TextSize)],
    stmts: Vec<&'a Stmt>,
    exprs: Vec<&'a Expr>,
    /// The violation found earliest in the source so far.
    first: Option<CheckError>,
}

impl<'a> Walk<'a> {
    fn check(&mut self, result: Result<(), CheckError>) {
        if let Err(error) = result {
            if self
                .first
                .is_none_or(|first| error.0.start() < first.0.start())
            {
                self.first = Some(error);
            }
        }
    }

    /// Checks one statement and queues its children.
    fn stmt(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::FunctionDef(_) | Stmt::AsyncFunctionDef(_) | Stmt::ClassDef(_) => {
                self.definition(stmt)
            }
            Stmt::Delete(_)
            | Stmt::Assign(_)
            | Stmt::TypeAlias(_)
            | Stmt::AugAssign(_)
            | Stmt::AnnAssign(_)
            | Stmt::For(_)
            | Stmt::AsyncFor(_)
            | Stmt::With(_)
            | Stmt::AsyncWith(_) => self.binding(stmt),
            Stmt::Return(s) => self.exprs.extend(s.value.as_deref()),
            Stmt::While(ast::StmtWhile {
                test, body, orelse, ..
            })
            | Stmt::If(ast::StmtIf {
                test, body, orelse, ..
            }) => {
                self.exprs.push(test);
                self.stmts.extend(body.iter().chain(orelse));
            }
            // Patterns hold only literals and dotted names: nothing to check there.
            Stmt::Match(s) => {
                self.exprs.push(&s.subject);
                for case in &s.cases {
                    self.exprs.extend(case.guard.as_deref());
                    self.stmts.extend(&case.body);
                }
            }
            Stmt::Raise(s) => self
                .exprs
                .extend(s.exc.iter().chain(&s.cause).map(AsRef::as_ref)),
            Stmt::Try(s) => self.try_block(&s.handlers, [&s.body, &s.orelse, &s.finalbody]),
            Stmt::TryStar(s) => self.try_block(&s.handlers, [&s.body, &s.orelse, &s.finalbody]),
            Stmt::Assert(s) => self
                .exprs
                .extend(std::iter::once(&*s.test).chain(s.msg.as_deref())),
            Stmt::Expr(s) => self.exprs.push(&s.value),
            Stmt::Import(_)
            | Stmt::ImportFrom(_)
            | Stmt::Global(_)
            | Stmt::Nonlocal(_)
            | Stmt::Pass(_)
            | Stmt::Break(_)
            | Stmt::Continue(_) => {}
        }
    }

    fn try_block(&mut self, handlers: &'a [ast::ExceptHandler], blocks: [&'a Vec<Stmt>; 3]) {
        for ast::ExceptHandler::ExceptHandler(handler) in handlers {
            self.exprs.extend(handler.type_.as_deref());
            self.stmts.extend(&handler.body);
        }
        self.stmts.extend(blocks.into_iter().flatten());
    }

    /// A function or class definition.
    fn definition(&mut self, stmt: &'a Stmt) {
        let (body, decorators, type_params) = match stmt {
            Stmt::FunctionDef(ast::StmtFunctionDef {
                args,
                body,
                decorator_list,
                returns,
                type_params,
                ..
            })
            | Stmt::AsyncFunctionDef(ast::StmtAsyncFunctionDef {
                args,
                body,
                decorator_list,
                returns,
                type_params,
                ..
            }) => {
                self.arguments(args);
                self.exprs.extend(returns.as_deref());
                (body, decorator_list, type_params)
            }
            Stmt::ClassDef(c) => {
                // Class bases take no bare generator, not even a sole one.
                self.check(self.no_bare_generator(&c.bases));
                self.exprs.extend(&c.bases);
                self.exprs.extend(c.keywords.iter().map(|k| &k.value));
                (&c.body, &c.decorator_list, &c.type_params)
            }
            _ => return,
        };
        self.stmts.extend(body);
        self.exprs.extend(decorators);
        self.type_params(type_params);
    }

    /// A statement that binds or unbinds names: its targets must be assignable.
    fn binding(&mut self, stmt: &'a Stmt) {
        match stmt {
            Stmt::Delete(s) => {
                self.check(s.targets.iter().try_for_each(delete_target));
                self.exprs.extend(&s.targets);
            }
            Stmt::Assign(s) => {
                self.check(s.targets.iter().try_for_each(store_target));
                self.exprs.extend(s.targets.iter().chain([&*s.value]));
            }
            Stmt::TypeAlias(s) => {
                self.exprs.extend([&*s.name, &*s.value]);
                self.type_params(&s.type_params);
            }
            Stmt::AugAssign(s) => {
                self.check(single_target(&s.target));
                self.exprs.extend([&*s.target, &*s.value]);
            }
            Stmt::AnnAssign(s) => {
                self.check(single_target(&s.target));
                self.exprs.extend(
                    [&*s.target, &*s.annotation]
                        .into_iter()
                        .chain(s.value.as_deref()),
                );
            }
            Stmt::For(ast::StmtFor {
                target,
                iter,
                body,
                orelse,
                ..
            })
            | Stmt::AsyncFor(ast::StmtAsyncFor {
                target,
                iter,
                body,
                orelse,
                ..
            }) => {
                self.check(store_target(target));
                self.exprs.extend([&**target, &**iter]);
                self.stmts.extend(body.iter().chain(orelse));
            }
            Stmt::With(ast::StmtWith { items, body, .. })
            | Stmt::AsyncWith(ast::StmtAsyncWith { items, body, .. }) => {
                for item in items {
                    let target = item.optional_vars.as_deref();
                    self.check(target.map_or(Ok(()), store_target));
                    self.exprs
                        .extend(std::iter::once(&item.context_expr).chain(target));
                }
                self.stmts.extend(body);
            }
            _ => {}
        }
    }

    /// Checks one expression and queues its children.
    fn expr(&mut self, expr: &'a Expr) {
        let exprs = &mut self.exprs;
        match expr {
            Expr::BoolOp(e) => exprs.extend(&e.values),
            Expr::NamedExpr(e) => exprs.extend([e.target.as_ref(), e.value.as_ref()]),
            Expr::BinOp(e) => exprs.extend([e.left.as_ref(), e.right.as_ref()]),
            Expr::UnaryOp(e) => exprs.push(&e.operand),
            Expr::Lambda(e) => {
                exprs.push(&e.body);
                self.arguments(&e.args);
            }
            Expr::IfExp(e) => exprs.extend([e.test.as_ref(), e.body.as_ref(), e.orelse.as_ref()]),
            Expr::Dict(e) => exprs.extend(e.keys.iter().flatten().chain(&e.values)),
            Expr::Set(ast::ExprSet { elts, .. })
            | Expr::List(ast::ExprList { elts, .. })
            | Expr::Tuple(ast::ExprTuple { elts, .. }) => exprs.extend(elts),
            Expr::ListComp(ast::ExprListComp {
                elt, generators, ..
            })
            | Expr::SetComp(ast::ExprSetComp {
                elt, generators, ..
            })
            | Expr::GeneratorExp(ast::ExprGeneratorExp {
                elt, generators, ..
            }) => {
                exprs.push(elt);
                self.comprehensions(generators);
            }
            Expr::DictComp(e) => {
                exprs.extend([e.key.as_ref(), e.value.as_ref()]);
                self.comprehensions(&e.generators);
            }
            Expr::Await(ast::ExprAwait { value, .. })
            | Expr::YieldFrom(ast::ExprYieldFrom { value, .. })
            | Expr::Attribute(ast::ExprAttribute { value, .. })
            | Expr::Starred(ast::ExprStarred { value, .. }) => exprs.push(value),
            Expr::Yield(e) => exprs.extend(e.value.as_deref()),
            Expr::Compare(e) => exprs.extend([e.left.as_ref()].into_iter().chain(&e.comparators)),
            Expr::Call(e) => {
                exprs.push(&e.func);
                exprs.extend(e.args.iter().chain(e.keywords.iter().map(|k| &k.value)));
                // A bare generator is allowed only as the sole argument.
                if e.args.len() + e.keywords.len() > 1 {
                    self.check(self.no_bare_generator(&e.args));
                }
            }
            Expr::FormattedValue(e) => {
                exprs.push(&e.value);
                exprs.extend(e.format_spec.as_deref());
            }
            Expr::JoinedStr(e) => exprs.extend(&e.values),
            Expr::Subscript(e) => exprs.extend([e.value.as_ref(), e.slice.as_ref()]),
            Expr::Slice(e) => exprs.extend(
                e.lower
                    .iter()
                    .chain(&e.upper)
                    .chain(&e.step)
                    .map(|e| e.as_ref()),
            ),
            Expr::Constant(_) | Expr::Name(_) => {}
        }
    }

    fn comprehensions(&mut self, generators: &'a [ast::Comprehension]) {
        for generator in generators {
            self.check(store_target(&generator.target));
            self.exprs.extend([&generator.target, &generator.iter]);
            self.exprs.extend(&generator.ifs);
        }
    }

    fn arguments(&mut self, args: &'a ast::Arguments) {
        let with_defaults = args
            .posonlyargs
            .iter()
            .chain(&args.args)
            .chain(&args.kwonlyargs);
        for arg in with_defaults {
            self.exprs.extend(
                arg.default
                    .as_deref()
                    .into_iter()
                    .chain(arg.def.annotation.as_deref()),
            );
        }
        for arg in args.vararg.iter().chain(&args.kwarg) {
            self.exprs.extend(arg.annotation.as_deref());
        }
    }

    fn type_params(&mut self, params: &'a [ast::TypeParam]) {
        for param in params {
            if let ast::TypeParam::TypeVar(var) = param {
                self.exprs.extend(var.bound.as_deref());
            }
        }
    }

    /// Errs on the first generator among `args` that is not in its own parentheses.
    fn no_bare_generator(&self, args: &[Expr]) -> Result<(), CheckError> {
        let bare = args.iter().find(|arg| {
            let range = arg.range();
            matches!(arg, Expr::GeneratorExp(_))
                && self
                    .parens
                    .binary_search(&(range.start(), range.end()))
                    .is_err()
        });
        match bare {
            Some(arg) => Err((arg.range(), "Generator expression must be parenthesized")),
            None => Ok(()),
        }
    }
}

/// A target of `=`, `for`, `with ... as` or a comprehension.
fn store_target(target: &Expr) -> Result<(), CheckError> {
    match target {
        Expr::Name(_) | Expr::Attribute(_) | Expr::Subscript(_) => Ok(()),
        Expr::Starred(s) if !matches!(s.value.as_ref(), Expr::Starred(_)) => store_target(&s.value),
        Expr::Tuple(t) => t.elts.iter().try_for_each(store_target),
        Expr::List(l) => l.elts.iter().try_for_each(store_target),
        _ => Err((target.range(), "cannot assign to expression")),
    }
}

/// The target of an augmented or annotated assignment: no unpacking.
fn single_target(target: &Expr) -> Result<(), CheckError> {
    match target {
        Expr::Name(_) | Expr::Attribute(_) | Expr::Subscript(_) => Ok(()),
        _ => Err((target.range(), "illegal target for assignment")),
    }
}

/// A target of `del`: like an assignment target, without starred parts.
fn delete_target(target: &Expr) -> Result<(), CheckError> {
    match target {
        Expr::Name(_) | Expr::Attribute(_) | Expr::Subscript(_) => Ok(()),
        Expr::Tuple(t) => t.elts.iter().try_for_each(delete_target),
        Expr::List(l) => l.elts.iter().try_for_each(delete_target),
        _ => Err((target.range(), "cannot delete expression")),
    }
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

#[cfg(test)]
mod tests {
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
    }

    #[test]
    fn without_markers_public_top_level_functions_are_exported() {
        let src = "def a(): pass\ndef _b(): pass\nclass C:\n    def m(self): pass\n\
                   def d():\n    def inner(): pass\nif True:\n    def e(): pass\nasync def g(): pass\n";
        assert_eq!(names(src), ["a", "d", "g"]);
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
}
