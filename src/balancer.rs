//! EVENT LOOP
//!
//! One task on a current-thread runtime owns all balancing state: the backend
//! table ([`Backends`]), the remotes ([`Remotes`]), the timeouts
//! ([`Timeouts`]) and the UDP socket.  It wakes for four things:
//!
//! - datagrams on the UDP socket, which it frames and queues toward the
//!   client's backend ([`crate::udp_relay`]);
//! - news from a backend's control session, which it decodes and acts on:
//!   hello, heartbeat replies, answers to send, faults ([`crate::link`]);
//! - TCP connections, which it assigns to a backend and hands to a session
//!   task ([`crate::tcp_relay`]);
//! - timers: directory scan, reconnects, hello and heartbeat deadlines,
//!   rebalancing and remote expiry.
//!
//! Because one task makes every decision, decisions need no locks and are
//! made in the order events happened.  Work that can block (connecting,
//! writing to a slow backend, relaying a TCP stream) happens in other tasks
//! that report back through bounded channels.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use slog::{Logger, debug, error, info, o, trace, warn};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backends::{BackendId, Backends, LinkState};
use crate::cli::Config;
use crate::frame::{Frame, FrameBuffer, FrameError, frame_type};
use crate::link::{self, LinkEvent, OutQueue};
use crate::remotes::Remotes;
use crate::tcp_relay::{self, Session, SessionEvent};
use crate::timeouts::Timeouts;
use crate::udp_relay::{RECV_BATCH, UdpCounters, UdpRelay};

/// The TCP listen backlog, as in the original: enough for a burst of
/// resolvers retrying over TCP at once.
const TCP_BACKLOG: u32 = 1000;

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

/// sockaddr_un's sun_path holds 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 108;

/// The bound sockets, created before the loop starts so that a caller (or
/// test) knows the port before any traffic flows.
pub struct Listeners {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

impl Listeners {
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.udp.local_addr()?.port())
    }
}

/// Bind the UDP and TCP listeners on the same address and port.  With port
/// 0, UDP picks a free port and TCP binds the same number.
pub fn bind(config: &Config, log: &Logger) -> io::Result<Listeners> {
    let addr = SocketAddr::new(config.listen_addr, config.port);
    let with_context = |what: &str, addr: SocketAddr, e: io::Error| {
        error!(log, "{}", what; "address" => addr.ip().to_string(),
            "port" => addr.port().to_string(), "errno" => e.raw_os_error().unwrap_or(0),
            "strerror" => e.to_string());
        io::Error::new(e.kind(), format!("{what} {addr}: {e}"))
    };
    let std_udp = std::net::UdpSocket::bind(addr)
        .map_err(|e| with_context("failed to bind UDP listen socket", addr, e))?;
    std_udp.set_nonblocking(true)?;
    let udp = UdpSocket::from_std(std_udp)?;
    let udp_addr = udp.local_addr()?;
    info!(log, "listening for UDP packets";
        "address" => udp_addr.ip().to_string(), "port" => udp_addr.port().to_string());

    let tcp_addr = SocketAddr::new(config.listen_addr, udp_addr.port());
    let tcp = (|| {
        let s = if tcp_addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        s.set_reuseaddr(true)?;
        s.bind(tcp_addr)?;
        s.listen(TCP_BACKLOG)
    })()
    .map_err(|e| with_context("failed to create TCP listen socket", tcp_addr, e))?;
    info!(log, "listening for TCP packets";
        "address" => tcp_addr.ip().to_string(), "port" => tcp_addr.port().to_string());
    Ok(Listeners { udp, tcp })
}

/// What a timeout is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum TimerKey {
    Scan,
    Rebalance,
    ExpirySweep,
    AcceptResume,
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
    pub dropped_ipv6_unsupported: u64,
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
    links: HashMap<BackendId, Link>,
    udp: UdpRelay,
    udp_counters: UdpCounters,
    tcp_counters: TcpCounters,
    link_tx: mpsc::Sender<LinkEvent>,
    session_tx: mpsc::Sender<SessionEvent>,
    sessions: Arc<Semaphore>,
    accepting: bool,
    next_conn_id: u64,
    no_backend_log: RateLimit,
    ipv6_udp_log: RateLimit,
    ipv6_tcp_log: RateLimit,
    oversized_log: RateLimit,
    session_limit_log: RateLimit,
}

/// What woke the loop.
enum Wake {
    Shutdown,
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
    let Listeners { udp, tcp } = listeners;
    let mut b = Balancer {
        sessions: Arc::new(Semaphore::new(config.max_tcp_sessions)),
        cfg: config,
        log,
        backends: Backends::new(),
        remotes: Remotes::new(),
        timeouts: Timeouts::new(),
        links: HashMap::new(),
        udp: UdpRelay::new(udp)?,
        udp_counters: UdpCounters::default(),
        tcp_counters: TcpCounters::default(),
        link_tx,
        session_tx,
        accepting: true,
        next_conn_id: 0,
        no_backend_log: RateLimit::default(),
        ipv6_udp_log: RateLimit::default(),
        ipv6_tcp_log: RateLimit::default(),
        oversized_log: RateLimit::default(),
        session_limit_log: RateLimit::default(),
    };
    let now = Instant::now();
    b.scan_socket_dir(now);
    let t = b.cfg.timers.clone();
    b.timeouts.set(TimerKey::Scan, now + t.scan_interval);
    b.timeouts
        .set(TimerKey::Rebalance, now + t.rebalance_interval);
    b.timeouts.set(TimerKey::ExpirySweep, now + t.expiry_sweep);

    tokio::pin!(shutdown);
    loop {
        let deadline = b
            .timeouts
            .next_deadline()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let wake = tokio::select! {
            biased;
            _ = &mut shutdown => Wake::Shutdown,
            Some(ev) = link_rx.recv() => Wake::Link(ev),
            Some(ev) = session_rx.recv() => Wake::Session(ev),
            r = b.udp.socket().readable() => match r {
                Ok(()) => Wake::Udp,
                Err(e) => return Err(e),
            },
            r = tcp.accept(), if b.accepting => Wake::Accept(r),
            _ = tokio::time::sleep_until(deadline) => Wake::Timer,
        };
        match wake {
            Wake::Shutdown => break,
            Wake::Link(ev) => b.on_link_event(ev),
            Wake::Session(ev) => b.on_session_event(ev),
            Wake::Udp => b.udp_intake(),
            Wake::Accept(r) => b.on_accept(r),
            Wake::Timer => b.run_due_timers(),
        }
    }
    info!(b.log, "shutting down");
    Ok(())
}

impl Balancer {
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
    }

    fn close_link(&mut self, id: BackendId) {
        self.links.remove(&id);
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
                    be.state = LinkState::AwaitingHello;
                }
                if let Some(link) = self.links.get(&id) {
                    link.queue
                        .push_control(&frame_type::CLIENT_HELLO.to_le_bytes());
                }
            }
            LinkEvent::ConnectFailed { error: e, .. } => {
                let log = self.backend_log(id);
                self.close_link(id);
                let Some(be) = self.backends.get_mut(id) else {
                    return;
                };
                be.stats.conn_error += 1;
                if e.kind() == io::ErrorKind::NotFound {
                    // The socket is gone: stop trying until a scan finds it.
                    be.removed = true;
                    info!(log, "backend socket removed");
                } else {
                    error!(log, "failed to connect";
                        "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
                    self.schedule_reconnect(id, now);
                }
            }
            LinkEvent::Data { bytes, .. } => self.on_backend_bytes(id, &bytes, now),
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
                trace!(self.backend_log(id), "received heartbeat reply";
                    "rtt_us" => now.saturating_duration_since(sent).as_micros() as u64);
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
                be.stats.udp_replies += 1;
                let dest = SocketAddr::from((addr, port));
                let sent = self.udp.send_reply(payload, dest);
                if sent.is_ok() {
                    self.udp_counters.replies += 1;
                } else {
                    self.udp_counters.replies_failed += 1;
                }
                if let Err(e) = sent
                    && e.kind() != io::ErrorKind::WouldBlock
                {
                    error!(self.backend_log(id), "outbound UDP packet error";
                        "dest_ip" => addr.to_string(), "dest_port" => port,
                        "data_len" => payload.len(),
                        "errno" => e.raw_os_error().unwrap_or(0),
                        "strerror" => e.to_string());
                }
            }
            other => {
                error!(self.backend_log(id), "invalid frame type";
                    "frame_type" => other.frame_type());
                return false;
            }
        }
        true
    }

    // ---- timers ------------------------------------------------------------

    fn run_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.timeouts.pop_due(now) {
            match key {
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
                    self.remotes.expire(
                        now,
                        self.cfg.timers.remote_expiry,
                        &mut self.backends,
                        |ip| info!(log, "expiring remote entry"; "remote_ip" => ip.to_string()),
                    );
                    self.timeouts
                        .set(TimerKey::ExpirySweep, now + self.cfg.timers.expiry_sweep);
                }
                TimerKey::AcceptResume => self.accepting = true,
                TimerKey::Reconnect(id) => self.connect(id, now),
                TimerKey::Hello(id) => {
                    warn!(self.backend_log(id), "timed out connecting to backend");
                    self.fault(id, now);
                }
                TimerKey::HeartbeatSend(id) => self.send_heartbeat(id, now),
                TimerKey::HeartbeatTimeout(id) => {
                    if self.backends.is_ok(id) {
                        error!(self.backend_log(id), "no heartbeat from backend");
                        self.fault(id, now);
                    }
                }
            }
        }
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
        for _ in 0..RECV_BATCH {
            let mut dgram = match self.udp.try_recv() {
                Ok(Some(d)) => d,
                Ok(None) => return,
                Err(e) => {
                    debug!(self.log, "UDP receive error"; "strerror" => e.to_string());
                    return;
                }
            };
            self.udp_counters.received += 1;
            let ip = dgram.ip;
            if ip.is_ipv6() {
                self.udp_counters.dropped_ipv6_unsupported += 1;
                if self.ipv6_udp_log.allow(now, REPEAT_LOG_INTERVAL) {
                    warn!(self.log, "dropping UDP packet from IPv6 remote (unsupported)";
                        "remote_ip" => ip.to_string(),
                        "dropped" => self.udp_counters.dropped_ipv6_unsupported);
                }
                continue;
            }
            let (rem, created) = self.remotes.touch(ip, now);
            if created {
                info!(self.log, "new remote peer"; "remote_ip" => ip.to_string());
            }
            if dgram.is_oversized() {
                rem.stats.udp_drop += 1;
                self.udp_counters.dropped_oversized += 1;
                if self.oversized_log.allow(now, Duration::from_secs(1)) {
                    warn!(self.log, "dropping oversized UDP packet";
                        "remote_ip" => ip.to_string(), "len" => dgram.len,
                        "dropped" => self.udp_counters.dropped_oversized);
                }
                continue;
            }
            let choice = rem.choose_backend(&mut self.backends);
            if let Some(change) = choice.change {
                info!(self.log, "{}", change.message();
                    "remote_ip" => ip.to_string(), "be_id" => change.backend());
            }
            let (Some(be_id), Some(frame)) = (choice.backend, dgram.inbound_frame()) else {
                rem.stats.udp_drop += 1;
                self.udp_counters.dropped_no_backend += 1;
                if self
                    .no_backend_log
                    .allow(now, self.cfg.timers.no_backend_log_interval)
                {
                    error!(self.log, "no backends available");
                }
                continue;
            };
            let (Some(link), Some(be)) = (self.links.get_mut(&be_id), self.backends.get_mut(be_id))
            else {
                continue;
            };
            if link.queue.push(&[frame]).is_ok() {
                rem.stats.udp += 1;
                be.stats.udp += 1;
                self.udp_counters.forwarded += 1;
            } else {
                rem.stats.udp_drop += 1;
                be.stats.stuck += 1;
                self.udp_counters.dropped_stuck += 1;
                let logged = link.stuck_logged;
                if logged.is_none_or(|t| now.saturating_duration_since(t) >= REPEAT_LOG_INTERVAL) {
                    link.stuck_logged = Some(now);
                    let stuck = be.stats.stuck;
                    warn!(self.backend_log(be_id), "stuck backend write queue (dropping)";
                        "stuck" => stuck, "queued_bytes" => self.cfg.backend_queue_bytes);
                }
            }
        }
    }

    // ---- TCP ---------------------------------------------------------------

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
        self.next_conn_id += 1;
        let conn_id = self.next_conn_id;
        let ip = peer.ip().to_canonical();
        let IpAddr::V4(v4) = ip else {
            self.tcp_counters.dropped_ipv6_unsupported += 1;
            if self.ipv6_tcp_log.allow(now, REPEAT_LOG_INTERVAL) {
                warn!(self.log, "dropping TCP connection from IPv6 remote (unsupported)";
                    "remote_ip" => ip.to_string());
            }
            return;
        };
        debug!(self.log, "inbound TCP connection";
            "conn_id" => conn_id, "remote_ip" => ip.to_string(), "remote_port" => peer.port());
        let (rem, created) = self.remotes.touch(ip, now);
        if created {
            info!(self.log, "new remote peer"; "remote_ip" => ip.to_string());
        }
        let choice = rem.choose_backend(&mut self.backends);
        if let Some(change) = choice.change {
            info!(self.log, "{}", change.message();
                "remote_ip" => ip.to_string(), "be_id" => change.backend());
        }
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
            client_addr: v4,
            client_port: peer.port(),
            backend: be_id,
            backend_path: be.path.clone(),
            ok_timeout: self.cfg.timers.tcp_connect_timeout,
            log,
            events: self.session_tx.clone(),
            permit,
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
        }
    }
}
