//! Instant pickup: with the periodic scan set to an hour and the reconnect
//! back-off to half a minute, so that neither can be what finds them, a
//! backend that starts is connected at once, and a backend restarted after
//! `kill -9` serves its clients again within a second of its restart (the
//! socket directory is watched; docs/operations.md).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Fast timers, but no scan and a long back-off.
fn slow_finding() -> Vec<&'static str> {
    let mut args = FAST_TIMERS.to_vec();
    args.extend([
        "--scan-interval",
        "1h",
        "--reconnect-delay",
        "30s",
        "--reconnect-step",
        "1s",
        "--reconnect-max",
        "60s",
    ]);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_backend_is_connected_at_once() {
    let dir = sockdir();
    let _a = Backend::start(dir.path(), "5300");
    let bal = Balancer::start(dir.path(), &slow_finding());
    bal.wait_established(1);
    bal.proc.wait_for("watching socket directory", |_| true);
    let started = Instant::now();
    let b = Backend::start(dir.path(), "5301");
    bal.wait_established(2);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "found in {:?} (the scan is an hour away)",
        started.elapsed()
    );
    let path = b.path.display().to_string();
    bal.proc.wait_for("backend socket established", |r| {
        r["be_path"] == path.as_str()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_backend_serves_its_clients_again_within_a_second() {
    let dir = sockdir();
    let mut a = Backend::start(dir.path(), "5300");
    let _b = Backend::start(dir.path(), "5301");
    let bal = Balancer::start(dir.path(), &slow_finding());
    bal.wait_established(2);
    bal.proc.wait_for("watching socket directory", |_| true);
    let to = bal.target();
    let mut client = None;
    for n in 200..250u8 {
        if whoami(lo(n), to).await.as_deref() == Some("5300") {
            client = Some(lo(n));
            break;
        }
    }
    let client = client.expect("a client of 5300's");
    a.proc.kill9();
    // Its clients fail over; its socket file stays behind, refusing.
    whoami_until(client, to, "failed over", |name| name == "5301").await;
    let restarted = Instant::now();
    let _a = Backend::start(dir.path(), "5300");
    let name = whoami_until(client, to, "back on 5300", |name| name == "5300").await;
    let took = restarted.elapsed();
    assert_eq!(name, "5300");
    assert!(
        took < Duration::from_secs(1),
        "back in {took:?}; the back-off alone would wait 30 s"
    );
    bal.proc
        .wait_for("backend socket appeared (connecting now)", |_| true);
}
