//! Profiles: TOML files holding the settings of a server stub or a client stub.
//!
//! `-c NAME` names a file path, or else the profile `conf/NAME.toml`. Relative paths inside a
//! profile are relative to the profile's own directory, so a profile works from any directory.
//! Unknown keys are errors, so a typo never passes silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// What both stubs enforce on the links they keep (the server on each stub's, a client stub
/// on each app's and on the server's): all a client profile's `[limits]` table may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LimitsTable", into = "LimitsTable")]
pub struct LinkLimits {
    /// Largest frame accepted or sent, in bytes (an argument or result must fit in one).
    pub max_frame_bytes: usize,
    /// Largest module descriptor, in bytes.
    pub max_module_bytes: u64,
    /// Frames queued for one peer (a stub, or an app) before it is dropped as not reading.
    pub queue_frames: usize,
    /// Bytes queued for one peer before it is dropped as not reading.
    pub queue_bytes: usize,
}

/// The sizes and times the server enforces: the `[limits]` table of a server profile. Every
/// key is optional; the defaults suit a small network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LimitsTable", into = "LimitsTable")]
pub struct Limits {
    /// What client stubs enforce too.
    pub link: LinkLimits,
    /// Stubs on the network at once.
    pub max_peers: usize,
    /// Calls in flight per stub.
    pub max_calls_in_flight: usize,
    /// How often each side of a stub–server link sends a heartbeat; three silent intervals
    /// mean the other side is gone (stubs follow the server's value).
    pub heartbeat_ms: u64,
}

/// A `[limits]` table as written, each key set or not: one list of keys for both profiles.
/// None can be 0: a frame limit of 0 refuses every frame, a queue of 0 drops every peer, 0
/// peers or calls refuse them all, a heartbeat of 0 ms finds every peer gone at once.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct LimitsTable {
    #[serde(
        deserialize_with = "some_frame_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    max_frame_bytes: Option<usize>,
    #[serde(
        deserialize_with = "some_at_least_1",
        skip_serializing_if = "Option::is_none"
    )]
    max_module_bytes: Option<u64>,
    #[serde(
        deserialize_with = "some_at_least_1",
        skip_serializing_if = "Option::is_none"
    )]
    queue_frames: Option<usize>,
    #[serde(
        deserialize_with = "some_at_least_1",
        skip_serializing_if = "Option::is_none"
    )]
    queue_bytes: Option<usize>,
    #[serde(
        deserialize_with = "some_at_least_1",
        skip_serializing_if = "Option::is_none"
    )]
    max_peers: Option<usize>,
    #[serde(
        deserialize_with = "some_at_least_1",
        skip_serializing_if = "Option::is_none"
    )]
    max_calls_in_flight: Option<usize>,
    #[serde(
        deserialize_with = "some_heartbeat_ms",
        skip_serializing_if = "Option::is_none"
    )]
    heartbeat_ms: Option<u64>,
    /// Keys neither profile takes: each refuses them listing only the keys it takes (see
    /// [`LimitsTable::refuse_unknown`]).
    #[serde(flatten, skip_serializing)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

/// Every key a `[limits]` table may hold, in [`LimitsTable`]'s order: a server profile takes
/// them all.
const SERVER_KEYS: &[&str] = &[
    "max_frame_bytes",
    "max_module_bytes",
    "queue_frames",
    "queue_bytes",
    "max_peers",
    "max_calls_in_flight",
    "heartbeat_ms",
];

/// The keys a client profile's `[limits]` table takes: the first four, [`LinkLimits`]'.
const LINK_KEYS: &[&str] = SERVER_KEYS.split_at(4).0;

/// A size, count or time refused if 0, where 0 cannot work: rather than failing at run time
/// with a reason that does not name the key, or being quietly taken as 1 (as the log's rotation
/// would).
fn at_least_1<'de, D, N>(d: D) -> std::result::Result<N, D::Error>
where
    D: serde::Deserializer<'de>,
    N: Deserialize<'de> + PartialEq + From<u8>,
{
    let n = N::deserialize(d)?;
    if n == N::from(0) {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(n)
}

/// [`at_least_1`], for a key that may be left out.
fn some_at_least_1<'de, D, N>(d: D) -> std::result::Result<Option<N>, D::Error>
where
    D: serde::Deserializer<'de>,
    N: Deserialize<'de> + PartialEq + From<u8>,
{
    at_least_1(d).map(Some)
}

/// The smallest `max_frame_bytes`. The smallest frames are about 100 bytes, but an answer
/// keeps 1024 bytes of its frame for its envelope: below this, arguments and results would
/// have little room or none.
pub const MIN_FRAME_BYTES: usize = 4096;

fn some_frame_bytes<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<usize>, D::Error> {
    match usize::deserialize(d)? {
        n if n < MIN_FRAME_BYTES => Err(serde::de::Error::custom(format!(
            "must be at least {MIN_FRAME_BYTES}: a smaller frame leaves little or no room for \
             a call's arguments or its result"
        ))),
        n => Ok(Some(n)),
    }
}

/// The shortest `heartbeat_ms`. Three silent intervals drop a peer: much shorter, and the
/// delays of a busy machine (a process not scheduled, a burst of frames) would drop live ones.
pub const MIN_HEARTBEAT_MS: u64 = 100;

fn some_heartbeat_ms<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        n if n < MIN_HEARTBEAT_MS => Err(serde::de::Error::custom(format!(
            "must be at least {MIN_HEARTBEAT_MS}: three intervals of silence drop a peer, and a \
             shorter one would drop live peers as they wait to be scheduled"
        ))),
        n => Ok(Some(n)),
    }
}

/// The most workers a module may have. Each is a Python process; a count above this is far more
/// likely a typo than a machine that could run that many interpreters.
pub const MAX_WORKERS: usize = 256;

/// Worker counts by module, each refused if 0 (a module with no worker could run no call) or
/// over [`MAX_WORKERS`]. A key that is not a module name is refused too: no module could ever be
/// given those workers.
fn worker_counts<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<BTreeMap<String, usize>, D::Error> {
    let counts = BTreeMap::<String, usize>::deserialize(d)?;
    if let Some(key) = counts.keys().find(|m| !crate::store::valid_module_name(m)) {
        return Err(serde::de::Error::custom(format!(
            "workers: {}",
            not_a_module_name(key)
        )));
    }
    match counts.iter().find(|(_, n)| **n == 0) {
        Some((module, _)) => Err(serde::de::Error::custom(format!(
            "workers for '{module}' must be at least 1: a module with no worker runs no call \
             (leave it out for the default, 1)"
        ))),
        None => match counts.iter().find(|(_, n)| **n > MAX_WORKERS) {
            Some((module, n)) => Err(serde::de::Error::custom(format!(
                "workers for '{module}' = {n} is too many: at most {MAX_WORKERS}, as each worker \
                 is a Python process"
            ))),
            None => Ok(counts),
        },
    }
}

/// A list of module names (`expose`, `shared`), refused at the first that is not one: it could
/// never match a module, so a typo (`z.py` for `z`) would quietly do nothing.
fn module_names<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    match names.iter().find(|m| !crate::store::valid_module_name(m)) {
        Some(name) => Err(serde::de::Error::custom(not_a_module_name(name))),
        None => Ok(names),
    }
}

/// A module name given on the command line (`--expose`, `--shared`), checked as the profile's.
pub fn module_name(name: &str) -> std::result::Result<String, String> {
    match crate::store::valid_module_name(name) {
        true => Ok(name.to_owned()),
        false => Err(not_a_module_name(name)),
    }
}

/// Why `name` is refused where a module name must be given.
fn not_a_module_name(name: &str) -> String {
    format!(
        "'{}' is not a module name (ASCII letters, digits and _, not starting with a digit; \
         dotted for an installed module, like os.path; at most 128 bytes)",
        crate::log::printable(name)
    )
}

/// Why a directory or an interpreter is refused when empty: `""` would quietly name the
/// profile's own directory, or an interpreter that never starts.
const EMPTY: &str = "must not be empty (leave it out for the default)";

/// The `--python` flag, refused if empty as the profile's key is (clap refuses an empty path
/// itself).
pub fn not_empty(value: &str) -> std::result::Result<String, String> {
    match value.is_empty() {
        true => Err(EMPTY.into()),
        false => Ok(value.to_owned()),
    }
}

/// A profile's `receiving_dir`, `dir` or `python`, refused if empty (see [`EMPTY`]).
fn some_not_empty<'de, D, T>(d: D) -> std::result::Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + AsRef<std::ffi::OsStr>,
{
    let value = T::deserialize(d)?;
    match value.as_ref().is_empty() {
        true => Err(serde::de::Error::custom(EMPTY)),
        false => Ok(Some(value)),
    }
}

/// The network token in force: `--token` (or `STUBNET_TOKEN`), else the profile's `token`. An
/// empty one is none given: `STUBNET_TOKEN=` (what a service manager or compose file leaves
/// for an unset variable) must not turn off the profile's token.
///
/// # Errors
/// The token is longer than [`MAX_TOKEN_BYTES`](crate::proto::MAX_TOKEN_BYTES).
pub fn token(flag: Option<String>, profile: Option<String>) -> Result<Option<String>> {
    let given = |t: &Option<String>| t.as_ref().is_some_and(|t| !t.is_empty());
    let token = [flag, profile].into_iter().find(given).flatten();
    match token {
        Some(t) if t.len() > crate::proto::MAX_TOKEN_BYTES => Err(Error::Config(format!(
            "the network token is {} bytes long: it takes at most {}",
            t.len(),
            crate::proto::MAX_TOKEN_BYTES
        ))),
        token => Ok(token),
    }
}

/// A call timeout in milliseconds, refused if 0 (every call would time out at once): the
/// profile's `call_timeout_ms` and an app's `--timeout-ms` alike.
pub fn call_timeout_ms(ms: u64) -> std::result::Result<u64, String> {
    match ms {
        0 => Err(
            "a call timeout must be at least 1 ms: with 0 every call would time out at once".into(),
        ),
        ms => Ok(ms),
    }
}

fn some_call_timeout_ms<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<u64>, D::Error> {
    call_timeout_ms(u64::deserialize(d)?)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

impl Default for LinkLimits {
    fn default() -> Self {
        LinkLimits {
            max_frame_bytes: crate::conn::DEFAULT_MAX_FRAME,
            max_module_bytes: 16 * 1024 * 1024,
            queue_frames: 16 * 1024,
            queue_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        LimitsTable::default()
            .try_into()
            .expect("an empty table holds no unknown key")
    }
}

impl LimitsTable {
    /// Refuses a key that is not one of `keys`, listing them: a typo never passes silently.
    fn refuse_unknown(&self, keys: &'static [&'static str]) -> std::result::Result<(), String> {
        match self.unknown.keys().next() {
            Some(key) => {
                let e = <serde::de::value::Error as serde::de::Error>::unknown_field(key, keys);
                Err(e.to_string())
            }
            None => Ok(()),
        }
    }

    /// The link limits this table sets, the defaults for the others.
    fn link(&self) -> LinkLimits {
        let d = LinkLimits::default();
        LinkLimits {
            max_frame_bytes: self.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            max_module_bytes: self.max_module_bytes.unwrap_or(d.max_module_bytes),
            queue_frames: self.queue_frames.unwrap_or(d.queue_frames),
            queue_bytes: self.queue_bytes.unwrap_or(d.queue_bytes),
        }
    }
}

impl TryFrom<LimitsTable> for Limits {
    type Error = String;

    fn try_from(t: LimitsTable) -> std::result::Result<Self, String> {
        t.refuse_unknown(SERVER_KEYS)?;
        Ok(Limits {
            link: t.link(),
            max_peers: t.max_peers.unwrap_or(10_000),
            max_calls_in_flight: t.max_calls_in_flight.unwrap_or(10_000),
            heartbeat_ms: t.heartbeat_ms.unwrap_or(5_000),
        })
    }
}

/// A client profile refuses the server's own keys: set there, they would silently do nothing.
impl TryFrom<LimitsTable> for LinkLimits {
    type Error = String;

    fn try_from(t: LimitsTable) -> std::result::Result<Self, String> {
        t.refuse_unknown(LINK_KEYS)?;
        let server_only = [
            ("max_peers", t.max_peers.is_some()),
            ("max_calls_in_flight", t.max_calls_in_flight.is_some()),
            ("heartbeat_ms", t.heartbeat_ms.is_some()),
        ];
        match server_only.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(format!(
                "`{key}` is a server setting: a client stub does not use it (set it in the \
                 server's profile)"
            )),
            None => Ok(t.link()),
        }
    }
}

impl From<LinkLimits> for LimitsTable {
    fn from(l: LinkLimits) -> Self {
        LimitsTable {
            max_frame_bytes: Some(l.max_frame_bytes),
            max_module_bytes: Some(l.max_module_bytes),
            queue_frames: Some(l.queue_frames),
            queue_bytes: Some(l.queue_bytes),
            ..LimitsTable::default()
        }
    }
}

impl From<Limits> for LimitsTable {
    fn from(l: Limits) -> Self {
        LimitsTable {
            max_peers: Some(l.max_peers),
            max_calls_in_flight: Some(l.max_calls_in_flight),
            heartbeat_ms: Some(l.heartbeat_ms),
            ..l.link.into()
        }
    }
}

/// The `[log]` table: where a stub's output also goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A log file (relative to the profile); output still goes to stdout too.
    pub file: Option<PathBuf>,
    /// The file is rotated past this size (`FILE.1`, `FILE.2`, ...); at least 1.
    #[serde(deserialize_with = "at_least_1")]
    pub max_bytes: usize,
    /// How many rotated files are kept; at least 1.
    #[serde(deserialize_with = "at_least_1")]
    pub keep: usize,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            file: None,
            max_bytes: 10 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// A `[log]` table, which must name its file: one without would log nowhere, in silence.
fn log_table<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<LogSettings, D::Error> {
    let log = LogSettings::deserialize(d)?;
    if log.file.is_none() {
        return Err(serde::de::Error::custom(
            "[log] has no `file`: give it the file to log to, like file = \"stub.log\"",
        ));
    }
    Ok(log)
}

impl<T> Profile<T> {
    /// Starts logging to the file `log` names, if any.
    fn start_log(&self, log: &LogSettings) -> Result<()> {
        if let Some(file) = &log.file {
            // `""` would resolve to the profile's directory: kept empty, it names no file.
            let path = match file.as_os_str().is_empty() {
                true => PathBuf::new(),
                false => self.resolve(file),
            };
            crate::log::to_file(&path, log.max_bytes, log.keep).map_err(|e| {
                let (path, profile) = (
                    format!("{:?}", path.display().to_string()),
                    self.path.display(),
                );
                Error::Config(format!(
                    "cannot log to {path} ([log] file in {profile}): {e}"
                ))
            })?;
        }
        Ok(())
    }
}

/// A server stub profile (`conf/server.toml`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerProfile {
    /// Address to listen on (`-a`).
    pub address: Option<String>,
    /// Port to listen on, 0 for any free port (`-p`).
    pub port: Option<u16>,
    /// Where uploaded descriptors are kept (`-d`).
    #[serde(default, deserialize_with = "some_not_empty")]
    pub dir: Option<PathBuf>,
    /// Run the interactive shell (`-l`).
    pub live_console: Option<bool>,
    /// The network token every stub must present (`--token`, env `STUBNET_TOKEN`).
    pub token: Option<String>,
    /// Allow listening beyond loopback without a token (`--insecure`).
    pub insecure: Option<bool>,
    /// TLS: the server's certificate chain, PEM (`--tls-cert`).
    pub tls_cert: Option<PathBuf>,
    /// TLS: the server's private key, PEM (`--tls-key`).
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, deserialize_with = "log_table")]
    pub log: LogSettings,
}

/// A client stub profile (`conf/conf.toml`, ...); also read by apps for `app_port`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientProfile {
    /// This stub's name on the network (`-n`).
    pub name: Option<String>,
    /// The server's address (`-a`).
    pub address: Option<String>,
    /// The server's port (`-p`).
    pub port: Option<u16>,
    /// Loopback port for apps, 0 for any free port (`-q`).
    pub app_port: Option<u16>,
    /// Where received descriptors are kept (`-d`).
    #[serde(default, deserialize_with = "some_not_empty")]
    pub receiving_dir: Option<PathBuf>,
    /// Run the interactive shell (`-l`).
    pub live_console: Option<bool>,
    /// The network token, if the server requires one (`--token`, env `STUBNET_TOKEN`).
    pub token: Option<String>,
    /// TLS: the certificate(s) to trust, PEM; set, the stub speaks TLS to the server (`--tls-ca`).
    pub tls_ca: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry; default: the server's address
    /// (`--tls-name`).
    pub tls_name: Option<String>,
    /// Modules registered at start (`--register`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub register: Vec<PathBuf>,
    /// When the name is taken, join as `NAME-2`, `NAME-3`, ... instead of failing (`--name-suffix`).
    pub name_suffix: Option<bool>,
    /// The Python interpreter that runs owned modules (`--python`).
    #[serde(default, deserialize_with = "some_not_empty")]
    pub python: Option<String>,
    /// Default call timeout in milliseconds, for apps using this profile.
    #[serde(default, deserialize_with = "some_call_timeout_ms")]
    pub call_timeout_ms: Option<u64>,
    /// Worker processes per owned module, by module name (default 1; at least 1).
    #[serde(
        default,
        deserialize_with = "worker_counts",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub workers: BTreeMap<String, usize>,
    /// Installed Python modules to share by name, e.g. `["math", "os.path"]` (`--expose`). Their
    /// functions become callable and their plain values readable by everyone on the network.
    #[serde(
        default,
        deserialize_with = "module_names",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub expose: Vec<String>,
    /// Modules this stub declares shareable (`--shared`): stubs registering the same headers
    /// as shared all provide them, and calls are spread among them.
    #[serde(
        default,
        deserialize_with = "module_names",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub shared: Vec<String>,
    #[serde(default)]
    pub limits: LinkLimits,
    #[serde(
        default,
        deserialize_with = "log_table",
        skip_serializing_if = "LogSettings::is_default"
    )]
    pub log: LogSettings,
}

impl LogSettings {
    fn is_default(&self) -> bool {
        *self == LogSettings::default()
    }
}

/// A loaded profile and where it came from.
#[derive(Debug, Clone)]
pub struct Profile<T> {
    pub path: PathBuf,
    pub values: T,
}

impl<T: DeserializeOwned> Profile<T> {
    /// Loads the profile named by `-c ARG`.
    pub fn load(arg: &str) -> Result<Self> {
        let path = locate(arg)?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Config(format!("cannot read profile {}: {e}", path.display())))?;
        let values = toml::from_str(&text)
            .map_err(|e| Error::Config(format!("bad profile {}: {e}", path.display())))?;
        Ok(Profile { path, values })
    }
}

impl<T: DeserializeOwned + Default + Clone> Profile<T> {
    /// The profile `-c ARG` names, if any, and its values (the defaults without one); its log
    /// file, if it sets one, is started.
    pub fn open(arg: Option<&str>, log: impl Fn(&T) -> &LogSettings) -> Result<(Option<Self>, T)> {
        let Some(arg) = arg else {
            return Ok((None, T::default()));
        };
        let profile = Self::load(arg)?;
        profile.start_log(log(&profile.values))?;
        let values = profile.values.clone();
        Ok((Some(profile), values))
    }
}

/// `p` as written in `profile` (relative to it), or as given when there is none.
pub fn resolve_in<T>(profile: &Option<Profile<T>>, p: PathBuf) -> PathBuf {
    match profile {
        Some(profile) => profile.resolve(&p),
        None => p,
    }
}

impl<T> Profile<T> {
    /// `p` as written in the profile, made relative to the profile's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }
}

/// Where `-c ARG` points: an existing file, or else `conf/ARG.toml`.
pub fn locate(arg: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(arg);
    if direct.is_file() {
        return Ok(direct);
    }
    let named = profile_path(arg);
    if named.is_file() {
        return Ok(named);
    }
    if named == direct {
        // A path (`-c dir/p.toml`): there is no `conf/NAME.toml` to fall back to.
        return Err(Error::Config(format!(
            "no profile '{arg}': it is not a file"
        )));
    }
    Err(Error::Config(format!(
        "no profile '{arg}': neither {} nor {} is a file",
        direct.display(),
        named.display()
    )))
}

/// The file `sc:NAME` writes: NAME itself when it looks like a path, else `conf/NAME.toml`.
pub fn profile_path(arg: &str) -> PathBuf {
    if arg.contains('/') || arg.ends_with(".toml") {
        PathBuf::from(arg)
    } else {
        Path::new("conf").join(format!("{arg}.toml"))
    }
}

/// Writes a profile as TOML, atomically, to the file `sc:ARG` names (see [`profile_path`]).
/// For a name, `conf/` is created if need be, as `-c NAME` looks there; a path's directory
/// must exist, so that a mistyped one is told rather than created.
///
/// # Returns
/// The file written.
pub fn save<T: Serialize>(arg: &str, values: &T) -> Result<PathBuf> {
    let path = profile_path(arg);
    let cannot = |why: String| {
        Error::Config(format!(
            "cannot save the profile to {}: {why}",
            path.display()
        ))
    };
    let text = toml::to_string_pretty(values).map_err(|e| cannot(e.to_string()))?;
    let dir = crate::store::dir_of(&path);
    let named = path != Path::new(arg);
    if named {
        std::fs::create_dir_all(dir)
            .map_err(|e| cannot(format!("cannot create {}: {e}", dir.display())))?;
    } else if !dir.is_dir() {
        return Err(cannot(format!("there is no directory {}", dir.display())));
    }
    if path.is_dir() {
        return Err(cannot("it is a directory: name a file (NAME.toml)".into()));
    }
    crate::store::replace_file(&path, text.as_bytes(), crate::store::Kind::Private)
        .map_err(|e| cannot(e.to_string()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `STUBNET_TOKEN=` set but empty turned off the profile's token.
    #[test]
    fn an_empty_token_is_none_given_and_leaves_the_profiles() {
        let some = |t: &str| Some(t.to_owned());
        let token = |flag, profile| token(flag, profile).unwrap();
        assert_eq!(token(some("flag"), some("profile")), some("flag"));
        assert_eq!(token(some(""), some("profile")), some("profile"));
        assert_eq!(token(None, some("profile")), some("profile"));
        assert_eq!(token(some(""), some("")), None);
        assert_eq!(token(None, None), None);
    }

    /// The server reads a hello before it checks its token: it reads no long one.
    #[test]
    fn a_token_past_its_longest_is_refused_saying_so() {
        let longest = "t".repeat(crate::proto::MAX_TOKEN_BYTES);
        assert_eq!(
            token(None, Some(longest.clone())).unwrap(),
            Some(longest.clone())
        );
        let err = token(Some(longest + "t"), None).unwrap_err().to_string();
        assert!(
            err.contains("the network token is 4097 bytes long: it takes at most 4096"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_and_paths_resolve_beside_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "nmae = \"a\"\n").unwrap();
        let err = Profile::<ClientProfile>::load(bad.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("nmae"), "{err}");
        std::fs::write(&bad, "[limits]\nheartbeat_ms = 0\n").unwrap();
        let err = Profile::<ServerProfile>::load(bad.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("at least 1"), "{err}");

        let good = dir.path().join("good.toml");
        let values = ClientProfile {
            name: Some("a".into()),
            receiving_dir: Some("recv".into()),
            ..Default::default()
        };
        save(good.to_str().unwrap(), &values).unwrap();
        let p = Profile::<ClientProfile>::load(good.to_str().unwrap()).unwrap();
        assert_eq!(p.values, values);
        assert_eq!(p.resolve(Path::new("recv")), dir.path().join("recv"));
    }

    #[test]
    fn a_heartbeat_too_short_to_be_kept_is_refused() {
        let err = profile::<ServerProfile>("[limits]\nheartbeat_ms = 99\n").unwrap_err();
        assert!(
            err.contains("heartbeat_ms") && err.contains("at least 100"),
            "{err}"
        );
        let ok = profile::<ServerProfile>("[limits]\nheartbeat_ms = 100\n").unwrap();
        assert_eq!(ok.limits.heartbeat_ms, 100);
    }

    #[test]
    fn a_client_profile_refuses_server_limits_and_saves_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        for key in ["max_peers", "max_calls_in_flight", "heartbeat_ms"] {
            std::fs::write(&path, format!("[limits]\nqueue_frames = 9\n{key} = 700\n")).unwrap();
            let err = Profile::<ClientProfile>::load(path.to_str().unwrap())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&path.display().to_string())
                    && err.contains(&format!("`{key}` is a server setting")),
                "{err}"
            );
            let server = Profile::<ServerProfile>::load(path.to_str().unwrap()).unwrap();
            assert_eq!(server.values.limits.link.queue_frames, 9);
        }
        std::fs::write(&path, "[limits]\nqueue_frames = 9\n").unwrap();
        let client = Profile::<ClientProfile>::load(path.to_str().unwrap()).unwrap();
        assert_eq!(client.values.limits.queue_frames, 9);

        save(path.to_str().unwrap(), &client.values).unwrap();
        let saved = std::fs::read_to_string(&path).unwrap();
        assert!(saved.contains("queue_frames = 9"), "{saved}");
        for key in ["max_peers", "max_calls_in_flight", "heartbeat_ms"] {
            assert!(!saved.contains(key), "{saved}");
        }
        let again = Profile::<ClientProfile>::load(path.to_str().unwrap()).unwrap();
        assert_eq!(again.values, client.values);
    }

    /// A profile of `text`, loaded from a file as a stub loads it; or the error it gets.
    fn profile<T: DeserializeOwned>(text: &str) -> std::result::Result<T, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).unwrap();
        Profile::<T>::load(path.to_str().unwrap())
            .map(|p| p.values)
            .map_err(|e| e.to_string())
    }

    fn client_profile(text: &str) -> std::result::Result<ClientProfile, String> {
        profile(text)
    }

    #[test]
    fn a_limit_of_0_is_refused_in_either_profile_naming_its_key() {
        for key in SERVER_KEYS {
            let table = format!("[limits]\n{key} = 0\n");
            let mut errors = vec![profile::<ServerProfile>(&table).unwrap_err()];
            if LINK_KEYS.contains(key) {
                errors.push(client_profile(&table).unwrap_err());
            }
            for err in errors {
                assert!(
                    err.contains(&format!("{key} = 0")) && err.contains("must be at least"),
                    "{key}: {err}"
                );
            }
            let one = format!("[limits]\n{key} = 1\n");
            // (These two have minimums of their own, tested below.)
            if !["max_frame_bytes", "heartbeat_ms"].contains(key) {
                profile::<ServerProfile>(&one).unwrap();
            }
        }
    }

    #[test]
    fn a_frame_limit_too_small_for_a_call_is_refused_naming_the_smallest() {
        let err = client_profile("[limits]\nmax_frame_bytes = 4095\n").unwrap_err();
        assert!(
            err.contains("max_frame_bytes = 4095") && err.contains("must be at least 4096"),
            "{err}"
        );
        let ok = profile::<ServerProfile>("[limits]\nmax_frame_bytes = 4096\n").unwrap();
        assert_eq!(ok.limits.link.max_frame_bytes, MIN_FRAME_BYTES);
    }

    #[test]
    fn an_unknown_limit_is_refused_listing_only_the_keys_its_profile_takes() {
        let table = "[limits]\nqueue_frame = 9\n";
        let client = client_profile(table).unwrap_err();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, table).unwrap();
        let server = Profile::<ServerProfile>::load(path.to_str().unwrap())
            .unwrap_err()
            .to_string();
        // The keys each profile takes are those it saves.
        let keys = |limits: toml::Value| -> Vec<String> {
            limits.as_table().unwrap().keys().cloned().collect()
        };
        let client_keys = keys(toml::Value::try_from(LinkLimits::default()).unwrap());
        let server_keys = keys(toml::Value::try_from(Limits::default()).unwrap());
        for err in [&client, &server] {
            assert!(err.contains("unknown field `queue_frame`"), "{err}");
        }
        for key in &server_keys {
            let listed = format!("`{key}`");
            assert!(server.contains(&listed), "{key}: {server}");
            assert_eq!(
                client.contains(&listed),
                client_keys.contains(key),
                "{key}: {client}"
            );
        }
    }

    #[test]
    fn a_call_timeout_of_0_is_refused() {
        let err = client_profile("call_timeout_ms = 0\n").unwrap_err();
        assert!(
            err.contains("call_timeout_ms") && err.contains("at least 1 ms"),
            "{err}"
        );
        let ok = client_profile("call_timeout_ms = 1\n").unwrap();
        assert_eq!(ok.call_timeout_ms, Some(1));
    }

    #[test]
    fn a_log_rotation_of_0_bytes_or_0_files_is_refused() {
        for table in ["[log]\nkeep = 0\n", "[log]\nmax_bytes = 0\n"] {
            let err = client_profile(table).unwrap_err();
            assert!(err.contains("must be at least 1"), "{table}: {err}");
        }
        let ok = client_profile("[log]\nfile = \"a.log\"\nkeep = 1\nmax_bytes = 1\n").unwrap();
        assert_eq!((ok.log.keep, ok.log.max_bytes), (1, 1));
    }

    #[test]
    fn a_log_table_without_a_file_is_refused() {
        for table in ["[log]\n", "[log]\nmax_bytes = 100\n"] {
            for err in [
                client_profile(table).unwrap_err(),
                profile::<ServerProfile>(table).unwrap_err(),
            ] {
                assert!(err.contains("[log] has no `file`"), "{table}: {err}");
            }
        }
    }

    #[test]
    fn a_worker_count_of_0_is_refused() {
        let err = client_profile("workers = { z = 2, y = 0 }\n").unwrap_err();
        assert!(err.contains("workers for 'y' must be at least 1"), "{err}");
        let ok = client_profile("workers = { z = 2 }\n").unwrap();
        assert_eq!(ok.workers["z"], 2);
    }

    #[test]
    fn a_worker_count_over_the_most_is_refused_naming_the_most() {
        let err = client_profile("workers = { z = 100000 }\n").unwrap_err();
        assert!(
            err.contains("workers for 'z' = 100000 is too many: at most 256"),
            "{err}"
        );
        let ok = client_profile(&format!("workers = {{ z = {MAX_WORKERS} }}\n")).unwrap();
        assert_eq!(ok.workers["z"], MAX_WORKERS);
    }

    #[test]
    fn a_workers_key_that_is_not_a_module_name_is_refused_naming_it() {
        let err = client_profile("workers = { z = 2, \"../x\" = 2 }\n").unwrap_err();
        assert!(
            err.contains("workers: '../x' is not a module name"),
            "{err}"
        );
        let ok = client_profile("workers = { \"os.path\" = 2 }\n").unwrap();
        assert_eq!(ok.workers["os.path"], 2);
    }

    #[test]
    fn a_shared_or_exposed_name_that_is_not_a_module_name_is_refused_naming_it() {
        for key in ["shared", "expose"] {
            let err = client_profile(&format!("{key} = [\"z\", \"../x\"]\n")).unwrap_err();
            assert!(err.contains("'../x' is not a module name"), "{err}");
        }
        let ok = client_profile("shared = [\"z\"]\nexpose = [\"os.path\"]\n").unwrap();
        assert_eq!(
            (ok.shared, ok.expose),
            (vec!["z".into()], vec!["os.path".into()])
        );
        assert!(module_name("a b").is_err());
    }

    #[test]
    fn an_empty_directory_or_interpreter_is_refused_naming_its_key() {
        for key in ["receiving_dir", "python"] {
            let err = client_profile(&format!("{key} = \"\"\n")).unwrap_err();
            assert!(
                err.contains(&format!("{key} = \"\"")) && err.contains("must not be empty"),
                "{err}"
            );
        }
        let err = profile::<ServerProfile>("dir = \"\"\n").unwrap_err();
        assert!(
            err.contains("dir = \"\"") && err.contains("must not be empty"),
            "{err}"
        );
        let ok = client_profile("receiving_dir = \"r\"\npython = \"python3\"\n").unwrap();
        assert_eq!(
            (ok.receiving_dir, ok.python),
            (Some("r".into()), Some("python3".into()))
        );
        assert!(not_empty("").is_err());
    }

    #[test]
    fn missing_profile_names_both_places() {
        let err = locate("surely-not-a-profile").unwrap_err().to_string();
        assert!(err.contains("conf/surely-not-a-profile.toml"), "{err}");
    }
}
