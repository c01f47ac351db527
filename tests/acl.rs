//! Access control through the real binary: a refused client gets REFUSED
//! over UDP (or nothing with `--acl-action drop`), its TCP connection is
//! closed at accept, nothing of it reaches a backend; everyone else is
//! served.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use tokio::io::AsyncReadExt;

#[tokio::test]
async fn refused_clients_get_refused_over_udp_and_closed_over_tcp() {
    let dir = sockdir();
    let _backend = Backend::start(dir.path(), "5300");
    let bal = Balancer::start(
        dir.path(),
        &["--allow", "127.0.0.0/24", "--deny", "127.0.0.66"],
    );
    bal.wait_established(1);
    let to = bal.target();
    let ok = udp_ask(lo(21), to, "www.example.com", RecordType::A, DEADLINE).await;
    assert_eq!(ok.map(|m| rcode(&m)), Some(ResponseCode::NoError));
    let denied = udp_ask(lo(66), to, "www.example.com", RecordType::A, DEADLINE).await;
    assert_eq!(
        denied.map(|m| rcode(&m)),
        Some(ResponseCode::Refused),
        "denied"
    );
    let outside = std::net::IpAddr::from([127, 0, 1, 5]);
    let not_allowed = udp_ask(outside, to, "www.example.com", RecordType::A, DEADLINE).await;
    assert_eq!(
        not_allowed.map(|m| rcode(&m)),
        Some(ResponseCode::Refused),
        "not allowed"
    );

    // TCP: closed at accept, before any byte.
    let mut s = tcp_connect(lo(66), to).await;
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(DEADLINE, s.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    let ok = tcp_ask(lo(21), to, "www.example.com", RecordType::A).await;
    assert_eq!(ok.map(|m| rcode(&m)), Some(ResponseCode::NoError));

    // Nothing of the refused reached the backend, and no remote was made.
    bal.proc.signal(libc::SIGUSR1);
    let rec = bal.proc.wait_for("counters", |_| true);
    assert_eq!(rec["dropped_acl"], 2, "{rec}");
    assert_eq!(rec["acl_answers"], 2, "{rec}");
    assert_eq!(rec["tcp_dropped_acl"], 1, "{rec}");
    assert_eq!(rec["remotes"], 1, "only the allowed client: {rec}");
}

#[tokio::test]
async fn acl_action_drop_answers_nothing() {
    let dir = sockdir();
    let _backend = Backend::start(dir.path(), "5300");
    let bal = Balancer::start(
        dir.path(),
        &["--deny", "127.0.0.66/32", "--acl-action", "drop"],
    );
    bal.wait_established(1);
    let to = bal.target();
    let ok = udp_ask(lo(21), to, "www.example.com", RecordType::A, DEADLINE).await;
    assert!(ok.is_some());
    let wait = Duration::from_millis(500);
    let denied = udp_ask(lo(66), to, "www.example.com", RecordType::A, wait).await;
    assert!(denied.is_none(), "dropped silently");
}
