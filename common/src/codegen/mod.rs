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
//! `dict`/`Dict` `Map<String, Value>`, `dict[str, X]` [`Dict<X>`] (both keep key order),
//! `Optional[X]` and `X | None` `Option<X>`; what has no annotation, or one that does not map
//! (`bytes`, `tuple`, a class...), is a `serde_json::Value`. A parameter with a default is an `Option`: `None`
//! leaves it to the remote default. Python names that are Rust keywords get `r#`; the few that
//! cannot (`self`, `_`, ...) or that would shadow what generated code uses (`Some`, ...) get a
//! `_`.
//!
//! Python stubs keep the remote headers; a default that is not a plain literal (a name, a call,
//! a list, a float beyond JSON's range) becomes a `_stubnet.Default` that shows as written and
//! is never sent, so the remote module applies its own; so does a positional-only parameter's
//! after one, which could not be sent by position. A header Python would refuse (a Rust
//! provider's: a keyword for a name, two parameters of one name) is left out, with a comment.

use std::collections::HashSet;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::app::CallError;
use crate::module::{is_identifier, FunctionDesc, ModuleDescriptor, Param, ParamKind};

mod python;
mod rust;
#[cfg(test)]
mod tests;
mod types;

/// What a `dict[str, X]` is in a generated Rust stub: a map that keeps its keys in order, as
/// Python's dict does, both ways.
pub type Dict<V> = indexmap::IndexMap<String, V>;

pub use python::python_stub;
pub use rust::rust_stub;
pub use types::rust_type;
use types::*;

/// The Python helper module generated Python stubs import, written beside them as
/// [`PYTHON_HELPER_FILE`].
pub const PYTHON_HELPER: &str = include_str!("stubnet.py");

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

/// The name an app knows a module's stubs by: the module's, dots made `_` (so `os.path` and
/// a module named `os_path` would share one).
pub fn stub_stem(module: &str) -> String {
    module.replace('.', "_")
}

// ---------------------------------------------------------------------------------------------
// What generated Rust code calls.

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

    /// A parameter bound by position (`by_keyword`: or by keyword); `None` leaves it to its
    /// default. After one left to its default, the others go by keyword; a positional-only one
    /// then cannot be sent.
    pub fn positional(
        mut self,
        name: &'static str,
        by_keyword: bool,
        value: Option<impl Serialize>,
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

    /// A keyword-only parameter; `None` leaves it to its default.
    pub fn keyword(
        mut self,
        name: &'static str,
        value: Option<impl Serialize>,
    ) -> Result<Self, CallError> {
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

    /// The value as JSON; NaN and the infinities, which serde_json turns into `null`, refused.
    fn encode(
        &self,
        name: &str,
        value: Option<impl Serialize>,
    ) -> Result<Option<Value>, CallError> {
        let encoded =
            value.map(|v| crate::app::finite::check_one(&v).and_then(|()| serde_json::to_value(v)));
        encoded.transpose().map_err(|e| {
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
