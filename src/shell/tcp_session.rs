//! TCP RELAY
//!
//! Each client TCP connection is relayed through its own new AF_UNIX
//! connection to the client's backend.  That connection opens with
//! INBOUND_TCP (the client's address and port; INBOUND_TCP6 for an IPv6
//! client, sent only to backends that speak it; no CLIENT_HELLO), and once the
//! backend answers INBOUND_TCP_OK it carries DNS-over-TCP bytes verbatim both
//! ways.
//!
//! The core admits the connection and picks the backend (stickiness is
//! the same as for UDP); a [`run_session`] task does the rest, so a slow
//! client or backend never holds up the loop.  Bytes the client sends before
//! the OK are held in the client socket's receive buffer (bounded by the
//! kernel) and flow after it.  End-of-stream is passed on in each direction
//! separately: after the client's FIN the backend can still answer what was
//! asked, and only when both directions are done is the session closed.  An
//! error on either side tears both down.  A backend that does not send the
//! OK within the TCP connect timeout is reported to the core, which faults it.

use slog::{Logger, debug, error, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;

use crate::backends::BackendId;
use crate::core::{SessionEnd, SessionPlan};
use mname_balancer_protocol::{self as frame, frame_type};

/// How a session's end reaches the loop: the backend and how it ended.
pub type Ended = (BackendId, SessionEnd);

/// Reports the end of a session exactly once, however the task ends
/// (returns, panics, or is dropped at shutdown).  The loop's channel holds
/// one report per admitted session (its capacity is the session limit, and
/// the core admits no more than that), so the report is never lost.
pub struct EndReport {
    backend: BackendId,
    end: SessionEnd,
    tx: mpsc::Sender<Ended>,
}

impl EndReport {
    pub fn new(backend: BackendId, tx: mpsc::Sender<Ended>) -> Self {
        EndReport {
            backend,
            end: SessionEnd::Done,
            tx,
        }
    }
}

impl Drop for EndReport {
    fn drop(&mut self) {
        let _ = self.tx.try_send((self.backend, self.end));
    }
}

/// Everything a session task needs.
pub struct Session {
    pub plan: SessionPlan,
    pub client: TcpStream,
    pub log: Logger,
    pub report: EndReport,
}

#[derive(Debug)]
enum OpenError {
    Connect(std::io::Error),
    Io(std::io::Error),
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
            return;
        }
        Ok(Err(OpenError::Io(e))) => {
            warn!(s.log, "TCP error"; "which" => "back", "cause" => "open", "strerror" => e.to_string());
            return;
        }
    };
    debug!(s.log, "connected to backend");
    match tokio::io::copy_bidirectional(&mut s.client, &mut back).await {
        Ok((up, down)) => {
            debug!(s.log, "proxy connection finished"; "bytes_in" => up, "bytes_out" => down)
        }
        Err(e) => {
            // Either side failing ends the session; dropping both streams
            // closes them.
            debug!(s.log, "TCP error"; "strerror" => e.to_string());
        }
    }
}
