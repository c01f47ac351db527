//! TIMERS
//!
//! What the core does when time passes: every deadline it keeps is a
//! [`TimerKey`] in one ordered tree ([`crate::timeouts::Timeouts`]); the
//! shell sleeps until [`Core::poll_timeout`] and then calls
//! [`Core::handle_timeout`], which runs whatever is due:
//!
//! - the periodic directory scan, rebalancing and remote expiry;
//! - reconnects on the back-off schedule, the hello deadline and the
//!   heartbeat send and reply deadlines of each backend;
//! - query deadlines (SERVFAIL or silence by `--on-timeout`), hedges
//!   ([`super::hedge`]) and the passive health check, which probes a backend that owes answers and
//!   gives none;
//! - the end of the shutdown grace period, and the accept back-off.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use slog::{info, trace, warn};
use tokio::time::Instant;

use super::{Core, Io, Phase, RELEASE_MEMORY_AFTER, RELEASE_MEMORY_MIN_PEAK, send_now, synth};
use crate::backends::BackendId;
use crate::cli::OnTimeout;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum TimerKey {
    Scan,
    Rebalance,
    ExpirySweep,
    AcceptResume,
    /// The earliest deadline in the in-flight table.
    QueryDeadline,
    /// The first query due for a hedge (`--hedge-after`).
    Hedge,
    /// Look for backends that leave queries unanswered.
    PassiveCheck,
    /// The end of the shutdown grace period.
    DrainDeadline,
    Reconnect(BackendId),
    /// Connect and hello must complete by then.
    Hello(BackendId),
    HeartbeatSend(BackendId),
    HeartbeatTimeout(BackendId),
}

/// After a failed accept (out of file descriptors, say), wait this long
/// before accepting again rather than spinning on the error.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

impl Core {
    /// Run every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant, io: &mut impl Io) {
        while let Some(key) = self.timeouts.pop_due(now) {
            match key {
                TimerKey::DrainDeadline => {
                    warn!(self.log, "drain grace period over: exiting";
                        "inflight" => self.inflight.len(), "tcp_sessions" => self.tcp.len());
                    self.phase = Phase::Exit;
                    return;
                }
                TimerKey::Scan => {
                    io.scan_directory();
                    if let Some(n) = self.repeat_logs.per_client.take_suppressed() {
                        info!(self.log, "per-client log records suppressed"; "count" => n,
                            "limit_per_second" => super::ratelimit::PER_CLIENT_LOGS_PER_SECOND);
                    }
                    let next = now + self.cfg.timers.scan_interval;
                    self.timeouts.set(TimerKey::Scan, next);
                }
                TimerKey::Rebalance => {
                    self.rebalance(now);
                    let next = now + self.cfg.timers.rebalance_interval;
                    self.timeouts.set(TimerKey::Rebalance, next);
                }
                TimerKey::ExpirySweep => {
                    self.expire_remotes(now, io);
                    let next = now + self.cfg.timers.expiry_sweep;
                    self.timeouts.set(TimerKey::ExpirySweep, next);
                }
                TimerKey::AcceptResume => self.accepting = true,
                TimerKey::QueryDeadline => self.expire_queries(now, io),
                TimerKey::Hedge => self.send_due_hedges(now, io),
                TimerKey::PassiveCheck => self.passive_check(now, io),
                TimerKey::Reconnect(id) => self.connect(id, now, io),
                TimerKey::Hello(id) => {
                    warn!(self.backend_log(id), "timed out connecting to backend");
                    self.fault(id, now, io);
                }
                TimerKey::HeartbeatSend(id) => self.send_heartbeat(id, now, io),
                TimerKey::HeartbeatTimeout(id) => self.heartbeat_missed(id, now, io),
            }
        }
        self.check_drained();
    }

    /// An accept failed (the cause is the shell's to log): stop accepting
    /// for [`crate::core::ACCEPT_BACKOFF`].
    pub fn on_accept_error(&mut self, now: Instant) {
        self.accepting = false;
        self.timeouts
            .set(TimerKey::AcceptResume, now + ACCEPT_BACKOFF);
    }

    fn expire_remotes(&mut self, now: Instant, io: &mut impl Io) {
        self.remotes_peak = self.remotes_peak.max(self.remotes.len());
        let (log, budget) = (&self.log, &mut self.repeat_logs.per_client);
        let expired = self.remotes.expire(
            now,
            self.cfg.timers.remote_expiry,
            &mut self.backends,
            |ip| {
                if budget.allow(now) {
                    info!(log, "expiring remote entry"; "remote_ip" => %ip);
                }
            },
        );
        // Many remotes gone at once, or the table a quarter of what it was
        // (a burst of clients has passed): give the memory back.
        let shrunk = self.remotes_peak >= RELEASE_MEMORY_MIN_PEAK
            && self.remotes.len() <= self.remotes_peak / 4;
        if expired >= RELEASE_MEMORY_AFTER || (expired > 0 && shrunk) {
            self.inflight.shrink();
            self.remotes_peak = self.remotes.len();
            io.release_memory();
        }
    }

    /// Answer (or drop, by policy) every query whose deadline has passed.
    fn expire_queries(&mut self, now: Instant, io: &mut impl Io) {
        while let Some(e) = self.inflight.pop_expired(now) {
            self.counters.timeouts += 1;
            if let Some(be) = self.backends.get_mut(e.backend) {
                be.stats.timeouts += 1;
            }
            if self.cache.lookup_stale(e.message(), now) {
                // RFC 8767: an expired answer rather than SERVFAIL.
                if send_now(
                    &mut self.counters,
                    io,
                    e.reply_path,
                    e.key.client,
                    self.cache.answer(),
                ) {
                    self.counters.cache_stale_timeout += 1;
                }
            } else if self.cfg.on_timeout == OnTimeout::ServFail
                && let Some(answer) = synth::error_answer(e.message(), ResponseCode::ServFail)
                && send_now(&mut self.counters, io, e.reply_path, e.key.client, &answer)
            {
                self.counters.timeout_answers += 1;
            }
            self.inflight.recycle(e);
        }
        self.arm_query_timers(now);
    }

    /// Keep the query deadline and the passive check armed while queries
    /// are in flight.
    pub(super) fn arm_query_timers(&mut self, now: Instant) {
        if let Some(at) = self.inflight.next_deadline() {
            // Armed for an earlier deadline (a query answered since): leave
            // it; it fires, finds nothing due and is armed again then.  The
            // tree is touched once per timeout period, not once per batch.
            if self
                .timeouts
                .deadline_of(TimerKey::QueryDeadline)
                .is_none_or(|armed| at < armed)
            {
                self.timeouts.set(TimerKey::QueryDeadline, at);
            }
            if !self.timeouts.is_set(TimerKey::PassiveCheck) {
                self.timeouts.set(
                    TimerKey::PassiveCheck,
                    now + self.cfg.timers.unanswered_threshold / 2,
                );
            }
            self.arm_hedge_timer();
        }
    }

    /// Probe every backend that has left queries unanswered for longer than
    /// the threshold while answering none: hung, not dead (its socket is
    /// open).  It must answer a heartbeat within the probe timeout or be
    /// faulted, so its queries are replayed long before the heartbeat
    /// timeout would have noticed.
    fn passive_check(&mut self, now: Instant, io: &mut impl Io) {
        let threshold = self.cfg.timers.unanswered_threshold;
        let suspects: Vec<BackendId> = self
            .backends
            .iter()
            .filter(|be| be.is_ok() && !be.is_probed())
            .filter(|be| {
                be.unanswered_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= threshold)
            })
            .map(|be| be.id)
            .collect();
        for id in suspects {
            self.probe(id, now, io);
        }
        if !self.inflight.is_empty() {
            self.timeouts
                .set(TimerKey::PassiveCheck, now + threshold / 2);
        }
    }

    fn rebalance(&mut self, now: Instant) {
        let Some(plan) = self.backends.rebalance_plan() else {
            return;
        };
        trace!(self.log, "balancer spread statistics";
            "max_be_id" => plan.backend, "spread" => plan.spread,
            "ok_backends" => plan.ok_backends);
        let (log, budget) = (&self.log, &mut self.repeat_logs.per_client);
        self.remotes
            .unassign(plan.backend, plan.unassign, &mut self.backends, |ip| {
                if budget.allow(now) {
                    info!(log, "rebalancing to reduce spread"; "remote_ip" => ip.to_string());
                }
            });
    }
}
