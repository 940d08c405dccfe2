//! The client stub: a member of the network (upstream link to the server), the owner of the
//! modules it registers (their workers), and the local server for apps (loopback listener).
//! `main.rs` resolves flags and profile into a [`Config`] and calls [`run`].
//!
//! Layout: `upstream.rs` (join and keep the server link), `stub.rs` (all state, changed by
//! events), `sync.rs` (modules on the network, synced with the server's offers), `calls.rs`
//! (app calls, answers, timeouts, stats), `app_port.rs` (the loopback port apps use),
//! `owned.rs` (registering, reloading and watching modules), `runner.rs` + `worker/` (what runs
//! owned modules: supervised Python workers or a providing app), `local.rs` (app connections),
//! `repl.rs` + `commands.rs` (shell commands: parsed, carried out).

mod app_port;
pub mod calls;
mod commands;
pub mod local;
pub mod needed;
pub mod owned;
pub mod repl;
pub mod runner;
pub mod stub;
mod sync;
pub mod upstream;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::config::{ClientProfile, LinkLimits, LogSettings};
use common::console::{Console, Names};
use common::say;
use common::store::{MadeHere, Store};
use common::tls::Connector;
use common::{Error, Result};
use smol::future::FutureExt;

use stub::{Event, Shared, Stub};
pub use upstream::NamePolicy;

/// The client stub's resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub name: String,
    /// The server's address and port.
    pub address: String,
    pub port: u16,
    /// Loopback port for apps (0: any free port).
    pub app_port: u16,
    pub receiving_dir: PathBuf,
    pub live_console: bool,
    /// Module files the command line registers (`--register`); the stub reads the profile's
    /// list itself, and watches it (see `profile`).
    pub register: Vec<PathBuf>,
    pub name_policy: NamePolicy,
    /// The interpreter that runs owned modules.
    pub python: String,
    /// Workers per owned module (default 1).
    pub workers: BTreeMap<String, usize>,
    /// Installed Python modules shared by name (`math`, `os.path`): off unless listed. Those
    /// the command line names (`--expose`); the profile's list is read as `register`'s is.
    pub expose: Vec<String>,
    /// Modules this stub declares shareable: other stubs with the same headers may provide
    /// them too, and calls are spread among the owners.
    pub shared: Vec<String>,
    pub limits: LinkLimits,
    /// The apps' default call timeout from the profile (kept for `sc:`; apps read it).
    pub call_timeout_ms: Option<u64>,
    /// Where the output also goes (kept for `sc:`; started by `main`).
    pub log: LogSettings,
    /// The profile this stub was started from: its `register` and `expose` lists are watched,
    /// and lines added or removed register or withdraw modules while running.
    pub profile: Option<PathBuf>,
    /// The network token, if the server requires one.
    pub token: Option<String>,
    /// TLS to the server: the certificate(s) to trust, PEM.
    pub tls_ca: Option<PathBuf>,
    /// TLS: the name the server's certificate must carry (default: `address`).
    pub tls_name: Option<String>,
}

impl Config {
    /// A config with defaults for everything but the name and the server.
    pub fn new(name: &str, address: &str, port: u16, receiving_dir: &Path) -> Self {
        Config {
            name: name.to_owned(),
            address: address.to_owned(),
            port,
            app_port: 0,
            receiving_dir: receiving_dir.to_owned(),
            live_console: false,
            register: Vec::new(),
            name_policy: NamePolicy::Fail,
            python: "python3".into(),
            workers: BTreeMap::new(),
            shared: Vec::new(),
            expose: Vec::new(),
            limits: LinkLimits::default(),
            call_timeout_ms: None,
            log: LogSettings::default(),
            profile: None,
            token: None,
            tls_ca: None,
            tls_name: None,
        }
    }

    /// How to start the workers of the module `parsed`, on its source as read then.
    pub fn worker_spec(&self, parsed: &owned::Parsed) -> worker::WorkerSpec {
        let module = &parsed.desc.module;
        worker::WorkerSpec {
            module: module.to_owned(),
            path: parsed.path.clone(),
            source: parsed.source.clone(),
            python: self.python.clone(),
            workers: self.workers.get(module).copied().unwrap_or(1).max(1),
            max_frame: self.limits.max_frame_bytes,
            headers: Some(Arc::new(parsed.desc.clone())),
        }
    }

    /// The running configuration as a profile (`sc:`); paths absolute.
    pub fn profile(&self) -> ClientProfile {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        ClientProfile {
            name: Some(self.name.clone()),
            address: Some(self.address.clone()),
            port: Some(self.port),
            app_port: Some(self.app_port),
            receiving_dir: Some(absolute(&self.receiving_dir)),
            live_console: Some(self.live_console),
            register: Vec::new(),
            name_suffix: Some(self.name_policy == NamePolicy::Suffix),
            // A path as one that works from anywhere; a bare name for the PATH as it is.
            python: Some(match self.python.contains('/') {
                true => absolute(Path::new(&self.python)).display().to_string(),
                false => self.python.clone(),
            }),
            call_timeout_ms: self.call_timeout_ms,
            workers: self.workers.clone(),
            shared: self.shared.clone(),
            expose: self.expose.clone(),
            token: self.token.clone(),
            tls_ca: self.tls_ca.as_deref().map(absolute),
            tls_name: self.tls_name.clone(),
            limits: self.limits,
            log: LogSettings {
                file: self.log.file.as_deref().map(absolute),
                ..self.log.clone()
            },
        }
    }
}

/// Why a stub stops on Ctrl-C or a terminate signal.
const ASKED_TO_STOP: &str = "asked to stop (Ctrl-C or a terminate signal)";

/// Joins the network and serves until quit, a server shutdown, or `shutdown` completes (the
/// binary completes it on Ctrl-C or a terminate signal, which the reason names).
///
/// # Returns
/// Why the session ended.
///
/// # Errors
/// The server could not be joined or was lost.
pub async fn run(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<String> {
    smol::pin!(shutdown);
    // Heeded while joining too, which can take a while (a slow server, a port to wait for).
    let started = async { start(&mut config).await.map(Some) }
        .or(async {
            (&mut shutdown).await;
            Ok(None)
        })
        .await?;
    let Some(Started {
        store,
        params,
        link,
        apps,
    }) = started
    else {
        return Ok(ASKED_TO_STOP.into());
    };

    let names = Names::default();
    let (describing, to_describe) = smol::channel::unbounded();
    let mut stub = Stub::new(config.clone(), store, names.clone(), describing);
    // Parsed and started now (installed modules once described); uploaded as soon as the stub
    // hears it is connected.
    stub.register_listed();
    let (stub, ended) = Shared::new(stub);
    let tasks = (
        smol::spawn(upstream::keep_connected(link, params, stub.clone())),
        smol::spawn(local::accept_loop(
            apps,
            stub.clone(),
            config.limits.max_frame_bytes,
        )),
        smol::spawn({
            let stub = stub.clone();
            async move { stub.every(Duration::from_millis(100), || Event::Tick).await }
        }),
        smol::spawn(owned::describe_queued(to_describe, stub.clone())),
        config
            .live_console
            .then(|| smol::spawn(console(config.clone(), names, stub.clone()))),
    );
    let stop = async {
        (&mut shutdown).await;
        stub.apply(Event::Stop(ASKED_TO_STOP.into()));
        std::future::pending().await
    };
    let result = async { ended.recv().await.unwrap_or(Ok("stopped".into())) }
        .or(stop)
        .await;
    drop(tasks);
    result
}

/// What joining leaves for serving.
struct Started {
    store: Store,
    params: upstream::Params,
    link: upstream::Link,
    apps: smol::net::TcpListener,
}

/// Opens the receiving directory, joins the network and takes the app port.
async fn start(config: &mut Config) -> Result<Started> {
    let dir = &config.receiving_dir;
    let mut made_here = MadeHere::before(dir);
    let mut store = Store::open(
        &config.receiving_dir,
        "the receiving directory (-d, profile key receiving_dir)",
    )?;
    let params = upstream::Params {
        // An IPv6 literal bracketed, as a socket address prints one (`[::1]:8766`).
        server: match config.address.contains(':') && !config.address.starts_with('[') {
            true => format!("[{}]:{}", config.address, config.port),
            false => format!("{}:{}", config.address, config.port),
        },
        token: config.token.clone(),
        session: upstream::session(&mut store),
        max_frame: config.limits.max_frame_bytes,
        tls: match (&config.tls_ca, &config.tls_name) {
            (Some(ca), name) => Some(Connector::load(
                ca,
                name.as_deref().unwrap_or(&config.address),
            )?),
            // Meant for TLS, surely: joining in the clear would ignore it without a word.
            (None, Some(name)) => {
                return Err(Error::Config(format!(
                    "--tls-name {name} (profile key tls_name) is for TLS, which is off: give \
                     --tls-ca (profile key tls_ca) too"
                )))
            }
            (None, None) => None,
        },
    };
    let cannot_listen = |e: std::io::Error| {
        Error::Config(format!(
            "cannot listen for apps on 127.0.0.1:{}: {e}",
            config.app_port
        ))
    };
    let early = app_port::bind_before_joining(&config.receiving_dir, config.app_port)
        .await
        .map_err(cannot_listen)?;
    let link = upstream::join(&params, &config.name, config.name_policy).await?;
    if link.name != config.name {
        say!(
            "joined as '{}' (the name '{}' was taken)",
            link.name,
            config.name
        );
    }
    config.name = link.name.clone();
    say!("joined {} as {}", params.server, config.name);

    let apps = match early {
        Some(apps) => apps,
        None => app_port::take_once_free(config.app_port)
            .await
            .map_err(cannot_listen)?,
    };
    let bound = apps.local_addr()?;
    app_port::note_held(&mut store, bound.port());
    say!("apps on {bound}");
    // The port taken, not 0 ("any"): what `sc:` saves is what apps need to find this stub.
    config.app_port = bound.port();
    made_here.keep();
    Ok(Started {
        store,
        params,
        link,
        apps,
    })
}

/// Runs the shell, applying its lines to the stub.
async fn console(config: Config, names: Names, stub: Arc<Shared>) {
    let lines = Console {
        prompt: format!("{}> ", config.name),
        commands: repl::COMMANDS.to_vec(),
        module_commands: repl::MODULE_COMMANDS.to_vec(),
        names,
        history: Some(config.receiving_dir.join(".shell_history")),
        on_end: "_end_",
    }
    .spawn();
    while let Ok(line) = lines.recv().await {
        if !stub.apply(Event::Line(line)) {
            break;
        }
    }
}
