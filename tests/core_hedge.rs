//! Hedged queries, decided by the core on an invented clock: a query its
//! backend holds back goes to the client's failover backend at the hedge
//! delay, once; the first answer is the client's and the other is dropped
//! and counted; the budget caps hedges under overload; `--hedge-after 0`
//! turns it off; a short pause hedges its queries and faults nothing.

mod scenario;

use mname_balancer_protocol::frame_type::INBOUND_UDP;
use scenario::{Scenario, ms};

/// Two backends up; returns the scenario, the backend the client
/// 10.0.0.1 is pinned to and the other one, with their link generations.
fn two_backends(flags: &[&str]) -> (Scenario, (u32, u64), (u32, u64)) {
    let mut s = Scenario::new(flags);
    s.list(&["5300", "5301"]);
    let g0 = s.connect_ok(5300, false);
    let g1 = s.connect_ok(5301, false);
    s.query("10.0.0.1:1000", 1);
    let primary = s.first_primary();
    s.answer(
        primary,
        if primary == 5300 { g0 } else { g1 },
        "10.0.0.1:1000",
        1,
    );
    s.io.frames_to(5300);
    s.io.frames_to(5301);
    s.io.answers.clear();
    let (a, b) = if primary == 5300 {
        ((5300, g0), (5301, g1))
    } else {
        ((5301, g1), (5300, g0))
    };
    (s, a, b)
}

#[test]
fn a_held_query_is_answered_by_the_failover_backend_at_the_hedge_delay_once() {
    let (mut s, (a, ga), (b, gb)) = two_backends(&["--hedge-after", "100ms"]);
    assert_eq!(s.core.hedge_delay(a), ms(100));
    s.query("10.0.0.1:1000", 7);
    assert_eq!(s.io.frames_to(a), [INBOUND_UDP]);
    let asked = s.now;
    s.advance(ms(99));
    assert!(s.io.frames_to(b).is_empty(), "not before the delay");
    let at = s.core.poll_timeout().expect("the hedge timer");
    s.advance_to(at);
    assert_eq!(s.now - asked, ms(100), "hedged at the delay");
    assert_eq!(
        s.io.frames_to(b),
        [INBOUND_UDP],
        "sent to the other backend"
    );
    assert!(s.io.frames_to(a).is_empty(), "not sent again to the first");
    s.advance(ms(1));
    s.answer(b, gb, "10.0.0.1:1000", 7);
    assert_eq!(
        s.io.answers.len(),
        1,
        "the hedge's answer reaches the client"
    );
    // The held answer comes at last: recognised, not sent, not blamed.
    s.advance(ms(400));
    s.answer(a, ga, "10.0.0.1:1000", 7);
    assert_eq!(s.io.answers.len(), 1, "exactly one answer");
    let c = s.core.counters();
    assert_eq!((c.hedged, c.hedge_wins, c.hedge_losers), (1, 1, 1));
    assert_eq!((c.unsolicited_answers, c.late_answers), (0, 0));
    let be = |id| s.core.backends().get(id).expect("backend").stats;
    assert_eq!((be(a).hedged, be(b).hedged), (1, 0));
    assert_eq!(be(b).udp, 1, "the hedge is work given to the other backend");
    assert_eq!(s.faults(a), 0);
}

#[test]
fn when_the_first_backend_answers_first_the_hedge_answer_is_dropped() {
    let (mut s, (a, ga), (b, gb)) = two_backends(&["--hedge-after", "50ms"]);
    s.query("10.0.0.1:1000", 9);
    s.advance(ms(50));
    assert_eq!(s.io.frames_to(b), [INBOUND_UDP]);
    s.answer(a, ga, "10.0.0.1:1000", 9);
    s.answer(b, gb, "10.0.0.1:1000", 9);
    assert_eq!(s.io.answers.len(), 1);
    let c = s.core.counters();
    assert_eq!((c.hedged, c.hedge_wins, c.hedge_losers), (1, 0, 1));
}

#[test]
fn the_adaptive_delay_follows_each_backends_latency_above_a_floor() {
    let (mut s, (a, ga), _) = two_backends(&[]);
    // One answer in well under a millisecond: the floor.
    assert_eq!(s.core.hedge_delay(a), ms(50));
    // A backend that takes 200 ms steadily is late only well after that.
    for id in 100..140 {
        s.query("10.0.0.1:1000", id);
        s.advance(ms(200));
        s.answer(a, ga, "10.0.0.1:1000", id);
    }
    let d = s.core.hedge_delay(a);
    assert!(d >= ms(200) && d < ms(260), "{d:?}");
    assert_eq!(
        s.core.counters().hedged,
        1,
        "only the first slow query, before its answer was measured"
    );
}

#[test]
fn hedge_after_zero_never_hedges() {
    let (mut s, (a, _), (b, _)) =
        two_backends(&["--hedge-after", "0", "--unanswered-threshold", "10s"]);
    s.query("10.0.0.1:1000", 7);
    assert_eq!(s.io.frames_to(a), [INBOUND_UDP]);
    for _ in 0..20 {
        s.advance(ms(100));
    }
    assert!(s.io.frames_to(b).is_empty());
    assert_eq!(s.core.counters().hedged, 0);
    assert_eq!(s.core.counters().timeouts, 1, "met its deadline instead");
}

#[test]
fn the_budget_stops_hedging_under_overload() {
    // A backend that holds back everything (an overloaded one), 2,000
    // queries in a second: a tenth of them may be hedged, plus 10 a second
    // over the 10-second window.
    let (mut s, (a, _), (b, _)) = two_backends(&[
        "--hedge-after",
        "50ms",
        "--hedge-budget",
        "10",
        "--unanswered-threshold",
        "10s",
        "--query-timeout",
        "5s",
    ]);
    for i in 0..2000u16 {
        s.query(&format!("10.0.0.1:{}", 2000 + i / 100), i);
        if i % 100 == 99 {
            s.advance(ms(50));
        }
    }
    s.advance(ms(100));
    assert_eq!(s.io.frames_to(a).len(), 2000);
    let c = s.core.counters().clone();
    // Hedges while fewer than 10% of the 2,001 forwarded (two_backends()
    // asked one) plus 100: 301.
    assert_eq!(c.hedged, 301, "{c:?}");
    assert_eq!(c.hedged + c.hedge_budget_exhausted, 2000, "{c:?}");
    assert_eq!(s.io.frames_to(b).len() as u64, c.hedged);
}

#[test]
fn a_pause_shorter_than_the_passive_check_is_hedged_and_faults_nothing() {
    // The default delay (adaptive) and passive check (500 ms); the backend
    // stops for 300 ms while its client asks every 10 ms.
    let (mut s, (a, ga), (b, gb)) = two_backends(&[]);
    let mut held = Vec::new();
    for id in 0..30u16 {
        s.query("10.0.0.1:1000", id);
        held.push(id);
        s.advance(ms(10));
        // The other backend answers whatever was hedged to it at once.
        for _ in s.io.frames_to(b) {
            let oldest = s.core.counters().hedged as usize - 1;
            s.answer(b, gb, "10.0.0.1:1000", held[oldest]);
        }
    }
    let c = s.core.counters().clone();
    assert!(c.hedged >= 25, "every query older than 50 ms hedged: {c:?}");
    assert_eq!(c.hedge_wins, c.hedged);
    // The pause ends: the backend answers its backlog.
    for id in held {
        s.answer(a, ga, "10.0.0.1:1000", id);
    }
    let c = s.core.counters().clone();
    assert_eq!(s.io.answers.len(), 30, "one answer per query: {c:?}");
    assert_eq!(c.hedge_losers, c.hedged);
    assert_eq!(c.unsolicited_answers, 0);
    s.advance(ms(2000));
    assert_eq!(s.faults(a), 0, "not faulted");
    assert!(s.core.backends().get(a).is_some_and(|be| be.is_ok()));
}
