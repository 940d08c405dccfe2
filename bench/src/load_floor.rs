//! The floor's app: writes call frames shaped like stubnet's to the first relay over one TCP
//! connection and reads the echoed lines back, keeping N in flight from a single thread. No
//! library, no tasks: the least an app can do.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::load::{self, Budget, LoadArgs, LoadResult, Tally};

/// One call frame, the same bytes stubnet's app API sends for `bench_mod.add(1, 2)`.
pub fn frame(id: u64) -> String {
    format!(
        "{{\"cmd\":\"call\",\"data\":{{\"id\":{id},\"module\":\"bench_mod\",\"function\":\"add\",\
         \"args\":[1,2],\"timeout_ms\":30000}}}}\n"
    )
}

/// The id in an echoed frame.
fn id_of(line: &[u8]) -> Option<u64> {
    let key = b"\"id\":";
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = line[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    line: Vec<u8>,
    next_id: u64,
}

impl Conn {
    fn connect(addr: &str) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .map_err(|e| format!("cannot reach the floor at {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            line: Vec::with_capacity(256),
            next_id: 0,
        })
    }

    fn send(&mut self) -> Result<u64, String> {
        self.next_id += 1;
        let frame = frame(self.next_id);
        self.writer
            .write_all(frame.as_bytes())
            .map_err(|e| format!("floor: write failed: {e}"))?;
        Ok(self.next_id)
    }

    fn recv(&mut self) -> Result<Option<u64>, String> {
        self.line.clear();
        match self.reader.read_until(b'\n', &mut self.line) {
            Ok(0) => Err("floor: the relay closed the connection".into()),
            Ok(_) => Ok(id_of(&self.line)),
            Err(e) => Err(format!("floor: read failed: {e}")),
        }
    }
}

pub fn run(args: &LoadArgs) -> Result<LoadResult, String> {
    let mut conn = Conn::connect(&args.addr)?;
    let n = args.in_flight.max(1);
    let warmup = Budget {
        calls: args.warmup.max(4 * n as u64),
        until: Instant::now() + Duration::from_secs(30),
    };
    window(&mut conn, n, warmup)?;
    let measured = load::start(args);
    let tally = window(&mut conn, n, measured.budget)?;
    Ok(load::finish(tally, measured, args))
}

/// Keeps `n` calls in flight until the budget is spent, then collects the last answers.
fn window(conn: &mut Conn, n: usize, budget: Budget) -> Result<Tally, String> {
    let mut tally = Tally::default();
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::with_capacity(n);
    let mut issued = 0u64;
    let more = |issued: u64| issued < budget.calls && Instant::now() < budget.until;
    while sent.len() < n && more(issued) {
        let at = Instant::now();
        sent.push_back((conn.send()?, at));
        issued += 1;
    }
    while let Some((id, at)) = sent.pop_front() {
        let got = conn.recv()?;
        let wrong = (got != Some(id)).then(|| format!("answer {got:?} for call {id}"));
        tally.record(at.elapsed(), wrong);
        if more(issued) {
            let at = Instant::now();
            sent.push_back((conn.send()?, at));
            issued += 1;
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_id() {
        assert_eq!(id_of(frame(42).as_bytes()), Some(42));
        assert_eq!(id_of(b"7 {\"id\":9}"), Some(9));
        assert_eq!(id_of(b"nothing"), None);
    }
}
