//! Scenarios of the core on an invented clock: what took seconds of real
//! time through the binary (hello timeout, duplicate hello, heartbeat
//! timeout, probe, back-off, removal, rebalance, expiry, drain) runs here
//! in microseconds, step by step, with every output recorded.  The binary
//! tests (tests/faults.rs, tests/resilience.rs, tests/lifecycle.rs) keep
//! one case per feature to prove the wiring.

mod scenario;

use std::io;
use std::time::Duration;

use mname_balancer::backends::LinkState;
use mname_balancer::core::{Phase, Signal};
use mname_balancer_protocol::{Frame, capability, frame_type};
use scenario::*;

#[test]
fn a_backend_that_never_says_hello_is_faulted_at_the_connect_timeout() {
    let mut s = Scenario::new(&["--connect-timeout", "2s"]);
    s.list(&["5300"]);
    s.advance(ms(0));
    let (_, generation) = s.io.connects[0];
    s.core.on_link_connected(s.now, 5300, generation, &mut s.io);
    s.advance(ms(1999));
    assert_eq!(s.state(5300), LinkState::AwaitingHello);
    s.advance(ms(1));
    assert_eq!(s.io.closes, [5300]);
    assert_eq!(s.state(5300), LinkState::ReconnectPending);
    assert_eq!(s.faults(5300), 1);
}

#[test]
fn a_second_hello_after_the_capabilities_exchange_faults_the_backend() {
    let mut s = Scenario::new(&[]);
    s.list(&["5300"]);
    let generation = s.connect_ok(5300, true);
    assert!(s.core.backends().get(5300).is_some_and(|b| b.is_ok()));
    assert_eq!(
        s.core.backends().get(5300).map(|b| b.caps()),
        Some(capability::IPV6)
    );
    s.send(5300, generation, Frame::ServerHello);
    assert_eq!(s.io.closes, [5300], "duplicate hello");
}

#[test]
fn frames_before_hello_and_unasked_heartbeat_replies_fault() {
    let mut s = Scenario::new(&[]);
    s.list(&["5300", "5301"]);
    s.advance(ms(0));
    let generation = s.io.connects[0].1;
    s.core.on_link_connected(s.now, 5300, generation, &mut s.io);
    s.send(5300, generation, Frame::ServerHeartbeat);
    assert_eq!(s.io.closes, [5300], "before hello");
    let generation = s.connect_ok(5301, false);
    s.send(5301, generation, Frame::ServerHeartbeat);
    assert_eq!(s.io.closes, [5300, 5301], "never asked");
}

#[test]
fn heartbeats_go_out_every_interval_and_a_missed_reply_faults() {
    let mut s = Scenario::new(&["--heartbeat-interval", "5s", "--heartbeat-timeout", "15s"]);
    s.list(&["5300"]);
    let generation = s.connect_ok(5300, false);
    s.advance(ms(4999));
    assert_eq!(s.io.frames_to(5300), [] as [u32; 0]);
    s.advance(ms(1));
    assert_eq!(s.io.frames_to(5300), [HEARTBEAT]);
    s.advance(ms(100));
    s.send(5300, generation, Frame::ServerHeartbeat);
    s.advance(ms(5000));
    assert_eq!(
        s.io.frames_to(5300),
        [HEARTBEAT],
        "the next, an interval after the reply"
    );
    s.advance(ms(14_999));
    assert!(s.io.closes.is_empty());
    s.advance(ms(1));
    assert_eq!(s.io.closes, [5300]);
}

#[test]
fn a_backend_owing_answers_is_probed_and_its_queries_replayed_elsewhere() {
    let mut s = Scenario::new(&[
        "--hedge-after",
        "0",
        "--unanswered-threshold",
        "500ms",
        "--probe-timeout",
        "500ms",
    ]);
    s.list(&["5300", "5301"]);
    s.connect_ok(5300, false);
    s.connect_ok(5301, false);
    s.query("10.0.0.1:1000", 7);
    let to = s.first_primary();
    let other = if to == 5300 { 5301 } else { 5300 };
    s.io.frames_to(to);
    // The passive check runs every half threshold: at 250 ms the backend
    // has owed an answer for too short a time, at 500 ms it is probed.
    let asked = s.now;
    let mut heartbeats = Vec::new();
    while heartbeats.is_empty() {
        let next = s.core.poll_timeout().expect("a timer");
        s.advance_to(next);
        heartbeats = s.io.frames_to(to);
    }
    assert_eq!(heartbeats, [HEARTBEAT]);
    assert_eq!(s.now - asked, ms(500), "probed at the threshold");
    s.advance(ms(499));
    assert!(s.io.closes.is_empty());
    s.advance(ms(1));
    assert_eq!(s.io.closes, [to], "no reply within the probe timeout");
    assert_eq!(
        s.core.backends().get(to).map(|b| b.stats.passive_faults),
        Some(1)
    );
    assert_eq!(
        s.io.frames_to(other),
        [frame_type::INBOUND_UDP],
        "replayed once"
    );
    assert_eq!(s.core.counters().replayed, 1);
}

#[test]
fn reconnects_follow_the_back_off_schedule() {
    let mut s = Scenario::new(&[
        "--reconnect-delay",
        "1s",
        "--reconnect-step",
        "2s",
        "--reconnect-max",
        "5s",
    ]);
    s.list(&["5300"]);
    let mut tries = Vec::new();
    let start = s.now;
    let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    for _ in 0..11 {
        let before = s.io.connects.len();
        while s.io.connects.len() == before {
            let next = s.core.poll_timeout().expect("a timer");
            s.advance_to(next);
        }
        tries.push((s.now - start).as_millis());
        let generation = s.io.connects[before].1;
        s.core
            .on_link_connect_failed(s.now, 5300, generation, &refused, &mut s.io);
    }
    // A new socket: quick tries 0, 25, 50, 100, 200, 400 ms apart (it may
    // not be listening yet), then 1, 3, 5, 5, 5 seconds apart.
    assert_eq!(
        tries,
        [0, 25, 75, 175, 375, 775, 1775, 4775, 9775, 14_775, 19_775]
    );
}

#[test]
fn a_socket_missing_twice_is_removed_until_a_listing_finds_it() {
    let mut s = Scenario::new(&["--reconnect-delay", "100ms"]);
    s.list(&["5300"]);
    let missing = io::Error::from(io::ErrorKind::NotFound);
    s.advance(ms(0));
    s.core
        .on_link_connect_failed(s.now, 5300, s.io.connects[0].1, &missing, &mut s.io);
    assert_eq!(
        s.state(5300),
        LinkState::ReconnectPending,
        "once: a restart, perhaps"
    );
    s.advance(ms(100));
    s.core
        .on_link_connect_failed(s.now, 5300, s.io.connects[1].1, &missing, &mut s.io);
    assert!(s.core.backends().get(5300).is_some_and(|b| b.removed));
    s.advance(Duration::from_secs(60));
    assert_eq!(s.io.connects.len(), 2, "no more tries");
    s.list(&["5300"]);
    s.advance(ms(0));
    assert_eq!(s.io.connects.len(), 3, "found again: at once");
}

#[test]
fn rebalancing_moves_remotes_off_the_busiest_backend() {
    let mut s = Scenario::new(&["--rebalance-interval", "15s"]);
    s.list(&["5300", "5301"]);
    s.connect_ok(5300, false);
    for i in 1..=10 {
        s.query(&format!("10.0.0.{i}:1000"), 1);
    }
    assert_eq!(s.core.backends().get(5300).map(|b| b.remotes), Some(10));
    s.connect_ok(5301, false);
    s.advance(Duration::from_secs(15));
    let left = s.core.backends().get(5300).map(|b| b.remotes).unwrap_or(0);
    assert!(left < 10, "some unassigned: {left}");
    for i in 1..=10 {
        s.query(&format!("10.0.0.{i}:1000"), 2);
    }
    let counts: Vec<u32> = [5300, 5301]
        .iter()
        .map(|&id| s.core.backends().get(id).map(|b| b.remotes).unwrap_or(0))
        .collect();
    assert_eq!(counts.iter().sum::<u32>(), 10);
    assert!(counts[1] > 0, "the new backend got remotes: {counts:?}");
}

#[test]
fn idle_remotes_expire_at_the_sweep_after_their_age() {
    let mut s = Scenario::new(&["--remote-expiry", "300s", "--expiry-sweep", "30s"]);
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    s.query("10.0.0.1:1000", 1);
    s.advance(Duration::from_secs(150));
    s.query("10.0.0.2:1000", 1);
    s.advance(Duration::from_secs(150));
    assert_eq!(s.core.remotes().len(), 2, "exactly 300 s old stays");
    s.advance(Duration::from_secs(30));
    assert_eq!(s.core.remotes().len(), 1);
    assert_eq!(s.core.backends().get(5300).map(|b| b.remotes), Some(1));
}

#[test]
fn draining_waits_for_answers_then_exits_and_a_second_signal_exits_at_once() {
    let mut s = Scenario::new(&["--drain-timeout", "5s"]);
    s.list(&["5300"]);
    let generation = s.connect_ok(5300, false);
    s.query("10.0.0.1:1000", 9);
    s.core.on_signal(s.now, Signal::Terminate, &mut s.io);
    assert_eq!(s.core.phase(), Phase::Draining);
    assert!(!s.core.wants_datagrams() && !s.core.wants_connections());
    s.answer(5300, generation, "10.0.0.1:1000", 9);
    assert_eq!(s.io.answers.len(), 1);
    assert_eq!(s.core.phase(), Phase::Exit, "nothing left: exit");

    let mut s = Scenario::new(&["--drain-timeout", "5s"]);
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    s.query("10.0.0.1:1000", 9);
    s.core.on_signal(s.now, Signal::Terminate, &mut s.io);
    s.core.on_signal(s.now, Signal::Terminate, &mut s.io);
    assert_eq!(s.core.phase(), Phase::Exit, "second signal");
}

#[test]
fn the_grace_period_ends_a_drain_that_does_not_finish() {
    let mut s = Scenario::new(&["--drain-timeout", "5s", "--query-timeout", "60s"]);
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    s.query("10.0.0.1:1000", 9);
    s.core.on_signal(s.now, Signal::Terminate, &mut s.io);
    s.advance(ms(4999));
    assert_eq!(s.core.phase(), Phase::Draining);
    s.advance(ms(1));
    assert_eq!(s.core.phase(), Phase::Exit);
}

#[test]
fn no_backend_gets_servfail_and_a_timeout_gets_servfail_too() {
    let mut s = Scenario::new(&["--query-timeout", "2s"]);
    s.query("10.0.0.1:1000", 1);
    assert_eq!(s.io.synthesized.len(), 1, "no backend: SERVFAIL");
    assert_eq!(s.io.synthesized[0].1[3] & 0x0f, 2);
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    s.query("10.0.0.1:1000", 2);
    s.advance(ms(1999));
    assert_eq!(s.io.synthesized.len(), 1);
    s.advance(ms(1));
    assert_eq!(s.io.synthesized.len(), 2, "timed out: SERVFAIL");
    assert_eq!(s.core.counters().timeouts, 1);
}
