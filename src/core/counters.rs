//! COUNTERS
//!
//! The balancer's own counters, declared once.  Each line of the
//! `declare_counters!` table below names a counter, says what it counts,
//! and says where it appears in the Prometheus metrics (a family, and the
//! `reason` label within it where the family has one).  From that one
//! table come the struct the core increments, its JSON in the stats socket
//! (docs/stats.md), the `counters` log record (SIGUSR1) and the rows of
//! the labelled metric families ([`crate::ops::metrics`], whose tests check
//! every counter appears there exactly once).
//!
//! Every client datagram is counted once by what became of it:
//! `udp_received` = `udp_forwarded` + `cache_hits` +
//! `cache_stale_no_backend` + the `dropped_*` counters
//! ([`Counters::udp_dropped`], [`Counters::udp_from_cache`]).  A query dropped for want of a backend may
//! still be answered by the balancer (`no_backend_answers`, a part of
//! `dropped_no_backend`).  The simulation checks that sum after every step.

use serde::Serialize;

/// Where a counter appears among the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterInfo {
    /// Its name in the stats JSON and the log record.
    pub name: &'static str,
    /// The metric family it is a sample of.
    pub metric: &'static str,
    /// The value of the family's `reason` label, if it has one.
    pub reason: Option<&'static str>,
}

macro_rules! declare_counters {
    ($( $(#[doc = $doc:literal])* $name:ident => $metric:literal $(reason $reason:literal)? ;)*) => {
        /// The balancer's counters: every datagram and connection is
        /// counted once here, by what became of it.
        #[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
        pub struct Counters {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl Counters {
            /// Every counter, in declaration order.
            pub const INFO: &'static [CounterInfo] = &[
                $( CounterInfo {
                    name: stringify!($name),
                    metric: $metric,
                    reason: declare_counters!(@reason $($reason)?),
                }, )*
            ];

            /// The values, in the order of [`Counters::INFO`].
            pub fn values(&self) -> Vec<u64> {
                vec![$( self.$name, )*]
            }
        }
    };
    (@reason) => { None };
    (@reason $r:literal) => { Some($r) };
}

declare_counters! {
    /// Client datagrams received.
    udp_received => "mname_balancer_udp_received";
    /// Client datagrams queued toward a backend.
    udp_forwarded => "mname_balancer_udp_forwarded";
    /// Answers sent to clients, from backends and from the packet cache.
    udp_replies => "mname_balancer_udp_replies";
    /// Answers to clients the socket would not take: from backends and the
    /// cache (not counted in `udp_replies`), the balancer's own and stale
    /// ones (not counted in their own counters).
    udp_replies_failed => "mname_balancer_udp_replies_failed";
    /// Datagrams larger than a frame can carry.
    dropped_oversized => "mname_balancer_udp_dropped" reason "oversized";
    /// Datagrams shorter than a DNS header.
    dropped_short => "mname_balancer_udp_dropped" reason "short";
    /// Datagrams that were responses, not queries.
    dropped_response => "mname_balancer_udp_dropped" reason "response";
    /// Queries whose question does not parse.
    dropped_malformed => "mname_balancer_udp_dropped" reason "malformed";
    /// Queries no backend could take.
    dropped_no_backend => "mname_balancer_udp_dropped" reason "no_backend";
    /// Queries for a backend whose queue was full.
    dropped_stuck => "mname_balancer_udp_dropped" reason "stuck";
    /// Queries refused because the in-flight table was full.
    dropped_inflight_full => "mname_balancer_udp_dropped" reason "inflight_full";
    /// Queries past the client's `--max-qps-per-client`.
    dropped_rate_limited => "mname_balancer_udp_dropped" reason "rate_limit";
    /// Datagrams from clients the access list refuses.
    dropped_acl => "mname_balancer_udp_dropped" reason "acl";
    /// Resends of a query still in flight (same address, port and id):
    /// not sent again, the answer on its way serves them.
    dropped_resend => "mname_balancer_udp_dropped" reason "resend";
    /// Answers synthesized because no backend could take the query.
    no_backend_answers => "mname_balancer_synthesized_answers" reason "no_backend";
    /// No-backend answers withheld by the per-remote rate limit.
    no_backend_rate_limited => "mname_balancer_synthesized_rate_limited";
    /// Queries unanswered by their deadline.
    timeouts => "mname_balancer_udp_timeouts";
    /// SERVFAILs sent for timed-out queries.
    timeout_answers => "mname_balancer_synthesized_answers" reason "timeout";
    /// TC=1 answers sent to rate-limited clients (`--rate-limit-slip`).
    slip_answers => "mname_balancer_synthesized_answers" reason "slip";
    /// REFUSEDs sent to clients the access list refuses.
    acl_answers => "mname_balancer_synthesized_answers" reason "acl";
    /// TC=1 answers to queries too large for a frame (the client retries
    /// over TCP).
    oversized_answers => "mname_balancer_synthesized_answers" reason "oversized";
    /// FORMERRs to queries whose question does not parse.
    formerr_answers => "mname_balancer_synthesized_answers" reason "formerr";
    /// Answers that arrived after their query timed out.
    late_answers => "mname_balancer_answers_dropped" reason "late";
    /// Answers that matched no query in flight (not sent).
    unsolicited_answers => "mname_balancer_answers_dropped" reason "unsolicited";
    /// Queries sent once more after their backend failed.
    replayed => "mname_balancer_replayed";
    /// Queries sent once more, to a second backend, because the first had
    /// not answered within its hedge delay (`--hedge-after`).
    hedged => "mname_balancer_hedged";
    /// Hedged queries the second backend answered first.
    hedge_wins => "mname_balancer_hedge_wins";
    /// Hedges not sent: the budget (`--hedge-budget`) was spent.
    hedge_budget_exhausted => "mname_balancer_hedges_not_sent" reason "budget";
    /// Hedges not sent: no other backend was up, or none had room.
    hedge_no_target => "mname_balancer_hedges_not_sent" reason "no_target";
    /// The slower answer to a hedged query (not sent: the client has one).
    hedge_losers => "mname_balancer_answers_dropped" reason "hedge_loser";
    /// UDP queries answered from the packet cache (`--cache-size`).
    cache_hits => "mname_balancer_cache_answers" reason "hit";
    /// UDP queries no backend could take, answered from an expired cache
    /// entry (`--serve-stale`) instead of SERVFAIL.
    cache_stale_no_backend => "mname_balancer_cache_answers" reason "stale_no_backend";
    /// Timed-out queries answered from an expired (or fresh) cache entry
    /// instead of SERVFAIL.
    cache_stale_timeout => "mname_balancer_cache_answers" reason "stale_timeout";
    /// Cacheable queries the cache had no fresh answer for (sent on to a
    /// backend).
    cache_misses => "mname_balancer_cache_misses";
    /// Queries the cache cannot answer (not a plain one-question QUERY,
    /// signed, or with a Client Subnet option).
    cache_bypassed => "mname_balancer_cache_bypassed";
    /// Backend answers kept in the cache.
    cache_stored => "mname_balancer_cache_stored";
    /// Of those, answers learned from TCP sessions.
    cache_stored_tcp => "mname_balancer_cache_stored_tcp";
    /// Backend answers to cacheable queries not kept (TC, SERVFAIL, no
    /// TTL, ...).
    cache_not_stored => "mname_balancer_cache_not_stored";
    /// Entries evicted to make room (least recently used first).
    cache_evictions => "mname_balancer_cache_evictions";
    /// Entries forgotten by a flush (`cache flush`, SIGUSR2).
    cache_flushed => "mname_balancer_cache_flushed";
    /// Queries from new clients served without a remote: the table was at
    /// `--max-remotes`.
    untracked_queries => "mname_balancer_untracked_queries";
    /// TCP connections from new clients served without a remote.
    untracked_connections => "mname_balancer_untracked_connections";
    /// TCP connections accepted.
    tcp_accepted => "mname_balancer_tcp_accepted";
    /// TCP connections closed at once: no backend.
    tcp_dropped_no_backend => "mname_balancer_tcp_dropped" reason "no_backend";
    /// TCP connections closed at once: too many sessions.
    tcp_dropped_session_limit => "mname_balancer_tcp_dropped" reason "session_limit";
    /// TCP connections closed at once: the access list refuses the client.
    tcp_dropped_acl => "mname_balancer_tcp_dropped" reason "acl";
    /// TCP connections closed at once: the client held
    /// `--max-tcp-per-client` sessions.
    tcp_dropped_per_client => "mname_balancer_tcp_dropped" reason "per_client";
    /// Sessions that ended: the client or the backend closed its stream.
    tcp_closed_finished => "mname_balancer_tcp_closed" reason "finished";
    /// Sessions that ended: a socket failed.
    tcp_closed_error => "mname_balancer_tcp_closed" reason "error";
    /// Sessions that ended: the backend did not connect or confirm
    /// (INBOUND_TCP_OK) in time.
    tcp_closed_backend => "mname_balancer_tcp_closed" reason "backend";
    /// Sessions closed: idle for `--tcp-idle-timeout`.
    tcp_closed_idle => "mname_balancer_tcp_closed" reason "idle";
    /// Sessions closed: a message not whole within `--tcp-read-timeout`.
    tcp_closed_read_timeout => "mname_balancer_tcp_closed" reason "read_timeout";
    /// Sessions closed: queries outstanding and the backend silent for
    /// `--tcp-idle-timeout`.
    tcp_closed_unanswered => "mname_balancer_tcp_closed" reason "unanswered";
    /// Sessions closed: a message shorter than a DNS header.
    tcp_closed_short => "mname_balancer_tcp_closed" reason "short";
    /// Sessions closed: a message that was a response.
    tcp_closed_response => "mname_balancer_tcp_closed" reason "response";
    /// Sessions closed: a message whose question does not parse.
    tcp_closed_malformed => "mname_balancer_tcp_closed" reason "malformed";
    /// Sessions closed: a length prefix of zero.
    tcp_closed_empty => "mname_balancer_tcp_closed" reason "empty";
    /// Idle sessions closed to admit a new connection at
    /// `--max-tcp-sessions`.
    tcp_evicted => "mname_balancer_tcp_closed" reason "evicted";
}

impl Counters {
    /// The (reason, value) rows of one labelled metric family.
    pub fn reasons_of(&self, metric: &str) -> Vec<(&'static str, u64)> {
        Self::INFO
            .iter()
            .zip(self.values())
            .filter(|(info, _)| info.metric == metric)
            .filter_map(|(info, v)| info.reason.map(|r| (r, v)))
            .collect()
    }

    /// Client datagrams dropped for any reason.
    pub fn udp_dropped(&self) -> u64 {
        self.family_sum("mname_balancer_udp_dropped")
    }

    /// Client datagrams answered from the cache instead of a backend.
    pub fn udp_from_cache(&self) -> u64 {
        self.cache_hits + self.cache_stale_no_backend
    }

    /// TCP connections closed at accept, whatever the reason.
    pub fn tcp_dropped(&self) -> u64 {
        self.family_sum("mname_balancer_tcp_dropped")
    }

    /// Admitted TCP sessions that ended, whatever the reason.
    pub fn tcp_closed(&self) -> u64 {
        self.family_sum("mname_balancer_tcp_closed")
    }

    fn family_sum(&self, family: &str) -> u64 {
        self.reasons_of(family).iter().map(|(_, v)| v).sum()
    }
}

/// The `counters` log record carries every counter under its JSON name.
impl slog::KV for Counters {
    fn serialize(&self, _: &slog::Record<'_>, ser: &mut dyn slog::Serializer) -> slog::Result {
        for (info, v) in Self::INFO.iter().zip(self.values()) {
            ser.emit_u64(info.name, v)?;
        }
        Ok(())
    }
}

/// The `backend counters` log record.
impl slog::KV for crate::backends::BackendStats {
    fn serialize(&self, _: &slog::Record<'_>, ser: &mut dyn slog::Serializer) -> slog::Result {
        let l = &self.latency;
        for (key, v) in [
            ("udp", self.udp),
            ("udp_replies", self.udp_replies),
            ("tcp", self.tcp),
            ("stuck", self.stuck),
            ("timeouts", self.timeouts),
            ("conn_start", self.conn_start),
            ("conn_error", self.conn_error),
            ("faults", self.faults),
            ("passive_faults", self.passive_faults),
            ("replayed_away", self.replayed_away),
            ("hedged", self.hedged),
            ("latency_count", l.count),
            ("latency_avg_us", l.sum_us.checked_div(l.count).unwrap_or(0)),
            ("latency_max_us", l.max_us),
        ] {
            ser.emit_u64(key, v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_json_field_names() {
        let json = serde_json::to_value(Counters::default()).unwrap_or_default();
        let obj = json.as_object().cloned().unwrap_or_default();
        assert_eq!(obj.len(), Counters::INFO.len());
        for info in Counters::INFO {
            assert!(obj.contains_key(info.name), "{} in JSON", info.name);
        }
    }

    #[test]
    fn reasons_are_listed_per_family() {
        let c = Counters {
            dropped_short: 3,
            dropped_stuck: 4,
            ..Counters::default()
        };
        let rows = c.reasons_of("mname_balancer_udp_dropped");
        assert_eq!(rows.len(), 10);
        assert!(rows.contains(&("short", 3)));
        assert_eq!(c.udp_dropped(), 7);
    }
}
