//! The simulated world around one [`Core`]: clients, scripted backends, TCP
//! sessions and an invented clock, all driven by one seed.  [`World::step`]
//! does one random thing; [`World::check`] holds the core to its
//! invariants after every step.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mname_balancer::cli::{self, Command, Config};
use mname_balancer::core::{Core, Datagram, Io, Phase, QueueFull, Signal};
use mname_balancer_protocol::UDP6_HEADER_LEN;
use tokio::time::Instant;

use super::backend::{Script, SimBackend, SimLink, Violations};
use super::dns::{self, Bad};
use super::rng::Rng;
use super::tcp::SimSession;

/// A query as the invariants know it: the client's address and DNS id.
pub(super) type Key = (SocketAddr, u16);

/// An answer the core sent (or queued) to a client.
pub(super) struct Delivery {
    pub(super) dest: SocketAddr,
    pub(super) payload: Vec<u8>,
    /// Made by the balancer (SERVFAIL, REFUSED), not by a backend.
    pub(super) synthesized: bool,
    /// The backend whose bytes were being read when it was queued.
    pub(super) from: Option<u32>,
}

/// Everything the core's outputs touch, recorded.
pub(super) struct Env {
    pub(super) rng: Rng,
    pub(super) backends: Vec<SimBackend>,
    pub(super) queue_limit: usize,
    pub(super) connects: Vec<(u32, u64)>,
    pub(super) closed: Vec<u32>,
    pub(super) scan: bool,
    pub(super) deliveries: Vec<Delivery>,
    pub(super) feeding: Option<u32>,
    pub(super) violations: Violations,
    /// Answers sent now that the socket would not take.
    pub(super) refused_sends: u64,
}

impl Env {
    fn backend(&mut self, id: u32) -> Option<&mut SimBackend> {
        self.backends.iter_mut().find(|b| b.id == id)
    }
}

impl Io for Env {
    fn send_frame(&mut self, backend: u32, pieces: &[&[u8]]) -> Result<(), QueueFull> {
        let limit = self.queue_limit;
        let Some(link) = self.backend(backend).and_then(|b| b.link.as_mut()) else {
            self.violations
                .push(format!("frame for backend {backend}, which has no link"));
            return Err(QueueFull);
        };
        let len: usize = pieces.iter().map(|p| p.len()).sum();
        if link.queued_data() + len > limit {
            return Err(QueueFull);
        }
        for p in pieces {
            link.inbound.extend_from_slice(p);
        }
        Ok(())
    }

    fn send_control(&mut self, backend: u32, frame: &[u8]) {
        match self.backend(backend).and_then(|b| b.link.as_mut()) {
            Some(link) => {
                link.inbound.extend_from_slice(frame);
                link.control_bytes += frame.len();
            }
            None => self.violations.push(format!(
                "control frame for backend {backend} without a link"
            )),
        }
    }

    fn queue_answer(&mut self, _reply_path: usize, dest: SocketAddr, payload: &[u8]) {
        let from = self.feeding;
        self.deliveries.push(Delivery {
            dest,
            payload: payload.to_vec(),
            synthesized: false,
            from,
        });
    }

    fn send_synthesized(&mut self, _reply_path: usize, dest: SocketAddr, payload: &[u8]) -> bool {
        // Now and then the socket buffer is full.
        if self.rng.chance(5) {
            self.refused_sends += 1;
            return false;
        }
        self.deliveries.push(Delivery {
            dest,
            payload: payload.to_vec(),
            synthesized: true,
            from: None,
        });
        true
    }

    fn connect(&mut self, backend: u32, generation: u64, path: &Path) {
        match self.backend(backend) {
            Some(b) if Path::new(&b.path) == path => self.connects.push((backend, generation)),
            _ => self.violations.push(format!(
                "connect to {backend} at unknown path {}",
                path.display()
            )),
        }
    }

    fn close(&mut self, backend: u32) {
        if let Some(b) = self.backend(backend) {
            b.link = None;
        }
        self.closed.push(backend);
    }

    fn scan_directory(&mut self) {
        self.scan = true;
    }

    fn release_memory(&mut self) {}
}

/// The core and its world.
pub(crate) struct World {
    pub(super) core: Core,
    pub(super) cfg: Config,
    pub(super) env: Env,
    pub(super) now: Instant,
    pub(super) sessions: Vec<SimSession>,
    /// Datagrams handed to the core.
    pub(super) datagrams: u64,
    pub(super) asks: HashMap<Key, u32>,
    pub(super) answers: HashMap<Key, u32>,
    /// The questions (as spelled) each client asked with each id: the last
    /// few.
    pub(super) asked_questions: HashMap<Key, Vec<Vec<u8>>>,
    /// Answers backends gave clients, by question (folded to lower case):
    /// when the core passed each on, and its records; the last few.
    pub(super) given: HashMap<Vec<u8>, Vec<(Instant, Vec<u8>)>>,
    /// Queries each backend received, ever: (backend, client, id).
    pub(super) received: HashMap<(u32, SocketAddr, u16), u32>,
    /// Times each query reached any backend.
    pub(super) forwarded: HashMap<Key, u32>,
    /// Queries that reached a backend in this step.
    pub(super) forwarded_now: Vec<Key>,
    /// Since when a backend has been without a connection or a connect.
    pub(super) down_since: HashMap<u32, Instant>,
    pub(super) terminated_at: Option<Instant>,
    pub steps: u64,
}

/// The simulation's configuration: short timers, small bounds, so that
/// every limit is met within a few thousand steps.
fn config(rng: &mut Rng) -> Config {
    let no_backend = *rng.pick(&["servfail", "refused", "drop"]);
    let on_timeout = *rng.pick(&["servfail", "drop"]);
    let acl_action = *rng.pick(&["refused", "drop"]);
    // Half the seeds run with a remote table smaller than the clients.
    let max_remotes = *rng.pick(&["30", "1000000"]);
    let max_qps = *rng.pick(&["0", "4"]);
    // Hedging off, adaptive (the default) or after a fixed delay shorter
    // than the sim backends' slowest answers; a budget that binds or not.
    let hedge_after = *rng.pick(&["0", "auto", "20ms"]);
    let hedge_budget = *rng.pick(&["10", "1", "100"]);
    // The packet cache off (the default), tiny (evicting all the time) or
    // roomy; serving stale or not; TTLs as the backends give them or cut.
    let cache_size = *rng.pick(&["0", "1", "1000"]);
    let serve_stale = *rng.pick(&["0", "3s"]);
    let cache_max_ttl = *rng.pick(&["86400", "2"]);
    let args: Vec<String> = [
        "-s",
        "/sim",
        "--scan-interval",
        "500ms",
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "1s",
        "--reconnect-delay",
        "100ms",
        "--reconnect-step",
        "150ms",
        "--reconnect-max",
        "1s",
        "--connect-timeout",
        "1s",
        "--rebalance-interval",
        "2s",
        "--remote-expiry",
        "5s",
        "--expiry-sweep",
        "1s",
        "--tcp-connect-timeout",
        "1s",
        "--query-timeout",
        "1s",
        "--unanswered-threshold",
        "300ms",
        "--probe-timeout",
        "300ms",
        "--max-inflight",
        "64",
        "--max-inflight-per-backend",
        "40",
        "--backend-queue-bytes",
        "2048",
        "--max-tcp-sessions",
        "4",
        "--max-tcp-per-client",
        "2",
        "--tcp-idle-timeout",
        "2s",
        "--tcp-read-timeout",
        "700ms",
        "--drain-timeout",
        "2s",
        "--synth-rate",
        "5",
        "--hedge-after",
        hedge_after,
        "--hedge-budget",
        hedge_budget,
        "--no-backend",
        no_backend,
        "--on-timeout",
        on_timeout,
        // Some clients are refused (10.0.3.x, fd00::21..2f): they must
        // never reach a backend nor get a remote.
        "--deny",
        "10.0.3.0/24",
        "--deny",
        "fd00::20/124",
        "--acl-action",
        acl_action,
        "--max-remotes",
        max_remotes,
        "--max-qps-per-client",
        max_qps,
        "--cache-size",
        cache_size,
        "--serve-stale",
        serve_stale,
        "--cache-max-ttl",
        cache_max_ttl,
        "--stale-ttl",
        "7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    match cli::parse(&args, None) {
        Ok(Command::Run(c)) => *c,
        other => panic!("simulation config: {other:?}"),
    }
}

impl World {
    pub(crate) fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let cfg = config(&mut rng);
        let backends = (0..2 + rng.below(3) as u32)
            .map(|i| SimBackend {
                id: 5300 + i,
                path: format!("/sim/{}", 5300 + i),
                present: true,
                script: Script::Answer,
                ipv6: rng.chance(60),
                link: None,
            })
            .collect();
        let now = Instant::now();
        // SIM_TRACE=1 shows the core's log of a replayed seed.
        let log = match std::env::var("SIM_TRACE") {
            Ok(_) => mname_balancer::logging::logger_to(std::io::stdout(), slog::Level::Trace),
            Err(_) => slog::Logger::root(slog::Discard, slog::o!()),
        };
        let mut world = World {
            core: Core::new(cfg.clone(), log, now),
            env: Env {
                rng,
                backends,
                queue_limit: cfg.backend_queue_bytes,
                connects: Vec::new(),
                closed: Vec::new(),
                scan: false,
                deliveries: Vec::new(),
                feeding: None,
                violations: Vec::new(),
                refused_sends: 0,
            },
            cfg,
            now,
            sessions: Vec::new(),
            datagrams: 0,
            asks: HashMap::new(),
            answers: HashMap::new(),
            asked_questions: HashMap::new(),
            given: HashMap::new(),
            received: HashMap::new(),
            forwarded: HashMap::new(),
            forwarded_now: Vec::new(),
            down_since: HashMap::new(),
            terminated_at: None,
            steps: 0,
        };
        world.core.start(now, &mut world.env);
        world.settle();
        world
    }

    pub(crate) fn phase(&self) -> Phase {
        self.core.phase()
    }

    /// One random event, then everything it set off.
    pub(crate) fn step(&mut self) {
        self.steps += 1;
        let serving = self.core.phase() == Phase::Serving;
        match self.env.rng.below(100) {
            0..40 if serving => self.client_burst(),
            40..65 => self.backends_work(),
            65..82 => self.advance_time(),
            82..87 => self.backend_fault(),
            87..92 if self.core.wants_connections() => self.tcp_offer(),
            92..95 => self.end_sessions(),
            95 => {
                let sig = *self.env.rng.pick(&[Signal::Rescan, Signal::DumpCounters]);
                self.core.on_signal(self.now, sig, &mut self.env);
            }
            _ => self.advance_time(),
        }
        self.sweep_sessions();
        self.settle();
    }

    /// SIGTERM: from now on, no new clients; the core must drain and exit
    /// within its grace period.
    pub(crate) fn terminate(&mut self) {
        self.terminated_at = Some(self.now);
        self.core
            .on_signal(self.now, Signal::Terminate, &mut self.env);
        self.settle();
    }

    fn client_burst(&mut self) {
        let rng = &mut self.env.rng;
        for _ in 0..1 + rng.below(8) {
            let rng = &mut self.env.rng;
            let src = dns::random_client(rng);
            let message = match rng.below(100) {
                0..3 => dns::bad(Bad::Short, rng),
                3..6 => dns::bad(Bad::Response, rng),
                6..9 => dns::bad(Bad::Malformed, rng),
                9..11 => dns::bad(Bad::Oversized, rng),
                _ => {
                    // Retransmits happen: ids repeat per client now and then.
                    let id = rng.below(64) as u16;
                    dns::query(id, rng)
                }
            };
            // Every message with an id counts as asked: an oversized one
            // or one whose question does not parse may be answered by the
            // balancer itself (TC=1, FORMERR).
            if let Some(id) = dns::id_of(&message) {
                *self.asks.entry((src, id)).or_default() += 1;
                if let Some(end) = dns::question_end(&message) {
                    let asked = self.asked_questions.entry((src, id)).or_default();
                    asked.push(message[12..end].to_vec());
                    if asked.len() > 8 {
                        asked.remove(0);
                    }
                }
            }
            // The receive buffer keeps 4096 bytes; longer datagrams are
            // cut, their length reported whole.
            let len = message.len();
            let mut buf = vec![0u8; UDP6_HEADER_LEN + 4096];
            let kept = len.min(4096);
            buf[UDP6_HEADER_LEN..UDP6_HEADER_LEN + kept].copy_from_slice(&message[..kept]);
            let mut dgram = Datagram::new(0, src, len, &mut buf);
            self.datagrams += 1;
            self.core.on_datagram(self.now, &mut dgram, &mut self.env);
        }
        self.core.after_datagrams(self.now);
    }

    /// Some backends read what was sent to them and write what is due.
    fn backends_work(&mut self) {
        for i in 0..self.env.backends.len() {
            if self.env.rng.chance(30) {
                continue;
            }
            let (received, forwarded, now_list) = (
                &mut self.received,
                &mut self.forwarded,
                &mut self.forwarded_now,
            );
            let Env {
                backends,
                rng,
                violations,
                ..
            } = &mut self.env;
            backends[i].read_inbound(self.now, rng, violations, |b, client, id| {
                *received.entry((b, client, id)).or_default() += 1;
                *forwarded.entry((client, id)).or_default() += 1;
                now_list.push((client, id));
            });
            let bytes = backends[i].due_output(self.now, rng);
            let (id, generation) = match &backends[i].link {
                Some(l) => (backends[i].id, l.generation),
                None => continue,
            };
            // Delivered in pieces, as a stream socket may.
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let cut = 1 + self.env.rng.below(rest.len() as u64) as usize;
                let (piece, tail) = rest.split_at(cut);
                self.env.feeding = Some(id);
                self.core
                    .on_link_bytes(self.now, id, generation, piece, &mut self.env);
                self.env.feeding = None;
                rest = tail;
            }
        }
    }

    fn advance_time(&mut self) {
        let rng = &mut self.env.rng;
        let step = match (rng.chance(30), self.core.poll_timeout()) {
            (true, Some(at)) if at > self.now => (at - self.now).min(Duration::from_secs(3)),
            _ => Duration::from_millis(1 + rng.below(60)),
        };
        self.now += step;
        self.core.handle_timeout(self.now, &mut self.env);
    }

    /// A backend dies, loses its socket, comes back, or changes script.
    fn backend_fault(&mut self) {
        let i = self.env.rng.below(self.env.backends.len() as u64) as usize;
        let now = self.now;
        match self.env.rng.below(6) {
            0 | 1 => {
                // Killed: its connection closes, perhaps its socket goes.
                let b = &mut self.env.backends[i];
                if self.env.rng.chance(40) {
                    b.present = false;
                }
                if let Some(link) = b.link.take() {
                    let id = b.id;
                    let error = self
                        .env
                        .rng
                        .chance(30)
                        .then(|| io::Error::from(io::ErrorKind::ConnectionReset));
                    self.core.on_link_closed(
                        now,
                        id,
                        link.generation,
                        error.as_ref(),
                        &mut self.env,
                    );
                }
            }
            2 => self.env.backends[i].present = true,
            _ => {
                let script = *self.env.rng.pick(&[
                    Script::Answer,
                    Script::Answer,
                    Script::Late,
                    Script::Hang,
                    Script::Garbage,
                    Script::Unsolicited,
                ]);
                self.env.backends[i].script = script;
            }
        }
    }

    /// Carry out the commands the core gave, as the shell would, until
    /// none is left; then deliver the answers and check them.
    fn settle(&mut self) {
        loop {
            for (id, generation) in std::mem::take(&mut self.env.connects) {
                self.down_since.remove(&id);
                let present = self.env.backend(id).is_some_and(|b| b.present);
                if present {
                    if let Some(b) = self.env.backend(id) {
                        b.link = Some(SimLink::new(generation, self.now));
                    }
                    self.core
                        .on_link_connected(self.now, id, generation, &mut self.env);
                } else {
                    let e = io::Error::from(io::ErrorKind::NotFound);
                    self.core
                        .on_link_connect_failed(self.now, id, generation, &e, &mut self.env);
                }
            }
            if std::mem::take(&mut self.env.scan) {
                let listing = self.listing();
                self.core.on_dir_listing(self.now, listing, &mut self.env);
            }
            for id in std::mem::take(&mut self.env.closed) {
                self.down_since.entry(id).or_insert(self.now);
            }
            if self.env.connects.is_empty() && !self.env.scan && self.env.closed.is_empty() {
                break;
            }
        }
        let mut sent = 0;
        for d in std::mem::take(&mut self.env.deliveries) {
            self.check_delivery(&d);
            sent += u64::from(!d.synthesized);
        }
        self.core.on_replies_sent(sent, 0);
    }

    /// The socket directory: the sockets present, now and then a path
    /// too long for a socket, or an error.
    fn listing(&mut self) -> io::Result<Vec<io::Result<PathBuf>>> {
        if self.env.rng.chance(3) {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        let mut entries: Vec<io::Result<PathBuf>> = self
            .env
            .backends
            .iter()
            .filter(|b| b.present)
            .map(|b| Ok(PathBuf::from(&b.path)))
            .collect();
        if self.env.rng.chance(5) {
            entries.push(Ok(PathBuf::from(format!("/sim/{}", "x".repeat(120)))));
        }
        Ok(entries)
    }

    fn check_delivery(&mut self, d: &Delivery) {
        let Some(id) = dns::id_of(&d.payload) else {
            self.env
                .violations
                .push(format!("answer without an id to {}", d.dest));
            return;
        };
        let key = (d.dest, id);
        let asked = self.asks.get(&key).copied().unwrap_or(0);
        let answered = self.answers.entry(key).or_default();
        if *answered >= asked {
            self.env.violations.push(format!(
                "answer {} to {} (asked {asked} times, answered {answered})",
                id, d.dest
            ));
        }
        *answered += 1;
        if let Some(from) = d.from
            && !self.received.contains_key(&(from, d.dest, id))
        {
            self.env.violations.push(format!(
                "backend {from}'s answer {id} to {} never asked of it",
                d.dest
            ));
        }
        let from_cache = match (d.from, d.synthesized) {
            (None, false) => true,
            // A stale answer to a query that timed out is sent at once,
            // as SERVFAIL would have been.
            (None, true) => {
                d.payload.get(3).is_some_and(|f| f & 0x0f == 0)
                    && d.payload.get(6..8).is_some_and(|n| n != [0, 0])
            }
            (Some(_), _) => false,
        };
        if from_cache {
            self.check_cached(d, key);
        } else if d.from.is_some() {
            self.remember_given(d);
        }
    }
}
