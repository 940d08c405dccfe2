//! Modules this stub owns: a module file read and parsed into its descriptor.

use std::path::{Path, PathBuf};

use common::module::ModuleDescriptor;
use common::pyparse::parse_module;
use common::store::{md5_hex, valid_module_name};

use crate::worker::Pool;

/// A module file read and parsed, ready to upload.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The file, absolute.
    pub path: PathBuf,
    pub desc: ModuleDescriptor,
    /// The descriptor file's bytes and their md5.
    pub bytes: Vec<u8>,
    pub md5: String,
}

/// A module this stub registered.
pub struct Owned {
    pub parsed: Parsed,
    /// The server accepted it.
    pub confirmed: bool,
    /// Its workers.
    pub pool: Pool,
}

/// Reads and parses the module file at `path`; the module is named after the file.
///
/// # Errors
/// A one-line reason: unreadable file, a name that is not an identifier, or a syntax error
/// with its line.
pub fn parse_file(path: &Path) -> Result<Parsed, String> {
    let path =
        std::fs::canonicalize(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if path.extension().and_then(|e| e.to_str()) != Some("py") {
        return Err(format!("{} is not a Python file (*.py)", path.display()));
    }
    let module = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if !valid_module_name(module) {
        return Err(format!(
            "{}: '{module}' is not a module name (letters, digits and _, not starting with a digit)",
            path.display()
        ));
    }
    let source = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let desc = parse_module(module, &source)
        .map_err(|e| format!("{}: syntax error at {e}", path.display()))?;
    let bytes = desc.to_bytes();
    let md5 = md5_hex(&bytes);
    Ok(Parsed {
        path,
        desc,
        bytes,
        md5,
    })
}

/// The `desc:` text of a descriptor.
pub fn render(desc: &ModuleDescriptor, owner: &str) -> String {
    let mut out = format!(
        "module {} (owner {owner}), {} function(s):\n",
        desc.module,
        desc.functions.len()
    );
    for f in &desc.functions {
        out += &format!("  {}", f.signature());
        if let Some(doc) = &f.doc {
            out += &format!("\n      {doc}");
        }
        out.push('\n');
    }
    out
}
