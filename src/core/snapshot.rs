//! SNAPSHOTS
//!
//! What the balancer can say about itself while it runs: its counters, each
//! backend's state and counters, and each remote's assignment and counters,
//! as plain data that serializes to the JSON documented in docs/stats.md.
//! The core copies them out on request ([`Core::summary`],
//! [`Core::remotes_page`], [`Core::remote`]); the stats socket and the
//! metrics endpoint ([`crate::ops`]) turn the copies into text on another
//! thread.  Times are wall-clock milliseconds since the Unix epoch, through
//! a [`WallClock`] the shell reads: the core reads no clock.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::{Core, Counters, Phase};
use crate::backends::{Backend, BackendId, LATENCY_BUCKETS, Latency, NO_BACKEND};
use crate::remotes::Remote;

/// The version of the documents in docs/stats.md.  Bumped when a field
/// changes meaning or goes away; new fields may appear without a bump.
pub const STATS_VERSION: u32 = 1;

/// Turns the loop's monotonic instants into wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    at: Instant,
    unix_ms: u64,
}

impl WallClock {
    /// `at` (monotonic) was `unix_ms` milliseconds after the Unix epoch.
    pub fn new(at: Instant, unix_ms: u64) -> Self {
        WallClock { at, unix_ms }
    }

    /// Unix milliseconds of `t` (an instant in the past or the future).
    pub fn unix_ms(&self, t: Instant) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        if t <= self.at {
            self.unix_ms.saturating_sub(ms(self.at - t))
        } else {
            self.unix_ms.saturating_add(ms(t - self.at))
        }
    }
}

/// A duration histogram: `buckets[i]` counts observations shorter than
/// `le_us[i]` microseconds and not shorter than the previous bound (not
/// cumulative); the last bucket has no bound.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HistogramView {
    /// Observations counted.
    pub count: u64,
    /// Their sum, in microseconds.
    pub sum_us: u64,
    /// The longest, in microseconds.
    pub max_us: u64,
    /// The buckets' upper bounds, in microseconds: one fewer than buckets.
    pub le_us: Vec<u64>,
    /// Observations per bucket.
    pub buckets: Vec<u64>,
}

impl From<&Latency> for HistogramView {
    fn from(l: &Latency) -> Self {
        HistogramView {
            count: l.count,
            sum_us: l.sum_us,
            max_us: l.max_us,
            le_us: (0..LATENCY_BUCKETS)
                .filter_map(Latency::bucket_bound_us)
                .collect(),
            buckets: l.buckets.to_vec(),
        }
    }
}

/// One backend, as the stats socket shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackendView {
    /// Its id: 5300..5399 from the socket's name, else the next free one.
    pub id: BackendId,
    /// Its socket.
    pub path: PathBuf,
    /// ok, ok-heartbeat-outstanding, connecting, awaiting-hello,
    /// reconnect-wait, down, removed.
    pub state: &'static str,
    /// Given traffic: hello done, heartbeats answered.
    pub ok: bool,
    /// Protocol extensions announced (bit 0: IPv6 frames).
    pub caps: u32,
    /// Remotes whose primary this backend is.
    pub remotes: u32,
    /// UDP queries in flight to it now.
    pub inflight: usize,
    /// UDP queries forwarded to it (replays included).
    pub udp: u64,
    /// Its answers sent to clients.
    pub udp_replies: u64,
    /// TCP sessions given to it.
    pub tcp: u64,
    /// UDP queries dropped because it was not reading.
    pub stuck: u64,
    /// Queries it left unanswered past --query-timeout.
    pub timeouts: u64,
    /// Control connections and TCP sessions to it attempted.
    pub conn_start: u64,
    /// Of those, the ones that failed.
    pub conn_error: u64,
    /// Times it was faulted.
    pub faults: u64,
    /// Of those, found by the passive check (answering nothing).
    pub passive_faults: u64,
    /// Queries in flight to it replayed elsewhere when it failed.
    pub replayed_away: u64,
    /// Its queries hedged to another backend (unanswered after its hedge
    /// delay).
    pub hedged: u64,
    /// Its hedge delay now, in microseconds (`null`: hedging is off).
    pub hedge_delay_us: Option<u64>,
    /// The round trip of the last heartbeat answered, in microseconds.
    pub last_heartbeat_rtt_us: Option<u64>,
    /// Its heartbeat round trips.
    pub heartbeat_rtt: HistogramView,
    /// Query in to answer out, through this backend.
    pub forward_latency: HistogramView,
}

impl BackendView {
    /// The view of `be`, with `inflight` queries to it and its hedge delay
    /// now (`None`: hedging is off).
    pub fn of(be: &Backend, inflight: usize, hedge_delay: Option<std::time::Duration>) -> Self {
        let s = &be.stats;
        BackendView {
            id: be.id,
            path: be.path.clone(),
            state: be.state_name(),
            ok: be.is_ok(),
            caps: be.caps(),
            remotes: be.remotes,
            inflight,
            udp: s.udp,
            udp_replies: s.udp_replies,
            tcp: s.tcp,
            stuck: s.stuck,
            timeouts: s.timeouts,
            conn_start: s.conn_start,
            conn_error: s.conn_error,
            faults: s.faults,
            passive_faults: s.passive_faults,
            replayed_away: s.replayed_away,
            hedged: s.hedged,
            hedge_delay_us: hedge_delay.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            last_heartbeat_rtt_us: s.last_heartbeat_rtt_us,
            heartbeat_rtt: HistogramView::from(&s.heartbeat_rtt),
            forward_latency: HistogramView::from(&s.latency),
        }
    }
}

/// One remote (client host), as the stats socket shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemoteView {
    /// The client host's address.
    pub ip: IpAddr,
    /// Its primary backend's id (`null`: none yet).
    pub backend: Option<BackendId>,
    /// The backend serving it while the primary is not ok.
    pub backup: Option<BackendId>,
    /// UDP queries forwarded for it (a replay does not count again).
    pub udp: u64,
    /// Its UDP queries not forwarded (no backend, stuck, table full).
    pub udp_drops: u64,
    /// TCP connections relayed for it.
    pub tcp: u64,
    /// Its TCP connections refused (no backend, session limit).
    pub tcp_drops: u64,
    /// Its first query or connection.
    pub first_seen_ms: u64,
    /// Its latest query or connection.
    pub last_seen_ms: u64,
}

impl RemoteView {
    /// The view of remote `r` at `ip`; `seen_at` turns its times into
    /// instants ([`crate::remotes::Remotes::seen_at`]), `clock` into Unix
    /// milliseconds.
    pub fn of(ip: IpAddr, r: &Remote, seen_at: impl Fn(u64) -> Instant, clock: &WallClock) -> Self {
        let id = |b: BackendId| (b != NO_BACKEND).then_some(b);
        RemoteView {
            ip,
            backend: id(r.primary),
            backup: id(r.backup),
            udp: r.stats.udp,
            udp_drops: r.stats.udp_drop,
            tcp: r.stats.tcp,
            tcp_drops: r.stats.tcp_drop,
            first_seen_ms: clock.unix_ms(seen_at(r.first_seen_ms)),
            last_seen_ms: clock.unix_ms(seen_at(r.last_seen_ms)),
        }
    }
}

/// Everything but the remotes, at one instant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// [`STATS_VERSION`].
    pub version: u32,
    /// The balancer's process id.
    pub pid: u32,
    /// When the balancer started.
    pub started_ms: u64,
    /// When this was taken.
    pub now_ms: u64,
    /// Client hosts known now.
    pub remotes_tracked: usize,
    /// UDP queries forwarded and not yet answered or timed out.
    pub inflight: usize,
    /// Client TCP connections being relayed.
    pub tcp_sessions_open: usize,
    /// A shutdown signal came: the balancer is finishing its work.
    pub draining: bool,
    /// Log records dropped because the log's reader fell behind (the
    /// shell fills it in: the log queue is not the core's).
    pub log_records_dropped: u64,
    /// The balancer's counters: what became of each datagram and connection.
    pub counters: Counters,
    /// The packet cache's size and bounds (all 0 when it is off).
    pub cache: super::cache::CacheView,
    /// Every backend ever seen, in id order.
    pub backends: Vec<BackendView>,
}

impl Core {
    /// Counters and every backend, at `now`.
    pub fn summary(&self, now: Instant, clock: &WallClock, pid: u32) -> Summary {
        Summary {
            version: STATS_VERSION,
            pid,
            started_ms: clock.unix_ms(self.started),
            now_ms: clock.unix_ms(now),
            remotes_tracked: self.remotes.len(),
            inflight: self.inflight.len(),
            tcp_sessions_open: self.tcp.len(),
            draining: self.phase != Phase::Serving,
            log_records_dropped: 0,
            counters: self.counters.clone(),
            cache: self.cache.view(),
            backends: self
                .backends
                .iter()
                .map(|be| {
                    BackendView::of(
                        be,
                        self.inflight.count_for(be.id) as usize,
                        self.hedging.is_on().then(|| self.hedge_delay(be.id)),
                    )
                })
                .collect(),
        }
    }

    /// Up to `limit` remotes in address order after `after`.
    pub fn remotes_page(
        &self,
        after: Option<IpAddr>,
        limit: usize,
        clock: &WallClock,
    ) -> Vec<RemoteView> {
        self.remotes
            .after(after)
            .take(limit)
            .map(|(ip, r)| RemoteView::of(ip, r, |ms| self.remotes.seen_at(ms), clock))
            .collect()
    }

    /// One remote, if known.
    pub fn remote(&self, ip: IpAddr, clock: &WallClock) -> Option<RemoteView> {
        self.remotes
            .get(&ip)
            .map(|r| RemoteView::of(ip, r, |ms| self.remotes.seen_at(ms), clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_maps_instants_both_ways() {
        let at = Instant::now();
        let clock = WallClock::new(at, 1_000_000);
        assert_eq!(clock.unix_ms(at + Duration::from_millis(1500)), 1_001_500);
        assert_eq!(clock.unix_ms(at - Duration::from_millis(250)), 999_750);
    }

    #[test]
    fn histogram_view_lists_bounds_and_buckets() {
        let mut l = Latency::default();
        l.record(Duration::from_micros(10));
        l.record(Duration::from_micros(40));
        l.record(Duration::from_secs(5));
        let h = HistogramView::from(&l);
        assert_eq!(h.count, 3);
        assert_eq!(h.le_us.len() + 1, h.buckets.len());
        assert_eq!(h.le_us[0], 32);
        assert_eq!(h.buckets[0], 1);
        assert_eq!(h.buckets[1], 1);
        assert_eq!(*h.buckets.last().unwrap_or(&0), 1);
        assert_eq!(h.max_us, 5_000_000);
    }
}
