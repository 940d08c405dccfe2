//! Module descriptors: what a module exports, as every stub sees it.
//!
//! A descriptor is built on the owner from the module's source (see `pyparse`) and travels as
//! canonical JSON bytes; its md5 is the md5 of those bytes, so two stubs holding the same bytes
//! hold the same descriptor.

use serde::{Deserialize, Serialize};

/// The exported surface of one module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleDescriptor {
    /// The module's name: an identifier (see [`valid_module_name`]), never a path.
    pub module: String,
    /// Exported functions in source order.
    pub functions: Vec<FunctionDesc>,
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
