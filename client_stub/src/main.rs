//! `client_stub`: flags and profile resolved into one config, then [`client_stub::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use client_stub::needed::{ADDRESS, NAME};
use client_stub::{Config, NamePolicy};
use common::config::{resolve_in, ClientProfile, LogSettings, Profile};
use common::log::{printable, printable_lines};
use common::Error;

/// Every call allocates a few small buffers in each process; mimalloc's per-thread free lists
/// make that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A stubnet client stub: joins the network, owns the modules it registers, serves local apps.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// The server's address [profile: address; asked at a terminal if neither sets it]
    #[arg(short, long)]
    address: Option<String>,
    /// The server's port [profile: port; default 5050]
    #[arg(short, long)]
    port: Option<u16>,
    /// Loopback port for apps, 0 for any free port [profile: app_port; default 8765]
    #[arg(short = 'q', long)]
    app_port: Option<u16>,
    /// This stub's name on the network [profile: name; asked at a terminal if neither sets it]
    #[arg(short, long)]
    name: Option<String>,
    /// Run the interactive shell [profile: live_console]
    #[arg(short, long)]
    live_console: bool,
    /// Profile: a TOML file path, or NAME for conf/NAME.toml
    #[arg(short = 'c', long = "config", value_name = "PROFILE")]
    config: Option<String>,
    /// Where received descriptors are kept [profile: receiving_dir; default ./stubnet-NAME,
    /// with a / in NAME as %2F, a % as %25]
    #[arg(short = 'd', long, value_name = "DIR")]
    receiving_dir: Option<PathBuf>,
    /// Register this module file at start (repeatable) [profile: register]
    #[arg(long, value_name = "FILE")]
    register: Vec<PathBuf>,
    /// Share the installed Python module NAME, e.g. math (repeatable) [profile: expose]
    #[arg(long, value_name = "NAME", value_parser = common::config::module_name)]
    expose: Vec<String>,
    /// Declare MODULE shareable: others may provide it too (repeatable) [profile: shared]
    #[arg(long, value_name = "MODULE", value_parser = common::config::module_name)]
    shared: Vec<String>,
    /// If the name is taken, join as NAME-2, NAME-3, ... [profile: name_suffix]
    #[arg(long)]
    name_suffix: bool,
    /// Python interpreter for owned modules [profile: python; default python3]
    #[arg(long, value_name = "PATH", value_parser = common::config::not_empty)]
    python: Option<String>,
    /// The network token, if the server requires one [profile: token; env STUBNET_TOKEN]
    #[arg(long, env = "STUBNET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// TLS: trust these certificates (PEM) and speak TLS to the server [profile: tls_ca]
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// TLS: the name on the server's certificate [profile: tls_name; default: the address]
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,
}

fn main() -> ExitCode {
    common::log::keep_panics();
    let code = match resolve(Flags::parse()).and_then(serve) {
        Ok(reason) => {
            // Often the server's text. Said like every line, so that the log file keeps it too.
            common::say!("stopped: {}", printable(&reason));
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Below the lines said before it, at a terminal.
            common::log::flush();
            // A refusal quotes the server; a bad profile's error spans lines (kept, indented).
            eprintln!("error: {}", printable_lines(&e.to_string()));
            ExitCode::FAILURE
        }
    };
    // Its last lines are still on their way to stdout.
    common::log::flush();
    code
}

/// `./stubnet-NAME`, one directory whatever the name: a `/` in it is written `%2F` (and a `%`
/// `%25`), so that `-n ../x` or `-n team/alice` does not put it elsewhere.
fn default_receiving_dir(name: &str) -> PathBuf {
    format!("stubnet-{}", name.replace('%', "%25").replace('/', "%2F")).into()
}

/// Merges flags over the profile over the defaults.
fn resolve(flags: Flags) -> common::Result<Config> {
    let (profile, values) = Profile::<ClientProfile>::open(flags.config.as_deref(), |v| &v.log)?;
    let resolve = |p: PathBuf| resolve_in(&profile, p);
    let terminal = std::io::stdin().is_terminal();
    let name = NAME.given_or_asked(flags.name.or(values.name), terminal)?;
    let address = ADDRESS.given_or_asked(flags.address.or(values.address), terminal)?;
    let receiving_dir = flags
        .receiving_dir
        .or(values.receiving_dir.map(resolve))
        .unwrap_or_else(|| default_receiving_dir(&name));
    let mut config = Config::new(
        &name,
        &address,
        flags.port.or(values.port).unwrap_or(5050),
        &receiving_dir,
    );
    config.app_port = flags.app_port.or(values.app_port).unwrap_or(8765);
    config.live_console = flags.live_console || values.live_console.unwrap_or(false);
    // The profile's `register` and `expose` lists are the stub's to read: it watches them.
    config.register = flags.register;
    config.name_policy = if flags.name_suffix || values.name_suffix.unwrap_or(false) {
        NamePolicy::Suffix
    } else if terminal {
        NamePolicy::Ask
    } else {
        NamePolicy::Fail
    };
    if let Some(p) = flags
        .python
        .or(values.python.map(|p| interpreter_in(&profile, p)))
    {
        config.python = p;
    }
    config.workers = values.workers;
    config.shared = values.shared.into_iter().chain(flags.shared).collect();
    config.expose = flags.expose;
    config.limits = values.limits;
    config.call_timeout_ms = values.call_timeout_ms;
    config.profile = profile.as_ref().map(|p| p.path.clone());
    config.log = LogSettings {
        file: values.log.file.clone().map(resolve),
        ..values.log
    };
    config.token = common::config::token(flags.token, values.token)?;
    config.tls_ca = flags.tls_ca.or(values.tls_ca.map(resolve));
    config.tls_name = flags.tls_name.or(values.tls_name);
    Ok(config)
}

/// The profile's `python`: a path (`venv/bin/python`) is relative to the profile, as its other
/// paths are; a bare name (`python3`) is left for the PATH to find.
fn interpreter_in(profile: &Option<Profile<ClientProfile>>, python: String) -> String {
    match python.contains('/') {
        true => resolve_in(profile, python.into())
            .to_string_lossy()
            .into_owned(),
        false => python,
    }
}

fn serve(config: Config) -> common::Result<String> {
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| Error::Config(format!("cannot catch Ctrl-C: {e}")))?;
    // Every task runs on smol's executor thread, which also polls the sockets: no message
    // between the stub's tasks crosses a thread.
    let stopped = smol::block_on(smol::spawn(client_stub::run(config, async move {
        let _ = stop_rx.recv().await;
    })));
    client_stub::worker::end_all();
    stopped
}
