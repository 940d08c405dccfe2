//! Fuzzes chunk reassembly (`common::chunk::Reassembler`) with sequences of chunks, some cut
//! correctly from a file and some with fuzzed fields; the invariants are in `check_chunks`.

#![no_main]

use arbitrary::Arbitrary;
use base64::{engine::general_purpose::STANDARD, Engine};
use common::proto::Chunk;
use common::store::md5_hex;

#[path = "../../common/tests/fuzz_regressions/checks.rs"]
mod checks;

#[global_allocator]
static ALLOC: checks::Counting = checks::Counting;

/// Few module names, so pieces of different uploads interleave.
const MODULES: [&str; 3] = ["z", "y", "a_long_module_name"];

/// One step of the sequence.
#[derive(Arbitrary, Debug)]
enum Op {
    /// A whole file cut correctly into pieces of `piece` bytes (1 when 0), so the fuzzer reaches
    /// completed files without computing md5s.
    File {
        module: u8,
        bytes: Vec<u8>,
        piece: u8,
    },
    /// One chunk with fuzzed fields.
    Raw {
        module: u8,
        md5: Md5,
        size: u64,
        seq: u8,
        total: u8,
        data: Data,
        shared: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Md5 {
    /// The md5 of these bytes: right when they are the file that arrives.
    Of(Vec<u8>),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Data {
    Bytes(Vec<u8>),
    /// Anything, valid base64 or not.
    Text(String),
}

fn module(i: u8) -> String {
    MODULES[i as usize % MODULES.len()].to_owned()
}

fn chunks(ops: Vec<Op>) -> Vec<Chunk> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::File {
                module: m,
                bytes,
                piece,
            } => {
                let pieces: Vec<&[u8]> = match bytes.is_empty() {
                    true => vec![&[]],
                    false => bytes.chunks(piece.max(1) as usize).collect(),
                };
                let total = pieces.len() as u32;
                for (seq, piece) in pieces.into_iter().enumerate() {
                    out.push(Chunk {
                        module: module(m),
                        md5: md5_hex(&bytes),
                        size: bytes.len() as u64,
                        seq: seq as u32,
                        total,
                        data: STANDARD.encode(piece),
                        shared: false,
                    });
                }
            }
            Op::Raw {
                module: m,
                md5,
                size,
                seq,
                total,
                data,
                shared,
            } => out.push(Chunk {
                module: module(m),
                md5: match md5 {
                    Md5::Of(bytes) => md5_hex(&bytes),
                    Md5::Text(text) => text,
                },
                size,
                seq: seq.into(),
                total: total.into(),
                data: match data {
                    Data::Bytes(bytes) => STANDARD.encode(bytes),
                    Data::Text(text) => text,
                },
                shared,
            }),
        }
    }
    out
}

libfuzzer_sys::fuzz_target!(|ops: Vec<Op>| {
    let chunks = chunks(ops);
    // With CHUNKS_JSON set, print the chunks: that JSON is what a regression file holds.
    static DUMP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *DUMP.get_or_init(|| std::env::var_os("CHUNKS_JSON").is_some()) {
        eprintln!("{}", serde_json::to_string(&chunks).expect("chunks encode"));
    }
    checks::check_chunks(&chunks);
});
