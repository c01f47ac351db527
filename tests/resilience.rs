//! Never leave a client waiting: queries held by a dying or hung backend
//! are answered by others, a query nobody can answer gets SERVFAIL, and
//! answers nobody asked for are not sent.  Real balancer, real backends.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::UdpSocket;

const TWO_S: Duration = Duration::from_secs(2);

/// Send `n` queries (ids 1..=n) from one socket, without waiting.
async fn send_burst(sock: &UdpSocket, to: SocketAddr, name: &str, n: u16) {
    for id in 1..=n {
        sock.send_to(&query(name, RecordType::TXT, id), to)
            .await
            .unwrap();
    }
}

/// Collect answers on `sock` until `want` have arrived or `wait` passes
/// with nothing new; answers by id, counting duplicates.
async fn collect(sock: &UdpSocket, want: usize, wait: Duration) -> BTreeMap<u16, Vec<Message>> {
    let mut got: BTreeMap<u16, Vec<Message>> = BTreeMap::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let total: usize = got.values().map(Vec::len).sum();
        if total >= want && wait.is_zero() {
            return got;
        }
        match tokio::time::timeout(wait.max(Duration::from_millis(1)), sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let m = Message::from_vec(&buf[..n]).unwrap();
                got.entry(m.metadata.id).or_default().push(m);
            }
            _ => return got,
        }
    }
}

#[tokio::test]
async fn queries_held_by_a_killed_backend_are_answered_elsewhere_once() {
    let dir = sockdir();
    let mut held = Backend::start_with(dir.path(), "5300", &["--delay", "60000", "--log-queries"]);
    let _other = Backend::start(dir.path(), "5301");
    let mut args = FAST_TIMERS.to_vec();
    // Replay is what is tested: without hedging, which would have sent the
    // held queries to 5301 already (tests/hedging.rs).
    args.extend(["--query-timeout", "10s", "--hedge-after", "0"]);
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(2);
    let to = bal.target();
    // The first new remote goes to the first backend, 5300, which holds
    // every answer back.
    let sock = UdpSocket::bind((lo(100), 0)).await.unwrap();
    send_burst(&sock, to, "whoami.example.com.", 20).await;
    held.proc
        .wait_for_nth(20, "20 queries at the holding backend", |r| {
            r["msg"] == "query"
        });
    held.proc.kill9();
    let got = collect(&sock, 20, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 20, "every held query answered: {:?}", got.keys());
    for (id, answers) in &got {
        assert_eq!(answers.len(), 1, "query {id} answered once");
        assert_eq!(txt(&answers[0]), "5301", "by the other backend");
        assert_eq!(rcode(&answers[0]), ResponseCode::NoError);
    }
    // And nothing more arrives: no query is answered twice.
    let extra = collect(&sock, 0, Duration::from_millis(500)).await;
    assert!(extra.is_empty(), "duplicate answers: {extra:?}");
    bal.proc
        .wait_for("replayed queries in flight to other backends", |r| {
            r["count"] == 20 && be_id_is(r, "5300")
        });
}

#[tokio::test]
async fn no_backend_gets_servfail_quickly_and_is_rate_limited() {
    let dir = sockdir();
    let bal = Balancer::start(dir.path(), &["--synth-rate", "5"]);
    let to = bal.target();
    let sock = UdpSocket::bind((lo(101), 0)).await.unwrap();
    let sent = query("www.example.com.", RecordType::A, 777);
    sock.send_to(&sent, to).await.unwrap();
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(TWO_S, sock.recv(&mut buf))
        .await
        .expect("an answer, not silence")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, 777);
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert_eq!(m.queries, Message::from_vec(&sent).unwrap().queries);
    bal.proc.wait_for("no backends available", |_| true);

    // A flood from one remote: at most 5 answers a second.
    let flood = UdpSocket::bind((lo(102), 0)).await.unwrap();
    send_burst(&flood, to, "www.example.com.", 200).await;
    let got = collect(&flood, 200, Duration::from_millis(300)).await;
    let answers: usize = got.values().map(Vec::len).sum();
    assert!(
        (1..=10).contains(&answers),
        "rate-limited to 5/s (two seconds at most touched): {answers}"
    );
}

#[tokio::test]
async fn no_backend_policy_refused_and_drop() {
    let dir = sockdir();
    let refused = Balancer::start(dir.path(), &["--no-backend", "refused"]);
    let m = udp_ask(
        lo(103),
        refused.target(),
        "www.example.com.",
        RecordType::A,
        TWO_S,
    )
    .await
    .expect("REFUSED answer");
    assert_eq!(rcode(&m), ResponseCode::Refused);
    let silent = Balancer::start(dir.path(), &["--no-backend", "drop"]);
    let m = udp_ask(
        lo(103),
        silent.target(),
        "www.example.com.",
        RecordType::A,
        Duration::from_millis(500),
    )
    .await;
    assert!(m.is_none(), "drop: the original's silence");
}

#[tokio::test]
async fn unanswered_query_gets_servfail_and_its_late_answer_is_dropped() {
    let dir = sockdir();
    let _slow = Backend::start_with(dir.path(), "5300", &["--delay", "1200"]);
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--query-timeout", "300ms"]);
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(1);
    let sock = UdpSocket::bind((lo(104), 0)).await.unwrap();
    let start = Instant::now();
    let m = udp_ask_on(
        &sock,
        bal.target(),
        "www.example.com.",
        RecordType::A,
        TWO_S,
    )
    .await
    .expect("SERVFAIL after the query timeout");
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "not before the timeout"
    );
    bal.proc
        .wait_for("dropping late answer", |r| r["dest_ip"] == "127.0.0.104");
    let extra = collect(&sock, 0, Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "the late answer was delivered: {extra:?}");
    // A slow backend still answers heartbeats: it is probed, not faulted.
    assert_eq!(
        bal.proc
            .count("backend faulted (reset and reconnect)", |_| true),
        0
    );
}

#[tokio::test]
async fn on_timeout_drop_stays_silent() {
    let dir = sockdir();
    let _mute = Backend::start_with(dir.path(), "5300", &["--no-answer"]);
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--query-timeout", "200ms", "--on-timeout", "drop"]);
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(1);
    let m = udp_ask(
        lo(105),
        bal.target(),
        "www.example.com.",
        RecordType::A,
        Duration::from_millis(800),
    )
    .await;
    assert!(m.is_none(), "no answer with --on-timeout drop");
}

// Multi-threaded: the harness's log waits block their thread while the
// client tasks keep the load going.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hung_backend_is_faulted_by_the_passive_check_and_loses_nothing() {
    let (_dir, backends, bal) = three_backends(&[
        "--heartbeat-interval",
        "10s",
        "--heartbeat-timeout",
        "20s",
        "--unanswered-threshold",
        "300ms",
        "--probe-timeout",
        "300ms",
        "--query-timeout",
        "8s",
        // The passive check and replay are what is tested: without
        // hedging, which answers the hung backend's queries sooner
        // (tests/hedging.rs, bench/stall.py).
        "--hedge-after",
        "0",
    ]);
    let to = bal.target();
    let victim_name = whoami(lo(110), to).await.unwrap();
    let victim = backends.iter().find(|b| b.name == victim_name).unwrap();
    // Steady load from six clients, each asking in turn.
    let clients: Vec<_> = (110..116)
        .map(|n| {
            tokio::spawn(async move {
                let sock = UdpSocket::bind((lo(n), 0)).await.unwrap();
                let mut answers = Vec::new();
                for _ in 0..60 {
                    let m = udp_ask_on(
                        &sock,
                        to,
                        "www.example.com.",
                        RecordType::A,
                        Duration::from_secs(9),
                    )
                    .await;
                    answers.push(m.map(|m| rcode(&m)));
                }
                answers
            })
        })
        .collect();
    // Wait until traffic flows, then hang the backend.
    bal.proc
        .wait_for_nth(1, "remotes assigned", |r| r["remote_ip"] == "127.0.0.115");
    let stopped = Instant::now();
    victim.proc.signal(libc::SIGSTOP);
    let fault = bal.proc.wait_for("no heartbeat from backend", |r| {
        be_id_is(r, &victim_name) && r["passive_check"] == true
    });
    let took = stopped.elapsed();
    for c in clients {
        let answers = c.await.unwrap();
        assert!(
            answers.iter().all(|a| *a == Some(ResponseCode::NoError)),
            "every query answered by a backend: {answers:?}"
        );
    }
    victim.proc.signal(libc::SIGCONT);
    assert!(
        took < Duration::from_secs(20),
        "before the heartbeat timeout: {took:?} {fault}"
    );
    bal.proc
        .wait_for("replayed queries in flight to other backends", |r| {
            be_id_is(r, &victim_name)
        });
}

/// A hand-made backend that says hello (twice, as node-mname does to our
/// second hello), answers heartbeats, and once sends an answer to `victim`,
/// which never asked.
fn reflecting_backend(path: &std::path::Path, victim: SocketAddr) {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 4];
        let mut sent = false;
        while s.read_exact(&mut buf).is_ok() {
            let reply: u32 = match u32::from_le_bytes(buf) {
                1 => 1001,
                4 => 1004,
                _ => return,
            };
            if s.write_all(&reply.to_le_bytes()).is_err() {
                return;
            }
            if !sent {
                sent = true;
                let answer = query("www.example.com.", RecordType::A, 99);
                let mut f = Vec::new();
                f.extend_from_slice(&1002u32.to_le_bytes());
                let SocketAddr::V4(v4) = victim else { return };
                f.extend_from_slice(&u32::from(*v4.ip()).to_le_bytes());
                f.extend_from_slice(&u32::from(v4.port()).to_le_bytes());
                f.extend_from_slice(&(answer.len() as u32).to_le_bytes());
                f.extend_from_slice(&answer);
                let _ = s.write_all(&f);
            }
        }
    });
}

#[tokio::test]
async fn answer_to_an_address_that_never_asked_is_not_sent() {
    let dir = sockdir();
    let victim = UdpSocket::bind((lo(120), 0)).await.unwrap();
    let victim_addr = victim.local_addr().unwrap();
    reflecting_backend(&dir.path().join("5300"), victim_addr);
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.wait_established(1);
    bal.proc
        .wait_for("dropping answer to a query never asked", |r| {
            r["dest_ip"] == "127.0.0.120" && r["dest_port"] == victim_addr.port()
        });
    let mut buf = [0u8; 512];
    let got = tokio::time::timeout(Duration::from_millis(300), victim.recv(&mut buf)).await;
    assert!(got.is_err(), "nothing reached the victim");
}

#[tokio::test]
async fn garbage_short_and_response_datagrams_never_reach_backends() {
    let dir = sockdir();
    let be = Backend::start_with(dir.path(), "5300", &["--log-queries"]);
    let bal = Balancer::start(dir.path(), FAST_TIMERS);
    bal.wait_established(1);
    let to = bal.target();
    let sock = UdpSocket::bind((lo(121), 0)).await.unwrap();
    let good = query("www.example.com.", RecordType::A, 5);
    let mut response = good.clone();
    response[2] |= 0x80;
    let mut broken = good.clone();
    broken.truncate(good.len() - 3);
    for bad in [&b"hello"[..], &[0u8; 11][..], &response[..], &broken[..]] {
        sock.send_to(bad, to).await.unwrap();
    }
    let m = udp_ask_on(&sock, to, "www.example.com.", RecordType::A, TWO_S)
        .await
        .expect("the good query is answered");
    assert_eq!(rcode(&m), ResponseCode::NoError);
    for (reason, n) in [("short", 2), ("response", 1), ("malformed", 1)] {
        bal.proc.wait_for_nth(n, reason, |r| {
            r["msg"] == "dropping UDP packet" && r["reason"] == reason
        });
    }
    be.proc.wait_for("query", |_| true);
    assert_eq!(
        be.proc.count("query", |_| true),
        1,
        "only the good query reached it"
    );
}
