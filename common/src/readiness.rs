//! Reading a socket or pipe without the read that is bound to fail.
//!
//! A plain async read tries the handle first and waits for readiness only when that fails. On a
//! link carrying one small frame at a time, the try after each frame always fails ("would
//! block"): one wasted syscall per message, at every hop. [`ReadWhenReady`] remembers that the
//! last read came back short (the kernel had nothing more) and goes straight to waiting. Nothing
//! can be missed: re-arming the handle's interest reports data that arrived in between.

use std::io::{self, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use smol::io::{AsyncRead, AsyncWrite};
use smol::Async;

/// A handle's read half that skips the read bound to fail; writes pass straight through.
pub struct ReadWhenReady<T> {
    io: Arc<Async<T>>,
    drained: bool,
}

impl<T> ReadWhenReady<T> {
    pub fn new(io: Arc<Async<T>>) -> Self {
        ReadWhenReady { io, drained: false }
    }
}

/// The read half of a TCP stream (which stays usable for writing).
pub fn tcp(stream: &smol::net::TcpStream) -> ReadWhenReady<std::net::TcpStream> {
    ReadWhenReady::new(stream.clone().into())
}

impl<T> AsyncRead for ReadWhenReady<T>
where
    for<'a> &'a T: Read,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.drained {
                ready!(this.io.poll_readable(cx))?;
                this.drained = false;
            }
            match this.io.get_ref().read(buf) {
                Ok(n) => {
                    this.drained = n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.drained = true,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<T> AsyncWrite for ReadWhenReady<T>
where
    for<'a> &'a T: Write,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.io).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::{TcpListener, TcpStream};

    #[test]
    fn reads_everything_sent_in_pieces_then_the_end() {
        smol::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let writer = smol::spawn(async move {
                let mut out = TcpStream::connect(addr).await.unwrap();
                for i in 0..50u8 {
                    out.write_all(&[i; 3]).await.unwrap();
                    smol::Timer::after(std::time::Duration::from_micros(200)).await;
                }
            });
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = tcp(&stream);
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            loop {
                match reader.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
            writer.await;
            let sent: Vec<u8> = (0..50u8).flat_map(|i| [i; 3]).collect();
            assert_eq!(got, sent);
        });
    }
}
