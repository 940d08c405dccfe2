//! Syntax rules Python enforces that the parser does not.

use rustpython_parser::ast::{self, Expr, Ranged, Stmt};
use rustpython_parser::text_size::{TextRange, TextSize};

/// An offending expression's range and what is wrong with it.
pub(super) type CheckError = (TextRange, &'static str);

/// Checks the syntax rules Python enforces that the parser does not: assignment and deletion
/// targets (`f() = 1`, `1 = x`, `del f()`, `for f() in x`, ...) and unparenthesised generator
/// arguments (`f(x for x in y, 1)`). Returns the earliest violation.
///
/// The walk keeps explicit work lists instead of recursing: Python accepts expressions
/// thousands of levels deep, which would overflow a thread's stack.
pub(super) fn check_grammar(
    suite: &[Stmt],
    parens: &[(TextSize, TextSize)],
) -> Result<(), CheckError> {
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
pub(super) struct Walk<'a> {
    /// Matching parentheses, as in [`Lexed::parens`](super::lexed::Lexed::parens).
    parens: &'a [(TextSize, TextSize)],
    stmts: Vec<&'a Stmt>,
    exprs: Vec<&'a Expr>,
    /// The violation found earliest in the source so far.
    first: Option<CheckError>,
}

impl<'a> Walk<'a> {
    pub(super) fn check(&mut self, result: Result<(), CheckError>) {
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
    pub(super) fn stmt(&mut self, stmt: &'a Stmt) {
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

    pub(super) fn try_block(
        &mut self,
        handlers: &'a [ast::ExceptHandler],
        blocks: [&'a Vec<Stmt>; 3],
    ) {
        for ast::ExceptHandler::ExceptHandler(handler) in handlers {
            self.exprs.extend(handler.type_.as_deref());
            self.stmts.extend(&handler.body);
        }
        self.stmts.extend(blocks.into_iter().flatten());
    }

    /// A function or class definition.
    pub(super) fn definition(&mut self, stmt: &'a Stmt) {
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
    pub(super) fn binding(&mut self, stmt: &'a Stmt) {
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
    pub(super) fn expr(&mut self, expr: &'a Expr) {
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

    pub(super) fn comprehensions(&mut self, generators: &'a [ast::Comprehension]) {
        for generator in generators {
            self.check(store_target(&generator.target));
            self.exprs.extend([&generator.target, &generator.iter]);
            self.exprs.extend(&generator.ifs);
        }
    }

    pub(super) fn arguments(&mut self, args: &'a ast::Arguments) {
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

    pub(super) fn type_params(&mut self, params: &'a [ast::TypeParam]) {
        for param in params {
            if let ast::TypeParam::TypeVar(var) = param {
                self.exprs.extend(var.bound.as_deref());
            }
        }
    }

    /// Errs on the first generator among `args` that is not in its own parentheses.
    pub(super) fn no_bare_generator(&self, args: &[Expr]) -> Result<(), CheckError> {
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
pub(super) fn store_target(target: &Expr) -> Result<(), CheckError> {
    match target {
        Expr::Name(_) | Expr::Attribute(_) | Expr::Subscript(_) => Ok(()),
        Expr::Starred(s) if !matches!(s.value.as_ref(), Expr::Starred(_)) => store_target(&s.value),
        Expr::Tuple(t) => t.elts.iter().try_for_each(store_target),
        Expr::List(l) => l.elts.iter().try_for_each(store_target),
        _ => Err((target.range(), "cannot assign to expression")),
    }
}

/// The target of an augmented or annotated assignment: no unpacking.
pub(super) fn single_target(target: &Expr) -> Result<(), CheckError> {
    match target {
        Expr::Name(_) | Expr::Attribute(_) | Expr::Subscript(_) => Ok(()),
        _ => Err((target.range(), "illegal target for assignment")),
    }
}

/// A target of `del`: like an assignment target, without starred parts.
pub(super) fn delete_target(target: &Expr) -> Result<(), CheckError> {
    match target {
        Expr::Name(_) | Expr::Attribute(_) | Expr::Subscript(_) => Ok(()),
        Expr::Tuple(t) => t.elts.iter().try_for_each(delete_target),
        Expr::List(l) => l.elts.iter().try_for_each(delete_target),
        _ => Err((target.range(), "cannot delete expression")),
    }
}
