//! One connection: a reader loop that turns frames into broker events and applies them, and a
//! writer task for what the socket does not take at once (see [`Outbox`]).

use std::sync::Arc;
use std::time::Duration;

use common::conn::{send_frame, FrameReader, Silence};
use common::log::printable;
use common::outbox::Outbox;
use common::proto::{salvage, ToClient, ToServer, MAX_HELLO_BYTES};
use common::say;
use common::tls::{plain, Acceptor, Speaks, Writer};
use common::Error;
use smol::future::FutureExt;
use smol::net::{Shutdown, TcpStream};

use crate::broker::{Event, Link, Shared};
use crate::registry::PeerId;
use crate::Limits;

/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one connection until it closes; with `tls`, only after a TLS handshake.
pub async fn serve(
    id: PeerId,
    stream: TcpStream,
    tls: Option<Acceptor>,
    broker: Arc<Shared>,
    limits: Limits,
) {
    let address = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let opened = async {
        // The first bytes tell a stub that disagrees with this server about TLS from a broken one.
        let speaks = Speaks::peek(&stream).await?;
        let (r, w) = match (&tls, speaks) {
            // A stub in the clear fails the handshake, and the alert tells it this is TLS.
            (Some(acceptor), speaks) => {
                acceptor
                    .accept(stream.clone())
                    .await
                    .map_err(|e| match speaks {
                        Speaks::Frames => Error::Config(
                            "it speaks in the clear, but this server speaks TLS \
                             (a stub without tls_ca?)"
                                .into(),
                        ),
                        _ => e,
                    })?
            }
            (None, Speaks::Tls) => {
                // Answered with a frame, which the stub's handshake tells from TLS.
                let refused = ToClient::Refused {
                    reason: "this server does not speak TLS".into(),
                    name_taken: false,
                };
                let _ = send_frame(&mut stream.clone(), &refused).await;
                return Err(Error::Config(
                    "it starts a TLS handshake, but this server does not speak TLS \
                     (a stub with tls_ca? the server needs tls_cert and tls_key)"
                        .into(),
                ));
            }
            (None, _) => plain(&stream),
        };
        let hello_limit = MAX_HELLO_BYTES.min(limits.link.max_frame_bytes);
        let mut reader = FrameReader::new(r, hello_limit);
        let hello = reader.read::<ToServer>().await;
        reader.set_max(limits.link.max_frame_bytes);
        Ok((reader, w, hello))
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
            say!("refused {address}: {}", printable(&e.to_string()));
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
            say!("refused {address}: {}", printable(&reason));
            let refused = ToClient::Refused {
                reason,
                name_taken: false,
            };
            let _ = send_frame(&mut writer, &refused).await;
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };

    let outbox = Outbox::for_link(&stream, tls.is_some());
    let writing = smol::spawn(write_loop(outbox.clone(), writer, stream.clone()));
    let link = Link {
        address,
        outbox,
        stream: stream.clone(),
    };
    if !broker.apply(Event::Join { id, hello, link }) {
        return;
    }

    // A peer that vanished without closing (pulled cable, suspended laptop) falls silent.
    let limit = Duration::from_millis(limits.heartbeat_ms.saturating_mul(3));
    let silence = Silence::new(limit);
    reader.report_to(&silence);
    let silent = silence.expired();
    smol::pin!(silent);
    let mut unflushed = 0;
    loop {
        let read = async { reader.read::<ToServer>().await }.or(async {
            (&mut silent).await;
            Err(Error::Protocol(format!("nothing heard for {limit:?}")))
        });
        let read = read.await;
        let event = match read {
            Ok(Some(msg)) => Event::Frame { id, msg },
            Ok(None) => break,
            Err(error @ (Error::Json(_) | Error::FrameTooLarge { .. })) => {
                let request = salvage(reader.refused_head());
                Event::Malformed {
                    id,
                    error,
                    request: request.map(|(cmd, n)| (cmd.to_owned(), n)),
                }
            }
            Err(e) => {
                broker.apply(Event::Lost {
                    id,
                    why: e.to_string(),
                });
                break;
            }
        };
        if !broker.apply_read(event, reader.has_frame(), &mut unflushed) {
            break;
        }
    }
    broker.apply(Event::Leave { id });
    // The broker closes this peer's outbox on Leave, which ends the writer once it has flushed;
    // a peer that does not read would keep it waiting forever, so it gets a moment, no more.
    // Dropping the writer then closes the last handle on the socket.
    let flushed = writing;
    let waited = async {
        smol::Timer::after(Duration::from_secs(2)).await;
    };
    flushed.or(waited).await;
}

/// Writes what the socket did not take at once until the outbox closes (the broker closes it
/// after a frame that ends the session, `Refused` or `Shutdown`, and when the peer leaves);
/// then closes the socket so the reader ends too.
async fn write_loop(outbox: Arc<Outbox>, writer: Writer, stream: TcpStream) {
    outbox.write_out(writer).await;
    let _ = stream.shutdown(Shutdown::Both);
}
