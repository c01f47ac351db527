//! TCP ADMISSION
//!
//! A client TCP connection is admitted or refused here, and given its
//! backend by the same sticky assignment as UDP (one remote, one backend).
//! The relaying itself is the shell's ([`crate::shell::tcp_session`]),
//! under the per-connection policy of [`super::tcp_conn`]: a session opens
//! its own AF_UNIX connection to the backend, sends INBOUND_TCP, and then
//! relays DNS messages both ways.
//!
//! The core keeps the table of open sessions, which bounds them in three
//! ways, so that neither one host nor many can hold every slot:
//!
//! - the access list refuses a client at accept (`--allow`, `--deny`);
//! - one client address holds at most `--max-tcp-per-client` sessions;
//! - at `--max-tcp-sessions`, a new connection is not refused while an
//!   idle one holds a slot: the session that has been idle the longest (no
//!   query outstanding, no byte either way) is evicted to admit it.  A
//!   session being answered is never cut; if every session is being
//!   answered, the new connection is refused.  Finding the victim reads
//!   every session's activity, so it costs a pass over the table, and only
//!   when the table is full.
//!
//! Sessions are swept on a timer ([`Core::sweep_tcp_sessions`]): each one's
//! published activity ([`ConnActivity`]) says whether it has been idle past
//! `--tcp-idle-timeout`, has had a message half-sent past
//! `--tcp-read-timeout`, or has waited on a silent backend; those are
//! closed.  The sweep runs every eighth of the shorter timeout (between
//! 10 ms and 1 s), so a connection is closed at most that late.
//!
//! A session the core closes (evicted or expired) is counted and forgotten
//! at once; any other ends with exactly one [`SessionEnd`] report, which is
//! how the core counts it by reason and learns that a backend never
//! confirmed a session (it is then faulted, as the original does).
//! `tcp_accepted` = the `tcp_dropped_*` + the `tcp_closed_*` + the
//! sessions open, always (the simulation checks it).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use foldhash::fast::RandomState;
use slab::Slab;
use slog::{debug, warn};
use tokio::time::Instant;

use super::assign::{Assigned, assign_client};
use super::intake::Refusal;
use super::tcp_conn::{ConnActivity, TcpClose, TcpConnLimits};
use super::{Core, Counters, Io, REPEAT_LOG_INTERVAL};
use crate::backends::BackendId;
use crate::remotes::RemoteStats;

/// A session's slot in the table (reused after it ends; see
/// [`SessionId`]).
pub type SessionKey = usize;

/// A session, named so that a late report can never be taken for the
/// session that reused its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId {
    /// Its slot in the table.
    pub key: SessionKey,
    /// Unique for the life of the process (the logs' `conn_id`).
    pub conn_id: u64,
}

/// A burst of at least this many sessions, once gone, has its memory given
/// back to the system.
const RELEASE_AFTER_SESSIONS: usize = 256;

/// What to do with a connection offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TcpVerdict {
    /// Relay it as planned; first close `evict`, if given, which the core
    /// has already counted and forgotten (no report is expected from it).
    Admit {
        /// The session to start.
        plan: SessionPlan,
        /// An idle session to close first, to make room.
        evict: Option<SessionId>,
    },
    /// Close it at once (counted by reason).
    Refuse,
}

/// A session to start: everything the shell needs to relay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPlan {
    /// The session's name, for its reports.
    pub session: SessionId,
    /// The client's address (v4-mapping undone) and port.
    pub client: SocketAddr,
    /// The backend it is relayed to: its client's, as for UDP.
    pub backend: BackendId,
    /// That backend's socket, which the session connects to on its own.
    pub backend_path: PathBuf,
    /// INBOUND_TCP_OK must arrive within this.
    pub ok_timeout: Duration,
    /// The packet cache is on: pair the session's queries with their
    /// answers for it ([`super::tcp_learn`]).
    pub learn_answers: bool,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The backend did not confirm the session in time: fault it.
    OkTimeout,
    /// Connecting to the backend's socket failed.
    ConnectFailed {
        /// There is no socket file at its path any more.
        gone: bool,
    },
    /// Relayed, then closed for this reason.
    Closed(TcpClose),
}

/// What the shell knows of its sessions that the core needs to choose one
/// to evict or to close: each one's activity, as its relay published it.
pub trait SessionActivity {
    /// The activity of `session`; `None` if the shell has no such session.
    fn activity(&self, session: SessionId) -> Option<ConnActivity>;
}

/// One open session.
#[derive(Debug)]
struct Entry {
    conn_id: u64,
    ip: IpAddr,
}

/// The open sessions, and how many each client address holds.
#[derive(Debug, Default)]
pub(super) struct TcpSessions {
    table: Slab<Entry>,
    per_client: HashMap<IpAddr, u32, RandomState>,
    /// When the table is next swept for expired sessions (while any).
    next_sweep: Option<Instant>,
    /// The most sessions open since memory was last given back.
    peak: usize,
}

impl TcpSessions {
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    fn held_by(&self, ip: IpAddr) -> u32 {
        self.per_client.get(&ip).copied().unwrap_or(0)
    }

    fn insert(&mut self, conn_id: u64, ip: IpAddr) -> SessionId {
        *self.per_client.entry(ip).or_default() += 1;
        let key = self.table.insert(Entry { conn_id, ip });
        self.peak = self.peak.max(self.table.len());
        SessionId { key, conn_id }
    }

    /// Whether the table has shrunk from a burst (hundreds of sessions, now
    /// a quarter or less), so that the memory they held should go back to
    /// the system.  Resets the peak when it says so.
    fn burst_passed(&mut self) -> bool {
        let passed = self.peak >= RELEASE_AFTER_SESSIONS && self.table.len() <= self.peak / 4;
        if passed {
            self.peak = self.table.len();
        }
        passed
    }

    /// Forget `id`; false if it is not (or no longer) in the table.
    fn remove(&mut self, id: SessionId) -> bool {
        if self
            .table
            .get(id.key)
            .is_none_or(|e| e.conn_id != id.conn_id)
        {
            return false;
        }
        let e = self.table.remove(id.key);
        if let Some(n) = self.per_client.get_mut(&e.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&e.ip);
            }
        }
        true
    }

    /// The session idle the longest, if any is idle.
    fn longest_idle(&self, activity: &impl SessionActivity) -> Option<SessionId> {
        self.table
            .iter()
            .filter_map(|(key, e)| {
                let id = SessionId {
                    key,
                    conn_id: e.conn_id,
                };
                let since = activity.activity(id)?.evictable_since()?;
                Some((since, id))
            })
            .min_by_key(|(since, id)| (*since, id.conn_id))
            .map(|(_, id)| id)
    }
}

impl Core {
    /// A client connected from `peer`: admit or refuse.  `activity` tells
    /// which open sessions are idle, should one have to be evicted.
    pub fn on_tcp_offered(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        activity: &impl SessionActivity,
    ) -> TcpVerdict {
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
        if self.tcp.held_by(ip) >= self.cfg.max_tcp_per_client {
            // Before assignment: a flood from one address costs no state.
            self.counters.tcp_dropped_per_client += 1;
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
        let Some((be_id, backend_path)) =
            backend.and_then(|id| Some((id, self.backends.get(id)?.path.clone())))
        else {
            rem.tcp_drop += 1;
            self.counters.tcp_dropped_no_backend += 1;
            return TcpVerdict::Refuse;
        };
        let mut evict = None;
        if self.tcp.len() >= self.cfg.max_tcp_sessions {
            match self.tcp.longest_idle(activity) {
                Some(victim) => {
                    self.tcp.remove(victim);
                    if let Some(a) = activity.activity(victim) {
                        self.counters.formerr_answers += u64::from(a.synthesized);
                    }
                    count_close(&mut self.counters, SessionEnd::Closed(TcpClose::Evicted));
                    evict = Some(victim);
                }
                None => {
                    rem.tcp_drop += 1;
                    self.counters.tcp_dropped_session_limit += 1;
                    if self
                        .repeat_logs
                        .session_limit
                        .allow(now, REPEAT_LOG_INTERVAL)
                    {
                        warn!(self.log, "too many TCP sessions, all busy (dropping connection)";
                            "max_tcp_sessions" => self.cfg.max_tcp_sessions);
                    }
                    return TcpVerdict::Refuse;
                }
            }
        }
        rem.tcp += 1;
        if let Some(be) = self.backends.get_mut(be_id) {
            be.stats.tcp += 1;
            be.stats.conn_start += 1;
        }
        let session = self.tcp.insert(conn_id, ip);
        if self.tcp.next_sweep.is_none() {
            self.tcp.next_sweep = Some(now + self.tcp_sweep_interval());
        }
        let t = &self.cfg.timers;
        TcpVerdict::Admit {
            plan: SessionPlan {
                session,
                client: SocketAddr::new(ip, peer.port()),
                backend: be_id,
                backend_path,
                ok_timeout: t.tcp_connect_timeout,
                learn_answers: self.cache.is_on(),
            },
            evict,
        }
    }

    fn tcp_limits(&self) -> TcpConnLimits {
        let t = &self.cfg.timers;
        TcpConnLimits {
            idle: t.tcp_idle_timeout,
            read: t.tcp_read_timeout,
        }
    }

    /// An eighth of the shorter TCP timeout, between 10 ms and 1 s.
    fn tcp_sweep_interval(&self) -> Duration {
        let t = &self.cfg.timers;
        (t.tcp_idle_timeout.min(t.tcp_read_timeout) / 8)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// When [`Core::sweep_tcp_sessions`] is next due (never while no
    /// session is open).
    pub fn tcp_sweep_at(&self) -> Option<Instant> {
        self.tcp.next_sweep
    }

    /// Close every session whose time is up by its `activity`: each is
    /// counted by reason, forgotten, and pushed to `closed` for the shell
    /// to close (no report is expected from it).
    pub fn sweep_tcp_sessions(
        &mut self,
        now: Instant,
        activity: &impl SessionActivity,
        closed: &mut Vec<SessionId>,
        io: &mut impl Io,
    ) {
        if self.tcp.next_sweep.is_none_or(|at| at > now) {
            return;
        }
        let limits = self.tcp_limits();
        let expired: Vec<(SessionId, TcpClose, u32)> = self
            .tcp
            .table
            .iter()
            .filter_map(|(key, e)| {
                let id = SessionId {
                    key,
                    conn_id: e.conn_id,
                };
                let a = activity.activity(id)?;
                Some((id, a.expired(limits, now)?, a.synthesized))
            })
            .collect();
        for (id, why, synthesized) in expired {
            self.tcp.remove(id);
            count_close(&mut self.counters, SessionEnd::Closed(why));
            self.counters.formerr_answers += u64::from(synthesized);
            closed.push(id);
        }
        self.tcp.next_sweep = (self.tcp.len() > 0).then(|| now + self.tcp_sweep_interval());
        if self.tcp.burst_passed() {
            io.release_memory();
        }
        self.check_drained();
    }

    /// A session that ended (reported, not closed by the core) made
    /// `synthesized` answers of its own (FORMERR): count them.
    pub fn on_session_answers(&mut self, synthesized: u32) {
        self.counters.formerr_answers += u64::from(synthesized);
    }

    /// A session admitted by [`Core::on_tcp_offered`] ended.  A report for
    /// a session the core no longer has (evicted) changes nothing.
    pub fn on_session_ended(
        &mut self,
        now: Instant,
        session: SessionId,
        backend: BackendId,
        end: SessionEnd,
        io: &mut impl Io,
    ) {
        if !self.tcp.remove(session) {
            return;
        }
        if self.tcp.len() == 0 {
            self.tcp.next_sweep = None;
        }
        if self.tcp.burst_passed() {
            io.release_memory();
        }
        count_close(&mut self.counters, end);
        match end {
            // Only a backend in service is faulted: one already down is
            // being reconnected, and faulting it again would push its
            // reconnect back (a stream of such sessions could keep it
            // down for good).  The simulation found this.
            SessionEnd::OkTimeout if self.backends.get(backend).is_some_and(|b| b.is_ok()) => {
                self.fault(backend, now, io)
            }
            SessionEnd::ConnectFailed { gone } => {
                let in_service = self.backends.get(backend).is_some_and(|b| b.is_ok());
                if let Some(be) = self.backends.get_mut(backend) {
                    be.stats.conn_error += 1;
                }
                // Its control link may live on (the process runs, its
                // socket file was moved or removed), but no session can
                // reach it: fault it, so that its reconnect finds the file
                // gone and its clients move to a backend they can reach.
                if gone && in_service {
                    warn!(
                        self.backend_log(backend),
                        "backend socket file gone (TCP session could not connect)"
                    );
                    self.fault(backend, now, io);
                }
            }
            _ => {}
        }
        self.check_drained();
    }
}

/// Count a session's end under its reason.
fn count_close(c: &mut Counters, end: SessionEnd) {
    let counter = match end {
        SessionEnd::OkTimeout | SessionEnd::ConnectFailed { .. } => &mut c.tcp_closed_backend,
        SessionEnd::Closed(close) => match close {
            TcpClose::Finished => &mut c.tcp_closed_finished,
            TcpClose::Error => &mut c.tcp_closed_error,
            TcpClose::Refused => &mut c.tcp_closed_backend,
            TcpClose::Idle => &mut c.tcp_closed_idle,
            TcpClose::ReadTimeout => &mut c.tcp_closed_read_timeout,
            TcpClose::Unanswered => &mut c.tcp_closed_unanswered,
            TcpClose::BadMessage(Refusal::Short) => &mut c.tcp_closed_short,
            TcpClose::BadMessage(Refusal::Response) => &mut c.tcp_closed_response,
            TcpClose::BadMessage(Refusal::BadQuestion) => &mut c.tcp_closed_malformed,
            TcpClose::Empty => &mut c.tcp_closed_empty,
            TcpClose::Evicted => &mut c.tcp_evicted,
        },
    };
    *counter += 1;
}
