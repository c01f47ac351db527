//! TCP sessions in the simulated world: clients connect (one host in five
//! opening many, against the per-client cap), sessions fall idle or get
//! busy, and end by every reason.  Each eviction the core decides is
//! checked to take the session idle the longest, never a busy one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mname_balancer::core::intake::Refusal;
use mname_balancer::core::{SessionActivity, SessionEnd, SessionId, TcpClose, TcpVerdict};
use tokio::time::Instant;

use super::dns;
use super::world::World;

/// A TCP session the core admitted.
pub(super) struct SimSession {
    pub(super) id: SessionId,
    pub(super) ip: IpAddr,
    pub(super) ends_at: Instant,
    pub(super) backend: u32,
    pub(super) end: SessionEnd,
    /// Since when it is idle (evictable); `None` while being answered.
    pub(super) idle_since: Option<Instant>,
}

/// The sessions' activity, as the shell would report it.
pub(super) struct SimActivity<'a>(&'a [SimSession]);

impl SessionActivity for SimActivity<'_> {
    fn evictable_since(&self, id: SessionId) -> Option<Instant> {
        self.0.iter().find(|s| s.id == id)?.idle_since
    }
}

impl World {
    pub(super) fn tcp_offer(&mut self) {
        let rng = &mut self.env.rng;
        // One host in five opens many connections (the per-client cap).
        let peer = if rng.chance(20) {
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 0, 9, 1)),
                2000 + rng.below(100) as u16,
            )
        } else {
            dns::random_client(rng)
        };
        let refused_full = self.core.counters().tcp_dropped_session_limit;
        let verdict = self
            .core
            .on_tcp_offered(self.now, peer, &SimActivity(&self.sessions));
        let (plan, evict) = match verdict {
            TcpVerdict::Admit { plan, evict } => (plan, evict),
            TcpVerdict::Refuse => {
                if self.core.counters().tcp_dropped_session_limit > refused_full
                    && let Some(idle) = self.sessions.iter().find(|s| s.idle_since.is_some())
                {
                    self.env.violations.push(format!(
                        "refused at the session limit while {:?} was idle",
                        idle.id
                    ));
                }
                return;
            }
        };
        if let Some(victim) = evict {
            let longest = self
                .sessions
                .iter()
                .filter_map(|s| Some((s.idle_since?, s.id.conn_id)))
                .min();
            match self.sessions.iter().position(|s| s.id == victim) {
                Some(i) if self.sessions[i].idle_since.map(|t| (t, victim.conn_id)) == longest => {
                    self.sessions.remove(i);
                }
                Some(i) => self.env.violations.push(format!(
                    "evicted {victim:?} idle since {:?}, not the longest idle {longest:?}",
                    self.sessions[i].idle_since
                )),
                None => self
                    .env
                    .violations
                    .push(format!("evicted {victim:?}, which is not open")),
            }
        }
        let rng = &mut self.env.rng;
        let end = match rng.below(20) {
            0 => SessionEnd::OkTimeout,
            1 => SessionEnd::ConnectFailed,
            2 => SessionEnd::Closed(TcpClose::Idle),
            3 => SessionEnd::Closed(TcpClose::ReadTimeout),
            4 => SessionEnd::Closed(TcpClose::BadMessage(Refusal::Response)),
            5 => SessionEnd::Closed(TcpClose::Unanswered),
            6 => SessionEnd::Closed(TcpClose::Error),
            _ => SessionEnd::Closed(TcpClose::Finished),
        };
        if plan.client.ip() != peer.ip().to_canonical() {
            self.env
                .violations
                .push(format!("session for {peer} planned as {}", plan.client));
        }
        let idle_since = rng.chance(60).then_some(self.now);
        self.sessions.push(SimSession {
            id: plan.session,
            ip: plan.client.ip(),
            ends_at: self.now + Duration::from_millis(rng.below(3000)),
            backend: plan.backend,
            end,
            idle_since,
        });
    }

    pub(super) fn end_sessions(&mut self) {
        let now = self.now;
        let (done, open): (Vec<_>, Vec<_>) =
            self.sessions.drain(..).partition(|s| s.ends_at <= now);
        self.sessions = open;
        // The others go on: some are asked something, some fall idle.
        for s in &mut self.sessions {
            match self.env.rng.below(4) {
                0 => s.idle_since = None,
                1 if s.idle_since.is_none() => s.idle_since = Some(now),
                _ => {}
            }
        }
        for s in done {
            self.core
                .on_session_ended(now, s.id, s.backend, s.end, &mut self.env);
        }
    }
}
