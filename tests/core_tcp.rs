//! TCP admission decisions of the core, on an invented clock: the
//! per-client cap, eviction of the longest idle session at
//! `--max-tcp-sessions` (never one being answered), and every close
//! counted by its reason.

mod scenario;

use std::net::SocketAddr;

use mname_balancer::core::intake::Refusal;
use mname_balancer::core::{ConnActivity, SessionEnd, SessionId, TcpClose, TcpVerdict};
use scenario::*;

fn peer(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

fn admit(s: &mut Scenario, from: &str, activity: &Activity) -> (SessionId, Option<SessionId>) {
    match s.core.on_tcp_offered(s.now, peer(from), activity) {
        TcpVerdict::Admit { plan, evict } => (plan.session, evict),
        TcpVerdict::Refuse => panic!("{from} refused"),
    }
}

fn ready(flags: &[&str]) -> Scenario {
    let mut s = Scenario::new(flags);
    s.list(&["a"]);
    s.connect_ok(1, false);
    s
}

#[test]
fn one_client_holds_at_most_max_tcp_per_client() {
    let mut s = ready(&["--max-tcp-per-client", "2"]);
    let none = Activity::default();
    admit(&mut s, "10.0.0.1:1000", &none);
    admit(&mut s, "10.0.0.1:1001", &none);
    assert_eq!(
        s.core.on_tcp_offered(s.now, peer("10.0.0.1:1002"), &none),
        TcpVerdict::Refuse
    );
    assert_eq!(s.core.counters().tcp_dropped_per_client, 1);
    // IPv4-mapped is the same host.
    assert_eq!(
        s.core
            .on_tcp_offered(s.now, peer("[::ffff:10.0.0.1]:1003"), &none),
        TcpVerdict::Refuse
    );
    admit(&mut s, "10.0.0.2:1000", &none);
    assert_eq!(s.core.tcp_sessions_open(), 3);
}

#[test]
fn at_the_limit_the_longest_idle_session_is_evicted_and_busy_ones_never() {
    let mut s = ready(&["--max-tcp-sessions", "3"]);
    let mut activity = Activity::default();
    let (a, _) = admit(&mut s, "10.0.0.1:1", &activity);
    let (b, _) = admit(&mut s, "10.0.0.2:1", &activity);
    let (c, _) = admit(&mut s, "10.0.0.3:1", &activity);
    let t = s.now;
    activity.busy(a, t); // being answered, since long ago
    activity.idle(b, t + ms(20));
    activity.idle(c, t + ms(10)); // idle the longest
    s.advance(ms(100));
    let (d, evicted) = admit(&mut s, "10.0.0.4:1", &activity);
    assert_eq!(evicted, Some(c), "the longest idle goes");
    assert_eq!(s.core.counters().tcp_evicted, 1);
    assert_eq!(s.core.tcp_sessions_open(), 3);

    // Its late report changes nothing: it was already forgotten.
    s.core
        .on_session_ended(s.now, c, 1, SessionEnd::Closed(TcpClose::Error), &mut s.io);
    assert_eq!(s.core.tcp_sessions_open(), 3);
    assert_eq!(s.core.counters().tcp_closed_error, 0);

    // All busy: the new one is refused, nobody is cut.
    activity.busy(b, s.now);
    activity.busy(d, s.now);
    assert_eq!(
        s.core.on_tcp_offered(s.now, peer("10.0.0.5:1"), &activity),
        TcpVerdict::Refuse
    );
    assert_eq!(s.core.counters().tcp_dropped_session_limit, 1);
    assert_eq!(s.core.counters().tcp_evicted, 1);
}

#[test]
fn every_close_is_counted_by_its_reason() {
    let mut s = ready(&[]);
    let none = Activity::default();
    let ends = [
        SessionEnd::Closed(TcpClose::Finished),
        SessionEnd::Closed(TcpClose::Idle),
        SessionEnd::Closed(TcpClose::ReadTimeout),
        SessionEnd::Closed(TcpClose::Unanswered),
        SessionEnd::Closed(TcpClose::BadMessage(Refusal::Short)),
        SessionEnd::Closed(TcpClose::BadMessage(Refusal::Response)),
        SessionEnd::Closed(TcpClose::BadMessage(Refusal::BadQuestion)),
        SessionEnd::Closed(TcpClose::Empty),
        SessionEnd::Closed(TcpClose::Error),
        SessionEnd::ConnectFailed { gone: false },
    ];
    for (i, end) in ends.iter().enumerate() {
        let (id, _) = admit(&mut s, &format!("10.0.1.{}:1", i + 1), &none);
        s.core.on_session_ended(s.now, id, 1, *end, &mut s.io);
    }
    let c = s.core.counters();
    assert_eq!(
        (
            c.tcp_closed_finished,
            c.tcp_closed_idle,
            c.tcp_closed_read_timeout,
            c.tcp_closed_unanswered
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(
        (
            c.tcp_closed_short,
            c.tcp_closed_response,
            c.tcp_closed_malformed,
            c.tcp_closed_empty
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((c.tcp_closed_error, c.tcp_closed_backend), (1, 1));
    assert_eq!(c.tcp_accepted, c.tcp_dropped() + c.tcp_closed());
    assert_eq!(s.core.tcp_sessions_open(), 0);
}

#[test]
fn the_sweep_closes_idle_slow_and_unanswered_sessions_and_no_others() {
    let mut s = ready(&["--tcp-idle-timeout", "1s", "--tcp-read-timeout", "400ms"]);
    let mut activity = Activity::default();
    assert_eq!(s.core.tcp_sweep_at(), None, "no sessions, no sweep");
    let t0 = s.now;
    let (idle, _) = admit(&mut s, "10.0.0.1:1", &activity);
    let (slow, _) = admit(&mut s, "10.0.0.2:1", &activity);
    let (waiting, _) = admit(&mut s, "10.0.0.3:1", &activity);
    let (fresh, _) = admit(&mut s, "10.0.0.4:1", &activity);
    // The sweep runs every eighth of the shorter timeout: 50 ms.
    assert_eq!(s.core.tcp_sweep_at(), Some(t0 + ms(50)));
    activity.idle(idle, t0);
    activity.0.insert(
        slow,
        ConnActivity {
            last_activity: t0 + ms(300),
            partial_since: Some(t0),
            answering_since: None,
            synthesized: 0,
        },
    );
    activity.busy(waiting, t0);
    activity.idle(fresh, t0 + ms(900));
    let mut closed = Vec::new();
    s.advance(ms(399));
    s.core
        .sweep_tcp_sessions(s.now, &activity, &mut closed, &mut s.io);
    assert!(closed.is_empty(), "nothing due yet: {closed:?}");
    let next = s.core.tcp_sweep_at().expect("sessions open");
    assert_eq!(next, s.now + ms(50));
    s.advance_to(next);
    s.core
        .sweep_tcp_sessions(s.now, &activity, &mut closed, &mut s.io);
    assert_eq!(
        closed,
        [slow],
        "the half-sent message, a sweep past its timeout"
    );
    s.advance(ms(600));
    closed.clear();
    s.core
        .sweep_tcp_sessions(s.now, &activity, &mut closed, &mut s.io);
    closed.sort_by_key(|id| id.conn_id);
    assert_eq!(closed, [idle, waiting]);
    let c = s.core.counters();
    assert_eq!(
        (
            c.tcp_closed_read_timeout,
            c.tcp_closed_idle,
            c.tcp_closed_unanswered
        ),
        (1, 1, 1)
    );
    assert_eq!(s.core.tcp_sessions_open(), 1, "the fresh one stays");
    // Its own late report changes nothing.
    s.core.on_session_ended(
        s.now,
        idle,
        1,
        SessionEnd::Closed(TcpClose::Error),
        &mut s.io,
    );
    assert_eq!(s.core.counters().tcp_closed_error, 0);
}

#[test]
fn a_session_that_finds_the_socket_file_gone_faults_its_backend() {
    let mut s = ready(&[]);
    let none = Activity::default();
    let (id, _) = admit(&mut s, "10.0.0.1:1", &none);
    // A refused connect (a full backlog, say) is not a fault.
    s.core.on_session_ended(
        s.now,
        id,
        1,
        SessionEnd::ConnectFailed { gone: false },
        &mut s.io,
    );
    assert_eq!(s.faults(1), 0);
    let (id, _) = admit(&mut s, "10.0.0.1:2", &none);
    s.core.on_session_ended(
        s.now,
        id,
        1,
        SessionEnd::ConnectFailed { gone: true },
        &mut s.io,
    );
    assert_eq!(s.faults(1), 1, "no file at its path: faulted");
    assert!(!s.core.backends().get(1).expect("backend").is_ok());
}
