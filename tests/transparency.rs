//! What a backend would answer, the balancer answers through it, against
//! the real binary: a UDP query too large for a frame gets TC=1 with its
//! question (as the client spelled it) and its EDNS OPT, and is answered
//! over TCP; a query whose question does not parse gets FORMERR with its
//! id, within the per-address budget of synthesized answers; responses and
//! scraps shorter than a header get nothing.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::stats::{Setup, balstat_json, u};
use common::*;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

/// A query for `name` with EDNS (4096, DO), padded to `size` bytes.
fn padded_query(name: &str, id: u16, size: usize) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let mut e = Edns::new();
    e.set_max_payload(4096).set_dnssec_ok(true);
    m.set_edns(e);
    let mut q = m.to_vec().unwrap();
    let pad = size - q.len() - 4;
    let rdlen_at = q.len() - 2;
    q[rdlen_at..].copy_from_slice(&((pad + 4) as u16).to_be_bytes());
    q.extend_from_slice(&[0, 12]);
    q.extend_from_slice(&(pad as u16).to_be_bytes());
    q.extend(std::iter::repeat_n(0u8, pad));
    q
}

/// Send `msg` from `sock`; every datagram that comes back within `wait`.
async fn exchange(sock: &UdpSocket, to: SocketAddr, msg: &[u8], wait: Duration) -> Vec<Vec<u8>> {
    sock.send_to(msg, to).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok(n)) = tokio::time::timeout(wait, sock.recv(&mut buf)).await {
        got.push(buf[..n].to_vec());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_query_gets_tc_and_is_answered_over_tcp() {
    let s = Setup::start(&[]);
    let to = s.bal.target();
    let q = padded_query("WwW.ExAmPlE.CoM.", 4711, 1800);
    let sock = UdpSocket::bind("127.0.0.90:0").await.unwrap();
    let got = exchange(&sock, to, &q, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 1, "one answer");
    let a = Message::from_vec(&got[0]).unwrap();
    assert_eq!(a.metadata.id, 4711);
    assert!(a.metadata.truncation, "TC=1");
    assert_eq!(a.metadata.response_code, ResponseCode::NoError);
    assert_eq!(a.queries[0].name().to_string(), "WwW.ExAmPlE.CoM.");
    let e = a.edns.expect("OPT echoed");
    assert_eq!(e.max_payload(), 4096);
    assert!(e.flags().dnssec_ok);

    // Over TCP the same query reaches a backend and is answered.
    let mut c = tcp_connect(lo(90), to).await;
    tcp_send(&mut c, &q).await;
    let m = tcp_recv(&mut c).await.expect("answered over TCP");
    assert_eq!(m.metadata.id, 4711);
    assert!(!m.answers.is_empty(), "a real answer: {m:?}");

    let doc = balstat_json(s.sock(), &[]);
    let c = &doc["counters"];
    assert_eq!(u(&c["dropped_oversized"]), 1);
    assert_eq!(u(&c["oversized_answers"]), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_that_does_not_parse_gets_formerr_and_scraps_get_nothing() {
    let s = Setup::start(&["--synth-rate", "3"]);
    let to = s.bal.target();
    let good = query("www.example.com.", RecordType::A, 100);
    let header = |id: u16, qd: u8| vec![(id >> 8) as u8, id as u8, 1, 0, 0, qd, 0, 0, 0, 0, 0, 0];
    let mut long_label = header(101, 1);
    long_label.push(64);
    long_label.extend([b'a'; 64]);
    long_label.extend([0, 0, 1, 0, 1]);
    let mut long_name = header(102, 1);
    for _ in 0..5 {
        long_name.push(60);
        long_name.extend([b'b'; 60]);
    }
    long_name.extend([0, 0, 1, 0, 1]);
    let cut = good[..good.len() - 3].to_vec();
    let mut two = good.clone();
    two[5] = 2;
    let cases: [(u16, Vec<u8>); 3] = [(101, long_label), (102, long_name), (100, cut)];
    for (i, (id, msg)) in cases.iter().enumerate() {
        let sock = UdpSocket::bind(SocketAddr::new(lo(91 + i as u8), 0))
            .await
            .unwrap();
        let got = exchange(&sock, to, msg, Duration::from_millis(500)).await;
        assert_eq!(got.len(), 1, "case {i}: one answer");
        let a = Message::from_vec(&got[0]).unwrap();
        assert_eq!(a.metadata.id, *id);
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr, "case {i}");
    }

    // Within the budget: --synth-rate 3 a second for one address.
    let sock = UdpSocket::bind("127.0.0.95:0").await.unwrap();
    for _ in 0..20 {
        sock.send_to(&two, to).await.unwrap();
    }
    let mut answers = 0;
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
    {
        answers += 1;
    }
    assert!(
        (1..=6).contains(&answers),
        "20 bad queries at once, {answers} FORMERRs"
    );

    // A response and a scrap: nothing.
    let mut response = good.clone();
    response[2] |= 0x80;
    let sock = UdpSocket::bind("127.0.0.96:0").await.unwrap();
    for msg in [response.as_slice(), &good[..7]] {
        let got = exchange(&sock, to, msg, Duration::from_millis(300)).await;
        assert!(got.is_empty(), "no answer to {msg:?}");
    }
    let doc = balstat_json(s.sock(), &[]);
    let c = &doc["counters"];
    assert_eq!(u(&c["dropped_malformed"]), 23);
    assert!(u(&c["formerr_answers"]) >= 4);
    assert_eq!(u(&doc["remotes_tracked"]), 0, "no state for any of them");
}
