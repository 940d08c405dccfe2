//! The loopback listener for apps: one reader and one writer task per app connection; requests
//! go to the stub's actor, answers come back on the connection's queue.

use common::conn::{drain, FrameReader, FrameWriter};
use common::proto::{ToApp, ToStub};
use common::readiness;
use common::say;
use common::Error;
use smol::channel::Sender;
use smol::net::{Shutdown, TcpListener, TcpStream};

use crate::stub::Event;

/// Accepts app connections until the task is dropped.
pub async fn accept_loop(listener: TcpListener, events: Sender<Event>, max_frame: usize) {
    let mut next = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next += 1;
                smol::spawn(serve(next, stream, events.clone(), max_frame)).detach();
            }
            Err(e) => {
                say!("app accept failed: {e}");
                smol::Timer::after(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves one app connection until it closes.
async fn serve(conn: u64, stream: TcpStream, events: Sender<Event>, max_frame: usize) {
    let _ = stream.set_nodelay(true);
    let (tx, rx) = smol::channel::unbounded::<ToApp>();
    if events
        .send(Event::AppJoined {
            conn,
            tx: tx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = smol::spawn(drain(rx, FrameWriter::new(stream.clone()), |_| false));
    let mut reader = FrameReader::new(readiness::tcp(&stream), max_frame);
    loop {
        match reader.read::<ToStub>().await {
            Ok(Some(msg)) => {
                if events.send(Event::App { conn, msg }).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(e @ (Error::Json(_) | Error::FrameTooLarge { .. })) => {
                let _ = tx.try_send(ToApp::Error {
                    message: e.to_string(),
                });
            }
            Err(_) => break,
        }
    }
    let _ = events.send(Event::AppLeft { conn }).await;
    drop(tx);
    writer.await;
    let _ = stream.shutdown(Shutdown::Both);
}
