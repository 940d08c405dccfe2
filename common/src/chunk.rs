//! Descriptor files in pieces: [`split`] cuts a file into [`Chunk`]s; [`Reassembler`] puts them
//! back together and accepts the file only when every piece arrived in order and the md5 matches.
//! No I/O here.

use std::collections::{HashMap, HashSet};

use base64::{engine::general_purpose::STANDARD, Engine};

use crate::error::{Error, Result};
use crate::proto::Chunk;
use crate::store::md5_hex;

/// Raw bytes per chunk (before base64): a chunk's frame (2732 bytes of base64 and an envelope
/// of about 300 at most) fits the smallest frame limit a profile may set
/// ([`crate::config::MIN_FRAME_BYTES`]), so that every descriptor passes between stubs and a
/// server whatever limits each has.
pub const CHUNK_BYTES: usize = 2 * 1024;

/// Cuts `bytes` (the descriptor file of `module`) into chunks.
pub fn split(module: &str, bytes: &[u8]) -> Vec<Chunk> {
    let md5 = md5_hex(bytes);
    let total = bytes.len().div_ceil(CHUNK_BYTES).max(1);
    let mut pieces: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(seq, piece)| Chunk {
            module: module.to_owned(),
            md5: md5.clone(),
            size: bytes.len() as u64,
            seq: seq as u32,
            total: total as u32,
            data: STANDARD.encode(piece),
            shared: false,
        })
        .collect()
}

/// Whether `chunk` is its file's last.
fn is_last(chunk: &Chunk) -> bool {
    chunk.total.saturating_sub(chunk.seq) <= 1
}

/// Files one peer may be sending at once.
pub const MAX_PARTIAL: usize = 64;

/// Files being received, per module.
#[derive(Debug)]
pub struct Reassembler {
    partial: HashMap<String, Partial>,
    /// Modules whose file was refused before its last chunk: the rest of it is dropped without
    /// a word, so that its sender hears of a file once, however many chunks it came in.
    refused: HashSet<String>,
    max_size: u64,
}

#[derive(Debug)]
struct Partial {
    md5: String,
    size: u64,
    total: u32,
    next: u32,
    bytes: Vec<u8>,
}

impl Reassembler {
    /// A reassembler that refuses files over `max_size` bytes.
    pub fn new(max_size: u64) -> Self {
        Reassembler {
            partial: HashMap::new(),
            refused: HashSet::new(),
            max_size,
        }
    }

    /// Takes one chunk.
    ///
    /// # Returns
    /// `Ok(Some(bytes))` when this chunk completed a file whose md5 matched; `Ok(None)` when more
    /// pieces are due, or when the chunk is of a file already refused.
    ///
    /// # Errors
    /// A chunk out of order, inconsistent with the earlier ones, undecodable, over the size
    /// limit, or completing a file with the wrong md5. The rest of the file is [`refuse`]d.
    ///
    /// [`refuse`]: Reassembler::refuse
    pub fn push(&mut self, chunk: Chunk) -> Result<Option<Vec<u8>>> {
        if chunk.seq > 0 && self.refused.contains(&chunk.module) {
            if is_last(&chunk) {
                self.refused.remove(&chunk.module);
            }
            return Ok(None);
        }
        self.refused.remove(&chunk.module);
        self.accept(&chunk).inspect_err(|_| self.refuse(&chunk))
    }

    /// Drops the file `chunk` is part of, and the chunks of it still to come (its sender is
    /// told once, by the caller).
    pub fn refuse(&mut self, chunk: &Chunk) {
        self.partial.remove(&chunk.module);
        if !is_last(chunk) && self.refused.len() < MAX_PARTIAL {
            self.refused.insert(chunk.module.clone());
        }
    }

    /// Forgets a module's partial file (its sender left or withdrew it).
    pub fn forget(&mut self, module: &str) {
        self.partial.remove(module);
        self.refused.remove(module);
    }

    fn accept(&mut self, chunk: &Chunk) -> Result<Option<Vec<u8>>> {
        let bad = |why: String| Error::Protocol(format!("chunk for '{}': {why}", chunk.module));
        if chunk.size > self.max_size {
            return Err(Error::Protocol(format!(
                "module '{}' is {} bytes, over the limit of {} bytes",
                chunk.module, chunk.size, self.max_size
            )));
        }
        if chunk.total == 0 || chunk.seq >= chunk.total {
            return Err(bad(format!("seq {} of {}", chunk.seq, chunk.total)));
        }
        if chunk.seq == 0 {
            if !self.partial.contains_key(&chunk.module) && self.partial.len() >= MAX_PARTIAL {
                return Err(bad(format!(
                    "{MAX_PARTIAL} uploads are already in progress from this peer"
                )));
            }
            // What the announced size claims is only reserved as the bytes arrive.
            let capacity = chunk.size.min(CHUNK_BYTES as u64) as usize;
            self.partial.insert(
                chunk.module.clone(),
                Partial {
                    md5: chunk.md5.clone(),
                    size: chunk.size,
                    total: chunk.total,
                    next: 0,
                    bytes: Vec::with_capacity(capacity),
                },
            );
        }
        let Some(part) = self.partial.get_mut(&chunk.module) else {
            return Err(bad(format!("seq {} arrived before seq 0", chunk.seq)));
        };
        if chunk.seq != part.next {
            return Err(bad(format!(
                "expected seq {}, got {}",
                part.next, chunk.seq
            )));
        }
        if chunk.md5 != part.md5 || chunk.size != part.size || chunk.total != part.total {
            return Err(bad("md5, size or total changed mid-file".into()));
        }
        STANDARD
            .decode_vec(chunk.data.as_bytes(), &mut part.bytes)
            .map_err(|e| bad(format!("bad base64: {e}")))?;
        if part.bytes.len() as u64 > part.size {
            return Err(bad(format!("more bytes than the announced {}", part.size)));
        }
        part.next += 1;
        if part.next < part.total {
            return Ok(None);
        }
        let part = self.partial.remove(&chunk.module).expect("present above");
        if part.bytes.len() as u64 != part.size || md5_hex(&part.bytes) != part.md5 {
            return Err(Error::DigestMismatch {
                module: chunk.module.clone(),
            });
        }
        Ok(Some(part.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn round_trip_many_pieces_and_empty() {
        for n in [0, 1, CHUNK_BYTES, CHUNK_BYTES * 3 + 7] {
            let bytes = file(n);
            let chunks = split("z", &bytes);
            assert_eq!(chunks.len(), n.div_ceil(CHUNK_BYTES).max(1));
            let mut r = Reassembler::new(1 << 30);
            let mut out = None;
            for c in chunks {
                assert!(out.is_none());
                out = r.push(c).unwrap();
            }
            assert_eq!(out.unwrap(), bytes);
        }
    }

    #[test]
    fn a_chunks_frame_fits_the_smallest_frame_limit() {
        let widest = "m".repeat(128);
        let mut chunk = split(&widest, &file(CHUNK_BYTES * 2)).remove(0);
        (chunk.size, chunk.seq, chunk.total) = (u64::MAX, u32::MAX, u32::MAX);
        chunk.shared = true;
        let up = serde_json::to_vec(&crate::proto::ToServer::Chunk(chunk.clone())).unwrap();
        let down = serde_json::to_vec(&crate::proto::ToClient::Chunk(chunk)).unwrap();
        for frame in [up, down] {
            assert!(
                frame.len() < crate::config::MIN_FRAME_BYTES,
                "{}",
                frame.len()
            );
        }
    }

    #[test]
    fn out_of_order_and_missing_pieces_are_refused() {
        let chunks = split("z", &file(CHUNK_BYTES * 2 + 1));
        let mut r = Reassembler::new(1 << 30);
        assert!(r.push(chunks[1].clone()).is_err());
        r.push(chunks[0].clone()).unwrap();
        assert!(r.push(chunks[2].clone()).is_err());
        // The partial file was dropped: seq 1 now has no start.
        assert!(r.push(chunks[1].clone()).is_err());
    }

    #[test]
    fn a_refused_file_is_refused_once_however_many_chunks_it_came_in() {
        let mut r = Reassembler::new(CHUNK_BYTES as u64);
        let answers: Vec<_> = (split("z", &file(CHUNK_BYTES * 3)).into_iter())
            .map(|c| r.push(c))
            .collect();
        assert!(answers[0].is_err());
        assert!(answers[1..].iter().all(|a| matches!(a, Ok(None))));
        // Refused by the caller at its first chunk: the same.
        let two = split("y", &file(CHUNK_BYTES * 2));
        r.refuse(&two[0]);
        assert_eq!(r.push(two[1].clone()).unwrap(), None);
        // The next file of a module is taken afresh.
        for (module, bytes) in [("z", b"hello".to_vec()), ("y", file(CHUNK_BYTES))] {
            let got = r.push(split(module, &bytes).remove(0)).unwrap();
            assert_eq!(got, Some(bytes));
        }
    }

    #[test]
    fn wrong_md5_is_refused() {
        let mut chunks = split("z", b"hello");
        chunks[0].md5 = md5_hex(b"other");
        let mut r = Reassembler::new(1 << 30);
        assert!(matches!(
            r.push(chunks[0].clone()),
            Err(Error::DigestMismatch { .. })
        ));
    }

    #[test]
    fn a_peer_cannot_open_endless_uploads() {
        let mut r = Reassembler::new(1 << 30);
        let big = file(CHUNK_BYTES * 2);
        for i in 0..MAX_PARTIAL {
            let first = split(&format!("m{i}"), &big).remove(0);
            assert_eq!(r.push(first).unwrap(), None);
        }
        let one_more = split("extra", &big).remove(0);
        assert!(r
            .push(one_more)
            .unwrap_err()
            .to_string()
            .contains("already in progress"));
        r.forget("m0");
        assert_eq!(r.push(split("extra", &big).remove(0)).unwrap(), None);
    }

    #[test]
    fn oversized_claims_are_refused_before_allocating() {
        let mut chunks = split("z", b"hello");
        chunks[0].size = u64::MAX;
        let mut r = Reassembler::new(1024);
        assert!(r.push(chunks[0].clone()).is_err());
    }
}
