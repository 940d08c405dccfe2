//! One connection: a reader loop that turns frames into broker events, and a writer loop that
//! drains the peer's queue onto the socket.

use std::time::Duration;

use common::conn::{drain, FrameReader, FrameWriter, Silence};
use common::proto::{ToClient, ToServer};
use common::say;
use common::tls::{plain, Acceptor, Writer};
use common::Error;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::net::{Shutdown, TcpStream};

use crate::broker::{Event, Link};
use crate::registry::PeerId;
use crate::Limits;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection until it closes; with `tls`, only after a TLS handshake.
pub async fn serve(
    id: PeerId,
    stream: TcpStream,
    tls: Option<Acceptor>,
    broker: Sender<Event>,
    limits: Limits,
) {
    let address = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let opened = async {
        let (r, w) = match &tls {
            Some(acceptor) => acceptor.accept(stream.clone()).await?,
            None => plain(&stream),
        };
        let mut reader = FrameReader::new(r, limits.max_frame_bytes);
        let hello = reader.read::<ToServer>().await;
        Ok((reader, FrameWriter::new(w), hello))
    };
    let opened = opened
        .or(async {
            smol::Timer::after(HELLO_TIMEOUT).await;
            Err(Error::Protocol("no hello in time".into()))
        })
        .await;
    let (mut reader, mut writer, hello) = match opened {
        Ok(parts) => parts,
        Err(e) => {
            say!("refused {address}: {e}");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    let hello = match hello {
        Ok(Some(ToServer::Hello(hello))) => hello,
        other => {
            let reason = match other {
                Ok(None) => return,
                Ok(Some(_)) => "the first frame must be hello".to_owned(),
                Err(e) => e.to_string(),
            };
            say!("refused {address}: {reason}");
            let refused = ToClient::Refused {
                reason,
                name_taken: false,
            };
            let _ = writer.send(&refused).await;
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };

    // Unbounded, with the bound checked by the broker on each send: a bounded channel would
    // allocate every slot up front, megabytes per peer at the default limit.
    let (tx, rx) = smol::channel::unbounded();
    let link = Link {
        address,
        tx,
        stream: stream.clone(),
    };
    let join = Event::Join { id, hello, link };
    if broker.send(join).await.is_err() {
        return;
    }
    let writing = smol::spawn(write_loop(rx, writer, stream.clone()));

    // A peer that vanished without closing (pulled cable, suspended laptop) falls silent.
    let limit = Duration::from_millis(limits.heartbeat_ms.saturating_mul(3));
    let silence = Silence::new(limit);
    let silent = silence.expired();
    smol::pin!(silent);
    loop {
        let read = async { reader.read::<ToServer>().await }.or(async {
            (&mut silent).await;
            Err(Error::Protocol(format!("nothing heard for {limit:?}")))
        });
        let read = read.await;
        silence.heard();
        let event = match read {
            Ok(Some(msg)) => Event::Frame { id, msg },
            Ok(None) => break,
            Err(e @ (Error::Json(_) | Error::FrameTooLarge { .. })) => Event::Malformed {
                id,
                message: e.to_string(),
            },
            Err(e) => {
                let _ = broker
                    .send(Event::Lost {
                        id,
                        why: e.to_string(),
                    })
                    .await;
                break;
            }
        };
        if broker.send(event).await.is_err() {
            break;
        }
    }
    let _ = broker.send(Event::Leave { id }).await;
    // The broker drops this peer's queue on Leave, which ends the writer once it has flushed;
    // a peer that does not read would keep it waiting forever, so it gets a moment, no more.
    // Dropping the writer then closes the last handle on the socket.
    let flushed = writing;
    let waited = async {
        smol::Timer::after(Duration::from_secs(2)).await;
    };
    flushed.or(waited).await;
}

/// Writes queued frames until the queue closes or a frame that ends the session (`Refused`,
/// `Shutdown`) is written; then closes the socket so the reader ends too.
async fn write_loop(rx: Receiver<ToClient>, writer: FrameWriter<Writer>, stream: TcpStream) {
    drain(rx, writer, |m| {
        matches!(m, ToClient::Refused { .. } | ToClient::Shutdown { .. })
    })
    .await;
    let _ = stream.shutdown(Shutdown::Both);
}
