//! Descriptor files on disk: one `<module>.json` per module in one directory, written atomically.
//! Every path is built from a checked module name, so nothing a peer sends can point elsewhere.

use std::io::Write;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::error::{Error, Result};

/// The md5 of `bytes`, as lowercase hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` is a valid module name: a dotted Python identifier path of ASCII letters,
/// digits and `_` (`z`, `math`, `os.path`), at most 128 bytes. Never a path.
pub fn valid_module_name(name: &str) -> bool {
    name.len() <= 128
        && !name.is_empty()
        && name.split('.').all(|part| {
            let mut chars = part.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Checks a module name, naming it in the error.
pub fn check_module_name(name: &str) -> Result<()> {
    if valid_module_name(name) {
        Ok(())
    } else {
        Err(Error::BadModuleName(name.to_owned()))
    }
}

/// A directory of descriptor files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Files its owner keeps there (a stub's session and app port), by name: written again
    /// when the directory is made again.
    notes: Vec<(String, Vec<u8>)>,
}

impl Store {
    /// Opens the directory `dir` (creating it if need be), checking that files can be written
    /// in it, so that a directory that cannot be used is told at start, not at the first write.
    ///
    /// # Errors
    /// Naming `dir`, `what` it is for (with the flag and profile key that set it) and why not.
    pub fn open(dir: impl Into<PathBuf>, what: &str) -> Result<Self> {
        let dir = dir.into();
        let usable = match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_file() => Err("it is a file".to_owned()),
            _ => std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create it: {e}"))
                .and_then(|()| {
                    let probe = tempfile::tempfile_in(&dir);
                    probe
                        .map(drop)
                        .map_err(|e| format!("cannot write in it: {e}"))
                }),
        };
        usable.map_err(|why| {
            Error::Config(format!("cannot use {} as {what}: {why}", dir.display()))
        })?;
        Ok(Store {
            dir,
            notes: Vec::new(),
        })
    }

    /// Writes the file `name` (hidden, `.session`) in the directory, and again whenever the
    /// directory is made again (see [`Store::write`]): what it notes holds as long as the
    /// directory is in use.
    pub fn keep_note(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        self.notes.retain(|(n, _)| n != name);
        self.notes.push((name.to_owned(), bytes.to_vec()));
        std::fs::write(self.dir.join(name), bytes)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `module`.
    pub fn path(&self, module: &str) -> Result<PathBuf> {
        check_module_name(module)?;
        Ok(self.dir.join(format!("{module}.json")))
    }

    /// The stored bytes of `module`, if any.
    pub fn read(&self, module: &str) -> Result<Option<Vec<u8>>> {
        match std::fs::read(self.path(module)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The md5 of the stored bytes of `module`, if any.
    pub fn md5(&self, module: &str) -> Result<Option<String>> {
        Ok(self.read(module)?.map(|b| md5_hex(&b)))
    }

    /// Replaces `module`'s file with `bytes` atomically: readers see the old file or the new one.
    pub fn write(&self, module: &str, bytes: &[u8]) -> Result<()> {
        self.replace(&self.path(module)?, bytes)
    }

    /// Removes `module`'s file if present.
    pub fn remove(&self, module: &str) -> Result<()> {
        remove_if_present(&self.path(module)?)
    }

    /// Replaces the file `name` beside the descriptors (a generated stub) atomically. `name` is
    /// a plain file name, never a path.
    ///
    /// A file that already holds `bytes` is left alone: a stub writes every module's stubs (and
    /// the shared helper with each) again at each start, and reading is far cheaper than a new
    /// file and a rename, which a journalling file system may make wait on the disk.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.file_path(name)?;
        if same_bytes(&path, bytes) {
            return Ok(());
        }
        self.replace(&path, bytes)
    }

    /// Replaces a file atomically in this directory, which is made again if it was removed while
    /// in use (by a cleaner of old files in /tmp, say): else every later write would fail, and a
    /// server refuse every module, until a restart.
    ///
    /// Not fsynced: a stub checks a cached copy's md5 before it uses it and writes its generated
    /// stubs again at each start, and the server never reads its copies back, so a machine that
    /// crashes costs a fetch, never a wrong module. An fsync per file (about 1 ms here) held up
    /// every app and peer the stub or server serves while it received modules.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        match replace_file(path, bytes, Kind::Shared) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.dir.exists() => {
                std::fs::create_dir_all(&self.dir)?;
                for (name, bytes) in &self.notes {
                    std::fs::write(self.dir.join(name), bytes)?;
                }
                crate::say!("{} was removed; made it again", self.dir.display());
                Ok(replace_file(path, bytes, Kind::Shared)?)
            }
            done => Ok(done?),
        }
    }

    /// Removes the file `name` beside the descriptors if present.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        remove_if_present(&self.file_path(name)?)
    }

    /// The path of the plain file `name` (no separator, not hidden): inside the directory.
    fn file_path(&self, name: &str) -> Result<PathBuf> {
        let plain = !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\']);
        match plain {
            true => Ok(self.dir.join(name)),
            false => Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{name}' is not a plain file name"),
            ))),
        }
    }
}

/// The directory a run is about to make (for `dir`: the outermost of its ancestors missing),
/// removed when dropped armed: a stub or server that does not get to serve (a refused name, a
/// port taken, Ctrl-C while joining) leaves nothing behind. [`MadeHere::keep`] disarms it.
pub struct MadeHere(Option<PathBuf>);

impl MadeHere {
    /// Notes what of `dir` is missing now, before it is made.
    pub fn before(dir: &Path) -> MadeHere {
        let missing = (dir.ancestors())
            .filter(|a| !a.as_os_str().is_empty())
            .take_while(|a| {
                let missing = std::fs::symlink_metadata(a).err();
                missing.is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
            })
            .last();
        MadeHere(missing.map(Path::to_owned))
    }

    /// The directory is in use: it stays.
    pub fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for MadeHere {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The directory a file `path` is in: `.` for a bare file name.
pub fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Who may read a file written atomically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Descriptors, generated stubs, a certificate, which others (apps run by other users) may
    /// read: made as any file is (0666 less the umask), not owner-only as a temporary file is.
    Shared,
    /// A profile (which may hold the token), a private key: owner-only, and fsynced before the
    /// rename, so that a machine that crashes leaves the old file or the new one, whole.
    Private,
}

/// Replaces the file at `path` with `bytes` atomically (a temporary file beside it, renamed
/// over it): readers see the old file or the new one, never a part. A symbolic link at `path`
/// is replaced, not written through.
pub fn replace_file(path: &Path, bytes: &[u8], kind: Kind) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = match kind {
        Kind::Shared => 0o666,
        Kind::Private => 0o600,
    };
    let mut tmp = tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir_of(path))?;
    tmp.write_all(bytes)?;
    if kind == Kind::Private {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Whether the file at `path` holds exactly `bytes` (read only when its size matches).
fn same_bytes(path: &Path, bytes: &[u8]) -> bool {
    let same_size =
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == bytes.len() as u64);
    same_size && std::fs::read(path).is_ok_and(|had| had == bytes)
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// They were owner-only (a temporary file's mode, kept by the rename): an app run by
    /// another user than the stub's could not import a generated stub. A profile stays
    /// owner-only: it may hold the token.
    #[test]
    fn descriptors_and_stubs_are_made_as_files_are_and_profiles_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .unwrap();
        let umask = u32::from_str_radix(umask.trim(), 8).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "test").unwrap();
        store.write("m", b"{}").unwrap();
        store.write_file("m.py", b"x = 1\n").unwrap();
        replace_file(
            &dir.path().join("p.toml"),
            b"token = \"t\"\n",
            Kind::Private,
        )
        .unwrap();
        let mode = |name: &str| {
            let meta = std::fs::metadata(dir.path().join(name)).unwrap();
            meta.permissions().mode() & 0o777
        };
        assert_eq!(mode("m.json"), 0o666 & !umask, "umask {umask:o}");
        assert_eq!(mode("m.py"), 0o666 & !umask, "umask {umask:o}");
        assert_eq!(mode("p.toml"), 0o600);
    }

    #[test]
    fn module_names_are_identifiers_never_paths() {
        for ok in ["z", "math", "os.path", "_x1", "Mod_2.sub"] {
            assert!(valid_module_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "/etc/passwd",
            "a..b",
            ".a",
            "a.",
            "1a",
            "a b",
            "a\\b",
            "é",
        ] {
            assert!(!valid_module_name(bad), "{bad}");
        }
    }

    #[test]
    fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("recv"), "a test's store").unwrap();
        assert_eq!(store.read("z").unwrap(), None);
        store.write("z", b"one").unwrap();
        store.write("z", b"two").unwrap();
        assert_eq!(store.read("z").unwrap().unwrap(), b"two");
        assert_eq!(store.md5("z").unwrap().unwrap(), md5_hex(b"two"));
        store.remove("z").unwrap();
        store.remove("z").unwrap();
        assert!(store.write("../z", b"x").is_err());
        store.write_file("z.py", b"stub").unwrap();
        assert_eq!(std::fs::read(store.dir().join("z.py")).unwrap(), b"stub");
        store.write_file("z.py", b"stuB").unwrap();
        assert_eq!(std::fs::read(store.dir().join("z.py")).unwrap(), b"stuB");
        store.remove_file("z.py").unwrap();
        store.remove_file("z.py").unwrap();
        for bad in ["", "../z.py", "a/b", "a\\b", ".hidden"] {
            assert!(store.write_file(bad, b"x").is_err(), "{bad}");
        }
        let names: Vec<_> = std::fs::read_dir(store.dir()).unwrap().collect();
        assert!(names.is_empty(), "no temp file left behind");
        // Removed while in use: made again.
        std::fs::remove_dir(store.dir()).unwrap();
        store.write("z", b"three").unwrap();
        assert_eq!(store.read("z").unwrap().unwrap(), b"three");
    }

    /// A stub writes every generated file again at each start: one that holds the same bytes
    /// is not replaced (the same inode stays), one that differs is.
    #[test]
    fn a_generated_file_that_holds_the_same_bytes_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "a test's store").unwrap();
        let inode = || std::fs::metadata(dir.path().join("z.py")).unwrap().ino();
        store.write_file("z.py", b"stub").unwrap();
        let first = inode();
        store.write_file("z.py", b"stub").unwrap();
        assert_eq!(inode(), first, "the same bytes were written again");
        store.write_file("z.py", b"stub, longer").unwrap();
        assert_ne!(inode(), first);
    }

    #[test]
    fn md5_matches_known_value() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
