//! The harness of the core's scenario tests: a [`Core`] with a recording
//! [`Io`], an invented clock, and helpers to list sockets, complete
//! connects with a hello, send frames and queries.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mname_balancer::backends::LinkState;
use mname_balancer::cli::{self, Command};
use mname_balancer::core::{
    ConnActivity, Core, Datagram, Io, QueueFull, SessionActivity, SessionId,
};
use mname_balancer_protocol::{Frame, FrameBuffer, UDP6_HEADER_LEN, capability, frame_type};
use tokio::time::Instant;

/// Every output of the core, recorded.
#[derive(Default)]
pub(crate) struct Recorder {
    /// Bytes queued per backend, control frames included.
    pub queued: std::collections::HashMap<u32, Vec<u8>>,
    pub answers: Vec<(SocketAddr, Vec<u8>)>,
    pub synthesized: Vec<(SocketAddr, Vec<u8>)>,
    pub connects: Vec<(u32, u64)>,
    pub closes: Vec<u32>,
    pub scans: usize,
    /// Times the core asked for freed memory to go back to the system.
    pub releases: usize,
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
    fn release_memory(&mut self) {
        self.releases += 1;
    }
}

impl Recorder {
    /// The frames queued for `backend` since the last call, decoded.
    pub(crate) fn frames_to(&mut self, backend: u32) -> Vec<u32> {
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
pub(crate) struct Scenario {
    pub core: Core,
    pub io: Recorder,
    pub now: Instant,
}

pub(crate) const HEARTBEAT: u32 = frame_type::CLIENT_HEARTBEAT;
pub(crate) const HELLO: u32 = frame_type::CLIENT_HELLO;

impl Scenario {
    pub(crate) fn new(flags: &[&str]) -> Scenario {
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

    pub(crate) fn advance(&mut self, by: Duration) {
        self.advance_to(self.now + by);
    }

    pub(crate) fn advance_to(&mut self, t: Instant) {
        self.now = t;
        self.core.handle_timeout(self.now, &mut self.io);
    }

    pub(crate) fn list(&mut self, names: &[&str]) {
        let listing = Ok(names
            .iter()
            .map(|n| Ok(PathBuf::from(format!("/s/{n}"))))
            .collect());
        self.core.on_dir_listing(self.now, listing, &mut self.io);
    }

    /// Run the connect the core asked for: it succeeds, and the backend
    /// says hello (with the IPv6 extension when `ipv6`).
    pub(crate) fn connect_ok(&mut self, id: u32, ipv6: bool) -> u64 {
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

    pub(crate) fn send(&mut self, id: u32, generation: u64, frame: Frame<'_>) {
        let mut bytes = Vec::new();
        frame.encode(&mut bytes);
        self.core
            .on_link_bytes(self.now, id, generation, &bytes, &mut self.io);
    }

    /// Backend `id` answers the query `dns_id` of `to` (as [`Scenario::query`]
    /// asked it) on its link of `generation`.
    pub(crate) fn answer(&mut self, id: u32, generation: u64, to: &str, dns_id: u16) {
        let dest: SocketAddr = to.parse().expect("address");
        let mut answer = dns_id.to_be_bytes().to_vec();
        answer.extend_from_slice(&[0x81, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1]);
        self.send(
            id,
            generation,
            Frame::OutboundUdp {
                addr: dest.ip(),
                port: dest.port(),
                payload: &answer,
            },
        );
    }

    pub(crate) fn query(&mut self, from: &str, id: u16) {
        let src: SocketAddr = from.parse().expect("address");
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1]);
        let mut buf = vec![0u8; UDP6_HEADER_LEN];
        buf.extend_from_slice(&m);
        let mut d = Datagram::new(0, src, m.len(), &mut buf);
        self.core.on_datagram(self.now, &mut d, &mut self.io);
        self.core.after_datagrams(self.now);
    }

    /// The primary backend of the first remote (in address order).
    pub(crate) fn first_primary(&self) -> u32 {
        self.core
            .remotes()
            .iter()
            .next()
            .map(|(_, r)| r.primary)
            .expect("a remote assigned")
    }

    pub(crate) fn state(&self, id: u32) -> LinkState {
        self.core.backends().get(id).expect("backend").state
    }

    pub(crate) fn faults(&self, id: u32) -> u64 {
        self.core.backends().get(id).expect("backend").stats.faults
    }
}

pub(crate) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Session activity as a test sets it.
#[derive(Default)]
pub(crate) struct Activity(pub std::collections::HashMap<SessionId, ConnActivity>);

impl Activity {
    /// `id` idle since `t`.
    pub(crate) fn idle(&mut self, id: SessionId, t: Instant) {
        self.0.insert(id, ConnActivity::idle_from(t));
    }

    /// `id` awaiting answers since `t`.
    pub(crate) fn busy(&mut self, id: SessionId, t: Instant) {
        self.0.insert(
            id,
            ConnActivity {
                last_activity: t,
                partial_since: None,
                answering_since: Some(t),
                synthesized: 0,
            },
        );
    }
}

impl SessionActivity for Activity {
    fn activity(&self, id: SessionId) -> Option<ConnActivity> {
        self.0.get(&id).copied()
    }
}

/// The shell knows of no session.
pub(crate) struct NoSessions;

impl SessionActivity for NoSessions {
    fn activity(&self, _: SessionId) -> Option<ConnActivity> {
        None
    }
}
