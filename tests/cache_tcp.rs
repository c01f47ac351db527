//! What TCP sessions teach the packet cache, through the real binary: the
//! answers a backend gives over TCP serve UDP clients when they fit, and an
//! answer the cache already holds fresh is not learned again.

mod common;

use common::cached::*;
use common::*;
use hickory_proto::rr::RecordType;

#[tokio::test]
async fn answers_learned_over_tcp_serve_udp_clients_when_they_fit() {
    let c = Cached::start(&[], &["--cache-size", "100"]).await;
    let mid = |id, edns| q("mid.example.com.", RecordType::TXT, id, true, false, edns);
    // Three queries pipelined on one TCP connection: an A record, and the
    // ~1,250-byte TXT without EDNS and with a 1,400-byte buffer.
    let mut tcp = tcp_connect(lo(42), c.bal.target()).await;
    for query in [
        a("www.example.com.", 7),
        mid(8, None),
        mid(9, Some((1400, false))),
    ] {
        tcp_send(&mut tcp, &query).await;
    }
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let answer = tcp_recv_raw(&mut tcp).await.expect("TCP answer");
        assert!(!parse(&answer).metadata.truncation);
        sizes.push(answer.len());
    }
    assert!(sizes.iter().any(|&n| n > 1250), "{sizes:?}");
    poll("three answers learned over TCP", async || {
        (c.counter("cache_stored_tcp") == 3).then_some(())
    })
    .await;
    assert_eq!(c.counter("cache_stored"), 3);
    assert_eq!(c.backend_queries(), 0, "no UDP query reached the backend");

    // A UDP client asking the same: answered from what TCP learned.
    let hit = c.ask(&a("www.example.com.", 0x99)).await.expect("answer");
    assert_eq!(&hit[..2], &[0, 0x99]);
    assert_eq!(parse(&hit).answers.len(), 1);
    let big = c.ask(&mid(10, Some((1400, false)))).await.expect("answer");
    assert!(big.len() > 1250 && !parse(&big).metadata.truncation);
    assert_eq!(c.counter("cache_hits"), 2);
    assert_eq!(c.backend_queries(), 0, "both answered by the cache");

    // Without EDNS a UDP client takes 512 bytes: the TCP answer does not
    // fit, so the backend is asked, and truncates.
    let small = c.ask(&mid(11, None)).await.expect("answer");
    assert!(small.len() <= 512 && parse(&small).metadata.truncation);
    assert_eq!(c.backend_queries(), 1);
    assert_eq!(c.counter("cache_hits"), 2);
}

#[tokio::test]
async fn a_tcp_answer_the_cache_holds_fresh_is_not_learned_again() {
    let c = Cached::start(&[], &["--cache-size", "100"]).await;
    let mut tcp = tcp_connect(lo(43), c.bal.target()).await;
    for id in 0..3 {
        tcp_send(&mut tcp, &a("www.example.com.", id)).await;
        let answer = tcp_recv_raw(&mut tcp).await.expect("TCP answer");
        assert_eq!(&answer[..2], &id.to_be_bytes());
    }
    // A session hands its pairs over before its task yields, and the loop
    // learns what waits before it answers a stats request: all three
    // answers have been seen once the counters are read.
    assert_eq!(c.counter("cache_stored_tcp"), 1, "learned once, then fresh");
    assert_eq!(c.counter("cache_stored"), 1);
    assert_eq!(c.counter("cache_not_stored"), 0);
}
