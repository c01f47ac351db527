//! The real balancer in front of real demo backends: answers over UDP and
//! TCP, stickiness, failover and revert, removed and returning sockets,
//! rebalancing and expiry, and the datagrams it must refuse.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

const TWO_S: Duration = Duration::from_secs(2);

#[tokio::test]
async fn answers_over_udp_and_tcp() {
    let (_dir, _backends, bal) = three_backends(&[]);
    let to = bal.target();
    let m = udp_ask(lo(1), to, "www.example.com.", RecordType::A, TWO_S)
        .await
        .expect("UDP answer");
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.1");
    let m = tcp_ask(lo(1), to, "a9.example.com.", RecordType::A)
        .await
        .expect("TCP answer");
    assert_eq!(m.answers[0].data.to_string(), "192.0.2.9");
    let m = udp_ask(lo(1), to, "nope.example.com.", RecordType::A, TWO_S)
        .await
        .unwrap();
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    // The backend sees the client's real address and port.
    let sock = UdpSocket::bind((lo(7), 0)).await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let m = udp_ask_on(&sock, to, "client.example.com.", RecordType::TXT, TWO_S)
        .await
        .unwrap();
    assert_eq!(txt(&m), format!("127.0.0.7 {port}"));
}

#[tokio::test]
async fn each_client_ip_stays_on_one_backend() {
    let (_dir, _backends, bal) = three_backends(&[]);
    let to = bal.target();
    let mut seen: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for round in 0..4 {
        for n in 10..19 {
            let who = if round % 2 == 0 {
                whoami(lo(n), to).await.expect("UDP answer")
            } else {
                let m = tcp_ask(lo(n), to, "whoami.example.com.", RecordType::TXT)
                    .await
                    .expect("TCP answer");
                txt(&m)
            };
            seen.entry(lo(n)).or_default().insert(who);
        }
    }
    for (ip, backends) in &seen {
        assert_eq!(backends.len(), 1, "{ip} was served by {backends:?}");
    }
    let used: BTreeSet<_> = seen.values().flatten().collect();
    assert_eq!(
        used.len(),
        3,
        "round-robin spreads 9 clients over 3 backends"
    );
}

#[tokio::test]
async fn kill_9_moves_remotes_and_they_revert_when_it_returns() {
    let (dir, mut backends, bal) = three_backends(&[]);
    let to = bal.target();
    let client = lo(30);
    let first = whoami(client, to).await.unwrap();
    let idx = backends.iter().position(|b| b.name == first).unwrap();
    backends[idx].proc.kill9();
    bal.proc
        .wait_for("backend socket EOF", |r| be_id_is(r, &first));
    let backup = whoami_until(client, to, "answer from another backend", |w| w != first).await;
    assert_ne!(backup, first);
    bal.proc
        .wait_for("remote assigned to new backup backend", |r| {
            r["remote_ip"] == "127.0.0.30"
        });
    // Restart the same backend on the same socket: the client goes home.
    backends[idx] = Backend::start(dir.path(), &first);
    whoami_until(client, to, "revert to the original primary", |w| w == first).await;
    bal.proc
        .wait_for("remote assigned to original primary backend", |r| {
            r["remote_ip"] == "127.0.0.30" && be_id_is(r, &first)
        });
}

#[tokio::test]
async fn removed_socket_is_marked_and_picked_up_again() {
    let (dir, mut backends, bal) = three_backends(&[]);
    let to = bal.target();
    let client = lo(40);
    let first = whoami(client, to).await.unwrap();
    let idx = backends.iter().position(|b| b.name == first).unwrap();
    backends[idx].proc.kill9();
    std::fs::remove_file(&backends[idx].path).unwrap();
    bal.proc
        .wait_for("backend socket removed", |r| be_id_is(r, &first));
    // A removed primary is replaced, not kept as a primary to return to.
    let other = whoami_until(client, to, "served elsewhere", |w| w != first).await;
    bal.proc
        .wait_for("remote assigned to new primary backend", |r| {
            r["remote_ip"] == "127.0.0.40" && be_id_is(r, &other)
        });
    backends[idx] = Backend::start(dir.path(), &first);
    bal.proc
        .wait_for("backend socket returned (connecting)", |r| {
            be_id_is(r, &first)
        });
    bal.proc.wait_for_nth(2, "re-established", |r| {
        r["msg"] == "backend socket established" && be_id_is(r, &first)
    });
    // It serves new clients again (round-robin reaches it).
    let mut served = BTreeSet::new();
    for n in 41..47 {
        served.insert(whoami(lo(n), to).await.unwrap());
    }
    assert!(
        served.contains(&first),
        "returned backend serves: {served:?}"
    );
    assert_eq!(
        whoami(client, to).await.unwrap(),
        other,
        "stays on new primary"
    );
}

#[tokio::test]
async fn tcp_two_pipelined_queries() {
    let (_dir, _backends, bal) = three_backends(&[]);
    let mut s = tcp_connect(lo(50), bal.target()).await;
    let mut both = Vec::new();
    for (id, name) in [(1u16, "a1.example.com."), (2, "a2.example.com.")] {
        let q = query(name, RecordType::A, id);
        both.extend_from_slice(&(q.len() as u16).to_be_bytes());
        both.extend_from_slice(&q);
    }
    s.write_all(&both).await.unwrap();
    let a = tcp_recv(&mut s).await.expect("first answer");
    let b = tcp_recv(&mut s).await.expect("second answer");
    assert_eq!((a.metadata.id, b.metadata.id), (1, 2));
    assert_eq!(a.answers[0].data.to_string(), "192.0.2.1");
    assert_eq!(b.answers[0].data.to_string(), "192.0.2.2");
}

#[tokio::test]
async fn tcp_half_close_still_gets_the_answer() {
    let (_dir, _backends, bal) = three_backends(&[]);
    let mut s = tcp_connect(lo(51), bal.target()).await;
    tcp_send(&mut s, &query("big.example.com.", RecordType::TXT, 9)).await;
    s.shutdown().await.unwrap();
    let m = tcp_recv(&mut s).await.expect("answer after our FIN");
    assert_eq!(m.metadata.id, 9);
    assert_eq!(m.answers.len(), 40, "the whole big answer over TCP");
    assert!(tcp_recv(&mut s).await.is_none(), "then the balancer closes");
}

#[tokio::test]
async fn tcp_connection_with_no_data_is_handled_cleanly() {
    let (_dir, _backends, bal) = three_backends(&[]);
    for _ in 0..5 {
        let mut s = tcp_connect(lo(52), bal.target()).await;
        s.shutdown().await.unwrap();
        assert!(tcp_recv(&mut s).await.is_none());
    }
    assert!(whoami(lo(52), bal.target()).await.is_some());
}

#[tokio::test]
async fn oversized_datagram_is_dropped_and_others_served() {
    let (_dir, _backends, bal) = three_backends(&[]);
    let to = bal.target();
    let mut big = query("www.example.com.", RecordType::A, 5);
    big.resize(1501, 0);
    let sock = UdpSocket::bind((lo(60), 0)).await.unwrap();
    sock.send_to(&big, to).await.unwrap();
    bal.proc
        .wait_for("dropping oversized UDP packet", |r| r["len"] == 1501);
    // A full-size 1500-byte datagram is still forwarded.
    let mut ok = query("www.example.com.", RecordType::A, 6);
    ok.resize(1500, 0);
    sock.send_to(&ok, to).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(TWO_S, sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(n > 12, "1500 bytes is within the limit and answered");
    assert!(whoami(lo(61), to).await.is_some());
}

#[tokio::test]
async fn ipv6_client_is_answered_over_udp_and_tcp_with_its_address() {
    let dir = sockdir();
    let _b = Backend::start(dir.path(), "5300");
    let bal = Balancer::start_binds(&["::1", "127.0.0.1"], dir.path(), FAST_TIMERS);
    bal.wait_established(1);
    bal.proc
        .wait_for("backend capabilities", |r| r["caps"] == 1);
    let v6: SocketAddr = format!("[::1]:{}", bal.port).parse().unwrap();
    let sock = UdpSocket::bind("[::1]:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let m = udp_ask_on(&sock, v6, "client.example.com.", RecordType::TXT, TWO_S)
        .await
        .expect("UDP answer to an IPv6 client");
    assert_eq!(txt(&m), format!("::1 {port}"));

    let six: IpAddr = "::1".parse().unwrap();
    let mut s = tcp_connect(six, v6).await;
    let tcp_port = s.local_addr().unwrap().port();
    tcp_send(&mut s, &query("client.example.com.", RecordType::TXT, 66)).await;
    let m = tcp_recv(&mut s)
        .await
        .expect("TCP answer to an IPv6 client");
    assert_eq!(m.metadata.id, 66);
    assert_eq!(txt(&m), format!("::1 {tcp_port}"));

    // IPv4 on its own listener, same port.
    let v4 = SocketAddr::new(lo(1), bal.port);
    assert_eq!(whoami(lo(62), v4).await.as_deref(), Some("5300"));
}

#[tokio::test]
async fn idle_remotes_expire() {
    let (_dir, _backends, bal) =
        three_backends(&["--remote-expiry", "300ms", "--expiry-sweep", "100ms"]);
    assert!(whoami(lo(70), bal.target()).await.is_some());
    bal.proc
        .wait_for("expiring remote entry", |r| r["remote_ip"] == "127.0.0.70");
}

#[tokio::test]
async fn rebalance_moves_surplus_remotes_to_new_backends() {
    let dir = sockdir();
    let _first = Backend::start(dir.path(), "5300");
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--rebalance-interval", "300ms"]);
    let bal = Balancer::start(dir.path(), &args);
    bal.wait_established(1);
    let to = bal.target();
    for n in 80..88 {
        assert_eq!(whoami(lo(n), to).await.as_deref(), Some("5300"));
    }
    let _more = [
        Backend::start(dir.path(), "5301"),
        Backend::start(dir.path(), "5302"),
    ];
    bal.wait_established(3);
    // Spread 8 - 0 > 3 backends: 5 remotes of 5300 are unassigned.
    bal.proc.wait_for_nth(5, "5 rebalanced remotes", |r| {
        r["msg"] == "rebalancing to reduce spread"
    });
    let mut served = BTreeSet::new();
    for n in 80..88 {
        served.insert(whoami(lo(n), to).await.unwrap());
    }
    assert_eq!(
        served.len(),
        3,
        "after rebalancing all backends serve: {served:?}"
    );
}

#[tokio::test]
async fn sigusr1_logs_counters_that_match_the_traffic() {
    let (_dir, _backends, bal) = three_backends(&[]);
    let to = bal.target();
    for _ in 0..5 {
        assert!(whoami(lo(90), to).await.is_some());
    }
    let sock = UdpSocket::bind((lo(91), 0)).await.unwrap();
    sock.send_to(b"short", to).await.unwrap();
    bal.proc
        .wait_for("dropping UDP packet", |r| r["reason"] == "short");
    bal.proc.signal(libc::SIGUSR1);
    let c = bal.proc.wait_for("counters", |_| true);
    assert_eq!(c["udp_received"], 6);
    assert_eq!(c["udp_forwarded"], 5);
    assert_eq!(c["udp_replies"], 5);
    assert_eq!(c["dropped_short"], 1);
    assert_eq!(c["remotes"], 1);
    assert_eq!(c["inflight"], 0);
    // One record per backend follows the balancer's; wait for all three.
    bal.proc
        .wait_for_nth(3, "backend counters", |r| r["msg"] == "backend counters");
    let per_backend = bal.proc.find(|r| r["msg"] == "backend counters");
    assert_eq!(per_backend.len(), 3);
    let udp: u64 = per_backend.iter().map(|r| r["udp"].as_u64().unwrap()).sum();
    assert_eq!(
        udp, 5,
        "each query counted once, on the backend that got it"
    );
    assert!(
        per_backend
            .iter()
            .any(|r| r["udp"] == 5 && r["latency_count"] == 5)
    );
}

/// One query from `src` to `to`: the answer's rcode and the address it
/// came from.
async fn ask_seeing_source(src: IpAddr, to: SocketAddr) -> (ResponseCode, SocketAddr) {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).await.unwrap();
    sock.send_to(&query("www.example.com.", RecordType::A, 7), to)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(TWO_S, sock.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
    (rcode(&m), from)
}

#[tokio::test]
async fn wildcard_listener_answers_from_the_address_asked() {
    // Loopback has all of 127/8: on a socket bound to 0.0.0.0 (or ::) a
    // query to 127.0.0.77 must be answered from 127.0.0.77, not from the
    // address the kernel would pick (127.0.0.1), or resolvers drop it.
    for bind in ["0.0.0.0", "::"] {
        let dir = sockdir();
        let _b = Backend::start(dir.path(), "5300");
        let bal = Balancer::start_on(bind, dir.path(), FAST_TIMERS);
        bal.wait_established(1);
        let mut asked = vec!["127.0.0.1", "127.0.0.77", "127.9.8.7"];
        if bind == "::" {
            asked.push("::1");
        }
        for dst in asked {
            let to = SocketAddr::new(dst.parse().unwrap(), bal.port);
            let src = if to.is_ipv6() {
                "::1".parse().unwrap()
            } else {
                lo(95)
            };
            assert_eq!(
                ask_seeing_source(src, to).await,
                (ResponseCode::NoError, to),
                "bound to {bind}, asked {dst}"
            );
        }
    }
}

#[tokio::test]
async fn the_balancers_own_answers_leave_from_the_address_asked_too() {
    // No backend: the SERVFAIL made at once.
    let empty = sockdir();
    let bal = Balancer::start_on("0.0.0.0", empty.path(), FAST_TIMERS);
    let to = SocketAddr::new("127.0.0.78".parse().unwrap(), bal.port);
    assert_eq!(
        ask_seeing_source(lo(96), to).await,
        (ResponseCode::ServFail, to)
    );
    // A backend that never answers: the SERVFAIL at the query timeout.
    let dir = sockdir();
    let _mute = Backend::start_with(dir.path(), "5300", &["--no-answer"]);
    let mut args = FAST_TIMERS.to_vec();
    args.extend(["--query-timeout", "200ms", "--unanswered-threshold", "10s"]);
    let bal = Balancer::start_on("0.0.0.0", dir.path(), &args);
    bal.wait_established(1);
    let to = SocketAddr::new("127.0.0.79".parse().unwrap(), bal.port);
    assert_eq!(
        ask_seeing_source(lo(97), to).await,
        (ResponseCode::ServFail, to)
    );
}

#[tokio::test]
async fn udp_receive_buffer_is_enlarged_as_asked() {
    let dir = sockdir();
    let asked: u64 = 1 << 20;
    let bal = Balancer::start(dir.path(), &["--udp-recv-buffer", &asked.to_string()]);
    let rec = bal.proc.wait_for("UDP receive buffer", |_| true);
    assert_eq!(rec["requested"], asked);
    // Without CAP_NET_ADMIN the kernel caps the request at rmem_max; the
    // system default (rmem_default, 208 KiB on most systems) is less.
    let rmem_max: u64 = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let granted = rec["granted"].as_u64().unwrap();
    assert!(
        granted >= asked.min(rmem_max),
        "granted {granted}, asked {asked}, rmem_max {rmem_max}"
    );
    // 0 keeps the system default, and says nothing: once the loop has
    // answered a query (no backend: SERVFAIL, logged), anything logged at
    // its start has been read.
    let bal = Balancer::start(dir.path(), &["--udp-recv-buffer", "0"]);
    let answer = udp_ask(
        lo(98),
        bal.target(),
        "www.example.com.",
        RecordType::A,
        TWO_S,
    )
    .await;
    assert_eq!(answer.map(|m| rcode(&m)), Some(ResponseCode::ServFail));
    bal.proc.wait_for("no backends available", |_| true);
    assert_eq!(bal.proc.count("UDP receive buffer", |_| true), 0);
}
