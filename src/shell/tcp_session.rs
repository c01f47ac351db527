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
//! The task reads the client's stream into the connection's
//! [`TcpConn`], which checks each query as a message and says what may be
//! written to the backend (the queries as they arrived, never copied) and
//! when the connection must close (idle, a slow or bad sender, a silent
//! backend).  The backend's stream is copied back as it comes, and counted
//! in answers.  End-of-stream is passed on: after the client's FIN the
//! backend can still answer what was asked.
//!
//! Each session publishes since when it has been idle in a [`SessionCell`]
//! the loop reads when it must evict one ([`Sessions`], the core's
//! [`SessionActivity`]); an evicted session's task is aborted.  A backend
//! that does not send the OK within the TCP connect timeout is reported to
//! the core, which faults it.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use slog::{Logger, debug, error, warn};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

use crate::backends::BackendId;
use crate::core::{
    SessionActivity, SessionEnd, SessionId, SessionKey, SessionPlan, TcpClose, TcpConn,
};
use mname_balancer_protocol::{self as frame, frame_type};

/// How a session's end reaches the loop.
pub type Ended = (SessionId, BackendId, SessionEnd);

/// Bytes of the backend's answers read at a time.
const ANSWER_CHUNK: usize = 8192;

/// Bytes read from a client at a time, at most.
const QUERY_READ_MAX: usize = 16 * 1024;

/// What a session tells the loop while it runs: since when it is idle,
/// and whether the loop evicted it.
#[derive(Debug)]
pub struct SessionCell {
    /// 0 while being answered; else 1 + milliseconds from the loop's
    /// epoch to when it became idle.
    idle_since: AtomicU64,
    /// Set by the loop before aborting an evicted session: the core has
    /// forgotten it, so its end is not reported.
    evicted: AtomicBool,
}

/// The loop's handles on the sessions running.
pub struct Sessions {
    epoch: Instant,
    running: HashMap<SessionKey, (SessionId, Arc<SessionCell>, AbortHandle)>,
}

impl Sessions {
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
        Arc::new(SessionCell {
            idle_since: AtomicU64::new(encode(self.epoch, Some(now))),
            evicted: AtomicBool::new(false),
        })
    }

    pub fn started(&mut self, id: SessionId, cell: Arc<SessionCell>, abort: AbortHandle) {
        self.running.insert(id.key, (id, cell, abort));
    }

    /// The session reported its end.
    pub fn ended(&mut self, id: SessionId) {
        if self.running.get(&id.key).is_some_and(|(s, ..)| *s == id) {
            self.running.remove(&id.key);
        }
    }

    /// Close a session the core evicted, without a report.
    pub fn evict(&mut self, id: SessionId) {
        if self.running.get(&id.key).is_some_and(|(s, ..)| *s == id)
            && let Some((_, cell, abort)) = self.running.remove(&id.key)
        {
            cell.evicted.store(true, Ordering::Relaxed);
            abort.abort();
        }
    }
}

impl SessionActivity for Sessions {
    fn evictable_since(&self, session: SessionId) -> Option<Instant> {
        let (id, cell, _) = self.running.get(&session.key)?;
        if *id != session {
            return None;
        }
        match cell.idle_since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + std::time::Duration::from_millis(ms - 1)),
        }
    }
}

fn encode(epoch: Instant, idle_since: Option<Instant>) -> u64 {
    match idle_since {
        None => 0,
        Some(t) => 1 + u64::try_from(t.saturating_duration_since(epoch).as_millis()).unwrap_or(0),
    }
}

/// Reports the end of a session exactly once, however the task ends
/// (returns, panics, or is dropped at shutdown), unless it was evicted.
/// The loop's channel holds one report per session in the core's table
/// (its capacity is the session limit), so no report is lost.
pub struct EndReport {
    id: SessionId,
    backend: BackendId,
    end: SessionEnd,
    cell: Arc<SessionCell>,
    tx: mpsc::Sender<Ended>,
}

impl EndReport {
    pub fn new(plan: &SessionPlan, cell: Arc<SessionCell>, tx: mpsc::Sender<Ended>) -> Self {
        EndReport {
            id: plan.session,
            backend: plan.backend,
            end: SessionEnd::Closed(TcpClose::Error),
            cell,
            tx,
        }
    }
}

impl Drop for EndReport {
    fn drop(&mut self) {
        if !self.cell.evicted.load(Ordering::Relaxed) {
            let _ = self.tx.try_send((self.id, self.backend, self.end));
        }
    }
}

/// Everything a session task needs.
pub struct Session {
    pub plan: SessionPlan,
    pub client: TcpStream,
    pub log: Logger,
    pub report: EndReport,
    pub epoch: Instant,
}

#[derive(Debug)]
enum OpenError {
    Connect(io::Error),
    Io(io::Error),
    NotOk(u32),
}

async fn open_backend(s: &Session) -> Result<UnixStream, OpenError> {
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
        frame_type::INBOUND_TCP_OK => Ok(back),
        other => Err(OpenError::NotOk(other)),
    }
}

/// Relay one client TCP connection to its backend.
pub async fn run_session(mut s: Session) {
    let opened = tokio::time::timeout(s.plan.ok_timeout, open_backend(&s)).await;
    let mut back = match opened {
        Ok(Ok(back)) => back,
        Err(_) => {
            error!(s.log, "timed out connecting to backend");
            s.report.end = SessionEnd::OkTimeout;
            return;
        }
        Ok(Err(OpenError::Connect(e))) => {
            error!(s.log, "connect(3SOCKET) failed";
                "socket_path" => s.plan.backend_path.display().to_string(),
                "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
            s.report.end = SessionEnd::ConnectFailed;
            return;
        }
        Ok(Err(OpenError::NotOk(t))) => {
            warn!(s.log, "backend invalid TCP OK"; "frame_type" => t);
            s.report.end = SessionEnd::Closed(TcpClose::Refused);
            return;
        }
        Ok(Err(OpenError::Io(e))) => {
            warn!(s.log, "TCP error"; "which" => "back", "cause" => "open", "strerror" => e.to_string());
            s.report.end = SessionEnd::Closed(TcpClose::Refused);
            return;
        }
    };
    debug!(s.log, "connected to backend");
    let now = Instant::now();
    let conn = TcpConn::new(now, s.plan.limits);
    let mut relay = Relay {
        client: &mut s.client,
        back: &mut back,
        sleep: Box::pin(tokio::time::sleep_until(conn.deadline())),
        armed: conn.deadline(),
        conn,
        answers: Vec::new(),
        answers_sent: 0,
        client_done: false,
        back_shut: false,
        cell: &s.report.cell,
        epoch: s.epoch,
    };
    let close = poll_fn(|cx| relay.poll_relay(cx)).await;
    debug!(s.log, "proxy connection finished"; "reason" => format!("{close:?}"));
    s.report.end = SessionEnd::Closed(close);
}

/// Why a read did not complete.
enum ReadStop {
    Pending,
    Failed,
}

/// One relay, polled by hand so that both directions and the deadline are
/// served by the one task with no future built per event.
struct Relay<'a> {
    client: &'a mut TcpStream,
    back: &'a mut UnixStream,
    conn: TcpConn,
    sleep: Pin<Box<Sleep>>,
    /// The deadline `sleep` is set to.
    armed: Instant,
    /// The backend's bytes read and not yet all written to the client.
    answers: Vec<u8>,
    answers_sent: usize,
    client_done: bool,
    back_shut: bool,
    cell: &'a SessionCell,
    epoch: Instant,
}

impl Relay<'_> {
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<TcpClose> {
        let now = Instant::now();
        loop {
            let up = match self.poll_up(cx, now) {
                Poll::Ready(Ok(progress)) => progress,
                Poll::Ready(Err(close)) => return Poll::Ready(close),
                Poll::Pending => false,
            };
            let down = match self.poll_down(cx, now) {
                Poll::Ready(Ok(progress)) => progress,
                Poll::Ready(Err(close)) => return Poll::Ready(close),
                Poll::Pending => false,
            };
            if self.client_done && self.conn.outstanding() == 0 && self.is_flushed() {
                return Poll::Ready(TcpClose::Finished);
            }
            if !up && !down {
                break;
            }
        }
        let idle = encode(self.epoch, self.conn.evictable_since());
        if self.cell.idle_since.load(Ordering::Relaxed) != idle {
            self.cell.idle_since.store(idle, Ordering::Relaxed);
        }
        self.poll_deadline(cx)
    }

    fn is_flushed(&self) -> bool {
        self.conn.to_forward().is_empty() && self.answers_sent >= self.answers.len()
    }

    /// Client to backend: write what was checked, else read more.
    /// Ready(Ok(true)) when something moved.
    fn poll_up(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Result<bool, TcpClose>> {
        if !self.conn.to_forward().is_empty() {
            let n = ready!(Pin::new(&mut *self.back).poll_write(cx, self.conn.to_forward()))
                .map_err(|_| TcpClose::Error)?;
            if n == 0 {
                return Poll::Ready(Err(TcpClose::Error));
            }
            self.conn.forwarded(n);
            return Poll::Ready(Ok(true));
        }
        if self.client_done {
            if !self.back_shut {
                // Pass the client's FIN on; the backend may still answer.
                let _ = ready!(Pin::new(&mut *self.back).poll_shutdown(cx));
                self.back_shut = true;
                return Poll::Ready(Ok(true));
            }
            return Poll::Ready(Ok(false));
        }
        let client = &mut *self.client;
        let read = self.conn.read_client(now, |buf| read_into(client, cx, buf));
        match read {
            Ok(0) => self.client_done = true,
            Ok(_) => self.conn.take_queries(now)?,
            Err(ReadStop::Pending) => return Poll::Pending,
            Err(ReadStop::Failed) => return Poll::Ready(Err(TcpClose::Error)),
        }
        Poll::Ready(Ok(true))
    }

    /// Backend to client: write what was read, else read more.
    fn poll_down(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<Result<bool, TcpClose>> {
        if self.answers_sent < self.answers.len() {
            let n = ready!(
                Pin::new(&mut *self.client).poll_write(cx, &self.answers[self.answers_sent..])
            )
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
        self.answers.reserve(ANSWER_CHUNK);
        match read_into(&mut *self.back, cx, &mut self.answers) {
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

    /// Wait for the connection's deadline; Ready with the reason to close
    /// once it has passed.  The timer is moved only when the deadline comes
    /// sooner or it fires, not on every byte.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<TcpClose> {
        loop {
            let deadline = self.conn.deadline();
            if deadline < self.armed {
                self.sleep.as_mut().reset(deadline);
                self.armed = deadline;
            }
            ready!(self.sleep.as_mut().poll(cx));
            if let Some(close) = self.conn.expired(Instant::now()) {
                return Poll::Ready(close);
            }
            let next = self.conn.deadline();
            self.sleep.as_mut().reset(next);
            self.armed = next;
        }
    }
}

/// Append what `stream` has to `buf` (room for at least one chunk is
/// there), with tokio's read readiness: a short read clears it, so an
/// empty socket costs no second system call.
fn read_into(
    stream: &mut (impl AsyncRead + Unpin),
    cx: &mut Context<'_>,
    buf: &mut Vec<u8>,
) -> Result<usize, ReadStop> {
    let len = buf.len();
    let room = (buf.capacity() - len).clamp(1, QUERY_READ_MAX);
    buf.resize(len + room, 0);
    let mut rb = ReadBuf::new(&mut buf[len..]);
    let polled = Pin::new(stream).poll_read(cx, &mut rb);
    let n = rb.filled().len();
    buf.truncate(len + n);
    match polled {
        Poll::Ready(Ok(())) => Ok(n),
        Poll::Ready(Err(_)) => Err(ReadStop::Failed),
        Poll::Pending => Err(ReadStop::Pending),
    }
}
