//! Quick latency probe: sequential calls to `m.add` through the stub at ADDR, then p50/p99.
//! (The full benchmark is the `bench` crate; this is for a quick look.)

use std::time::Instant;

use common::app::{AsyncClient, Client};

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8765".into());
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    // STUBNET_ASYNC=1: the async client, driven from this thread.
    let call: Box<dyn Fn(usize)> = if std::env::var_os("STUBNET_ASYNC").is_some() {
        let client = smol::block_on(AsyncClient::connect(&addr)).expect("connect");
        Box::new(move |i| {
            smol::block_on(client.call("m", "add", (i, 1))).expect("call");
        })
    } else {
        let client = Client::connect(&addr).expect("connect");
        Box::new(move |i| {
            client.call("m", "add", (i, 1)).expect("call");
        })
    };
    (0..200).for_each(&call);
    let mut took: Vec<f64> = (0..n)
        .map(|i| {
            let start = Instant::now();
            call(i);
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    took.sort_by(f64::total_cmp);
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    println!("{n} calls: p50 {:.0} us, p99 {:.0} us", at(0.5), at(0.99));
}
