//! The loopback listener for apps: one task per app connection reads its requests and applies
//! them to the stub; answers go out through the connection's outbox (and its writer task, for
//! what the socket does not take at once).

use std::sync::Arc;

use common::conn::{accept_each, FrameReader};
use common::error::RemoteError;
use common::outbox::Outbox;
use common::proto::{salvage, Reply, ToApp, ToStub};
use common::readiness;
use common::Error;
use smol::net::{Shutdown, TcpListener, TcpStream};

use crate::stub::{Event, Shared};

/// Accepts app connections until the task is dropped.
pub async fn accept_loop(listener: TcpListener, stub: Arc<Shared>, max_frame: usize) {
    accept_each(&listener, "app accept", |conn, stream| {
        smol::spawn(serve(conn, stream, stub.clone(), max_frame)).detach();
    })
    .await
}

/// Serves one app connection until it closes.
async fn serve(conn: u64, stream: TcpStream, stub: Arc<Shared>, max_frame: usize) {
    let _ = stream.set_nodelay(true);
    let outbox = Outbox::tcp(&stream);
    if !stub.apply(Event::AppJoined {
        conn,
        outbox: outbox.clone(),
    }) {
        return;
    }
    let writer = outbox.spawn_writer(stream.clone());
    let mut reader = FrameReader::new(readiness::tcp(&stream), max_frame);
    let mut unflushed = 0;
    // Whether the app ended its requests cleanly (it may still read the answers: a half-close).
    let sent_all = loop {
        match reader.read::<ToStub>().await {
            Ok(Some(msg)) => {
                let event = Event::App { conn, msg };
                if !stub.apply_read(event, reader.has_frame(), &mut unflushed) {
                    break false;
                }
            }
            Ok(None) => break true,
            // A frame that cannot be read is answered by its id, if its head shows one (or
            // the app is told why), and the connection goes on. One the app cut short by
            // ending its stream, as one that half-closes may, is answered so too, after the
            // calls it made before; then the connection closes.
            Err(e @ (Error::Json(_) | Error::FrameTooLarge { .. } | Error::Protocol(_))) => {
                if !answer_refused(&e, reader.refused_head(), conn, &stub, &outbox) {
                    break false;
                }
                if matches!(e, Error::Protocol(_)) {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    // After a clean end the stub closes the outbox once the app's calls are answered.
    if !(sent_all && stub.apply(Event::AppDone { conn })) {
        outbox.close();
    }
    writer.await;
    stub.apply(Event::AppLeft { conn });
    let _ = stream.shutdown(Shutdown::Both);
}

/// Answers a frame that could not be read (`e`), whose start was `head`; `false` if the stub
/// has stopped.
fn answer_refused(e: &Error, head: &[u8], conn: u64, stub: &Shared, outbox: &Arc<Outbox>) -> bool {
    match salvage(head) {
        // A providing app's answer: the call it answers fails with the reason.
        Some(("answer", id)) => {
            let why = "the providing app's answer cannot be read: ";
            let result = Err(RemoteError::refused_frame(e, why));
            let msg = ToStub::Answer(Reply { id, result });
            return stub.apply(Event::App { conn, msg });
        }
        Some((_, id)) => {
            let result = Err(RemoteError::refused_frame(e, ""));
            outbox.send(&ToApp::Reply(Reply { id, result }));
        }
        None => {
            outbox.send(&ToApp::Error {
                message: e.to_string(),
            });
        }
    }
    true
}
