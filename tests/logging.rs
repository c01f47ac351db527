//! A stalled log reader never stalls DNS: the balancer's stdout goes into a
//! pipe nobody reads while thousands of new clients arrive (each writes log
//! records), and every client is answered.  When the reader comes back, the
//! balancer says how many records it dropped, and the stats socket counts
//! them.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stats::balstat_json;
use common::*;
use hickory_proto::rr::RecordType;

/// A port free for UDP and TCP on 127.0.0.1 (nothing else binds in this
/// range during the test run but other tests' port-0 sockets).
fn free_port() -> u16 {
    loop {
        let Ok(udp) = StdUdp::bind("127.0.0.1:0") else {
            continue;
        };
        let port = udp.local_addr().map(|a| a.port()).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// The balancer, killed by its PID however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stalls_never_stalls_dns() {
    let dir = sockdir();
    let _backend = Backend::start(dir.path(), "5300");
    let stats_dir = sockdir();
    let sock = stats_dir.path().join("stats.sock");
    let port = free_port();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mname-balancer"))
            .args([
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-l",
                "debug",
                "-s",
            ])
            .arg(dir.path())
            .arg("-S")
            .arg(&sock)
            .env_remove("LOG_LEVEL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the balancer"),
    );
    // Nobody reads this pipe until the clients have been served.
    let stdout = child.0.stdout.take().expect("stdout");
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);

    let start = Instant::now();
    while udp_ask(
        lo(20),
        to,
        "www.example.com",
        RecordType::A,
        Duration::from_millis(200),
    )
    .await
    .is_none()
    {
        assert!(start.elapsed() < DEADLINE, "the balancer never answered");
    }
    // 4,000 new clients, each also sending two datagrams too short to be
    // DNS: at debug level each of those is a record ("dropping UDP
    // packet"), not rate-limited, 8,000 records of about 200 bytes, far
    // past the pipe's 64 KiB and the log queue's 4,096 records.  (Records
    // about single clients are limited to 100 a second, so new clients
    // alone no longer fill the queue.)
    let junk = tokio::net::UdpSocket::bind("127.0.0.99:0")
        .await
        .expect("bind");
    let mut unanswered = Vec::new();
    for n in 0..4000u32 {
        for _ in 0..2 {
            let _ = junk.send_to(&[0u8; 4], to).await;
        }
        let src = IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250) as u8 + 1));
        let answer = udp_ask(
            src,
            to,
            "www.example.com",
            RecordType::A,
            Duration::from_secs(1),
        )
        .await;
        if answer.is_none() {
            unanswered.push(src);
            // A stalled loop answers nobody: no need to wait on the rest.
            if unanswered.len() >= 5 {
                break;
            }
        }
    }
    // Now read: the balancer reports what it dropped.
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let collected = lines.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            collected.lock().map(|mut l| l.push(line)).ok();
        }
    });
    // The report goes out with the next record that finds room: a new
    // client makes one.
    let start = Instant::now();
    let mut n = 0u8;
    let dropped = loop {
        n = n.wrapping_add(1);
        let src = IpAddr::V4(Ipv4Addr::new(127, 2, 0, n));
        let wait = Duration::from_millis(200);
        let _ = udp_ask(src, to, "www.example.com", RecordType::A, wait).await;
        let doc = balstat_json(sock.to_str().unwrap_or_default(), &["summary"]);
        let dropped = doc["log_records_dropped"].as_u64().unwrap_or(0);
        if dropped > 0 {
            break dropped;
        }
        assert!(start.elapsed() < DEADLINE, "no drop counted");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    let _ = reader.join();
    assert!(
        unanswered.is_empty(),
        "{} clients unanswered: {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(5)]
    );
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    let reported: u64 = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| {
            r["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("slog-async: logger dropped"))
        })
        .filter_map(|r| r["count"].as_u64())
        .sum();
    assert!(reported > 0, "a record says how many were dropped");
    assert!(
        reported <= dropped,
        "reported {reported}, counted {dropped}"
    );
    assert!(
        dropped > 1000,
        "the reader really fell behind: {dropped} dropped"
    );
}
