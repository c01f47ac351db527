//! TCP RELAY
//!
//! Each client TCP connection is relayed through its own new AF_UNIX
//! connection to the client's backend.  That connection opens with
//! INBOUND_TCP (the client's address and port; INBOUND_TCP6 for an IPv6
//! client, sent only to backends that speak it; no CLIENT_HELLO), and once the
//! backend answers INBOUND_TCP_OK it carries DNS over TCP both ways.
//!
//! The core admits the connection, picks the backend (stickiness is the
//! same as for UDP) and decides when it closes: a [`run_session`] task
//! carries that out, so a slow client or backend never holds up the loop.
//! The backend connection is opened only once the client has sent a whole
//! query that passed intake: an idle, half-sent or garbage connection costs
//! the backend nothing, and the balancer one descriptor.
//! The task reads the client's stream into the connection's
//! [`TcpConn`], which checks each query as a message and says what may be
//! written to the backend (the queries as they arrived, never copied) and
//! when the connection must close (idle, a slow or bad sender, a silent
//! backend).  The backend's stream is copied back as it comes, and counted
//! in answers.  End-of-stream is passed on: after the client's FIN the
//! backend can still answer what was asked.  The backend connection is a
//! [`QuietStream`]: the room the backend makes by reading a query does not
//! wake the loop.
//!
//! Each session publishes its activity (last byte, message half-read,
//! answers awaited) in a [`SessionCell`], three atomics the task stores to
//! and the loop reads when the core sweeps the sessions or must evict one
//! ([`Sessions`], the core's [`SessionActivity`]).  A session the core
//! closes is aborted.  No session has a timer of its own: that would cost
//! every query a timer-wheel update.  A backend that does not send the OK
//! within the TCP connect timeout is reported to the core, which faults it.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use slog::{Logger, debug, error, warn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::backends::BackendId;
use crate::core::{
    ConnActivity, SessionActivity, SessionEnd, SessionId, SessionKey, SessionPlan, TcpAnswer,
    TcpClose, TcpConn,
};
use mname_balancer_protocol::{self as frame, frame_type};
use mname_quiet_stream::QuietStream;

/// How a session's end reaches the loop, with the answers the balancer
/// made on it.
pub type Ended = (SessionId, BackendId, SessionEnd, u32);

/// Bytes of the backend's answers read at a time.
const ANSWER_CHUNK: usize = 8192;

/// What a session tells the loop while it runs: its activity, in
/// milliseconds from the loop's epoch plus one (0 for none), and whether
/// the core closed it.
#[derive(Debug)]
pub struct SessionCell {
    last_activity: AtomicU64,
    partial_since: AtomicU64,
    answering_since: AtomicU64,
    synthesized: AtomicU64,
    /// Set by the loop before aborting a session the core closed: the core
    /// has forgotten it, so its end is not reported.
    closed_by_core: AtomicBool,
}

impl SessionCell {
    /// Store `a` (only what changed).
    fn publish(&self, epoch: Instant, a: &ConnActivity) {
        for (cell, t) in [
            (&self.last_activity, Some(a.last_activity)),
            (&self.partial_since, a.partial_since),
            (&self.answering_since, a.answering_since),
        ] {
            let v = encode(epoch, t);
            if cell.load(Ordering::Relaxed) != v {
                cell.store(v, Ordering::Relaxed);
            }
        }
        let n = u64::from(a.synthesized);
        if self.synthesized.load(Ordering::Relaxed) != n {
            self.synthesized.store(n, Ordering::Relaxed);
        }
    }

    fn read(&self, epoch: Instant) -> ConnActivity {
        let get = |cell: &AtomicU64| decode(epoch, cell.load(Ordering::Relaxed));
        ConnActivity {
            last_activity: get(&self.last_activity).unwrap_or(epoch),
            partial_since: get(&self.partial_since),
            answering_since: get(&self.answering_since),
            synthesized: u32::try_from(self.synthesized.load(Ordering::Relaxed))
                .unwrap_or(u32::MAX),
        }
    }
}

fn encode(epoch: Instant, t: Option<Instant>) -> u64 {
    match t {
        None => 0,
        Some(t) => 1 + u64::try_from(t.saturating_duration_since(epoch).as_millis()).unwrap_or(0),
    }
}

fn decode(epoch: Instant, v: u64) -> Option<Instant> {
    (v > 0).then(|| epoch + Duration::from_millis(v - 1))
}

/// The loop's handles on the sessions running.
pub struct Sessions {
    epoch: Instant,
    running: HashMap<SessionKey, (SessionId, Arc<SessionCell>, AbortHandle)>,
}

impl Sessions {
    /// None running; activity times count from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Sessions {
            epoch,
            running: HashMap::new(),
        }
    }

    /// The instant activity times are counted from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// A cell for a session admitted at `now` (idle from the start).
    pub fn cell(&self, now: Instant) -> Arc<SessionCell> {
        let cell = SessionCell {
            last_activity: AtomicU64::new(0),
            partial_since: AtomicU64::new(0),
            answering_since: AtomicU64::new(0),
            synthesized: AtomicU64::new(0),
            closed_by_core: AtomicBool::new(false),
        };
        cell.publish(self.epoch, &ConnActivity::idle_from(now));
        Arc::new(cell)
    }

    /// The task of session `id` was spawned, publishing to `cell`;
    /// `abort` stops it.
    pub fn started(&mut self, id: SessionId, cell: Arc<SessionCell>, abort: AbortHandle) {
        self.running.insert(id.key, (id, cell, abort));
    }

    /// The session reported its end.
    pub fn ended(&mut self, id: SessionId) {
        if self.running.get(&id.key).is_some_and(|(s, ..)| *s == id) {
            self.running.remove(&id.key);
        }
    }

    /// Close a session the core closed (evicted or expired), without a
    /// report.
    pub fn close(&mut self, id: SessionId) {
        if self.running.get(&id.key).is_some_and(|(s, ..)| *s == id)
            && let Some((_, cell, abort)) = self.running.remove(&id.key)
        {
            cell.closed_by_core.store(true, Ordering::Relaxed);
            abort.abort();
        }
    }
}

impl SessionActivity for Sessions {
    fn activity(&self, session: SessionId) -> Option<ConnActivity> {
        let (id, cell, _) = self.running.get(&session.key)?;
        (*id == session).then(|| cell.read(self.epoch))
    }
}

/// Answers TCP sessions paired with their queries for the packet cache
/// ([`crate::core::tcp_learn`]), waiting for the loop, which takes them at
/// its next turn and has the core learn them.  At most [`MAX_WAITING`]
/// wait; past that the oldest are dropped, and counted.  The buffers of
/// the pairs learned come back here (at most [`MAX_SPARE_BUFFERS`]) for
/// the sessions' next copies, so learning allocates nothing per answer.
#[derive(Debug, Default)]
pub struct LearnedAnswers {
    queue: parking_lot::Mutex<LearnedQueue>,
    /// Wakes the loop when the queue stops being empty: with no UDP
    /// traffic to wake it, answers would otherwise wait for a timer (and
    /// past [`MAX_WAITING`] be dropped), and their buffers with them.
    handed_over: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct LearnedQueue {
    answers: Vec<TcpAnswer>,
    dropped: u64,
    spare: Vec<Vec<u8>>,
}

/// Answers that may wait for the loop.
pub const MAX_WAITING: usize = 1024;
/// Empty buffers kept for the sessions (each at most 4 KiB).
pub const MAX_SPARE_BUFFERS: usize = 64;

impl LearnedAnswers {
    /// Move what `conn` paired into the queue.
    fn put(&self, conn: &mut TcpConn) {
        let mut q = self.queue.lock();
        let q = &mut *q;
        if q.answers.is_empty() {
            self.handed_over.notify_one();
        }
        q.dropped += conn.take_learned(&mut q.answers);
        conn.restock_learning(&mut q.spare);
        if q.answers.len() > MAX_WAITING {
            let excess = q.answers.len() - MAX_WAITING;
            q.answers.drain(..excess);
            q.dropped += excess as u64;
        }
    }

    /// Move every waiting answer into `out`; returns how many were dropped
    /// since the last call.
    pub fn take(&self, out: &mut Vec<TcpAnswer>) -> u64 {
        let mut q = self.queue.lock();
        out.append(&mut q.answers);
        std::mem::take(&mut q.dropped)
    }

    /// Wait until sessions hand over answers (never, without a queue).
    pub async fn handed_over(queue: Option<&LearnedAnswers>) {
        match queue {
            Some(q) => q.handed_over.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Keep the buffers of answers learned for the sessions' next copies,
    /// up to [`MAX_SPARE_BUFFERS`]; `bufs` is left empty.
    pub fn recycle(&self, bufs: &mut Vec<Vec<u8>>) {
        let mut q = self.queue.lock();
        let room = MAX_SPARE_BUFFERS.saturating_sub(q.spare.len());
        let keep = bufs.len().min(room);
        q.spare.extend(bufs.drain(..keep));
        bufs.clear();
    }
}

/// Reports the end of a session exactly once, however the task ends
/// (returns, panics, or is dropped at shutdown), unless the core closed it.
/// The loop's channel holds one report per session in the core's table
/// (its capacity is the session limit), so no report is lost.
pub struct EndReport {
    id: SessionId,
    backend: BackendId,
    end: SessionEnd,
    /// Answers the balancer made on the connection (FORMERR).
    synthesized: u32,
    cell: Arc<SessionCell>,
    tx: mpsc::Sender<Ended>,
}

impl EndReport {
    /// The report for `plan`'s session; until told otherwise, it ended in
    /// error.
    pub fn new(plan: &SessionPlan, cell: Arc<SessionCell>, tx: mpsc::Sender<Ended>) -> Self {
        EndReport {
            id: plan.session,
            backend: plan.backend,
            end: SessionEnd::Closed(TcpClose::Error),
            synthesized: 0,
            cell,
            tx,
        }
    }
}

impl Drop for EndReport {
    fn drop(&mut self) {
        if !self.cell.closed_by_core.load(Ordering::Relaxed) {
            let _ = self
                .tx
                .try_send((self.id, self.backend, self.end, self.synthesized));
        }
    }
}

/// Everything a session task needs.
pub struct Session {
    /// What the core decided: the backend, its socket, the deadlines.
    pub plan: SessionPlan,
    /// The client's connection.
    pub client: TcpStream,
    /// The session's logger (backend, `conn_id`, client address and port).
    pub log: Logger,
    /// Reports how the session ended, however the task ends.
    pub report: EndReport,
    /// The loop's epoch, which its activity times count from.
    pub epoch: Instant,
    /// Where answers to learn go, with the packet cache on.
    pub learned: Option<Arc<LearnedAnswers>>,
}

#[derive(Debug)]
enum OpenError {
    Connect(io::Error),
    Io(io::Error),
    NotOk(u32),
}

async fn open_backend(s: &Session) -> Result<QuietStream, OpenError> {
    let mut back = UnixStream::connect(&s.plan.backend_path)
        .await
        .map_err(OpenError::Connect)?;
    let (hello, len) = frame::inbound_tcp(s.plan.client.ip(), s.plan.client.port());
    back.write_all(&hello[..len]).await.map_err(OpenError::Io)?;
    // Read exactly the four bytes of the OK, so nothing of the DNS stream
    // behind it is consumed here.
    let mut ok = [0u8; 4];
    back.read_exact(&mut ok).await.map_err(OpenError::Io)?;
    match u32::from_le_bytes(ok) {
        frame_type::INBOUND_TCP_OK => QuietStream::new(back).map_err(OpenError::Io),
        other => Err(OpenError::NotOk(other)),
    }
}

/// Relay one client TCP connection to its backend.
pub async fn run_session(mut s: Session) {
    let conn = TcpConn::new(Instant::now());
    let conn = match &s.learned {
        Some(_) if s.plan.learn_answers => conn.with_learning(),
        _ => conn,
    };
    let mut relay = Relay {
        back: None,
        conn,
        learned: s.learned.clone(),
        answers: Vec::new(),
        answers_sent: 0,
        client_done: false,
        back_shut: false,
        epoch: s.epoch,
    };
    // The backend is connected once the client has sent a whole query
    // that is to be forwarded: a connection that never sends one (idle,
    // half-sent, garbage) costs no backend connection at all.
    let end = loop {
        let step = poll_fn(|cx| relay.poll_relay(&mut s.client, &s.report.cell, cx)).await;
        match step {
            Step::Close(close) => break SessionEnd::Closed(close),
            Step::OpenBackend => match open(&s).await {
                Ok(back) => relay.back = Some(back),
                Err(end) => break end,
            },
        }
    };
    if let SessionEnd::Closed(close) = end {
        debug!(s.log, "proxy connection finished"; "reason" => ?close);
    }
    s.report.synthesized = relay.conn.synthesized_count();
    s.report.end = end;
}

/// Open the session's backend connection, within the OK timeout; or how
/// the session ends.
async fn open(s: &Session) -> Result<QuietStream, SessionEnd> {
    let opened = tokio::time::timeout(s.plan.ok_timeout, open_backend(s)).await;
    match opened {
        Ok(Ok(back)) => {
            debug!(s.log, "connected to backend");
            Ok(back)
        }
        Err(_) => {
            error!(s.log, "timed out connecting to backend");
            Err(SessionEnd::OkTimeout)
        }
        Ok(Err(OpenError::Connect(e))) => {
            error!(s.log, "connect(3SOCKET) failed";
                "socket_path" => s.plan.backend_path.display().to_string(),
                "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
            Err(SessionEnd::ConnectFailed {
                gone: e.kind() == std::io::ErrorKind::NotFound,
            })
        }
        Ok(Err(OpenError::NotOk(t))) => {
            warn!(s.log, "backend invalid TCP OK"; "frame_type" => t);
            Err(SessionEnd::Closed(TcpClose::Refused))
        }
        Ok(Err(OpenError::Io(e))) => {
            warn!(s.log, "TCP error"; "which" => "back", "cause" => "open", "strerror" => e.to_string());
            Err(SessionEnd::Closed(TcpClose::Refused))
        }
    }
}

/// What the relay needs next.
enum Step {
    /// Connect the backend: a query is ready for it.
    OpenBackend,
    /// Close, for this reason.
    Close(TcpClose),
}

/// Why a read did not complete.
enum ReadStop {
    Pending,
    Failed,
}

/// One relay, polled by hand so that both directions are served by the one
/// task with no future built per event.
struct Relay {
    /// None until the first query to forward.  Registered for
    /// readability only (see [`QuietStream`]).
    back: Option<QuietStream>,
    conn: TcpConn,
    /// Bytes for the client (the backend's answers, or the balancer's
    /// own) not yet all written.
    answers: Vec<u8>,
    answers_sent: usize,
    client_done: bool,
    back_shut: bool,
    epoch: Instant,
    learned: Option<Arc<LearnedAnswers>>,
}

impl Relay {
    fn poll_relay(
        &mut self,
        client: &mut TcpStream,
        cell: &SessionCell,
        cx: &mut Context<'_>,
    ) -> Poll<Step> {
        let now = Instant::now();
        // Each direction runs until it waits.  One cannot unblock the other
        // (they wait on different sockets), so one pass of each will do.
        loop {
            match self.poll_up(client, cx, now) {
                Poll::Ready(Ok(true)) => continue,
                Poll::Ready(Ok(false)) | Poll::Pending => break,
                Poll::Ready(Err(step)) => return Poll::Ready(step),
            }
        }
        let down = loop {
            match self.poll_down(client, cx, now) {
                Poll::Ready(Ok(true)) => continue,
                Poll::Ready(Ok(false)) | Poll::Pending => break None,
                Poll::Ready(Err(close)) => break Some(close),
            }
        };
        if self.conn.has_learned()
            && let Some(learned) = &self.learned
        {
            learned.put(&mut self.conn);
        }
        if let Some(close) = down {
            return Poll::Ready(Step::Close(close));
        }
        if self.client_done && self.conn.outstanding() == 0 && self.is_flushed() {
            return Poll::Ready(Step::Close(TcpClose::Finished));
        }
        cell.publish(self.epoch, &self.conn.activity());
        Poll::Pending
    }

    fn is_flushed(&self) -> bool {
        self.conn.to_forward().is_empty()
            && self.answers_sent >= self.answers.len()
            && !self.conn.synthesized_ready()
    }

    /// Client to backend: write what was checked, else read more.
    /// Ready(Ok(true)) when something moved.
    fn poll_up(
        &mut self,
        client: &mut TcpStream,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<Result<bool, Step>> {
        if !self.conn.to_forward().is_empty() {
            let Some(back) = self.back.as_mut() else {
                return Poll::Ready(Err(Step::OpenBackend));
            };
            let n = ready!(Pin::new(back).poll_write(cx, self.conn.to_forward()))
                .map_err(|_| Step::Close(TcpClose::Error))?;
            if n == 0 {
                return Poll::Ready(Err(Step::Close(TcpClose::Error)));
            }
            self.conn.forwarded(n);
            if self.conn.to_forward().is_empty() {
                // Queries held back behind one the balancer answers.
                self.conn.take_queries(now).map_err(Step::Close)?;
            }
            return Poll::Ready(Ok(true));
        }
        if self.client_done {
            if !self.back_shut {
                // Pass the client's FIN on; the backend may still answer.
                if let Some(back) = self.back.as_mut() {
                    let _ = ready!(Pin::new(back).poll_shutdown(cx));
                }
                self.back_shut = true;
                return Poll::Ready(Ok(true));
            }
            return Poll::Ready(Ok(false));
        }
        let read = self.conn.read_client(now, |buf| read_into(client, cx, buf));
        match read {
            Ok(0) => self.client_done = true,
            Ok(_) => self.conn.take_queries(now).map_err(Step::Close)?,
            Err(ReadStop::Pending) => return Poll::Pending,
            Err(ReadStop::Failed) => return Poll::Ready(Err(Step::Close(TcpClose::Error))),
        }
        Poll::Ready(Ok(true))
    }

    /// To the client: write what is waiting, else take the balancer's own
    /// answers if it is their turn, else read the backend.
    fn poll_down(
        &mut self,
        client: &mut TcpStream,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Poll<Result<bool, TcpClose>> {
        if self.answers_sent < self.answers.len() {
            let n = ready!(Pin::new(client).poll_write(cx, &self.answers[self.answers_sent..]))
                .map_err(|_| TcpClose::Error)?;
            if n == 0 {
                return Poll::Ready(Err(TcpClose::Error));
            }
            self.answers_sent += n;
            self.conn.on_client_took(now);
            return Poll::Ready(Ok(true));
        }
        self.answers.clear();
        self.answers_sent = 0;
        if self.conn.synthesized_ready() {
            self.conn.take_synthesized(&mut self.answers);
            return Poll::Ready(Ok(true));
        }
        let Some(back) = self.back.as_mut() else {
            return Poll::Ready(Ok(false));
        };
        self.answers.reserve(ANSWER_CHUNK);
        match read_into(back, cx, &mut self.answers) {
            // The backend is done: what it sent has been written.
            Ok(0) => Poll::Ready(Err(TcpClose::Finished)),
            Ok(_) => {
                self.conn.on_answer_bytes(now, &self.answers);
                Poll::Ready(Ok(true))
            }
            Err(ReadStop::Pending) => Poll::Pending,
            Err(ReadStop::Failed) => Poll::Ready(Err(TcpClose::Error)),
        }
    }
}

/// Append what `stream` has to `buf`'s spare room (there is room for at
/// least one chunk), with tokio's read readiness: a short read clears it,
/// so an empty socket costs no second system call, and the room is not
/// zeroed first.
fn read_into(
    stream: &mut (impl AsyncRead + Unpin),
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Result<usize, ReadStop> {
    match std::pin::pin!(stream.read_buf(buf)).poll(cx) {
        Poll::Ready(Ok(n)) => Ok(n),
        Poll::Ready(Err(_)) => Err(ReadStop::Failed),
        Poll::Pending => Err(ReadStop::Pending),
    }
}
