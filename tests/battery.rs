//! The transparency battery for the demo backend: edge-case messages sent
//! to it directly (INBOUND_UDP frames on a control session of our own, and
//! a TCP session of our own) and through the balancer (UDP and TCP,
//! pipelined and a byte at a time); every answer must be the same bytes.
//! What only the balancer can say is asserted apart: a query over 1500
//! bytes cannot go to a backend in a frame, so over UDP it gets TC=1 from
//! the balancer, and over TCP the backend's own answer.  The messages are
//! in `common/battery.rs`; node-mname's run is in `interop.rs`.

mod common;

use std::time::Duration;

use common::battery::*;
use common::*;
use hickory_proto::op::Message;
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_edge_case_gets_the_backends_own_answer_through_the_balancer() {
    let dir = sockdir();
    let be = Backend::start(dir.path(), "5300");
    let bal = Balancer::start(dir.path(), &[]);
    bal.wait_established(1);
    let to = bal.target();
    let msgs = battery();

    // UDP: the backend in a frame, and through the balancer.
    let direct = direct_udp(&be.path, &msgs);
    let sock = UdpSocket::bind("127.0.0.77:0").await.unwrap();
    let mut buf = vec![0u8; 65535];
    for ((what, m), want) in msgs.iter().zip(&direct) {
        let got = udp_exchange(&sock, to, m, Duration::from_secs(2)).await;
        assert_eq!(&got, want, "UDP, {what}");
        assert!(got.is_some(), "UDP, {what}: answered");
    }

    // TCP: pipelined in one write, then a byte at a time.
    let want = answers_by_id(&direct_tcp(&be.path, &msgs));
    assert_eq!(want.len(), msgs.len(), "the backend answers each over TCP");
    for byte_at_a_time in [false, true] {
        let mut c = tcp_connect(lo(78), to).await;
        let bytes = framed_all(&msgs);
        if byte_at_a_time {
            for b in &bytes {
                c.write_all(std::slice::from_ref(b)).await.unwrap();
            }
        } else {
            c.write_all(&bytes).await.unwrap();
        }
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..msgs.len() {
            let m = without_server_cookie(tcp_recv_raw(&mut c).await.expect("an answer"));
            got.insert(u16::from_be_bytes([m[0], m[1]]), m);
        }
        assert_eq!(got, want, "TCP, byte at a time: {byte_at_a_time}");
    }

    // Over 1500 bytes: TC=1 from the balancer over UDP; over TCP, the
    // backend's own answer.
    let big = padded(30, 4000);
    sock.send_to(&big, to).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let tc = Message::from_vec(&buf[..n]).unwrap();
    assert!(tc.metadata.truncation && tc.metadata.id == 30);
    let want = answers_by_id(&direct_tcp(&be.path, &[("4000 bytes", big.clone())]));
    let mut c = tcp_connect(lo(79), to).await;
    tcp_send(&mut c, &big).await;
    let got = tcp_recv_raw(&mut c).await.expect("answered over TCP");
    assert_eq!(Some(&got), want.get(&30));
}
