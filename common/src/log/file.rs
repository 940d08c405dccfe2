//! The log file: appended to, and rotated by size at the start of a line.
//!
//! Its own, not a crate's: each `write` is one write to the file, so that the writer thread
//! learns how much of a line a full disk took (and finishes it later, see [`super::queue`]);
//! a writer that loops (`write_all`) hides that, and leaves a torn line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A log file that rotates by size: before a line that would take it past `max_bytes`,
/// `FILE` becomes `FILE.1` (`FILE.1` becomes `FILE.2`, and so on, the oldest past `keep`
/// going) and a new `FILE` is begun. No line is split between two files, so no file holds more
/// than `max_bytes` but one whose single line is longer.
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// None after a rotation that could not open the new file: opened at the next write.
    file: Option<File>,
    /// Its size as far as this process knows: what it held when opened, and what was written.
    size: u64,
    /// Whether the bytes written so far end a line: only then may it rotate.
    at_line_start: bool,
    /// Only a regular file rotates: a named pipe, or `/dev/null`, is never renamed.
    rotates: bool,
}

impl LogFile {
    /// Opens `path` for appending (made if need be), and checks that it takes a write.
    ///
    /// # Errors
    /// It cannot be opened for appending (a directory, not writable), or refuses a write (a
    /// device that takes none, `/dev/full`; a file of `/proc`): told at start, not by every
    /// line lost.
    pub fn open(path: &Path, max_bytes: usize, keep: usize) -> io::Result<LogFile> {
        let mut file = append(path)?;
        // Writing nothing gets the file system's answer to a write without adding a byte (as one
        // call: `write_all` would make none).
        let _nothing = file.write(&[])?;
        let meta = file.metadata()?;
        Ok(LogFile {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1) as u64,
            keep: keep.max(1),
            file: Some(file),
            size: meta.len(),
            at_line_start: true,
            rotates: meta.is_file(),
        })
    }

    /// `FILE.n`.
    fn numbered(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        name.into()
    }

    /// Moves each old file up one (the oldest kept is replaced, and any past `keep` removed),
    /// `FILE` to `FILE.1`, and begins a new `FILE`. A rename that fails leaves the lines going to `FILE`, rotated again only
    /// once it has taken another `max_bytes`: tried at every line, the renames that went through
    /// would shift the old files at every line, until one was left. A new `FILE` that cannot be
    /// opened is opened at the next line.
    fn rotate(&mut self) -> io::Result<()> {
        self.size = 0;
        for n in (1..=self.keep).rev() {
            let from = match n {
                1 => self.path.clone(),
                n => self.numbered(n - 1),
            };
            match std::fs::rename(from, self.numbered(n)) {
                // Not made yet, or (`FILE`) removed by someone: nothing to move.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io::Error::new(e.kind(), format!("cannot rotate it: {e}"))),
                Ok(()) => {}
            }
        }
        // Files past `keep` left by a run that kept more: the oldest go, as the doc says.
        let mut n = self.keep + 1;
        while std::fs::remove_file(self.numbered(n)).is_ok() {
            n += 1;
        }
        self.file = None;
        self.file = Some(append(&self.path)?);
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Write for LogFile {
    /// One write to the file (after a rotation, if due): it may take part of `buf`, which
    /// begins a line when the last write ended one (the log writes a line at a time).
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let due = self.size > 0 && self.size + buf.len() as u64 > self.max_bytes;
        if self.rotates && self.at_line_start && due {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(append(&self.path)?),
        };
        let n = file.write(buf)?;
        self.size += n as u64;
        if n > 0 {
            self.at_line_start = buf[n - 1] == b'\n';
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rotation that fails costs the line it was due before, once: the lines after it go to
    /// `FILE`. Tried again at every line, it refused them all (and shifted the old files at each).
    #[test]
    fn a_rotation_that_fails_is_told_once_and_the_lines_after_it_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stub.log");
        // `FILE.1` cannot become `FILE.2`: a directory with something in it is there.
        std::fs::write(dir.path().join("stub.log.1"), "older\n").unwrap();
        std::fs::create_dir_all(dir.path().join("stub.log.2").join("in")).unwrap();
        let mut log = LogFile::open(&path, 10, 2).unwrap();
        log.write_all(b"0123456789ab\n").unwrap(); // the first line goes in whole, however long
        let refused = log.write_all(b"due\n").unwrap_err();
        assert!(
            refused.to_string().starts_with("cannot rotate it: "),
            "{refused}"
        );
        for line in [&b"next\n"[..], b"more\n"] {
            log.write_all(line).unwrap();
        }
        let kept = std::fs::read_to_string(&path).unwrap();
        assert_eq!(kept, "0123456789ab\nnext\nmore\n");
        let older = std::fs::read_to_string(dir.path().join("stub.log.1")).unwrap();
        assert_eq!(older, "older\n");
    }

    /// A run with a smaller `keep` than the last removes the old files past it at its first
    /// rotation, and nothing before.
    #[test]
    fn files_past_a_smaller_keep_go_at_the_first_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stub.log");
        for n in 1..=4 {
            std::fs::write(dir.path().join(format!("stub.log.{n}")), format!("{n}\n")).unwrap();
        }
        let mut log = LogFile::open(&path, 10, 2).unwrap();
        log.write_all(b"0123456789\n").unwrap();
        let left = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        assert_eq!(left(dir.path()).len(), 5, "removed before any rotation");
        log.write_all(b"due\n").unwrap();
        assert_eq!(left(dir.path()), ["stub.log", "stub.log.1", "stub.log.2"]);
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("stub.log.2"), "1\n");
        assert_eq!(read("stub.log.1"), "0123456789\n");
    }

    /// A line that would take the file past `max_bytes` goes to a new file: only a file of one
    /// line longer than that holds more.
    #[test]
    fn no_file_holds_more_than_max_bytes_but_one_of_a_single_longer_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stub.log");
        let mut log = LogFile::open(&path, 10, 3).unwrap();
        for line in ["1234\n", "5678\n", "9\n", "a much longer line\n"] {
            log.write_all(line.as_bytes()).unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("stub.log.2"), "1234\n5678\n");
        assert_eq!(read("stub.log.1"), "9\n");
        assert_eq!(read("stub.log"), "a much longer line\n");
        for line in ["b\n", "c\n"] {
            log.write_all(line.as_bytes()).unwrap();
        }
        assert_eq!(read("stub.log.1"), "a much longer line\n");
        assert_eq!(read("stub.log"), "b\nc\n");
    }
}
