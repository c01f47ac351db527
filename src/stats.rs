//! STATS SNAPSHOTS
//!
//! What the balancer can say about itself while it runs: its counters, each
//! backend's state and counters, and each remote's assignment and counters.
//! Operators of the original could only learn this with a debugger; here
//! the stats socket ([`crate::stats_socket`], read by `balstat`) and the
//! Prometheus endpoint ([`crate::metrics`]) ask the event loop for it.
//!
//! Tasks outside the loop never touch its state.  They send a
//! [`StatsRequest`] through a bounded channel ([`StatsHandle`]); the loop
//! answers each one at once with a copy of what was asked for, and goes on.
//! A summary (counters and backends) is small.  Remotes can number a
//! million, so they are asked for in pages ([`StatsRequest::Remotes`],
//! after a cursor): the loop copies one page per request, and a slow
//! reader of the stats socket only slows its own task.
//!
//! The views are plain data that serialize to the JSON documented in
//! docs/stats.md; times are wall-clock milliseconds since the Unix epoch.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backends::{Backend, BackendId, LATENCY_BUCKETS, Latency, NO_BACKEND};
use crate::balancer::TcpCounters;
use crate::remotes::Remote;
use crate::udp_relay::UdpCounters;

/// The version of the documents in docs/stats.md.  Bumped when a field
/// changes meaning or goes away; new fields may appear without a bump.
pub const STATS_VERSION: u32 = 1;

/// Requests waiting for the loop.  Askers wait when it is full.
pub const STATS_QUEUE: usize = 64;

/// The largest page of remotes one request may ask for: a page is copied
/// inside the event loop, so its size bounds the time taken from traffic.
pub const MAX_REMOTES_PAGE: usize = 4096;

/// A question for the event loop.
#[derive(Debug)]
pub enum StatsRequest {
    /// Counters and every backend.
    Summary(oneshot::Sender<Summary>),
    /// Up to `limit` remotes in address order, starting after `after`
    /// (from the first when `None`).
    Remotes {
        after: Option<IpAddr>,
        limit: usize,
        reply: oneshot::Sender<Vec<RemoteView>>,
    },
    /// One remote.
    Remote {
        ip: IpAddr,
        reply: oneshot::Sender<Option<RemoteView>>,
    },
}

/// The askers' end of the channel to the loop.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    tx: mpsc::Sender<StatsRequest>,
}

impl StatsHandle {
    pub fn new(tx: mpsc::Sender<StatsRequest>) -> Self {
        StatsHandle { tx }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> StatsRequest) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        answer.await.ok()
    }

    /// `None` once the loop has stopped.
    pub async fn summary(&self) -> Option<Summary> {
        self.ask(StatsRequest::Summary).await
    }

    pub async fn remotes(&self, after: Option<IpAddr>, limit: usize) -> Option<Vec<RemoteView>> {
        self.ask(|reply| StatsRequest::Remotes {
            after,
            limit: limit.min(MAX_REMOTES_PAGE),
            reply,
        })
        .await
    }

    pub async fn remote(&self, ip: IpAddr) -> Option<Option<RemoteView>> {
        self.ask(|reply| StatsRequest::Remote { ip, reply }).await
    }
}

/// Turns the loop's monotonic instants into wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    at: Instant,
    unix_ms: u64,
}

impl WallClock {
    pub fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        WallClock {
            at: Instant::now(),
            unix_ms,
        }
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
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
    pub le_us: Vec<u64>,
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
    pub id: BackendId,
    pub path: PathBuf,
    /// ok, ok-heartbeat-outstanding, connecting, awaiting-hello,
    /// reconnect-wait, down, removed.
    pub state: &'static str,
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
    pub conn_start: u64,
    pub conn_error: u64,
    pub faults: u64,
    pub passive_faults: u64,
    pub replayed_away: u64,
    /// The round trip of the last heartbeat answered, in microseconds.
    pub last_heartbeat_rtt_us: Option<u64>,
    pub heartbeat_rtt: HistogramView,
    /// Query in to answer out, through this backend.
    pub forward_latency: HistogramView,
}

impl BackendView {
    pub fn of(be: &Backend, inflight: usize) -> Self {
        let s = &be.stats;
        BackendView {
            id: be.id,
            path: be.path.clone(),
            state: be.state_name(),
            ok: be.is_ok(),
            caps: be.caps,
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
            last_heartbeat_rtt_us: s.last_heartbeat_rtt_us,
            heartbeat_rtt: HistogramView::from(&s.heartbeat_rtt),
            forward_latency: HistogramView::from(&s.latency),
        }
    }
}

/// One remote (client host), as the stats socket shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RemoteView {
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
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

impl RemoteView {
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

/// The balancer's own counters: every datagram and connection is counted
/// once here, by what became of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Counters {
    pub udp_received: u64,
    pub udp_forwarded: u64,
    pub udp_replies: u64,
    pub udp_replies_failed: u64,
    pub dropped_oversized: u64,
    pub dropped_short: u64,
    pub dropped_response: u64,
    pub dropped_malformed: u64,
    pub dropped_no_backend: u64,
    pub dropped_stuck: u64,
    pub dropped_inflight_full: u64,
    pub no_backend_answers: u64,
    pub no_backend_rate_limited: u64,
    pub timeouts: u64,
    pub timeout_answers: u64,
    pub late_answers: u64,
    pub unsolicited_answers: u64,
    pub replayed: u64,
    pub tcp_accepted: u64,
    pub tcp_dropped_no_backend: u64,
    pub tcp_dropped_session_limit: u64,
}

impl Counters {
    pub fn of(u: &UdpCounters, t: &TcpCounters) -> Self {
        Counters {
            udp_received: u.received,
            udp_forwarded: u.forwarded,
            udp_replies: u.replies,
            udp_replies_failed: u.replies_failed,
            dropped_oversized: u.dropped_oversized,
            dropped_short: u.dropped_short,
            dropped_response: u.dropped_response,
            dropped_malformed: u.dropped_malformed,
            dropped_no_backend: u.dropped_no_backend,
            dropped_stuck: u.dropped_stuck,
            dropped_inflight_full: u.dropped_inflight_full,
            no_backend_answers: u.no_backend_answers,
            no_backend_rate_limited: u.no_backend_rate_limited,
            timeouts: u.timeouts,
            timeout_answers: u.timeout_answers,
            late_answers: u.late_answers,
            unsolicited_answers: u.unsolicited_answers,
            replayed: u.replayed,
            tcp_accepted: t.accepted,
            tcp_dropped_no_backend: t.dropped_no_backend,
            tcp_dropped_session_limit: t.dropped_session_limit,
        }
    }
}

/// Everything but the remotes, at one instant.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub version: u32,
    pub pid: u32,
    pub started_ms: u64,
    pub now_ms: u64,
    pub remotes_tracked: usize,
    pub inflight: usize,
    pub tcp_sessions_open: usize,
    pub draining: bool,
    pub counters: Counters,
    pub backends: Vec<BackendView>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn wall_clock_maps_instants_both_ways() {
        let clock = WallClock::now();
        let later = clock.at + Duration::from_millis(1500);
        assert_eq!(clock.unix_ms(later), clock.unix_ms + 1500);
        tokio::time::advance(Duration::from_secs(10)).await;
        let earlier = Instant::now() - Duration::from_secs(10) + Duration::from_millis(250);
        assert_eq!(clock.unix_ms(earlier), clock.unix_ms + 250);
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
