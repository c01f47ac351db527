//! THE BALANCING CORE
//!
//! Every decision the balancer makes is made here, and nothing here does
//! I/O: no socket, no file, no task, no clock.  The core owns the backend
//! table ([`Backends`]), the remotes ([`Remotes`]), the timers
//! ([`Timeouts`]), the in-flight table ([`inflight::InFlight`]) and the
//! counters, and is driven by events that the I/O shell ([`crate::shell`])
//! reads from the world, each with the time it happened (`now`):
//!
//! | input                            | method                              |
//! |----------------------------------|-------------------------------------|
//! | a client datagram                | [`Core::on_datagram`]               |
//! | a TCP connection offered         | [`Core::on_tcp_offered`]            |
//! | a TCP session over               | [`Core::on_session_ended`]          |
//! | a backend socket connected/failed| [`Core::on_link_connected`], [`Core::on_link_connect_failed`] |
//! | bytes or EOF from a backend      | [`Core::on_link_bytes`], [`Core::on_link_closed`] |
//! | the socket directory's entries   | [`Core::on_dir_listing`]            |
//! | a signal                         | [`Core::on_signal`]                 |
//! | time passing                     | [`Core::handle_timeout`], [`Core::poll_timeout`] |
//!
//! What the core decides is carried out through the [`Io`] trait, which
//! the shell implements with sockets and tests implement by recording:
//! frames for a backend, answers for a client, and commands (connect
//! backend N at path P, close its link, list the directory, release
//! memory).  A datagram is framed in its receive buffer ([`Datagram`]) and
//! handed to [`Io::send_frame`] as borrowed pieces, so forwarding costs one
//! copy, into the backend's queue, and no allocation.
//!
//! Because time is an argument and every output goes through [`Io`], a
//! deterministic simulation (`tests/simulation.rs`) drives this type
//! through thousands of faults on an invented clock, and each policy is
//! unit-tested without a socket.  `tests/layering.rs` keeps it that way:
//! it fails if a file under `src/core/` names an I/O or clock API.

mod assign;
pub mod cache;
mod control;
pub mod counters;
mod datagrams;
pub mod hedge;
pub mod inflight;
pub mod intake;
mod ratelimit;
pub mod snapshot;
pub mod synth;
mod tcp;
pub mod tcp_conn;
pub mod tcp_learn;
pub mod tcp_messages;
mod timers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use foldhash::fast::RandomState;
use slog::{Logger, info, o, warn};
use tokio::time::Instant;

use crate::backends::{BackendId, Backends};
use crate::cli::Config;
use crate::remotes::Remotes;
use crate::timeouts::Timeouts;
use mname_balancer_protocol::FrameBuffer;

pub use counters::Counters;
pub use datagrams::Datagram;
pub use ratelimit::{AddressBudgets, LogBudget, RateLimit};
pub use tcp::{SessionActivity, SessionEnd, SessionId, SessionKey, SessionPlan, TcpVerdict};
pub use tcp_conn::{ConnActivity, TcpClose, TcpConn, TcpConnLimits};
pub use tcp_learn::TcpAnswer;
pub use timers::ACCEPT_BACKOFF;
use timers::TimerKey;

/// A backend's queue could not take a frame: the backend is not keeping up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// What the core asks of the world.  The shell carries these out with
/// sockets; a test records them.  Commands (connect, close, scan, release)
/// are carried out after the core's method returns, in the order given.
pub trait Io {
    /// Queue the pieces of one frame for backend `backend`'s control
    /// socket, whole or not at all (the queue is bounded in bytes).
    fn send_frame(&mut self, backend: BackendId, pieces: &[&[u8]]) -> Result<(), QueueFull>;
    /// Queue a small control frame (hello, heartbeat), even past the bound:
    /// a heartbeat that cannot be sent must still be timed.
    fn send_control(&mut self, backend: BackendId, frame: &[u8]);
    /// Queue a backend's answer to a client, by reply path `reply_path` (an index the shell defines).
    /// Answers are sent in batches; see [`Core::on_replies_sent`].
    fn queue_answer(&mut self, reply_path: usize, dest: SocketAddr, payload: &[u8]);
    /// Send an answer the balancer made itself, now.  False if the socket
    /// would not take it.
    fn send_synthesized(&mut self, reply_path: usize, dest: SocketAddr, payload: &[u8]) -> bool;
    /// Connect to a backend's socket; report with
    /// [`Core::on_link_connected`] or [`Core::on_link_connect_failed`].
    fn connect(&mut self, backend: BackendId, generation: u64, path: &Path);
    /// Close a backend's control socket (and drop what is queued for it).
    fn close(&mut self, backend: BackendId);
    /// List the socket directory; report with [`Core::on_dir_listing`].
    fn scan_directory(&mut self);
    /// Many remotes were forgotten: give freed memory back to the system.
    fn release_memory(&mut self);
}

/// Send an answer now through [`Io::send_synthesized`]: one the balancer
/// made, or a stale one from the cache.  One the socket would not take is
/// counted with the answers that failed (`udp_replies_failed`), as a
/// batched answer would be.
fn send_now(
    counters: &mut Counters,
    io: &mut impl Io,
    reply_path: usize,
    dest: SocketAddr,
    payload: &[u8],
) -> bool {
    let sent = io.send_synthesized(reply_path, dest, payload);
    if !sent {
        counters.udp_replies_failed += 1;
    }
    sent
}

/// A signal the balancer acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM or SIGINT: drain, then exit; a second one exits at once.
    Terminate,
    /// SIGHUP: rescan the socket directory now.
    Rescan,
    /// SIGUSR1: log every counter.
    DumpCounters,
    /// SIGUSR2: empty the packet cache.
    FlushCache,
}

/// Where the balancer stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Taking queries and connections.
    Serving,
    /// A shutdown signal came: no new work; exit once idle.
    Draining,
    /// Done: the shell exits.
    Exit,
}

/// Per-cause warnings that can repeat under load are logged at most this
/// often.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// An expiry sweep that forgets at least this many remotes returns freed
/// memory to the system; so does one that leaves the table at a quarter or
/// less of its size at the last release, if that was at least
/// [`RELEASE_MEMORY_MIN_PEAK`] (remotes made during a burst pin the pages
/// the burst's other allocations freed around them).
const RELEASE_MEMORY_AFTER: usize = 10_000;
const RELEASE_MEMORY_MIN_PEAK: usize = 256;

/// The core's view of a backend's link (its control connection): frames arrive
/// in pieces and are reassembled here.
#[derive(Debug)]
struct Link {
    generation: u64,
    frames: FrameBuffer,
    /// Drops for a full queue ("stuck") are logged at most so often.
    stuck_log: RateLimit,
}

/// Log lines that may repeat under load, each limited on its own.
#[derive(Debug, Default)]
struct RepeatLogs {
    no_backend: RateLimit,
    oversized: RateLimit,
    inflight_full: RateLimit,
    unsolicited: RateLimit,
    session_limit: RateLimit,
    per_client: LogBudget,
}

/// The balancer's state and policies.  See the module comment.
pub struct Core {
    cfg: Config,
    log: Logger,
    backends: Backends,
    remotes: Remotes,
    timeouts: Timeouts<TimerKey>,
    links: HashMap<BackendId, Link, RandomState>,
    inflight: inflight::InFlight,
    counters: Counters,
    tcp: tcp::TcpSessions,
    next_conn_id: u64,
    accepting: bool,
    phase: Phase,
    /// When the core started: per-remote rate limits count seconds from it.
    started: Instant,
    repeat_logs: RepeatLogs,
    /// Answers to clients the core keeps no state for (refused by the
    /// access list), limited per address.
    stateless_answers: AddressBudgets,
    /// `--max-qps-per-client` for clients served without a remote.
    untracked_queries: AddressBudgets,
    /// Hashes clients served without a remote (the table full) to a
    /// backend.  Randomly seeded, fixed for the process.
    client_hasher: RandomState,
    /// The most remotes tracked since memory was last given back.
    remotes_peak: usize,
    /// `--hedge-after` and the hedge budget.
    hedging: hedge::Hedging,
    /// Scratch for the queries due for a hedge (kept to reuse its memory).
    hedges_due: Vec<inflight::QueryKey>,
    /// `--cache-size`: answers kept to answer repeats, and to serve stale.
    cache: cache::PacketCache,
}

impl Core {
    /// A core for `config`, starting at `now`.  Call [`Core::start`] next.
    pub fn new(config: Config, log: Logger, now: Instant) -> Core {
        let hedging = hedge::Hedging::new(config.hedge_after, config.hedge_budget_percent);
        let packet_cache = cache::PacketCache::new(config.cache);
        let inflight = inflight::InFlight::new(
            inflight::Limits {
                total: config.max_inflight,
                per_backend: config.max_inflight_per_backend,
            },
            hedging.is_on(),
        );
        Core {
            cfg: config,
            log,
            backends: Backends::new(),
            remotes: Remotes::new(now),
            timeouts: Timeouts::new(),
            links: HashMap::default(),
            inflight,
            counters: Counters::default(),
            tcp: tcp::TcpSessions::default(),
            next_conn_id: 0,
            accepting: true,
            phase: Phase::Serving,
            started: now,
            repeat_logs: RepeatLogs::default(),
            stateless_answers: AddressBudgets::default(),
            untracked_queries: AddressBudgets::default(),
            client_hasher: RandomState::default(),
            remotes_peak: 0,
            hedging,
            hedges_due: Vec::new(),
            cache: packet_cache,
        }
    }

    /// Whole seconds since the core started: the clock of the per-second
    /// budgets.
    fn second(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.started).as_secs() as u32
    }

    /// Scan the socket directory and arm the periodic timers.
    pub fn start(&mut self, now: Instant, io: &mut impl Io) {
        if !self.cfg.cache.serve_stale.is_zero() && self.cfg.cache.entries == 0 {
            warn!(
                self.log,
                "--serve-stale has no effect without --cache-size: nothing is cached"
            );
        }
        io.scan_directory();
        let t = &self.cfg.timers;
        let (scan, rebalance, sweep) = (t.scan_interval, t.rebalance_interval, t.expiry_sweep);
        self.timeouts.set(TimerKey::Scan, now + scan);
        self.timeouts.set(TimerKey::Rebalance, now + rebalance);
        self.timeouts.set(TimerKey::ExpirySweep, now + sweep);
    }

    /// The configuration the core runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Serving, draining or done.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether client datagrams should be read (not while draining).
    pub fn wants_datagrams(&self) -> bool {
        self.phase == Phase::Serving
    }

    /// Whether TCP connections should be accepted: not while draining, nor
    /// for a moment after a failed accept.
    pub fn wants_connections(&self) -> bool {
        self.phase == Phase::Serving && self.accepting
    }

    /// The earliest time [`Core::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timeouts.next_deadline()
    }

    /// The backend table, read-only (tests, stats).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The remotes, read-only (tests, stats).
    pub fn remotes(&self) -> &Remotes {
        &self.remotes
    }

    /// The in-flight table, read-only (tests, stats).
    pub fn inflight(&self) -> &inflight::InFlight {
        &self.inflight
    }

    /// The balancer's counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// TCP sessions open now.
    pub fn tcp_sessions_open(&self) -> usize {
        self.tcp.len()
    }

    /// The generation of backend `id`'s current link, if it
    /// has one (connecting or connected).
    pub fn link_generation(&self, id: BackendId) -> Option<u64> {
        self.links.get(&id).map(|s| s.generation)
    }

    /// Whether backend `id`'s link holds part of a frame: bytes read that
    /// the rest of their frame has yet to follow.
    pub fn link_mid_frame(&self, id: BackendId) -> bool {
        self.links.get(&id).is_some_and(|l| l.frames.pending() > 0)
    }

    /// Answers gathered from backends were sent: `sent` left, `failed` did
    /// not (a full socket buffer drops them, as UDP may).
    pub fn on_replies_sent(&mut self, sent: u64, failed: u64) {
        self.counters.udp_replies += sent;
        self.counters.udp_replies_failed += failed;
    }

    /// A signal arrived.
    pub fn on_signal(&mut self, now: Instant, signal: Signal, io: &mut impl Io) {
        match signal {
            Signal::Terminate if self.phase != Phase::Serving => {
                info!(self.log, "second signal: exiting now");
                self.phase = Phase::Exit;
            }
            Signal::Terminate => {
                // Stop taking new work; let queries in flight be answered
                // and TCP sessions finish, for at most the grace period.
                let grace = self.cfg.timers.drain_timeout;
                info!(self.log, "shutting down (draining)";
                    "inflight" => self.inflight.len(), "tcp_sessions" => self.tcp.len(),
                    "grace_secs" => grace.as_secs_f64());
                self.phase = Phase::Draining;
                self.timeouts.set(TimerKey::DrainDeadline, now + grace);
                self.check_drained();
            }
            Signal::Rescan => {
                info!(self.log, "rescanning socket directory (SIGHUP)");
                io.scan_directory();
            }
            Signal::DumpCounters => self.log_counters(),
            Signal::FlushCache => {
                self.flush_cache("SIGUSR2");
            }
        }
    }

    /// Empty the packet cache, asked `by` a signal or a stats request;
    /// returns how many entries it held.
    pub fn flush_cache(&mut self, by: &str) -> usize {
        let n = self.cache.flush();
        self.counters.cache_flushed += n as u64;
        info!(self.log, "cache flushed"; "by" => by, "entries" => n);
        n
    }

    /// A backend answered a query over TCP (a session's answer, paired by
    /// [`tcp_learn`]): learn it as an answer over UDP is learned, unless
    /// the cache holds a fresh answer for it already (as a UDP query the
    /// cache answers never reaches a backend to be learned again).
    pub fn learn_tcp_answer(&mut self, a: &TcpAnswer) {
        if !self.cache.is_on() || self.cache.holds_fresh(&a.query, a.at) {
            return;
        }
        let learned = self.cache.learn(&a.query, &a.answer, a.at);
        if matches!(learned, cache::Learn::Stored { .. }) {
            self.counters.cache_stored_tcp += 1;
        }
        learned.count(&mut self.counters);
    }

    /// Answers over TCP not learned because they waited too long to be
    /// taken (the bound of [`tcp_learn`]).
    pub fn on_tcp_answers_dropped(&mut self, n: u64) {
        self.counters.cache_not_stored += n;
    }

    /// The packet cache's size and bounds.
    pub fn cache_view(&self) -> cache::CacheView {
        self.cache.view()
    }

    /// While draining: exit once no query is in flight and no TCP session
    /// is open.
    fn check_drained(&mut self) {
        if self.phase == Phase::Draining && self.inflight.is_empty() && self.tcp.len() == 0 {
            info!(self.log, "drained: exiting");
            self.phase = Phase::Exit;
        }
    }

    /// Log every counter: one record for the balancer, one per backend.
    pub fn log_counters(&self) {
        info!(self.log, "counters";
            "remotes" => self.remotes.len(), "inflight" => self.inflight.len(),
            &self.counters, "tcp_sessions_open" => self.tcp.len());
        for be in self.backends.iter() {
            let s = &be.stats;
            info!(self.backend_log(be.id), "backend counters";
                "state" => be.state_name(), "ok" => be.is_ok(), "remotes" => be.remotes,
                "inflight" => self.inflight.count_for(be.id), "caps" => be.caps(),
                s);
        }
    }

    /// A logger for one backend, with its id and socket path.
    fn backend_log(&self, id: BackendId) -> Logger {
        match self.backends.get(id) {
            Some(be) => self
                .log
                .new(o!("be_id" => id, "be_path" => be.path.display().to_string())),
            None => self.log.new(o!("be_id" => id)),
        }
    }
}
