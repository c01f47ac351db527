//! EVENT LOOP
//!
//! One task on a current-thread runtime owns all balancing state: the backend
//! table ([`Backends`]), the remotes ([`Remotes`]), the timeouts
//! ([`Timeouts`]) and the UDP socket.  It wakes for four things:
//!
//! - datagrams on the UDP sockets, which it checks ([`crate::intake`]),
//!   records in the in-flight table ([`crate::inflight`]) and queues toward
//!   the client's backend ([`crate::udp_relay`]), or answers itself when no
//!   backend can take them ([`crate::synth`]);
//! - news from a backend's control session, which it decodes and acts on:
//!   hello and capabilities, heartbeat replies, answers to send (only to
//!   clients that asked), faults, after which the queries the backend held
//!   are replayed to other backends ([`crate::link`]);
//! - TCP connections, which it assigns to a backend and hands to a session
//!   task ([`crate::tcp_relay`]);
//! - timers: directory scan, reconnects, hello and heartbeat deadlines,
//!   query deadlines, the passive health check, rebalancing and remote
//!   expiry.
//!
//! Because one task makes every decision, decisions need no locks and are
//! made in the order events happened.  Work that can block (connecting,
//! writing to a slow backend, relaying a TCP stream) happens in other tasks
//! that report back through bounded channels.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use foldhash::fast::RandomState;
use hickory_proto::op::ResponseCode;
use slog::{Logger, debug, error, info, o, trace, warn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backends::{BackendId, Backends, LinkState, Need};
use crate::cli::{Config, NoBackend, OnTimeout};
use crate::frame::{Frame, FrameBuffer, FrameError, frame_type};
use crate::inflight::{self, InFlight, QueryKey, Unmatched};
use crate::intake::{self, Refusal};
use crate::link::{self, LinkEvent, OutQueue};
use crate::remotes::{Choice, Remotes};
use crate::sidecar::Sidecar;
use crate::stats::{
    BackendView, Counters, RemoteView, STATS_QUEUE, STATS_VERSION, StatsHandle, StatsRequest,
    Summary, WallClock,
};
use crate::synth;
use crate::tcp_relay::{self, Session, SessionEvent};
use crate::timeouts::Timeouts;
use crate::udp_relay::{Datagram, RECV_CALLS, UdpCounters, UdpRelay};
use crate::{metrics, stats_socket};

/// The TCP listen backlog, as in the original: enough for a burst of
/// resolvers retrying over TCP at once.
const TCP_BACKLOG: i32 = 1000;

/// Events queued from link and session tasks toward the loop.  When full,
/// those tasks wait, which slows reading from backends: backpressure, not
/// growth.
const EVENT_QUEUE: usize = 1024;

/// After a failed accept (out of file descriptors, say), wait this long
/// before accepting again rather than spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Per-backend and per-cause warnings that can repeat under load are logged
/// at most this often.
const REPEAT_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// An expiry sweep that forgets at least this many remotes returns freed
/// memory to the system.
const RELEASE_MEMORY_AFTER: usize = 10_000;

/// sockaddr_un's sun_path holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 108;

/// The bound sockets, created before the loop starts so that a caller (or
/// test) knows the port before any traffic flows.  One UDP socket and one
/// TCP listener per listen address, all on the same port.
pub struct Listeners {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
}

impl Listeners {
    pub fn local_port(&self) -> io::Result<u16> {
        match self.udp.first() {
            Some(s) => Ok(s.local_addr()?.port()),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no listeners")),
        }
    }
}

/// A socket for `addr`.  An IPv6 socket is v6-only when IPv4 addresses are
/// listened on separately (else the two would collide on the port); alone,
/// `::` is dual-stack and serves IPv4 clients too.
fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol, v6_only: bool) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(v6_only)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Bind the UDP and TCP listeners on every listen address, on one port.
/// With port 0, the first UDP socket picks a free port and every other
/// socket binds the same number.
pub fn bind(config: &Config, log: &Logger) -> io::Result<Listeners> {
    let with_context = |what: &str, addr: SocketAddr, e: io::Error| {
        error!(log, "{}", what; "address" => addr.ip().to_string(),
            "port" => addr.port().to_string(), "errno" => e.raw_os_error().unwrap_or(0),
            "strerror" => e.to_string());
        io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
    };
    let any_v4 = config.listen_addrs.iter().any(IpAddr::is_ipv4);
    let mut port = config.port;
    let mut listeners = Listeners {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for &ip in &config.listen_addrs {
        let addr = SocketAddr::new(ip, port);
        let udp = new_socket(addr, Type::DGRAM, Protocol::UDP, any_v4)
            .and_then(|s| {
                s.bind(&addr.into())?;
                UdpSocket::from_std(s.into())
            })
            .map_err(|e| with_context("failed to bind UDP listen socket", addr, e))?;
        let udp_addr = udp.local_addr()?;
        port = udp_addr.port();
        info!(log, "listening for UDP packets";
            "address" => udp_addr.ip().to_string(), "port" => port.to_string());

        let tcp_addr = SocketAddr::new(ip, port);
        let tcp = new_socket(tcp_addr, Type::STREAM, Protocol::TCP, any_v4)
            .and_then(|s| {
                s.set_reuse_address(true)?;
                s.bind(&tcp_addr.into())?;
                s.listen(TCP_BACKLOG)?;
                TcpListener::from_std(s.into())
            })
            .map_err(|e| with_context("failed to create TCP listen socket", tcp_addr, e))?;
        info!(log, "listening for TCP packets";
            "address" => tcp_addr.ip().to_string(), "port" => port.to_string());
        listeners.udp.push(udp);
        listeners.tcp.push(tcp);
    }
    Ok(listeners)
}

/// Accept from whichever listener has a connection waiting.
async fn accept_any(listeners: &[TcpListener]) -> io::Result<(TcpStream, SocketAddr)> {
    poll_fn(|cx| {
        for l in listeners {
            if let Poll::Ready(r) = l.poll_accept(cx) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    })
    .await
}

/// What a timeout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TimerKey {
    Scan,
    Rebalance,
    ExpirySweep,
    AcceptResume,
    /// The earliest deadline in the in-flight table.
    QueryDeadline,
    /// Look for backends that leave queries unanswered.
    PassiveCheck,
    /// The end of the shutdown grace period.
    DrainDeadline,
    Reconnect(BackendId),
    /// Connect and hello must complete by then.
    Hello(BackendId),
    HeartbeatSend(BackendId),
    HeartbeatTimeout(BackendId),
}

/// The I/O side of one backend's current control session.
struct Link {
    generation: u64,
    queue: Arc<OutQueue>,
    task: AbortHandle,
    frames: FrameBuffer,
    /// When a stuck drop was last logged for this backend.
    stuck_logged: Option<Instant>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closing the socket is the task's business; aborting it drops the
        // stream.
        self.task.abort();
    }
}

/// Counters of the whole balancer that belong to no backend or remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpCounters {
    pub accepted: u64,
    pub dropped_no_backend: u64,
    pub dropped_session_limit: u64,
}

/// A log line that may repeat under load, emitted at most once per interval.
#[derive(Debug, Default)]
struct RateLimit {
    last: Option<Instant>,
}

impl RateLimit {
    fn allow(&mut self, now: Instant, every: Duration) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < every => false,
            _ => {
                self.last = Some(now);
                true
            }
        }
    }
}

struct Balancer {
    cfg: Config,
    log: Logger,
    backends: Backends,
    remotes: Remotes,
    timeouts: Timeouts<TimerKey>,
    links: HashMap<BackendId, Link, RandomState>,
    inflight: InFlight,
    udp: UdpRelay,
    udp_counters: UdpCounters,
    tcp_counters: TcpCounters,
    link_tx: mpsc::Sender<LinkEvent>,
    session_tx: mpsc::Sender<SessionEvent>,
    sessions: Arc<Semaphore>,
    accepting: bool,
    /// A shutdown signal came: no new work, exit once idle.
    draining: bool,
    next_conn_id: u64,
    /// Seconds are counted from here for the per-remote rate limits.
    started: Instant,
    no_backend_log: RateLimit,
    oversized_log: RateLimit,
    inflight_full_log: RateLimit,
    unsolicited_log: RateLimit,
    session_limit_log: RateLimit,
}

/// What a datagram led to, once the borrow of the receive buffer ends.
enum Outcome {
    Done,
    /// Send this answer (synthesized) to the client.
    Answer(Vec<u8>),
}

/// The parts of the loop's state that forwarding one datagram touches,
/// borrowed apart from the UDP relay whose buffer holds the datagram.
struct Forwarding<'a> {
    cfg: &'a Config,
    log: &'a Logger,
    backends: &'a mut Backends,
    remotes: &'a mut Remotes,
    links: &'a mut HashMap<BackendId, Link, RandomState>,
    inflight: &'a mut InFlight,
    counters: &'a mut UdpCounters,
    /// Seconds since start, for per-remote rate limits.
    second: u32,
    no_backend_log: &'a mut RateLimit,
    oversized_log: &'a mut RateLimit,
    inflight_full_log: &'a mut RateLimit,
}

impl Forwarding<'_> {
    /// Check one client datagram and queue it toward its backend, or decide
    /// what the client gets instead.
    fn forward(&mut self, dgram: &mut Datagram<'_>, now: Instant) -> Outcome {
        self.counters.received += 1;
        let ip = dgram.ip;
        if dgram.is_oversized() {
            self.counters.dropped_oversized += 1;
            if self.oversized_log.allow(now, Duration::from_secs(1)) {
                warn!(self.log, "dropping oversized UDP packet";
                    "remote_ip" => %ip, "len" => dgram.len,
                    "dropped" => self.counters.dropped_oversized);
            }
            return Outcome::Done;
        }
        let dns_id = match intake::check(dgram.payload()) {
            Ok(id) => id,
            Err(refusal) => {
                match refusal {
                    Refusal::Short => self.counters.dropped_short += 1,
                    Refusal::Response => self.counters.dropped_response += 1,
                    Refusal::BadQuestion => self.counters.dropped_malformed += 1,
                }
                debug!(self.log, "dropping UDP packet"; "reason" => refusal.name(),
                    "remote_ip" => %ip, "len" => dgram.len);
                return Outcome::Done;
            }
        };
        let (rem, created) = self.remotes.touch(ip, now);
        if created {
            info!(self.log, "new remote peer"; "remote_ip" => %ip);
        }
        let choice = rem.choose_backend_for(self.backends, Need::of(&ip));
        log_reassignment(self.log, &ip, &choice);
        let Some(be_id) = choice.backend else {
            rem.stats.udp_drop += 1;
            self.counters.dropped_no_backend += 1;
            if self
                .no_backend_log
                .allow(now, self.cfg.timers.no_backend_log_interval)
            {
                error!(self.log, "no backends available");
            }
            let rcode = match self.cfg.no_backend {
                NoBackend::Drop => return Outcome::Done,
                NoBackend::ServFail => ResponseCode::ServFail,
                NoBackend::Refused => ResponseCode::Refused,
            };
            if !rem.allow_synthesized(self.second, self.cfg.synth_rate) {
                self.counters.no_backend_rate_limited += 1;
                return Outcome::Done;
            }
            return match synth::error_answer(dgram.payload(), rcode) {
                Some(answer) => Outcome::Answer(answer),
                None => Outcome::Done,
            };
        };
        // An ok backend always has a link, and a chosen backend can always
        // take the client's frame; were either untrue, the drop is counted
        // with those that found no backend, so every datagram is counted.
        let (Some(link), Some(be)) = (self.links.get_mut(&be_id), self.backends.get_mut(be_id))
        else {
            rem.stats.udp_drop += 1;
            self.counters.dropped_no_backend += 1;
            return Outcome::Done;
        };
        let listener = dgram.listener;
        let port = dgram.src.port();
        let Some((frame, header_len)) = dgram.inbound_frame() else {
            rem.stats.udp_drop += 1;
            self.counters.dropped_no_backend += 1;
            return Outcome::Done;
        };
        let key = QueryKey {
            client: SocketAddr::new(ip, port),
            id: dns_id,
        };
        let timeout = self.cfg.timers.query_timeout;
        let inserted = match self
            .inflight
            .insert(key, be_id, listener, now, timeout, frame, header_len)
        {
            Ok(i) => i,
            Err(full) => {
                rem.stats.udp_drop += 1;
                self.counters.dropped_inflight_full += 1;
                if self.inflight_full_log.allow(now, REPEAT_LOG_INTERVAL) {
                    warn!(self.log, "too many queries in flight (dropping)";
                            "limit" => if full == inflight::Full::Total { "total" } else { "backend" },
                            "be_id" => be_id, "dropped" => self.counters.dropped_inflight_full);
                }
                return Outcome::Done;
            }
        };
        if link.queue.push(&[frame]).is_ok() {
            rem.stats.udp += 1;
            be.stats.udp += 1;
            be.unanswered_since.get_or_insert(now);
            self.counters.forwarded += 1;
            return Outcome::Done;
        }
        // The backend is not keeping up: drop rather than queue.
        if inserted == inflight::Inserted::New
            && let Some(e) = self.inflight.remove(&key)
        {
            self.inflight.recycle(e);
        }
        rem.stats.udp_drop += 1;
        be.stats.stuck += 1;
        self.counters.dropped_stuck += 1;
        if link
            .stuck_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= REPEAT_LOG_INTERVAL)
        {
            link.stuck_logged = Some(now);
            warn!(self.log, "stuck backend write queue (dropping)";
                "be_id" => be_id, "be_path" => %be.path.display(),
                "stuck" => be.stats.stuck, "queued_bytes" => self.cfg.backend_queue_bytes);
        }
        Outcome::Done
    }
}

/// Log a change of a remote's backend in the original's words.
fn log_reassignment(log: &Logger, ip: &IpAddr, choice: &Choice) {
    if let Some(change) = choice.change {
        info!(log, "{}", change.message(); "remote_ip" => %ip, "be_id" => change.backend());
    }
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Signal(Signal),
    Stats(StatsRequest),
    Link(LinkEvent),
    Session(SessionEvent),
    Udp,
    Accept(io::Result<(TcpStream, SocketAddr)>),
    Timer,
}

/// Run the balancer on `listeners` until `shutdown` completes.
pub async fn run(
    config: Config,
    log: Logger,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let (link_tx, mut link_rx) = mpsc::channel(EVENT_QUEUE);
    let (session_tx, mut session_rx) = mpsc::channel(EVENT_QUEUE);
    let (stats_tx, mut stats_rx) = mpsc::channel(STATS_QUEUE);
    let stats = StatsHandle::new(stats_tx);
    let stats_socket = match &config.stats_socket {
        Some(path) => Some(
            stats_socket::bind(path, config.stats_mode).inspect_err(|e| {
                error!(log, "failed to create stats socket"; "path" => path.display().to_string(),
                "strerror" => e.to_string());
            })?,
        ),
        None => None,
    };
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).map_err(|e| {
            error!(log, "failed to bind metrics listener"; "address" => addr.to_string(),
                "strerror" => e.to_string());
            io::Error::new(e.kind(), format!("metrics listener {addr}: {e}"))
        })?),
        None => None,
    };
    // Serializing for stats and metrics happens on the sidecar's thread.
    let sidecar = Sidecar::start(stats_socket, metrics_listener, stats, log.clone())?;
    let Listeners { udp, tcp } = listeners;
    let (udp, granted) = UdpRelay::new(udp, config.udp_recv_buffer)?;
    if let Some(bytes) = granted {
        // The kernel reports twice what it accounts for data (the rest is
        // its bookkeeping); a figure well below the request means
        // net.core.rmem_max capped it.
        info!(log, "UDP receive buffer"; "requested" => config.udp_recv_buffer,
            "granted" => bytes);
    }
    let now = Instant::now();
    let inflight = InFlight::new(inflight::Limits {
        total: config.max_inflight,
        per_backend: config.max_inflight_per_backend,
    });
    let mut b = Balancer {
        inflight,
        sessions: Arc::new(Semaphore::new(config.max_tcp_sessions)),
        cfg: config,
        log,
        backends: Backends::new(),
        remotes: Remotes::new(),
        timeouts: Timeouts::new(),
        links: HashMap::default(),
        udp,
        udp_counters: UdpCounters::default(),
        tcp_counters: TcpCounters::default(),
        link_tx,
        session_tx,
        accepting: true,
        draining: false,
        next_conn_id: 0,
        started: now,
        no_backend_log: RateLimit::default(),
        oversized_log: RateLimit::default(),
        inflight_full_log: RateLimit::default(),
        unsolicited_log: RateLimit::default(),
        session_limit_log: RateLimit::default(),
    };
    b.scan_socket_dir(now);
    let t = b.cfg.timers.clone();
    b.timeouts.set(TimerKey::Scan, now + t.scan_interval);
    b.timeouts
        .set(TimerKey::Rebalance, now + t.rebalance_interval);
    b.timeouts.set(TimerKey::ExpirySweep, now + t.expiry_sweep);

    tokio::pin!(shutdown);
    let mut signals = Signals::install();
    let mut tcp = Some(tcp);
    loop {
        if b.draining && b.drained() {
            info!(b.log, "drained: exiting");
            break;
        }
        let deadline = b
            .timeouts
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let intake = !b.draining;
        let wake = tokio::select! {
            biased;
            _ = &mut shutdown => Wake::Shutdown,
            sig = signals.next() => Wake::Signal(sig),
            Some(ev) = link_rx.recv() => Wake::Link(ev),
            Some(ev) = session_rx.recv() => Wake::Session(ev),
            // Each request is answered with a bounded copy (one page of
            // remotes at most), so serving stats cannot stall traffic.
            Some(req) = stats_rx.recv() => Wake::Stats(req),
            r = b.udp.readable(), if intake => match r {
                Ok(()) => Wake::Udp,
                Err(e) => return Err(e),
            },
            r = accept_any(tcp.as_deref().unwrap_or(&[])), if b.accepting && intake => {
                Wake::Accept(r)
            }
            _ = tokio::time::sleep_until(deadline) => Wake::Timer,
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Signal(Signal::Terminate) if b.draining => {
                info!(b.log, "second signal: exiting now");
                break;
            }
            Wake::Signal(Signal::Terminate) => {
                // Stop taking new work; let queries in flight be answered and
                // TCP sessions finish, for at most the grace period.
                let grace = b.cfg.timers.drain_timeout;
                info!(b.log, "shutting down (draining)";
                    "inflight" => b.inflight.len(), "tcp_sessions" => b.open_sessions(),
                    "grace_secs" => grace.as_secs_f64());
                b.draining = true;
                tcp = None;
                b.timeouts
                    .set(TimerKey::DrainDeadline, Instant::now() + grace);
            }
            Wake::Signal(Signal::Rescan) => {
                info!(b.log, "rescanning socket directory (SIGHUP)");
                b.scan_socket_dir(Instant::now());
            }
            Wake::Signal(Signal::DumpCounters) => b.log_counters(),
            Wake::Stats(req) => b.on_stats_request(req),
            Wake::Link(ev) => b.on_link_event(ev),
            Wake::Session(ev) => b.on_session_event(ev),
            Wake::Udp => b.udp_intake(),
            Wake::Accept(r) => b.on_accept(r),
            Wake::Timer => {
                if b.run_due_timers() {
                    warn!(b.log, "drain grace period over: exiting";
                        "inflight" => b.inflight.len(), "tcp_sessions" => b.open_sessions());
                    break;
                }
            }
        }
    }
    info!(b.log, "shutting down");
    drop(stats_rx);
    drop(sidecar);
    Ok(())
}

/// A signal the loop acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or SIGINT: drain, then exit; a second one exits at once.
    Terminate,
    /// SIGHUP: rescan the socket directory now.
    Rescan,
    /// SIGUSR1: log every counter.
    DumpCounters,
}

/// The process signals the loop listens to.  A handler that cannot be
/// installed is left out (the signal's default action then applies).
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
    usr1: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
            usr1: signal(SignalKind::user_defined1()).ok(),
        }
    }

    async fn next(&mut self) -> Signal {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    if s.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => Signal::Terminate,
            _ = recv(&mut self.int) => Signal::Terminate,
            _ = recv(&mut self.hup) => Signal::Rescan,
            _ = recv(&mut self.usr1) => Signal::DumpCounters,
        }
    }
}

impl Balancer {
    fn open_sessions(&self) -> usize {
        self.cfg.max_tcp_sessions - self.sessions.available_permits()
    }

    /// Nothing left to finish: no query in flight, no TCP session open.
    fn drained(&self) -> bool {
        self.inflight.is_empty() && self.open_sessions() == 0
    }

    /// Log every counter: one record for the balancer, one per backend.
    fn log_counters(&self) {
        let u = &self.udp_counters;
        let t = &self.tcp_counters;
        info!(self.log, "counters";
            "remotes" => self.remotes.len(), "inflight" => self.inflight.len(),
            "udp_received" => u.received, "udp_forwarded" => u.forwarded,
            "udp_replies" => u.replies, "udp_replies_failed" => u.replies_failed,
            "dropped_oversized" => u.dropped_oversized, "dropped_short" => u.dropped_short,
            "dropped_response" => u.dropped_response, "dropped_malformed" => u.dropped_malformed,
            "dropped_no_backend" => u.dropped_no_backend, "dropped_stuck" => u.dropped_stuck,
            "dropped_inflight_full" => u.dropped_inflight_full,
            "no_backend_answers" => u.no_backend_answers,
            "no_backend_rate_limited" => u.no_backend_rate_limited,
            "timeouts" => u.timeouts, "timeout_answers" => u.timeout_answers,
            "late_answers" => u.late_answers, "unsolicited_answers" => u.unsolicited_answers,
            "replayed" => u.replayed,
            "tcp_accepted" => t.accepted, "tcp_dropped_no_backend" => t.dropped_no_backend,
            "tcp_dropped_session_limit" => t.dropped_session_limit,
            "tcp_sessions_open" => self.open_sessions());
        for be in self.backends.iter() {
            let s = &be.stats;
            info!(self.backend_log(be.id), "backend counters";
                "state" => be.state_name(), "ok" => be.is_ok(), "remotes" => be.remotes,
                "inflight" => self.inflight.count_for(be.id), "caps" => be.caps,
                "udp" => s.udp, "udp_replies" => s.udp_replies, "tcp" => s.tcp,
                "stuck" => s.stuck, "timeouts" => s.timeouts, "conn_start" => s.conn_start,
                "conn_error" => s.conn_error, "faults" => s.faults,
                "passive_faults" => s.passive_faults, "replayed_away" => s.replayed_away,
                "latency_count" => s.latency.count,
                "latency_avg_us" => s.latency.sum_us.checked_div(s.latency.count).unwrap_or(0),
                "latency_max_us" => s.latency.max_us);
        }
    }

    /// Answer a stats request with a copy of what it asks for.  An asker
    /// that has gone away is no concern of the loop's.
    fn on_stats_request(&self, req: StatsRequest) {
        let clock = WallClock::now();
        let remote_view = |ip: IpAddr, r: &crate::remotes::Remote| {
            RemoteView::of(ip, r, |ms| self.remotes.seen_at(ms), &clock)
        };
        match req {
            StatsRequest::Summary(reply) => {
                let _ = reply.send(Summary {
                    version: STATS_VERSION,
                    pid: std::process::id(),
                    started_ms: clock.unix_ms(self.started),
                    now_ms: clock.unix_ms(Instant::now()),
                    remotes_tracked: self.remotes.len(),
                    inflight: self.inflight.len(),
                    tcp_sessions_open: self.open_sessions(),
                    draining: self.draining,
                    counters: Counters::of(&self.udp_counters, &self.tcp_counters),
                    backends: self
                        .backends
                        .iter()
                        .map(|be| BackendView::of(be, self.inflight.count_for(be.id) as usize))
                        .collect(),
                });
            }
            StatsRequest::Remotes {
                after,
                limit,
                reply,
            } => {
                let page = self
                    .remotes
                    .after(after)
                    .take(limit)
                    .map(|(ip, r)| remote_view(ip, r))
                    .collect();
                let _ = reply.send(page);
            }
            StatsRequest::Remote { ip, reply } => {
                let _ = reply.send(self.remotes.get(&ip).map(|r| remote_view(ip, r)));
            }
        }
    }

    fn backend_log(&self, id: BackendId) -> Logger {
        match self.backends.get(id) {
            Some(be) => self
                .log
                .new(o!("be_id" => id, "be_path" => be.path.display().to_string())),
            None => self.log.new(o!("be_id" => id)),
        }
    }

    // ---- socket directory ------------------------------------------------

    fn scan_socket_dir(&mut self, now: Instant) {
        let dir = self.cfg.socket_dir.clone();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                error!(self.log, "error opening socket directory";
                    "socket_dir" => dir.display().to_string(),
                    "errno" => e.raw_os_error().unwrap_or(0), "error" => e.to_string());
                return;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    error!(self.log, "error reading socket directory";
                        "socket_dir" => dir.display().to_string(),
                        "errno" => e.raw_os_error().unwrap_or(0), "error" => e.to_string());
                    break;
                }
            };
            let path = entry.path();
            if path.as_os_str().len() >= SUN_PATH_MAX {
                error!(self.log, "backend socket path is too long";
                    "socket_path" => path.display().to_string());
                continue;
            }
            self.found_socket(&path, now);
        }
    }

    fn found_socket(&mut self, path: &Path, now: Instant) {
        let id = match self.backends.by_path(path) {
            Some(be) if be.removed => {
                let id = be.id;
                info!(self.backend_log(id), "backend socket returned (connecting)");
                if let Some(be) = self.backends.get_mut(id) {
                    be.removed = false;
                }
                id
            }
            Some(_) => return,
            None => {
                let id = self.backends.insert(path);
                info!(self.backend_log(id), "new backend");
                id
            }
        };
        if let Some(be) = self.backends.get_mut(id) {
            be.backoff.reset_immediate();
        }
        self.schedule_reconnect(id, now);
    }

    // ---- control sessions ------------------------------------------------

    fn schedule_reconnect(&mut self, id: BackendId, now: Instant) {
        let timers = &self.cfg.timers;
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        if be.removed {
            // Only a directory scan that finds the socket again revives it.
            be.state = LinkState::Down;
            return;
        }
        let delay = be.backoff.next_delay(timers);
        be.state = LinkState::ReconnectPending;
        debug!(self.backend_log(id), "reconnect triggered for backend";
            "delay_secs" => delay.as_secs_f64());
        self.timeouts.set(TimerKey::Reconnect(id), now + delay);
    }

    fn connect(&mut self, id: BackendId, now: Instant) {
        let log = self.backend_log(id);
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        info!(log, "connecting to backend");
        be.generation += 1;
        be.stats.conn_start += 1;
        be.state = LinkState::Connecting;
        let generation = be.generation;
        let queue = OutQueue::new(self.cfg.backend_queue_bytes);
        let task = tokio::spawn(link::run(
            id,
            generation,
            be.path.clone(),
            queue.clone(),
            self.link_tx.clone(),
        ));
        self.links.insert(
            id,
            Link {
                generation,
                queue,
                task: task.abort_handle(),
                frames: FrameBuffer::new(),
                stuck_logged: None,
            },
        );
        self.timeouts
            .set(TimerKey::Hello(id), now + self.cfg.timers.connect_timeout);
    }

    /// Take a backend out of service: close its control session and
    /// schedule a reconnect.  The cause has been logged by the caller.
    fn fault(&mut self, id: BackendId, now: Instant) {
        let log = self.backend_log(id);
        let Some(be) = self.backends.get_mut(id) else {
            return;
        };
        if be.is_ok() {
            error!(log, "backend faulted (reset and reconnect)");
        }
        be.stats.faults += 1;
        self.close_link(id);
        info!(log, "backend socket closed");
        self.schedule_reconnect(id, now);
        self.replay_inflight(id, now);
    }

    /// Send each query in flight to a failed backend once more, to its
    /// remote's new backend.  Queries already replayed once, or with no
    /// backend to go to, stay in the table and meet their deadline.
    fn replay_inflight(&mut self, from: BackendId, now: Instant) {
        let mut replayed = 0u64;
        for key in self.inflight.keys_for(from) {
            if self.inflight.get(&key).is_none_or(|e| e.replayed) {
                continue;
            }
            let ip = key.client.ip();
            let Some(rem) = self.remotes.get_mut(&ip) else {
                continue;
            };
            let choice = rem.choose_backend_for(&mut self.backends, Need::of(&ip));
            log_reassignment(&self.log, &ip, &choice);
            let Some(to) = choice.backend else {
                continue;
            };
            let (Some(link), Some(frame)) = (self.links.get(&to), self.inflight.reassign(&key, to))
            else {
                continue;
            };
            // If the new backend's queue is full, the query meets its
            // deadline like any other unanswered one.
            let sent = link.queue.push(&[frame]).is_ok();
            replayed += 1;
            if let Some(be) = self.backends.get_mut(to) {
                if sent {
                    be.stats.udp += 1;
                }
                be.unanswered_since.get_or_insert(now);
            }
        }
        if replayed > 0 {
            self.udp_counters.replayed += replayed;
            if let Some(be) = self.backends.get_mut(from) {
                be.stats.replayed_away += replayed;
            }
            info!(self.backend_log(from), "replayed queries in flight to other backends";
                "count" => replayed);
        }
    }

    fn close_link(&mut self, id: BackendId) {
        self.links.remove(&id);
        if let Some(be) = self.backends.get_mut(id) {
            be.caps = 0;
            be.caps_pending = false;
            be.unanswered_since = None;
            be.probing = false;
        }
        for key in [
            TimerKey::Hello(id),
            TimerKey::HeartbeatSend(id),
            TimerKey::HeartbeatTimeout(id),
            TimerKey::Reconnect(id),
        ] {
            self.timeouts.clear(key);
        }
        if let Some(be) = self.backends.get_mut(id) {
            be.state = LinkState::Down;
        }
    }

    fn on_link_event(&mut self, ev: LinkEvent) {
        let (id, generation) = match &ev {
            LinkEvent::Connected { id, generation }
            | LinkEvent::ConnectFailed { id, generation, .. }
            | LinkEvent::Data { id, generation, .. }
            | LinkEvent::Closed { id, generation, .. } => (*id, *generation),
        };
        if self.links.get(&id).map(|l| l.generation) != Some(generation) {
            // News from a session we already abandoned.
            return;
        }
        let now = Instant::now();
        match ev {
            LinkEvent::Connected { .. } => {
                info!(self.backend_log(id), "backend socket connected");
                if let Some(be) = self.backends.get_mut(id) {
                    be.missing_once = false;
                    be.state = LinkState::AwaitingHello;
                    be.caps_pending = true;
                }
                // The second hello asks for capabilities: node-mname answers
                // every hello alike, so it reads a plain SERVER_HELLO back.
                let hello = frame_type::CLIENT_HELLO.to_le_bytes();
                if let Some(link) = self.links.get(&id) {
                    link.queue.push_control(&[hello, hello].concat());
                }
            }
            LinkEvent::ConnectFailed { error: e, .. } => {
                let log = self.backend_log(id);
                self.close_link(id);
                let Some(be) = self.backends.get_mut(id) else {
                    return;
                };
                be.stats.conn_error += 1;
                if e.kind() == io::ErrorKind::NotFound && !be.missing_once {
                    // Perhaps a restart between unlink and bind: look once
                    // more before deciding the socket is gone.
                    be.missing_once = true;
                    debug!(log, "backend socket missing (retrying once)");
                    self.schedule_reconnect(id, now);
                } else if e.kind() == io::ErrorKind::NotFound {
                    // The socket is gone: stop trying until a scan finds it.
                    be.removed = true;
                    be.missing_once = false;
                    info!(log, "backend socket removed");
                } else {
                    error!(log, "failed to connect";
                        "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
                    self.schedule_reconnect(id, now);
                }
            }
            LinkEvent::Data { bytes, .. } => {
                self.on_backend_bytes(id, &bytes, now);
                self.flush_replies();
            }
            LinkEvent::Closed { error: None, .. } => {
                warn!(self.backend_log(id), "backend socket EOF");
                self.fault(id, now);
            }
            LinkEvent::Closed { error: Some(e), .. } => {
                error!(self.backend_log(id), "backend socket error";
                    "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
                if let Some(be) = self.backends.get_mut(id) {
                    be.stats.conn_error += 1;
                }
                self.fault(id, now);
            }
        }
    }

    fn on_backend_bytes(&mut self, id: BackendId, bytes: &[u8], now: Instant) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        let generation = link.generation;
        let mut frames = std::mem::take(&mut link.frames);
        frames.extend(bytes);
        loop {
            let frame = match frames.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.on_frame_error(id, e);
                    self.fault(id, now);
                    return;
                }
            };
            if !self.on_frame(id, frame, now) {
                self.fault(id, now);
                return;
            }
        }
        if let Some(link) = self.links.get_mut(&id)
            && link.generation == generation
        {
            link.frames = frames;
        }
    }

    fn on_frame_error(&self, id: BackendId, e: FrameError) {
        let log = self.backend_log(id);
        match e {
            FrameError::UnknownType(t) => error!(log, "invalid frame type"; "frame_type" => t),
            FrameError::Oversized { len, .. } => {
                warn!(log, "backend sent oversized UDP packet"; "len" => len)
            }
            FrameError::BadPort { frame_type, port } => {
                error!(log, "invalid port in frame"; "frame_type" => frame_type, "port" => port)
            }
        }
    }

    /// Act on one frame from a control session.  Returns false when the
    /// frame breaks the protocol (the cause is logged): fault the backend.
    fn on_frame(&mut self, id: BackendId, frame: Frame<'_>, now: Instant) -> bool {
        let Some(be) = self.backends.get_mut(id) else {
            return false;
        };
        let state = be.state;
        let ready = be.is_ok();
        if !ready && frame != Frame::ServerHello {
            error!(self.backend_log(id), "errant frame before hello";
                "frame_type" => frame.frame_type());
            return false;
        }
        match frame {
            Frame::ServerHello if ready && be.caps_pending => {
                // The answer to our second hello from a backend that speaks
                // only the original protocol.
                be.caps_pending = false;
                be.caps = 0;
                debug!(self.backend_log(id), "backend speaks the original protocol");
            }
            Frame::ServerCapabilities { flags } if ready && be.caps_pending => {
                be.caps_pending = false;
                be.caps = flags;
                info!(self.backend_log(id), "backend capabilities"; "caps" => flags);
            }
            Frame::ServerHello => {
                if ready {
                    error!(self.backend_log(id), "duplicate hello from backend");
                    return false;
                }
                be.state = LinkState::Ready {
                    heartbeat_sent: None,
                };
                be.backoff.reset_after_success(&self.cfg.timers);
                info!(self.backend_log(id), "backend socket established");
                self.timeouts.clear(TimerKey::Hello(id));
                self.timeouts.set(
                    TimerKey::HeartbeatSend(id),
                    now + self.cfg.timers.heartbeat_interval,
                );
            }
            Frame::ServerHeartbeat => {
                let LinkState::Ready {
                    heartbeat_sent: Some(sent),
                } = state
                else {
                    error!(
                        self.backend_log(id),
                        "unexpected heartbeat response from backend"
                    );
                    return false;
                };
                be.state = LinkState::Ready {
                    heartbeat_sent: None,
                };
                if be.probing {
                    // Alive after all: restart the unanswered clock.
                    be.probing = false;
                    be.unanswered_since = (self.inflight.count_for(id) > 0).then_some(now);
                }
                let rtt = now.saturating_duration_since(sent);
                be.stats.heartbeat_rtt.record(rtt);
                be.stats.last_heartbeat_rtt_us =
                    Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
                trace!(self.backend_log(id), "received heartbeat reply";
                    "rtt_us" => rtt.as_micros() as u64);
                self.timeouts.clear(TimerKey::HeartbeatTimeout(id));
                self.timeouts.set(
                    TimerKey::HeartbeatSend(id),
                    now + self.cfg.timers.heartbeat_interval,
                );
            }
            Frame::OutboundUdp {
                addr,
                port,
                payload,
            } => {
                let dest = SocketAddr::new(addr, port);
                self.on_answer(id, dest, payload, now);
            }
            other => {
                error!(self.backend_log(id), "invalid frame type";
                    "frame_type" => other.frame_type());
                return false;
            }
        }
        true
    }

    /// An OUTBOUND_UDP from backend `id`: send it only if it answers a query
    /// in flight to that backend.
    fn on_answer(&mut self, id: BackendId, dest: SocketAddr, payload: &[u8], now: Instant) {
        let matched = match intake::dns_id(payload) {
            Some(dns_id) => self.inflight.answer(
                QueryKey {
                    client: dest,
                    id: dns_id,
                },
                id,
            ),
            None => Err(Unmatched::Unsolicited),
        };
        let answered = match matched {
            Ok(a) => a,
            Err(Unmatched::Late) => {
                self.udp_counters.late_answers += 1;
                debug!(self.backend_log(id), "dropping late answer";
                    "dest_ip" => %dest.ip(), "dest_port" => dest.port());
                return;
            }
            Err(Unmatched::Unsolicited) => {
                self.udp_counters.unsolicited_answers += 1;
                if self.unsolicited_log.allow(now, REPEAT_LOG_INTERVAL) {
                    warn!(self.backend_log(id), "dropping answer to a query never asked";
                        "dest_ip" => %dest.ip(), "dest_port" => dest.port(),
                        "dropped" => self.udp_counters.unsolicited_answers);
                }
                return;
            }
        };
        let owed = self.inflight.count_for(id) > 0;
        if let Some(be) = self.backends.get_mut(id) {
            be.stats.udp_replies += 1;
            be.stats
                .latency
                .record(now.saturating_duration_since(answered.sent_at));
            be.unanswered_since = owed.then_some(now);
        }
        self.udp.queue_reply(answered.listener, payload, dest);
    }

    /// Send the answers gathered from the last batch of backend frames.
    fn flush_replies(&mut self) {
        let (sent, dropped) = self.udp.flush_replies();
        self.udp_counters.replies += sent;
        self.udp_counters.replies_failed += dropped;
    }

    // ---- timers ------------------------------------------------------------

    /// Run every timer that is due.  Returns true when the shutdown grace
    /// period is over.
    fn run_due_timers(&mut self) -> bool {
        let now = Instant::now();
        while let Some(key) = self.timeouts.pop_due(now) {
            match key {
                TimerKey::DrainDeadline => return true,
                TimerKey::Scan => {
                    self.scan_socket_dir(now);
                    self.timeouts
                        .set(TimerKey::Scan, now + self.cfg.timers.scan_interval);
                }
                TimerKey::Rebalance => {
                    self.rebalance();
                    self.timeouts.set(
                        TimerKey::Rebalance,
                        now + self.cfg.timers.rebalance_interval,
                    );
                }
                TimerKey::ExpirySweep => {
                    let log = &self.log;
                    let expired = self.remotes.expire(
                        now,
                        self.cfg.timers.remote_expiry,
                        &mut self.backends,
                        |ip| info!(log, "expiring remote entry"; "remote_ip" => %ip),
                    );
                    // Many remotes gone at once (a burst of clients has
                    // passed): give the memory back to the system.
                    if expired >= RELEASE_MEMORY_AFTER {
                        self.inflight.shrink();
                        crate::sys::release_free_memory();
                    }
                    self.timeouts
                        .set(TimerKey::ExpirySweep, now + self.cfg.timers.expiry_sweep);
                }
                TimerKey::AcceptResume => self.accepting = true,
                TimerKey::QueryDeadline => self.expire_queries(now),
                TimerKey::PassiveCheck => self.passive_check(now),
                TimerKey::Reconnect(id) => self.connect(id, now),
                TimerKey::Hello(id) => {
                    warn!(self.backend_log(id), "timed out connecting to backend");
                    self.fault(id, now);
                }
                TimerKey::HeartbeatSend(id) => self.send_heartbeat(id, now),
                TimerKey::HeartbeatTimeout(id) => {
                    let Some(be) = self.backends.get_mut(id) else {
                        continue;
                    };
                    if be.is_ok() {
                        let passive = be.probing;
                        if passive {
                            be.stats.passive_faults += 1;
                        }
                        error!(self.backend_log(id), "no heartbeat from backend";
                            "passive_check" => passive);
                        self.fault(id, now);
                    }
                }
            }
        }
        false
    }

    /// Answer (or drop, by policy) every query whose deadline has passed.
    fn expire_queries(&mut self, now: Instant) {
        while let Some(e) = self.inflight.pop_expired(now) {
            self.udp_counters.timeouts += 1;
            if let Some(be) = self.backends.get_mut(e.backend) {
                be.stats.timeouts += 1;
            }
            if self.cfg.on_timeout == OnTimeout::ServFail
                && let Some(answer) = synth::error_answer(e.message(), ResponseCode::ServFail)
                && self.udp.send_to(e.listener, &answer, e.key.client).is_ok()
            {
                self.udp_counters.timeout_answers += 1;
            }
            self.inflight.recycle(e);
        }
        self.arm_query_timers(now);
    }

    /// Keep the query deadline and the passive check armed while queries
    /// are in flight.
    fn arm_query_timers(&mut self, now: Instant) {
        if let Some(at) = self.inflight.next_deadline() {
            // Usually armed already for this very deadline: skip the tree.
            if self.timeouts.deadline_of(TimerKey::QueryDeadline) != Some(at) {
                self.timeouts.set(TimerKey::QueryDeadline, at);
            }
            if !self.timeouts.is_set(TimerKey::PassiveCheck) {
                self.timeouts.set(
                    TimerKey::PassiveCheck,
                    now + self.cfg.timers.unanswered_threshold / 2,
                );
            }
        }
    }

    /// Probe every backend that has left queries unanswered for longer than
    /// the threshold while answering none: hung, not dead (its socket is
    /// open).  It must answer a heartbeat within the probe timeout or be
    /// faulted, so its queries are replayed long before the heartbeat
    /// timeout would have noticed.
    fn passive_check(&mut self, now: Instant) {
        let threshold = self.cfg.timers.unanswered_threshold;
        let suspects: Vec<BackendId> = self
            .backends
            .iter()
            .filter(|be| be.is_ok() && !be.probing)
            .filter(|be| {
                be.unanswered_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= threshold)
            })
            .map(|be| be.id)
            .collect();
        for id in suspects {
            self.probe(id, now);
        }
        if !self.inflight.is_empty() {
            self.timeouts
                .set(TimerKey::PassiveCheck, now + threshold / 2);
        }
    }

    fn probe(&mut self, id: BackendId, now: Instant) {
        let owed = self.inflight.count_for(id);
        let log = self.backend_log(id);
        let probe_timeout = self.cfg.timers.probe_timeout;
        let (Some(be), Some(link)) = (self.backends.get_mut(id), self.links.get(&id)) else {
            return;
        };
        be.probing = true;
        warn!(log, "backend answers no queries (probing)"; "inflight" => owed,
            "unanswered_ms" => be.unanswered_since
                .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64));
        let deadline = match be.state {
            // A heartbeat is already out: it now has only the probe timeout.
            LinkState::Ready {
                heartbeat_sent: Some(sent),
            } => sent + probe_timeout,
            _ => {
                link.queue
                    .push_control(&frame_type::CLIENT_HEARTBEAT.to_le_bytes());
                be.state = LinkState::Ready {
                    heartbeat_sent: Some(now),
                };
                self.timeouts.clear(TimerKey::HeartbeatSend(id));
                now + probe_timeout
            }
        };
        self.timeouts
            .set(TimerKey::HeartbeatTimeout(id), deadline.max(now));
    }

    fn send_heartbeat(&mut self, id: BackendId, now: Instant) {
        let (Some(be), Some(link)) = (self.backends.get_mut(id), self.links.get(&id)) else {
            return;
        };
        if !be.is_ok() {
            return;
        }
        link.queue
            .push_control(&frame_type::CLIENT_HEARTBEAT.to_le_bytes());
        be.state = LinkState::Ready {
            heartbeat_sent: Some(now),
        };
        trace!(self.backend_log(id), "heartbeat sent");
        self.timeouts.set(
            TimerKey::HeartbeatTimeout(id),
            now + self.cfg.timers.heartbeat_timeout,
        );
    }

    fn rebalance(&mut self) {
        let Some(plan) = self.backends.rebalance_plan() else {
            return;
        };
        trace!(self.log, "balancer spread statistics";
            "max_be_id" => plan.backend, "spread" => plan.spread,
            "ok_backends" => plan.ok_backends);
        let log = &self.log;
        self.remotes.unassign(
            plan.backend,
            plan.unassign,
            &mut self.backends,
            |ip| info!(log, "rebalancing to reduce spread"; "remote_ip" => ip.to_string()),
        );
    }

    // ---- UDP ---------------------------------------------------------------

    fn udp_intake(&mut self) {
        let now = Instant::now();
        let second = now.saturating_duration_since(self.started).as_secs() as u32;
        for listener in 0..self.udp.len() {
            for _ in 0..RECV_CALLS {
                let n = match self.udp.recv_batch(listener) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        debug!(self.log, "UDP receive error"; "strerror" => %e);
                        break;
                    }
                };
                for i in 0..n {
                    let Some(mut dgram) = self.udp.datagram(listener, i) else {
                        continue;
                    };
                    let src = SocketAddr::new(dgram.ip, dgram.src.port());
                    let path = dgram.listener;
                    let mut parts = Forwarding {
                        cfg: &self.cfg,
                        log: &self.log,
                        backends: &mut self.backends,
                        remotes: &mut self.remotes,
                        links: &mut self.links,
                        inflight: &mut self.inflight,
                        counters: &mut self.udp_counters,
                        second,
                        no_backend_log: &mut self.no_backend_log,
                        oversized_log: &mut self.oversized_log,
                        inflight_full_log: &mut self.inflight_full_log,
                    };
                    if let Outcome::Answer(answer) = parts.forward(&mut dgram, now)
                        && self.udp.send_to(path, &answer, src).is_ok()
                    {
                        self.udp_counters.no_backend_answers += 1;
                    }
                }
                if n < crate::mmsg::BATCH {
                    break;
                }
            }
        }
        self.arm_query_timers(now);
    }

    // ---- TCP ---    // ---- TCP ---------------------------------------------------------------

    fn on_accept(&mut self, r: io::Result<(TcpStream, SocketAddr)>) {
        let now = Instant::now();
        let (stream, peer) = match r {
            Ok(x) => x,
            Err(e) => {
                warn!(self.log, "incoming TCP accept failure";
                    "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
                self.accepting = false;
                self.timeouts
                    .set(TimerKey::AcceptResume, now + ACCEPT_BACKOFF);
                return;
            }
        };
        self.tcp_counters.accepted += 1;
        // Answers go out as soon as the backend writes them: a resolver
        // pipelining queries must not wait on Nagle's algorithm.  Failure
        // only costs latency.
        let _ = stream.set_nodelay(true);
        self.next_conn_id += 1;
        let conn_id = self.next_conn_id;
        let ip = peer.ip().to_canonical();
        debug!(self.log, "inbound TCP connection";
            "conn_id" => conn_id, "remote_ip" => ip.to_string(), "remote_port" => peer.port());
        let (rem, created) = self.remotes.touch(ip, now);
        if created {
            info!(self.log, "new remote peer"; "remote_ip" => ip.to_string());
        }
        let choice = rem.choose_backend_for(&mut self.backends, Need::of(&ip));
        log_reassignment(&self.log, &ip, &choice);
        let Some(be_id) = choice.backend else {
            rem.stats.tcp_drop += 1;
            self.tcp_counters.dropped_no_backend += 1;
            if self
                .no_backend_log
                .allow(now, self.cfg.timers.no_backend_log_interval)
            {
                error!(self.log, "no backends available");
            }
            return;
        };
        let Ok(permit) = self.sessions.clone().try_acquire_owned() else {
            rem.stats.tcp_drop += 1;
            self.tcp_counters.dropped_session_limit += 1;
            if self.session_limit_log.allow(now, REPEAT_LOG_INTERVAL) {
                warn!(self.log, "too many TCP sessions (dropping connection)";
                    "max_tcp_sessions" => self.cfg.max_tcp_sessions);
            }
            return;
        };
        rem.stats.tcp += 1;
        let Some(be) = self.backends.get_mut(be_id) else {
            return;
        };
        be.stats.tcp += 1;
        be.stats.conn_start += 1;
        let log = self.log.new(o!("backend" => be_id, "conn_id" => conn_id,
            "remote_ip" => ip.to_string(), "remote_port" => peer.port()));
        tokio::spawn(tcp_relay::run_session(Session {
            conn_id,
            client: stream,
            client_addr: ip,
            client_port: peer.port(),
            backend: be_id,
            backend_path: be.path.clone(),
            ok_timeout: self.cfg.timers.tcp_connect_timeout,
            log,
            events: self.session_tx.clone(),
            slot: tcp_relay::SessionSlot::new(permit, self.session_tx.clone()),
        }));
    }

    fn on_session_event(&mut self, ev: SessionEvent) {
        let now = Instant::now();
        match ev {
            SessionEvent::OkTimeout { backend } => self.fault(backend, now),
            SessionEvent::ConnectFailed { backend } => {
                if let Some(be) = self.backends.get_mut(backend) {
                    be.stats.conn_error += 1;
                }
            }
            // The loop checks whether it has drained at the top of each turn.
            SessionEvent::Ended => {}
        }
    }
}
