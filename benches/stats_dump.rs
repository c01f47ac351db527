//! Stats dumps under load: does serving the stats socket stall traffic?
//!
//! Starts three demo backends and the release balancer with `-S`, makes
//! REMOTES (default 100,000) distinct client addresses known to it, then
//! runs a steady probe load (PROBES clients, one query outstanding each)
//! for two phases of equal length: without stats clients, and with one
//! client dumping the whole `snapshot` back to back.  Prints the probe
//! latencies of both phases (p50, p99, p99.9, worst), the dumps' size and
//! duration, and checks each dump is a complete JSON document that lists
//! every remote.
//!
//!     cargo build --release --workspace --bins    # mname-demo-backend
//!     cargo bench --bench stats_dump
//!     REMOTES=1000000 cargo bench --bench stats_dump
//!
//! Not a test: it prints figures; a person judges them.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::query;

const PORT: u16 = 15981;
const PROBES: usize = 4;
const PHASE: Duration = Duration::from_secs(6);

/// Latencies in microseconds of one probe client, one query outstanding,
/// until `stop`.  A query unanswered within 1 s counts as 1 s.
fn probe(src: Ipv4Addr, to: SocketAddr, stop: Arc<AtomicBool>) -> Vec<f64> {
    let sock = UdpSocket::bind((src, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut buf = [0u8; 512];
    let mut lat = Vec::new();
    let mut id = 0u16;
    while !stop.load(Ordering::Relaxed) {
        id = id.wrapping_add(1);
        let t = Instant::now();
        let _ = sock.send_to(&query(id), to);
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 2 && buf[..2] == id.to_be_bytes() => break,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat
}

fn run_probes(to: SocketAddr, phase: Duration) -> Vec<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..PROBES)
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || probe(Ipv4Addr::new(127, 0, 0, 2 + i as u8), to, stop))
        })
        .collect();
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap_or_default())
        .collect();
    all.sort_by(f64::total_cmp);
    all
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, lat: &[f64]) {
    println!(
        "{name:<22} {:>9} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
        lat.len(),
        pct(lat, 0.5),
        pct(lat, 0.99),
        pct(lat, 0.999),
        lat.last().copied().unwrap_or(f64::NAN)
    );
}

/// One whole snapshot: (bytes, remotes listed, seconds).
fn dump(path: &std::path::Path) -> (usize, usize, f64) {
    let t = Instant::now();
    let doc = common::stats_request(path, "snapshot").expect("a snapshot");
    let v: serde_json::Value = serde_json::from_slice(&doc).expect("a complete JSON document");
    let remotes = v["remotes"].as_array().map_or(0, Vec::len);
    (doc.len(), remotes, t.elapsed().as_secs_f64())
}

fn main() {
    let n: u32 = std::env::var("REMOTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::Builder::new()
        .prefix("mnbstats")
        .tempdir_in("/tmp")
        .unwrap();
    let setup = common::start(
        dir.path(),
        PORT,
        &["--remote-expiry", "1h", "--rebalance-interval", "1h"],
    );
    let (to, stats_path) = (setup.to, setup.stats.clone());

    // Make n remotes known, paced at about 100k queries/s.
    let q = query(7);
    let start = Instant::now();
    for i in 0..n {
        let s = UdpSocket::bind((Ipv4Addr::from(0x7f02_0000 + i), 0)).unwrap();
        let _ = s.send_to(&q, to);
        if i % 1000 == 999 {
            let due = Duration::from_micros(u64::from(i + 1) * 10);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    // Wait until the table holds them all (some may have been dropped by a
    // full socket buffer; the count is reported either way).
    let mut listed = 0;
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(20) {
        listed = dump(&stats_path).1;
        if listed >= n as usize {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "stats dump under load: {listed} remotes tracked, {PROBES} probe clients, {PHASE:?} per phase"
    );
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "phase (latency us)", "queries", "p50", "p99", "p99.9", "worst"
    );
    let quiet = run_probes(to, PHASE);
    report("no stats client", &quiet);

    let stop = Arc::new(AtomicBool::new(false));
    let dumper = {
        let stop = stop.clone();
        let path = stats_path.clone();
        std::thread::spawn(move || {
            let mut dumps = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                dumps.push(dump(&path));
            }
            dumps
        })
    };
    let busy = run_probes(to, PHASE);
    stop.store(true, Ordering::Relaxed);
    let dumps = dumper.join().unwrap_or_default();
    report("dumping back to back", &busy);
    let mut secs: Vec<f64> = dumps.iter().map(|d| d.2).collect();
    secs.sort_by(f64::total_cmp);
    let complete = dumps.iter().filter(|d| d.1 >= listed).count();
    println!(
        "{} dumps, {} complete with every remote; {:.1} MB each; median {:.0} ms, worst {:.0} ms",
        dumps.len(),
        complete,
        dumps.first().map_or(0.0, |d| d.0 as f64 / 1e6),
        pct(&secs, 0.5) * 1e3,
        secs.last().copied().unwrap_or(f64::NAN) * 1e3
    );
}
