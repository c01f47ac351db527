//! TCP RELAY
//!
//! Each client TCP connection is relayed through its own new AF_UNIX
//! connection to the client's backend.  That connection opens with
//! INBOUND_TCP (the client's address and port; INBOUND_TCP6 for an IPv6
//! client, sent only to backends that speak it; no CLIENT_HELLO), and once the
//! backend answers INBOUND_TCP_OK it carries DNS-over-TCP bytes verbatim both
//! ways.
//!
//! The event loop accepts the connection and picks the backend (stickiness is
//! the same as for UDP); a [`run_session`] task does the rest, so a slow
//! client or backend never holds up the loop.  Bytes the client sends before
//! the OK are held in the client socket's receive buffer (bounded by the
//! kernel) and flow after it.  End-of-stream is passed on in each direction
//! separately: after the client's FIN the backend can still answer what was
//! asked, and only when both directions are done is the session closed.  An
//! error on either side tears both down.  A backend that does not send the
//! OK within the TCP connect timeout is reported to the loop, which faults it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use slog::{Logger, debug, error, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::backends::BackendId;
use crate::frame::{self, frame_type};

/// What a session reports to the event loop.
#[derive(Debug)]
pub enum SessionEvent {
    /// The backend did not confirm the session in time: fault it.
    OkTimeout { backend: BackendId },
    /// Connecting to the backend's socket failed.
    ConnectFailed { backend: BackendId },
    /// A session ended (the loop may be waiting for the last one to drain).
    Ended,
}

/// Holds a session's place among the concurrent sessions; when the session
/// ends, however it ends, the place is given back and the loop is told.
pub struct SessionSlot {
    permit: Option<OwnedSemaphorePermit>,
    events: mpsc::Sender<SessionEvent>,
}

impl SessionSlot {
    pub fn new(permit: OwnedSemaphorePermit, events: mpsc::Sender<SessionEvent>) -> Self {
        SessionSlot {
            permit: Some(permit),
            events,
        }
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        drop(self.permit.take());
        // If the loop's queue is full it is busy anyway and will look again.
        let _ = self.events.try_send(SessionEvent::Ended);
    }
}

/// Everything a session task needs.
pub struct Session {
    pub conn_id: u64,
    pub client: TcpStream,
    pub client_addr: IpAddr,
    pub client_port: u16,
    pub backend: BackendId,
    pub backend_path: PathBuf,
    pub ok_timeout: Duration,
    pub log: Logger,
    pub events: mpsc::Sender<SessionEvent>,
    /// Held for the life of the session: bounds concurrent sessions.
    pub slot: SessionSlot,
}

#[derive(Debug)]
enum OpenError {
    Connect(std::io::Error),
    Io(std::io::Error),
    NotOk(u32),
}

async fn open_backend(s: &Session) -> Result<UnixStream, OpenError> {
    let mut back = UnixStream::connect(&s.backend_path)
        .await
        .map_err(OpenError::Connect)?;
    let (hello, len) = frame::inbound_tcp(s.client_addr, s.client_port);
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
    let opened = tokio::time::timeout(s.ok_timeout, open_backend(&s)).await;
    let mut back = match opened {
        Ok(Ok(back)) => back,
        Err(_) => {
            error!(s.log, "timed out connecting to backend");
            let _ = s
                .events
                .send(SessionEvent::OkTimeout { backend: s.backend })
                .await;
            return;
        }
        Ok(Err(OpenError::Connect(e))) => {
            error!(s.log, "connect(3SOCKET) failed";
                "socket_path" => s.backend_path.display().to_string(),
                "errno" => e.raw_os_error().unwrap_or(0), "strerror" => e.to_string());
            let _ = s
                .events
                .send(SessionEvent::ConnectFailed { backend: s.backend })
                .await;
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
