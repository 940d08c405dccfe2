//! Module descriptors: what a module exports, as every stub sees it.
//!
//! A descriptor is built on the owner from the module's source (see `pyparse`) and travels as
//! canonical JSON bytes; its md5 is the md5 of those bytes, so two stubs holding the same bytes
//! hold the same descriptor.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, RemoteError};

/// The exported surface of one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDescriptor {
    /// The module's name: an identifier (see [`crate::store::valid_module_name`]), never a path.
    pub module: String,
    /// Exported functions in source order.
    pub functions: Vec<FunctionDesc>,
    /// Plain values that can be read (an installed module's constants, such as `os.path.sep`):
    /// a call with no arguments to one of these names returns its value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
}

impl ModuleDescriptor {
    /// Checks a call of `function` with `positional` arguments and `keywords` against these
    /// headers: the function is here (or, called with no arguments, a plain value is), and its
    /// arguments bind as Python would bind them.
    ///
    /// # Errors
    /// [`ErrorKind::UnknownFunction`] or [`ErrorKind::BadArguments`], saying what is wrong.
    pub fn check_call(
        &self,
        function: &str,
        positional: usize,
        keywords: &[&str],
    ) -> Result<(), RemoteError> {
        let Some(f) = self.function(function) else {
            if positional == 0
                && keywords.is_empty()
                && self.attributes.iter().any(|a| a == function)
            {
                return Ok(());
            }
            let msg = format!("module '{}' has no function '{function}'", self.module);
            return Err(RemoteError::new(ErrorKind::UnknownFunction, msg));
        };
        f.check_args(positional, keywords)
            .map_err(|m| RemoteError::new(ErrorKind::BadArguments, m))
    }

    /// The plain values the module offers (`os.path.sep`), on one line for `desc:` and
    /// `test_app describe`, escaped; `None` for a module of functions alone.
    pub fn values_line(&self) -> Option<String> {
        let names = self.attributes.join(", ");
        (!names.is_empty()).then(|| {
            let names = crate::log::printable(&names);
            format!("values (read by a call with no arguments): {names}")
        })
    }
}

/// One exported function's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionDesc {
    pub name: String,
    /// Parameters in declaration order.
    pub params: Vec<Param>,
    /// Return annotation as written in the source, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<String>,
    /// First line of the docstring, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// Whether the function is `async def`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_async: bool,
    /// The first decorator, as written, that may change how the function is called (one that
    /// supplies an argument, or adds one): the header is then shown as written but not held to,
    /// and the module's Python checks the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrapped_by: Option<String>,
}

/// One parameter of a function header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    /// Default value as written in the source, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Annotation as written in the source, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
}

/// How a parameter binds arguments (Python's `inspect.Parameter.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Before a `/`: positional only.
    PositionalOnly,
    /// An ordinary parameter: by position or by keyword.
    Positional,
    /// `*args`.
    VarPositional,
    /// After `*` or `*args`: keyword only.
    KeywordOnly,
    /// `**kwargs`.
    VarKeyword,
}

impl ModuleDescriptor {
    /// The descriptor file's bytes (pretty JSON): what is uploaded, stored and md5-checked.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("descriptors always serialize");
        bytes.push(b'\n');
        bytes
    }

    pub fn function(&self, name: &str) -> Option<&FunctionDesc> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The first function, parameter or value name that is not an identifier, described
    /// (`function 'my-fn'`). Parsed modules have none; a descriptor an app makes may.
    pub fn first_bad_name(&self) -> Option<String> {
        let quoted = |name: &str| format!("'{}'", crate::log::printable(name));
        self.functions
            .iter()
            .find_map(|f| match is_identifier(&f.name) {
                false => Some(format!("function {}", quoted(&f.name))),
                true => (f.params.iter().find(|p| !is_identifier(&p.name)))
                    .map(|p| format!("parameter {} of {}", quoted(&p.name), quoted(&f.name))),
            })
            .or_else(|| {
                (self.attributes.iter().find(|a| !is_identifier(a)))
                    .map(|a| format!("value {}", quoted(a)))
            })
    }
}

/// Whether `name` is an identifier in Python and in Rust (pyparse only yields those; other
/// descriptor sources might not).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

impl FunctionDesc {
    /// The header calls are made and checked by: this one, or `(*args, **kwargs)` when a
    /// decorator may change it (see [`FunctionDesc::wrapped_by`]).
    pub fn as_called(&self) -> Cow<'_, FunctionDesc> {
        if self.wrapped_by.is_none() {
            return Cow::Borrowed(self);
        }
        let open = |name: &str, kind| Param {
            name: name.to_owned(),
            kind,
            default: None,
            annotation: None,
        };
        Cow::Owned(FunctionDesc {
            params: vec![
                open("args", ParamKind::VarPositional),
                open("kwargs", ParamKind::VarKeyword),
            ],
            ..self.clone()
        })
    }

    /// The header as Python would write it: `add(a, b=1, *args, c, **kw) -> int`.
    pub fn signature(&self) -> String {
        let mut parts = Vec::with_capacity(self.params.len() + 2);
        let mut starred = false;
        for (i, p) in self.params.iter().enumerate() {
            let mut s = match p.kind {
                ParamKind::VarPositional => format!("*{}", p.name),
                ParamKind::VarKeyword => format!("**{}", p.name),
                _ => p.name.clone(),
            };
            if p.kind == ParamKind::KeywordOnly && !starred {
                parts.push("*".to_owned());
            }
            starred |= matches!(p.kind, ParamKind::VarPositional | ParamKind::KeywordOnly);
            if let Some(a) = &p.annotation {
                s += &format!(": {a}");
            }
            if let Some(d) = &p.default {
                s += &if p.annotation.is_some() {
                    format!(" = {d}")
                } else {
                    format!("={d}")
                };
            }
            parts.push(s);
            let next_positional = self
                .params
                .get(i + 1)
                .map(|n| n.kind != ParamKind::PositionalOnly);
            if p.kind == ParamKind::PositionalOnly && next_positional.unwrap_or(true) {
                parts.push("/".to_owned());
            }
        }
        let prefix = if self.is_async { "async " } else { "" };
        let returns = self
            .returns
            .as_ref()
            .map(|r| format!(" -> {r}"))
            .unwrap_or_default();
        format!("{prefix}{}({}){returns}", self.name, parts.join(", "))
    }

    /// Checks a call's arguments against this header, as Python would bind them.
    ///
    /// # Errors
    /// What is wrong, in Python's words where it has them.
    pub fn check_args(&self, positional: usize, keywords: &[&str]) -> Result<(), String> {
        if self.wrapped_by.is_some() {
            return Ok(()); // The module's Python checks them.
        }
        let takes = |k: ParamKind| self.params.iter().any(|p| p.kind == k);
        let by_position: Vec<&Param> = self
            .params
            .iter()
            .filter(|p| matches!(p.kind, ParamKind::PositionalOnly | ParamKind::Positional))
            .collect();
        if positional > by_position.len() && !takes(ParamKind::VarPositional) {
            return Err(format!(
                "{}() takes {} positional argument(s) but {positional} were given",
                self.name,
                by_position.len()
            ));
        }
        for kw in keywords {
            let named = self.params.iter().position(|p| {
                p.name == *kw && matches!(p.kind, ParamKind::Positional | ParamKind::KeywordOnly)
            });
            match named {
                Some(i)
                    if self.params[i].kind == ParamKind::Positional
                        && by_position.iter().position(|p| p.name == *kw) < Some(positional) =>
                {
                    return Err(format!(
                        "{}() got multiple values for argument '{kw}'",
                        self.name
                    ));
                }
                Some(_) => {}
                None if takes(ParamKind::VarKeyword) => {}
                None => {
                    return Err(format!(
                        "{}() got an unexpected keyword argument '{kw}'",
                        self.name
                    ))
                }
            }
        }
        let missing: Vec<&str> = self
            .params
            .iter()
            .enumerate()
            .filter(|(_, p)| p.default.is_none())
            .filter(|(_, p)| match p.kind {
                ParamKind::PositionalOnly | ParamKind::Positional => {
                    let at = by_position
                        .iter()
                        .position(|q| q.name == p.name)
                        .unwrap_or(0);
                    // A keyword of a positional-only one's name is not it (it goes to
                    // `**kwargs`, if any).
                    let by_keyword =
                        p.kind == ParamKind::Positional && keywords.contains(&p.name.as_str());
                    at >= positional && !by_keyword
                }
                ParamKind::KeywordOnly => !keywords.contains(&p.name.as_str()),
                _ => false,
            })
            .map(|(_, p)| p.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{}() missing required argument(s): {}",
                self.name,
                missing.join(", ")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, kind: ParamKind, default: Option<&str>) -> Param {
        Param {
            name: name.into(),
            kind,
            default: default.map(Into::into),
            annotation: None,
        }
    }

    fn f() -> FunctionDesc {
        use ParamKind::*;
        FunctionDesc {
            name: "f".into(),
            params: vec![
                param("a", PositionalOnly, None),
                param("b", Positional, None),
                param("c", Positional, Some("1")),
                param("d", KeywordOnly, None),
            ],
            returns: Some("int".into()),
            doc: None,
            is_async: false,
            wrapped_by: None,
        }
    }

    #[test]
    fn signature_reads_like_python() {
        assert_eq!(f().signature(), "f(a, /, b, c=1, *, d) -> int");
    }

    #[test]
    fn arguments_bind_as_in_python() {
        let f = f();
        assert_eq!(f.check_args(2, &["d"]), Ok(()));
        assert_eq!(f.check_args(1, &["b", "d"]), Ok(()));
        assert!(f
            .check_args(4, &["d"])
            .unwrap_err()
            .contains("takes 3 positional"));
        assert!(f
            .check_args(2, &[])
            .unwrap_err()
            .contains("missing required argument(s): d"));
        assert!(f
            .check_args(2, &["b", "d"])
            .unwrap_err()
            .contains("multiple values"));
        assert!(f
            .check_args(2, &["d", "x"])
            .unwrap_err()
            .contains("unexpected keyword argument 'x'"));
        assert!(f
            .check_args(0, &["a", "b", "d"])
            .unwrap_err()
            .contains("unexpected"));
    }

    #[test]
    fn a_keyword_never_gives_a_positional_only_parameter() {
        // def g(a, /, **k): g(a=1) is "missing a", with {"a": 1} for **k.
        let mut g = f();
        g.params = vec![
            param("a", ParamKind::PositionalOnly, None),
            param("k", ParamKind::VarKeyword, None),
        ];
        assert_eq!(
            g.check_args(0, &["a"]),
            Err("f() missing required argument(s): a".into())
        );
        assert_eq!(g.check_args(1, &["a"]), Ok(()));
    }

    #[test]
    fn a_header_a_decorator_may_change_is_shown_but_not_held_to() {
        let mut f = f();
        f.wrapped_by = Some("with_instrument".into());
        assert_eq!(f.check_args(7, &["x"]), Ok(()));
        assert_eq!(f.signature(), "f(a, /, b, c=1, *, d) -> int");
        assert_eq!(f.as_called().signature(), "f(*args, **kwargs) -> int");
    }
}
