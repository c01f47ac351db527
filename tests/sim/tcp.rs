//! TCP sessions in the simulated world: clients connect (one host in five
//! opening many, against the per-client cap), sessions fall idle, get busy,
//! start a message and stall, and end by every reason.  Each eviction the
//! core decides is checked to take the session idle the longest, never a
//! busy one; each session the sweep closes must have expired by its
//! activity, and none may outlive its expiry by more than a sweep.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use mname_balancer::core::intake::Refusal;
use mname_balancer::core::{
    ConnActivity, SessionActivity, SessionEnd, SessionId, TcpClose, TcpConnLimits, TcpVerdict,
};
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
    /// What its relay would publish.
    pub(super) activity: ConnActivity,
}

impl SimSession {
    fn idle_since(&self) -> Option<Instant> {
        self.activity.evictable_since()
    }
}

/// The sessions' activity, as the shell would report it.
pub(super) struct SimActivity<'a>(&'a [SimSession]);

impl SessionActivity for SimActivity<'_> {
    fn activity(&self, id: SessionId) -> Option<ConnActivity> {
        Some(self.0.iter().find(|s| s.id == id)?.activity)
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
                    && let Some(idle) = self.sessions.iter().find(|s| s.idle_since().is_some())
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
                .filter_map(|s| Some((s.idle_since()?, s.id.conn_id)))
                .min();
            match self.sessions.iter().position(|s| s.id == victim) {
                Some(i)
                    if self.sessions[i].idle_since().map(|t| (t, victim.conn_id)) == longest =>
                {
                    self.sessions.remove(i);
                }
                Some(i) => self.env.violations.push(format!(
                    "evicted {victim:?} idle since {:?}, not the longest idle {longest:?}",
                    self.sessions[i].idle_since()
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
            1 => SessionEnd::ConnectFailed {
                gone: rng.chance(30),
            },
            // What a relay reports; timeouts are the sweep's to decide.
            2 => SessionEnd::Closed(TcpClose::Empty),
            3 => SessionEnd::Closed(TcpClose::BadMessage(Refusal::Short)),
            4 => SessionEnd::Closed(TcpClose::BadMessage(Refusal::Response)),
            5 => SessionEnd::Closed(TcpClose::Refused),
            6 => SessionEnd::Closed(TcpClose::Error),
            _ => SessionEnd::Closed(TcpClose::Finished),
        };
        if plan.learn_answers != (self.cfg.cache.entries > 0) {
            self.env.violations.push(format!(
                "session learns answers: {}, cache size {}",
                plan.learn_answers, self.cfg.cache.entries
            ));
        }
        // Half the sessions are answered something the cache may learn.
        if self.env.rng.chance(50) {
            self.tcp_answer_learned(plan.backend);
        }
        let rng = &mut self.env.rng;
        if plan.client.ip() != peer.ip().to_canonical() {
            self.env
                .violations
                .push(format!("session for {peer} planned as {}", plan.client));
        }
        let activity = ConnActivity::idle_from(self.now);
        self.sessions.push(SimSession {
            id: plan.session,
            ip: plan.client.ip(),
            ends_at: self.now + Duration::from_millis(rng.below(3000)),
            backend: plan.backend,
            end,
            activity,
        });
    }

    pub(super) fn end_sessions(&mut self) {
        let now = self.now;
        let (done, open): (Vec<_>, Vec<_>) =
            self.sessions.drain(..).partition(|s| s.ends_at <= now);
        self.sessions = open;
        // The others go on: some are asked something, some fall idle.
        for s in &mut self.sessions {
            let a = &mut s.activity;
            match self.env.rng.below(6) {
                // A query: awaited from now.
                0 => {
                    a.last_activity = now;
                    a.answering_since.get_or_insert(now);
                }
                // The answer.
                1 => {
                    a.last_activity = now;
                    a.answering_since = None;
                }
                // A message starts and stalls.
                2 => {
                    a.last_activity = now;
                    a.partial_since.get_or_insert(now);
                }
                // It completes.
                3 if a.partial_since.is_some() => {
                    a.last_activity = now;
                    a.partial_since = None;
                }
                _ => {}
            }
        }
        for s in done {
            self.core
                .on_session_ended(now, s.id, s.backend, s.end, &mut self.env);
        }
    }

    /// Sweep the sessions when the core says it is time; check what it
    /// closed had expired, and that nothing expired stays open long.
    pub(super) fn sweep_sessions(&mut self) {
        let now = self.now;
        let limits = TcpConnLimits {
            idle: self.cfg.timers.tcp_idle_timeout,
            read: self.cfg.timers.tcp_read_timeout,
        };
        if self.core.tcp_sweep_at().is_some_and(|at| at <= now) {
            let mut closed = Vec::new();
            self.core.sweep_tcp_sessions(
                now,
                &SimActivity(&self.sessions),
                &mut closed,
                &mut self.env,
            );
            for id in closed {
                match self.sessions.iter().position(|s| s.id == id) {
                    Some(i) if self.sessions[i].activity.expired(limits, now).is_some() => {
                        self.sessions.remove(i);
                    }
                    Some(i) => self.env.violations.push(format!(
                        "swept {id:?}, not expired: {:?}",
                        self.sessions[i].activity
                    )),
                    None => self
                        .env
                        .violations
                        .push(format!("swept {id:?}, which is not open")),
                }
            }
        }
        // An expired session is closed within a sweep (at most 1 s).
        let late = Duration::from_secs(1) + Duration::from_millis(1);
        for s in &self.sessions {
            if let Some(past) = now.checked_sub(late)
                && s.activity.expired(limits, past).is_some()
            {
                self.env.violations.push(format!(
                    "{:?} expired over a sweep ago and is open: {:?}",
                    s.id, s.activity
                ));
            }
        }
    }
}
