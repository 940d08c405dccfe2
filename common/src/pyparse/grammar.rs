//! Syntax rules Python's parser enforces that rustpython's does not: assignment and deletion
//! targets (`f() = 1`, `1 = x`, `del f()`, `for f() in x`, ...) and unparenthesised generator
//! arguments (`f(x for x in y, 1)`). The walk in `scopes.rs` applies them to every node, along
//! with the compiler's rules: one walk over the file for both.

use rustpython_parser::ast::{Expr, Ranged};
use rustpython_parser::text_size::{TextRange, TextSize};

/// An offending expression's range and what is wrong with it.
pub(super) type CheckError = (TextRange, &'static str);

/// Matching parentheses, as in [`Lexed::parens`](super::lexed::Lexed::parens).
pub(super) type Parens<'a> = &'a [(TextSize, TextSize)];

/// Errs on the first generator among `args` that is not in its own parentheses.
pub(super) fn no_bare_generator(parens: Parens, args: &[Expr]) -> Result<(), CheckError> {
    let bare = args.iter().find(|arg| {
        let range = arg.range();
        matches!(arg, Expr::GeneratorExp(_))
            && parens.binary_search(&(range.start(), range.end())).is_err()
    });
    match bare {
        Some(arg) => Err((arg.range(), "Generator expression must be parenthesized")),
        None => Ok(()),
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
