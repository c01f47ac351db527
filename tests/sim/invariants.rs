//! The invariants the simulation holds the core to after every step.  Each
//! failure is a sentence naming what was wrong; the driver prints the
//! seed beside it so that the run replays exactly.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use mname_balancer::backends::{BackendId, LinkState};
use mname_balancer::core::Phase;

use super::world::World;

/// Slack for deadlines checked after the fact: the clock moves in steps.
const SLACK: Duration = Duration::from_millis(1);

impl World {
    /// How often each path of interest was taken in this run.
    pub(crate) fn exercised(&self) -> Vec<(&'static str, u64)> {
        let c = self.core.counters();
        let be = |f: fn(&mname_balancer::backends::BackendStats) -> u64| -> u64 {
            self.core.backends().iter().map(|b| f(&b.stats)).sum()
        };
        vec![
            ("forwarded", c.udp_forwarded),
            ("dropped_oversized", c.dropped_oversized),
            ("dropped_short", c.dropped_short),
            ("dropped_response", c.dropped_response),
            ("dropped_malformed", c.dropped_malformed),
            ("dropped_no_backend", c.dropped_no_backend),
            ("dropped_stuck", c.dropped_stuck),
            ("dropped_inflight_full", c.dropped_inflight_full),
            ("dropped_acl", c.dropped_acl),
            ("acl_answers", c.acl_answers),
            ("oversized_answers", c.oversized_answers),
            ("formerr_answers", c.formerr_answers),
            ("tcp_dropped_acl", c.tcp_dropped_acl),
            ("untracked_queries", c.untracked_queries),
            ("dropped_rate_limited", c.dropped_rate_limited),
            ("slip_answers", c.slip_answers),
            ("untracked_connections", c.untracked_connections),
            ("no_backend_answers", c.no_backend_answers),
            ("no_backend_rate_limited", c.no_backend_rate_limited),
            ("timeouts", c.timeouts),
            ("late_answers", c.late_answers),
            ("unsolicited_answers", c.unsolicited_answers),
            ("replayed", c.replayed),
            ("hedged", c.hedged),
            ("hedge_wins", c.hedge_wins),
            ("hedge_losers", c.hedge_losers),
            ("hedge_budget_exhausted", c.hedge_budget_exhausted),
            ("cache_hits", c.cache_hits),
            ("cache_stale_no_backend", c.cache_stale_no_backend),
            ("cache_stale_timeout", c.cache_stale_timeout),
            ("cache_evictions", c.cache_evictions),
            ("tcp_dropped_no_backend", c.tcp_dropped_no_backend),
            ("tcp_dropped_session_limit", c.tcp_dropped_session_limit),
            ("tcp_dropped_per_client", c.tcp_dropped_per_client),
            ("tcp_evicted", c.tcp_evicted),
            ("tcp_closed_backend", c.tcp_closed_backend),
            ("tcp_closed_idle", c.tcp_closed_idle),
            ("tcp_closed_read_timeout", c.tcp_closed_read_timeout),
            ("tcp_closed_unanswered", c.tcp_closed_unanswered),
            ("faults", be(|s| s.faults)),
            ("passive_faults", be(|s| s.passive_faults)),
            ("conn_error", be(|s| s.conn_error)),
            (
                "answers_delivered",
                self.answers.values().map(|&n| u64::from(n)).sum(),
            ),
        ]
    }

    /// Every invariant, at this instant; the violations found so far.
    pub(crate) fn check(&mut self) -> Vec<String> {
        let mut v = std::mem::take(&mut self.env.violations);
        let c = self.core.counters();

        // Every datagram is forwarded or counted in exactly one drop.
        if c.udp_received != self.datagrams {
            v.push(format!(
                "udp_received {} != {} sent",
                c.udp_received, self.datagrams
            ));
        }
        let dropped = c.udp_dropped();
        let cached = c.udp_from_cache();
        if c.udp_received != c.udp_forwarded + cached + dropped {
            v.push(format!(
                "received {} != forwarded {} + from cache {cached} + dropped {dropped} ({c:?})",
                c.udp_received, c.udp_forwarded
            ));
        }
        // Batched answers never fail here; every answer sent now that the
        // socket refused is counted.
        if c.udp_replies_failed != self.env.refused_sends {
            v.push(format!(
                "udp_replies_failed {} != {} answers the socket refused",
                c.udp_replies_failed, self.env.refused_sends
            ));
        }
        if c.no_backend_answers + c.no_backend_rate_limited > c.dropped_no_backend {
            v.push(format!(
                "more no-backend answers than no-backend drops ({c:?})"
            ));
        }
        let replayed_away: u64 = self
            .core
            .backends()
            .iter()
            .map(|b| b.stats.replayed_away)
            .sum();
        if c.replayed != replayed_away {
            v.push(format!(
                "replayed {} != sum of replayed_away {replayed_away}",
                c.replayed
            ));
        }

        // Every hedge is counted on the backend it left; at most one
        // answer wins or loses per hedge.
        let hedged_away: u64 = self.core.backends().iter().map(|b| b.stats.hedged).sum();
        if c.hedged != hedged_away {
            v.push(format!(
                "hedged {} != sum of backends' hedged {hedged_away}",
                c.hedged
            ));
        }
        if c.hedge_wins > c.hedged || c.hedge_losers > c.hedged {
            v.push(format!(
                "more hedge wins ({}) or losers ({}) than hedges ({})",
                c.hedge_wins, c.hedge_losers, c.hedged
            ));
        }

        // A query reaches backends at most twice per time it was asked:
        // once, and once more if its backend failed or was slow (a hedge).
        for key in std::mem::take(&mut self.forwarded_now) {
            if !self.cfg.acl.permits(key.0.ip()) {
                v.push(format!("refused client {} reached a backend", key.0));
            }
            let n = self.forwarded.get(&key).copied().unwrap_or(0);
            let asked = self.asks.get(&key).copied().unwrap_or(0);
            if n > 2 * asked {
                v.push(format!("{key:?} reached backends {n} times, asked {asked}"));
            }
        }

        // The remote table stays within its bound.
        if self.core.remotes().len() > self.cfg.max_remotes {
            v.push(format!(
                "{} remotes > {}",
                self.core.remotes().len(),
                self.cfg.max_remotes
            ));
        }

        // A client the access list refuses has no remote.
        for (ip, _) in self.core.remotes().iter() {
            if !self.cfg.acl.permits(ip) {
                v.push(format!("refused client {ip} has a remote"));
            }
        }

        // Each backend's remote count is the number of remotes it is
        // primary of.
        for be in self.core.backends().iter() {
            let primaries = self
                .core
                .remotes()
                .iter()
                .filter(|(_, r)| r.primary == be.id)
                .count();
            if be.remotes as usize != primaries {
                v.push(format!(
                    "backend {} counts {} remotes, is primary of {primaries}",
                    be.id, be.remotes
                ));
            }
        }

        // No bound is exceeded.
        let cfg = &self.cfg;
        let inflight = self.core.inflight();
        if inflight.len() > cfg.max_inflight {
            v.push(format!(
                "{} in flight > {}",
                inflight.len(),
                cfg.max_inflight
            ));
        }
        for be in self.core.backends().iter() {
            let n = inflight.count_for(be.id);
            if n > cfg.max_inflight_per_backend {
                v.push(format!(
                    "{n} in flight to {} > {}",
                    be.id, cfg.max_inflight_per_backend
                ));
            }
        }
        for b in &self.env.backends {
            if let Some(link) = &b.link
                && link.queued_data() > cfg.backend_queue_bytes
            {
                v.push(format!("{} bytes queued to {}", link.queued_data(), b.id));
            }
        }
        let open = self.core.tcp_sessions_open();
        if open > cfg.max_tcp_sessions || open != self.sessions.len() {
            v.push(format!(
                "{open} TCP sessions open, {} in the world",
                self.sessions.len()
            ));
        }
        let mut per_client: HashMap<IpAddr, usize> = HashMap::new();
        for s in &self.sessions {
            *per_client.entry(s.ip).or_default() += 1;
        }
        for (ip, n) in per_client {
            if n > cfg.max_tcp_per_client as usize {
                v.push(format!("{ip} holds {n} TCP sessions"));
            }
        }
        let c = self.core.counters();
        if c.tcp_accepted != c.tcp_dropped() + c.tcp_closed() + open as u64 {
            v.push(format!(
                "tcp_accepted {} != dropped {} + closed {} + open {open}",
                c.tcp_accepted,
                c.tcp_dropped(),
                c.tcp_closed()
            ));
        }

        // A backend that is neither connected nor removed is reconnected
        // on the back-off schedule, whose longest delay is reconnect-max.
        let linked: Vec<BackendId> = self
            .env
            .backends
            .iter()
            .filter(|b| b.link.is_some())
            .map(|b| b.id)
            .collect();
        for be in self.core.backends().iter() {
            // A removed backend waits for its socket to return; the
            // schedule starts again when it does.
            let down = matches!(be.state, LinkState::Down | LinkState::ReconnectPending);
            if !down || be.removed || linked.contains(&be.id) {
                self.down_since.remove(&be.id);
                continue;
            }
            let since = *self.down_since.entry(be.id).or_insert(self.now);
            if self.now > since + cfg.timers.reconnect_max + SLACK {
                v.push(format!(
                    "backend {} down since {:?} ago and not reconnected ({:?})",
                    be.id,
                    self.now - since,
                    be.state
                ));
            }
        }

        // Draining ends by the grace period.
        if let Some(t) = self.terminated_at
            && self.now > t + cfg.timers.drain_timeout + SLACK
            && self.core.phase() != Phase::Exit
        {
            v.push("still running past the drain grace period".into());
        }
        v
    }
}
