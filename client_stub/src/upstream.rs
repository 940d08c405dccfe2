//! The link to the server: join under a name, then keep the link up. A lost server (closed
//! connection, silence past the heartbeat) is reported to the stub, and the link is re-made
//! with backoff under the same name and session, so the stub reclaims its name from its ghost.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use common::conn::{send_frame, FrameReader, Silence};
use common::error::RemoteError;
use common::log::printable;
use common::outbox::Outbox;
use common::proto::{
    salvage, Hello, Reply, ToClient, ToServer, MAX_STUB_NAME_BYTES, PROTOCOL_VERSION,
};
use common::tls::{plain, Connector, Reader, Speaks, Writer};
use common::{say, Error, Result};
use smol::future::FutureExt;
use smol::net::{Shutdown, TcpStream};

use crate::stub::{Event, Shared};

/// What to do when the server says the name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamePolicy {
    /// Exit with the server's reason.
    Fail,
    /// Try `NAME-2`, `NAME-3`, ... and say which name was taken.
    Suffix,
    /// Ask for another name at the terminal.
    Ask,
}

/// Where and how to join.
#[derive(Clone)]
pub struct Params {
    /// `host:port` of the server.
    pub server: String,
    pub token: Option<String>,
    /// This stub's lifetime id (see [`Hello::session`]).
    pub session: String,
    pub max_frame: usize,
    /// TLS to the server; `None`: plain TCP.
    pub tls: Option<Connector>,
}

/// A joined connection to the server.
pub struct Link {
    /// The name the server accepted.
    pub name: String,
    /// How often to send a heartbeat, as the server asked.
    pub heartbeat: Duration,
    pub reader: FrameReader<Reader>,
    pub writer: Writer,
    /// The TCP connection under the link, to close it.
    pub stream: TcpStream,
    /// The link is encrypted (see [`Outbox::for_link`]).
    pub tls: bool,
    /// The modules that left the network, as the welcome said (see [`ToClient::Welcome`]).
    pub left: Vec<String>,
}

/// Connects and joins as `name`, following `policy` if the name is taken.
///
/// # Errors
/// The server cannot be reached, refused the stub, or speaks something else.
pub async fn join(params: &Params, name: &str, policy: NamePolicy) -> Result<Link> {
    let mut candidate = name.to_owned();
    for attempt in 2.. {
        let reason = match answered_in_time(params, hello(params, &candidate)).await? {
            Ok(link) => return Ok(link),
            Err(reason) => reason,
        };
        let retry = |next: &str| {
            say!(
                "the name '{candidate}' is taken ({}); {next}",
                printable(&reason)
            )
        };
        candidate = match policy {
            NamePolicy::Suffix if attempt <= 100 => {
                retry("trying another");
                suffixed(name, attempt)
            }
            NamePolicy::Ask if std::io::stdin().is_terminal() => {
                retry("please choose another");
                smol::unblock(|| crate::needed::NAME.ask()).await?
            }
            _ => {
                return Err(Error::Config(format!(
                    "the server refused the name '{candidate}': {reason} \
                     (choose another with -n/--name or profile key name, \
                     or allow a suffix with --name-suffix / name_suffix = true)"
                )))
            }
        };
    }
    unreachable!("the loop returns")
}

/// How long the server may take to answer a hello (as long as it gives a stub to say one),
/// from the connection's start: a port that takes connections and says nothing (another
/// program's, a server that hangs) would hold a joining stub forever.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// `attempt`, unless the server has not answered it within [`HELLO_TIMEOUT`].
async fn answered_in_time<T>(
    params: &Params,
    attempt: impl Future<Output = Result<T>>,
) -> Result<T> {
    attempt
        .or(async {
            smol::Timer::after(HELLO_TIMEOUT).await;
            Err(Error::Config(format!(
                "the server at {} did not answer within {HELLO_TIMEOUT:?}",
                params.server
            )))
        })
        .await
}

/// `NAME-N`, NAME shortened (at a character's start) if the whole would be longer than a
/// stub's name may be.
fn suffixed(name: &str, n: u32) -> String {
    let suffix = format!("-{n}");
    let base = name.floor_char_boundary(MAX_STUB_NAME_BYTES - suffix.len());
    format!("{}{suffix}", &name[..base])
}

/// One attempt: `Ok(Err(reason))` when the name is taken.
async fn hello(params: &Params, name: &str) -> Result<Result<Link, String>> {
    let server = &params.server;
    let stream = TcpStream::connect(server)
        .await
        .map_err(|e| Error::Config(format!("cannot reach the server at {server}: {e}")))?;
    stream.set_nodelay(true)?;
    let (r, mut writer) = match &params.tls {
        Some(tls) => tls
            .connect(stream.clone())
            .await
            .map_err(|(e, speaks)| match speaks {
                Speaks::Frames => Error::Config(format!(
                    "the server at {server} does not speak TLS \
                     (remove tls_ca, or start the server with a certificate)"
                )),
                _ => Error::Config(format!("TLS with the server at {server} failed: {e}")),
            })?,
        None => plain(&stream),
    };
    let mut reader = FrameReader::new(r, params.max_frame);
    let hello = ToServer::Hello(Hello {
        version: PROTOCOL_VERSION,
        name: name.to_owned(),
        token: params.token.clone(),
        session: Some(params.session.clone()),
    });
    send_frame(&mut writer, &hello).await?;
    // A TLS server answers a hello in the clear with an alert, which no frame reader can read.
    if params.tls.is_none() && Speaks::peek(&stream).await? == Speaks::Tls {
        return Err(Error::Config(format!(
            "the server at {server} speaks TLS: give --tls-ca (profile key tls_ca) to connect"
        )));
    }
    let not_a_server = |what: String| {
        Error::Config(format!(
            "the server at {server} did not answer as a stubnet server: {what}"
        ))
    };
    let answer = reader.read::<ToClient>().await.map_err(|e| match e {
        Error::Json(_) | Error::FrameTooLarge { .. } => not_a_server(e.to_string()),
        e => e,
    })?;
    match answer {
        Some(ToClient::Welcome {
            name,
            heartbeat_ms,
            left,
            ..
        }) => Ok(Ok(Link {
            name,
            heartbeat: Duration::from_millis(heartbeat_ms.max(10)),
            reader,
            writer,
            stream,
            tls: params.tls.is_some(),
            left,
        })),
        Some(ToClient::Refused {
            reason,
            name_taken: true,
        }) => Ok(Err(reason)),
        Some(ToClient::Refused { reason, .. }) => Err(Error::Config(format!(
            "the server at {server} refused this stub: {reason}"
        ))),
        Some(other) => Err(not_a_server(format!("expected a welcome, got {other:?}"))),
        None => Err(Error::Protocol(format!(
            "the server at {server} closed the connection"
        ))),
    }
}

/// Keeps the stub connected for as long as its session runs: hands each new link's outbox to
/// the stub, sends heartbeats, applies the server's frames, and after a loss rejoins with
/// backoff.
pub async fn keep_connected(mut link: Link, params: Params, stub: Arc<Shared>) {
    loop {
        let up = Outbox::for_link(&link.stream, link.tls);
        let connected = Event::Connected {
            up: up.clone(),
            name: link.name.clone(),
            left: std::mem::take(&mut link.left),
        };
        if !stub.apply(connected) {
            return;
        }
        let writer = up.spawn_writer(link.writer);
        let heartbeat = smol::spawn(beat(up.clone(), link.heartbeat));
        let Some(why) = read_server(&mut link.reader, &stub, &up, link.heartbeat * 3).await else {
            return;
        };
        // Frames queued from now on are refused, until the stub hears the link is gone.
        up.close();
        drop((heartbeat, writer));
        let _ = link.stream.shutdown(Shutdown::Both);
        if !stub.apply(Event::Disconnected(why)) {
            return;
        }
        link = rejoin(&params, &link.name).await;
    }
}

/// Applies server frames until the connection ends; `None` when the stub's session has ended.
async fn read_server(
    reader: &mut FrameReader<Reader>,
    stub: &Shared,
    up: &Arc<Outbox>,
    limit: Duration,
) -> Option<String> {
    let silence = Silence::new(limit);
    reader.report_to(&silence);
    let silent = silence.expired();
    smol::pin!(silent);
    let mut unflushed = 0;
    loop {
        let read = async { reader.read::<ToClient>().await }.or(async {
            (&mut silent).await;
            let why = format!("nothing heard from the server for {limit:?}");
            Err(Error::Protocol(why))
        });
        let read = read.await;
        match read {
            Ok(Some(msg)) => {
                let event = Event::Server(msg);
                if !stub.apply_read(event, reader.has_frame(), &mut unflushed) {
                    return None;
                }
            }
            Ok(None) => return Some("the server closed the connection".into()),
            Err(e @ (Error::Json(_) | Error::FrameTooLarge { .. })) => {
                say!(
                    "error: bad frame from the server: {}",
                    printable(&e.to_string())
                );
                // A call to run or an answer to a call made: it fails now, with the reason.
                match salvage(reader.refused_head()) {
                    Some(("call", id)) => {
                        let why = "the owner cannot read the call: ";
                        let result = Err(RemoteError::refused_frame(&e, why));
                        up.send(&ToServer::Reply(Reply { id, result }));
                    }
                    Some(("reply", id)) => {
                        let why = "the answer cannot be read: ";
                        let result = Err(RemoteError::refused_frame(&e, why));
                        let event = Event::Server(ToClient::Reply(Reply { id, result }));
                        if !stub.apply(event) {
                            return None;
                        }
                    }
                    _ => {}
                }
            }
            Err(e) => return Some(e.to_string()),
        }
    }
}

/// Sends a heartbeat every interval, so a busy stub never looks dead.
async fn beat(up: Arc<Outbox>, every: Duration) {
    loop {
        smol::Timer::after(every).await;
        if !up.send(&ToServer::Ping) {
            return;
        }
    }
}

/// The longest wait between two tries to rejoin.
const MAX_REJOIN_DELAY: Duration = Duration::from_secs(5);

/// Joins again under `name`, retrying with backoff (0.1 s doubling to
/// [`MAX_REJOIN_DELAY`]) until it works.
async fn rejoin(params: &Params, name: &str) -> Link {
    let mut delay = Duration::from_millis(100);
    loop {
        smol::Timer::after(delay).await;
        match join(params, name, NamePolicy::Fail).await {
            Ok(link) => {
                say!("reconnected to {} as {}", params.server, link.name);
                return link;
            }
            Err(e) => {
                delay = (delay * 2).min(MAX_REJOIN_DELAY);
                let why = e.to_string();
                say!("reconnecting: {}; next try in {delay:?}", printable(&why));
            }
        }
    }
}

/// This stub's session id: kept in `dir/.session`, so a stub restarted on the same receiving
/// directory reclaims its name from the ghost of its previous run, too.
pub fn session(store: &mut common::store::Store) -> String {
    let path = store.dir().join(".session");
    let id = match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_owned(),
        _ => new_session_id(),
    };
    if let Err(e) = store.keep_note(".session", id.as_bytes()) {
        say!("cannot keep the session id in {}: {e}", path.display());
    }
    id
}

fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u128(now.unwrap_or_default().as_nanos());
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffixed_name_stays_within_a_names_length() {
        assert_eq!(suffixed("alpha", 2), "alpha-2");
        let long = "x".repeat(MAX_STUB_NAME_BYTES);
        assert_eq!(suffixed(&long, 100), format!("{}-100", &long[..60]));
        // Shortened at a character's start: 21 three-byte characters and "-2" make 65 bytes.
        let wide = "日".repeat(21);
        assert_eq!(suffixed(&wide, 2), format!("{}-2", "日".repeat(20)));
    }
}
