//! The core's decisions about clients, on an invented clock: the access
//! list, the remote table's bound, the per-client query rate and its
//! slips, and the budget of per-client log records.

mod scenario;

use std::net::SocketAddr;
use std::time::Duration;

use mname_balancer::cli::{self, Command};
use mname_balancer::core::Core;
use mname_balancer_protocol::frame_type;
use scenario::*;
use tokio::time::Instant;

#[test]
fn clients_the_acl_refuses_get_refused_and_leave_no_state() {
    let mut s = Scenario::new(&[
        "--allow",
        "10.0.0.0/8",
        "--deny",
        "10.9.0.0/16",
        "--synth-rate",
        "2",
    ]);
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    for id in 0..3 {
        s.query("10.9.0.1:1000", id);
    }
    s.query("192.0.2.1:1000", 9);
    assert_eq!(s.core.counters().dropped_acl, 4);
    assert_eq!(
        s.io.synthesized.len(),
        3,
        "two a second for 10.9.0.1, one for 192.0.2.1"
    );
    assert!(
        s.io.synthesized.iter().all(|(_, m)| m[3] & 0x0f == 5),
        "REFUSED"
    );
    assert_eq!(s.core.remotes().len(), 0, "no remote for a refused client");
    assert!(
        s.io.frames_to(5300).is_empty(),
        "nothing reached the backend"
    );
    s.query("10.1.0.1:1000", 1);
    assert_eq!(s.io.frames_to(5300), [frame_type::INBOUND_UDP], "allowed");
    let peer: SocketAddr = "10.9.0.2:5000".parse().expect("address");
    assert_eq!(
        s.core.on_tcp_offered(s.now, peer, &NoSessions),
        mname_balancer::core::TcpVerdict::Refuse
    );
    assert_eq!(s.core.counters().tcp_dropped_acl, 1);

    let mut d = Scenario::new(&["--deny", "10.9.0.0/16", "--acl-action", "drop"]);
    d.query("10.9.0.1:1000", 1);
    assert!(d.io.synthesized.is_empty(), "--acl-action drop: silence");
    assert_eq!(d.core.counters().dropped_acl, 1);
}

#[test]
fn a_query_no_backend_can_take_is_a_drop_on_its_remote_whatever_it_is_answered() {
    for mode in ["drop", "servfail", "refused"] {
        let mut s = Scenario::new(&["--no-backend", mode]);
        // A backend known but not connected: the client gets a remote,
        // and no backend can take its query.
        s.list(&["5300"]);
        s.query("10.0.0.1:1000", 1);
        let ip = "10.0.0.1".parse().expect("address");
        let remote = s.core.remotes().get(&ip).expect("the client is tracked");
        assert_eq!(remote.stats.udp_drop, 1, "--no-backend {mode}");
        assert_eq!(remote.stats.udp, 0, "--no-backend {mode}");
        assert_eq!(s.core.counters().dropped_no_backend, 1);
        let answered = usize::from(mode != "drop");
        assert_eq!(s.io.synthesized.len(), answered, "--no-backend {mode}");
    }
}

#[test]
fn past_max_remotes_new_clients_are_served_by_hash_and_old_ones_keep_their_backend() {
    let mut s = Scenario::new(&["--max-remotes", "2"]);
    s.list(&["5300", "5301", "5302"]);
    for id in [5300, 5301, 5302] {
        s.connect_ok(id, false);
    }
    s.query("10.0.0.1:1000", 1);
    s.query("10.0.0.2:1000", 1);
    let pinned: Vec<(std::net::IpAddr, u32)> = s
        .core
        .remotes()
        .iter()
        .map(|(ip, r)| (ip, r.primary))
        .collect();
    assert_eq!(pinned.len(), 2);
    for n in 3..=50 {
        s.query(&format!("10.0.0.{n}:1000"), 1);
    }
    assert_eq!(s.core.remotes().len(), 2, "the table stays at its bound");
    assert_eq!(s.core.counters().untracked_queries, 48);
    assert_eq!(s.core.counters().udp_forwarded, 50, "every one forwarded");
    let used: std::collections::HashSet<u32> = [5300, 5301, 5302]
        .into_iter()
        .filter(|id| !s.io.frames_to(*id).is_empty())
        .collect();
    assert_eq!(used.len(), 3, "untracked clients spread over the backends");
    // The same untracked client keeps its backend while the set is stable.
    let mut chosen = Vec::new();
    for id in 2..5 {
        s.query("10.0.0.9:1000", id);
        let to: Vec<u32> = [5300, 5301, 5302]
            .into_iter()
            .filter(|b| !s.io.frames_to(*b).is_empty())
            .collect();
        chosen.push(to);
    }
    assert!(
        chosen.windows(2).all(|w| w[0] == w[1] && w[0].len() == 1),
        "{chosen:?}"
    );
    // The tracked clients keep theirs.
    for (ip, primary) in pinned {
        s.query(&format!("{ip}:1000"), 7);
        assert_eq!(s.core.remotes().get(&ip).map(|r| r.primary), Some(primary));
    }
}

/// The messages a core logs, recorded.
#[derive(Clone, Default)]
struct Count(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl slog::Drain for Count {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if let Ok(mut v) = self.0.lock() {
            v.push(r.msg().to_string());
        }
        Ok(())
    }
}

/// A started scenario with default flags whose log is recorded.
fn logged_scenario() -> (Scenario, Count) {
    let count = Count::default();
    let Ok(Command::Run(cfg)) = cli::parse(&["-s".into(), "/s".into()], None) else {
        panic!("flags");
    };
    let now = Instant::now();
    let mut s = Scenario {
        core: Core::new(*cfg, slog::Logger::root(count.clone(), slog::o!()), now),
        io: Recorder::default(),
        now,
    };
    s.core.start(now, &mut s.io);
    (s, count)
}

#[test]
fn an_ipv6_client_with_only_ipv4_backends_up_is_told_apart_from_an_outage() {
    let (mut s, count) = logged_scenario();
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    s.query("[fd00::1]:1000", 1);
    s.query("[fd00::2]:1000", 2);
    let msgs = count.0.lock().map(|v| v.clone()).unwrap_or_default();
    let said: Vec<&String> = msgs.iter().filter(|m| m.contains("IPv6")).collect();
    assert_eq!(
        said,
        ["no backend speaks the IPv6 extension (IPv6 client not served)"],
        "said once (rate-limited)"
    );
    assert!(
        !msgs.iter().any(|m| m == "no backends available"),
        "{msgs:?}"
    );
}

#[test]
fn per_client_log_records_are_rate_limited_with_a_summary() {
    let (mut s, count) = logged_scenario();
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    for n in 0..1000u32 {
        s.query(&format!("10.{}.{}.1:1000", n / 250, n % 250), 1);
    }
    let msgs = count.0.lock().map(|v| v.clone()).unwrap_or_default();
    let per_client = msgs
        .iter()
        .filter(|m| *m == "new remote peer" || m.starts_with("remote assigned to"))
        .count();
    assert_eq!(per_client, 100, "a second's budget, of 2,000 records");
    // The next scan says how many were left out.
    s.advance(Duration::from_secs(5));
    let msgs = count.0.lock().map(|v| v.clone()).unwrap_or_default();
    assert!(
        msgs.iter()
            .any(|m| m == "per-client log records suppressed"),
        "{msgs:?}"
    );
}

#[test]
fn queries_past_the_client_rate_are_dropped_and_every_second_one_slips() {
    let mut s = Scenario::new(&["--max-qps-per-client", "3", "--rate-limit-slip", "2"]);
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    for id in 0..10 {
        s.query("10.0.0.1:1000", id);
    }
    assert_eq!(s.core.counters().udp_forwarded, 3);
    assert_eq!(s.core.counters().dropped_rate_limited, 7);
    assert_eq!(
        s.core.counters().slip_answers,
        3,
        "the 2nd, 4th and 6th past the rate"
    );
    assert!(
        s.io.synthesized.iter().all(|(_, m)| m[2] & 0x02 != 0),
        "TC=1"
    );
    s.query("10.0.0.2:1000", 1);
    assert_eq!(
        s.core.counters().udp_forwarded,
        4,
        "another client is not limited"
    );
    s.advance(Duration::from_secs(1));
    s.query("10.0.0.1:1000", 11);
    assert_eq!(
        s.core.counters().udp_forwarded,
        5,
        "a new second, a new budget"
    );
    let rem = s
        .core
        .remotes()
        .get(&"10.0.0.1".parse().expect("ip"))
        .map(|r| r.stats.udp_drop);
    assert_eq!(rem, Some(7), "counted on the remote");
}

#[test]
fn a_resend_of_a_query_in_flight_is_answered_once_and_blames_no_backend() {
    let mut s = Scenario::new(&[]);
    s.list(&["5300"]);
    let generation = s.connect_ok(5300, false);
    s.io.frames_to(5300);
    s.query("10.0.0.1:1000", 9);
    s.advance(ms(300));
    s.query("10.0.0.1:1000", 9);
    assert_eq!(
        s.io.frames_to(5300),
        [frame_type::INBOUND_UDP],
        "sent to the backend once"
    );
    assert_eq!(s.core.counters().dropped_resend, 1);
    s.answer(5300, generation, "10.0.0.1:1000", 9);
    assert_eq!(s.io.answers.len(), 1, "one answer");
    assert_eq!(s.core.counters().unsolicited_answers, 0);
    // Once answered, the same id again is a new query.
    s.query("10.0.0.1:1000", 9);
    assert_eq!(s.io.frames_to(5300), [frame_type::INBOUND_UDP]);
}

#[test]
fn when_a_burst_of_clients_has_expired_memory_goes_back_to_the_system() {
    let mut s = Scenario::new(&["--remote-expiry", "10s", "--expiry-sweep", "1s"]);
    s.list(&["5300"]);
    s.connect_ok(5300, false);
    for n in 0..300u32 {
        s.query(&format!("10.1.{}.{}:1000", n / 250, n % 250 + 1), 1);
    }
    s.advance(Duration::from_secs(2));
    assert_eq!(s.io.releases, 0, "the burst's clients are still here");
    s.query("10.9.9.9:1000", 1);
    s.advance(Duration::from_secs(10));
    assert_eq!(s.core.remotes().len(), 1, "the burst expired, one stays");
    assert_eq!(
        s.io.releases, 1,
        "a quarter or less of the peak: released once"
    );
    s.advance(Duration::from_secs(30));
    assert_eq!(s.io.releases, 1, "not again for the last one");
}
