//! A module file's bytes as text, as Python reads them (PEP 263): UTF-8, unless a coding
//! declaration on its first or second line names another encoding. A lab's older modules are
//! often Latin-1 (`# -*- coding: latin-1 -*-`); Python imports them, so they must parse here.

use std::borrow::Cow;

use encoding_rs::Encoding;

/// The text of a module file.
///
/// # Errors
/// An encoding Python would not know, or bytes not valid in the file's encoding: named, with
/// the line, as Python's import would refuse them.
pub fn decode(bytes: &[u8]) -> Result<Cow<'_, str>, String> {
    let Some((name, line)) = declared(bytes) else {
        return utf8(bytes, "no coding declaration names another encoding");
    };
    // Python's own names for its two commonest, then the WHATWG labels encoding_rs knows.
    let encoding = match python_name(name).as_str() {
        "utf-8" => return utf8(bytes, &format!("line {line} declares utf-8")),
        "iso-8859-1" => encoding_rs::WINDOWS_1252, // Latin-1 is its subset, byte for byte.
        other => Encoding::for_label(other.as_bytes())
            .ok_or_else(|| format!("line {line}: unknown encoding: {name}"))?,
    };
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    match had_errors {
        true => Err(format!("not valid {} text", encoding.name())),
        false => Ok(text),
    }
}

/// The text of UTF-8 `bytes`, or where they are not UTF-8.
fn utf8<'a>(bytes: &'a [u8], why: &str) -> Result<Cow<'a, str>, String> {
    std::str::from_utf8(bytes).map(Cow::Borrowed).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        format!("line {line} is not UTF-8, and {why} (# -*- coding: NAME -*-)")
    })
}

/// The encoding a coding declaration names, and its line: on the first line, or on the second
/// if the first is only a comment or blank (as Python's tokenizer looks).
fn declared(bytes: &[u8]) -> Option<(&str, usize)> {
    let mut lines = bytes.split(|&b| b == b'\n');
    let first = lines.next()?;
    if let Some(name) = cookie(first) {
        return Some((name, 1));
    }
    let blank_or_comment = first.trim_ascii_start().first().is_none_or(|&b| b == b'#');
    match blank_or_comment {
        true => cookie(lines.next()?).map(|name| (name, 2)),
        false => None,
    }
}

/// The encoding in a comment line matching `^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)`.
fn cookie(line: &[u8]) -> Option<&str> {
    let line = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    let start = line
        .iter()
        .position(|&b| !matches!(b, b' ' | b'\t' | b'\x0c'))?;
    let comment = line[start..].strip_prefix(b"#")?;
    let at = comment.windows(6).position(|w| w == b"coding")?;
    let rest = comment[at + 6..]
        .strip_prefix(b":")
        .or(comment[at + 6..].strip_prefix(b"="))?;
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    let len = (rest.iter())
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        .count();
    std::str::from_utf8(&rest[..len])
        .ok()
        .filter(|name| !name.is_empty())
}

/// Python's normal name for the two encodings its tokenizer knows itself (`get_normal_name`):
/// `UTF_8`, `utf-8-unix` are `utf-8`; `latin_1`, `iso-latin-1-dos` are `iso-8859-1`.
fn python_name(name: &str) -> String {
    let name = name.to_ascii_lowercase().replace('_', "-");
    let is = |base: &str| name == base || name.starts_with(&format!("{base}-"));
    if is("utf-8") {
        "utf-8".into()
    } else if is("latin-1") || is("iso-8859-1") || is("iso-latin-1") {
        "iso-8859-1".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_encoding_is_read_as_python_reads_it() {
        let latin1 = b"# -*- coding: latin-1 -*-\ndef gr\xfc\xdfe(): pass\n";
        assert!(decode(latin1).unwrap().contains("def grüße()"));
        let second = b"#!/usr/bin/env python\n# vim: set fileencoding=cp1252 :\nx = '\x80'\n";
        assert!(decode(second).unwrap().contains("x = '€'"));
        let plain = "def é(): pass\n".as_bytes();
        assert!(matches!(decode(plain), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn what_python_would_refuse_is_named() {
        let undeclared = b"x = 1\ny = '\xfc'\n";
        let e = decode(undeclared).unwrap_err();
        assert!(
            e.starts_with("line 2 is not UTF-8, and no coding declaration"),
            "{e}"
        );
        let unknown = b"# coding: klingon\n";
        assert_eq!(
            decode(unknown).unwrap_err(),
            "line 1: unknown encoding: klingon"
        );
        // Only the first two lines, and the second only after a comment or blank line.
        let late = b"x = 1\n# coding: latin-1\ny = '\xfc'\n";
        assert!(decode(late).unwrap_err().starts_with("line 3 is not UTF-8"));
        let utf8_declared = b"# coding=utf_8\ny = '\xfc'\n";
        assert!(decode(utf8_declared)
            .unwrap_err()
            .contains("line 1 declares utf-8"));
    }
}
