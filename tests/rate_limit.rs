//! The per-client query rate through the real binary: past
//! `--max-qps-per-client` a client's queries are dropped, every
//! `--rate-limit-slip`-th gets TC=1 (so a real resolver retries over TCP),
//! and other clients are not touched.

mod common;

use common::*;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

#[tokio::test]
async fn a_client_past_its_rate_is_dropped_with_slips_and_others_are_served() {
    let dir = sockdir();
    let _backend = Backend::start(dir.path(), "5300");
    let bal = Balancer::start(
        dir.path(),
        &["--max-qps-per-client", "5", "--rate-limit-slip", "2"],
    );
    bal.wait_established(1);
    let to = bal.target();
    let sock = UdpSocket::bind((lo(31), 0)).await.expect("bind");
    for id in 0..20u16 {
        sock.send_to(&query("www.example.com", RecordType::A, id), to)
            .await
            .expect("send");
    }
    // Counted before anything is read back: every query is accounted for.
    let mut dumps = 0;
    let rec = loop {
        dumps += 1;
        bal.proc.signal(libc::SIGUSR1);
        let rec = bal
            .proc
            .wait_for_nth(dumps, "counters", |r| r["msg"] == "counters");
        if rec["udp_received"].as_u64() >= Some(20) {
            break rec;
        }
    };
    let forwarded = rec["udp_forwarded"].as_u64().unwrap_or(0);
    let limited = rec["dropped_rate_limited"].as_u64().unwrap_or(0);
    // Twenty queries in a burst fall in one second of the balancer's clock,
    // or straddle two: 5 or 10 pass.
    assert!(forwarded == 5 || forwarded == 10, "{rec}");
    assert_eq!(forwarded + limited, 20, "{rec}");
    assert!(
        rec["slip_answers"].as_u64() >= Some(limited / 2 - 1),
        "{rec}"
    );
    let mut buf = [0u8; 512];
    let mut truncated = 0;
    let mut answered = 0;
    for _ in 0..(forwarded + rec["slip_answers"].as_u64().unwrap_or(0)) {
        let n = tokio::time::timeout(DEADLINE, sock.recv(&mut buf)).await;
        let Ok(Ok(n)) = n else { break };
        if n >= 3 && buf[2] & 0x02 != 0 {
            truncated += 1;
        } else {
            answered += 1;
        }
    }
    assert_eq!(answered, forwarded);
    assert!(truncated >= 1, "slips arrive with TC=1");
    let other = udp_ask(lo(32), to, "www.example.com", RecordType::A, DEADLINE).await;
    assert!(other.is_some(), "another client is served");
}
