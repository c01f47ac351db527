//! Scale: how the balancer copes with 1,000,000 distinct client addresses.
//!
//! Starts three demo backends and the release balancer, then sends a few
//! queries from each of N addresses in 127.0.0.0/8 (loopback has them all).
//! Reports, as the table grows: memory per tracked remote (RSS growth over
//! the table size), the balancer's CPU per query and a probe client's
//! round-trip (the lookup cost); then waits for the remotes to expire and
//! reports RSS against the starting baseline.  The table's size is read
//! from the stats socket at every step, so a figure is never taken over
//! remotes that were dropped or had already expired.  The baseline is taken
//! after a warm-up of WARMUP remotes has come and gone, so that it includes
//! the code pages every later phase touches too.
//!
//!     cargo build --release --workspace --bins          # mname-demo-backend
//!     cargo bench --bench remotes_scale                 # 1,000,000 remotes
//!     REMOTES=100000 cargo bench --bench remotes_scale  # quicker
//!     REMOTES=500000 MAX_REMOTES=100000 cargo bench --bench remotes_scale
//!                                                       # RSS past the table's bound
//!     BENCH_LOG=/tmp/bal.log REMOTES=5000000 MAX_REMOTES=1000000 cargo bench --bench remotes_scale
//!                                                       # a 5M-source flood at the
//!                                                       # default bound, log volume too
//!
//! At the end it prints the balancer's counters (datagrams received,
//! answered by a backend, served without a remote, dropped) and, with
//! BENCH_LOG, the log's size.
//!
//! Not a test: it prints figures; targets are judged by a person.

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::query;

const PORT: u16 = 15980;
const QUERIES_PER_REMOTE: usize = 2;
const STEP: u32 = 100_000;
/// Longer than filling the table takes (1M remotes at 50k/s: 20 s).
const EXPIRY_SECS: u64 = 40;
const WARMUP: u32 = 20_000;

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// RSS split into (anonymous, file-backed) KiB: heap versus the binary's
/// own pages, which traffic pages in once and which stay.
fn rss_split(pid: u32) -> (u64, u64) {
    (status_kib(pid, "RssAnon:"), status_kib(pid, "RssFile:"))
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Remotes the balancer tracks now, from its stats socket.
fn tracked(stats: &std::path::Path) -> u64 {
    common::stats_request(stats, "summary")
        .and_then(|doc| serde_json::from_slice::<serde_json::Value>(&doc).ok())
        .and_then(|v| v["remotes_tracked"].as_u64())
        .unwrap_or(0)
}

/// Wait (bounded) until the balancer tracks at most `n` remotes.
fn wait_tracked_at_most(stats: &std::path::Path, n: u64, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if tracked(stats) <= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// Send QUERIES_PER_REMOTE queries from each of the addresses
/// `first..first+n`, paced at about 100k queries/s so that the balancer's
/// socket buffer does not overflow and every address becomes a remote.
/// `at_step` runs after every STEP addresses with the number sent so far.
fn send_from(first: u32, n: u32, to: SocketAddr, mut at_step: impl FnMut(u32)) {
    let q = query(7);
    let start = Instant::now();
    for i in 0..n {
        let s = UdpSocket::bind((client(first + i), 0)).unwrap();
        for _ in 0..QUERIES_PER_REMOTE {
            let _ = s.send_to(&q, to);
        }
        if i % 1000 == 999 {
            let due = Duration::from_micros(u64::from(i + 1) * QUERIES_PER_REMOTE as u64 * 10);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if (i + 1) % STEP == 0 || i + 1 == n {
            at_step(i + 1);
        }
    }
}

/// The i-th client address: 127.1.0.0 upward, skipping nothing (loopback
/// accepts every address of 127/8 as a source).
fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x7f01_0000 + i)
}

/// Median round trip of a fixed probe client, in microseconds.
fn probe_rtt(sock: &UdpSocket, to: SocketAddr) -> f64 {
    let mut rtts = Vec::new();
    let mut buf = [0u8; 512];
    for id in 0..31u16 {
        let t = Instant::now();
        if sock.send_to(&query(id), to).is_ok() && sock.recv(&mut buf).is_ok() {
            rtts.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtts.sort_by(f64::total_cmp);
    rtts.get(rtts.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let n: u32 = std::env::var("REMOTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::Builder::new()
        .prefix("mnbscale")
        .tempdir_in("/tmp")
        .unwrap();
    let expiry = EXPIRY_SECS.to_string();
    // MAX_REMOTES=N runs the balancer with --max-remotes N: past it, RSS
    // must stay flat while every address is still answered.
    let max_remotes = std::env::var("MAX_REMOTES").unwrap_or_else(|_| "100000000".into());
    let setup = common::start(
        dir.path(),
        PORT,
        &[
            "--remote-expiry",
            &expiry,
            "--expiry-sweep",
            "1s",
            "--rebalance-interval",
            "1h",
            "--synth-rate",
            "1000",
            "--max-remotes",
            &max_remotes,
        ],
    );
    let (pid, to, stats) = (setup.balancer_pid, setup.to, setup.stats.clone());
    let probe = UdpSocket::bind("127.0.0.2:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Warm-up: a few remotes come and go, so that the baseline includes
    // the pages that tracking and expiring remotes touch.
    println!(
        "remotes scale: {n} client addresses, {QUERIES_PER_REMOTE} queries each (warm-up: {WARMUP}, expiry {EXPIRY_SECS} s)"
    );
    send_from(0x00f0_0000, WARMUP, to, |_| {});
    let warm_gone = wait_tracked_at_most(&stats, 1, Duration::from_secs(EXPIRY_SECS + 30));
    // The probe's own remote stays: it is used at every step.
    let _ = probe_rtt(&probe, to);
    let base = rss_kib(pid);
    let (base_anon, _) = rss_split(pid);
    println!(
        "baseline RSS {base} KiB (anon {base_anon}) after the warm-up expired ({}); probe round trip {:.0} us",
        if warm_gone {
            "all gone"
        } else {
            "NOT all gone"
        },
        probe_rtt(&probe, to)
    );
    println!(
        "{:>9} {:>9} {:>10} {:>14} {:>12} {:>12}",
        "sent", "tracked", "RSS KiB", "bytes/remote", "CPU us/q", "probe us"
    );
    let mut ticks_at_step = cpu_ticks(pid);
    let mut sent_at_step = 0u32;
    send_from(0, n, to, |sent| {
        std::thread::sleep(Duration::from_millis(300));
        let rss = rss_kib(pid);
        let ticks = cpu_ticks(pid);
        let table = tracked(&stats).saturating_sub(1);
        let queries = u64::from(sent - sent_at_step) * QUERIES_PER_REMOTE as u64;
        let us_per_q = (ticks - ticks_at_step) as f64 * 10_000.0 / queries as f64;
        println!(
            "{:>9} {:>9} {:>10} {:>14.0} {:>12.2} {:>12.0}",
            sent,
            table,
            rss,
            (rss.saturating_sub(base) * 1024) as f64 / table.max(1) as f64,
            us_per_q,
            probe_rtt(&probe, to)
        );
        sent_at_step = sent;
        ticks_at_step = ticks;
    });
    let peak = rss_kib(pid);
    // Every query answered?  The senders never read (their sources are as
    // good as spoofed); the balancer's own counters say what became of
    // each datagram.
    std::thread::sleep(Duration::from_secs(3));
    if let Some(doc) = common::stats_request(&stats, "summary")
        .and_then(|doc| serde_json::from_slice::<serde_json::Value>(&doc).ok())
    {
        let c = &doc["counters"];
        let get = |k: &str| c[k].as_u64().unwrap_or(0);
        let dropped: u64 = c
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with("dropped_"))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        println!(
            "datagrams received {}, forwarded {}, answered by a backend {} ({:.3}%), served without a remote {}, dropped {dropped}, timeouts {}",
            get("udp_received"),
            get("udp_forwarded"),
            get("udp_replies"),
            100.0 * get("udp_replies") as f64 / get("udp_received").max(1) as f64,
            get("untracked_queries"),
            get("timeouts"),
        );
    }
    if let Some(path) = std::env::var_os("BENCH_LOG") {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        println!(
            "log: {} bytes, {} records ({:.1} bytes per client address)",
            text.len(),
            text.lines().count(),
            text.len() as f64 / f64::from(n.max(1))
        );
    }
    // Every remote (the probe's too) now expires EXPIRY_SECS after its
    // last query; the sweep runs every second.
    let quiet = Instant::now();
    let gone = wait_tracked_at_most(&stats, 0, Duration::from_secs(EXPIRY_SECS + 30));
    let mut last = rss_kib(pid);
    while quiet.elapsed() < Duration::from_secs(EXPIRY_SECS + 30) {
        std::thread::sleep(Duration::from_secs(1));
        let now = rss_kib(pid);
        if now == last {
            break;
        }
        last = now;
    }
    let (anon, file) = rss_split(pid);
    println!(
        "peak RSS {peak} KiB; after expiry ({}) {last} KiB (anon {anon}, file {file}) = {:.1}% of the {base} KiB baseline (anon {:.1}% of {base_anon})",
        if gone {
            "table empty"
        } else {
            "table NOT empty"
        },
        100.0 * last as f64 / base as f64,
        100.0 * anon as f64 / base_anon.max(1) as f64
    );
}
