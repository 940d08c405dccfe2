//! `server_stub`: flags and profile resolved into one config, then [`server_stub::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::config::{resolve_in, Profile, ServerProfile};
use common::console::Console;
use common::log::printable_lines;
use common::say;
use common::store::{MadeHere, Store};
use common::tls::Acceptor;
use server_stub::{shell, Config};

/// Every call allocates a few small buffers in each process; mimalloc's per-thread free lists
/// make that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The stubnet server stub: the broker every client stub connects to.
#[derive(Parser, Debug)]
#[command(version)]
struct Flags {
    /// Address to listen on [profile: address; default 127.0.0.1]
    #[arg(short, long)]
    address: Option<String>,
    /// Port to listen on, 0 for any free port [profile: port; default 5050]
    #[arg(short, long)]
    port: Option<u16>,
    /// Run the interactive shell [profile: live_console]
    #[arg(short, long)]
    live_console: bool,
    /// Profile: a TOML file path, or NAME for conf/NAME.toml
    #[arg(short = 'c', long = "config", value_name = "PROFILE")]
    config: Option<String>,
    /// Where uploaded descriptors are kept [profile: dir; default ./stubnet-server]
    #[arg(short, long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The network token every stub must present [profile: token; env STUBNET_TOKEN]
    #[arg(long, env = "STUBNET_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Listen beyond loopback without a token [profile: insecure]
    #[arg(long)]
    insecure: bool,
    /// TLS: the server's certificate chain, PEM [profile: tls_cert]
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS: the server's private key, PEM [profile: tls_key]
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make a self-signed TLS certificate (cert.pem) and key (key.pem) for a small network
    GenCert {
        /// Where to write them
        #[arg(long, default_value = "tls")]
        dir: PathBuf,
        /// Replace cert.pem and key.pem if they exist (stubs trusting the old cert.pem must
        /// get the new one)
        #[arg(long)]
        force: bool,
        /// Names stubs will use to reach the server (host names or IP addresses)
        #[arg(default_values = ["localhost", "127.0.0.1"])]
        names: Vec<String>,
    },
}

fn main() -> ExitCode {
    common::log::keep_panics();
    let code = act();
    // Its last lines (`stopped: ...`) are still on their way to stdout.
    common::log::flush();
    code
}

/// Does what the flags say; its lines may still be on their way to stdout when it returns.
fn act() -> ExitCode {
    let flags = Flags::parse();
    if let Some(Cmd::GenCert { dir, names, force }) = &flags.command {
        return match common::tls::generate(names, dir, *force) {
            Ok((cert, key)) => {
                say!(
                    "wrote {} and {} for {}",
                    cert.display(),
                    key.display(),
                    names.join(", ")
                );
                say!(
                    "server: --tls-cert {} --tls-key {}",
                    cert.display(),
                    key.display()
                );
                say!(
                    "stubs:  --tls-ca {} (copy cert.pem to them; never key.pem)",
                    cert.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                common::log::flush();
                eprintln!("error: {}", printable_lines(&e.to_string()));
                ExitCode::FAILURE
            }
        };
    }
    match run(flags) {
        Ok(()) => ExitCode::SUCCESS,
        // A bad profile's error spans lines: kept, and indented under the first, as a client
        // stub prints it.
        Err(e) => {
            common::log::flush();
            eprintln!("error: {}", printable_lines(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn run(flags: Flags) -> common::Result<()> {
    let (profile, values) = Profile::<ServerProfile>::open(flags.config.as_deref(), |v| &v.log)?;
    let address = flags
        .address
        .or(values.address)
        .unwrap_or("127.0.0.1".into());
    let port = flags.port.or(values.port).unwrap_or(5050);
    // Paths from the profile are relative to the profile; paths from flags to here.
    let from_profile = |p: Option<PathBuf>| p.map(|p| resolve_in(&profile, p));
    let dir = flags
        .dir
        .or(from_profile(values.dir.clone()))
        .unwrap_or("stubnet-server".into());
    let tls = match (
        flags.tls_cert.or(from_profile(values.tls_cert.clone())),
        flags.tls_key.or(from_profile(values.tls_key.clone())),
    ) {
        (Some(cert), Some(key)) => Some(Acceptor::load(&cert, &key)?),
        (None, None) => None,
        _ => {
            return Err(common::Error::Config(
                "TLS needs both a certificate and a key (tls_cert and tls_key)".into(),
            ))
        }
    };
    let live = flags.live_console || values.live_console.unwrap_or(false);
    let token = common::config::token(flags.token, values.token)?;
    let insecure = flags.insecure || values.insecure.unwrap_or(false);

    // Removed again if the server does not get to listen.
    let mut made_here = MadeHere::before(&dir);
    let store = Store::open(&dir, "the server's directory (-d, profile key dir)")?;
    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .map_err(|e| common::Error::Config(format!("cannot catch Ctrl-C: {e}")))?;

    if token.is_none() && !insecure && beyond_loopback(&address, port) {
        return Err(common::Error::Config(format!(
            "refusing to listen on {address} without a network token: anyone who can reach it \
             could run code on every stub. Set --token (or STUBNET_TOKEN, or profile key token), \
             or pass --insecure to accept that"
        )));
    }
    // Every task runs on smol's executor thread, which also polls the sockets: no message
    // between the broker and the connections crosses a thread.
    smol::block_on(smol::spawn(async move {
        let listener = smol::net::TcpListener::bind((host_of(&address), port))
            .await
            .map_err(|e| {
                common::Error::Config(format!("cannot listen on {address}:{port}: {e}"))
            })?;
        made_here.keep();
        say!("listening on {}", listener.local_addr()?);
        if tls.is_some() {
            say!("every connection uses TLS");
        }
        let console = live.then(|| {
            Console {
                prompt: "server> ".into(),
                commands: shell::COMMANDS.to_vec(),
                module_commands: vec![],
                names: Default::default(),
                history: Some(store.dir().join(".shell_history")),
                on_end: "_end_",
            }
            .spawn()
        });
        let config = Config {
            store,
            limits: values.limits,
            token,
            tls,
        };
        let reason = server_stub::run(listener, config, console, async {
            let _ = stop_rx.recv().await;
        })
        .await?;
        say!("stopped: {reason}");
        Ok(())
    }))
}

/// The host to listen on: an IPv6 literal as stubs take it too, bracketed (`[::1]`), or bare.
fn host_of(address: &str) -> &str {
    (address.strip_prefix('[').and_then(|a| a.strip_suffix(']'))).unwrap_or(address)
}

/// Whether `address` means some machine other than this one.
fn beyond_loopback(address: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    match (host_of(address), port).to_socket_addrs() {
        Ok(mut addrs) => addrs.any(|a| !a.ip().is_loopback()),
        // Not refused for want of a token: listening on it fails, and says why.
        Err(_) => false,
    }
}
