//! The stubs' output: each line goes to stdout and, when a profile sets `log_file`, to a log
//! file that rotates by size (`log_max_bytes`, `log_keep` files kept as `FILE.1`, `FILE.2`, ...).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use file_rotate::compression::Compression;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate};

static FILE: Mutex<Option<FileRotate<AppendCount>>> = Mutex::new(None);

/// Sends every later line to `path` too, rotating it past `max_bytes` and keeping `keep` old
/// files.
pub fn to_file(path: &Path, max_bytes: usize, keep: usize) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = FileRotate::new(
        path,
        AppendCount::new(keep.max(1)),
        ContentLimit::BytesSurpassed(max_bytes.max(1)),
        Compression::None,
        None,
    );
    *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    Ok(())
}

/// Writes one line. Errors are ignored: output must never stop a stub.
pub fn line(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
    let mut file = FILE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = file.as_mut() {
        let _ = writeln!(f, "{text}");
        let _ = f.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_rotates_and_keeps_a_few_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/stub.log");
        to_file(&path, 100, 2).unwrap();
        for i in 0..50 {
            line(&format!("line {i:02} of the log"));
        }
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.contains("line 49"), "{current}");
        assert!(path.with_extension("log.1").exists());
        assert!(path.with_extension("log.2").exists());
        assert!(
            !path.with_extension("log.3").exists(),
            "only two old files are kept"
        );
        *FILE.lock().unwrap() = None;
    }
}
