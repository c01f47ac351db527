//! Hedged queries through the real binary: a demo backend holds one query
//! back (`--delay-name`), and the client is answered by the other backend
//! after the hedge delay, exactly once; the held answer is dropped and
//! counted.  A backend slow on everything gets a tenth more work, not
//! double (the budget); `--hedge-after 0` leaves the client waiting for the
//! slow backend, as before hedging.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

/// A backend 5300 that delays what `slow` says, a balancer with `flags`,
/// a client (127.0.0.31) pinned to 5300, then a fast backend 5301.
async fn slow_and_fast(
    slow: &[&str],
    flags: &[&str],
) -> (tempfile::TempDir, Vec<Backend>, Balancer, UdpSocket) {
    let dir = sockdir();
    let slow = Backend::start_with(dir.path(), "5300", slow);
    let bal = Balancer::start(dir.path(), flags);
    bal.wait_established(1);
    let client = UdpSocket::bind((lo(31), 0)).await.unwrap();
    // The only backend up: the client's primary from now on.
    udp_ask_on(
        &client,
        bal.target(),
        "www.example.com.",
        RecordType::A,
        Duration::from_secs(5),
    )
    .await
    .expect("pinned");
    let fast = Backend::start(dir.path(), "5301");
    bal.wait_established(2);
    (dir, vec![slow, fast], bal, client)
}

/// `whoami` from `client`, waiting up to 5 s.
async fn ask_whoami(client: &UdpSocket, bal: &Balancer) -> Option<hickory_proto::op::Message> {
    udp_ask_on(
        client,
        bal.target(),
        "whoami.example.com.",
        RecordType::TXT,
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test]
async fn a_query_one_backend_holds_back_is_answered_by_the_other_once() {
    let (_dir, _backends, bal, client) = slow_and_fast(
        &["--delay", "1500", "--delay-name", "whoami.example.com"],
        &["--hedge-after", "100ms", "--query-timeout", "5s"],
    )
    .await;
    let asked = Instant::now();
    let m = ask_whoami(&client, &bal).await.expect("an answer");
    let took = asked.elapsed();
    assert_eq!(txt(&m), "5301", "answered by the failover backend");
    assert!(took >= Duration::from_millis(100), "not before the delay");
    assert!(took < Duration::from_millis(1500), "before the held answer");
    // The held answer comes at 1.5 s: recognised and dropped.
    let c = bal
        .counters_until("the held answer dropped", |c| c["hedge_losers"] == 1)
        .await;
    assert_eq!((&c["hedged"], &c["hedge_wins"]), (&1.into(), &1.into()));
    assert_eq!(c["unsolicited_answers"], 0);
    let mut buf = [0u8; 512];
    assert!(client.try_recv(&mut buf).is_err(), "exactly one answer");
    assert_eq!(
        bal.proc
            .count("dropping answer to a query never asked", |_| true),
        0
    );
}

#[tokio::test]
async fn hedge_after_zero_leaves_the_client_to_the_slow_backend() {
    let (_dir, _backends, bal, client) = slow_and_fast(
        &["--delay", "700", "--delay-name", "whoami.example.com"],
        &[
            "--hedge-after",
            "0",
            "--query-timeout",
            "5s",
            "--unanswered-threshold",
            "5s",
        ],
    )
    .await;
    let asked = Instant::now();
    let m = ask_whoami(&client, &bal).await.expect("an answer");
    assert_eq!(txt(&m), "5300");
    assert!(asked.elapsed() >= Duration::from_millis(700));
    let c = bal
        .counters_until("counted", |c| c["udp_replies"] == 2)
        .await;
    assert_eq!(
        (&c["hedged"], &c["hedge_budget_exhausted"]),
        (&0.into(), &0.into())
    );
}

#[tokio::test]
async fn the_budget_caps_hedges_when_a_backend_is_slow_on_everything() {
    // Every answer of 5300 comes after 800 ms (an overloaded backend);
    // 1,000 queries from its client, all late.  Hedges: fewer than 10% of
    // the queries forwarded plus 10 a second over the 10 s window.
    let (_dir, _backends, bal, client) = slow_and_fast(
        &["--delay", "800"],
        &[
            "--hedge-after",
            "50ms",
            "--hedge-budget",
            "10",
            "--query-timeout",
            "5s",
            "--unanswered-threshold",
            "5s",
        ],
    )
    .await;
    const N: u16 = 1000;
    // Sent paced over a second by a task of its own while this one reads,
    // so the client's receive buffer never overflows.
    let client = std::sync::Arc::new(client);
    let sender = {
        let (client, to) = (client.clone(), bal.target());
        tokio::spawn(async move {
            for id in 0..N {
                let q = query("www.example.com.", RecordType::A, id);
                client.send_to(&q, to).await.unwrap();
                if id % 10 == 9 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        })
    };
    // Every query answered once, by one backend or the other.
    let mut seen = std::collections::HashSet::new();
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while seen.len() < usize::from(N) {
        let Ok(r) = tokio::time::timeout_at(deadline, client.recv(&mut buf)).await else {
            let c = bal.counters_until("counters", |_| true).await;
            panic!("every query answered: {} of {N}: {c}", seen.len());
        };
        let n = r.unwrap();
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        assert!(seen.insert(id), "query {id} answered twice");
        assert!(n > 12);
    }
    sender.await.unwrap();
    let c = bal
        .counters_until("every hedge decided", |c| {
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            // The pinning query is due too; it had no other backend.
            n("hedged") + n("hedge_budget_exhausted") + n("hedge_no_target") == u64::from(N) + 1
        })
        .await;
    let hedged = c["hedged"].as_u64().unwrap_or(0);
    let forwarded = c["udp_forwarded"].as_u64().unwrap_or(0);
    assert!(hedged <= forwarded / 10 + 101, "{c}");
    assert!(hedged >= 100, "the floor was used: {c}");
    assert!(
        c["hedge_budget_exhausted"].as_u64().unwrap_or(0) >= 700,
        "{c}"
    );
}
