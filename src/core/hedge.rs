//! HEDGED QUERIES
//!
//! A backend that stops answering for a moment (a garbage-collection pause,
//! a hung process the health checks have not caught yet) would leave its
//! clients waiting for the passive check and the probe, up to a second.
//! Instead, a UDP query still unanswered after its backend's hedge delay is
//! sent once more, to the backend its client would fail over to; whichever
//! answer comes first goes to the client, and the other is recognised
//! ([`super::inflight`]) and dropped.  This is the "hedged request" of Dean
//! and Barroso's "The Tail at Scale" (CACM 2013).
//!
//! The delay (`--hedge-after`) is fixed, or by default adapts to each
//! backend: its smoothed latency plus four deviations, TCP's retransmission
//! timeout (RFC 6298; [`crate::backends::SmoothedLatency`]), kept within
//! [`ADAPTIVE_FLOOR`] and [`ADAPTIVE_CEILING`].  The answers a backend
//! gives after losing to a hedge count in its latency too, so a backend
//! that is merely slow (overloaded, steadily) soon has a delay to match and
//! is no longer hedged, while one that answers nothing keeps the floor.
//!
//! Hedges are bounded by a budget ([`HedgeBudget`]): at most
//! `--hedge-budget` percent of the queries forwarded over the last ten
//! seconds, plus ten a second: Finagle's retry budget (its default is 20%
//! plus 10/s over 10 s; tower's `retry::budget` is the same, but reads the
//! clock itself, which the core may not).  A hung backend holding a third
//! of the traffic for the second it takes to fault it needs a thirtieth of
//! the window; an overloaded pool whose every query is late gets a tenth
//! more work, not double.
//!
//! A query is hedged once, never after a replay (it has been to two
//! backends already), and only to a backend that is up and has room in
//! the in-flight table; TCP is not hedged (a stream has one backend).

use std::time::Duration;

use tokio::time::Instant;

use super::inflight::QueryKey;
use super::{Core, Io};
use crate::backends::{BackendId, Backends, Need};
use crate::cli::HedgeAfter;

/// The shortest adaptive hedge delay: longer than the scheduling hiccups
/// of a busy host (tens of milliseconds), so a healthy backend answering
/// in a millisecond is not hedged for them, and short enough that a
/// stalled one costs its clients a twentieth of a second.
pub const ADAPTIVE_FLOOR: Duration = Duration::from_millis(50);

/// The longest adaptive hedge delay: past a stub resolver's first timeout
/// (one second, commonly) a hedge no longer saves the client a wait.
pub const ADAPTIVE_CEILING: Duration = Duration::from_secs(1);

/// The budget's window, in one-second buckets.
const WINDOW_SECONDS: usize = 10;

/// Hedges allowed each second whatever the traffic: a backend with few
/// clients hangs too.
const MIN_HEDGES_PER_SECOND: u64 = 10;

/// The hedges allowed: a share of the queries forwarded over the last
/// `WINDOW_SECONDS`, plus `MIN_HEDGES_PER_SECOND`.  A ring of
/// per-second counts; O(1) per query.
#[derive(Debug, Clone)]
pub struct HedgeBudget {
    percent: u64,
    /// (second, queries forwarded, hedges sent) per bucket.
    buckets: [(u32, u64, u64); WINDOW_SECONDS],
}

impl HedgeBudget {
    /// A budget of `percent` of the queries forwarded (`--hedge-budget`),
    /// nothing forwarded yet.
    pub fn new(percent: u32) -> Self {
        HedgeBudget {
            percent: u64::from(percent),
            buckets: [(u32::MAX, 0, 0); WINDOW_SECONDS],
        }
    }

    fn bucket(&mut self, second: u32) -> &mut (u32, u64, u64) {
        let b = &mut self.buckets[second as usize % WINDOW_SECONDS];
        if b.0 != second {
            *b = (second, 0, 0);
        }
        b
    }

    /// A query was forwarded in `second`.
    pub fn on_forwarded(&mut self, second: u32) {
        self.bucket(second).1 += 1;
    }

    /// Whether a hedge may be sent in `second`.
    pub fn allows(&self, second: u32) -> bool {
        let window = second.saturating_sub(WINDOW_SECONDS as u32 - 1)..=second;
        let (forwarded, hedged) = self
            .buckets
            .iter()
            .filter(|b| window.contains(&b.0))
            .fold((0u64, 0u64), |(f, h), b| (f + b.1, h + b.2));
        hedged * 100
            < forwarded * self.percent + MIN_HEDGES_PER_SECOND * WINDOW_SECONDS as u64 * 100
    }

    /// A hedge was sent in `second`.
    pub fn on_hedged(&mut self, second: u32) {
        self.bucket(second).2 += 1;
    }
}

/// Hedging's settings and budget.
#[derive(Debug, Clone)]
pub struct Hedging {
    /// `--hedge-after`: when a query is hedged, if ever.
    pub after: HedgeAfter,
    /// The hedges allowed now.
    pub budget: HedgeBudget,
}

impl Hedging {
    /// Hedging after `after`, within `budget_percent` of the queries
    /// forwarded.
    pub fn new(after: HedgeAfter, budget_percent: u32) -> Self {
        Hedging {
            after,
            budget: HedgeBudget::new(budget_percent),
        }
    }

    /// Whether queries are hedged at all (`--hedge-after` is not 0).
    pub fn is_on(&self) -> bool {
        self.after != HedgeAfter::Off
    }

    /// The hedge delay for a backend whose latency is `late_after` (its
    /// smoothed latency plus four deviations, if it has answered yet).
    pub fn delay(&self, late_after: Option<Duration>) -> Duration {
        match self.after {
            HedgeAfter::Off => Duration::MAX,
            HedgeAfter::Fixed(d) => d,
            HedgeAfter::Adaptive => late_after
                .unwrap_or(ADAPTIVE_FLOOR)
                .clamp(ADAPTIVE_FLOOR, ADAPTIVE_CEILING),
        }
    }
}

impl Core {
    /// The hedge delay of backend `id` now.
    pub fn hedge_delay(&self, id: BackendId) -> Duration {
        delay_of(&self.hedging, &self.backends)(id)
    }

    /// Hedge every query that is due, then arm the timer for the next.
    pub(super) fn send_due_hedges(&mut self, now: Instant, io: &mut impl Io) {
        let mut due = std::mem::take(&mut self.hedges_due);
        let delay = delay_of(&self.hedging, &self.backends);
        self.inflight.hedges_due(now, delay, &mut due);
        let second = self.second(now);
        for key in due.drain(..) {
            self.hedge_query(key, second, now, io);
        }
        self.hedges_due = due;
        self.arm_hedge_timer();
    }

    fn hedge_query(&mut self, key: QueryKey, second: u32, now: Instant, io: &mut impl Io) {
        let Some(from) = self.inflight.get(&key).map(|e| e.backend) else {
            return;
        };
        let Some(to) = self.failover_target(key, from) else {
            self.counters.hedge_no_target += 1;
            return;
        };
        if !self.hedging.budget.allows(second) {
            self.counters.hedge_budget_exhausted += 1;
            return;
        }
        let Some(frame) = self.inflight.hedge(&key, to, now) else {
            self.counters.hedge_no_target += 1;
            return;
        };
        if io.send_frame(to, &[frame]).is_err() {
            self.inflight.unhedge(&key);
            self.counters.hedge_no_target += 1;
            return;
        }
        self.hedging.budget.on_hedged(second);
        self.counters.hedged += 1;
        if let Some(be) = self.backends.get_mut(from) {
            be.stats.hedged += 1;
        }
        if let Some(be) = self.backends.get_mut(to) {
            be.stats.udp += 1;
            be.unanswered_since.get_or_insert(now);
        }
    }

    /// The backend a client of `from` would fail over to if `from` failed
    /// now: its remote's backup if it has one, else the next backend in
    /// round-robin order; up, able to serve the client, and linked.
    fn failover_target(&self, key: QueryKey, from: BackendId) -> Option<BackendId> {
        let ip = key.client.ip();
        let need = Need::of(&ip);
        let backup = self
            .remotes
            .get(&ip)
            .map(|r| r.backup)
            .filter(|&b| b != from && self.backends.serves(b, need));
        let to = backup.or_else(|| self.backends.next_serving(need, Some(from)))?;
        self.links.contains_key(&to).then_some(to)
    }

    /// Arm the hedge timer for the first query due, if it is not armed
    /// already for sooner (then it finds nothing and re-arms itself): one
    /// look per batch of datagrams, rarely a change to the timer tree.
    pub(super) fn arm_hedge_timer(&mut self) {
        if !self.hedging.is_on() {
            return;
        }
        let delay = delay_of(&self.hedging, &self.backends);
        let Some(at) = self.inflight.next_hedge(delay) else {
            return;
        };
        match self.timeouts.deadline_of(super::TimerKey::Hedge) {
            Some(armed) if armed <= at => {}
            _ => self.timeouts.set(super::TimerKey::Hedge, at),
        }
    }
}

/// Each backend's hedge delay, by id.
fn delay_of<'a>(
    hedging: &'a Hedging,
    backends: &'a Backends,
) -> impl Fn(BackendId) -> Duration + 'a {
    move |id| {
        hedging.delay(
            backends
                .get(id)
                .and_then(|be| be.recent_latency.late_after()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_a_share_of_the_window_plus_a_floor() {
        let mut b = HedgeBudget::new(10);
        // 10 a second whatever the traffic: 100 over an empty window.
        let mut n = 0;
        while b.allows(0) {
            b.on_hedged(0);
            n += 1;
        }
        assert_eq!(n, 100);
        // 1,000 queries forwarded add 100 more.
        for _ in 0..1000 {
            b.on_forwarded(1);
        }
        let mut m = 0;
        while b.allows(1) {
            b.on_hedged(1);
            m += 1;
        }
        assert_eq!(m, 100);
        // Ten seconds on, the old hedges and queries have left the window.
        assert!(!b.allows(5), "second 1's share and the floors are spent");
        // Ten seconds on, second 0's hedges have left the window; second 1's
        // queries and hedges are still in it.
        let mut k = 0;
        while b.allows(10) {
            b.on_hedged(10);
            k += 1;
        }
        assert_eq!(k, 100);
        // Then second 1 leaves the window: its share goes, and second 10 has
        // spent the floor.
        let mut j = 0;
        while b.allows(11) {
            b.on_hedged(11);
            j += 1;
        }
        assert_eq!(j, 0, "second 10's hedges have spent the window's floor");
    }

    #[test]
    fn adaptive_delay_stays_within_floor_and_ceiling() {
        let h = Hedging::new(HedgeAfter::Adaptive, 10);
        assert_eq!(h.delay(None), ADAPTIVE_FLOOR);
        assert_eq!(h.delay(Some(Duration::from_micros(300))), ADAPTIVE_FLOOR);
        assert_eq!(
            h.delay(Some(Duration::from_millis(80))),
            Duration::from_millis(80)
        );
        assert_eq!(h.delay(Some(Duration::from_secs(9))), ADAPTIVE_CEILING);
        let fixed = Hedging::new(HedgeAfter::Fixed(Duration::from_millis(7)), 10);
        assert_eq!(
            fixed.delay(Some(Duration::from_secs(9))),
            Duration::from_millis(7)
        );
        assert!(!Hedging::new(HedgeAfter::Off, 10).is_on());
    }
}
