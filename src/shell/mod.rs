//! THE I/O SHELL
//!
//! One task on a current-thread runtime does all of the balancer's I/O and
//! hands every event to the core ([`Core`]), which decides what happens;
//! the shell then carries out what the core asked through [`Io`].  The
//! loop sleeps until something is ready: a datagram on a UDP socket,
//! bytes on a backend's control socket (or room to write to one), a TCP
//! connection, a signal, a stats request, the end of a TCP session, TCP
//! answers for the packet cache to learn, or the core's next deadline
//! ([`Core::poll_timeout`]).  Each wake-up does all the work that is
//! ready, in this order:
//!
//! 1. the event that woke it (signal, stats request, session end), and
//!    the answers TCP sessions handed over for the cache;
//! 2. bytes waiting on backend sockets ([`links`]), read into one reused
//!    buffer and given to [`Core::on_link_bytes`]; the answers among them
//!    leave at once, in one `sendmmsg` per socket; a link drained in the
//!    middle of a frame (node-mname writes a frame's header and message
//!    apart) is read once more after one `sched_yield`, rather than the
//!    loop sleeping until the message wakes it;
//! 3. connections waiting to be accepted;
//! 4. datagrams waiting on the UDP sockets, in bounded batches
//!    ([`udp`], `recvmmsg`), each framed in its receive buffer and given to
//!    [`Core::on_datagram`];
//! 5. timers that are due ([`Core::handle_timeout`]), and the sweep of TCP
//!    sessions when it is due ([`Core::sweep_tcp_sessions`], reading the
//!    activity each session publishes);
//! 6. then it settles: connects and directory listings the core asked for
//!    are done and their results handed back, queued frames are written to
//!    the backends, and gathered answers leave in one `sendmmsg` per socket.
//!
//! Nothing on the way of a datagram is a task hand-off, a channel message
//! or an allocation.  TCP sessions are relayed by tasks of their own
//! ([`tcp_session`]), one per client connection, in a `JoinSet` the loop
//! owns.  The loop is itself a spawned task, not the future the runtime
//! blocks on: a session that wakes it (ending, or handing over answers to
//! learn) then puts it on the runtime's run queue, where waking the future
//! the runtime blocks on costs a write to the runtime's eventfd and one
//! more `epoll_wait`.

pub mod links;
pub mod listeners;
pub mod mmsg;
pub mod signals;
pub mod stats_requests;
pub mod sys;
pub mod tcp_loop;
pub mod tcp_session;
pub mod udp;
pub mod watch;

use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use slog::{Logger, debug, info};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::backends::BackendId;
use crate::cli::Config;
use crate::core::{Core, Datagram, Io, Phase, QueueFull};
use links::{LinkNews, Links, READ_CHUNK, READS_PER_WAKE};
pub use listeners::{Listeners, bind};
use signals::Signals;
use stats_requests::{StatsRequest, wall_clock_now};
use tcp_session::{Ended, LearnedAnswers, Sessions};
use udp::{RECV_CALLS, UdpOut, UdpRelay};
use watch::DirWatch;

/// Connections accepted per wake-up before other work gets a turn.
const ACCEPTS_PER_WAKE: usize = 16;

/// What the core asked for that is done once its method returns.
#[derive(Default)]
struct Commands {
    /// Connects made, with their outcome, to report to the core.
    connected: Vec<(BackendId, u64, io::Result<()>)>,
    /// Writes to backends that failed.
    write_failed: Vec<(BackendId, u64, io::Error)>,
    scan: bool,
    release_memory: bool,
}

impl Commands {
    fn is_empty(&self) -> bool {
        self.connected.is_empty() && self.write_failed.is_empty() && !self.scan
    }
}

/// The shell's implementation of the core's outputs.
struct ShellIo<'a> {
    udp: &'a mut UdpOut,
    links: &'a mut Links,
    cmds: &'a mut Commands,
}

impl Io for ShellIo<'_> {
    fn send_frame(&mut self, backend: BackendId, pieces: &[&[u8]]) -> Result<(), QueueFull> {
        self.links.send_frame(backend, pieces)
    }

    fn send_control(&mut self, backend: BackendId, frame: &[u8]) {
        self.links.send_control(backend, frame);
    }

    fn queue_answer(&mut self, reply_path: usize, dest: SocketAddr, payload: &[u8]) {
        self.udp.queue_reply(reply_path, payload, dest);
    }

    fn send_synthesized(&mut self, reply_path: usize, dest: SocketAddr, payload: &[u8]) -> bool {
        self.udp.send_to(reply_path, payload, dest).is_ok()
    }

    fn connect(&mut self, backend: BackendId, generation: u64, path: &Path) {
        let result = self.links.connect(backend, generation, path);
        self.cmds.connected.push((backend, generation, result));
    }

    fn close(&mut self, backend: BackendId) {
        self.links.close(backend);
    }

    fn scan_directory(&mut self) {
        self.cmds.scan = true;
    }

    fn release_memory(&mut self) {
        self.cmds.release_memory = true;
    }
}

/// What the sockets had ready at one wake-up.
#[derive(Default)]
struct IoReady {
    udp: bool,
    links: bool,
    accepted: Option<io::Result<(TcpStream, SocketAddr)>>,
}

/// What woke the loop.
enum Wake {
    Shutdown,
    Signal(crate::core::Signal),
    Stats(StatsRequest),
    SessionEnded(Ended),
    SocketAppeared(PathBuf),
    Io(IoReady),
    Timer,
    /// TCP sessions handed over answers to learn (learned at every turn).
    AnswersToLearn,
}

/// The loop's state: the core and the sockets it drives.
struct Shell {
    core: Core,
    log: Logger,
    udp: UdpRelay,
    links: Links,
    tcp: Option<Vec<TcpListener>>,
    cmds: Commands,
    sessions: JoinSet<()>,
    /// What the loop knows of each running session (for eviction).
    tcp_sessions: Sessions,
    /// Sessions the core closed at a sweep (reused).
    closed_sessions: Vec<crate::core::SessionId>,
    session_tx: mpsc::Sender<Ended>,
    /// One read buffer serves every backend link.
    read_buf: Vec<u8>,
    readable: Vec<BackendId>,
    /// Links drained in the middle of a frame at this turn (reused).
    mid_frame: Vec<BackendId>,
    /// Log records the log queue dropped ([`crate::logging`]).
    log_dropped: Arc<AtomicU64>,
    /// Paths the directory watch reported (reused).
    appeared: Vec<PathBuf>,
    /// With the packet cache on: the answers TCP sessions paired with
    /// their queries, for the core to learn.
    learned: Option<Arc<LearnedAnswers>>,
    /// The answers taken from there at a turn (reused).
    learned_now: Vec<crate::core::TcpAnswer>,
    /// Their buffers, on their way back to the sessions.
    learned_buffers: Vec<Vec<u8>>,
}

/// Run the balancer on `listeners` until the core says exit or
/// `shutdown` completes.  Stats requests come through `stats`, if given;
/// `log_dropped` counts the log records the log queue dropped.
pub async fn run(
    config: Config,
    log: Logger,
    listeners: Listeners,
    mut stats: Option<mpsc::Receiver<StatsRequest>>,
    log_dropped: Arc<AtomicU64>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let Listeners { udp, tcp } = listeners;
    let (udp, granted) = UdpRelay::new(udp, config.udp_recv_buffer)?;
    if let Some(bytes) = granted {
        // The kernel reports twice what it accounts for data (the rest is
        // its bookkeeping); a figure well below the request means
        // net.core.rmem_max capped it.
        info!(log, "UDP receive buffer"; "requested" => config.udp_recv_buffer,
            "granted" => bytes);
    }
    // One end report per admitted session, and no more sessions than the
    // limit: the channel can hold every report there can be.
    let (session_tx, mut session_rx) = mpsc::channel(config.max_tcp_sessions.max(1));
    let links = Links::new(config.backend_queue_bytes);
    // The socket directory's watch, if the system gives one.
    let mut watch = DirWatch::start(&config.socket_dir, &log);
    let learned = (config.cache.entries > 0).then(Arc::default);
    let mut shell = Shell {
        core: Core::new(config, log.clone(), Instant::now()),
        log,
        udp,
        links,
        tcp: Some(tcp),
        cmds: Commands::default(),
        sessions: JoinSet::new(),
        tcp_sessions: Sessions::new(Instant::now()),
        closed_sessions: Vec::new(),
        session_tx,
        read_buf: vec![0; READ_CHUNK],
        readable: Vec::new(),
        mid_frame: Vec::new(),
        log_dropped,
        appeared: Vec::new(),
        learned,
        learned_now: Vec::new(),
        learned_buffers: Vec::new(),
    };
    let now = Instant::now();
    shell.with_io(|core, io| core.start(now, io));
    shell.settle();

    tokio::pin!(shutdown);
    let mut signals = Signals::install().forward();
    let learned = shell.learned.clone();
    // One timer for the loop, moved only when the core's next deadline
    // moves: a timer made per wake-up costs an insertion and a removal in
    // the runtime's wheel each time.
    let far = || Instant::now() + Duration::from_secs(3600);
    let timer = tokio::time::sleep_until(far());
    tokio::pin!(timer);
    loop {
        match shell.core.phase() {
            Phase::Exit => break,
            // Draining: no new connections.
            Phase::Draining => shell.tcp = None,
            Phase::Serving => {}
        }
        let deadline = [shell.core.poll_timeout(), shell.core.tcp_sweep_at()]
            .into_iter()
            .flatten()
            .min();
        // Moved sooner when the core needs it sooner; a deadline that moved
        // later (the query it was for was answered) is left to fire early,
        // find nothing due, and be moved then: one early wake-up instead of
        // a move at every wake-up.
        match deadline {
            Some(at) if at < timer.deadline() || timer.is_elapsed() => timer.as_mut().reset(at),
            Some(_) => {}
            None if timer.deadline() < Instant::now() + Duration::from_secs(60) => {
                timer.as_mut().reset(far());
            }
            None => {}
        }
        let wake = tokio::select! {
            biased;
            _ = &mut shutdown => Wake::Shutdown,
            Some(sig) = signals.recv() => Wake::Signal(sig),
            Some(ended) = session_rx.recv() => Wake::SessionEnded(ended),
            Some(path) = next_appeared(&mut watch) => Wake::SocketAppeared(path),
            // Each request is answered with a bounded copy (one page of
            // remotes at most), so serving stats cannot stall traffic.
            Some(req) = recv_stats(&mut stats) => Wake::Stats(req),
            ready = poll_fn(|cx| shell.poll_io(cx)) => Wake::Io(ready?),
            _ = &mut timer => Wake::Timer,
            () = LearnedAnswers::handed_over(learned.as_deref()) => Wake::AnswersToLearn,
        };
        let now = Instant::now();
        shell.learn_tcp_answers();
        let mut ready = IoReady::default();
        let did_io = matches!(wake, Wake::Io(_));
        match wake {
            Wake::Shutdown => break,
            Wake::Signal(sig) => shell.with_io(|core, io| core.on_signal(now, sig, io)),
            Wake::Stats(req) => shell.answer_stats(req, now),
            Wake::SessionEnded((id, backend, end, synthesized)) => {
                shell.tcp_sessions.ended(id);
                shell.with_io(|core, io| {
                    core.on_session_ended(now, id, backend, end, io);
                    core.on_session_answers(synthesized);
                });
            }
            Wake::SocketAppeared(path) => shell.on_sockets_appeared(path, watch.as_mut(), now),
            Wake::Io(r) => ready = r,
            Wake::Timer | Wake::AnswersToLearn => {}
        }
        // Everything that is ready, in one wake-up.  Answers first: each
        // one completes a client's query, so they leave before new queries
        // are read (a resolver with a window of queries outstanding goes
        // as fast as answers come back).
        if ready.links || shell.links.has_work() {
            shell.read_links(now);
            shell.send_answers();
            if shell.finish_frames(now) {
                shell.send_answers();
            }
        }
        if let Some(accepted) = ready.accepted.take() {
            shell.on_accepted(accepted, now);
        }
        if ready.udp {
            shell.read_datagrams(now);
        }
        if shell.core.poll_timeout().is_some_and(|t| t <= now) {
            shell.with_io(|core, io| core.handle_timeout(now, io));
        }
        if shell.core.tcp_sweep_at().is_some_and(|t| t <= now) {
            shell.sweep_sessions(now);
        }
        shell.settle();
        // Sessions the core closed were aborted; their tasks are gone once
        // the runtime has run them, and are reaped here.
        while shell.sessions.try_join_next().is_some() {}
        // Other tasks (TCP sessions) get their turn when the loop has used
        // its budget; a yield every wake-up would cost a wake-up of the
        // runtime's own (an eventfd write and an extra epoll_wait).
        if did_io {
            tokio::task::consume_budget().await;
        }
    }
    info!(shell.log, "shutting down");
    shell.sessions.abort_all();
    Ok(())
}

/// The next path the directory watch saw appear, or never without one.
async fn next_appeared(watch: &mut Option<DirWatch>) -> Option<PathBuf> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// The next stats request, or never when there is no stats channel.
async fn recv_stats(stats: &mut Option<mpsc::Receiver<StatsRequest>>) -> Option<StatsRequest> {
    match stats {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Shell {
    /// Call the core with the shell's [`Io`].
    fn with_io<R>(&mut self, f: impl FnOnce(&mut Core, &mut ShellIo<'_>) -> R) -> R {
        let mut io = ShellIo {
            udp: self.udp.out(),
            links: &mut self.links,
            cmds: &mut self.cmds,
        };
        f(&mut self.core, &mut io)
    }

    /// Register interest in every socket the loop serves; Ready with what
    /// is ready now.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<IoReady>> {
        let mut ready = IoReady {
            links: self.links.poll_ready(cx).is_ready(),
            ..IoReady::default()
        };
        if self.core.wants_datagrams() {
            match self.udp.poll_readable(cx) {
                Poll::Ready(Ok(())) => ready.udp = true,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        if self.core.wants_connections()
            && let Some(tcp) = &self.tcp
        {
            for l in tcp {
                if let Poll::Ready(r) = l.poll_accept(cx) {
                    ready.accepted = Some(r);
                    break;
                }
            }
        }
        if ready.udp || ready.links || ready.accepted.is_some() {
            Poll::Ready(Ok(ready))
        } else {
            Poll::Pending
        }
    }

    /// Read waiting datagrams, a bounded number of batches per socket.
    fn read_datagrams(&mut self, now: Instant) {
        for socket in 0..self.udp.len() {
            for _ in 0..RECV_CALLS {
                let (core, links, cmds) = (&mut self.core, &mut self.links, &mut self.cmds);
                let got = self
                    .udp
                    .recv_batch(socket, |dgram: &mut Datagram<'_>, udp| {
                        let mut io = ShellIo { udp, links, cmds };
                        core.on_datagram(now, dgram, &mut io);
                    });
                match got {
                    Ok(n) if n == mmsg::BATCH => continue,
                    Ok(_) => break,
                    Err(e) => {
                        debug!(self.log, "UDP receive error"; "strerror" => %e);
                        break;
                    }
                }
            }
        }
        self.core.after_datagrams(now);
    }

    /// Read what backends sent, a bounded number of reads per link.
    fn read_links(&mut self, now: Instant) {
        let mut ids = std::mem::take(&mut self.readable);
        self.links.readable(&mut ids);
        self.mid_frame.clear();
        for &id in &ids {
            for _ in 0..READS_PER_WAKE {
                let Some(news) = self.links.read(id, &mut self.read_buf) else {
                    break;
                };
                if !self.on_link_news(id, news, now) {
                    break;
                }
            }
            if self.core.link_mid_frame(id) && !self.links.is_readable(id) {
                self.mid_frame.push(id);
            }
        }
        self.readable = ids;
    }

    /// Hand what a read of link `id` brought to the core; false once the
    /// link has closed.
    fn on_link_news(
        &mut self,
        id: BackendId,
        (generation, news): (u64, LinkNews),
        now: Instant,
    ) -> bool {
        let mut io = ShellIo {
            udp: self.udp.out(),
            links: &mut self.links,
            cmds: &mut self.cmds,
        };
        match news {
            LinkNews::Bytes(n) => {
                let bytes = &self.read_buf[..n];
                self.core.on_link_bytes(now, id, generation, bytes, &mut io);
                true
            }
            LinkNews::Closed(error) => {
                self.core
                    .on_link_closed(now, id, generation, error.as_ref(), &mut io);
                false
            }
        }
    }

    /// Links whose socket was drained in the middle of a frame: the rest is
    /// a write away (node-mname writes each answer's header and message
    /// with two writes).  Rather than sleep until it wakes the loop, give
    /// the CPU away once (to the backend, when it waits for this CPU to
    /// write the rest), then read those links again.  Called once the
    /// answers already whole have left, so none waits for the yield.
    /// Returns whether anything was read.
    fn finish_frames(&mut self, now: Instant) -> bool {
        if self.mid_frame.is_empty() {
            return false;
        }
        std::thread::yield_now();
        let mut ids = std::mem::take(&mut self.mid_frame);
        let mut read = false;
        for id in ids.drain(..) {
            if let Some(news) = self.links.read_again(id, &mut self.read_buf) {
                read = true;
                self.on_link_news(id, news, now);
            }
        }
        self.mid_frame = ids;
        read
    }

    /// Sockets appeared in the directory: `first`, and any others queued.
    fn on_sockets_appeared(&mut self, first: PathBuf, watch: Option<&mut DirWatch>, now: Instant) {
        let mut paths = std::mem::take(&mut self.appeared);
        paths.push(first);
        if let Some(w) = watch {
            w.drain(&mut paths);
            if w.take_rescan() {
                self.cmds.scan = true;
            }
        }
        self.with_io(|core, io| core.on_sockets_appeared(now, &paths, io));
        paths.clear();
        self.appeared = paths;
    }

    /// Carry out what the core asked for, handing results back, until
    /// nothing is left; then write to the backends and send the answers.
    fn settle(&mut self) {
        loop {
            let now = Instant::now();
            for (id, generation, result) in std::mem::take(&mut self.cmds.connected) {
                self.with_io(|core, io| match result {
                    Ok(()) => core.on_link_connected(now, id, generation, io),
                    Err(e) => core.on_link_connect_failed(now, id, generation, &e, io),
                });
            }
            if std::mem::take(&mut self.cmds.scan) {
                let listing = list_directory(&self.core.config().socket_dir);
                self.with_io(|core, io| core.on_dir_listing(now, listing, io));
            }
            if std::mem::take(&mut self.cmds.release_memory) {
                sys::release_free_memory();
            }
            self.links.flush(&mut self.cmds.write_failed);
            for (id, generation, e) in std::mem::take(&mut self.cmds.write_failed) {
                self.with_io(|core, io| core.on_link_closed(now, id, generation, Some(&e), io));
            }
            if self.cmds.is_empty() {
                break;
            }
        }
        self.send_answers();
    }

    /// Send the answers gathered, one `sendmmsg` per socket.
    fn send_answers(&mut self) {
        if self.udp.out().has_replies() {
            let (sent, failed) = self.udp.out().flush_replies();
            self.core.on_replies_sent(sent, failed);
        }
    }

    /// Answer a stats request with a copy of what it asks for.  An asker
    /// that has gone away is no concern of the loop's.
    fn answer_stats(&mut self, req: StatsRequest, now: Instant) {
        let clock = wall_clock_now();
        match req {
            StatsRequest::Summary(reply) => {
                let mut summary = self.core.summary(now, &clock, std::process::id());
                summary.log_records_dropped = self.log_dropped.load(Ordering::Relaxed);
                let _ = reply.send(summary);
            }
            StatsRequest::Remotes {
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(self.core.remotes_page(after, limit, &clock));
            }
            StatsRequest::Remote { ip, reply } => {
                let _ = reply.send(self.core.remote(ip, &clock));
            }
            StatsRequest::FlushCache(reply) => {
                let _ = reply.send(self.core.flush_cache("stats request"));
            }
        }
    }
}

/// The entries of the socket directory, in the order the system lists
/// them.  The number of entries is the operator's: each is a backend.
fn list_directory(dir: &Path) -> io::Result<Vec<io::Result<PathBuf>>> {
    Ok(std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect())
}
