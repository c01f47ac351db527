//! The core driven by a fuzzed sequence of events: datagrams from a few
//! clients, bytes from backends (any bytes), links that connect, fail and
//! close, directory listings, TCP offers and session ends, signals, and
//! time.  After every event the counting invariants of the simulation
//! hold: every datagram is forwarded or counted in one drop reason, no
//! bound is passed, each backend's remote count is exact, and no frame
//! goes to a backend without a link.

#![no_main]

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mname_balancer::cli::{self, Command};
use mname_balancer::core::{
    ConnActivity, Core, Datagram, Io, QueueFull, SessionActivity, SessionEnd, SessionId, Signal,
    TcpClose, TcpVerdict,
};
use mname_balancer_protocol::UDP6_HEADER_LEN;
use tokio::time::Instant;

const BACKENDS: [u32; 3] = [5300, 5301, 5302];

/// The sessions open: id, backend, activity.
type Open = Vec<(SessionId, u32, ConnActivity)>;

struct Idle<'a>(&'a Open);

impl SessionActivity for Idle<'_> {
    fn activity(&self, id: SessionId) -> Option<ConnActivity> {
        Some(self.0.iter().find(|(s, ..)| *s == id)?.2)
    }
}

#[derive(Default)]
struct Recorder {
    linked: HashSet<u32>,
    connects: Vec<(u32, u64)>,
    scan: bool,
    queued: usize,
    violation: Option<String>,
}

impl Io for Recorder {
    fn send_frame(&mut self, backend: u32, pieces: &[&[u8]]) -> Result<(), QueueFull> {
        if !self.linked.contains(&backend) {
            self.violation = Some(format!("frame to {backend} without a link"));
        }
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        if self.queued + len > 4096 {
            return Err(QueueFull);
        }
        self.queued += len;
        Ok(())
    }
    fn send_control(&mut self, backend: u32, _: &[u8]) {
        if !self.linked.contains(&backend) {
            self.violation = Some(format!("control frame to {backend} without a link"));
        }
    }
    fn queue_answer(&mut self, _: usize, _: SocketAddr, _: &[u8]) {}
    fn send_synthesized(&mut self, _: usize, _: SocketAddr, _: &[u8]) -> bool {
        true
    }
    fn connect(&mut self, backend: u32, generation: u64, _: &Path) {
        self.connects.push((backend, generation));
    }
    fn close(&mut self, backend: u32) {
        self.linked.remove(&backend);
    }
    fn scan_directory(&mut self) {
        self.scan = true;
    }
    fn release_memory(&mut self) {}
}

fn config() -> Option<mname_balancer::cli::Config> {
    let args: Vec<String> = [
        "-s",
        "/f",
        "--max-inflight",
        "16",
        "--max-inflight-per-backend",
        "8",
        "--max-tcp-sessions",
        "2",
        "--max-remotes",
        "8",
        "--max-qps-per-client",
        "6",
        "--deny",
        "10.0.0.7",
        // Hedges after a delay the fuzzed clock often passes.
        "--hedge-after",
        "20ms",
        // A tiny packet cache that serves stale: fuzzed answers are
        // learned, evicted and served back.
        "--cache-size",
        "4",
        "--serve-stale",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match cli::parse(&args, None) {
        Ok(Command::Run(c)) => Some(*c),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(cfg) = config() else { return };
    let (max_inflight, per_backend, max_tcp, max_remotes) = (
        cfg.max_inflight,
        cfg.max_inflight_per_backend,
        cfg.max_tcp_sessions,
        cfg.max_remotes,
    );
    let mut now = Instant::now();
    let mut core = Core::new(cfg, slog::Logger::root(slog::Discard, slog::o!()), now);
    let mut io = Recorder::default();
    core.start(now, &mut io);
    let mut datagrams = 0u64;
    let mut sessions: Open = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = bytes.next().unwrap_or(0);
        match op % 10 {
            0 | 1 => {
                // A datagram of `arg % 64` bytes from client arg % 9.
                let len = usize::from(arg % 64);
                let body: Vec<u8> = bytes.by_ref().take(len).collect();
                let src = SocketAddr::new(IpAddr::from([10, 0, 0, arg % 9]), 1000);
                let mut buf = vec![0u8; UDP6_HEADER_LEN];
                buf.extend_from_slice(&body);
                let mut d = Datagram::new(0, src, body.len(), &mut buf);
                datagrams += 1;
                core.on_datagram(now, &mut d, &mut io);
                core.after_datagrams(now);
            }
            2 => {
                // Any bytes from a linked backend.
                let id = BACKENDS[usize::from(arg % 3)];
                let len = usize::from(bytes.next().unwrap_or(0) % 48);
                let chunk: Vec<u8> = bytes.by_ref().take(len).collect();
                if let Some(g) = core.link_generation(id) {
                    core.on_link_bytes(now, id, g, &chunk, &mut io);
                }
            }
            3 => {
                // A well-formed hello (or heartbeat reply) from a backend.
                let id = BACKENDS[usize::from(arg % 3)];
                let frame: u32 = if arg & 0x80 != 0 { 1004 } else { 1001 };
                if let Some(g) = core.link_generation(id) {
                    core.on_link_bytes(now, id, g, &frame.to_le_bytes(), &mut io);
                }
            }
            4 => {
                let id = BACKENDS[usize::from(arg % 3)];
                if let Some(g) = core.link_generation(id) {
                    io.linked.remove(&id);
                    let e = io::Error::from(io::ErrorKind::ConnectionReset);
                    core.on_link_closed(now, id, g, (arg & 1 == 0).then_some(&e), &mut io);
                }
            }
            5 => now += Duration::from_millis(u64::from(arg) * 20),
            6 => {
                let peer = SocketAddr::new(IpAddr::from([10, 0, 0, arg % 9]), 2000);
                let activity = Idle(&sessions);
                if let TcpVerdict::Admit { plan, evict } = core.on_tcp_offered(now, peer, &activity)
                {
                    if let Some(victim) = evict {
                        if !sessions
                            .iter()
                            .any(|(id, _, a)| *id == victim && a.evictable_since().is_some())
                        {
                            panic!("evicted {victim:?}, not an idle session");
                        }
                        sessions.retain(|(id, ..)| *id != victim);
                    }
                    let mut activity = ConnActivity::idle_from(now);
                    if arg & 1 == 1 {
                        activity.answering_since = Some(now);
                    }
                    sessions.push((plan.session, plan.backend, activity));
                }
            }
            7 => {
                if let Some((id, backend, _)) = sessions.pop() {
                    let end = match arg % 4 {
                        0 => SessionEnd::Closed(TcpClose::Finished),
                        1 => SessionEnd::OkTimeout,
                        2 => SessionEnd::Closed(TcpClose::Idle),
                        _ => SessionEnd::ConnectFailed { gone: arg & 4 != 0 },
                    };
                    core.on_session_ended(now, id, backend, end, &mut io);
                }
            }
            8 => {
                let sig = match arg % 3 {
                    0 => Signal::Rescan,
                    1 => Signal::DumpCounters,
                    _ => Signal::Terminate,
                };
                core.on_signal(now, sig, &mut io);
            }
            _ => io.queued = 0,
        }
        core.handle_timeout(now, &mut io);
        let mut closed = Vec::new();
        core.sweep_tcp_sessions(now, &Idle(&sessions), &mut closed, &mut io);
        sessions.retain(|(id, ..)| !closed.contains(id));
        // Carry out the commands as the shell would.
        loop {
            for (id, g) in std::mem::take(&mut io.connects) {
                if arg & 0x40 == 0 {
                    io.linked.insert(id);
                    core.on_link_connected(now, id, g, &mut io);
                } else {
                    let e = io::Error::from(io::ErrorKind::NotFound);
                    core.on_link_connect_failed(now, id, g, &e, &mut io);
                }
            }
            if std::mem::take(&mut io.scan) {
                let listing = Ok(BACKENDS
                    .iter()
                    .map(|id| Ok(PathBuf::from(format!("/f/{id}"))))
                    .collect());
                core.on_dir_listing(now, listing, &mut io);
            }
            if io.connects.is_empty() && !io.scan {
                break;
            }
        }
        if let Some(v) = io.violation.take() {
            panic!("{v}");
        }
        let c = core.counters();
        assert_eq!(c.udp_received, datagrams);
        assert_eq!(
            c.udp_received,
            c.udp_forwarded + c.udp_from_cache() + c.udp_dropped(),
            "{c:?}"
        );
        assert!(core.inflight().len() <= max_inflight);
        assert!(core.remotes().len() <= max_remotes);
        assert!(core.tcp_sessions_open() <= max_tcp);
        assert_eq!(core.tcp_sessions_open(), sessions.len());
        let c = core.counters();
        assert_eq!(
            c.tcp_accepted,
            c.tcp_dropped() + c.tcp_closed() + sessions.len() as u64
        );
        for be in core.backends().iter() {
            assert!(core.inflight().count_for(be.id) <= per_backend);
            let primaries = core
                .remotes()
                .iter()
                .filter(|(_, r)| r.primary == be.id)
                .count();
            assert_eq!(be.remotes as usize, primaries);
        }
    }
});
