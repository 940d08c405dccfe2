//! The stubnet app: calls `bench_mod.FUNCTION(1, 2)` through `common::app` as an app would, the
//! blocking [`Client`] for one call at a time, [`AsyncClient`] shared by N tasks for N in flight.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use common::app::{AsyncClient, CallError, Client};

use crate::load::{self, Budget, LoadArgs, LoadResult, Tally};
use crate::network::MODULE;

pub fn run(args: &LoadArgs) -> Result<LoadResult, String> {
    if args.in_flight <= 1 {
        blocking(args)
    } else {
        smol::block_on(pipelined(args))
    }
}

/// `None` for the right answer, else what was wrong.
fn check(result: Result<i64, CallError>) -> Option<String> {
    match result {
        Ok(3) => None,
        Ok(other) => Some(format!("wrong result: {other}")),
        Err(e) => Some(e.to_string()),
    }
}

fn blocking(args: &LoadArgs) -> Result<LoadResult, String> {
    let client = Client::connect(&args.addr).map_err(|e| e.to_string())?;
    let call = || client.call_as::<i64>(MODULE, &args.function, (1, 2));
    for _ in 0..args.warmup {
        let _ = call();
    }
    let window = load::start(args);
    let budget = window.budget;
    let mut tally = Tally::default();
    while (tally.latencies.len() as u64) < budget.calls && Instant::now() < budget.until {
        let t = Instant::now();
        let result = call();
        tally.record(t.elapsed(), check(result));
    }
    Ok(load::finish(tally, window, args))
}

async fn pipelined(args: &LoadArgs) -> Result<LoadResult, String> {
    let client = AsyncClient::connect(&args.addr)
        .await
        .map_err(|e| e.to_string())?;
    let n = args.in_flight;
    let warmup = Budget {
        calls: args.warmup.max(4 * n as u64),
        until: Instant::now() + Duration::from_secs(30),
    };
    slots(&client, &args.function, n, warmup).await;
    let window = load::start(args);
    let tally = slots(&client, &args.function, n, window.budget).await;
    Ok(load::finish(tally, window, args))
}

/// Runs `n` tasks, each making one call after another, until the budget is spent.
async fn slots(client: &AsyncClient, function: &str, n: usize, budget: Budget) -> Tally {
    let tally = RefCell::new(Tally::default());
    let issued = Cell::new(0u64);
    let ex = smol::LocalExecutor::new();
    let tasks: Vec<_> = (0..n)
        .map(|_| ex.spawn(slot(client, function, budget, &tally, &issued)))
        .collect();
    ex.run(async {
        for task in tasks {
            task.await;
        }
    })
    .await;
    drop(ex);
    tally.into_inner()
}

async fn slot(
    client: &AsyncClient,
    function: &str,
    budget: Budget,
    tally: &RefCell<Tally>,
    issued: &Cell<u64>,
) {
    while issued.get() < budget.calls && Instant::now() < budget.until {
        issued.set(issued.get() + 1);
        let t = Instant::now();
        let result = client.call_as::<i64>(MODULE, function, (1, 2)).await;
        tally.borrow_mut().record(t.elapsed(), check(result));
    }
}
