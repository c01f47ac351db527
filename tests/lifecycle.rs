//! Signals: SIGTERM drains (open TCP sessions finish, within a grace
//! period) and exits 0, a second SIGTERM exits at once, SIGHUP rescans the
//! socket directory at once.

mod common;

use common::*;
use hickory_proto::rr::RecordType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_tcp_session_finish_then_exits_0() {
    let (_dir, _backends, mut bal) = three_backends(&["--drain-timeout", "20s"]);
    let mut s = tcp_connect(lo(60), bal.target()).await;
    tcp_send(&mut s, &query("a1.example.com.", RecordType::A, 1)).await;
    assert!(tcp_recv(&mut s).await.is_some());
    bal.proc.signal(libc::SIGTERM);
    bal.proc
        .wait_for("shutting down (draining)", |r| r["tcp_sessions"] == 1);
    // The session still works after the signal...
    tcp_send(&mut s, &query("a2.example.com.", RecordType::A, 2)).await;
    let m = tcp_recv(&mut s).await.expect("answer while draining");
    assert_eq!(m.metadata.id, 2);
    // ...and when it ends, the balancer exits cleanly.
    drop(s);
    assert_eq!(bal.proc.wait_exit(), Some(0));
    assert_eq!(bal.proc.count("drained: exiting", |_| true), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_ends_at_the_grace_period() {
    let (_dir, _backends, mut bal) = three_backends(&["--drain-timeout", "300ms"]);
    let _idle = tcp_connect(lo(61), bal.target()).await;
    bal.proc.wait_for("inbound TCP connection", |_| true);
    bal.proc.signal(libc::SIGTERM);
    assert_eq!(bal.proc.wait_exit(), Some(0));
    assert_eq!(
        bal.proc.count("drain grace period over: exiting", |_| true),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_exits_at_once() {
    let (_dir, _backends, mut bal) = three_backends(&["--drain-timeout", "60s"]);
    let _idle = tcp_connect(lo(62), bal.target()).await;
    bal.proc.wait_for("inbound TCP connection", |_| true);
    bal.proc.signal(libc::SIGTERM);
    bal.proc.wait_for("shutting down (draining)", |_| true);
    bal.proc.signal(libc::SIGTERM);
    assert_eq!(bal.proc.wait_exit(), Some(0));
    assert_eq!(bal.proc.count("second signal: exiting now", |_| true), 1);
}

#[tokio::test]
async fn sighup_picks_up_a_new_backend_at_once() {
    let dir = sockdir();
    let bal = Balancer::start(dir.path(), &["--scan-interval", "1h"]);
    let _b = Backend::start(dir.path(), "5300");
    bal.proc.signal(libc::SIGHUP);
    bal.proc
        .wait_for("rescanning socket directory (SIGHUP)", |_| true);
    bal.wait_established(1);
    assert_eq!(whoami(lo(63), bal.target()).await.as_deref(), Some("5300"));
}
