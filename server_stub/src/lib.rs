//! The server stub: accepts client stubs, keeps the peer table and the module registry, syncs
//! descriptors and routes calls. `main.rs` resolves flags and profile into a [`Config`] and calls
//! [`run`]; tests call [`run`] in-process or start the binary.
//!
//! Layout: `peer.rs` (one connection: reader + writer), `broker.rs` (all state, behind one lock),
//! `registry.rs` and `routes.rs` (its I/O-free tables), `shell.rs` (console commands).

pub mod broker;
pub mod peer;
pub mod registry;
pub mod routes;
pub mod shell;

use std::sync::Arc;
use std::time::Duration;

use common::conn::accept_each;
use common::say;
use common::store::Store;
use common::tls::Acceptor;
use smol::channel::Receiver;
use smol::future::FutureExt;
use smol::net::TcpListener;

use broker::{Broker, Event, Shared};
use shell::Line;

pub use common::config::Limits;

/// The server's resolved settings.
#[derive(Clone)]
pub struct Config {
    /// Where uploaded descriptors are kept: opened before the server listens, so that one that
    /// cannot be used is told before stubs are invited.
    pub store: Store,
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
    let (broker, ended) = Shared::new(Broker::new(
        config.store.clone(),
        config.limits,
        config.token.clone(),
    ));
    // Connection tasks hold `alive`; when the last one ends, `all_closed` completes.
    let (alive, all_closed) = smol::channel::bounded::<()>(1);

    let ticker = {
        let broker = broker.clone();
        // Ticks send the heartbeats too: no further apart than they must be.
        let every = Duration::from_millis(config.limits.heartbeat_ms.min(250));
        smol::spawn(async move { broker.every(every, || Event::Tick).await })
    };
    let shell = console.map(|lines| smol::spawn(shell_loop(lines, broker.clone())));

    let accepting = smol::spawn(accept_loop(
        listener,
        broker.clone(),
        alive.clone(),
        config.limits,
        config.tls.clone(),
    ));
    let stopped = async {
        shutdown.await;
        broker.apply(Event::Stop(
            "the server was asked to stop (Ctrl-C or a terminate signal)".into(),
        ));
        std::future::pending::<String>().await
    };
    // The session ends on `_end_` from the console, or when `shutdown` completes.
    let reason = async { ended.recv().await.unwrap_or_default() }
        .or(stopped)
        .await;
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
    broker: Arc<Shared>,
    alive: smol::channel::Sender<()>,
    limits: Limits,
    tls: Option<Acceptor>,
) {
    accept_each(&listener, "accept", |id, stream| {
        let (broker, alive, tls) = (broker.clone(), alive.clone(), tls.clone());
        smol::spawn(async move {
            peer::serve(id, stream, tls, broker, limits).await;
            drop(alive);
        })
        .detach();
    })
    .await
}

/// Reads console lines and turns them into broker events.
async fn shell_loop(lines: Receiver<String>, broker: Arc<Shared>) {
    while let Ok(line) = lines.recv().await {
        match shell::parse(&line) {
            Ok(Line::Empty) => {}
            Ok(Line::Help) => say!("{}", shell::HELP.trim_end()),
            Ok(Line::Run(cmd)) => {
                if !broker.apply(Event::Console(cmd)) {
                    break;
                }
            }
            Err(e) => say!("error: {e}"),
        }
    }
}
