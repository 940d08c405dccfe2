//! The server stub: accepts client stubs, keeps the peer table and the module registry, syncs
//! descriptors and routes calls. `main.rs` resolves flags and profile into a [`Config`] and calls
//! [`run`]; tests call [`run`] in-process or start the binary.
//!
//! Layout: `peer.rs` (one connection: reader + writer), `broker.rs` (the actor owning all state),
//! `registry.rs` and `routes.rs` (its I/O-free tables), `shell.rs` (console commands).

pub mod broker;
pub mod peer;
pub mod registry;
pub mod routes;
pub mod shell;

use std::path::PathBuf;
use std::time::Duration;

use common::say;
use common::store::Store;
use common::tls::Acceptor;
use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::net::TcpListener;

use broker::{Broker, Event};
use shell::Line;

pub use common::config::Limits;

/// The server's resolved settings.
#[derive(Clone)]
pub struct Config {
    /// Where uploaded descriptors are kept.
    pub dir: PathBuf,
    pub limits: Limits,
    /// The token every stub must present in its hello; `None`: anyone may join.
    pub token: Option<String>,
    /// TLS for every connection; `None`: plain TCP.
    pub tls: Option<Acceptor>,
}

/// Serves until `shutdown` completes, the console says `_end_`, or the console's input ends.
///
/// # Returns
/// Why the session ended.
pub async fn run(
    listener: TcpListener,
    config: Config,
    console: Option<Receiver<String>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> common::Result<String> {
    let store = Store::open(&config.dir)?;
    // Bounded: a peer that floods the broker waits for it, instead of growing its queue.
    let (events, inbox) = smol::channel::bounded::<Event>(4096);
    let broker = smol::spawn(Broker::new(store, config.limits, config.token.clone()).run(inbox));
    // Connection tasks hold `alive`; when the last one ends, `all_closed` completes.
    let (alive, all_closed) = smol::channel::bounded::<()>(1);

    let ticker = {
        let events = events.clone();
        smol::spawn(async move {
            loop {
                smol::Timer::after(Duration::from_millis(250)).await;
                if events.send(Event::Tick).await.is_err() {
                    break;
                }
            }
        })
    };
    let shell = console.map(|lines| smol::spawn(shell_loop(lines, events.clone())));

    let accepting = smol::spawn(accept_loop(
        listener,
        events.clone(),
        alive.clone(),
        config.limits,
        config.tls.clone(),
    ));
    let stopped = async {
        shutdown.await;
        let _ = events.send(Event::Console(shell::Command::End)).await;
        std::future::pending::<String>().await
    };
    // The broker ends on `_end_`, from the console or from `shutdown`.
    let reason = broker.or(stopped).await;
    drop((accepting, ticker, shell, alive));
    // Give every writer a moment to deliver the shutdown notice.
    let _ = all_closed
        .recv()
        .or(async {
            smol::Timer::after(Duration::from_secs(2)).await;
            Ok(())
        })
        .await;
    Ok(reason)
}

/// Accepts connections forever, one task each; `alive` is held by every connection task.
async fn accept_loop(
    listener: TcpListener,
    events: smol::channel::Sender<Event>,
    alive: smol::channel::Sender<()>,
    limits: Limits,
    tls: Option<Acceptor>,
) {
    let mut next_id = 0;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next_id += 1;
                let (events, alive, tls) = (events.clone(), alive.clone(), tls.clone());
                smol::spawn(async move {
                    peer::serve(next_id, stream, tls, events, limits).await;
                    drop(alive);
                })
                .detach();
            }
            Err(e) => {
                say!("accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads console lines and turns them into broker events.
async fn shell_loop(lines: Receiver<String>, events: smol::channel::Sender<Event>) {
    while let Ok(line) = lines.recv().await {
        match shell::parse(&line) {
            Ok(Line::Empty) => {}
            Ok(Line::Help) => say!("{}", shell::HELP.trim_end()),
            Ok(Line::Run(cmd)) => {
                if events.send(Event::Console(cmd)).await.is_err() {
                    break;
                }
            }
            Err(e) => say!("error: {e}"),
        }
    }
}
