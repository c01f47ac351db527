//! Cost of the in-flight table per query: one insert and one matching
//! answer, with a steady number of queries outstanding, as on the hot
//! path, with hedging off and on (which keeps a queue per backend).
//! Prints the median of several runs in nanoseconds per query.
//!
//!     cargo bench --bench inflight

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mname_balancer::core::inflight::{InFlight, Limits, QueryKey};

const QUERIES: u32 = 1_000_000;
const RUNS: usize = 7;

fn run(outstanding: u32, hedging: bool) -> f64 {
    let mut table = InFlight::new(
        Limits {
            total: 65536,
            per_backend: 65536,
        },
        hedging,
    );
    // A typical query frame: 16-byte header and a 40-byte question.
    let frame = [0u8; 56];
    let now = tokio::time::Instant::now();
    let key = |i: u32| QueryKey {
        client: SocketAddr::new(
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i % 50_000))),
            (1024 + i % 60_000) as u16,
        ),
        id: i as u16,
    };
    for i in 0..outstanding {
        let _ = table.insert(key(i), 1, 0, now, Duration::from_secs(2), &frame, 16);
    }
    let start = Instant::now();
    for i in outstanding..QUERIES + outstanding {
        let _ = table.insert(key(i), 1, 0, now, Duration::from_secs(2), &frame, 16);
        let _ = table.answer(key(i - outstanding), 1, &[]);
    }
    let elapsed = start.elapsed();
    std::hint::black_box(&table);
    elapsed.as_nanos() as f64 / f64::from(QUERIES)
}

fn main() {
    for (outstanding, hedging) in [1, 1_000, 30_000]
        .into_iter()
        .flat_map(|n| [(n, false), (n, true)])
    {
        let mut ns: Vec<f64> = (0..RUNS).map(|_| run(outstanding, hedging)).collect();
        ns.sort_by(f64::total_cmp);
        let hedging = if hedging {
            "hedging on "
        } else {
            "hedging off"
        };
        println!(
            "in-flight table: {outstanding:>6} outstanding, {hedging}: median {:.1} ns per query (insert + answer), min {:.1}, max {:.1}",
            ns[RUNS / 2],
            ns[0],
            ns[RUNS - 1]
        );
    }
}
