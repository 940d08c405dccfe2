//! Modules this stub owns: a module file read and parsed into its descriptor.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::config::{ClientProfile, Profile};
use common::error::{ErrorKind, RemoteError};
use common::proto::ToServer;
use smol::channel::Receiver;
use smol::future::{zip, FutureExt};
use smol::io::{AsyncRead, AsyncReadExt};
use smol::{Task, Timer};

use common::log::printable;
use common::module::ModuleDescriptor;
use common::pyparse::parse_module;
use common::say;
use common::store::{md5_hex, valid_module_name};

use crate::runner::{AppRunner, Runner};
use crate::stub::{Event, Shared, Stub};
use crate::sync::Ask;
use crate::worker::{python_command, Group, Pool, MAX_BACKOFF};

/// A module file read and parsed, ready to upload.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The file, absolute.
    pub path: PathBuf,
    pub desc: ModuleDescriptor,
    /// The descriptor file's bytes and their md5.
    pub bytes: Vec<u8>,
    pub md5: String,
    /// The file's contents, which its workers run (see `worker::WorkerSpec::source`); `None`
    /// for an installed module or an app's.
    pub source: Option<Arc<[u8]>>,
}

/// A module this stub registered.
pub struct Owned {
    pub parsed: Parsed,
    /// The server accepted it.
    pub confirmed: bool,
    /// The server refused this version's upload (its headers differ from other owners') and
    /// holds the one before: a reload uploads it again.
    pub refused: bool,
    /// The version the network holds, while a new one of this file is uploaded and not yet
    /// accepted: the server may refuse the new one (a shared module's other owners keep their
    /// headers), and then this stub runs and checks calls against that version again, as its
    /// callers expect (see `Stub::register_failed`).
    pub network: Option<Parsed>,
    /// What runs its calls: its Python workers, or the app providing it.
    pub pool: Runner,
    /// The id of the app's `provide`, when an app provides it: the app is answered under it
    /// again if the server refuses the module.
    pub provide_id: Option<u64>,
    /// The file, to notice edits.
    pub watched: Watched,
}

/// What tells that a file changed: its modification time and size (`None`: unreadable).
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// A watched file: how it looked when last read, and how it looks since, if edited.
#[derive(Debug, Default)]
pub struct Watched {
    read: Stamp,
    edit: Option<Stamp>,
}

impl Watched {
    /// The file at `path`, read now.
    pub fn read_now(path: &Path) -> Watched {
        Watched {
            read: stamp(path),
            edit: None,
        }
    }

    /// Whether the file was edited since it was read and then stayed put from one look to the
    /// next (a file written in place can be seen truncated or half written); if so, it counts
    /// as read now. A file that is gone counts as edited once it is back.
    pub fn edited(&mut self, path: &Path) -> bool {
        let now = stamp(path);
        if now == self.read {
            self.edit = None;
            return false;
        }
        if self.edit.replace(now) != Some(now) {
            return false;
        }
        *self = Watched {
            read: now,
            edit: None,
        };
        true
    }

    /// Whether the file at `path` is as it was read.
    pub fn unchanged(&self, path: &Path) -> bool {
        stamp(path) == self.read
    }
}

/// Whether `path`'s own name could be a module's: `NAME.py`, NAME a module name.
fn named_as_a_module(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "py")
        && (path.file_stem().and_then(|s| s.to_str())).is_some_and(valid_module_name)
}

/// Reads and parses the module file at `path`; the module is named after the file.
///
/// # Errors
/// A one-line reason: unreadable file, not a regular file (a FIFO, a device), a name that is
/// not an identifier, or a syntax error with its line.
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
            "{}: '{module}' is not a module name (ASCII letters, digits and _, not starting with a digit)",
            path.display()
        ));
    }
    // A FIFO or a device would hold the stub reading it (or read forever).
    if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let file = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let source = common::pyparse::encoding::decode(&file)
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
        source: Some(file.into()),
    })
}

/// `parsed`, read again from the file a module was registered from, unless that file has
/// become a link to another (which `rm:` registers: see [`Stub::own`]).
fn same_file(registered: &Path, parsed: Parsed) -> Result<Parsed, String> {
    match parsed.path == registered {
        true => Ok(parsed),
        false => Err(format!(
            "{} is now a link to {}, which rm: registers as module {}",
            registered.display(),
            parsed.path.display(),
            parsed.desc.module
        )),
    }
}

/// A reload's error: the module as it was goes on.
fn kept_running(module: &str, e: &str) -> String {
    format!("{e}; the old version of {module} keeps running")
}

/// Refuses a descriptor over this stub's `max_module_bytes`: the limit it holds others' to.
fn fits(parsed: &Parsed, limit: u64) -> Result<(), String> {
    let size = parsed.bytes.len();
    if size as u64 > limit {
        let module = &parsed.desc.module;
        return Err(format!(
            "the descriptor of {module} is {size} bytes, over this stub's max_module_bytes \
             ({limit}): export fewer functions, or raise the limit under [limits]"
        ));
    }
    Ok(())
}

/// Where the interpreter that could not start was set, for errors that name it.
const WHICH_INTERPRETER: &str = "the interpreter is --python, or python in the profile";

/// The longest an installed module's import may take to describe it: the stub waits for it.
const DESCRIBE_LIMIT: Duration = Duration::from_secs(10);

/// Why `python --describe` gave no output.
enum Described {
    NotStarted(std::io::Error),
    Lost(std::io::Error),
    TooSlow,
}

/// How long the output of a describing interpreter that has exited is read for, held open by
/// a process its import moved out of its group.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_secs(1);

/// Runs `python` to describe the installed module `name`, for at most [`DESCRIBE_LIMIT`]. It
/// leads a process group of its own, killed once it has exited (or with the stub): a process
/// its import started can neither hold its output open (and the description waiting) nor
/// outlive it. One its import moved out of the group (`setsid`) may hold the output open: its
/// end is not waited for past [`OUTPUT_AFTER_EXIT`].
async fn run_describe(python: &str, name: &str) -> Result<Output, Described> {
    let mut command = python_command(python).map_err(Described::NotStarted)?;
    command.args(["--describe", name]);
    let mut child = smol::process::Command::from(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Described::NotStarted)?;
    // Killed when dropped, also by a stub that stops meanwhile (`worker::end_all`).
    let group = Group::led_by(child.id());
    async fn all_of(pipe: Option<impl AsyncRead + Unpin>, bytes: &mut Vec<u8>) {
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(bytes).await;
        }
    }
    let (out, err) = (child.stdout.take(), child.stderr.take());
    let exited = async move {
        let status = child.status().await;
        drop(group);
        status
    };
    let described = async {
        let mut exited = std::pin::pin!(exited);
        let (mut status, mut stdout, mut stderr) = (None, Vec::new(), Vec::new());
        let reads = async {
            zip(all_of(out, &mut stdout), all_of(err, &mut stderr)).await;
        };
        // What Python wrote is in the pipes by its exit: read by OUTPUT_AFTER_EXIT after it.
        let exit = async {
            status = Some(exited.as_mut().await);
            Timer::after(OUTPUT_AFTER_EXIT).await;
        };
        reads.or(exit).await;
        let status = match status {
            Some(status) => status,
            None => exited.await,
        };
        Ok(Output {
            status: status.map_err(Described::Lost)?,
            stdout,
            stderr,
        })
    };
    let too_slow = async {
        Timer::after(DESCRIBE_LIMIT).await;
        Err(Described::TooSlow)
    };
    described.or(too_slow).await
}

/// Describes the installed Python module `name` (a profile's `expose`) by asking `python` to
/// import it: its public functions and plain values. Its "path" is `import:NAME`, which the
/// worker imports by name.
///
/// # Errors
/// Not a module name, or Python cannot import it.
pub async fn describe_installed(python: &str, name: &str) -> Result<Parsed, String> {
    if !valid_module_name(name) {
        return Err(format!("'{name}' is not a module name"));
    }
    let out = run_describe(python, name).await.map_err(|e| match e {
        Described::NotStarted(e) => {
            format!("could not start the Python interpreter `{python}`: {e} ({WHICH_INTERPRETER})")
        }
        Described::Lost(e) => format!("lost its interpreter: {e}"),
        Described::TooSlow => format!("importing it took over {} s", DESCRIBE_LIMIT.as_secs()),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or("failed");
        return Err(last.to_owned());
    }
    let desc: ModuleDescriptor =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("bad description: {e}"))?;
    let bytes = desc.to_bytes();
    Ok(Parsed {
        path: PathBuf::from(format!("import:{name}")),
        md5: md5_hex(&bytes),
        desc,
        bytes,
        source: None,
    })
}

/// An installed module for [`describe_queued`] to describe, and what for.
pub struct Describe {
    pub name: String,
    pub python: String,
    pub purpose: Purpose,
}

/// What an installed module is described for.
pub enum Purpose {
    /// To expose it.
    Expose,
    /// To reload it, for `asker`.
    Reload { why: &'static str, asker: Asker },
}

/// Who asked for a reload, and is told how it went: the stub's output (the shell, the file
/// watcher), or an app's request (connection, id), answered with the md5 or why not.
#[derive(Debug, Clone, Copy)]
pub enum Asker {
    Output,
    App(u64, u64),
}

/// Describes the installed modules the stub asks for, [`describes_at_once`] at a time, and
/// hands each description back to it. An import may take seconds (up to [`DESCRIBE_LIMIT`]):
/// the stub serves its apps and the server meanwhile. A module's own describes (to expose it,
/// then for each reload) run one after the other, in the order asked: the last one asked for
/// is the one that stays.
pub async fn describe_queued(jobs: Receiver<Describe>, stub: Arc<Shared>) {
    let (done, finished) = smol::channel::unbounded::<String>();
    // Dropped with this task, as the stub ends: the describes under way are killed.
    let mut running: HashMap<String, Task<()>> = HashMap::new();
    let mut waiting: VecDeque<Describe> = VecDeque::new();
    loop {
        let next = async { jobs.recv().await.map(Some) }.or(async {
            finished.recv().await.map(|name| {
                running.remove(&name);
                None
            })
        });
        match next.await {
            Ok(Some(job)) => waiting.push_back(job),
            Ok(None) => {}
            Err(_) => return,
        }
        while running.len() < describes_at_once() {
            let Some(at) = waiting.iter().position(|j| !running.contains_key(&j.name)) else {
                break;
            };
            let job = waiting.remove(at).expect("a waiting job");
            let (stub, done, name) = (stub.clone(), done.clone(), job.name.clone());
            let describing = name.clone();
            let task = smol::spawn(async move {
                let described = describe_installed(&job.python, &job.name).await;
                stub.apply(Event::Described(job, described));
                let _ = done.send(name).await;
            });
            running.insert(describing, task);
        }
    }
}

/// How many installed modules are described at once: as many as the machine has cores, up to
/// 4. An import is mostly the interpreter's work, and each describe must end within
/// [`DESCRIBE_LIMIT`] of its start, however many run beside it.
fn describes_at_once() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The file `path` names, after `..` and symlinks: `path` itself while there is no such file.
pub(crate) fn real_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// What a profile says (see [`FromProfile`]); `register`'s paths canonical where the file
/// is there, so that the same file spelled otherwise (`sc:` writes paths canonical) is the same
/// module, not one withdrawn and another registered. Only the first file of each module name
/// is kept (see [`one_file_per_module`]); the errors say which were left out.
fn read_profile(path: &Path) -> common::Result<(FromProfile, Vec<String>)> {
    let mut profile = Profile::<ClientProfile>::load(&path.to_string_lossy())?;
    let register = std::mem::take(&mut profile.values.register);
    let register = (register.iter())
        .map(|p| real_path(&profile.resolve(p)))
        .collect();
    let (register, left_out) = one_file_per_module(register);
    let expose = std::mem::take(&mut profile.values.expose);
    let others = match serde_json::to_value(&profile.values) {
        Ok(serde_json::Value::Object(keys)) => keys,
        _ => serde_json::Map::new(),
    };
    let lists = FromProfile {
        register,
        expose,
        others,
    };
    Ok((lists, left_out))
}

/// What the profile said when last read: the modules its `register` and `expose` lists name,
/// which are applied while the stub runs, and its other keys, which are not.
#[derive(Default)]
pub(crate) struct FromProfile {
    register: Vec<PathBuf>,
    expose: Vec<String>,
    others: serde_json::Map<String, serde_json::Value>,
}

impl FromProfile {
    /// The keys, other than the lists, whose values differ in `now`.
    fn keys_changed(&self, now: &FromProfile) -> Vec<String> {
        let (old, now) = (&self.others, &now.others);
        let removed = old.keys().filter(|k| !now.contains_key(*k));
        (now.keys().chain(removed))
            .filter(|k| old.get(*k) != now.get(*k))
            .cloned()
            .collect()
    }
}

/// `paths` (to register) with only the first file of each module name, and an error for each
/// other file: two files of one name would be registered one after the other, the second
/// replacing the first, and withdrawn twice when both leave the list. The same file listed
/// twice is kept once, as registering it again changes nothing.
pub fn one_file_per_module(paths: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<String>) {
    let mut kept: Vec<(PathBuf, PathBuf)> = Vec::new(); // (as given, canonical)
    let mut errors = Vec::new();
    for path in paths {
        // Named as `parse_file` names it: after the file a symlink points to.
        let real = real_path(&path);
        match kept.iter().find(|(_, k)| k.file_stem() == real.file_stem()) {
            Some((_, first)) if *first == real => {}
            Some((first, _)) => {
                let module = real.file_stem().unwrap_or_default().to_string_lossy();
                let (first, other) = (first.display(), path.display());
                errors.push(format!(
                    "module {module} is listed twice, as {first} and as {other}: only {first} \
                     is registered (a module has one file: list one)"
                ));
            }
            None => kept.push((path, real)),
        }
    }
    (kept.into_iter().map(|(path, _)| path).collect(), errors)
}

/// The `desc:` text of a descriptor.
pub fn render(desc: &ModuleDescriptor, owner: &str) -> String {
    let mut out = format!(
        "module {} (owner {owner}), {} function(s):\n",
        desc.module,
        desc.functions.len()
    );
    for f in &desc.functions {
        // Headers and doc lines are the owner's text.
        out += &format!("  {}", printable(&f.signature()));
        if let Some(decorator) = &f.wrapped_by {
            let decorator = printable(decorator);
            out += &format!("  (@{decorator} may change its arguments: not checked here)");
        }
        if let Some(doc) = &f.doc {
            out += &format!("\n      {}", printable(doc));
        }
        out.push('\n');
    }
    if let Some(values) = desc.values_line() {
        out += &format!("  {values}\n");
    }
    out
}

impl Stub {
    /// Registers (or re-registers) the module file at `path`: parse, start workers, upload.
    pub(crate) fn register(&mut self, path: &Path) {
        if let Err(e) = self.try_register(path) {
            say!("error: {e}");
        }
    }

    fn try_register(&mut self, path: &Path) -> Result<(), String> {
        parse_file(path).and_then(|parsed| self.own(parsed, None))
    }

    /// Registers and exposes at start what the profile's lists and the command line name
    /// (the profile's first).
    pub(crate) fn register_listed(&mut self) {
        let (from_profile, mut errors) = match self.config.profile.as_deref().map(read_profile) {
            Some(Ok(read)) => read,
            Some(Err(e)) => (FromProfile::default(), vec![e.to_string()]),
            None => Default::default(),
        };
        let listed = from_profile.register.iter().chain(&self.config.register);
        let (register, left_out) = one_file_per_module(listed.cloned().collect());
        errors.extend(left_out);
        for e in errors {
            say!("error: {e}");
        }
        for path in &register {
            self.register_listed_file(path);
        }
        let expose: Vec<String> = (from_profile.expose.iter())
            .chain(&self.config.expose)
            .cloned()
            .collect();
        for name in &expose {
            self.expose(name);
        }
        self.from_profile = from_profile;
    }

    /// Registers a file the profile or the command line lists. One that cannot be registered
    /// now (missing, a syntax error, ...) is tried again each time it changes, as a listed
    /// module is meant to be on the network.
    fn register_listed_file(&mut self, path: &Path) {
        // Read before the file is: an edit made meanwhile is seen.
        let watched = Watched::read_now(path);
        match self.try_register(path) {
            Ok(()) => {
                self.unregistered.remove(path);
            }
            // No edit can make it a module (a directory, `my-mod.py`): not tried again.
            Err(e) if !named_as_a_module(path) => say!("error: {e}"),
            Err(e) => {
                say!("error: {e} (it is tried again when the file changes)");
                self.unregistered.insert(path.to_owned(), watched);
            }
        }
    }

    /// Whether the command line lists the file at `path`, so that removing it from the profile
    /// leaves it registered.
    fn on_command_line(&self, path: &Path) -> bool {
        let path = real_path(path);
        (self.config.register.iter()).any(|p| real_path(p) == path)
    }

    /// Shares the installed Python module `name` (a profile's `expose`) once it is described.
    pub(crate) fn expose(&mut self, name: &str) {
        if self.exposing.insert(name.to_owned()) {
            self.describe(name, Purpose::Expose);
        }
    }

    /// Has the installed module `name` described, off the stub's thread (see
    /// [`describe_queued`]): what it was for is done once it is ([`Stub::described`]).
    fn describe(&mut self, name: &str, purpose: Purpose) {
        if let Purpose::Reload {
            asker: Asker::App(conn, _),
            ..
        } = purpose
        {
            self.app_reloads.push(conn);
        }
        let _ = self.describing.try_send(Describe {
            name: name.to_owned(),
            python: self.config.python.clone(),
            purpose,
        });
    }

    /// An installed module described: exposed, or reloaded, as it was described for.
    pub(crate) fn described(&mut self, job: Describe, described: Result<Parsed, String>) {
        let name = job.name;
        match job.purpose {
            // Unless removed from the profile meanwhile.
            Purpose::Expose if self.exposing.remove(&name) => {
                let described = described.map_err(|e| format!("cannot expose '{name}': {e}"));
                if let Err(e) = described.and_then(|parsed| self.own(parsed, None)) {
                    say!("error: {e}");
                }
            }
            Purpose::Expose => {}
            Purpose::Reload { why, asker } => {
                let reloaded = described
                    .map_err(|e| kept_running(&name, &format!("cannot reload '{name}': {e}")))
                    .and_then(|parsed| self.replace(&name, parsed, why));
                if let Asker::App(conn, _) = asker {
                    if let Some(i) = self.app_reloads.iter().position(|&c| c == conn) {
                        self.app_reloads.swap_remove(i);
                    }
                }
                self.tell(asker, reloaded);
                self.close_answered_apps();
            }
        }
    }

    /// Takes ownership of a parsed module: start or restart its workers, upload it. `app` is the
    /// app that provides it and the id of its `provide`, if an app does.
    ///
    /// # Errors
    /// Another stub owns the module and it is not declared shared here.
    pub(crate) fn own(
        &mut self,
        parsed: Parsed,
        app: Option<(AppRunner, u64)>,
    ) -> Result<(), String> {
        fits(&parsed, self.config.limits.max_module_bytes)?;
        let module = parsed.desc.module.clone();
        if let Some(k) = self.known.get(&module) {
            if !self.config.shared.contains(&module) {
                let owner = &k.owner;
                return Err(format!("module '{module}' is owned by '{owner}' (to provide it too, both must declare it shared)"));
            }
            // Provided by others too: this stub becomes one of its owners once the server
            // accepts it (see `Stub::forget_known`); until then, refused, it calls theirs.
        }
        if let (None, Some(o)) = (&app, self.owned.get(&module)) {
            // (Unless a withdraw is on its way: then it must be uploaded again.)
            if o.parsed.path == parsed.path && !self.asked.waits_on(&module, Ask::Withdraw) {
                // The same file again: reloaded if edited, as the watcher does.
                if o.parsed.md5 == parsed.md5 && o.watched.unchanged(&parsed.path) && !o.refused {
                    let path = parsed.path.display();
                    say!("{module} is registered from {path} already, unchanged (reload:{module} restarts it)");
                    return Ok(());
                }
                return self.replace(&module, parsed, "registered again").map(drop);
            }
        }
        say!(
            "registering {module} from {}: {} function(s)",
            parsed.path.display(),
            parsed.desc.functions.len()
        );
        self.upload(&module, &parsed.bytes);
        let before = self.owned.get(&module);
        let (pool, provide_id) = match (app, before.map(|o| &o.pool)) {
            (Some((app, id)), _) => (Runner::App(app), Some(id)),
            // Another file of the same name: its workers take over from the old file's as for
            // a reload. The calls running finish on the old code; those queued wait for the
            // new workers, and run there.
            (None, Some(Runner::Python(pool))) => {
                pool.reload(self.config.worker_spec(&parsed));
                (Runner::Python(pool.clone()), None)
            }
            (None, _) => (Runner::Python(self.start_workers(&parsed)), None),
        };
        let owned = Owned {
            watched: Watched::read_now(&parsed.path),
            parsed,
            // Still registered at the server as before, until it answers the upload.
            confirmed: before.is_some_and(|o| o.confirmed),
            refused: false,
            network: None,
            pool,
            provide_id,
        };
        if let Ok(mut served) = self.served.lock() {
            served.back(&module);
        }
        self.owned.insert(module, owned);
        self.refresh_names();
        Ok(())
    }

    /// Starts the workers of the module `parsed`. One that cannot run (its
    /// interpreter cannot be started) stays registered, as one that fails to import does: its
    /// calls fail with the reason, and it runs once the interpreter can start.
    fn start_workers(&self, parsed: &Parsed) -> Pool {
        let module = &parsed.desc.module;
        let (pool, started) = Pool::start(self.config.worker_spec(parsed));
        if let Err(e) = started {
            let every = MAX_BACKOFF.as_secs();
            say!(
                "error: {e} ({WHICH_INTERPRETER}); {module} \
                 stays registered, and its calls fail with this until it can start (tried again \
                 with backoff, up to every {every} s)"
            );
        }
        pool
    }

    /// Reloads an owned module from its file (an installed one is described again): new headers
    /// are uploaded, and its workers restart on the new code once the calls they are running
    /// end, so none is cut short (see `worker::Pool::reload`). A file that no longer parses
    /// leaves the old version running. `asker` is told the descriptor's md5, or why not: not
    /// owned here, or the file does not parse.
    pub(crate) fn reload(&mut self, module: &str, why: &'static str, asker: Asker) {
        let Some(owned) = self.owned.get_mut(module) else {
            let e = match self.exposing.contains(module) {
                true => format!("{module} is still being described: it is exposed once imported"),
                false => format!("this stub does not own a module '{module}' (see mods)"),
            };
            return self.tell(asker, Err(e));
        };
        owned.watched = Watched::read_now(&owned.parsed.path);
        if owned.pool.provider().is_some() {
            let e =
                format!("{module} is provided by an app, which reloads it by providing it again");
            return self.tell(asker, Err(e));
        }
        let path = &owned.parsed.path;
        if let Some(name) = path.to_str().and_then(|p| p.strip_prefix("import:")) {
            let name = name.to_owned();
            return self.describe(&name, Purpose::Reload { why, asker });
        }
        let reloaded = parse_file(path)
            .and_then(|parsed| same_file(path, parsed))
            .map_err(|e| kept_running(module, &e))
            .and_then(|parsed| self.replace(module, parsed, why));
        self.tell(asker, reloaded);
    }

    /// Puts `parsed`, read again, in place of the owned module's version (see
    /// [`Stub::reload`]).
    ///
    /// # Returns
    /// The descriptor's md5.
    ///
    /// # Errors
    /// The descriptor is over the limit, or the module is no longer owned from that path.
    fn replace(&mut self, module: &str, parsed: Parsed, why: &str) -> Result<String, String> {
        fits(&parsed, self.config.limits.max_module_bytes).map_err(|e| kept_running(module, &e))?;
        // An upload now would overtake the withdraw on its way and keep the module registered.
        if self.asked.waits_on(module, Ask::Withdraw) {
            return Err(format!("{module} is being withdrawn: not reloaded"));
        }
        // (Withdrawn, or replaced, while it was being described.)
        let Some(owned) = (self.owned.get_mut(module)).filter(|o| o.parsed.path == parsed.path)
        else {
            return Err(format!(
                "{module} is no longer owned here from {}",
                parsed.path.display()
            ));
        };
        owned.watched = Watched::read_now(&parsed.path);
        owned.pool.reload(self.config.worker_spec(&parsed));
        let changed = parsed.md5 != owned.parsed.md5;
        let again = !changed && std::mem::take(&mut owned.refused);
        let before = std::mem::replace(&mut owned.parsed, parsed);
        if changed && owned.confirmed && owned.network.is_none() {
            owned.network = Some(before);
        }
        let md5 = owned.parsed.md5.clone();
        if changed || again {
            let bytes = owned.parsed.bytes.clone();
            self.upload(module, &bytes);
        }
        let headers = match (changed, again) {
            (true, _) => "new headers uploaded",
            (false, true) => "its refused headers uploaded again",
            (false, false) => "headers unchanged",
        };
        say!("reloaded {module} ({why}): {headers}");
        Ok(md5)
    }

    /// Tells `asker` how a reload went: its md5, or why not.
    fn tell(&self, asker: Asker, reloaded: Result<String, String>) {
        match (asker, reloaded) {
            (Asker::Output, Ok(_)) => {} // said as it was done
            (Asker::Output, Err(e)) => say!("error: {e}"),
            (Asker::App(conn, id), reloaded) => {
                let result = reloaded
                    .map(|md5| serde_json::Value::from(md5).into())
                    .map_err(|e| RemoteError::new(ErrorKind::Refused, e));
                self.answer_app(conn, id, result);
            }
        }
    }

    /// Notices edited module files and reloads them (see [`Stub::reload`]).
    pub(crate) fn watch_files(&mut self) {
        let mut due = Vec::new();
        for (module, o) in &mut self.owned {
            if !o.parsed.path.is_absolute() {
                continue; // An installed module (`import:NAME`) or an app's: no file to watch.
            }
            if o.watched.edited(&o.parsed.path) {
                due.push(module.clone());
            }
        }
        for module in due {
            self.reload(&module, "its file changed", Asker::Output);
        }
        let mut changed = Vec::new();
        for (path, watched) in &mut self.unregistered {
            if watched.edited(path) {
                changed.push(path.clone());
            }
        }
        for path in changed {
            // Unless registered by hand meanwhile (`rm:`): then it is watched as owned.
            let real = real_path(&path);
            match self.owned.values().any(|o| o.parsed.path == real) {
                true => drop(self.unregistered.remove(&path)),
                false => self.register_listed_file(&path),
            }
        }
    }

    /// Notices an edited profile: modules added to its `register` or `expose` lists are
    /// registered, and modules removed from them are withdrawn.
    pub(crate) fn watch_profile(&mut self) {
        let Some(path) = self.config.profile.clone() else {
            return;
        };
        if !self.profile_watched.edited(&path) {
            return;
        }
        let (now, left_out) = match read_profile(&path) {
            Ok(read) => read,
            Err(e) => return say!("error: the profile changed but cannot be read: {e}"),
        };
        for e in left_out {
            say!("error: {e}");
        }
        let old = std::mem::take(&mut self.from_profile);
        let changed = old.keys_changed(&now);
        if !changed.is_empty() {
            say!(
                "note: the profile's {} changed: that applies when the stub is restarted (only \
                 its register and expose lists apply while it runs)",
                changed.join(", ")
            );
        }
        // Compared as files: one missing when the profile was last read is named as spelled
        // then, and may be there now (named as its real path in `now`).
        let listed = |list: &[PathBuf], path: &Path| {
            let path = real_path(path);
            list.iter().any(|p| real_path(p) == path)
        };
        // Not what the command line lists too: that stays.
        let gone = old.register.iter().filter(|p| !listed(&now.register, p));
        let gone: Vec<&PathBuf> = gone.filter(|p| !self.on_command_line(p)).collect();
        for gone in gone {
            let gone_file = real_path(gone);
            self.unregistered.retain(|p, _| real_path(p) != gone_file);
            let module = gone
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            self.withdraw_owned(module, "removed from the profile");
        }
        let gone = old.expose.iter().filter(|m| !now.expose.contains(m));
        let gone: Vec<&String> = gone.filter(|m| !self.config.expose.contains(m)).collect();
        for gone in gone {
            self.exposing.remove(gone); // not exposed, if still being described
            self.withdraw_owned(gone, "removed from the profile");
        }
        for added in now.register.iter().filter(|p| !listed(&old.register, p)) {
            self.register_listed_file(added);
        }
        for added in now.expose.iter().filter(|m| !old.expose.contains(m)) {
            self.expose(added);
        }
        self.from_profile = now;
    }

    /// After `sc:` wrote the stub's own profile: it holds what runs now (defaults and the port
    /// in use included), so the watcher, which sees the edit, has nothing to note or do.
    pub(crate) fn saved_own_profile(&mut self, saved: &Path) {
        let own = self.config.profile.as_deref().map(real_path);
        if own.is_some_and(|own| own == real_path(saved)) {
            if let Ok((read, _)) = read_profile(saved) {
                self.from_profile = read;
            }
        }
    }

    /// Asks the server to withdraw a module this stub owns.
    pub(crate) fn withdraw_owned(&mut self, module: &str, why: &str) {
        if self.owned.contains_key(module) {
            say!("withdrawing {module}: {why}");
            self.send_withdraw(module);
        }
    }

    /// Sends a withdraw for an owned module, kept in `Stub::asked` until the server answers it.
    /// Not while one is on its way with no upload after it: the second could only be refused.
    /// With no server to send it to, the module is withdrawn here at once: off the network
    /// already, it is not registered again when the stub reconnects (see `Stub::connected`).
    pub(crate) fn send_withdraw(&mut self, module: &str) {
        if self.asked.last(module) == Some(Ask::Withdraw) {
            return say!("{module} is being withdrawn already");
        }
        if self.up.is_none() {
            say!("withdrew {module} (not connected: it is not registered again when the stub reconnects)");
            self.disown(module, "was withdrawn");
            return self.refresh_names();
        }
        self.send_up(ToServer::Withdraw {
            module: module.to_owned(),
        });
        self.asked.push(module, Ask::Withdraw);
    }
}
