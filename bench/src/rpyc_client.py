"""RPyC client of the benchmark: measures add(1, 2) on the service at 127.0.0.1:PORT and prints
one JSON line.

Usage: rpyc_client.py PORT CALLS WARMUP SECS IN_FLIGHT...
- as_written: `conn.root.add(1, 2)` each time (the attribute is looked up remotely every call);
- cached: `f = conn.root.add` once, then `f(1, 2)`;
- async: `rpyc.async_(conn.root.add)` with IN_FLIGHT results outstanding, for SECS seconds.
"""

import collections
import json
import sys
import time

import rpyc


def percentile(sorted_us, p):
    if not sorted_us:
        return 0.0
    rank = max(1, min(len(sorted_us), -(-p * len(sorted_us) // 100)))
    return sorted_us[int(rank) - 1]


def sequential(call, calls, warmup):
    for _ in range(warmup):
        call()
    took = []
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(calls):
        t = clock()
        if call() != 3:
            raise RuntimeError("wrong result")
        took.append((clock() - t) / 1000.0)
    secs = (clock() - start) / 1e9
    took.sort()
    return {
        "calls": calls,
        "secs": secs,
        "p50_us": percentile(took, 50),
        "p99_us": percentile(took, 99),
    }


def pipelined(conn, in_flight, secs, warmup):
    add = rpyc.async_(conn.root.add)
    for _ in range(warmup):
        add(1, 2).wait()
    pending = collections.deque(add(1, 2) for _ in range(in_flight))
    start = time.perf_counter()
    end = start + secs
    done = 0
    while pending:
        result = pending.popleft()
        if result.value != 3:  # .value waits, and raises the remote error if any
            raise RuntimeError("wrong result")
        done += 1
        if time.perf_counter() < end:
            pending.append(add(1, 2))
    return {"in_flight": in_flight, "calls": done, "secs": time.perf_counter() - start}


def main():
    port, calls, warmup = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    secs = float(sys.argv[4])
    in_flights = [int(n) for n in sys.argv[5:]]
    conn = rpyc.connect("127.0.0.1", port)
    as_written = sequential(lambda: conn.root.add(1, 2), calls, warmup)
    add = conn.root.add
    cached = sequential(lambda: add(1, 2), calls, warmup)
    async_ = [pipelined(conn, n, secs, warmup) for n in in_flights]
    result = {
        "version": rpyc.__version__,
        "as_written": as_written,
        "cached": cached,
        "async": async_,
    }
    print(json.dumps(result), flush=True)
    conn.close()


main()
