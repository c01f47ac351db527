//! Hostile and idle TCP clients against the real binary: idle connections
//! and senders that stop half-way are closed on their timers, a message
//! that is not a query closes its connection (counted by reason) while
//! pipelined and byte-split queries are answered, one address holds at
//! most `--max-tcp-per-client` sessions, and at `--max-tcp-sessions` idle
//! connections make room for new clients, who are all answered.

mod common;

use std::time::{Duration, Instant};

use common::stats::{Setup, balstat_json, u};
use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The balancer's counters, once `pred` holds for them (or panic).
fn counters_once(s: &Setup, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let doc = balstat_json(s.sock(), &[]);
        if pred(&doc["counters"]) {
            return doc;
        }
        assert!(start.elapsed() < DEADLINE, "{what}: {}", doc["counters"]);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the balancer closes `c` (EOF or reset) before the deadline.
async fn closed_by_balancer(c: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(DEADLINE, c.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn framed(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_half_sent_messages_are_closed_on_their_timers() {
    let s = Setup::start(&["--tcp-idle-timeout", "300ms", "--tcp-read-timeout", "600ms"]);
    let to = s.bal.target();
    // Never sends a byte.
    let mut silent = tcp_connect(lo(60), to).await;
    // Asks, is answered, then says nothing more.
    let mut asked = tcp_connect(lo(61), to).await;
    tcp_send(&mut asked, &query("www.example.com.", RecordType::A, 7)).await;
    assert!(tcp_recv(&mut asked).await.is_some(), "answered first");
    // Announces 65,535 bytes and sends ten; then keeps trickling a byte
    // every 100 ms, so only the read timeout can end it.
    let mut slow = tcp_connect(lo(62), to).await;
    slow.write_all(&[0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = async {
        while slow.write_all(&[0]).await.is_ok() && started.elapsed() < DEADLINE {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEADLINE, trickle).await.ok();
    assert!(started.elapsed() < DEADLINE, "the trickler was cut off");
    assert!(closed_by_balancer(&mut silent).await);
    assert!(closed_by_balancer(&mut asked).await);
    let doc = counters_once(&s, "closes counted", |c| {
        u(&c["tcp_closed_idle"]) == 2 && u(&c["tcp_closed_read_timeout"]) == 1
    });
    assert_eq!(u(&doc["tcp_sessions_open"]), 0);
    // Someone new is served as ever.
    let m = tcp_ask(lo(63), to, "www.example.com.", RecordType::A).await;
    assert!(m.is_some(), "a fresh client is answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_query_closes_its_connection_and_queries_flow_in_any_cut() {
    let s = Setup::start(&[]);
    let to = s.bal.target();
    let q = query("www.example.com.", RecordType::A, 9);
    let mut response = q.clone();
    response[2] |= 0x80;
    let closing: [(&str, Vec<u8>); 3] = [
        ("response", framed(&response)),
        ("short", framed(&q[..7])),
        ("empty", vec![0, 0]),
    ];
    for (i, (why, bytes)) in closing.iter().enumerate() {
        let mut c = tcp_connect(lo(70 + i as u8), to).await;
        c.write_all(bytes).await.unwrap();
        assert!(closed_by_balancer(&mut c).await, "{why}: closed");
    }
    counters_once(&s, "bad messages counted", |c| {
        (
            u(&c["tcp_closed_response"]),
            u(&c["tcp_closed_short"]),
            u(&c["tcp_closed_empty"]),
        ) == (1, 1, 1)
    });

    // A question that does not parse, and noise whose header says query:
    // FORMERR, as over UDP, and the connection goes on.
    let mut cut_question = q.clone();
    cut_question.truncate(q.len() - 3);
    let mut noise = vec![0x77u8, 0x01, 0x01, 0x00, 0x00, 0x01];
    noise.extend((0..150u32).map(|i| (i * 37 + 11) as u8));
    for (i, (id, msg)) in [(9u16, cut_question), (0x7701, noise)].iter().enumerate() {
        let mut c = tcp_connect(lo(75 + i as u8), to).await;
        c.write_all(&framed(msg)).await.unwrap();
        let a = tcp_recv(&mut c).await.expect("FORMERR");
        assert_eq!(a.metadata.id, *id);
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        tcp_send(&mut c, &query("www.example.com.", RecordType::A, 10)).await;
        let m = tcp_recv(&mut c).await.expect("the next query answered");
        assert_eq!(m.metadata.id, 10);
    }
    counters_once(&s, "FORMERRs counted", |c| u(&c["formerr_answers"]) == 2);

    // Three queries in one write, then one a byte at a time.
    let mut c = tcp_connect(lo(79), to).await;
    let ids = [101u16, 102, 103];
    let batch: Vec<u8> = ids
        .iter()
        .flat_map(|id| framed(&query("www.example.com.", RecordType::A, *id)))
        .collect();
    c.write_all(&batch).await.unwrap();
    for byte in framed(&query("www.example.com.", RecordType::A, 104)) {
        c.write_all(&[byte]).await.unwrap();
        c.flush().await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(tcp_recv(&mut c).await.expect("an answer").metadata.id);
    }
    got.sort();
    assert_eq!(got, [101, 102, 103, 104]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_max_tcp_per_client() {
    let s = Setup::start(&["--max-tcp-per-client", "3"]);
    let to = s.bal.target();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tcp_connect(lo(80), to).await);
    }
    counters_once(&s, "three admitted", |c| u(&c["tcp_accepted"]) == 3);
    let mut fourth = tcp_connect(lo(80), to).await;
    assert!(
        closed_by_balancer(&mut fourth).await,
        "the fourth is closed"
    );
    counters_once(&s, "counted", |c| u(&c["tcp_dropped_per_client"]) == 1);
    // The three held still work, and another address is served.
    tcp_send(&mut held[0], &query("www.example.com.", RecordType::A, 5)).await;
    assert!(tcp_recv(&mut held[0]).await.is_some());
    assert!(
        tcp_ask(lo(81), to, "www.example.com.", RecordType::A)
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_session_limit_idle_connections_make_room_and_every_new_client_is_answered() {
    let s = Setup::start(&["--max-tcp-sessions", "20", "--tcp-idle-timeout", "60s"]);
    let to = s.bal.target();
    // 200 idle connections from 50 addresses: ten times the table.
    let mut idle = Vec::new();
    for i in 0..200u32 {
        idle.push(tcp_connect(lo(100 + (i % 50) as u8), to).await);
    }
    counters_once(&s, "all offered", |c| u(&c["tcp_accepted"]) == 200);
    // Every legitimate client is answered, each within a second.
    for n in 0..20u8 {
        let started = Instant::now();
        let m = tcp_ask(lo(200 + n), to, "www.example.com.", RecordType::A).await;
        assert!(m.is_some(), "client {n} answered");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "client {n} answered in {:?}",
            started.elapsed()
        );
    }
    let doc = counters_once(&s, "evictions", |c| u(&c["tcp_evicted"]) >= 180);
    assert!(u(&doc["tcp_sessions_open"]) <= 20);
    // The attackers' connections were closed, not left hanging.
    let mut closed = 0;
    for c in idle.iter_mut().take(150) {
        closed += usize::from(closed_by_balancer(c).await);
    }
    assert_eq!(closed, 150, "evicted connections are closed");
}
