//! TCP ADMISSION
//!
//! A client TCP connection is admitted or refused here, and given its
//! backend by the same sticky assignment as UDP (one remote, one backend).
//! The relaying itself is the shell's ([`crate::shell`]): a session opens
//! its own AF_UNIX connection to the backend, sends INBOUND_TCP and then
//! copies bytes both ways.  Sessions are bounded (`--max-tcp-sessions`);
//! each one ends with exactly one [`SessionEnd`] report, which is how the
//! core counts them and learns that a backend never confirmed a session
//! (it is then faulted, as the original does).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use slog::{debug, warn};
use tokio::time::Instant;

use super::assign::{Assigned, assign_client};
use super::{Core, Io, REPEAT_LOG_INTERVAL};
use crate::backends::BackendId;
use crate::remotes::RemoteStats;

/// What to do with a connection offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpVerdict {
    /// Relay it as planned.
    Admit(SessionPlan),
    /// Close it at once (counted: no backend, or too many sessions).
    Refuse,
}

/// A session to start: everything the shell needs to relay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    pub conn_id: u64,
    /// The client's address (v4-mapping undone) and port.
    pub client: SocketAddr,
    pub backend: BackendId,
    pub backend_path: PathBuf,
    /// INBOUND_TCP_OK must arrive within this.
    pub ok_timeout: Duration,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// Relayed until either side closed or failed.
    Done,
    /// The backend did not confirm the session in time: fault it.
    OkTimeout,
    /// Connecting to the backend's socket failed.
    ConnectFailed,
}

impl Core {
    /// A client connected from `peer`: admit or refuse.
    pub fn on_tcp_offered(&mut self, now: Instant, peer: SocketAddr) -> TcpVerdict {
        self.counters.tcp_accepted += 1;
        self.next_conn_id += 1;
        let conn_id = self.next_conn_id;
        let ip = peer.ip().to_canonical();
        debug!(self.log, "inbound TCP connection";
            "conn_id" => conn_id, "remote_ip" => ip.to_string(), "remote_port" => peer.port());
        if !self.cfg.acl.permits(ip) {
            // Closed at accept; no remote created.
            self.counters.tcp_dropped_acl += 1;
            return TcpVerdict::Refuse;
        }
        let Assigned { remote, backend } = assign_client!(self, ip, now);
        if remote.is_none() {
            self.counters.untracked_connections += 1;
        }
        // A client served without a remote is counted nowhere else.
        let mut untracked = RemoteStats::default();
        let rem = match remote {
            Some(rem) => &mut rem.stats,
            None => &mut untracked,
        };
        let Some(be_id) = backend else {
            rem.tcp_drop += 1;
            self.counters.tcp_dropped_no_backend += 1;
            return TcpVerdict::Refuse;
        };
        if self.tcp_open >= self.cfg.max_tcp_sessions {
            rem.tcp_drop += 1;
            self.counters.tcp_dropped_session_limit += 1;
            if self
                .repeat_logs
                .session_limit
                .allow(now, REPEAT_LOG_INTERVAL)
            {
                warn!(self.log, "too many TCP sessions (dropping connection)";
                    "max_tcp_sessions" => self.cfg.max_tcp_sessions);
            }
            return TcpVerdict::Refuse;
        }
        let Some(be) = self.backends.get_mut(be_id) else {
            rem.tcp_drop += 1;
            self.counters.tcp_dropped_no_backend += 1;
            return TcpVerdict::Refuse;
        };
        rem.tcp += 1;
        be.stats.tcp += 1;
        be.stats.conn_start += 1;
        self.tcp_open += 1;
        TcpVerdict::Admit(SessionPlan {
            conn_id,
            client: SocketAddr::new(ip, peer.port()),
            backend: be_id,
            backend_path: be.path.clone(),
            ok_timeout: self.cfg.timers.tcp_connect_timeout,
        })
    }

    /// A session admitted by [`Core::on_tcp_offered`] ended.
    pub fn on_session_ended(
        &mut self,
        now: Instant,
        backend: BackendId,
        end: SessionEnd,
        io: &mut impl Io,
    ) {
        self.tcp_open = self.tcp_open.saturating_sub(1);
        match end {
            SessionEnd::Done => {}
            // Only a backend in service is faulted: one already down is
            // being reconnected, and faulting it again would push its
            // reconnect back (a stream of such sessions could keep it
            // down for good).  The simulation found this.
            SessionEnd::OkTimeout if self.backends.get(backend).is_some_and(|b| b.is_ok()) => {
                self.fault(backend, now, io)
            }
            SessionEnd::OkTimeout => {}
            SessionEnd::ConnectFailed => {
                if let Some(be) = self.backends.get_mut(backend) {
                    be.stats.conn_error += 1;
                }
            }
        }
        self.check_drained();
    }
}
