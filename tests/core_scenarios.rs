//! Scenarios of the core on an invented clock: what took seconds of real
//! time through the binary (hello timeout, duplicate hello, heartbeat
//! timeout, probe, back-off, removal, rebalance, expiry, drain) runs here
//! in microseconds, step by step, with every output recorded.  The binary
//! tests (tests/faults.rs, tests/resilience.rs, tests/lifecycle.rs) keep
//! one case per feature to prove the wiring.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mname_balancer::backends::LinkState;
use mname_balancer::cli::{self, Command};
use mname_balancer::core::{Core, Datagram, Io, Phase, QueueFull, Signal};
use mname_balancer_protocol::{Frame, FrameBuffer, UDP6_HEADER_LEN, capability, frame_type};
use tokio::time::Instant;

/// Every output of the core, recorded.
#[derive(Default)]
struct Recorder {
    /// Bytes queued per backend, control frames included.
    queued: std::collections::HashMap<u32, Vec<u8>>,
    answers: Vec<(SocketAddr, Vec<u8>)>,
    synthesized: Vec<(SocketAddr, Vec<u8>)>,
    connects: Vec<(u32, u64)>,
    closes: Vec<u32>,
    scans: usize,
}

impl Io for Recorder {
    fn send_frame(&mut self, backend: u32, pieces: &[&[u8]]) -> Result<(), QueueFull> {
        let q = self.queued.entry(backend).or_default();
        for p in pieces {
            q.extend_from_slice(p);
        }
        Ok(())
    }
    fn send_control(&mut self, backend: u32, frame: &[u8]) {
        self.queued
            .entry(backend)
            .or_default()
            .extend_from_slice(frame);
    }
    fn queue_answer(&mut self, _: usize, dest: SocketAddr, payload: &[u8]) {
        self.answers.push((dest, payload.to_vec()));
    }
    fn send_synthesized(&mut self, _: usize, dest: SocketAddr, payload: &[u8]) -> bool {
        self.synthesized.push((dest, payload.to_vec()));
        true
    }
    fn connect(&mut self, backend: u32, generation: u64, _: &Path) {
        self.connects.push((backend, generation));
    }
    fn close(&mut self, backend: u32) {
        self.closes.push(backend);
        self.queued.remove(&backend);
    }
    fn scan_directory(&mut self) {
        self.scans += 1;
    }
    fn release_memory(&mut self) {}
}

impl Recorder {
    /// The frames queued for `backend` since the last call, decoded.
    fn frames_to(&mut self, backend: u32) -> Vec<u32> {
        let bytes = self.queued.remove(&backend).unwrap_or_default();
        let mut buf = FrameBuffer::new();
        buf.extend(&bytes);
        let mut types = Vec::new();
        while let Ok(Some(f)) = buf.next_frame() {
            types.push(f.frame_type());
        }
        types
    }
}

/// A core with the given flags over the defaults, its recorder and clock.
struct Scenario {
    core: Core,
    io: Recorder,
    now: Instant,
}

const HEARTBEAT: u32 = frame_type::CLIENT_HEARTBEAT;
const HELLO: u32 = frame_type::CLIENT_HELLO;

impl Scenario {
    fn new(flags: &[&str]) -> Scenario {
        let mut args = vec!["-s".to_string(), "/s".to_string()];
        args.extend(flags.iter().map(|s| s.to_string()));
        let Ok(Command::Run(cfg)) = cli::parse(&args, None) else {
            panic!("bad flags {flags:?}");
        };
        let now = Instant::now();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let mut s = Scenario {
            core: Core::new(*cfg, log, now),
            io: Recorder::default(),
            now,
        };
        s.core.start(now, &mut s.io);
        s
    }

    fn advance(&mut self, by: Duration) {
        self.advance_to(self.now + by);
    }

    fn advance_to(&mut self, t: Instant) {
        self.now = t;
        self.core.handle_timeout(self.now, &mut self.io);
    }

    fn list(&mut self, names: &[&str]) {
        let listing = Ok(names
            .iter()
            .map(|n| Ok(PathBuf::from(format!("/s/{n}"))))
            .collect());
        self.core.on_dir_listing(self.now, listing, &mut self.io);
    }

    /// Run the connect the core asked for: it succeeds, and the backend
    /// says hello (with the IPv6 extension when `ipv6`).
    fn connect_ok(&mut self, id: u32, ipv6: bool) -> u64 {
        self.core.handle_timeout(self.now, &mut self.io);
        let (_, generation) = *self
            .io
            .connects
            .iter()
            .rev()
            .find(|c| c.0 == id)
            .expect("a connect");
        self.core
            .on_link_connected(self.now, id, generation, &mut self.io);
        assert_eq!(self.io.frames_to(id), [HELLO, HELLO], "hello twice");
        self.send(id, generation, Frame::ServerHello);
        let caps = match ipv6 {
            true => Frame::ServerCapabilities {
                flags: capability::IPV6,
            },
            false => Frame::ServerHello,
        };
        self.send(id, generation, caps);
        generation
    }

    fn send(&mut self, id: u32, generation: u64, frame: Frame<'_>) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        self.core
            .on_link_bytes(self.now, id, generation, &bytes, &mut self.io);
    }

    fn query(&mut self, from: &str, id: u16) {
        let src: SocketAddr = from.parse().expect("address");
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1]);
        let mut buf = vec![0u8; UDP6_HEADER_LEN];
        buf.extend_from_slice(&m);
        let mut d = Datagram::new(0, src, m.len(), &mut buf);
        self.core.on_datagram(self.now, &mut d, &mut self.io);
        self.core.after_datagrams(self.now);
    }

    fn state(&self, id: u32) -> LinkState {
        self.core.backends().get(id).expect("backend").state
    }

    fn faults(&self, id: u32) -> u64 {
        self.core.backends().get(id).expect("backend").stats.faults
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

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
        "--unanswered-threshold",
        "500ms",
        "--probe-timeout",
        "500ms",
    ]);
    s.list(&["5300", "5301"]);
    s.connect_ok(5300, false);
    s.connect_ok(5301, false);
    s.query("10.0.0.1:1000", 7);
    let to = s
        .core
        .remotes()
        .iter()
        .next()
        .map(|(_, r)| r.primary)
        .expect("assigned");
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
    for _ in 0..6 {
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
    // 0, then 1, 3, 5, 5, 5 seconds apart.
    assert_eq!(tries, [0, 1000, 4000, 9000, 14_000, 19_000]);
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
    let mut answer = 9u16.to_be_bytes().to_vec();
    answer.extend_from_slice(&[0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1]);
    let dest: SocketAddr = "10.0.0.1:1000".parse().expect("address");
    s.send(
        5300,
        generation,
        Frame::OutboundUdp {
            addr: dest.ip(),
            port: 1000,
            payload: &answer,
        },
    );
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
        s.core.on_tcp_offered(s.now, peer),
        mname_balancer::core::TcpVerdict::Refuse
    );
    assert_eq!(s.core.counters().tcp_dropped_acl, 1);

    let mut d = Scenario::new(&["--deny", "10.9.0.0/16", "--acl-action", "drop"]);
    d.query("10.9.0.1:1000", 1);
    assert!(d.io.synthesized.is_empty(), "--acl-action drop: silence");
    assert_eq!(d.core.counters().dropped_acl, 1);
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

#[test]
fn per_client_log_records_are_rate_limited_with_a_summary() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Count(Arc<Mutex<Vec<String>>>);
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
