//! Quick latency probe: sequential calls to `m.add` through the stub at ADDR, then p50/p99.
//! (The full benchmark is the `bench` crate; this is for a quick look.)

use std::time::Instant;

use common::app::Client;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8765".into());
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let client = Client::connect(&addr).expect("connect");
    for i in 0..200 {
        client.call("m", "add", (i, 1)).expect("warm-up call");
    }
    let mut took: Vec<f64> = (0..n)
        .map(|i| {
            let start = Instant::now();
            client.call("m", "add", (i, 1)).expect("call");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!("{n} calls: p50 {:.0} us, p99 {:.0} us", at(0.5), at(0.99));
}
