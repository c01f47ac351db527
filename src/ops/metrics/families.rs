//! Every metric family the balancer exposes, declared once: name, kind,
//! unit, labels and help text, as the `pub static`s below and [`ALL`].
//! The encoder ([`super::exposition`]) writes families by these
//! declarations, docs/metrics.md is checked against them (the tests
//! below), and no metric name is written anywhere else.

use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// One metric family: everything about it but its values.
#[derive(Debug)]
pub struct Metric {
    /// The family name, without the suffixes the encoder adds: the unit
    /// (`_seconds`, from [`Metric::unit`]), `_total` on counter samples and
    /// `_info` on info samples.
    pub name: &'static str,
    /// Counter, gauge, info or histogram.
    pub kind: MetricType,
    /// The unit its values are in, if any (seconds, for durations).
    pub unit: Option<Unit>,
    /// Label names, in the order written.
    pub labels: &'static [&'static str],
    /// The `# HELP` text: what it measures, in a sentence.
    pub help: &'static str,
}

impl Metric {
    /// The name of the family as exposed (with its unit).
    pub fn family_name(&self) -> String {
        match &self.unit {
            Some(u) => format!("{}_{}", self.name, u.as_str()),
            None => self.name.to_string(),
        }
    }

    /// The name its samples carry (histograms add `_bucket`, `_sum` and
    /// `_count` to it).
    pub fn sample_name(&self) -> String {
        let family = self.family_name();
        match self.kind {
            MetricType::Counter => format!("{family}_total"),
            MetricType::Info => format!("{family}_info"),
            _ => family,
        }
    }
}

pub(super) const COUNTER: MetricType = MetricType::Counter;
pub(super) const GAUGE: MetricType = MetricType::Gauge;
pub(super) const INFO: MetricType = MetricType::Info;
pub(super) const HISTOGRAM: MetricType = MetricType::Histogram;

/// Declares each metric as a `pub static` [`Metric`] (`IDENT: KIND "name"
/// UNIT, [labels] "help";`), documented by its help text, and [`ALL`]
/// listing them.
macro_rules! metrics {
    ($($id:ident: $kind:ident $name:literal $unit:expr, [$($label:literal),*] $help:literal;)*) => {
        $(
            #[doc = $help]
            pub static $id: Metric = Metric {
                name: $name,
                kind: $kind,
                unit: $unit,
                labels: &[$($label),*],
                help: $help,
            };
        )*

        /// Every metric, in the order written.
        pub static ALL: &[&Metric] = &[$(&$id),*];
    };
}

metrics! {
    BUILD: INFO "mname_balancer_build" None, ["version"]
        "The balancer's version.";
    START_TIME: GAUGE "mname_balancer_start_time" Some(Unit::Seconds), []
        "When the balancer started, in seconds since the Unix epoch.";
    DRAINING: GAUGE "mname_balancer_draining" None, []
        "1 once a SIGTERM or SIGINT came and the balancer is finishing its work, else 0.";
    REMOTES_TRACKED: GAUGE "mname_balancer_remotes_tracked" None, []
        "Client hosts (remotes) known now.";
    INFLIGHT: GAUGE "mname_balancer_inflight_queries" None, []
        "UDP queries forwarded and not yet answered or timed out.";
    TCP_SESSIONS_OPEN: GAUGE "mname_balancer_tcp_sessions_open" None, []
        "Client TCP connections being relayed now.";
    UNTRACKED_QUERIES: COUNTER "mname_balancer_untracked_queries" None, []
        "Queries from new clients served without a remote entry (the table at --max-remotes).";
    UNTRACKED_CONNECTIONS: COUNTER "mname_balancer_untracked_connections" None, []
        "TCP connections from new clients served without a remote entry.";
    LOG_RECORDS_DROPPED: COUNTER "mname_balancer_log_records_dropped" None, []
        "Log records dropped because the log's reader fell behind.";
    UDP_RECEIVED: COUNTER "mname_balancer_udp_received" None, []
        "Client datagrams read.";
    UDP_FORWARDED: COUNTER "mname_balancer_udp_forwarded" None, []
        "Client queries sent to a backend (a replay is not counted again).";
    UDP_DROPPED: COUNTER "mname_balancer_udp_dropped" None, ["reason"]
        "Client datagrams not forwarded, by reason.";
    UDP_TIMEOUTS: COUNTER "mname_balancer_udp_timeouts" None, []
        "Queries left unanswered by --query-timeout.";
    UDP_REPLIES: COUNTER "mname_balancer_udp_replies" None, []
        "Answers sent to clients from backends and from the packet cache (synthesized ones are counted apart).";
    UDP_REPLIES_FAILED: COUNTER "mname_balancer_udp_replies_failed" None, []
        "Datagrams to clients that the kernel would not send.";
    ANSWERS_DROPPED: COUNTER "mname_balancer_answers_dropped" None, ["reason"]
        "Backend answers not sent to any client, by reason.";
    SYNTHESIZED: COUNTER "mname_balancer_synthesized_answers" None, ["reason"]
        "Error answers the balancer made itself and sent, by reason.";
    SYNTHESIZED_RATE_LIMITED: COUNTER "mname_balancer_synthesized_rate_limited" None, []
        "No-backend answers withheld by --synth-rate.";
    REPLAYED: COUNTER "mname_balancer_replayed" None, []
        "Queries sent once more, to another backend, after theirs failed.";
    HEDGED: COUNTER "mname_balancer_hedged" None, []
        "Queries sent once more, to a second backend, because the first had not answered within its hedge delay.";
    HEDGE_WINS: COUNTER "mname_balancer_hedge_wins" None, []
        "Hedged queries the second backend answered first.";
    HEDGES_NOT_SENT: COUNTER "mname_balancer_hedges_not_sent" None, ["reason"]
        "Hedges due but not sent, by reason (budget: --hedge-budget spent; no_target: no other backend up or with room).";
    TCP_ACCEPTED: COUNTER "mname_balancer_tcp_accepted" None, []
        "Client TCP connections accepted.";
    TCP_DROPPED: COUNTER "mname_balancer_tcp_dropped" None, ["reason"]
        "Client TCP connections closed at once, by reason.";
    TCP_CLOSED: COUNTER "mname_balancer_tcp_closed" None, ["reason"]
        "Client TCP sessions that ended, by reason (idle, read_timeout, evicted, a bad message ...).";
    CACHE_ENTRIES: GAUGE "mname_balancer_cache_entries" None, []
        "Answers in the packet cache now (0 when --cache-size is 0).";
    CACHE_BYTES: GAUGE "mname_balancer_cache_bytes" None, []
        "Bytes the packet cache holds now, as counted against --cache-max-bytes.";
    CACHE_ANSWERS: COUNTER "mname_balancer_cache_answers" None, ["reason"]
        "UDP queries answered from the packet cache, by reason (hit: fresh; stale_no_backend, stale_timeout: --serve-stale).";
    CACHE_MISSES: COUNTER "mname_balancer_cache_misses" None, []
        "Cacheable UDP queries the cache had no fresh answer for.";
    CACHE_BYPASSED: COUNTER "mname_balancer_cache_bypassed" None, []
        "UDP queries the cache cannot answer (not a plain one-question QUERY, signed, or with Client Subnet).";
    CACHE_STORED: COUNTER "mname_balancer_cache_stored" None, []
        "Backend answers kept in the packet cache.";
    CACHE_STORED_TCP: COUNTER "mname_balancer_cache_stored_tcp" None, []
        "Of the answers kept in the packet cache, those learned from TCP sessions.";
    CACHE_NOT_STORED: COUNTER "mname_balancer_cache_not_stored" None, []
        "Backend answers to cacheable queries not kept (truncated, an error RCODE, TTL 0, no SOA ...).";
    CACHE_EVICTIONS: COUNTER "mname_balancer_cache_evictions" None, []
        "Cache entries evicted to make room, least recently used first.";
    CACHE_FLUSHED: COUNTER "mname_balancer_cache_flushed" None, []
        "Cache entries forgotten by a flush (stats request cache flush, or SIGUSR2).";
    BACKEND_STATE: INFO "mname_balancer_backend_state" None, ["backend", "state", "path", "ipv6"]
        "Each backend's connection state, socket and whether it speaks the IPv6 extension.";
    BACKEND_UP: GAUGE "mname_balancer_backend_up" None, ["backend"]
        "1 while the backend is given traffic (hello done, heartbeats answered), else 0.";
    BACKEND_REMOTES: GAUGE "mname_balancer_backend_remotes" None, ["backend"]
        "Remotes whose primary backend it is.";
    BACKEND_INFLIGHT: GAUGE "mname_balancer_backend_inflight_queries" None, ["backend"]
        "UDP queries in flight to the backend now.";
    BACKEND_REQUESTS: COUNTER "mname_balancer_backend_requests" None, ["backend", "proto"]
        "Work given to the backend: UDP queries forwarded (replays included), TCP sessions relayed.";
    BACKEND_ANSWERS: COUNTER "mname_balancer_backend_answers" None, ["backend", "proto"]
        "The backend's UDP answers sent to clients.";
    BACKEND_STUCK: COUNTER "mname_balancer_backend_stuck" None, ["backend"]
        "UDP queries dropped because the backend was not reading.";
    BACKEND_TIMEOUTS: COUNTER "mname_balancer_backend_timeouts" None, ["backend"]
        "The backend's queries that met --query-timeout.";
    BACKEND_CONNECTS: COUNTER "mname_balancer_backend_connects" None, ["backend"]
        "Control connections to the backend attempted, and TCP sessions given to it.";
    BACKEND_CONNECT_ERRORS: COUNTER "mname_balancer_backend_connect_errors" None, ["backend"]
        "Connections to the backend that failed or ended in error.";
    BACKEND_FAULTS: COUNTER "mname_balancer_backend_faults" None, ["backend"]
        "Times the backend was faulted (reset and reconnected).";
    BACKEND_PASSIVE_FAULTS: COUNTER "mname_balancer_backend_passive_faults" None, ["backend"]
        "Faults found by the passive check (queries owed, none answered).";
    BACKEND_REPLAYED_AWAY: COUNTER "mname_balancer_backend_replayed_away" None, ["backend"]
        "Queries in flight to the backend replayed elsewhere when it failed.";
    BACKEND_HEDGED: COUNTER "mname_balancer_backend_hedged" None, ["backend"]
        "The backend's queries hedged to another backend (unanswered after its hedge delay).";
    BACKEND_HEDGE_DELAY: GAUGE "mname_balancer_backend_hedge_delay" Some(Unit::Seconds), ["backend"]
        "How long a query to the backend may go unanswered before it is hedged (absent when hedging is off).";
    BACKEND_LAST_HEARTBEAT_RTT: GAUGE "mname_balancer_backend_last_heartbeat_rtt" Some(Unit::Seconds), ["backend"]
        "Round trip of the backend's last heartbeat answered (absent until one is).";
    BACKEND_HEARTBEAT_RTT: HISTOGRAM "mname_balancer_backend_heartbeat_rtt" Some(Unit::Seconds), ["backend"]
        "Round trips of the backend's heartbeats.";
    BACKEND_FORWARD_LATENCY: HISTOGRAM "mname_balancer_backend_forward_latency" Some(Unit::Seconds), ["backend"]
        "Time from a client's query read to the backend's answer sent, through the backend.";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Latency;
    use crate::ops::metrics::exposition::seconds;

    #[test]
    fn names_are_unique_prefixed_and_conventional() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(m.name.starts_with("mname_balancer_"), "{}", m.name);
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(
                !m.name.ends_with("_total"),
                "{}: the encoder adds _total",
                m.name
            );
            if m.kind == HISTOGRAM {
                assert!(m.family_name().ends_with("_seconds"), "{}", m.name);
            }
            assert!(m.help.ends_with('.'), "{}", m.name);
        }
    }

    /// Every counter of the core is a sample of a declared family: a
    /// family with a `reason` label when the counter names a reason, one
    /// without otherwise; and a scrape shows each reason row.
    #[test]
    fn every_counter_is_exposed_once() {
        use crate::core::Counters;
        for info in Counters::INFO {
            let family = ALL.iter().find(|m| m.name == info.metric);
            let family =
                family.unwrap_or_else(|| panic!("{}: no family {}", info.name, info.metric));
            assert_eq!(
                family.labels.contains(&"reason"),
                info.reason.is_some(),
                "{}",
                info.name
            );
        }
        let mut pairs = std::collections::HashSet::new();
        for info in Counters::INFO {
            assert!(
                pairs.insert((info.metric, info.reason)),
                "{} twice",
                info.name
            );
        }
    }

    /// docs/metrics.md names every metric, and nothing else.
    #[test]
    fn docs_list_every_metric() {
        let doc = include_str!("../../../docs/metrics.md");
        for m in ALL {
            let start = format!("| `{}` |", m.sample_name());
            let row = doc.lines().find(|l| l.starts_with(&start));
            let row = row.unwrap_or_else(|| panic!("docs/metrics.md has no row {start}"));
            let labels: Vec<String> = m.labels.iter().map(|l| format!("`{l}`")).collect();
            let labels = match labels.join(", ") {
                l if l.is_empty() => " ".to_string(),
                l => format!(" {l} "),
            };
            let cells = format!("{start} {} |{labels}|", m.kind.as_str());
            assert!(
                row.starts_with(&cells),
                "docs/metrics.md: {row:?} is not {cells:?}"
            );
        }
        for bound in (0..crate::backends::LATENCY_BUCKETS).filter_map(Latency::bucket_bound_us) {
            let le = format!("`{}`", seconds(bound));
            assert!(
                doc.contains(&le),
                "docs/metrics.md lacks the bucket bound {le}"
            );
        }
        let exposed: std::collections::HashSet<String> =
            ALL.iter().map(|m| m.sample_name()).collect();
        for line in doc.lines().filter(|l| l.starts_with("| `mname_balancer_")) {
            let name = line
                .trim_start_matches("| `")
                .split('`')
                .next()
                .unwrap_or_default();
            assert!(
                exposed.contains(name),
                "docs/metrics.md lists {name}, not exposed"
            );
        }
    }
}
