//! The one walk over a parsed file that checks it as Python would: the parser's own rules
//! (`grammar.rs`), and where statements and expressions may stand, which Python's compiler
//! checks once the file has parsed (`return`, `yield` or `await` outside a function, `break`
//! outside a loop, `await` in a plain `def`, misplaced `from __future__` imports...).
//! rustpython's parser accepts them, and the worker's import would fail: a module edited so
//! must be refused as a syntax error is, leaving its old version running.
//!
//! Python reports these in passes, each over the whole file: `__future__` features first, then
//! its symbol table's errors, then the compiler's; within a pass, the earliest. (Its compiler
//! also reaches a `finally` block from each `break`, `continue` or `return` of its `try`: a
//! file with errors in both may be refused for another of them than Python names first.)
//! Newer syntax than the worker's interpreter takes (3.12's `type X = int` under 3.11) cannot
//! be told from here: its import fails.

use rustpython_parser::ast::{self, Constant, Expr, Ranged, Stmt};
use rustpython_parser::text_size::TextSize;

use super::grammar::{
    delete_target, no_bare_generator, single_target, store_target, CheckError, Parens,
};

/// Who refuses it, the offending node's start and what is wrong with it.
pub(super) type ScopeError = (Pass, TextSize, String);

/// The `__future__` features Python knows (`braces` gets an answer of its own).
const FEATURES: &[&str] = &[
    "nested_scopes",
    "generators",
    "division",
    "absolute_import",
    "with_statement",
    "print_function",
    "unicode_literals",
    "barry_as_FLUFL",
    "generator_stop",
    "annotations",
];

/// Which of Python's passes reports an error: the earlier pass wins, whatever the lines.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Pass {
    /// The parser's own rules, which rustpython's parser does not apply (see `grammar.rs`).
    Parser,
    Future,
    Symbols,
    /// The symbol table's second look, once every name is known.
    Analysis,
    Compiler,
}

/// What encloses a node, as far as these rules go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Module,
    Class,
    /// A `def` or a lambda; its index in [`Walk::functions`].
    Function(usize),
}

#[derive(Clone, Copy)]
struct Frame {
    scope: Scope,
    /// Inside a `for` or `while` body, in this scope.
    in_loop: bool,
    /// The innermost comprehension this node is part of (not its first iterable, which its
    /// enclosing scope evaluates): its kind, its start, and whether `await` may stand in it.
    comprehension: Option<(&'static str, TextSize, bool)>,
}

/// What the walk learns of one function.
struct Function {
    is_async: bool,
    yields: bool,
    /// The first `return` with a value, an error in an async generator.
    returns_value: Option<TextSize>,
}

struct Walk<'a> {
    parens: Parens<'a>,
    nodes: Vec<(Node<'a>, Frame)>,
    /// The starts of the `__future__` imports at the top of the file, where they may stand.
    top_futures: Vec<TextSize>,
    functions: Vec<Function>,
    first: Option<(Pass, TextSize, String)>,
}

#[derive(Clone, Copy)]
enum Node<'a> {
    Stmt(&'a Stmt),
    Expr(&'a Expr),
}

/// Checks `suite`, a whole module, for the rules above and the parser's own (`grammar.rs`),
/// in one walk. It keeps a work list instead of recursing: Python accepts code nested
/// thousands of levels deep.
pub(super) fn check_scopes<'a>(suite: &'a [Stmt], parens: Parens<'a>) -> Result<(), ScopeError> {
    let module = Frame {
        scope: Scope::Module,
        in_loop: false,
        comprehension: None,
    };
    let mut walk = Walk {
        parens,
        nodes: suite
            .iter()
            .rev()
            .map(|s| (Node::Stmt(s), module))
            .collect(),
        top_futures: Vec::new(),
        functions: Vec::new(),
        first: None,
    };
    walk.future_imports(suite);
    while let Some((node, frame)) = walk.nodes.pop() {
        match node {
            Node::Stmt(stmt) => walk.stmt(stmt, frame),
            Node::Expr(expr) => walk.expr(expr, frame),
        }
    }
    for f in &walk.functions {
        if let (true, true, Some(at)) = (f.is_async, f.yields, f.returns_value) {
            let message = "'return' with value in async generator";
            walk.first = Some(earlier(
                walk.first.take(),
                (Pass::Compiler, at, message.into()),
            ));
        }
    }
    walk.first.map_or(Ok(()), Err)
}

fn earlier(
    first: Option<(Pass, TextSize, String)>,
    error: (Pass, TextSize, String),
) -> (Pass, TextSize, String) {
    match first {
        Some(first) if (first.0, first.1) <= (error.0, error.1) => first,
        _ => error,
    }
}

impl<'a> Walk<'a> {
    fn error(&mut self, pass: Pass, at: TextSize, message: impl Into<String>) {
        self.first = Some(earlier(self.first.take(), (pass, at, message.into())));
    }

    /// One of the parser's own rules.
    fn rule(&mut self, result: Result<(), CheckError>) {
        if let Err((range, message)) = result {
            self.error(Pass::Parser, range.start(), message);
        }
    }

    fn stmts(&mut self, stmts: &'a [Stmt], frame: Frame) {
        // Reversed, so that they are taken in source order.
        (self.nodes).extend(stmts.iter().rev().map(|s| (Node::Stmt(s), frame)));
    }

    fn exprs(&mut self, exprs: impl IntoIterator<Item = &'a Expr>, frame: Frame) {
        (self.nodes).extend(exprs.into_iter().map(|e| (Node::Expr(e), frame)));
    }

    /// `from __future__` imports: known features only, and only at the top of the file (after
    /// its docstring and other such imports).
    fn future_imports(&mut self, suite: &'a [Stmt]) {
        let docstring = matches!(suite.first(), Some(Stmt::Expr(e))
            if matches!(&*e.value, Expr::Constant(c) if matches!(c.value, Constant::Str(_))));
        let mut at_top = suite.iter().skip(usize::from(docstring));
        while let Some(Stmt::ImportFrom(import)) = at_top.next().filter(|s| is_future(s)) {
            self.top_futures.push(import.start());
            for alias in &import.names {
                match alias.name.as_str() {
                    "braces" => self.error(Pass::Future, import.start(), "not a chance"),
                    name if !FEATURES.contains(&name) => {
                        let message = format!("future feature {name} is not defined");
                        self.error(Pass::Future, import.start(), message)
                    }
                    _ => {}
                }
            }
        }
    }

    fn stmt(&mut self, stmt: &'a Stmt, frame: Frame) {
        let outside = |what| format!("'{what}' outside async function");
        match stmt {
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
                let is_async = matches!(stmt, Stmt::AsyncFunctionDef(_));
                let inner = self.function(is_async);
                self.stmts(body, inner);
                self.exprs(decorator_list.iter().chain(returns.as_deref()), frame);
                self.arguments(args, frame);
                self.type_params(type_params, frame);
            }
            Stmt::ClassDef(c) => {
                let class = Frame {
                    scope: Scope::Class,
                    in_loop: false,
                    comprehension: None,
                };
                self.stmts(&c.body, class);
                // Class bases take no bare generator, not even a sole one.
                self.rule(no_bare_generator(self.parens, &c.bases));
                self.type_params(&c.type_params, frame);
                let keywords = c.keywords.iter().map(|k| &k.value);
                self.exprs(
                    c.decorator_list.iter().chain(&c.bases).chain(keywords),
                    frame,
                );
            }
            Stmt::Return(s) => {
                match frame.scope {
                    Scope::Function(f) => {
                        let f = &mut self.functions[f];
                        if s.value.is_some() {
                            f.returns_value = f.returns_value.or(Some(s.start()));
                        }
                    }
                    _ => self.error(Pass::Compiler, s.start(), "'return' outside function"),
                }
                self.exprs(s.value.as_deref(), frame);
            }
            Stmt::Break(s) if !frame.in_loop => {
                self.error(Pass::Compiler, s.start(), "'break' outside loop")
            }
            Stmt::Continue(s) if !frame.in_loop => {
                self.error(Pass::Compiler, s.start(), "'continue' not properly in loop")
            }
            Stmt::Nonlocal(s) if frame.scope == Scope::Module => self.error(
                Pass::Analysis,
                s.start(),
                "nonlocal declaration not allowed at module level",
            ),
            Stmt::ImportFrom(s) => {
                if frame.scope != Scope::Module && s.names.iter().any(|a| a.name.as_str() == "*") {
                    let message = "import * only allowed at module level";
                    self.error(Pass::Symbols, s.start(), message);
                }
                // Those at the top of the file were checked by `future_imports`.
                if is_future(stmt) && !self.top_futures.contains(&s.start()) {
                    let message = "from __future__ imports must occur at the beginning of the file";
                    self.error(Pass::Compiler, s.start(), message);
                }
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
                if matches!(stmt, Stmt::AsyncFor(_)) && !self.in_async(frame) {
                    self.error(Pass::Compiler, stmt.start(), outside("async for"));
                }
                self.rule(store_target(target));
                self.stmts(orelse, frame);
                self.stmts(
                    body,
                    Frame {
                        in_loop: true,
                        ..frame
                    },
                );
                self.exprs([&**iter, &**target], frame);
            }
            Stmt::While(s) => {
                self.stmts(&s.orelse, frame);
                self.stmts(
                    &s.body,
                    Frame {
                        in_loop: true,
                        ..frame
                    },
                );
                self.exprs([&*s.test], frame);
            }
            Stmt::If(s) => {
                self.stmts(&s.orelse, frame);
                self.stmts(&s.body, frame);
                self.exprs([&*s.test], frame);
            }
            Stmt::With(ast::StmtWith { items, body, .. })
            | Stmt::AsyncWith(ast::StmtAsyncWith { items, body, .. }) => {
                if matches!(stmt, Stmt::AsyncWith(_)) && !self.in_async(frame) {
                    self.error(Pass::Compiler, stmt.start(), outside("async with"));
                }
                self.stmts(body, frame);
                for item in items.iter().rev() {
                    let target = item.optional_vars.as_deref();
                    self.rule(target.map_or(Ok(()), store_target));
                    self.exprs(target.into_iter().chain([&item.context_expr]), frame);
                }
            }
            Stmt::Match(s) => {
                for case in s.cases.iter().rev() {
                    self.stmts(&case.body, frame);
                    self.exprs(case.guard.as_deref(), frame);
                }
                self.exprs([&*s.subject], frame);
            }
            Stmt::Try(ast::StmtTry {
                body,
                handlers,
                orelse,
                finalbody,
                ..
            })
            | Stmt::TryStar(ast::StmtTryStar {
                body,
                handlers,
                orelse,
                finalbody,
                ..
            }) => {
                self.stmts(finalbody, frame);
                self.stmts(orelse, frame);
                for ast::ExceptHandler::ExceptHandler(h) in handlers.iter().rev() {
                    self.stmts(&h.body, frame);
                    self.exprs(h.type_.as_deref(), frame);
                }
                self.stmts(body, frame);
            }
            Stmt::Delete(s) => {
                self.rule(s.targets.iter().try_for_each(delete_target));
                self.exprs(&s.targets, frame)
            }
            Stmt::Assign(s) => {
                self.rule(s.targets.iter().try_for_each(store_target));
                self.exprs(std::iter::once(&*s.value).chain(&s.targets), frame)
            }
            Stmt::TypeAlias(s) => {
                self.type_params(&s.type_params, frame);
                self.exprs([&*s.value, &*s.name], frame)
            }
            Stmt::AugAssign(s) => {
                self.rule(single_target(&s.target));
                self.exprs([&*s.value, &*s.target], frame)
            }
            Stmt::AnnAssign(s) => {
                self.rule(single_target(&s.target));
                let value = s.value.as_deref();
                self.exprs(value.into_iter().chain([&*s.annotation, &*s.target]), frame)
            }
            Stmt::Raise(s) => self.exprs(s.cause.iter().chain(&s.exc).map(AsRef::as_ref), frame),
            Stmt::Assert(s) => self.exprs(s.msg.as_deref().into_iter().chain([&*s.test]), frame),
            Stmt::Expr(s) => self.exprs([&*s.value], frame),
            Stmt::Import(_)
            | Stmt::Global(_)
            | Stmt::Nonlocal(_)
            | Stmt::Pass(_)
            | Stmt::Break(_)
            | Stmt::Continue(_) => {}
        }
    }

    fn expr(&mut self, expr: &'a Expr, frame: Frame) {
        match expr {
            Expr::Yield(ast::ExprYield { value, .. }) => {
                self.yields(expr, frame);
                self.exprs(value.as_deref(), frame);
            }
            Expr::YieldFrom(ast::ExprYieldFrom { value, .. }) => {
                self.yields(expr, frame);
                self.exprs([&**value], frame);
            }
            Expr::Await(ast::ExprAwait { value, .. }) => {
                match (frame.comprehension, frame.scope) {
                    (Some((_, start, false)), _) => self.error(Pass::Compiler, start, ASYNC_COMP),
                    (Some(_), _) => {}
                    (None, Scope::Function(_)) if !self.in_async(frame) => {
                        let message = "'await' outside async function";
                        self.error(Pass::Compiler, expr.start(), message)
                    }
                    (None, Scope::Module | Scope::Class) => {
                        self.error(Pass::Compiler, expr.start(), "'await' outside function")
                    }
                    (None, Scope::Function(_)) => {}
                }
                self.exprs([&**value], frame);
            }
            Expr::Lambda(e) => {
                let inner = self.function(false);
                self.exprs([&*e.body], inner);
                self.arguments(&e.args, frame);
            }
            Expr::ListComp(ast::ExprListComp {
                elt, generators, ..
            }) => self.comprehension(expr, "list comprehension", [&**elt], generators, frame),
            Expr::SetComp(ast::ExprSetComp {
                elt, generators, ..
            }) => self.comprehension(expr, "set comprehension", [&**elt], generators, frame),
            Expr::GeneratorExp(ast::ExprGeneratorExp {
                elt, generators, ..
            }) => self.comprehension(expr, "generator expression", [&**elt], generators, frame),
            Expr::DictComp(e) => {
                let parts = [&*e.key, &*e.value];
                self.comprehension(expr, "dict comprehension", parts, &e.generators, frame)
            }
            Expr::BoolOp(e) => self.exprs(&e.values, frame),
            Expr::NamedExpr(e) => self.exprs([&*e.target, &*e.value], frame),
            Expr::BinOp(e) => self.exprs([&*e.left, &*e.right], frame),
            Expr::UnaryOp(e) => self.exprs([&*e.operand], frame),
            Expr::IfExp(e) => self.exprs([&*e.test, &*e.body, &*e.orelse], frame),
            Expr::Dict(e) => self.exprs(e.keys.iter().flatten().chain(&e.values), frame),
            Expr::Set(ast::ExprSet { elts, .. })
            | Expr::List(ast::ExprList { elts, .. })
            | Expr::Tuple(ast::ExprTuple { elts, .. }) => self.exprs(elts, frame),
            Expr::Attribute(ast::ExprAttribute { value, .. })
            | Expr::Starred(ast::ExprStarred { value, .. }) => self.exprs([&**value], frame),
            Expr::Compare(e) => self.exprs(std::iter::once(&*e.left).chain(&e.comparators), frame),
            Expr::Call(e) => {
                // A bare generator is allowed only as the sole argument.
                if e.args.len() + e.keywords.len() > 1 {
                    self.rule(no_bare_generator(self.parens, &e.args));
                }
                let keywords = e.keywords.iter().map(|k| &k.value);
                self.exprs(
                    std::iter::once(&*e.func).chain(&e.args).chain(keywords),
                    frame,
                )
            }
            Expr::FormattedValue(e) => self.exprs(
                std::iter::once(&*e.value).chain(e.format_spec.as_deref()),
                frame,
            ),
            Expr::JoinedStr(e) => self.exprs(&e.values, frame),
            Expr::Subscript(e) => self.exprs([&*e.value, &*e.slice], frame),
            Expr::Slice(e) => {
                let parts = e.lower.iter().chain(&e.upper).chain(&e.step);
                self.exprs(parts.map(AsRef::as_ref), frame)
            }
            Expr::Constant(_) | Expr::Name(_) => {}
        }
    }

    /// A `yield` or `yield from`: only in a function's own body.
    fn yields(&mut self, expr: &Expr, frame: Frame) {
        match (frame.comprehension, frame.scope) {
            (Some((kind, ..)), _) => self.error(
                Pass::Symbols,
                expr.start(),
                format!("'yield' inside {kind}"),
            ),
            (None, Scope::Function(f)) if self.functions[f].is_async => {
                if matches!(expr, Expr::YieldFrom(_)) {
                    let message = "'yield from' inside async function";
                    self.error(Pass::Compiler, expr.start(), message);
                }
                self.functions[f].yields = true;
            }
            (None, Scope::Function(f)) => self.functions[f].yields = true,
            (None, _) => self.error(Pass::Compiler, expr.start(), "'yield' outside function"),
        }
    }

    /// A comprehension: its first iterable belongs to the enclosing scope, the rest to the
    /// comprehension, where `await` and `async for` need an enclosing `async def` (a
    /// generator expression needs none: it becomes an asynchronous one).
    fn comprehension(
        &mut self,
        expr: &'a Expr,
        kind: &'static str,
        parts: impl IntoIterator<Item = &'a Expr>,
        generators: &'a [ast::Comprehension],
        frame: Frame,
    ) {
        let awaitable = kind == "generator expression"
            || frame
                .comprehension
                .map_or(self.in_async(frame), |(_, _, awaitable)| awaitable);
        if generators.iter().any(|g| g.is_async) && !awaitable {
            self.error(Pass::Compiler, expr.start(), ASYNC_COMP);
        }
        let inner = Frame {
            comprehension: Some((kind, expr.start(), awaitable)),
            ..frame
        };
        self.exprs(parts, inner);
        for (i, g) in generators.iter().enumerate() {
            self.rule(store_target(&g.target));
            let iter_frame = if i == 0 { frame } else { inner };
            self.nodes.push((Node::Expr(&g.iter), iter_frame));
            self.exprs(std::iter::once(&g.target).chain(&g.ifs), inner);
        }
    }

    /// The defaults and annotations of a `def` or lambda: evaluated where it stands.
    fn arguments(&mut self, args: &'a ast::Arguments, frame: Frame) {
        let with_defaults = args
            .posonlyargs
            .iter()
            .chain(&args.args)
            .chain(&args.kwonlyargs);
        for arg in with_defaults {
            let default = arg.default.as_deref();
            self.exprs(
                default.into_iter().chain(arg.def.annotation.as_deref()),
                frame,
            );
        }
        for arg in args.vararg.iter().chain(&args.kwarg) {
            self.exprs(arg.annotation.as_deref(), frame);
        }
    }

    /// The bounds of a `def`'s, a class's or a `type` alias's type parameters (3.12).
    fn type_params(&mut self, params: &'a [ast::TypeParam], frame: Frame) {
        let bounds = params.iter().filter_map(|param| match param {
            ast::TypeParam::TypeVar(var) => var.bound.as_deref(),
            _ => None,
        });
        self.exprs(bounds, frame);
    }

    /// The frame of a new function's body.
    fn function(&mut self, is_async: bool) -> Frame {
        self.functions.push(Function {
            is_async,
            yields: false,
            returns_value: None,
        });
        Frame {
            scope: Scope::Function(self.functions.len() - 1),
            in_loop: false,
            comprehension: None,
        }
    }

    fn in_async(&self, frame: Frame) -> bool {
        matches!(frame.scope, Scope::Function(f) if self.functions[f].is_async)
    }
}

const ASYNC_COMP: &str = "asynchronous comprehension outside of an asynchronous function";

/// Whether `stmt` is `from __future__ import ...`.
fn is_future(stmt: &Stmt) -> bool {
    matches!(stmt, Stmt::ImportFrom(s)
        if s.level.is_none_or(|l| l.to_u32() == 0)
            && s.module.as_ref().is_some_and(|m| m.as_str() == "__future__"))
}
