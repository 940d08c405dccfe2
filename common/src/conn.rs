//! Connections: newline-delimited JSON framing over any async byte stream, with a hard size
//! cap; accepting connections ([`accept_each`]); noticing a silent peer ([`Silence`]).
//!
//! Frames are read here, and made here ([`put_line`]): written by [`send_frame`] (a
//! connection's first words, before it joins) or through the connection's
//! [`Outbox`](crate::outbox::Outbox) once it has.

use std::pin::Pin;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};
use smol::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use crate::error::{Error, Result};

/// Default cap on one frame, newline excluded.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// Reads one message per line. Cancel-safe: a read dropped mid-frame loses nothing, the next
/// read goes on where it stopped.
pub struct FrameReader<R> {
    reader: BufReader<R>,
    /// The frame being read (kept only up to `max`).
    line: Vec<u8>,
    /// Bytes of the frame being read so far, kept or not.
    size: usize,
    /// `line` holds a frame already returned: the next read starts a new one.
    done: bool,
    max: usize,
    /// The start of the last frame refused (see [`FrameReader::refused_head`]).
    refused: Vec<u8>,
    /// Told of every read that brings bytes (see [`FrameReader::report_to`]).
    silence: Option<Silence>,
    /// Steps taken since the reader last let other tasks run (see [`TURN`]).
    steps: usize,
}

/// Steps (a frame, a blank line, or a buffer's worth of a long frame) a reader takes before it
/// lets the other tasks of its thread run. A peer that keeps its socket full, a `ping` loop say,
/// would otherwise never let its task wait: the thread serving every other connection, timer
/// and heartbeat would serve that peer alone for as long as it kept sending.
const TURN: usize = 64;

/// How much of a refused frame is kept: enough for its command and id.
const REFUSED_HEAD: usize = 256;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that refuses frames longer than `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        FrameReader {
            // Small to start: a server holds one per stub. Longer frames grow `line`.
            reader: BufReader::with_capacity(8 * 1024, inner),
            line: Vec::with_capacity(1024),
            size: 0,
            done: false,
            max,
            refused: Vec::new(),
            silence: None,
            steps: 0,
        }
    }

    /// Refuses frames longer than `max` bytes from now on.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Every read that brings bytes counts as heard by `silence`, so that a peer sending one
    /// long frame over a slow link is not taken for gone before its last byte.
    pub fn report_to(&mut self, silence: &Silence) {
        self.silence = Some(silence.clone());
    }

    /// The start of the last frame [`FrameReader::read`] refused (malformed or over the limit),
    /// from which [`crate::proto::salvage`] may tell which request to answer.
    pub fn refused_head(&self) -> &[u8] {
        &self.refused
    }

    /// Reads the next message.
    ///
    /// # Returns
    /// `Ok(None)` on a clean end of stream between frames. A last frame without its newline is
    /// read if it parses (`printf '{...}' | nc`), else the stream ended inside a frame.
    ///
    /// # Errors
    /// [`Error::Json`] (malformed or unknown message) and [`Error::FrameTooLarge`] leave the
    /// reader at the start of the next frame, so the caller may answer and go on. Any other error
    /// (i/o, end of stream inside a frame) ends the connection; [`Error::Protocol`], the end of
    /// the stream inside a frame, keeps that frame's head too.
    pub async fn read<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.next_frame().await? {
            Frame::End => Ok(None),
            Frame::Buffered(len) => {
                // Parsed where it was read, then consumed: nothing awaits in between.
                let frame = &self.reader.buffer()[..len];
                let msg = parse(frame, &mut self.refused);
                self.reader.consume(len + 1);
                Ok(Some(msg?))
            }
            Frame::Assembled => Ok(Some(parse(&self.line, &mut self.refused)?)),
            // Cut short, its head is kept all the same: a request whose id shows there can
            // still be answered (see [`FrameReader::refused_head`]).
            Frame::Unterminated => match parse(&self.line, &mut self.refused) {
                Ok(msg) => Ok(Some(msg)),
                Err(_) => Err(Error::Protocol(format!(
                    "connection closed inside a frame ({} bytes without their newline)",
                    self.line.len()
                ))),
            },
        }
    }

    /// Whether a whole frame is already buffered: the next read will not wait. A task that
    /// queues frames while it reads flushes them when this turns false (see
    /// [`crate::outbox::flush_queued`]).
    pub fn has_frame(&self) -> bool {
        memchr::memchr(b'\n', self.reader.buffer()).is_some()
    }

    /// Finds the next frame (skipping blank lines).
    async fn next_frame(&mut self) -> Result<Frame> {
        if self.done {
            self.line.clear();
            (self.size, self.done) = (0, false);
        }
        loop {
            self.steps += 1;
            if self.steps > TURN {
                self.steps = 0;
                smol::future::yield_now().await;
            }
            // Not `fill_buf()`: its future polls the stream again after a ready read and panics
            // if a stream that has just said "end" then says "pending" (found by fuzzing).
            let filled = std::future::poll_fn(|cx| {
                Pin::new(&mut self.reader).poll_fill_buf(cx).map_ok(drop)
            })
            .await;
            match filled {
                // A TLS peer that closes without `close_notify` (a stub quitting ends its link
                // so) ends between frames like a plain one; a frame it cuts short still fails.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && self.size == 0 => {
                    return Ok(Frame::End);
                }
                filled => filled?,
            }
            let buf = self.reader.buffer();
            if let (Some(silence), false) = (&self.silence, buf.is_empty()) {
                silence.heard();
            }
            if buf.is_empty() {
                // A last frame without its newline counts if it is whole (`read` tells).
                return match self.size {
                    0 => Ok(Frame::End),
                    size if size <= self.max => {
                        self.done = true;
                        Ok(match blank(&self.line) {
                            true => Frame::End,
                            false => Frame::Unterminated,
                        })
                    }
                    _ => {
                        keep_head(&mut self.refused, &self.line);
                        Err(Error::Protocol("connection closed inside a frame".into()))
                    }
                };
            }
            let newline = memchr::memchr(b'\n', buf);
            // The common case: a whole frame in the buffer, none of it read before.
            if let (Some(len), 0) = (newline, self.size) {
                if len <= self.max && !blank(&buf[..len]) {
                    return Ok(Frame::Buffered(len));
                }
                if len > self.max {
                    keep_head(&mut self.refused, buf);
                    self.reader.consume(len + 1);
                    let limit = self.max;
                    return Err(Error::FrameTooLarge { size: len, limit });
                }
                self.reader.consume(len + 1);
                continue;
            }
            let (piece, used) = match newline {
                Some(i) => (&buf[..i], i + 1),
                None => (buf, buf.len()),
            };
            self.size += piece.len();
            // Past the cap, keep reading to the newline but keep nothing more than its head.
            if self.size <= self.max {
                self.line.extend_from_slice(piece);
            } else if self.line.len() < REFUSED_HEAD {
                let more = piece.len().min(REFUSED_HEAD - self.line.len());
                self.line.extend_from_slice(&piece[..more]);
            }
            self.reader.consume(used);
            if newline.is_some() {
                let size = self.size;
                self.done = true;
                if size > self.max {
                    keep_head(&mut self.refused, &self.line);
                    return Err(Error::FrameTooLarge {
                        size,
                        limit: self.max,
                    });
                }
                if blank(&self.line) {
                    self.line.clear();
                    (self.size, self.done) = (0, false);
                    continue;
                }
                return Ok(Frame::Assembled);
            }
        }
    }
}

/// Where [`FrameReader::next_frame`] found a frame.
enum Frame {
    /// The stream ended cleanly between frames.
    End,
    /// Whole in the read buffer: this many bytes, then its newline.
    Buffered(usize),
    /// Pieced together from several reads in `line`.
    Assembled,
    /// In `line`, cut by the end of the stream before its newline.
    Unterminated,
}

/// Reads one frame (a line without its newline) as a `T`, as [`FrameReader::read`] does: a frame
/// with its `data` before its `cmd` is read too (see [`crate::proto::cmd_first`]).
pub fn read_frame<T: DeserializeOwned>(frame: &[u8]) -> serde_json::Result<T> {
    parse(frame, &mut Vec::new())
}

/// [`read_frame`], keeping the head of a refused frame in `refused`: turned round when it was,
/// so that [`crate::proto::salvage`] finds its request there.
fn parse<T: DeserializeOwned>(frame: &[u8], refused: &mut Vec<u8>) -> serde_json::Result<T> {
    let first = serde_json::from_slice(frame);
    if first.is_ok() {
        return first;
    }
    let turned;
    let (frame, msg) = match crate::proto::cmd_first(frame) {
        Ok(Some(frame)) => {
            turned = frame;
            (turned.as_slice(), serde_json::from_slice(&turned))
        }
        Ok(None) => (frame, first),
        // The envelope itself is wrong (a key repeated, say): its error says so.
        Err(envelope) => (frame, Err(envelope)),
    };
    if msg.is_err() {
        keep_head(refused, frame);
    }
    msg
}

fn keep_head(into: &mut Vec<u8>, frame: &[u8]) {
    into.clear();
    into.extend_from_slice(&frame[..frame.len().min(REFUSED_HEAD)]);
}

/// Blank lines carry nothing; they are skipped.
fn blank(line: &[u8]) -> bool {
    line.iter().all(u8::is_ascii_whitespace)
}

/// Appends `msg` as one line of JSON to `out`; on an error `out` is left as it was.
pub fn put_line<T: Serialize>(out: &mut Vec<u8>, msg: &T) -> serde_json::Result<()> {
    let start = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, msg) {
        out.truncate(start);
        return Err(e);
    }
    out.push(b'\n');
    Ok(())
}

/// Writes `msg` as one frame: a connection's first words, before it has an
/// [`Outbox`](crate::outbox::Outbox).
pub async fn send_frame<W: AsyncWrite + Unpin, T: Serialize>(
    writer: &mut W,
    msg: &T,
) -> Result<()> {
    let mut line = Vec::new();
    put_line(&mut line, msg)?;
    writer.write_all(&line).await?;
    writer.flush().await?;
    Ok(())
}

/// Accepts connections until dropped, handing each to `serve` with its number (from 1). A
/// failed accept (out of file descriptors, say) is reported as `what` and retried after a pause.
pub async fn accept_each(
    listener: &smol::net::TcpListener,
    what: &str,
    mut serve: impl FnMut(u64, smol::net::TcpStream),
) {
    let mut next = 0;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next += 1;
                serve(next, stream);
            }
            Err(e) => {
                crate::say!("{what} failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Notices a silent peer without a timer or a clock read per read: its
/// [`FrameReader`] calls [`Silence::heard`] whenever bytes arrive (one atomic store);
/// [`Silence::expired`], polled alongside the reads, wakes a few times per limit to look.
#[derive(Debug, Clone)]
pub struct Silence {
    heard: Arc<AtomicBool>,
    limit: Duration,
}

impl Silence {
    /// A peer is silent after `limit` with nothing heard.
    pub fn new(limit: Duration) -> Self {
        Silence {
            heard: Arc::default(),
            limit,
        }
    }

    /// Something was heard.
    pub fn heard(&self) {
        self.heard.store(true, Ordering::Relaxed);
    }

    /// Completes once nothing has been heard for the limit (noticed up to half the limit
    /// later). Keep one such future for the connection's life (pinned) and race it against
    /// each read.
    pub async fn expired(&self) {
        let mut last_heard = Instant::now();
        loop {
            smol::Timer::after(self.limit / 4).await;
            if self.heard.swap(false, Ordering::Relaxed) {
                last_heard = Instant::now();
            } else if last_heard.elapsed() >= self.limit {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ToApp, ToClient, ToServer, ToStub};
    use smol::future::FutureExt;

    fn reader(bytes: &'static [u8], max: usize) -> FrameReader<&'static [u8]> {
        FrameReader::new(bytes, max)
    }

    /// A peer whose frames (or blank lines) are always there to read does not keep the
    /// reader's thread from its other tasks: the reader lets them run every [`TURN`] steps.
    #[test]
    fn a_reader_that_never_waits_still_lets_other_tasks_run() {
        for filler in ["{\"cmd\":\"ping\"}\n", "\n"] {
            let bytes: &'static [u8] = filler.repeat(10 * TURN).leak().as_bytes();
            let other_ran = std::cell::Cell::new(false);
            let read_all = async {
                let mut r = reader(bytes, 100);
                let mut seen_after = None;
                let mut frames = 0;
                while let Some(ToServer::Ping) = r.read::<ToServer>().await.unwrap() {
                    frames += 1;
                    if other_ran.get() && seen_after.is_none() {
                        seen_after = Some(frames);
                    }
                }
                seen_after.or(other_ran.get().then_some(frames))
            };
            let other = async { other_ran.set(true) };
            let (seen_after, ()) = smol::block_on(smol::future::zip(read_all, other));
            let seen_after = seen_after.expect("the other task ran");
            assert!(
                seen_after <= TURN + 1,
                "{filler:?}: after {seen_after} frames"
            );
        }
    }

    #[test]
    fn reads_frames_then_clean_end() {
        smol::block_on(async {
            let mut r = reader(b"{\"cmd\":\"who\"}\n\n{\"cmd\":\"who\"}\n", 100);
            assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
            assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
            assert!(r.read::<ToServer>().await.unwrap().is_none());
        });
    }

    #[test]
    fn malformed_and_oversized_frames_are_skipped() {
        smol::block_on(async {
            let mut r = reader(
                b"garbage\n{\"cmd\":\"who\",\"x\":\"0123456789\"}\n{\"cmd\":\"who\"}\n",
                20,
            );
            assert!(matches!(r.read::<ToServer>().await, Err(Error::Json(_))));
            match r.read::<ToServer>().await {
                Err(Error::FrameTooLarge { size, limit: 20 }) => assert_eq!(size, 30),
                other => panic!("{other:?}"),
            }
            assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
        });
    }

    /// Gives at most `chunk` bytes per read, so that frames arrive in pieces.
    struct Trickle {
        bytes: &'static [u8],
        chunk: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = self.chunk.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            std::task::Poll::Ready(Ok(n))
        }
    }

    #[test]
    fn frames_read_whole_or_in_pieces_read_the_same() {
        let bytes =
            b"garbage\n\n  \n{\"cmd\":\"who\"}\n{\"cmd\":\"call\",\"data\":{\"id\":5,\"x\":1}}\n\
                      {\"cmd\":\"who\"}\n";
        for chunk in [1, 2, 3, 7, 13, 64, 8192] {
            smol::block_on(async {
                let mut r = FrameReader::new(Trickle { bytes, chunk }, 20);
                assert!(matches!(r.read::<ToServer>().await, Err(Error::Json(_))));
                assert_eq!(r.refused_head(), b"garbage");
                assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
                match r.read::<ToServer>().await {
                    Err(Error::FrameTooLarge { size, limit: 20 }) => assert_eq!(size, 36),
                    other => panic!("chunks of {chunk}: {other:?}"),
                }
                let refused = crate::proto::salvage(r.refused_head());
                assert_eq!(refused, Some(("call", 5)), "chunks of {chunk}");
                assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
                assert!(r.read::<ToServer>().await.unwrap().is_none());
            });
        }
    }

    #[test]
    fn a_frame_with_data_before_cmd_is_read_as_one_with_cmd_first() {
        use crate::proto::{salvage, Call, Json};
        // A call as an app may write it, `data` first; then one also wrong in itself.
        let bytes = b"{\"data\":{\"id\":1,\"module\":\"m\",\"function\":\"f\",\"args\":[1],\
                      \"timeout_ms\":100},\"cmd\":\"call\"}\n\
                      {\"data\":{\"id\":2,\"module\":\"m\",\"function\":\"f\",\"args\":[1],\
                      \"timeout_ms\":\"soon\"},\"cmd\":\"call\"}\n";
        let call = ToStub::Call(Call {
            id: 1,
            module: "m".into(),
            function: "f".into(),
            args: vec![Json::parse("1".into()).unwrap()],
            kwargs: Default::default(),
            timeout_ms: 100,
            caller: None,
        });
        for chunk in [7, 8192] {
            smol::block_on(async {
                let mut r = FrameReader::new(Trickle { bytes, chunk }, 1000);
                assert_eq!(r.read::<ToStub>().await.unwrap(), Some(call.clone()));
                // Refused naming what is wrong, and answered by its id as any call would be.
                match r.read::<ToStub>().await {
                    Err(Error::Json(e)) => assert!(e.to_string().contains("soon"), "{e}"),
                    other => panic!("chunks of {chunk}: {other:?}"),
                }
                assert_eq!(salvage(r.refused_head()), Some(("call", 2)));
                assert!(r.read::<ToStub>().await.unwrap().is_none());
            });
        }
    }

    #[test]
    fn a_frame_with_data_before_cmd_and_a_key_repeated_is_refused_naming_the_key() {
        let data = r#"{"id":1,"module":"m","function":"f","args":[1],"timeout_ms":9}"#;
        for (frame, key) in [
            (
                format!(r#"{{"data":{data},"cmd":"call","cmd":"call"}}"#),
                "cmd",
            ),
            (
                format!(r#"{{"data":{data},"cmd":"call","data":{data}}}"#),
                "data",
            ),
        ] {
            let e = read_frame::<ToStub>(frame.as_bytes()).unwrap_err();
            assert!(
                e.to_string().contains(&format!("duplicate field `{key}`")),
                "{frame}: {e}"
            );
        }
    }

    #[test]
    fn a_cmd_not_a_string_is_refused_saying_what_it_must_be() {
        let must = r#"expected `cmd` to be a string naming the message, like "call""#;
        // serde_json alone says "expected value" of each, in either order.
        for (cmd, got) in [
            ("3", "integer `3`"),
            ("null", "null"),
            (r#"["who"]"#, "sequence"),
        ] {
            for frame in [
                format!(r#"{{"cmd":{cmd},"data":{{"id":1}}}}"#),
                format!(r#"{{"data":{{"id":1}},"cmd":{cmd}}}"#),
            ] {
                let e = read_frame::<ToServer>(frame.as_bytes()).unwrap_err();
                let said = format!("invalid type: {got}, {must}");
                assert!(e.to_string().contains(&said), "{frame}: {e}");
            }
        }
    }

    #[test]
    fn every_message_carrying_json_reads_with_data_before_cmd() {
        fn same<T: DeserializeOwned + PartialEq + std::fmt::Debug>(data: &str, cmd: &str) {
            let turned = format!(r#"{{"data":{data},"cmd":"{cmd}"}}"#);
            let written = format!(r#"{{"cmd":"{cmd}","data":{data}}}"#);
            let want: T = serde_json::from_str(&written).unwrap();
            assert_eq!(
                read_frame::<T>(turned.as_bytes()).unwrap(),
                want,
                "{turned}"
            );
        }
        let call = r#"{"id":1,"module":"m","function":"f","args":[[1, 2]],"kwargs":{"k":{}},"timeout_ms":9}"#;
        let reply = r#"{"id":1,"result":{"Ok":{"a": [1]}}}"#;
        same::<ToStub>(call, "call");
        same::<ToStub>(reply, "answer");
        same::<ToServer>(call, "call");
        same::<ToServer>(reply, "reply");
        same::<ToClient>(call, "call");
        same::<ToClient>(reply, "reply");
        same::<ToApp>(call, "call");
        same::<ToApp>(reply, "reply");
    }

    #[test]
    fn a_read_dropped_mid_frame_loses_nothing() {
        smol::block_on(async {
            let (mut tx, rx) = smol::net::unix::UnixStream::pair().unwrap();
            let mut r = FrameReader::new(rx, 100);
            tx.write_all(b"{\"cmd\":").await.unwrap();
            // Reads the first half, then waits for more: dropped there, as a timeout would.
            assert!(smol::future::poll_once(r.read::<ToServer>())
                .await
                .is_none());
            tx.write_all(b"\"who\"}\n").await.unwrap();
            assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
        });
    }

    #[test]
    fn silence_expires_only_once_nothing_is_heard_for_the_limit() {
        smol::block_on(async {
            let limit = Duration::from_millis(100);
            let silence = Silence::new(limit);
            let expired = silence.expired();
            smol::pin!(expired);
            // Heard every 20 ms for 400 ms: never silent.
            let mut last_heard = Instant::now();
            let talking = async {
                for _ in 0..20 {
                    silence.heard();
                    last_heard = Instant::now();
                    smol::Timer::after(Duration::from_millis(20)).await;
                }
            };
            let cut = async {
                (&mut expired).await;
                panic!("silent while the peer was talking");
            };
            talking.or(cut).await;
            expired.await;
            // From the last word, not from the end of the talk: a busy machine may wake this
            // thread well after the last timer, when the limit has nearly passed already.
            assert!(last_heard.elapsed() >= limit, "{:?}", last_heard.elapsed());
        });
    }

    #[test]
    fn end_inside_a_frame_is_an_error() {
        smol::block_on(async {
            let mut r = reader(b"{\"cmd\":", 100);
            assert!(matches!(
                r.read::<ToServer>().await,
                Err(Error::Protocol(_))
            ));
        });
    }

    #[test]
    fn a_whole_last_frame_without_its_newline_is_read() {
        smol::block_on(async {
            let mut r = reader(b"{\"cmd\":\"who\"}\n{\"cmd\":\"who\"}", 100);
            assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
            assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
            assert!(r.read::<ToServer>().await.unwrap().is_none());
            let mut r = reader(b"{\"cmd\":\"who\"}\n  ", 100);
            assert_eq!(r.read::<ToServer>().await.unwrap(), Some(ToServer::Who));
            assert!(r.read::<ToServer>().await.unwrap().is_none());
        });
    }

    #[test]
    fn lines_are_json_and_a_newline() {
        smol::block_on(async {
            let mut w = Vec::new();
            put_line(&mut w, &ToServer::Who).unwrap();
            send_frame(&mut w, &ToServer::Who).await.unwrap();
            assert_eq!(w.as_slice(), b"{\"cmd\":\"who\"}\n{\"cmd\":\"who\"}\n");
        });
    }
}
